"""A Stripe price names at most one active catalog price.

The webhooks map a subscription item's Stripe price back to a catalog price
(`provider.repository.price_by_stripe_id`: the active one). An explicit `stripe_price_id` that
another active price already holds made that mapping pick one of two: a checkout of `team`
(9900) linked to `pro`'s Stripe price charged 2900 and recorded the subscription under
whichever price was linked last, even a one-time one. Such a link is now refused like a taken
lookup_key (409 ALREADY_EXISTS, nothing written); an archived price's Stripe price may be
linked again (its replacement), and concurrent links settle on the unique index (PostgreSQL).
"""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.support import MONTHLY, call, fails, price, product
from tests.helpers import all_at_once, outcome

TAKEN = grpc.StatusCode.ALREADY_EXISTS


def stripe_id() -> str:
    return f"price_{uuid.uuid4().hex[:24]}"


def link(channel: grpc.Channel, price_id: str, stripe_price_id: str) -> catalog_pb2.Price:
    return call(
        channel,
        "UpdatePrice",
        catalog_pb2.UpdatePriceRequest(
            price=catalog_pb2.Price(price_id=price_id, stripe_price_id=stripe_price_id),
            update_mask=field_mask_pb2.FieldMask(paths=["stripe_price_id"]),
        ),
    )


def prices_of(channel: grpc.Channel, product_id: str) -> list[catalog_pb2.Price]:
    return list(
        call(
            channel,
            "ListPrices",
            catalog_pb2.ListPricesRequest(product_id=product_id, include_inactive=True),
        ).prices
    )


def test_a_create_naming_another_active_prices_stripe_price_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    owner = product(channel, "Plans").product_id
    linked = stripe_id()
    pro = price(
        channel,
        owner,
        unit_amount=2900,
        recurring=MONTHLY,
        type=catalog_pb2.PRICE_TYPE_RECURRING,
        stripe_price_id=linked,
    )
    err = fails(
        TAKEN,
        "ALREADY_EXISTS",
        price,
        channel,
        owner,
        unit_amount=100,
        stripe_price_id=linked,
    )
    assert linked in err.details()
    assert [p.price_id for p in prices_of(channel, owner)] == [pro.price_id]


def test_an_update_linking_another_active_prices_stripe_price_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    owner = product(channel, "Plans").product_id
    linked = stripe_id()
    price(
        channel,
        owner,
        unit_amount=2900,
        recurring=MONTHLY,
        type=catalog_pb2.PRICE_TYPE_RECURRING,
        stripe_price_id=linked,
    )
    team = price(
        channel, owner, unit_amount=9900, recurring=MONTHLY, type=catalog_pb2.PRICE_TYPE_RECURRING
    )
    fails(TAKEN, "ALREADY_EXISTS", link, channel, team.price_id, linked)
    got = call(channel, "GetPrice", catalog_pb2.GetPriceRequest(price_id=team.price_id))
    assert got.stripe_price_id == ""
    assert link(channel, team.price_id, stripe_id()).stripe_price_id != linked


def test_an_archived_prices_stripe_price_may_be_linked_again(channel) -> None:  # type: ignore[no-untyped-def]
    owner = product(channel, "Plans").product_id
    linked = stripe_id()
    old = price(channel, owner, stripe_price_id=linked)
    call(channel, "ArchivePrice", catalog_pb2.ArchivePriceRequest(price_id=old.price_id))
    new = price(channel, owner, stripe_price_id=linked)
    assert new.stripe_price_id == linked
    again = link(channel, new.price_id, linked)  # the same link again changes nothing
    assert again.stripe_price_id == linked


def test_concurrent_links_of_one_stripe_price_leave_one(replica_channels) -> None:  # type: ignore[no-untyped-def]
    owner = product(replica_channels[0], "Plans").product_id
    for _ in range(4):
        a, b = (price(replica_channels[0], owner) for _ in range(2))
        linked = stripe_id()
        results = all_at_once(
            [
                lambda ch=ch, p=p, linked=linked: link(ch, p.price_id, linked)
                for ch, p in zip(replica_channels, (a, b), strict=True)
            ]
        )
        assert sorted(outcome(r) for r in results) == ["ALREADY_EXISTS/ALREADY_EXISTS", "OK"]
        holders = [
            p.price_id for p in prices_of(replica_channels[0], owner) if p.stripe_price_id == linked
        ]
        assert len(holders) == 1
