"""Usage protos <-> domain values. Output-only request fields are never read."""

from __future__ import annotations

from google.protobuf.message import Message

from billing.v1 import usage_pb2
from tollbooth import errors
from tollbooth.db.models import BillableMetric
from tollbooth.rpc.convert import from_ts, ts
from tollbooth.usage.aggregate import Filter
from tollbooth.usage.service import ACCEPTED, DUPLICATE, REJECTED, MetricFields, Outcome

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
    try:
        return from_ts(getattr(msg, field))
    except (ValueError, OverflowError):
        raise errors.invalid(
            f"{field} is out of range", reason="FIELD_INVALID", field=field
        ) from None
