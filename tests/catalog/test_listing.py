"""Public and operator listing: order, visibility, pagination, hints."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.support import (
    MONTHLY,
    bearer_metadata,
    call,
    fails,
    list_prices,
    list_products,
    price,
    product,
)
from tests.conftest import SERVICE_MD
from tollbooth.catalog import service
from tollbooth.catalog.fields import ProductFields

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def names(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.name for p in response.products]


def move(channel, product_id: str, position: int) -> None:  # type: ignore[no-untyped-def]
    call(
        channel,
        "UpdateProduct",
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, position=position),
            update_mask=field_mask_pb2.FieldMask(paths=["position"]),
        ),
    )


def test_products_list_in_creation_order_until_a_position_reorders_them(channel):  # type: ignore[no-untyped-def]
    a, b, c = (product(channel, n) for n in "ABC")
    assert (a.position, b.position, c.position) == (1, 2, 3)  # appended in creation order
    bearer = bearer_metadata(channel)
    assert names(list_products(channel, bearer)) == ["A", "B", "C"]
    move(channel, c.product_id, 1)  # ties with A; A was created first
    assert names(list_products(channel, bearer)) == ["A", "C", "B"]
    product(channel, "D", position=1)  # explicit position, last of the tie
    product(channel, "E")  # no position: after the largest one
    assert names(list_products(channel, bearer)) == ["A", "C", "D", "B", "E"]
    assert names(list_products(channel)) == ["A", "C", "D", "B", "E"]


def test_prices_list_in_configured_order(channel):  # type: ignore[no-untyped-def]
    prod = product(channel, "P").product_id
    first = price(channel, prod, nickname="first")
    price(channel, prod, nickname="second")
    price(channel, prod, nickname="top", position=first.position)
    listed = list_prices(channel, prod, bearer_metadata(channel))
    assert [p.nickname for p in listed.prices] == ["first", "top", "second"]


def test_archived_entries_leave_public_lists_but_operators_can_include_them(channel):  # type: ignore[no-untyped-def]
    kept, gone = product(channel, "Kept"), product(channel, "Gone")
    live = price(channel, kept.product_id, nickname="live")
    old = price(channel, kept.product_id, nickname="old")
    call(channel, "ArchiveProduct", catalog_pb2.ArchiveProductRequest(product_id=gone.product_id))
    call(channel, "ArchivePrice", catalog_pb2.ArchivePriceRequest(price_id=old.price_id))
    bearer = bearer_metadata(channel)
    for md in (bearer, SERVICE_MD):
        assert names(list_products(channel, md)) == ["Kept"]
        listed = list_prices(channel, kept.product_id, md)
        assert [p.price_id for p in listed.prices] == [live.price_id]
    every = list_products(channel, include_inactive=True)
    assert names(every) == ["Kept", "Gone"] and not every.products[1].active
    all_prices = list_prices(channel, kept.product_id, include_inactive=True)
    assert [(p.price_id, p.active) for p in all_prices.prices] == [
        (live.price_id, True),
        (old.price_id, False),
    ]


def test_bearer_asking_for_inactive_entries_is_permission_denied(channel):  # type: ignore[no-untyped-def]
    prod = product(channel, "P").product_id
    bearer = bearer_metadata(channel)
    denied = grpc.StatusCode.PERMISSION_DENIED
    fails(denied, "OPERATION_NOT_PERMITTED", list_products, channel, bearer, include_inactive=True)
    fails(
        denied, "OPERATION_NOT_PERMITTED", list_prices, channel, prod, bearer, include_inactive=True
    )


def test_list_prices_without_product_is_field_required(channel):  # type: ignore[no-untyped-def]
    fails(INVALID, "FIELD_REQUIRED", list_prices, channel, "")
    fails(INVALID, "FIELD_REQUIRED", list_prices, channel, "", bearer_metadata(channel))


def test_list_prices_of_unknown_product_is_not_found(channel):  # type: ignore[no-untyped-def]
    fails(
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        list_prices,
        channel,
        "prod_missing",
        bearer_metadata(channel),
    )


def test_archived_product_lists_no_prices_publicly(channel):  # type: ignore[no-untyped-def]
    prod = product(channel, "P").product_id
    kept = price(channel, prod)
    call(channel, "ArchiveProduct", catalog_pb2.ArchiveProductRequest(product_id=prod))
    public = list_prices(channel, prod, bearer_metadata(channel))
    assert list(public.prices) == [] and public.next_page_token == ""
    operator = list_prices(channel, prod, include_inactive=True)
    assert [p.price_id for p in operator.prices] == [kept.price_id]
    assert operator.prices[0].active  # archiving the product left its prices alone


def test_bearer_listing_carries_a_buy_hint_and_service_listing_none(channel):  # type: ignore[no-untyped-def]
    prod = product(channel, "P").product_id
    price(channel, prod)
    price(channel, prod, type=catalog_pb2.PRICE_TYPE_RECURRING, recurring=MONTHLY)
    public = list_prices(channel, prod, bearer_metadata(channel))
    assert [p.hint for p in public.prices] == [catalog_pb2.PURCHASE_HINT_BUY] * 2
    operator = list_prices(channel, prod)
    assert [p.hint for p in operator.prices] == [catalog_pb2.PURCHASE_HINT_UNSPECIFIED] * 2


def test_pages_cover_every_product_once_in_order(channel):  # type: ignore[no-untyped-def]
    for i in range(7):
        product(channel, f"P{i}", position=7 - i if i % 2 else 0)
    full = names(list_products(channel, page_size=100))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = list_products(channel, page_size=3, page_token=token)
        seen += names(page)
        pages += 1
        token = page.next_page_token
        if pages == 1:
            product(channel, "Late")  # appended after everything: must show up, once, last
        if not token:
            break
    assert pages == 3
    assert seen == full + ["Late"]


def test_page_tokens_are_checked(channel):  # type: ignore[no-untyped-def]
    prod = product(channel, "A").product_id
    product(channel, "B")
    token = list_products(channel, page_size=1).next_page_token
    assert token
    for bad in ("garbage", "e30", token[:-2], token + "x"):
        fails(INVALID, "PAGE_TOKEN_INVALID", list_products, channel, page_size=1, page_token=bad)
    # A token belongs to its query: another visibility or list does not accept it.
    fails(
        INVALID,
        "PAGE_TOKEN_INVALID",
        list_products,
        channel,
        include_inactive=True,
        page_token=token,
    )
    fails(INVALID, "PAGE_TOKEN_INVALID", list_prices, channel, prod, page_token=token)


def test_page_size_defaults_to_20_caps_at_100_and_refuses_negative(channel, db):  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        for i in range(101):
            service.create_product(session, ProductFields(name=f"P{i}"))
    default = list_products(channel)
    assert len(default.products) == 20 and default.next_page_token
    capped = list_products(channel, page_size=1000)
    assert len(capped.products) == 100 and capped.next_page_token
    rest = list_products(channel, page_size=1000, page_token=capped.next_page_token)
    assert names(rest) == ["P100"] and rest.next_page_token == ""
    fails(INVALID, "INVALID_ARGUMENT", list_products, channel, page_size=-1)
