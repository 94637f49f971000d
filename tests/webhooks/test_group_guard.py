"""The fulfilment guard (issue 14, finding 1, second half): a checkout opened before a purchase
and paid after it, in the same subscription group, never leaves two live plans: the later
subscription is canceled at the provider at once with its first invoice refunded, grants
nothing, and a notification records it. On PostgreSQL, with two servers."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2, checkout_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import World, events_of, signed_send, start_world
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET
from tests.devstack import grpc_server
from tollbooth.app import Deps, inbox_worker
from tollbooth.db.models import CheckoutSession, NotificationOutbox, StripeEvent, Subscription
from tollbooth.webhooks.signature import header

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


@pytest.fixture
def pg_world(pg_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


def second_open_session(world: World, first_stripe_id: str) -> str:
    """Another open checkout for the same items, as one opened before the purchase would be
    (made at the provider and recorded beside the first, whatever rules creation now has)."""
    with world.deps.db.transaction() as session:
        first = session.scalars(
            select(CheckoutSession).where(
                CheckoutSession.stripe_checkout_session_id == first_stripe_id
            )
        ).one()
        customer = world.stripe.v1.checkout.sessions.retrieve(first_stripe_id).customer
        created = world.stripe.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": str(customer),
                "line_items": [
                    {"price": i["stripe_price_id"], "quantity": i["quantity"]} for i in first.items
                ],
                "success_url": "https://app.example/ok",
                "cancel_url": "https://app.example/pricing",
            }
        )
        session.add(
            CheckoutSession(
                id=f"chk_{uuid.uuid4().hex[:24]}",
                billing_account_id=first.billing_account_id,
                stripe_checkout_session_id=created.id,
                status="open",
                payment_status="unpaid",
                mode=first.mode,
                url=created.url,
                items=first.items,
                amount_total=first.amount_total,
                currency=first.currency,
                client_reference="",
            )
        )
    return str(created.id)


def completed(world: World, stripe_id: str) -> bytes:
    return json.dumps(events_of(world, "checkout.session.completed", stripe_id)[0]).encode()


def live(world: World, account: str) -> list[str]:
    with world.deps.db.transaction(readonly=True) as session:
        return list(
            session.scalars(
                select(Subscription.stripe_subscription_id).where(
                    Subscription.billing_account_id == account,
                    Subscription.state.in_(("active", "trialing", "past_due")),
                )
            )
        )


def notices(world: World, account: str) -> list[dict[str, Any]]:
    with world.deps.db.transaction(readonly=True) as session:
        return [
            dict(n.payload)
            for n in session.scalars(
                select(NotificationOutbox).where(
                    NotificationOutbox.billing_account_id == account,
                    NotificationOutbox.type == "checkout.conflict_canceled",
                )
            )
        ]


def assert_canceled_and_refunded(world: World, sub_id: str) -> None:
    sub = world.stripe.v1.subscriptions.retrieve(sub_id)
    assert sub.status == "canceled"
    invoice = world.stripe.v1.invoices.retrieve(str(sub.latest_invoice))
    intent = invoice.payments.data[0].payment.payment_intent
    charge = world.stripe.v1.payment_intents.retrieve(str(intent)).latest_charge
    raw = json.loads(world.stripe.raw_request("get", f"/v1/charges/{charge}").body)  # type: ignore[attr-defined]
    assert raw["refunded"] is True and raw["amount_refunded"] == raw["amount"]
    assert events_of(world, "charge.refunded", str(charge))


@pytest.mark.postgres
def test_a_session_opened_before_a_purchase_and_paid_after_is_canceled_and_refunded(
    pg_world: World,
):
    world = pg_world
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "pro").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    assert world.balance(account, "api_calls") == "100"
    world.pay(later)  # paid after the purchase
    assert signed_send(world, completed(world, later)) == 200
    later_sub = str(world.stripe.v1.checkout.sessions.retrieve(later).subscription)
    first_sub = str(world.stripe.v1.checkout.sessions.retrieve(first).subscription)
    assert live(world, account) == [first_sub]
    assert world.balance(account, "api_calls") == "100"  # nothing granted for the later one
    assert_canceled_and_refunded(world, later_sub)
    [notice] = notices(world, account)
    assert (notice["stripe_subscription_id"], notice["kept_stripe_subscription_id"]) == (
        later_sub,
        first_sub,
    )
    status = world.status(token)
    assert (status.plan, status.state) == ("pro", checkout_pb2.SUBSCRIPTION_STATE_ACTIVE)
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert len(notices(world, account)) == 1 and world.balance(account, "api_calls") == "100"


@pytest.mark.postgres
def test_two_sessions_paid_before_either_is_fulfilled_on_two_servers_keep_one_plan(
    pg_world: World,
):
    world = pg_world
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "pro").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    world.pay(later)
    other_deps = Deps.build(world.settings)
    with grpc_server(other_deps) as port:
        try:
            targets = [world.channel._channel.target().decode(), f"127.0.0.1:{port}"]  # type: ignore[attr-defined]
            bodies = [completed(world, first), completed(world, later)]
            start = threading.Barrier(2)

            def deliver(n: int) -> int:
                with grpc.insecure_channel(targets[n]) as channel:
                    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
                    start.wait()
                    return stub.RecordStripeEvent(
                        webhook_pb2.RecordStripeEventRequest(
                            payload=bodies[n], stripe_signature=header(bodies[n], WEBHOOK_SECRET)
                        ),
                        metadata=SERVICE_MD,
                        timeout=60,
                    ).status

            threads = [threading.Thread(target=deliver, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            with world.deps.db.transaction(readonly=True) as session:
                waiting = [e for e in session.scalars(select(StripeEvent)) if e.status == "failed"]
            for evt in waiting:  # a conflict found under the lock: the retry cancels and refunds
                assert (
                    evt.last_error is not None and "SUBSCRIPTION_GROUP_CONFLICT" in evt.last_error
                )
                inbox_worker(world.deps).run_once(now=evt.next_attempt_at)
        finally:
            other_deps.db.dispose()
    subs = {
        s: str(world.stripe.v1.checkout.sessions.retrieve(s).subscription) for s in (first, later)
    }
    kept = live(world, account)
    assert len(kept) == 1
    [canceled] = [sub for sub in subs.values() if sub not in kept]
    assert_canceled_and_refunded(world, canceled)
    assert world.balance(account, "api_calls") == "100"
    [notice] = notices(world, account)
    assert notice["stripe_subscription_id"] == canceled
    with world.deps.db.transaction(readonly=True) as session:
        statuses = {e.status for e in session.scalars(select(StripeEvent))}
    assert statuses == {"applied"}


@pytest.mark.postgres
def test_the_canceled_plan_is_never_announced_as_created(pg_world: World):  # type: ignore[no-untyped-def]
    """The guard cancels the later plan at its fulfilment, which records it for the first time:
    receivers are told it was canceled (`subscription.canceled`, `checkout.conflict_canceled`),
    never that it was created; the kept plan was announced once."""
    world = pg_world
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "pro").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    world.pay(later)
    assert signed_send(world, completed(world, later)) == 200
    later_sub = str(world.stripe.v1.checkout.sessions.retrieve(later).subscription)
    first_sub = str(world.stripe.v1.checkout.sessions.retrieve(first).subscription)
    assert_canceled_and_refunded(world, later_sub)
    with world.deps.db.transaction(readonly=True) as session:
        sent = [
            (n.type, n.payload.get("stripe_subscription_id"))
            for n in session.scalars(
                select(NotificationOutbox)
                .where(
                    NotificationOutbox.billing_account_id == account,
                    NotificationOutbox.type.like("subscription.%"),
                )
                .order_by(NotificationOutbox.created_at, NotificationOutbox.id)
            )
        ]
    assert [t for t, sub in sent if sub == later_sub] == ["subscription.canceled"]
    assert [t for t, sub in sent if sub == first_sub] == ["subscription.created"]
