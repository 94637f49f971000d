"""Stripe's `Idempotency-Key` header, read as the request's `request_id`.

Seed 003 is Stripe-shaped, and Stripe's clients make a create safe to retry by sending the
same `Idempotency-Key` header again, with nothing in the body. Ignored, that header would let a
client's retry of a payment intent (whose `request_id` is optional, as the seed sends none)
make a second one. So on an RPC that takes a `request_id` the header is that key, exactly as if
the body or query had named it: a retry with it replays the first answer, other parameters
under it are IDEMPOTENCY_KEY_REUSED. Both given and different is FIELD_INVALID (which one
would be meant?); the header given twice is MALFORMED_REQUEST. An RPC without a `request_id`
(a read) ignores it, as Stripe ignores it on a GET.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from tollbooth import errors

HEADER = "idempotency-key"


def apply(msg: Message, metadata: Iterable[tuple[str, Any]], takes_key: bool) -> bool:
    """Put the header's key into `msg.request_id`; whether it did (the message is then checked
    again, as a request naming that key itself is)."""
    values = [str(value) for key, value in metadata if key == HEADER]
    if not values or not takes_key:
        return False
    if len(values) > 1:
        raise errors.invalid(
            "the Idempotency-Key header is given more than once; send one",
            reason="MALFORMED_REQUEST",
            field="request_id",
        )
    key = values[0]
    named = getattr(msg, "request_id")  # noqa: B009
    if named and named != key:
        raise errors.invalid(
            "the Idempotency-Key header and request_id name different keys; send one of them",
            reason="FIELD_INVALID",
            field="request_id",
        )
    setattr(msg, "request_id", key)  # noqa: B010
    return True
