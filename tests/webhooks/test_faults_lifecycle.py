"""Faults during whole lifecycles: the provider failing in the fulfilment guard's cancel and
refund, and a subscription's life (purchase, renewal, upgrade, cancel at period end) delivered
with duplicates, twins and shuffled order: money moves once, each notification is sent once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, start_world, wait_for
from tests.devstack import migrated_sqlite
from tests.webhooks.guards import notices
from tests.webhooks.test_group_guard import NOTICE, live, second_open_session
from tollbooth.app import inbox_worker
from tollbooth.db.models import Price, StripeEvent

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


@pytest.fixture
def delivering(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The world with the inbox worker a server replica runs (failed events retried, the
    first time after 0.5 s instead of 10)."""
    w = start_world(
        migrated_sqlite(tmp_path / "billing.db"), tmp_path, BILLING_INBOX_RETRY_FIRST_MS="500"
    )
    worker = inbox_worker(w.deps, interval_sec=0.2).start()
    yield w
    worker.stop()
    w.stop()


@pytest.fixture
def faulty(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(
        migrated_sqlite(tmp_path / "billing.db"),
        tmp_path,
        faults="duplicate=0.5,shuffle=1,twin=0.5,seed=7",
        retry_max_sec=0.3,
    )
    yield w
    w.stop()


def refunds_of(world: World, sub_id: str) -> list[dict[str, Any]]:
    """The refunds the provider made of a subscription's first payment (its events)."""
    sub = world.stripe.v1.subscriptions.retrieve(sub_id)
    invoice = world.stripe.v1.invoices.retrieve(str(sub.latest_invoice))
    intent = str(invoice.payments.data[0].payment.payment_intent)
    charge = str(world.stripe.v1.payment_intents.retrieve(intent).latest_charge)
    raw = world.stripe.raw_request("get", "/v1/events", type="refund.created", limit=100)
    listed = json.loads(raw.body)["data"]  # type: ignore[attr-defined]
    return [e["data"]["object"] for e in listed if e["data"]["object"].get("charge") == charge]


def test_the_guard_s_cancel_and_refund_failing_at_the_provider_are_retried_and_done_once(
    delivering: World,
) -> None:
    world = delivering
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "pro").session.stripe_checkout_session_id
    second = second_open_session(world, first)
    world.pay(first)
    world.settled()
    assert world.balance(account, "api_calls") == "100"
    # The provider fails the guard's cancel once, then its refund once.
    world.sandbox.stalls.add("DELETE", "/v1/subscriptions/", seconds=0, status=500)
    world.sandbox.stalls.add("POST", "/v1/refunds", seconds=0, status=503)
    world.pay(second)
    world.settled()
    loser = str(world.stripe.v1.checkout.sessions.retrieve(second).subscription)
    wait_for(
        lambda: (
            world.stripe.v1.subscriptions.retrieve(loser).status == "canceled"
            and refunds_of(world, loser)
        ),
        90,
        "the retried guard to cancel and refund",
    )
    wait_for(lambda: notices(world, account, NOTICE), 60, "the conflict notification")
    world.settled()
    assert len(refunds_of(world, loser)) == 1
    assert len(notices(world, account, NOTICE)) == 1
    assert live(world, account) == [
        str(world.stripe.v1.checkout.sessions.retrieve(first).subscription)
    ]
    assert world.balance(account, "api_calls") == "100"


def test_a_lifecycle_delivered_with_duplicates_twins_and_shuffles_notifies_each_change_once(
    faulty: World,
) -> None:
    world = faulty
    every = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
        )
    ]
    more = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="300", on_purchase=True, on_renewal=True
        )
    ]
    world.price("pro", grants=every)
    world.price("team", grants=more, amount=9900)
    world.buy(world.token()[0], "team")  # `team` synced to the provider
    token, account = world.token()
    world.gate.open.clear()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    world.advance(31)  # one renewal, paid
    world.gate.open.set()
    world.settled()
    wait_for(lambda: world.balance(account, "api_calls") == "200", 60, "purchase and renewal")
    with world.deps.db.transaction(readonly=True) as session:
        prices = {p.lookup_key: p.stripe_price_id for p in session.scalars(select(Price))}
    item = world.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    world.gate.open.clear()
    world.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["team"]}]}
    )
    world.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    world.gate.open.set()
    world.settled()
    wait_for(lambda: world.balance(account, "api_calls") == "400", 60, "the upgrade's grant")
    world.gate.open.clear()
    world.advance(31)  # ends it
    world.gate.open.set()
    world.settled()

    def applied() -> bool:
        with world.deps.db.transaction(readonly=True) as session:
            return not list(
                session.scalars(
                    select(StripeEvent.event_id).where(
                        StripeEvent.status.in_(("pending", "failed"))
                    )
                )
            )

    wait_for(applied, 60, "every event applied")
    told = world.notifications(account)
    assert world.stripe.v1.subscriptions.retrieve(sub_id).status == "canceled"
    assert told.count("subscription.created") == 1, told
    assert told.count("subscription.canceled") == 1, told
    assert told.count("checkout.completed") == 1, told
    assert told.count("invoice.paid") == 2, told
    assert told.count("credits.granted") == 3, told  # purchase, renewal, upgrade
    assert told.count("credits.voided") == 0, told


def test_a_failed_renewal_then_a_new_card_is_past_due_then_active_each_told_once(
    faulty: World,
) -> None:
    import httpx

    from billing.v1 import checkout_pb2
    from tests.conftest import bearer_md

    world = faulty
    every = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
        )
    ]
    world.price("pro", grants=every)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id, card="4000000000000341")  # pays now, fails every renewal
    sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    world.advance(31)
    world.settled()
    wait_for(
        lambda: world.status(token).state == checkout_pb2.SUBSCRIPTION_STATE_PAST_DUE,
        60,
        "past_due",
    )
    assert world.balance(account, "api_calls") == "100"  # the failed renewal granted nothing
    portal = world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(return_url="https://app.example/account"),
        metadata=bearer_md(token),
        timeout=30,
    )
    paid = httpx.post(
        f"{portal.url}/payment_method", data={"card": "4242 4242 4242 4242"}, timeout=30
    )
    assert paid.status_code in (200, 303), paid.text
    assert world.stripe.v1.subscriptions.retrieve(sub_id).status == "active"
    world.settled()
    wait_for(
        lambda: world.status(token).state == checkout_pb2.SUBSCRIPTION_STATE_ACTIVE,
        60,
        "active again",
    )
    wait_for(lambda: world.balance(account, "api_calls") == "200", 60, "the renewal's grant")
    world.settled()
    told = world.notifications(account)
    assert told.count("invoice.payment_failed") == 1, told
    assert told.count("invoice.paid") == 2, told  # the first invoice, then the renewal
    assert told.count("credits.granted") == 2, told
    assert told.count("subscription.created") == 1, told
    assert told.count("subscription.canceled") == 0, told
    states = [
        s
        for s in world.checkout.ListSubscriptions(
            checkout_pb2.ListSubscriptionsRequest(), metadata=bearer_md(token), timeout=10
        ).subscriptions
    ]
    assert len(states) == 1
