"""Usage protos <-> domain values; only the servicer calls this module.

Output-only request fields are never read.

Events: one usage event checked and normalised into a `usage.events.Candidate`, without a
database.

Hot path: a batch of 500 events runs this 500 times, so it is one pass over each event that
converts the properties and checks them at once.

Edge validation (`tollbooth.rpc.edge.validate`) stays the authority on strings: the pass below
applies the same rule (no string over its field's limit; no control character in the event's
own strings, no NUL in its properties) to every string it meets, and
only when one breaks it asks `edge.validate(event)` for the canonical FIELD_INVALID error. The
generic walk costs about 30 µs per event; this pass about 5 µs. A test pins UsageEvent's
fields, so a field added to the message fails it until this pass learns the field.

Numbers (google.protobuf.Struct carries doubles): a whole number within ±2^53 is an integer;
any other finite number keeps its shortest round-trip form (Python's repr: 0.1 stays 0.1), so
its decimal value is exact from then on; NaN and infinities are refused.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from billing.v1 import options_pb2, usage_pb2
from tollbooth import errors, text
from tollbooth.db.models import BillableMetric
from tollbooth.rpc import edge
from tollbooth.rpc.convert import from_ts, ts
from tollbooth.usage import events
from tollbooth.usage.aggregate import Filter
from tollbooth.usage.events import (
    ACCEPTED,
    DUPLICATE,
    MAX_SECONDS,
    MIN_SECONDS,
    REJECTED,
    Candidate,
    Outcome,
    canonical_json,
)
from tollbooth.usage.limits import Limits
from tollbooth.usage.service import MetricFields

EXACT_INT = 2**53
_INF = float("inf")
KNOWN_FIELDS = ("unique_id", "account", "event_name", "event_time", "properties")


def _field_limit(name: str) -> int:
    options = usage_pb2.UsageEvent.DESCRIPTOR.fields_by_name[name].GetOptions()
    if options.HasExtension(options_pb2.max_length):
        return int(options.Extensions[options_pb2.max_length])
    return edge.DEFAULT_MAX_LENGTH


UNIQUE_ID_LIMIT = _field_limit("unique_id")
ACCOUNT_LIMIT = _field_limit("account")
EVENT_NAME_LIMIT = _field_limit("event_name")
STRUCT_LIMIT = edge.STRUCT_MAX_LENGTH
# The edge's rule for the event's own strings (single-line: no control character); the
# properties, free-form JSON, refuse NUL only, as at the edge.
_CONTROL = text.SINGLE_LINE


if EVENT_NAME_LIMIT != events.EVENT_NAME_LIMIT:  # pragma: no cover - caught by any test run
    raise RuntimeError("usage.events.EVENT_NAME_LIMIT differs from usage.proto's max_length")


class _EdgeRule(Exception):
    """A string breaks the edge rule: let edge.validate name it."""


class _TooDeep(Exception):
    pass


class _NotFinite(Exception):
    pass


def _value(v: struct_pb2.Value, depth: int, max_depth: int) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        s = v.string_value
        if len(s) > STRUCT_LIMIT or "\x00" in s:
            raise _EdgeRule
        return s
    if kind == "number_value":
        f = v.number_value
        if f.is_integer():
            return int(f) if -EXACT_INT <= f <= EXACT_INT else f
        if f != f or f == _INF or f == -_INF:
            raise _NotFinite
        return f
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _struct(v.struct_value, depth + 1, max_depth)
    if kind == "list_value":
        if depth + 1 > max_depth:
            raise _TooDeep
        return [_value(item, depth + 1, max_depth) for item in v.list_value.values]
    return None  # null_value, or a Value with nothing set


def _struct(s: struct_pb2.Struct, depth: int, max_depth: int) -> dict[str, Any]:
    if depth > max_depth:
        raise _TooDeep
    out: dict[str, Any] = {}
    fields = s.fields
    for key in fields:  # keys then lookups: twice as fast as .items() on a upb map
        if len(key) > STRUCT_LIMIT or "\x00" in key:
            raise _EdgeRule
        out[key] = _value(fields[key], depth, max_depth)
    return out


def properties_of(struct: struct_pb2.Struct, max_depth: int) -> dict[str, Any]:
    """Struct -> plain JSON values, numbers normalised (see the module docstring)."""
    try:
        return _struct(struct, 1, max_depth)
    except _TooDeep:
        raise errors.invalid(
            f"properties nest deeper than {max_depth} levels",
            reason="EVENT_PROPERTIES_TOO_DEEP",
            field="properties",
        ) from None
    except _NotFinite:
        raise errors.invalid(
            "properties hold a number that is not finite",
            reason="FIELD_INVALID",
            field="properties",
        ) from None


def _edge_refusal(event: usage_pb2.UsageEvent) -> errors.DomainError:
    try:
        edge.validate(event)
    except errors.DomainError as exc:
        return exc
    # Unreachable while this module applies exactly the edge rule (tests prove it).
    return errors.invalid("event holds an invalid string", reason="FIELD_INVALID")


def check(event: usage_pb2.UsageEvent, index: int, limits: Limits, now: int) -> Candidate:
    """Every check that needs no database, in one pass; raises DomainError on the first refusal.

    `now` is the server clock in whole seconds since the epoch.
    """
    unique_id, account, name = event.unique_id, event.account, event.event_name
    if (
        len(unique_id) > UNIQUE_ID_LIMIT
        or len(account) > ACCOUNT_LIMIT
        or len(name) > EVENT_NAME_LIMIT
        or _CONTROL.search(unique_id) is not None
        or _CONTROL.search(account) is not None
        or _CONTROL.search(name) is not None
    ):
        raise _edge_refusal(event)
    if not unique_id.strip():
        unique_id = ""  # a blank id is no id: derived from the content, as for an empty one
    account = account.strip()
    if not account:
        raise errors.required("account")
    if not name.strip():
        raise errors.required("event_name")
    # The contract's event_time; its JSON name (seed 001's) and the messages say `timestamp`.
    if not event.HasField("event_time"):
        raise errors.required("timestamp")
    stamp = event.event_time
    seconds, nanos = stamp.seconds, stamp.nanos
    if not (0 <= nanos < 1_000_000_000 and MIN_SECONDS <= seconds <= MAX_SECONDS):
        raise errors.invalid("timestamp is out of range", reason="FIELD_INVALID", field="timestamp")
    if seconds > now + limits.max_future_sec:
        raise errors.invalid(
            f"timestamp is more than {limits.max_future_sec} s in the future",
            reason="EVENT_TIMESTAMP_IN_FUTURE",
            field="timestamp",
        )
    if seconds < now - limits.max_age_sec:
        raise errors.invalid(
            f"timestamp is older than {limits.max_age_days} days",
            reason="EVENT_TIMESTAMP_TOO_OLD",
            field="timestamp",
        )
    try:
        properties = properties_of(event.properties, limits.max_properties_depth)
    except _EdgeRule:
        raise _edge_refusal(event) from None
    text = canonical_json(properties)
    limit = limits.max_properties_bytes
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
        raise errors.invalid(
            f"properties are larger than {limit} bytes as JSON",
            reason="EVENT_PROPERTIES_TOO_LARGE",
            field="properties",
        )
    return Candidate(
        index=index,
        unique_id=unique_id,
        account_ref=account,
        event_name=name,
        seconds=seconds,
        micros=nanos // 1000,
        properties=properties,
        properties_json=text,
        timestamp_text="" if unique_id else stamp.ToJsonString(),
    )


def echo(unique_id: str) -> str:
    """The sender's id in an answer, unless it is itself what was wrong with the event."""
    ok = len(unique_id) <= UNIQUE_ID_LIMIT and "\x00" not in unique_id
    return unique_id if ok else ""


def check_batch(
    batch: Sequence[usage_pb2.UsageEvent], limits: Limits, now: int
) -> list[Candidate | Outcome]:
    """Every event of a batch checked: a candidate, or the outcome that refuses it."""
    checked: list[Candidate | Outcome] = []
    for i, event in enumerate(batch):
        try:
            checked.append(check(event, i, limits, now))
        except errors.DomainError as exc:
            field = exc.metadata.get("field", "")
            checked.append(Outcome(echo(event.unique_id), REJECTED, exc.reason, exc.message, field))
    return checked


# -- results and metrics ---------------------------------------------------------------------

_AGG_PREFIX = "AGGREGATION_"
STATUS = {
    ACCEPTED: usage_pb2.EVENT_STATUS_ACCEPTED,
    DUPLICATE: usage_pb2.EVENT_STATUS_DUPLICATE,
    REJECTED: usage_pb2.EVENT_STATUS_REJECTED,
}


def result(outcome: Outcome) -> usage_pb2.EventResult:
    return usage_pb2.EventResult(
        unique_id=outcome.unique_id,
        status=STATUS[outcome.status],
        reason=outcome.reason,
        message=outcome.message,
    )


def aggregation_in(value: usage_pb2.Aggregation.ValueType) -> str:
    """AGGREGATION_COUNT_UNIQUE -> "count_unique"; unspecified -> ""; unknown -> "unknown"."""
    if value == 0:
        return ""
    try:
        return str(usage_pb2.Aggregation.Name(value)).removeprefix(_AGG_PREFIX).lower()
    except ValueError:
        return "unknown"


def aggregation_out(value: str) -> usage_pb2.Aggregation.ValueType:
    return usage_pb2.Aggregation.Value(_AGG_PREFIX + value.upper())


def metric_fields(msg: usage_pb2.Metric) -> MetricFields:
    return MetricFields(
        code=msg.code,
        name=msg.name,
        description=msg.description,
        event_name=msg.event_name,
        aggregation=aggregation_in(msg.aggregation),
        property=msg.property,
        filters=tuple(Filter(f.property, tuple(f.values)) for f in msg.filters),
        credit_type=msg.credit_burn.credit_type,
        credit_rate=msg.credit_burn.rate,
    )


def metric_out(metric: BillableMetric) -> usage_pb2.Metric:
    out = usage_pb2.Metric(
        code=metric.code,
        name=metric.name,
        description=metric.description,
        event_name=metric.event_name,
        aggregation=aggregation_out(metric.aggregation),
        property=metric.property,
        filters=[
            usage_pb2.PropertyFilter(property=f["property"], values=f["values"])
            for f in (metric.filters or [])
        ],
        create_time=ts(metric.created_at),
        update_time=ts(metric.updated_at),
    )
    if metric.credit_type:
        out.credit_burn.credit_type = metric.credit_type
        out.credit_burn.rate = metric.credit_rate or ""
    return out


def populated_paths(msg: Message) -> list[str]:
    """The implied update mask of AIP-134: the fields the request populated."""
    return [field.name for field, _ in msg.ListFields()]


def period_bound(msg: Message, field: str):  # type: ignore[no-untyped-def]
    """A request timestamp as a datetime, None when unset."""
    if not msg.HasField(field):
        return None
    return from_ts(getattr(msg, field), field)


# -- a REST batch's events as JSON (usage/batch_edge.py) ----------------------------------------

# What each field of UsageEvent takes in JSON, by every name the transcoder reads it under.
_FIELDS = {
    "uniqueId": "a string",
    "unique_id": "a string",
    "account": "a string",
    "eventName": "a string",
    "event_name": "a string",
    "timestamp": "an RFC 3339 timestamp string (2026-03-01T00:00:00Z, years 0001 to 9999)",
    "event_time": "an RFC 3339 timestamp string (2026-03-01T00:00:00Z, years 0001 to 9999)",
    "properties": "a JSON object",
}
_KINDS = {str: "a string", bool: "a boolean", list: "an array", type(None): "null"}


def _kind(value: Any) -> str:
    if isinstance(value, bool | str | list) or value is None:
        return _KINDS[type(value)]
    return "an object" if isinstance(value, dict) else "a number"


_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?Z")
_STRINGS = (("uniqueId", "unique_id"), ("account",), ("eventName", "event_name"))
_BIGGEST = 10**308  # a whole number past a double's range fails to parse


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, str | bool | float):
        return True
    if isinstance(value, int):
        return -_BIGGEST < value < _BIGGEST
    if depth > 100:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    return isinstance(value, dict) and all(_plain(v, depth + 1) for v in value.values())


def _surely_readable(event: dict[str, Any]) -> bool:
    """True only for an event protobuf's JSON parser takes (the common case, without it: it
    costs about 0.2 ms an event); False when unsure, and the parser decides."""
    for names in _STRINGS:
        given = [n for n in names if n in event]
        if len(given) > 1 or (given and not isinstance(event[given[0]], str | None)):
            return False
    given = [n for n in ("timestamp", "event_time") if n in event]
    if len(given) > 1:
        return False
    if given and event[given[0]] is not None:
        stamp = event[given[0]]
        match = _STAMP.fullmatch(stamp) if isinstance(stamp, str) else None
        if match is None or not "0002" <= match[1] <= "9998":
            return False
        try:
            year, month, day, hour, minute, second = (int(match[k]) for k in range(1, 7))
            datetime.datetime(year, month, day, hour, minute, second)
        except ValueError:
            return False
    properties = event.get("properties")
    return properties is None or (isinstance(properties, dict) and _plain(properties))


def json_event_problem(event: Any) -> str | None:
    """Why the transcoder cannot read this JSON value as a UsageEvent, or None when it can.
    The message names the field and what it takes, never the value sent."""
    if not isinstance(event, dict):
        return f"an event is a JSON object, not {_kind(event)}"
    if _surely_readable(event):
        return None
    try:
        json_format.ParseDict(event, usage_pb2.UsageEvent(), ignore_unknown_fields=True)
        return None
    except Exception:  # noqa: BLE001 - ParseDict lets a few TypeErrors through
        pass
    for key in _FIELDS:
        if key in event:
            try:
                json_format.ParseDict(
                    {key: event[key]}, usage_pb2.UsageEvent(), ignore_unknown_fields=True
                )
            except Exception:  # noqa: BLE001
                return f"{key} is not {_FIELDS[key]}: the event does not parse as a UsageEvent"
    return "the event does not parse as a UsageEvent"
