"""A catalog string over its length answers as every other over-long field does: 400
FIELD_INVALID naming the field (README "Input rules": names 200), at any length past the limit.
The catalog's names, keys and nicknames were bounded only in the domain, so 201 characters
answered INVALID_ARGUMENT naming `name`, and 1001 FIELD_INVALID naming `product.name`."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import catalog_pb2
from tests.catalog.support import call, price, product
from tests.helpers import error_field, error_reason

BAD = grpc.StatusCode.INVALID_ARGUMENT


def refused(fn, *args, **kwargs) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    assert err.value.code() == BAD, err.value.details()
    return error_reason(err.value), error_field(err.value)


@pytest.mark.parametrize("over", [1, 500, 900])
def test_a_product_name_past_200_is_field_invalid_at_any_length(channel, over) -> None:  # type: ignore[no-untyped-def]
    assert product(channel, "n" * 200).name == "n" * 200
    assert refused(product, channel, "n" * (200 + over)) == ("FIELD_INVALID", "product.name")


@pytest.mark.parametrize(
    ("field", "limit"),
    [("nickname", 200), ("lookup_key", 200), ("subscription_group", 200)],
)
def test_a_price_string_past_its_limit_is_field_invalid(channel, field, limit) -> None:  # type: ignore[no-untyped-def]
    owner = product(channel, "Plans").product_id
    assert getattr(price(channel, owner, **{field: "p" * limit}), field) == "p" * limit
    got = refused(price, channel, owner, **{field: "q" * (limit + 1)})
    assert got == ("FIELD_INVALID", f"price.{field}")


@pytest.mark.parametrize(("field", "limit"), [("feature", 100), ("value", 200)])
def test_an_entitlement_string_past_its_limit_is_field_invalid(channel, field, limit) -> None:  # type: ignore[no-untyped-def]
    def with_entitlement(text: str) -> catalog_pb2.Product:
        fields = {"feature": "sso", field: text}
        return product(channel, "Ent", entitlements=[catalog_pb2.Entitlement(**fields)])

    assert getattr(with_entitlement("e" * limit).entitlements[0], field) == "e" * limit
    reason, named = refused(with_entitlement, "e" * (limit + 1))
    assert reason == "FIELD_INVALID"
    assert (
        named is not None and named.startswith("product.entitlements") and named.endswith(field)
    ), named


def test_nothing_is_written_when_a_length_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    before = len(
        call(channel, "ListProducts", catalog_pb2.ListProductsRequest(page_size=100)).products
    )
    refused(product, channel, "x" * 201)
    after = call(channel, "ListProducts", catalog_pb2.ListProductsRequest(page_size=100))
    assert len(after.products) == before
