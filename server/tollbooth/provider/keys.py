"""Idempotency keys for provider calls: one key per effect, derived from what identifies it;
how long the provider keeps one, and the sweepers' rule past that."""

from __future__ import annotations

import datetime as dt
import hashlib

# Stripe keeps an idempotency key at least this long after its first use (which follows the
# intent row's creation): a younger row's key still finds what the first attempt created.
KEY_LIFETIME = dt.timedelta(hours=24)


def idempotency_key(kind: str, *parts: str) -> str:
    """A Stripe idempotency key for one effect: the kind plus a digest of what identifies it
    (account and request_id), so keys stay short and never carry a caller's raw input."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"tollbooth-{kind}-{digest}"


def past_key_lifetime(
    what: str, created_at: dt.datetime, metadata_key: str, *, now: dt.datetime
) -> str | None:
    """The report line (LEFT ALONE) of `what` (e.g. "checkout cs_…"), pending since
    `created_at`, once its idempotency key may have expired; None while it is younger than
    `KEY_LIFETIME`. A sweeper sends such an intent neither again (a second object could be
    created at the provider: a possible double charge) nor cancels it: an operator looks it
    up at the provider by its metadata `metadata_key`."""
    if created_at >= now - KEY_LIFETIME:
        return None
    return (
        f"{what}: pending since {created_at.isoformat()}, over"
        f" {KEY_LIFETIME.total_seconds() / 3600:g} h: not sent again (the provider's"
        f" idempotency key may have expired); look it up by metadata {metadata_key}"
    )
