"""Small proto conversions shared by servicers."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from tollbooth import errors


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
