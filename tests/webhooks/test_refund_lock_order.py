"""PostgreSQL, real threads: a renewal's invoice.paid takes the account's lock before any
grant, the order a refund takes (account, then balances). Before, it locked the balance first
(the grant) and the account last (`refunds.settle`, and the grant row's key-share on its
account): a refund of another payment of the account, holding the account and reaching for the
same balance, deadlocked with it. An upgrade's grants (customer.subscription.updated) already
wait for the account before any balance; the second test keeps it so."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for

EVERY = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
    )
]


@pytest.fixture
def world(pg_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


def waiting_on_a_lock(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                        " current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def subscribed(world: World) -> tuple[str, str]:
    """A fulfilled `pro` subscription granting 100 api_calls: (account, subscription id)."""
    world.price("pro", grants=EVERY)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    body = json.dumps(events_of(world, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(world, body) == 200
    assert world.balance(account, "api_calls") == "100"
    return account, str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)


def while_a_refund_holds_the_account(world: World, url: str, account: str, body: bytes) -> None:
    """Deliver `body` while another transaction holds the account's lock, as a refund does
    before it voids: once the delivery waits, the api_calls balance must still be free (a
    delivery holding it while waiting for the account deadlocks with the refund)."""
    refund = create_engine(url)
    answers: list[int] = []
    try:
        with refund.connect() as conn:
            conn.execute(
                text("SELECT id FROM billing_accounts WHERE id = :a FOR UPDATE"), {"a": account}
            )
            delivery = threading.Thread(target=lambda: answers.append(signed_send(world, body)))
            delivery.start()
            wait_for(lambda: waiting_on_a_lock(url) > 0, what="the delivery to wait")
            free = conn.execute(
                text(
                    "SELECT billing_account_id FROM credit_balances WHERE billing_account_id = :a"
                    " AND credit_type = 'api_calls' FOR UPDATE NOWAIT"
                ),
                {"a": account},
            ).all()
            assert len(free) == 1
            conn.rollback()
        delivery.join(60)
    finally:
        refund.dispose()
    assert answers == [200]


def test_a_renewal_waits_for_the_accounts_lock_before_taking_any_balance(
    world: World, pg_url: str
) -> None:
    account, sub_id = subscribed(world)
    world.advance(31)  # the renewal, paid
    renewal = str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    paid = json.dumps(events_of(world, "invoice.paid", renewal)[-1]).encode()
    while_a_refund_holds_the_account(world, pg_url, account, paid)
    assert world.balance(account, "api_calls") == "200"


def test_an_upgrade_waits_for_the_accounts_lock_before_taking_any_balance(
    world: World, pg_url: str
) -> None:
    account, sub_id = subscribed(world)
    item = world.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    world.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "quantity": 3}]}
    )
    upgraded = events_of(world, "customer.subscription.updated", sub_id)[-1]
    while_a_refund_holds_the_account(world, pg_url, account, json.dumps(upgraded).encode())
    assert world.balance(account, "api_calls") == "300"  # 100 + (3 - 1) x 100


@pytest.mark.parametrize("attempt", range(3))
def test_a_refund_and_the_fulfilment_it_refunds_delivered_at_once_twice_each(
    world: World, attempt: int
) -> None:
    """A one-time purchase refunded at the provider before anything was delivered; its
    checkout.session.completed and charge.refunded, each with a twin, delivered at once from
    four threads: whatever order the locks give, the purchase ends, its credits are voided
    once, and nothing is left granted."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.webhooks.test_refunds import _allowed, refunded_event

    world.price(
        "lifetime",
        recurring=False,
        amount=4900,
        grants=[
            catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="50", on_purchase=True)
        ],
        entitlements=[catalog_pb2.Entitlement(feature="lifetime-sso")],
    )
    token, account = world.token()
    stripe_id = world.buy(token, "lifetime").session.stripe_checkout_session_id
    world.pay(stripe_id)
    intent = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).payment_intent)
    world.stripe.v1.refunds.create(params={"payment_intent": intent})
    refunded = refunded_event(world, intent)
    completed = events_of(world, "checkout.session.completed", stripe_id)[0]
    bodies = [
        json.dumps(evt).encode()
        for evt in (
            completed,
            refunded,
            {**completed, "id": completed["id"] + "_twin"},
            {**refunded, "id": refunded["id"] + "_twin"},
        )
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda body: signed_send(world, body), bodies))
    assert answers == [200, 200, 200, 200]
    assert world.balance(account, "api_calls") == "0"
    assert _allowed(world, account) is False
    assert world.notifications(account).count("credits.voided") == 1
