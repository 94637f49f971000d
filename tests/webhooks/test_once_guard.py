"""The fulfilment guard of prices bought once (`tollbooth.checkout.once`): two paid checkouts
of one non-stackable one-time price (two tabs opened before the slot rule, or before either
was paid) never make two purchases. The one fulfilled first keeps the purchase; the other's
payment is refunded in full, it grants nothing, and `checkout.duplicate_refunded` records it.
Two fulfilments at once on two servers (PostgreSQL) take turns under the account's lock."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import World, events_of, signed_send, start_world
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET
from tests.devstack import grpc_server
from tollbooth.app import Deps, inbox_worker
from tollbooth.db.models import CheckoutSession, NotificationOutbox, Purchase, StripeEvent
from tollbooth.webhooks.signature import header

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_world(pg_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


def second_open_session(world: World, first_stripe_id: str) -> str:
    """Another open checkout of the same items, as a tab opened beside the first before the
    slot rule would be (made at the provider and recorded beside the first)."""
    with world.deps.db.transaction() as session:
        first = session.scalars(
            select(CheckoutSession).where(
                CheckoutSession.stripe_checkout_session_id == first_stripe_id
            )
        ).one()
        customer = world.stripe.v1.checkout.sessions.retrieve(first_stripe_id).customer
        created = world.stripe.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "customer": str(customer),
                "line_items": [
                    {"price": i["stripe_price_id"], "quantity": i["quantity"]} for i in first.items
                ],
                "success_url": "https://app.example/ok",
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


def purchases(world: World, account: str) -> list[str]:
    """The checkout ids of the account's purchases."""
    with world.deps.db.transaction(readonly=True) as session:
        return list(
            session.scalars(
                select(Purchase.checkout_session_id).where(Purchase.billing_account_id == account)
            )
        )


def notices(world: World, account: str) -> list[dict[str, Any]]:
    with world.deps.db.transaction(readonly=True) as session:
        return [
            dict(n.payload)
            for n in session.scalars(
                select(NotificationOutbox).where(
                    NotificationOutbox.billing_account_id == account,
                    NotificationOutbox.type == "checkout.duplicate_refunded",
                )
            )
        ]


def refunded(world: World, stripe_session_id: str) -> bool:
    intent = world.stripe.v1.checkout.sessions.retrieve(stripe_session_id).payment_intent
    charge = world.stripe.v1.payment_intents.retrieve(str(intent)).latest_charge
    raw = json.loads(world.stripe.raw_request("get", f"/v1/charges/{charge}").body)  # type: ignore[attr-defined]
    return bool(raw["refunded"]) and raw["amount_refunded"] == raw["amount"]


def our_id(world: World, stripe_session_id: str) -> str:
    with world.deps.db.transaction(readonly=True) as session:
        return str(
            session.scalars(
                select(CheckoutSession.id).where(
                    CheckoutSession.stripe_checkout_session_id == stripe_session_id
                )
            ).one()
        )


def test_a_checkout_paid_after_the_price_was_bought_is_refunded(pg_world: World):
    world = pg_world
    life = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "lifetime").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    assert world.balance(account, "api_calls") == "100"
    world.pay(later)  # paid after the purchase
    assert signed_send(world, completed(world, later)) == 200
    assert purchases(world, account) == [our_id(world, first)]
    assert world.balance(account, "api_calls") == "100"  # nothing granted for the later one
    assert refunded(world, later) and not refunded(world, first)
    [notice] = notices(world, account)
    assert (notice["checkout_session_id"], notice["price_id"]) == (
        our_id(world, later),
        life.price_id,
    )
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert len(notices(world, account)) == 1 and world.balance(account, "api_calls") == "100"
    assert purchases(world, account) == [our_id(world, first)]


def test_two_checkouts_paid_before_either_is_fulfilled_on_two_servers_make_one_purchase(
    pg_world: World,
):
    world = pg_world
    world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "lifetime").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    world.pay(later)
    other_deps = Deps.build(world.settings)
    with grpc_server(other_deps) as port:
        try:
            targets = [world.grpc_target, f"127.0.0.1:{port}"]
            bodies = [completed(world, first), completed(world, later)]
            start = threading.Barrier(2)

            def deliver(n: int) -> None:
                with grpc.insecure_channel(targets[n]) as channel:
                    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
                    start.wait()
                    stub.RecordStripeEvent(
                        webhook_pb2.RecordStripeEventRequest(
                            payload=bodies[n], stripe_signature=header(bodies[n], WEBHOOK_SECRET)
                        ),
                        metadata=SERVICE_MD,
                        timeout=60,
                    )

            threads = [threading.Thread(target=deliver, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            with world.deps.db.transaction(readonly=True) as session:
                waiting = [e for e in session.scalars(select(StripeEvent)) if e.status == "failed"]
            for evt in waiting:  # a purchase found under the lock: the retry refunds
                assert evt.last_error is not None and "PRICE_ALREADY_PURCHASED" in evt.last_error
                inbox_worker(world.deps).run_once(now=evt.next_attempt_at)
        finally:
            other_deps.db.dispose()
    [kept] = purchases(world, account)
    assert world.balance(account, "api_calls") == "100"
    by_ours = {our_id(world, s): s for s in (first, later)}
    [lost] = [s for ours, s in by_ours.items() if ours != kept]
    assert refunded(world, lost) and not refunded(world, by_ours[kept])
    [notice] = notices(world, account)
    assert notice["checkout_session_id"] == our_id(world, lost)
    with world.deps.db.transaction(readonly=True) as session:
        statuses = {e.status for e in session.scalars(select(StripeEvent))}
    assert statuses == {"applied"}
