"""What an update (or create) of a product or price is told about its fields, over gRPC:

- a mask path naming no field of the resource is 400 FIELD_INVALID, `metadata.field`
  `update_mask` and `metadata.path` the path (it was INVALID_ARGUMENT, the path only in the
  message); nothing changes;
- an error about a field of the resource names it from the request (`product.name`,
  `price.metadata['k']`, `product.entitlements[1]`), as the edge's own checks always did (the
  catalog's rules said `name`, `metadata`, `key`, `position`);
- a string over its limit (names, keys, descriptions, metadata keys and values, at the edge's
  limit or the catalog's tighter one) is 400 FIELD_INVALID naming it, never a 5xx nor stored
  cut short."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.support import call, fails, price, product
from tests.helpers import _error_info

BAD = grpc.StatusCode.INVALID_ARGUMENT


def update_product(channel, product_id: str, paths: list[str], **fields):  # type: ignore[no-untyped-def]
    return call(
        channel,
        "UpdateProduct",
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
    )


def update_price(channel, price_id: str, paths: list[str], **fields):  # type: ignore[no-untyped-def]
    return call(
        channel,
        "UpdatePrice",
        catalog_pb2.UpdatePriceRequest(
            price=catalog_pb2.Price(price_id=price_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
    )


def metadata_of(err: grpc.RpcError) -> dict[str, str]:
    info = _error_info(err)
    assert info is not None, err.details()
    return dict(info.metadata)


@pytest.mark.parametrize("path", ["nmae", "product.name", "name.first", "*x"])
def test_an_unknown_product_mask_path_is_field_invalid_naming_the_path(channel, path) -> None:  # type: ignore[no-untyped-def]
    made = product(channel, "Before")
    err = fails(BAD, "FIELD_INVALID", update_product, channel, made.product_id, [path], name="X")
    assert metadata_of(err) == {"field": "update_mask", "path": path}
    got = call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
    assert got.name == "Before"


def test_an_unknown_price_mask_path_is_field_invalid_naming_the_path(channel) -> None:  # type: ignore[no-untyped-def]
    owner = product(channel, "Plans").product_id
    made = price(channel, owner, nickname="before")
    err = fails(
        BAD,
        "FIELD_INVALID",
        update_price,
        channel,
        made.price_id,
        ["nickname", "nick_name"],
        nickname="after",
    )
    assert metadata_of(err) == {"field": "update_mask", "path": "nick_name"}
    got = call(channel, "GetPrice", catalog_pb2.GetPriceRequest(price_id=made.price_id))
    assert got.nickname == "before"


def test_star_beside_other_paths_is_field_invalid_naming_it(channel) -> None:  # type: ignore[no-untyped-def]
    made = product(channel, "Star")
    err = fails(BAD, "FIELD_INVALID", update_product, channel, made.product_id, ["*", "name"])
    assert metadata_of(err) == {"field": "update_mask", "path": "*"}


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"name": " "}, "FIELD_REQUIRED", "product.name"),
        ({"key": "k" * 41}, "FIELD_INVALID", "product.key"),
        ({"key": "not a key"}, "INVALID_ARGUMENT", "product.key"),
        ({"metadata": {"k": "v" * 501}}, "FIELD_INVALID", "product.metadata['k']"),
        ({"metadata": {"k" * 41: "v"}}, "FIELD_INVALID", "product.metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(50)}}, "INVALID_ARGUMENT", "product.metadata"),
        (
            {"entitlements": [catalog_pb2.Entitlement(feature="f")] * 2},
            "INVALID_ARGUMENT",
            "product.entitlements[1]",
        ),
    ],
)
def test_a_product_field_error_names_the_field_from_the_request(  # type: ignore[no-untyped-def]
    channel, fields, reason, field
) -> None:
    err = fails(BAD, reason, product, channel, **{"name": "Named", **fields})
    assert metadata_of(err)["field"] == field
    made = product(channel, "Named")
    err = fails(BAD, reason, update_product, channel, made.product_id, list(fields), **fields)
    assert metadata_of(err)["field"] == field


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"metadata": {"k": "v" * 501}}, "FIELD_INVALID", "price.metadata['k']"),
        ({"position": -1}, "INVALID_ARGUMENT", "price.position"),
        ({"currency": "usdd"}, "CURRENCY_INVALID", "price.currency"),
        ({"product_id": ""}, "FIELD_REQUIRED", "price.product_id"),
    ],
)
def test_a_price_field_error_names_the_field_from_the_request(  # type: ignore[no-untyped-def]
    channel, fields, reason, field
) -> None:
    owner = product(channel, "Plans").product_id
    given = {"product_id": owner, **fields}
    product_id = given.pop("product_id")
    err = fails(BAD, reason, price, channel, product_id, **given)
    assert metadata_of(err)["field"] == field


def test_an_immutable_price_field_is_named_from_the_request(channel) -> None:  # type: ignore[no-untyped-def]
    owner = product(channel, "Plans").product_id
    made = price(channel, owner)
    err = fails(
        BAD, "PRICE_IMMUTABLE", update_price, channel, made.price_id, ["currency"], currency="eur"
    )
    assert metadata_of(err)["field"] == "price.currency"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "n" * 201}, "product.name"),
        ({"description": "d" * 5001}, "product.description"),
        ({"description": "d" * 100_000}, "product.description"),
        ({"metadata": {"k": "v" * 501}}, "product.metadata['k']"),
        ({"metadata": {"k": "v" * 100_000}}, "product.metadata['k']"),
        ({"key": "k" * 41}, "product.key"),
    ],
)
def test_a_too_long_product_string_is_field_invalid_and_nothing_is_stored(  # type: ignore[no-untyped-def]
    channel, fields, field
) -> None:
    made = product(channel, "Short", description="short")
    err = fails(
        BAD, "FIELD_INVALID", update_product, channel, made.product_id, list(fields), **fields
    )
    assert metadata_of(err)["field"] == field
    got = call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
    assert (got.name, got.description, dict(got.metadata), got.key) == ("Short", "short", {}, "")


@pytest.mark.parametrize("blank", ["\u200b", "\ufeff", " \u2060 ", "\u200b\u200c\u200d", "\u3000"])
def test_a_required_catalog_string_of_invisible_characters_only_is_field_required(  # type: ignore[no-untyped-def]
    channel, blank: str
) -> None:
    """A product name (or an entitlement's feature) of zero-width or other invisible
    characters only is as empty as one of spaces: 400 FIELD_REQUIRED naming it, nothing
    stored (before, an invisible product was created and shown to buyers as a blank line)."""
    before = len(
        call(channel, "ListProducts", catalog_pb2.ListProductsRequest(page_size=1000)).products
    )
    err = fails(BAD, "FIELD_REQUIRED", product, channel, blank)
    assert metadata_of(err)["field"] == "product.name"
    made = product(channel, "Named")
    err = fails(
        BAD, "FIELD_REQUIRED", update_product, channel, made.product_id, ["name"], name=blank
    )
    assert metadata_of(err)["field"] == "product.name"
    err = fails(
        BAD,
        "FIELD_REQUIRED",
        product,
        channel,
        "Named",
        entitlements=[catalog_pb2.Entitlement(feature=blank)],
    )
    assert metadata_of(err)["field"] == "product.entitlements[0].feature"
    after = call(channel, "ListProducts", catalog_pb2.ListProductsRequest(page_size=1000)).products
    assert len(after) == before + 1
    assert (
        call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id)).name
        == "Named"
    )
    assert product(channel, "Zero\u200bWidth").name == "Zero\u200bWidth"  # inside a name: kept
