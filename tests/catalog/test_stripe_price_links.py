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

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.conftest import Linked, dashboard_of
from tests.catalog.support import MONTHLY, call, fails, price, product
from tests.conftest import make_env
from tests.helpers import all_at_once, outcome
from tollbooth.sandbox.app import SandboxHandle

TAKEN = grpc.StatusCode.ALREADY_EXISTS


@pytest.fixture(scope="module")
def replicas(pg_shared_url: str, sandbox: SandboxHandle) -> Iterator[list[grpc.Channel]]:
    """Two `serve-grpc` replicas on the shared PostgreSQL database and the module's sandbox
    (a link is looked up there before it is written)."""
    from tests.devstack import grpc_replicas

    env = make_env(pg_shared_url, BILLING_SANDBOX_PORT=str(sandbox.config.port))
    with grpc_replicas(env) as ports:
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        try:
            for ch in channels:
                grpc.channel_ready_future(ch).result(timeout=30)
            yield channels
        finally:
            for ch in channels:
                ch.close()


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


def stripe_monthly(linked: Linked, amount: int) -> str:
    """A Stripe price charging `amount` usd a month, as the prices linked to it here do (a
    link to one charging otherwise is refused: tests/catalog/test_stripe_links_checked.py)."""
    made = linked.stripe.v1.prices.create(
        params={
            "product": linked.stripe_product(),
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    )
    return str(made.id)


def test_a_create_naming_another_active_prices_stripe_price_is_refused(linked: Linked) -> None:
    channel = linked.channel
    owner = product(channel, "Plans").product_id
    stripe_price = stripe_monthly(linked, 2900)
    pro = price(
        channel,
        owner,
        unit_amount=2900,
        recurring=MONTHLY,
        type=catalog_pb2.PRICE_TYPE_RECURRING,
        stripe_price_id=stripe_price,
    )
    err = fails(
        TAKEN,
        "ALREADY_EXISTS",
        price,
        channel,
        owner,
        unit_amount=100,
        stripe_price_id=stripe_price,
    )
    assert stripe_price in err.details()
    assert [p.price_id for p in prices_of(channel, owner)] == [pro.price_id]


def test_an_update_linking_another_active_prices_stripe_price_is_refused(linked: Linked) -> None:
    channel = linked.channel
    owner = product(channel, "Plans").product_id
    stripe_price = stripe_monthly(linked, 2900)
    price(
        channel,
        owner,
        unit_amount=2900,
        recurring=MONTHLY,
        type=catalog_pb2.PRICE_TYPE_RECURRING,
        stripe_price_id=stripe_price,
    )
    team = price(
        channel, owner, unit_amount=9900, recurring=MONTHLY, type=catalog_pb2.PRICE_TYPE_RECURRING
    )
    fails(TAKEN, "ALREADY_EXISTS", link, channel, team.price_id, stripe_price)
    got = call(channel, "GetPrice", catalog_pb2.GetPriceRequest(price_id=team.price_id))
    assert got.stripe_price_id == ""
    assert (
        link(channel, team.price_id, stripe_monthly(linked, 9900)).stripe_price_id != stripe_price
    )


def test_an_archived_prices_stripe_price_may_be_linked_again(linked: Linked) -> None:
    channel = linked.channel
    owner = product(channel, "Plans").product_id
    stripe_price = linked.stripe_price()
    old = price(channel, owner, stripe_price_id=stripe_price)
    call(channel, "ArchivePrice", catalog_pb2.ArchivePriceRequest(price_id=old.price_id))
    new = price(channel, owner, stripe_price_id=stripe_price)
    assert new.stripe_price_id == stripe_price
    again = link(channel, new.price_id, stripe_price)  # the same link again changes nothing
    assert again.stripe_price_id == stripe_price


def test_concurrent_links_of_one_stripe_price_leave_one(
    replicas: list[grpc.Channel], sandbox: SandboxHandle
) -> None:
    replica_channels = replicas
    owner = product(replica_channels[0], "Plans").product_id
    for _ in range(4):
        a, b = (price(replica_channels[0], owner) for _ in range(2))
        stripe_price = dashboard_of(sandbox).stripe_price()
        results = all_at_once(
            [
                lambda ch=ch, p=p, sp=stripe_price: link(ch, p.price_id, sp)
                for ch, p in zip(replica_channels, (a, b), strict=True)
            ]
        )
        assert sorted(outcome(r) for r in results) == ["ALREADY_EXISTS/ALREADY_EXISTS", "OK"]
        holders = [
            p.price_id
            for p in prices_of(replica_channels[0], owner)
            if p.stripe_price_id == stripe_price
        ]
        assert len(holders) == 1
