"""The sandbox signs its events as Stripe does, on its own side of the wire.

Kept apart from the server's verifier (`tollbooth.webhooks.signature`) on purpose: the
sandbox is the provider's stand-in and imports only plumbing, and the tests check its
signatures with the server's verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header: `t={t},v1={HMAC-SHA256 of "{t}.{payload}"}`."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = str(t).encode() + b"." + payload
    return f"t={t},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"
