"""Small proto conversions shared by servicers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from tollbooth import errors

# Response metadata naming the fields the gateway prints as JSON null when the answer leaves
# them out (gateway/json_fields.lua): proto3 JSON omits an unset field with presence, where a
# seed's body shows `null`. Comma-separated field names; the gateway removes the header.
JSON_NULL = "x-billing-json-null"

# The fields printed so, by message: the servers name them (`print_unset_as_null`) and the
# OpenAPI document says they may be null (`tollbooth.openapi`).
PRINTED_AS_NULL: dict[str, tuple[str, ...]] = {
    "billing.v1.BillingStatus": ("status", "current_period_end", "current_period_end_time"),
    "billing.v1.GetCustomerSubscriptionResponse": ("subscription",),
}


def print_unset_as_null(context: Any, message: Message) -> None:
    """Ask the gateway to print those of the message's PRINTED_AS_NULL fields it leaves unset
    as null (one metadata entry, sent before the answer; nothing when all are set)."""
    fields = PRINTED_AS_NULL[message.DESCRIPTOR.full_name]
    unset = [f for f in fields if not message.HasField(f)]
    if unset:
        context.send_initial_metadata(((JSON_NULL, ",".join(unset)),))


def ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def from_ts(value: timestamp_pb2.Timestamp, field: str = "timestamp") -> dt.datetime:
    """A request timestamp as a datetime; one outside 0001..9999 (protobuf's valid range) is
    the caller's mistake: 400 FIELD_INVALID naming the field, never a 500."""
    try:
        return value.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise errors.invalid(
            f"{field} is out of range", reason="FIELD_INVALID", field=field
        ) from None
