"""What the fulfilment guards' tests share (`test_group_guard`: a second plan of one group;
`test_once_guard`: a price bought once bought again): a second open checkout of the same
items, its completion event, the notices a guard writes, and two completions delivered at
once to two servers, each retried by the inbox when it met the other under the lock."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import grpc
from sqlalchemy import select

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import World, events_of
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET
from tests.devstack import grpc_server
from tollbooth.app import Deps, inbox_worker
from tollbooth.db.models import CheckoutSession, NotificationOutbox, StripeEvent
from tollbooth.webhooks.signature import header


def second_open_session(world: World, first_stripe_id: str) -> str:
    """Another open checkout of the same items, as one opened beside the first before the
    rules of creation would allow it (made at the provider and recorded beside the first)."""
    with world.deps.db.transaction() as session:
        first = session.scalars(
            select(CheckoutSession).where(
                CheckoutSession.stripe_checkout_session_id == first_stripe_id
            )
        ).one()
    customer = world.stripe.v1.checkout.sessions.retrieve(first_stripe_id).customer
    created = world.stripe.v1.checkout.sessions.create(
        params={
            "mode": first.mode,
            "customer": str(customer),
            "line_items": [
                {"price": i["stripe_price_id"], "quantity": i["quantity"]} for i in first.items
            ],
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/pricing",
        }
    )
    with world.deps.db.transaction() as session:
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


def notices(world: World, account: str, kind: str) -> list[dict[str, Any]]:
    """The payloads of the account's notifications of type `kind`."""
    with world.deps.db.transaction(readonly=True) as session:
        return [
            dict(n.payload)
            for n in session.scalars(
                select(NotificationOutbox).where(
                    NotificationOutbox.billing_account_id == account,
                    NotificationOutbox.type == kind,
                )
            )
        ]


def refunds_of(world: World, stripe_pi: str) -> list[dict[str, Any]]:
    """The provider's refunds of a payment intent (from its `refund.created` events)."""
    response = world.stripe.raw_request("get", "/v1/events", type="refund.created", limit=100)
    listed = json.loads(response.body)["data"]  # type: ignore[attr-defined]
    return [
        e["data"]["object"] for e in listed if e["data"]["object"]["payment_intent"] == stripe_pi
    ]


def deliver_on_two_servers(world: World, bodies: list[bytes], reason: str) -> None:
    """Each body to its own server (the world's and a second one on the same database), both
    released at once; an event that met the other's effect under the lock failed with
    `reason`, and the inbox's retry then applies it."""
    other_deps = Deps.build(world.settings)
    with grpc_server(other_deps) as port:
        try:
            targets = [world.grpc_target, f"127.0.0.1:{port}"]
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
            for evt in waiting:
                assert evt.last_error is not None and reason in evt.last_error, evt.last_error
                inbox_worker(world.deps).run_once(now=evt.next_attempt_at)
        finally:
            other_deps.db.dispose()


def failed_events(world: World) -> list[str | None]:
    """The last errors of the stored Stripe events that failed (each guard's tests assert none
    did: an event that can never be applied must complete, not fail on every attempt)."""
    with world.deps.db.transaction(readonly=True) as session:
        return list(
            session.scalars(select(StripeEvent.last_error).where(StripeEvent.status == "failed"))
        )
