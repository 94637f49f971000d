"""Small proto conversions shared by servicers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from billing.v1 import options_pb2
from tollbooth import errors

# Response metadata naming the fields the gateway prints as JSON null when the answer leaves
# them out (gateway/json_fields.lua): the fields the contract marks `(billing.v1.json_null)`,
# where proto3 JSON would omit them and a seed's body shows `null`. Comma-separated names; the
# gateway removes the header.
JSON_NULL = "x-billing-json-null"

_NULLABLE: dict[str, tuple[str, ...]] = {}  # message full name -> its json_null fields


def _nullable(descriptor: Any) -> tuple[str, ...]:
    names = _NULLABLE.get(descriptor.full_name)
    if names is None:
        names = tuple(
            f.name for f in descriptor.fields if f.GetOptions().Extensions[options_pb2.json_null]
        )
        _NULLABLE[descriptor.full_name] = names
    return names


def print_unset_as_null(context: Any, message: Message, absent: tuple[str, ...] = ()) -> None:
    """Ask the gateway to print the `json_null` fields `message` leaves unset as null (one
    metadata entry, sent before the answer; nothing when all are set). A `json_null` field
    with no presence (a plain bool) cannot be unset: the caller names it in `absent` when
    the fact it reports does not exist (the free plan's `cancel_at_period_end`)."""
    fields = message.DESCRIPTOR.fields_by_name
    unset = [
        f
        for f in _nullable(message.DESCRIPTOR)
        if (not message.HasField(f) if fields[f].has_presence else f in absent)
    ]
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
