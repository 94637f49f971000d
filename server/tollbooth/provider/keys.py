"""Idempotency keys for provider calls: one key per effect, derived from what identifies it;
how long the provider keeps one, and the sweepers' rules for a key they cannot use again."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from tollbooth import errors

T = TypeVar("T")

# Stripe keeps an idempotency key at least this long after its first use (which follows the
# intent row's creation): a younger row's key still finds what the first attempt created.
KEY_LIFETIME = dt.timedelta(hours=24)


def idempotency_key(kind: str, *parts: str) -> str:
    """A Stripe idempotency key for one effect: the kind plus a digest of what identifies it
    (account and request_id), so keys stay short and never carry a caller's raw input."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"tollbooth-{kind}-{digest}"


# How many keys a create may move through, past keys Stripe answers with a saved failure.
KEY_STEPS = 4


def stepped_key(key: str, step: int) -> str:
    """The key of a create's `step`th try at the provider: `key` itself, then the keys a
    create moves to past each one Stripe answers with a failure it saved (a 500 of a request
    it began: replayed to the same key for 24 h). Deterministic, so every retry and replica
    walks the same keys and meets the same objects."""
    return key if step == 0 else f"{key}-step{step}"


def options_digest(features: dict[str, Any]) -> str:
    """A digest of a portal configuration's features, whatever their order: the key that
    finds the configuration again (its metadata) and makes it once."""
    return hashlib.sha256(repr(sorted(flatten(features))).encode()).hexdigest()[:32]


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


class ParametersChanged(errors.DomainError):
    """The provider refused an intent's key: a first attempt used it with other parameters
    (the account's provider customer, or a price's provider id, changed since). The error
    the provider's refusal maps to (IDEMPOTENCY_KEY_REUSED), so a request sees what it did
    before; a sweeper tells it apart."""


def sent_again(call: Callable[[], T]) -> T:
    """`call()`, an intent's create at the provider with the intent's own key; a refusal of
    the key for other parameters raises `ParametersChanged`."""
    try:
        return call()
    except errors.DomainError as exc:
        if exc.reason != "IDEMPOTENCY_KEY_REUSED" or isinstance(exc, ParametersChanged):
            raise
        raise ParametersChanged(exc.kind, exc.reason, exc.message, **exc.metadata) from exc


def blocked_by(what: str) -> errors.DomainError:
    """A request must first settle `what` (another intent, e.g. the open checkout holding a
    group) and the provider refused that intent's key (`ParametersChanged`): the reason stays
    IDEMPOTENCY_KEY_REUSED, but the message names `what`, not the request's own request_id."""
    return errors.invalid(
        f"{what} cannot be replaced: the payment provider refused its idempotency key (the"
        " account's provider customer or a price's provider id changed since it was sent); an"
        " operator must resolve it (see tollbooth reconcile)",
        reason="IDEMPOTENCY_KEY_REUSED",
    )


def refused_line(what: str, metadata_key: str) -> str:
    """The report line (LEFT ALONE) of `what` whose key the provider refused
    (`ParametersChanged`). No run can complete it: the key is refused until it expires, and
    from then the `KEY_LIFETIME` rule holds; the first attempt's object is at the provider
    (never paid through us: nobody was given it), for an operator to look up."""
    return (
        f"{what}: the provider refused its idempotency key (a first attempt sent other"
        " parameters: the account's provider customer or a price's provider id changed since):"
        f" not completed; look it up by metadata {metadata_key}"
    )


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(path, text) of every leaf of a nested value, for a digest of it."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in flatten(v, f"{prefix}.{k}")]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, str(value))]
