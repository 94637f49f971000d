"""The edge: one parse-and-validate step every request passes before any handler or SQL."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import catalog_pb2, catalog_pb2_grpc, checkout_pb2, usage_pb2
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason
from tollbooth.errors import DomainError
from tollbooth.rpc import edge


def reason_of(msg) -> str | None:  # type: ignore[no-untyped-def]
    try:
        edge.validate(msg)
    except DomainError as exc:
        return exc.reason
    return None


def test_a_5_mib_id_over_grpc_is_refused_without_being_echoed(channel):  # type: ignore[no-untyped-def]
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetProduct(
            catalog_pb2.GetProductRequest(product_id="p" * 5 * 1024 * 1024),
            metadata=SERVICE_MD,
            timeout=30,
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "FIELD_INVALID"
    assert len(exc.value.details() or "") < 200


def test_bytes_that_do_not_parse_are_invalid_argument_not_internal(channel):  # type: ignore[no-untyped-def]
    call = channel.unary_unary("/billing.v1.CatalogService/GetProduct")
    # Field 1 (product_id), length 2, invalid UTF-8.
    for raw in (b"\x0a\x02\xff\xfe", b"\x0a\x10abc", b"\xff\xff\xff"):
        with pytest.raises(grpc.RpcError) as exc:
            call(raw, metadata=SERVICE_MD, timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(exc.value) == "MALFORMED_REQUEST"


def test_garbage_without_credentials_is_refused_by_auth_first(channel):  # type: ignore[no-untyped-def]
    call = channel.unary_unary("/billing.v1.CatalogService/GetProduct")
    with pytest.raises(grpc.RpcError) as exc:
        call(b"\x0a\x02\xff\xfe", timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_limits_reach_nested_messages_maps_and_lists() -> None:
    product = catalog_pb2.Product(key="x" * 1000)  # no limit of its own: the default 1000
    assert reason_of(catalog_pb2.CreateProductRequest(product=product)) is None
    product.key = "x" * 1001
    assert reason_of(catalog_pb2.CreateProductRequest(product=product)) == "FIELD_INVALID"
    named = catalog_pb2.Product(name="x" * 200)  # a name's own limit: 200
    assert reason_of(catalog_pb2.CreateProductRequest(product=named)) is None
    named.name = "x" * 201
    assert reason_of(catalog_pb2.CreateProductRequest(product=named)) == "FIELD_INVALID"
    assert (
        reason_of(
            catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(description="d" * 5000))
        )
        is None
    )
    cases = [
        catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(metadata={"k": "a\x00"})),
        catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(metadata={"k\x00": "v"})),
        catalog_pb2.CreateProductRequest(
            product=catalog_pb2.Product(entitlements=[catalog_pb2.Entitlement(feature="\x00")])
        ),
        catalog_pb2.UpdateProductRequest(update_mask={"paths": ["name", "x" * 2000]}),
        checkout_pb2.CreateCheckoutSessionRequest(success_url="https://x/" + "a" * 3000),
    ]
    for msg in cases:
        assert reason_of(msg) == "FIELD_INVALID", msg


def test_struct_values_are_checked_too() -> None:
    event = usage_pb2.UsageEvent(unique_id="e1")
    event.properties.update({"nested": {"deeper": "a\x00b"}})
    assert reason_of(usage_pb2.IngestEventRequest(event=event)) == "FIELD_INVALID"


def test_a_per_item_field_is_left_to_its_handler() -> None:
    bad = usage_pb2.UsageEvent(unique_id="\x00")
    batch = usage_pb2.IngestEventsRequest(events=[usage_pb2.UsageEvent(unique_id="ok"), bad])
    assert reason_of(batch) is None  # the handler answers the bad event alone
    assert reason_of(bad) == "FIELD_INVALID"


def test_the_fast_path_never_skips_a_string_that_needs_checking() -> None:
    """Skipping the walk is only allowed when no string can be over its limit or hold NUL."""
    for value in ("x" * 200, "x" * 1000, "x" * 1001, "é" * 600, "a\x00"):
        msg = catalog_pb2.GetProductRequest(product_id=value)
        raw = msg.SerializeToString()
        parsed_reason = None
        try:
            edge.parse(catalog_pb2.GetProductRequest, raw)
        except DomainError as exc:
            parsed_reason = exc.reason
        assert parsed_reason == reason_of(msg), value[:10]


def _masked_methods() -> list[tuple[str, str]]:
    """(method path, FieldMask field) for every contract RPC whose request has a FieldMask."""
    from tollbooth.rpc.rules import contract_services

    return [
        (f"/{service.full_name}/{method.name}", field.name)
        for service in contract_services()
        for method in service.methods
        for field in method.input_type.fields
        if field.message_type is not None
        and field.message_type.full_name == "google.protobuf.FieldMask"
    ]


MASKED = _masked_methods()


def test_every_update_rpc_is_listed() -> None:
    assert len(MASKED) >= 5
    assert ("/billing.v1.CatalogService/UpdateProduct", "update_mask") in MASKED


@pytest.mark.parametrize("paths", [[""], ["", "name"], ["name", " "]])
@pytest.mark.parametrize("path,field", MASKED, ids=[p.rsplit("/", 1)[1] for p, _ in MASKED])
def test_a_blank_path_in_an_update_mask_is_field_invalid(channel, path, field, paths):  # type: ignore[no-untyped-def]
    """A blank path names no field: refused at the edge for every RPC with a mask, never
    ignored (the mask's other paths applied) and never a 5xx."""
    from google.protobuf import field_mask_pb2
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    mask = field_mask_pb2.FieldMask(paths=paths)
    raw = (
        bytes([(MASK_NUMBERS[path] << 3) | 2, len(mask.SerializeToString())])
        + mask.SerializeToString()
    )
    with pytest.raises(grpc.RpcError) as exc:
        channel.unary_unary(path)(raw, metadata=SERVICE_MD, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert error_reason(exc.value) == "FIELD_INVALID"
    status = rpc_status.from_call(exc.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.metadata["field"] == field


def _mask_numbers() -> dict[str, int]:
    from tollbooth.rpc.rules import contract_services

    found = {}
    for service in contract_services():
        for method in service.methods:
            for field in method.input_type.fields:
                if field.message_type and field.message_type.full_name.endswith("FieldMask"):
                    found[f"/{service.full_name}/{method.name}"] = field.number
    return found


MASK_NUMBERS = _mask_numbers()


def _field_of(err: grpc.RpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.metadata["field"])


def _keyed_methods() -> list[str]:
    from tollbooth.rpc.rules import contract_services

    return [
        f"/{service.full_name}/{method.name}"
        for service in contract_services()
        for method in service.methods
        if "request_id" in method.input_type.fields_by_name and not method.client_streaming
    ]


KEYED = _keyed_methods()


@pytest.mark.parametrize("path", KEYED, ids=[p.rsplit("/", 1)[1] for p in KEYED])
def test_a_request_id_over_200_characters_is_field_invalid_on_every_rpc(channel, path):  # type: ignore[no-untyped-def]
    """One answer for one mistake: a request_id past its 200 characters is FIELD_INVALID
    naming it on every RPC that takes one (was INVALID_ARGUMENT up to 1000 characters, or
    whatever the handler checked first)."""
    method = path.rsplit("/", 1)[1]
    from tollbooth.rpc.rules import contract_services

    [desc] = [m.input_type for s in contract_services() for m in s.methods if m.name == method]
    request = edge.message_class(desc)(request_id="r" * 201)
    with pytest.raises(grpc.RpcError) as exc:
        channel.unary_unary(path)(request.SerializeToString(), metadata=SERVICE_MD, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert error_reason(exc.value) == "FIELD_INVALID", exc.value.details()
    assert _field_of(exc.value) == "request_id"


@pytest.mark.parametrize(
    "seconds,nanos", [(2**40, 0), (-(2**40), 0), (253402300800, 0), (2_000_000_000, 2 * 10**9)]
)
def test_an_expire_time_out_of_range_is_field_invalid(channel, seconds, nanos):  # type: ignore[no-untyped-def]
    from google.protobuf import timestamp_pb2

    from billing.v1 import credit_pb2, credit_pb2_grpc

    with pytest.raises(grpc.RpcError) as exc:
        credit_pb2_grpc.CreditServiceStub(channel).GrantCredits(
            credit_pb2.GrantCreditsRequest(
                account="acct_x",
                credit_type="units",
                amount="1",
                request_id="expire-out-of-range",
                expire_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )
    assert error_reason(exc.value) == "FIELD_INVALID", exc.value.details()
    assert _field_of(exc.value) == "expire_time"


def _enum_cases() -> list[tuple[str, object, str]]:
    from billing.v1 import webhook_pb2

    return [
        (
            "/billing.v1.CatalogService/CreatePrice",
            catalog_pb2.CreatePriceRequest(
                price=catalog_pb2.Price(product_id="prod_x", currency="usd", type=99),  # type: ignore[arg-type]
                request_id="enum-99",
            ),
            "price.type",
        ),
        (
            "/billing.v1.CatalogService/CreatePrice",
            catalog_pb2.CreatePriceRequest(
                price=catalog_pb2.Price(
                    product_id="prod_x",
                    currency="usd",
                    type=catalog_pb2.PRICE_TYPE_RECURRING,
                    recurring=catalog_pb2.Recurring(interval=99),  # type: ignore[arg-type]
                ),
                request_id="enum-99",
            ),
            "price.recurring.interval",
        ),
        (
            "/billing.v1.UsageService/CreateMetric",
            usage_pb2.CreateMetricRequest(
                metric=usage_pb2.Metric(code="m99", event_name="e", aggregation=99),  # type: ignore[arg-type]
                request_id="enum-99",
            ),
            "metric.aggregation",
        ),
        (
            "/billing.v1.StripeEventService/ListStripeEvents",
            webhook_pb2.ListStripeEventsRequest(status=-1),  # type: ignore[arg-type]
            "status",
        ),
    ]


ENUMS = _enum_cases()


@pytest.mark.parametrize("path,request_,field", ENUMS, ids=[f for _, _, f in ENUMS])
def test_an_unknown_enum_number_is_field_invalid_naming_the_field(channel, path, request_, field):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        channel.unary_unary(path)(request_.SerializeToString(), metadata=SERVICE_MD, timeout=10)  # type: ignore[attr-defined]
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert error_reason(exc.value) == "FIELD_INVALID", exc.value.details()
    assert _field_of(exc.value) == field
