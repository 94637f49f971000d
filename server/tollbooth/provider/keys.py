"""Idempotency keys for provider calls: one key per effect, derived from what identifies it."""

from __future__ import annotations

import hashlib


def idempotency_key(kind: str, *parts: str) -> str:
    """A Stripe idempotency key for one effect: the kind plus a digest of what identifies it
    (account and request_id), so keys stay short and never carry a caller's raw input."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"tollbooth-{kind}-{digest}"
