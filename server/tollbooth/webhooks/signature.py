"""Stripe-Signature verification over the raw body.

Unlike the stock helper, a timestamp too far in the future is refused as firmly as one too
old, and there is no way to disable the age check.
"""

from __future__ import annotations

import hashlib
import hmac
import time


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or does not match."""


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `v1` signature Stripe computes: HMAC-SHA256 of `{t}.{payload}`."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A complete Stripe-Signature header value (the sandbox and the tests sign with it)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={sign(payload, secret, t)}"


def verify(
    payload: bytes,
    sig_header: str | None,
    secrets: tuple[str, ...] | list[str],
    tolerance_sec: int = 300,
    now: float | None = None,
) -> int:
    """Return the signed timestamp, or raise SignatureError."""
    if not secrets:
        raise SignatureError("no webhook secret configured")
    if tolerance_sec <= 0:
        raise SignatureError("tolerance must be positive")
    if not sig_header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in sig_header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # ASCII digits only, and few of them: int() would take "٣" or 400 digits.
            if not (value.isascii() and value.isdigit() and len(value) <= 12):
                raise SignatureError("malformed timestamp")
            timestamp = int(value)
        elif key == "v1" and len(candidates) < 8:
            candidates.append(value.encode("ascii", "replace"))
    if timestamp is None or not candidates:
        raise SignatureError("header lacks a timestamp or a v1 signature")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_sec:
        raise SignatureError("timestamp outside the tolerance window")
    matched = False
    for secret in secrets:  # several secrets during a rotation
        expected = sign(payload, secret, timestamp).encode()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no signature matches")
    return timestamp
