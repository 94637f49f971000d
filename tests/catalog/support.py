"""Helpers for catalog tests: stubs calls with the right credentials."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from billing.v1 import catalog_pb2, catalog_pb2_grpc, token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason, keyed

MONTHLY = catalog_pb2.Recurring(interval=catalog_pb2.RECURRING_INTERVAL_MONTH)
SLACK_SEC = 5.0  # a loaded 2-core machine: a snapshot's deadline is its bound plus this


def poll(check: Callable[[], bool], deadline_sec: float) -> bool:
    """Whether `check()` holds within `deadline_sec` (asked every 20 ms, and once at the end)."""
    deadline = time.monotonic() + deadline_sec
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def stub(channel: grpc.Channel) -> catalog_pb2_grpc.CatalogServiceStub:
    return catalog_pb2_grpc.CatalogServiceStub(channel)


def bearer_metadata(channel: grpc.Channel, principal: str = "user-1") -> tuple:
    issued = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=principal, user_id="u"),
        metadata=SERVICE_MD,
        timeout=10,
    )
    return bearer_md(issued.access_token)


def call(channel: grpc.Channel, method: str, request, metadata=SERVICE_MD):  # type: ignore[no-untyped-def]
    return getattr(stub(channel), method)(keyed(request), metadata=metadata, timeout=10)


def product(
    channel: grpc.Channel, name: str = "Pro", request_id: str = "", **fields
) -> catalog_pb2.Product:  # type: ignore[no-untyped-def]
    return call(
        channel,
        "CreateProduct",
        catalog_pb2.CreateProductRequest(
            product=catalog_pb2.Product(name=name, **fields),
            request_id=request_id,
        ),
    )


def price(
    channel: grpc.Channel, product_id: str, request_id: str = "", **fields
) -> catalog_pb2.Price:  # type: ignore[no-untyped-def]
    fields.setdefault("currency", "usd")
    fields.setdefault("unit_amount", 1000)
    fields.setdefault("type", catalog_pb2.PRICE_TYPE_ONE_TIME)
    return call(
        channel,
        "CreatePrice",
        catalog_pb2.CreatePriceRequest(
            price=catalog_pb2.Price(product_id=product_id, **fields),
            request_id=request_id,
        ),
    )


def fails(code: grpc.StatusCode, reason: str, fn, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    """Assert fn(*args) fails with this code and ErrorInfo reason."""
    with pytest.raises(grpc.RpcError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code() == code, exc.value.details()
    assert error_reason(exc.value) == reason, exc.value.details()
    return exc.value


def list_products(channel: grpc.Channel, metadata=SERVICE_MD, **fields):  # type: ignore[no-untyped-def]
    return call(channel, "ListProducts", catalog_pb2.ListProductsRequest(**fields), metadata)


def list_prices(channel: grpc.Channel, product_id: str, metadata=SERVICE_MD, **fields):  # type: ignore[no-untyped-def]
    return call(
        channel,
        "ListPrices",
        catalog_pb2.ListPricesRequest(product_id=product_id, **fields),
        metadata,
    )
