"""A product's `stripe_product_id` and a price's `stripe_price_id` name objects that exist at
Stripe: the link is looked up there (the sandbox here) at create and update, outside any
database transaction, before anything is written. An id Stripe does not know is 400
STRIPE_LINK_NOT_FOUND naming the field; Stripe down or unreachable is 503 UNAVAILABLE
(PROVIDER_UNAVAILABLE); either way nothing is stored. An update that leaves the link alone
asks Stripe nothing. Two products never link one Stripe product (409 ALREADY_EXISTS)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.conftest import Linked
from tests.catalog.support import call, fails, price, product
from tests.conftest import make_env
from tests.devstack import free_port, serving
from tests.helpers import all_at_once, error_field, outcome
from tollbooth.app import Deps
from tollbooth.config import Settings

NOT_FOUND = "STRIPE_LINK_NOT_FOUND"
BAD = grpc.StatusCode.INVALID_ARGUMENT
DOWN = grpc.StatusCode.UNAVAILABLE


def missing(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def products_named(linked: Linked, name: str) -> list[catalog_pb2.Product]:
    listed = call(
        linked.channel,
        "ListProducts",
        catalog_pb2.ListProductsRequest(include_inactive=True, page_size=1000),
    )
    return [p for p in listed.products if p.name == name]


def prices_of(linked: Linked, product_id: str) -> list[catalog_pb2.Price]:
    listed = call(
        linked.channel,
        "ListPrices",
        catalog_pb2.ListPricesRequest(product_id=product_id, include_inactive=True),
    )
    return list(listed.prices)


def update_product(linked: Linked, product_id: str, paths: list[str], **fields):  # type: ignore[no-untyped-def]
    return call(
        linked.channel,
        "UpdateProduct",
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
    )


def update_price(linked: Linked, price_id: str, paths: list[str], **fields):  # type: ignore[no-untyped-def]
    return call(
        linked.channel,
        "UpdatePrice",
        catalog_pb2.UpdatePriceRequest(
            price=catalog_pb2.Price(price_id=price_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
    )


def get_product(linked: Linked, product_id: str) -> catalog_pb2.Product:
    return call(linked.channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=product_id))


def get_price(linked: Linked, price_id: str) -> catalog_pb2.Price:
    return call(linked.channel, "GetPrice", catalog_pb2.GetPriceRequest(price_id=price_id))


# -- an id Stripe does not know -----------------------------------------------------------------


def test_a_product_linked_to_an_unknown_stripe_product_is_refused_and_not_stored(linked) -> None:  # type: ignore[no-untyped-def]
    name = f"Ghost {uuid.uuid4().hex[:6]}"
    ghost = missing("prod")
    err = fails(BAD, NOT_FOUND, product, linked.channel, name, stripe_product_id=ghost)
    assert error_field(err) == "product.stripe_product_id"
    assert ghost in err.details()
    assert products_named(linked, name) == []
    real = linked.stripe_product()
    assert product(linked.channel, name, stripe_product_id=real).stripe_product_id == real


def test_an_update_linking_an_unknown_stripe_product_changes_nothing(linked) -> None:  # type: ignore[no-untyped-def]
    real = linked.stripe_product()
    made = product(linked.channel, "Linked", stripe_product_id=real)
    err = fails(
        BAD,
        NOT_FOUND,
        update_product,
        linked,
        made.product_id,
        ["stripe_product_id", "name"],
        stripe_product_id=missing("prod"),
        name="Renamed",
    )
    assert error_field(err) == "product.stripe_product_id"
    got = get_product(linked, made.product_id)
    assert (got.stripe_product_id, got.name) == (real, "Linked")


def test_a_price_linked_to_an_unknown_stripe_price_is_refused_and_not_stored(linked) -> None:  # type: ignore[no-untyped-def]
    owner = product(linked.channel, "Plans").product_id
    err = fails(BAD, NOT_FOUND, price, linked.channel, owner, stripe_price_id=missing("price"))
    assert error_field(err) == "price.stripe_price_id"
    assert prices_of(linked, owner) == []
    real = linked.stripe_price()
    assert price(linked.channel, owner, stripe_price_id=real).stripe_price_id == real


def test_an_update_linking_an_unknown_stripe_price_changes_nothing(linked) -> None:  # type: ignore[no-untyped-def]
    owner = product(linked.channel, "Plans").product_id
    made = price(linked.channel, owner, nickname="before")
    for paths in (["stripe_price_id", "nickname"], []):  # an explicit mask, then the implied one
        err = fails(
            BAD,
            NOT_FOUND,
            update_price,
            linked,
            made.price_id,
            paths,
            stripe_price_id=missing("price"),
            nickname="after",
        )
        assert error_field(err) == "price.stripe_price_id"
    got = get_price(linked, made.price_id)
    assert (got.stripe_price_id, got.nickname) == ("", "before")
    real = linked.stripe_price()
    assert update_price(linked, made.price_id, [], stripe_price_id=real).stripe_price_id == real


def test_a_stripe_price_id_in_a_product_link_is_not_a_product(linked) -> None:  # type: ignore[no-untyped-def]
    """The link is looked up as the kind of object it names: a price id is no product."""
    fails(BAD, NOT_FOUND, product, linked.channel, "Mixed", stripe_product_id=linked.stripe_price())


# -- Stripe down or unreachable -----------------------------------------------------------------


def test_stripe_down_at_a_product_link_is_503_and_nothing_is_stored(stalls) -> None:  # type: ignore[no-untyped-def]
    name = f"Down {uuid.uuid4().hex[:6]}"
    real = stalls.stripe_product()
    stalls.sandbox.stalls.add("GET", "/v1/products/", seconds=0, status=503, times=10)
    fails(DOWN, "PROVIDER_UNAVAILABLE", product, stalls.channel, name, stripe_product_id=real)
    assert products_named(stalls, name) == []


def test_stripe_down_at_a_price_link_update_is_503_and_nothing_changes(stalls) -> None:  # type: ignore[no-untyped-def]
    owner = product(stalls.channel, "Plans").product_id
    made = price(stalls.channel, owner)
    real = stalls.stripe_price()
    stalls.sandbox.stalls.add("GET", "/v1/prices/", seconds=0, status=500, times=10)
    fails(
        DOWN,
        "PROVIDER_UNAVAILABLE",
        update_price,
        stalls,
        made.price_id,
        ["stripe_price_id"],
        stripe_price_id=real,
    )
    assert get_price(stalls, made.price_id).stripe_price_id == ""


def test_an_update_leaving_the_link_alone_asks_stripe_nothing(stalls) -> None:  # type: ignore[no-untyped-def]
    real = stalls.stripe_product()
    made = product(stalls.channel, "Kept", stripe_product_id=real)
    stalls.sandbox.stalls.add("GET", "/v1/products/", seconds=0, status=503, times=10)
    renamed = update_product(stalls, made.product_id, ["name"], name="Kept too")
    assert (renamed.name, renamed.stripe_product_id) == ("Kept too", real)
    # The same link given again is no new link either.
    again = update_product(stalls, made.product_id, ["stripe_product_id"], stripe_product_id=real)
    assert again.stripe_product_id == real


def test_stripe_unreachable_is_503_and_nothing_is_stored(shared_database_url: str) -> None:
    env = make_env(
        shared_database_url,
        BILLING_SANDBOX_PORT=str(free_port()),  # nothing listens there
        STRIPE_MAX_NETWORK_RETRIES="0",
    )
    deps = Deps.build(Settings.from_env(env))
    name = f"Nowhere {uuid.uuid4().hex[:6]}"
    try:
        with serving(deps) as channel:
            fails(DOWN, "PROVIDER_UNAVAILABLE", product, channel, name, stripe_product_id="prod_x")
            listed = call(
                channel,
                "ListProducts",
                catalog_pb2.ListProductsRequest(include_inactive=True, page_size=1000),
            )
            assert [p for p in listed.products if p.name == name] == []
    finally:
        deps.db.dispose()


# -- one Stripe product, one catalog product ----------------------------------------------------


def test_two_products_never_link_one_stripe_product(linked) -> None:  # type: ignore[no-untyped-def]
    real = linked.stripe_product()
    first = product(linked.channel, "First", stripe_product_id=real)
    name = f"Second {uuid.uuid4().hex[:6]}"
    err = fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        product,
        linked.channel,
        name,
        stripe_product_id=real,
    )
    assert real in err.details()
    assert products_named(linked, name) == []
    other = product(linked.channel, name)
    fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        update_product,
        linked,
        other.product_id,
        ["stripe_product_id"],
        stripe_product_id=real,
    )
    assert get_product(linked, other.product_id).stripe_product_id == ""
    # Archived, the first still holds it (it may be restored): unlinked, it lets go.
    call(
        linked.channel,
        "ArchiveProduct",
        catalog_pb2.ArchiveProductRequest(product_id=first.product_id),
    )
    fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        product,
        linked.channel,
        "Third",
        stripe_product_id=real,
    )
    update_product(linked, first.product_id, ["stripe_product_id"], stripe_product_id="")
    moved = update_product(linked, other.product_id, ["stripe_product_id"], stripe_product_id=real)
    assert moved.stripe_product_id == real


@pytest.mark.parametrize("rounds", [3])
def test_concurrent_links_of_one_stripe_product_leave_one(linked, rounds: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        real = linked.stripe_product()
        names = [f"Race {uuid.uuid4().hex[:6]}" for _ in range(2)]
        results = all_at_once(
            [
                lambda n=n, real=real: product(linked.channel, n, stripe_product_id=real)  # type: ignore[misc]
                for n in names
            ]
        )
        assert sorted(outcome(r) for r in results) == ["ALREADY_EXISTS/ALREADY_EXISTS", "OK"]
        kept = [p for n in names for p in products_named(linked, n)]
        assert [p.stripe_product_id for p in kept] == [real]


# -- a Stripe price charging other figures ------------------------------------------------------


def test_a_price_linked_to_a_stripe_price_charging_otherwise_is_refused_and_not_stored(  # type: ignore[no-untyped-def]
    linked,
) -> None:
    """The Stripe price is read at create and update anyway: one charging another amount,
    currency or recurrence than the price is 400 STRIPE_PRICE_MISMATCH naming the field and
    both ids, and nothing is written. Before, it was stored, listed to buyers, and every
    checkout of it failed."""
    owner = product(linked.channel, "Plans").product_id
    other_amount = linked.stripe_price(amount=999)
    yearly = str(
        linked.stripe.v1.prices.create(
            params={
                "product": linked.stripe_product(),
                "currency": "usd",
                "unit_amount": 1000,
                "recurring": {"interval": "year"},
            }
        ).id
    )
    for stripe_price_id in (other_amount, yearly):
        err = fails(
            BAD,
            "STRIPE_PRICE_MISMATCH",
            price,
            linked.channel,
            owner,
            stripe_price_id=stripe_price_id,
        )
        assert error_field(err) == "price.stripe_price_id"
        assert stripe_price_id in err.details()
    err = fails(
        BAD,
        "STRIPE_PRICE_MISMATCH",
        price,
        linked.channel,
        owner,
        currency="eur",
        stripe_price_id=linked.stripe_price(),
    )
    assert prices_of(linked, owner) == []
    made = price(linked.channel, owner, nickname="before")
    for paths in (["stripe_price_id", "nickname"], []):
        fails(
            BAD,
            "STRIPE_PRICE_MISMATCH",
            update_price,
            linked,
            made.price_id,
            paths,
            stripe_price_id=other_amount,
            nickname="after",
        )
    got = get_price(linked, made.price_id)
    assert (got.stripe_price_id, got.nickname) == ("", "before")
    matching = linked.stripe_price(amount=1000)
    assert (
        update_price(linked, made.price_id, [], stripe_price_id=matching).stripe_price_id
        == matching
    )
    assert (
        price(linked.channel, owner, currency="USD", stripe_price_id=linked.stripe_price()).currency
        == "usd"
    )


# -- an object Stripe holds archived -------------------------------------------------------------


def test_a_link_to_an_archived_stripe_object_is_refused_and_nothing_is_written(linked) -> None:  # type: ignore[no-untyped-def]
    """A Stripe product or price archived there (`active: false`) cannot be sold: every
    checkout of it would fail at Stripe. A new link to one is 400 STRIPE_LINK_INACTIVE naming
    the field, at create and update, and nothing is written."""
    stripe = linked.stripe.v1
    gone_product = linked.stripe_product()
    stripe.products.update(gone_product, params={"active": False})
    gone_price = linked.stripe_price()
    stripe.prices.update(gone_price, params={"active": False})
    name = f"Archived {uuid.uuid4().hex[:6]}"
    err = fails(
        BAD, "STRIPE_LINK_INACTIVE", product, linked.channel, name, stripe_product_id=gone_product
    )
    assert error_field(err) == "product.stripe_product_id"
    assert gone_product in err.details()
    assert products_named(linked, name) == []
    made = product(linked.channel, name)
    fails(
        BAD,
        "STRIPE_LINK_INACTIVE",
        update_product,
        linked,
        made.product_id,
        ["stripe_product_id"],
        stripe_product_id=gone_product,
    )
    assert get_product(linked, made.product_id).stripe_product_id == ""
    err = fails(
        BAD,
        "STRIPE_LINK_INACTIVE",
        price,
        linked.channel,
        made.product_id,
        stripe_price_id=gone_price,
    )
    assert error_field(err) == "price.stripe_price_id"
    assert prices_of(linked, made.product_id) == []
    stripe.prices.update(gone_price, params={"active": True})  # restored at Stripe: taken
    assert price(linked.channel, made.product_id, stripe_price_id=gone_price).stripe_price_id == (
        gone_price
    )
