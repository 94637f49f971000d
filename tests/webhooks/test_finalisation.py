"""Webhook finalisation: effects commit with the event, once, in any order (DESIGN section 6).

Events come from the Stripe sandbox (a real checkout paid with its test helper) and reach the
server through the real sidecar, signed; the sandbox's events are re-sent by hand only where a
test needs a precise order, twins or concurrency.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import event, exc, select

from billing.v1 import catalog_pb2, checkout_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET
from tollbooth.app import inbox_worker
from tollbooth.db.models import (
    BillingEffect,
    CheckoutSession,
    CreditGrant,
    NotificationOutbox,
    StripeEvent,
    Subscription,
)
from tollbooth.webhooks import repository as inbox
from tollbooth.webhooks.signature import header

GRANTS = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
    )
]


def paid_checkout(world: World) -> tuple[str, str, str]:
    """Buy `pro` and pay: (token, account id, provider checkout session id)."""
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    return token, account, stripe_id


def body_of(evt: dict) -> bytes:  # type: ignore[type-arg]
    return json.dumps(evt).encode()


def stored(world: World, event_id: str) -> StripeEvent | None:
    with world.deps.db.transaction(readonly=True) as session:
        return session.get(StripeEvent, event_id)


def test_unknown_event_types_are_stored_and_acknowledged(quiet: World):
    body = body_of(
        {
            "id": "evt_unknown_1",
            "object": "event",
            "type": "radar.early_fraud_warning.created",
            "data": {"object": {"id": "x"}},
        }
    )
    assert signed_send(quiet, body) == 200
    row = stored(quiet, "evt_unknown_1")
    assert row is not None and row.processed_at is not None
    assert (row.status, row.last_error) == (
        "ignored",
        "no handler for radar.early_fraud_warning.created",
    )


def test_an_event_stored_before_handlers_existed_is_processed_when_delivered_again(quiet: World):
    _, account, stripe_id = paid_checkout(quiet)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    body = body_of(completed)
    with quiet.deps.db.transaction() as session:  # as an older version stored it: unprocessed
        inbox.insert_event(
            session,
            event_id=completed["id"],
            type_=completed["type"],
            api_version="",
            livemode=False,
            created=None,
            payload=body,
        )
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 0
    assert signed_send(quiet, body) == 200
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
    assert stored(quiet, completed["id"]).processed_at is not None  # type: ignore[union-attr]
    assert signed_send(quiet, body) == 200
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 1


def test_two_distinct_events_for_one_checkout_session_fulfil_it_once(quiet: World):
    token, account, stripe_id = paid_checkout(quiet)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    twin = {**completed, "id": completed["id"] + "_twin"}
    assert signed_send(quiet, body_of(completed)) == 200
    assert signed_send(quiet, body_of(twin)) == 200
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
    assert quiet.count(BillingEffect, BillingEffect.key == f"checkout:{stripe_id}") == 1
    assert quiet.notifications(account).count("checkout.completed") == 1
    assert quiet.balance(account, "api_calls") == "100"
    assert quiet.status(token).state == checkout_pb2.SUBSCRIPTION_STATE_ACTIVE


@pytest.mark.postgres
def test_twenty_concurrent_deliveries_of_one_event_have_one_effect(pg_url: str, tmp_path):  # type: ignore[no-untyped-def]
    world = start_world(pg_url, tmp_path, deliver=False)
    try:
        _, account, stripe_id = paid_checkout(world)
        completed = events_of(world, "checkout.session.completed", stripe_id)[0]
        twin = {**completed, "id": completed["id"] + "_twin"}
        bodies = [body_of(completed)] * 10 + [body_of(twin)] * 10
        target = world.channel._channel.target().decode()  # type: ignore[attr-defined]
        start = threading.Barrier(len(bodies))

        def deliver(body: bytes) -> bool:
            with grpc.insecure_channel(target) as channel:
                stub = webhook_pb2_grpc.WebhookServiceStub(channel)
                start.wait()
                return stub.RecordStripeEvent(
                    webhook_pb2.RecordStripeEventRequest(
                        payload=body, stripe_signature=header(body, WEBHOOK_SECRET)
                    ),
                    metadata=SERVICE_MD,
                    timeout=60,
                ).duplicate

        with ThreadPoolExecutor(len(bodies)) as pool:
            duplicates = list(pool.map(deliver, bodies))
        assert duplicates.count(False) == 2  # each event id applied once ...
        assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
        assert world.count(BillingEffect, BillingEffect.key == f"checkout:{stripe_id}") == 1
        assert world.count(Subscription) == 1  # ... and the checkout fulfilled once
        assert world.notifications(account).count("checkout.completed") == 1
        assert world.notifications(account).count("subscription.created") == 1
        assert world.balance(account, "api_calls") == "100"
    finally:
        world.stop()


def test_a_database_failure_in_a_handler_keeps_the_event_as_failed_and_the_retry_applies_once(
    quiet: World,
):
    """Store first, then apply: the failure rolls back the effects, never the stored event."""
    _, account, stripe_id = paid_checkout(quiet)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    engine = quiet.deps.db.engine
    failures = []

    def fail_grant(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO CREDIT_GRANTS") and not failures:
            failures.append(statement)
            raise exc.OperationalError(statement, parameters, Exception("connection lost"))

    event.listen(engine, "before_cursor_execute", fail_grant)
    try:
        assert signed_send(quiet, body_of(completed)) == 200  # stored: Stripe may stop
    finally:
        event.remove(engine, "before_cursor_execute", fail_grant)
    assert failures, "the fault was never hit"
    row = stored(quiet, completed["id"])
    assert row is not None
    assert (row.status, row.attempts, row.processed_at) == ("failed", 1, None)
    assert row.last_error is not None and "OperationalError" in row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > row.received_at
    for model in (BillingEffect, Subscription, CreditGrant):
        assert quiet.count(model) == 0, model.__name__
    assert quiet.count(NotificationOutbox) == 0
    with quiet.deps.db.transaction(readonly=True) as session:
        checkout_row = session.scalars(select(CheckoutSession)).one()
        assert (checkout_row.status, checkout_row.fulfilled_at) == ("open", None)
    # The server's own retry, once the backoff has passed:
    done = inbox_worker(quiet.deps).run_once(now=row.next_attempt_at)
    assert [(ident, o.status) for ident, o in done] == [(completed["id"], "applied")]
    assert signed_send(quiet, body_of(completed)) == 200  # Stripe's redelivery: nothing again
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
    assert quiet.balance(account, "api_calls") == "100"
    after = stored(quiet, completed["id"])
    assert after is not None and (after.status, after.attempts) == ("applied", 2)


def test_a_late_subscription_updated_never_resurrects_a_deleted_subscription(quiet: World):
    token, account, stripe_id = paid_checkout(quiet)
    session = quiet.stripe.v1.checkout.sessions.retrieve(stripe_id)
    sub_id = str(session.subscription)
    updated = events_of(quiet, "customer.subscription.updated", sub_id)
    quiet.stripe.v1.subscriptions.cancel(sub_id)
    deleted = events_of(quiet, "customer.subscription.deleted", sub_id)
    assert updated and deleted and updated[-1]["data"]["object"]["status"] == "active"
    assert signed_send(quiet, body_of(deleted[0])) == 200
    assert quiet.status(token).plan == "free"
    for late in updated:  # every earlier "active" update, arriving after the deletion
        assert signed_send(quiet, body_of(late)) == 200
    assert (
        signed_send(quiet, body_of(events_of(quiet, "checkout.session.completed", stripe_id)[0]))
        == 200
    )
    with quiet.deps.db.transaction(readonly=True) as s:
        row = s.scalars(select(Subscription)).one()
        assert row.state == "canceled"
    assert quiet.status(token).plan == "free"
    assert quiet.notifications(account).count("subscription.canceled") == 1


def test_three_renewals_by_the_sandbox_clock_grant_three_times_once_per_invoice(
    database_url: str, tmp_path
):  # type: ignore[no-untyped-def]
    world = start_world(database_url, tmp_path, faults="duplicate=0.5,twin=0.5,seed=5")
    try:
        _, account, _ = paid_checkout(world)
        world.settled()
        for _ in range(3):
            world.advance(31)
        world.settled()
        assert world.count(BillingEffect, BillingEffect.key.like("invoice:%")) == 3
        grants = world.count(CreditGrant, CreditGrant.billing_account_id == account)
        assert grants == 4  # the purchase, then one per renewal invoice
        assert world.balance(account, "api_calls") == "400"
        paid = world.stripe.v1.invoices.list(params={"status": "paid", "limit": 100}).data
        assert len([i for i in paid if i.billing_reason == "subscription_cycle"]) == 3
    finally:
        world.stop()


def test_a_payment_failure_makes_the_plan_past_due(sqlite_world: World):
    world = sqlite_world
    world.price("pro")
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id, card="4000000000000341")  # pays now, fails every renewal
    world.settled()
    world.advance(31)
    world.settled()
    status = world.status(token)
    assert (status.plan, status.state) == ("pro", checkout_pb2.SUBSCRIPTION_STATE_PAST_DUE)
    assert "invoice.payment_failed" in world.notifications(account)


def test_the_provider_unreachable_stores_the_event_as_failed_with_its_error(quiet: World):
    _, _, stripe_id = paid_checkout(quiet)
    session = quiet.stripe.v1.checkout.sessions.retrieve(stripe_id)
    updated = events_of(quiet, "customer.subscription.updated", str(session.subscription))[0]
    quiet.sandbox.stop()
    assert signed_send(quiet, body_of(updated)) == 200
    row = stored(quiet, updated["id"])
    assert row is not None and row.status == "failed"
    assert row.last_error is not None and row.last_error.startswith("PROVIDER_UNAVAILABLE")
    assert row.next_attempt_at is not None
    assert quiet.count(Subscription) == 0


def test_the_checkout_rpc_says_provider_unavailable_when_stripe_is_down(quiet: World):
    quiet.price("pro")
    token, _ = quiet.token()
    quiet.sandbox.stop()
    with pytest.raises(grpc.RpcError) as err:
        quiet.buy(token, "pro")
    from tests.helpers import error_reason

    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    wait_for(lambda: True)


def test_a_setup_checkout_whose_card_update_stripe_failed_and_saved_applies_on_retry(
    quiet: World,
):
    """Setup mode makes the saved card the customer's default under a key derived from the
    customer and the card. Stripe saves the 500 of an update it began under that key and
    replays it for 24 hours: the event's retry moves past it instead of failing every time."""
    quiet.price("pro")
    token, account = quiet.token()
    made = quiet.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            success_url="https://app.example/ok", mode="setup", request_id="setup-saved-500"
        ),
        metadata=[("authorization", f"Bearer {token}")],
        timeout=30,
    ).session
    stripe_id = made.stripe_checkout_session_id
    quiet.pay(stripe_id)
    customer = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).customer)
    quiet.sandbox.stalls.add("POST", f"/v1/customers/{customer}", seconds=0, status=500, after=True)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    assert signed_send(quiet, body_of(completed)) == 200
    row = stored(quiet, completed["id"])
    assert row is not None and row.status == "failed" and row.next_attempt_at is not None
    inbox_worker(quiet.deps).run_once(now=row.next_attempt_at)
    row = stored(quiet, completed["id"])
    assert row is not None and row.status == "applied", row.last_error
    with quiet.deps.db.transaction(readonly=True) as session:
        done = session.scalars(
            select(CheckoutSession).where(CheckoutSession.billing_account_id == account)
        ).one()
        assert (done.status, done.payment_status) == ("complete", "no_payment_required")
    cus = quiet.stripe.v1.customers.retrieve(customer)
    assert cus.invoice_settings.default_payment_method
