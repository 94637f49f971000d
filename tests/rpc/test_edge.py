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
    product = catalog_pb2.Product(name="x" * 1000)
    assert reason_of(catalog_pb2.CreateProductRequest(product=product)) is None
    product.name = "x" * 1001
    assert reason_of(catalog_pb2.CreateProductRequest(product=product)) == "FIELD_INVALID"
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
