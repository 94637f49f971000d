"""The fulfilment guard (issue 14, finding 1, second half): a checkout opened before a purchase
and paid after it, in the same subscription group, never leaves two live plans: the later
subscription is canceled at the provider at once with its first invoice refunded, grants
nothing, and a notification records it. On PostgreSQL, with two servers."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World, events_of, signed_send
from tests.webhooks.guards import (
    completed,
    deliver_on_two_servers,
    failed_events,
    notices,
    second_open_session,
)
from tollbooth.db.models import NotificationOutbox, StripeEvent, Subscription

NOTICE = "checkout.conflict_canceled"
GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


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
    [notice] = notices(world, account, NOTICE)
    assert (notice["stripe_subscription_id"], notice["kept_stripe_subscription_id"]) == (
        later_sub,
        first_sub,
    )
    status = world.status(token)
    assert (status.plan, status.state) == ("pro", checkout_pb2.SUBSCRIPTION_STATE_ACTIVE)
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert (
        len(notices(world, account, NOTICE)) == 1 and world.balance(account, "api_calls") == "100"
    )


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
    bodies = [completed(world, first), completed(world, later)]
    deliver_on_two_servers(world, bodies, "SUBSCRIPTION_GROUP_CONFLICT")
    subs = {
        s: str(world.stripe.v1.checkout.sessions.retrieve(s).subscription) for s in (first, later)
    }
    kept = live(world, account)
    assert len(kept) == 1
    [canceled] = [sub for sub in subs.values() if sub not in kept]
    assert_canceled_and_refunded(world, canceled)
    assert world.balance(account, "api_calls") == "100"
    [notice] = notices(world, account, NOTICE)
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


@pytest.mark.postgres
def test_a_free_plan_session_paid_after_a_purchase_in_its_group_is_canceled_not_failed(
    pg_world: World,
):
    """A plan that costs nothing: Stripe completes its checkout with `payment_status`
    `no_payment_required` (nothing charged). One opened before a purchase in its group and
    completed after it is canceled like a paid one, with nothing to refund; its event must not
    fail on every attempt (the read phase once acted on `paid` only, so the apply phase's
    "the next attempt cancels" never came)."""
    world = pg_world
    world.price("starter", amount=0, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "starter").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    world.pay(later)
    assert world.stripe.v1.checkout.sessions.retrieve(later).payment_status == (
        "no_payment_required"
    )
    assert signed_send(world, completed(world, later)) == 200
    assert failed_events(world) == []
    later_sub = str(world.stripe.v1.checkout.sessions.retrieve(later).subscription)
    first_sub = str(world.stripe.v1.checkout.sessions.retrieve(first).subscription)
    assert live(world, account) == [first_sub]
    assert world.stripe.v1.subscriptions.retrieve(later_sub).status == "canceled"
    assert world.balance(account, "api_calls") == "100"  # nothing granted for the later one
    [notice] = notices(world, account, NOTICE)
    assert (notice["stripe_subscription_id"], notice["refund"]) == (later_sub, None)
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert len(notices(world, account, NOTICE)) == 1


@pytest.mark.postgres
def test_a_guard_refund_whose_failure_stripe_saved_completes_on_the_retry(pg_world: World):  # type: ignore[no-untyped-def]
    """Stripe saves the 500 of a refund it began under the refund's idempotency key and
    replays it to every retry with that key for 24 hours. The guard's refund key derives from
    the invoice, so the retry must move past it: the event is applied (one refund, nothing
    granted), not failed on every attempt with the money already returned."""
    from tests.webhooks.guards import inbox_worker, refunds_of

    world = pg_world
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "pro").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    world.pay(later)
    world.sandbox.stalls.add("POST", "/v1/refunds", seconds=0, status=500, after=True)
    assert signed_send(world, completed(world, later)) == 200  # stored; its apply failed
    [failed] = failed_events(world)
    assert failed is not None and "PROVIDER_UNAVAILABLE" in failed
    with world.deps.db.transaction(readonly=True) as session:
        due = session.scalars(select(StripeEvent.next_attempt_at)).all()
    inbox_worker(world.deps).run_once(now=max(d for d in due if d is not None))
    assert failed_events(world) == []
    later_sub = str(world.stripe.v1.checkout.sessions.retrieve(later).subscription)
    assert_canceled_and_refunded(world, later_sub)
    assert world.balance(account, "api_calls") == "100"
    [notice] = notices(world, account, NOTICE)
    assert notice["stripe_subscription_id"] == later_sub
    intent = (
        world.stripe.v1.invoices.retrieve(
            str(world.stripe.v1.subscriptions.retrieve(later_sub).latest_invoice)
        )
        .payments.data[0]
        .payment.payment_intent
    )
    [refund] = refunds_of(world, str(intent))  # refunded once, whatever the keys
    # The notice names that refund, though the retry's own key found it made already.
    assert notice["refund"] == refund["id"]
