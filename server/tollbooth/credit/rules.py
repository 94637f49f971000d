"""Input cleaning and limits of the credit operations, and their shared errors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tollbooth import errors
from tollbooth.amounts import CREDIT_TYPE_RE, fmt, sub

DEFAULT_HOLD_TTL_SEC = 900
MAX_HOLD_TTL_SEC = 7 * 86_400
MAX_REASON = 500
# Timestamps from 0001-01-01 to 9999-12-31 (the range of google.protobuf.Timestamp).
MIN_TS_SECONDS, MAX_TS_SECONDS = -62_135_596_800, 253_402_300_799
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def clean_type(raw: str, field_name: str = "credit_type") -> str:
    value = raw.strip()
    if not value:
        raise errors.required(field_name)
    if not CREDIT_TYPE_RE.fullmatch(value):
        raise errors.invalid(
            f"{field_name} must be 1-100 letters, digits and _.:- ", field=field_name
        )
    return value


def clean_reason(raw: str) -> str:
    value = raw.strip()
    if len(value) > MAX_REASON:
        raise errors.invalid(f"reason is longer than {MAX_REASON} characters", field="reason")
    return value


def clean_hold_ttl(ttl_sec: int) -> int:
    """A hold's time to live in seconds (0 means the default)."""
    if ttl_sec < 0 or ttl_sec > MAX_HOLD_TTL_SEC:
        raise errors.invalid(
            f"ttl_seconds must be between 0 (the default, {DEFAULT_HOLD_TTL_SEC}) and "
            f"{MAX_HOLD_TTL_SEC}",
            field="ttl_seconds",
        )
    return ttl_sec or DEFAULT_HOLD_TTL_SEC


def timestamp(seconds: int, nanos: int, field_name: str) -> dt.datetime:
    if not MIN_TS_SECONDS <= seconds <= MAX_TS_SECONDS or not 0 <= nanos < 1_000_000_000:
        raise errors.invalid(
            f"{field_name} is out of range", reason="FIELD_INVALID", field=field_name
        )
    return EPOCH + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)


def insufficient(credit_type: str, balance: Decimal, required: Decimal) -> errors.DomainError:
    shortfall = sub(required, balance)
    return errors.failed_precondition(
        "INSUFFICIENT_CREDITS",
        f"not enough {credit_type} credits: {fmt(balance)} available, {fmt(required)} "
        f"required, {fmt(shortfall)} short",
        credit_type=credit_type,
        balance=fmt(balance),
        required=fmt(required),
        shortfall=fmt(shortfall),
    )
