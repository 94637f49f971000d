"""Billable metrics CRUD under the service key."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.helpers import error_field, error_path, error_reason, keyed
from tests.usage.support import usage_stub

A = usage_pb2


def metric(code: str = "api_calls", **fields) -> usage_pb2.Metric:  # type: ignore[no-untyped-def]
    fields.setdefault("event_name", "api_call")
    fields.setdefault("aggregation", A.AGGREGATION_COUNT)
    return usage_pb2.Metric(code=code, **fields)


def create(channel, m: usage_pb2.Metric, request_id: str = "") -> usage_pb2.Metric:  # type: ignore[no-untyped-def]
    return usage_stub(channel).CreateMetric(
        keyed(usage_pb2.CreateMetricRequest(metric=m, request_id=request_id)),
        metadata=SERVICE_MD,
        timeout=10,
    )


def failure(fn) -> tuple[grpc.StatusCode, str | None]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    return exc.value.code(), error_reason(exc.value)


def test_create_then_get_returns_the_metric(channel) -> None:  # type: ignore[no-untyped-def]
    made = create(
        channel,
        metric(
            "tokens",
            name="Tokens",
            aggregation=A.AGGREGATION_SUM,
            property="tokens",
            filters=[usage_pb2.PropertyFilter(property="model", values=["a", "b"])],
            credit_burn=usage_pb2.CreditBurn(credit_type="units", rate="0.50"),
        ),
    )
    got = usage_stub(channel).GetMetric(
        usage_pb2.GetMetricRequest(code="tokens"), metadata=SERVICE_MD
    )
    assert got == made
    assert (got.name, got.aggregation, got.property) == ("Tokens", A.AGGREGATION_SUM, "tokens")
    assert [(f.property, list(f.values)) for f in got.filters] == [("model", ["a", "b"])]
    assert (got.credit_burn.credit_type, got.credit_burn.rate) == ("units", "0.5")
    assert got.create_time.seconds > 0


def test_name_defaults_to_the_code(channel) -> None:  # type: ignore[no-untyped-def]
    assert create(channel, metric("calls")).name == "calls"


def test_code_is_unique(channel) -> None:  # type: ignore[no-untyped-def]
    create(channel, metric("calls"))
    assert failure(lambda: create(channel, metric("calls"))) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )


def test_a_taken_code_is_not_echoed_whole(channel) -> None:  # type: ignore[no-untyped-def]
    """README "Input rules": errors never echo more than 64 characters of an input."""
    create(channel, metric("c" * 100))
    with pytest.raises(grpc.RpcError) as exc:
        create(channel, metric("c" * 100))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "c" * 65 not in (exc.value.details() or "")


def test_create_replays_under_the_same_request_id(channel) -> None:  # type: ignore[no-untyped-def]
    first = create(channel, metric("calls"), request_id="r-1")
    assert create(channel, metric("calls"), request_id="r-1") == first
    assert failure(lambda: create(channel, metric("other"), request_id="r-1"))[1] == (
        "IDEMPOTENCY_KEY_REUSED"
    )


@pytest.mark.parametrize(
    "m,reason",
    [
        (metric(""), "FIELD_REQUIRED"),
        (metric("has space"), "FIELD_INVALID"),
        (metric("a:b"), "FIELD_INVALID"),
        (metric("c", event_name=""), "FIELD_REQUIRED"),
        (metric("c", aggregation=A.AGGREGATION_UNSPECIFIED), "FIELD_REQUIRED"),
        (metric("c", aggregation=99), "FIELD_INVALID"),
        (metric("c", aggregation=A.AGGREGATION_SUM), "FIELD_REQUIRED"),
        (metric("c", property="tokens"), "INVALID_ARGUMENT"),
        (metric("c", filters=[usage_pb2.PropertyFilter(property="m")]), "FIELD_REQUIRED"),
        (metric("c", filters=[usage_pb2.PropertyFilter(values=["x"])]), "FIELD_REQUIRED"),
        (
            metric("c", credit_burn=usage_pb2.CreditBurn(credit_type="u", rate="-1")),
            "AMOUNT_INVALID",
        ),
        (
            metric("c", credit_burn=usage_pb2.CreditBurn(credit_type="u", rate="0")),
            "AMOUNT_INVALID",
        ),
        (
            metric("c", credit_burn=usage_pb2.CreditBurn(credit_type="u", rate="1e3")),
            "AMOUNT_INVALID",
        ),
        (metric("c", credit_burn=usage_pb2.CreditBurn(rate="1")), "FIELD_REQUIRED"),
    ],
)
def test_invalid_metrics_are_refused_with_a_reason(channel, m, reason) -> None:  # type: ignore[no-untyped-def]
    assert failure(lambda: create(channel, m)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_get_of_a_missing_metric_is_not_found(channel) -> None:  # type: ignore[no-untyped-def]
    code, reason = failure(
        lambda: usage_stub(channel).GetMetric(
            usage_pb2.GetMetricRequest(code="nope"), metadata=SERVICE_MD
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_list_pages_through_every_metric_in_code_order(channel) -> None:  # type: ignore[no-untyped-def]
    codes = [f"m{i:02d}" for i in range(7)]
    for code in reversed(codes):
        create(channel, metric(code))
    seen, token = [], ""
    for _ in range(10):
        page = usage_stub(channel).ListMetrics(
            usage_pb2.ListMetricsRequest(page_size=3, page_token=token), metadata=SERVICE_MD
        )
        seen += [m.code for m in page.metrics]
        token = page.next_page_token
        if not token:
            break
    assert seen == codes


def update(channel, m: usage_pb2.Metric, paths: list[str] | None = None) -> usage_pb2.Metric:  # type: ignore[no-untyped-def]
    request = usage_pb2.UpdateMetricRequest(metric=m)
    if paths is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return usage_stub(channel).UpdateMetric(keyed(request), metadata=SERVICE_MD, timeout=10)


def test_update_changes_only_the_populated_fields(channel) -> None:  # type: ignore[no-untyped-def]
    create(
        channel,
        metric(
            "calls", description="d", filters=[usage_pb2.PropertyFilter(property="m", values=["x"])]
        ),
    )
    got = update(channel, usage_pb2.Metric(code="calls", name="Calls"))
    assert (got.name, got.description, got.event_name) == ("Calls", "d", "api_call")
    assert len(got.filters) == 1
    assert got.update_time.ToDatetime() >= got.create_time.ToDatetime()


def test_update_with_a_mask_can_clear_filters_and_change_the_aggregation(channel) -> None:  # type: ignore[no-untyped-def]
    create(channel, metric("calls", filters=[usage_pb2.PropertyFilter(property="m", values=["x"])]))
    got = update(
        channel,
        usage_pb2.Metric(code="calls", aggregation=A.AGGREGATION_MAX, property="tokens"),
        ["filters", "aggregation", "property"],
    )
    assert (got.aggregation, got.property, list(got.filters)) == (A.AGGREGATION_MAX, "tokens", [])


def test_an_unknown_mask_path_is_not_echoed_whole(channel) -> None:  # type: ignore[no-untyped-def]
    """README "Input rules": errors never echo more than 64 characters of an input."""
    create(channel, metric("calls"))
    with pytest.raises(grpc.RpcError) as exc:
        update(channel, usage_pb2.Metric(code="calls"), ["c" * 900])
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "c" * 65 not in (exc.value.details() or "")


def test_update_that_breaks_the_rules_is_refused_and_changes_nothing(channel) -> None:  # type: ignore[no-untyped-def]
    create(channel, metric("calls"))
    code, reason = failure(
        lambda: update(channel, usage_pb2.Metric(code="calls", aggregation=A.AGGREGATION_SUM))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED")
    got = usage_stub(channel).GetMetric(
        usage_pb2.GetMetricRequest(code="calls"), metadata=SERVICE_MD
    )
    assert got.aggregation == A.AGGREGATION_COUNT


def test_update_mask_naming_an_unknown_field_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    create(channel, metric("calls"))
    with pytest.raises(grpc.RpcError) as exc:
        update(channel, usage_pb2.Metric(code="calls"), ["colour"])
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "FIELD_INVALID"
    assert (error_field(exc.value), error_path(exc.value)) == ("update_mask", "colour")


def test_delete_removes_the_metric(channel) -> None:  # type: ignore[no-untyped-def]
    create(channel, metric("calls"))
    stub = usage_stub(channel)
    stub.DeleteMetric(keyed(usage_pb2.DeleteMetricRequest(code="calls")), metadata=SERVICE_MD)
    assert failure(
        lambda: stub.GetMetric(usage_pb2.GetMetricRequest(code="calls"), metadata=SERVICE_MD)
    )[0] == (grpc.StatusCode.NOT_FOUND)
    assert failure(
        lambda: stub.DeleteMetric(
            keyed(usage_pb2.DeleteMetricRequest(code="calls")), metadata=SERVICE_MD
        )
    )[0] == (grpc.StatusCode.NOT_FOUND)
    assert create(channel, metric("calls")).code == "calls"  # the code is free again


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("6479179.72374925143" + "0" * 29, "6479179.72374925143"),
        ("000000000000000000000.5", "0.5"),
        ("1." + "0" * 18 + "1", None),  # 19 fractional digits that count
        ("1" * 21, None),
        ("0.000", None),
    ],
)
def test_a_burn_rate_is_read_as_credit_amounts_are(channel, given, stored) -> None:  # type: ignore[no-untyped-def]
    """Leading and trailing zeros do not count toward a rate's 20 integer and 18 fractional
    digits, as for every credit amount (and as the OpenAPI document says): the rate is its
    value; a rate finer or larger than that, or zero, is AMOUNT_INVALID."""
    burning = metric(
        "burns",
        aggregation=A.AGGREGATION_COUNT,
        credit_burn=usage_pb2.CreditBurn(credit_type="units", rate=given),
    )
    if stored is None:
        assert failure(lambda: create(channel, burning)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "AMOUNT_INVALID",
        )
        return
    assert create(channel, burning).credit_burn.rate == stored
