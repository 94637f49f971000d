"""Entitlements at the edges of a subscription's life, on PostgreSQL (where holdings are kept in
memory and answered without a statement, so a rule that depends on the time must be applied at
the time of the call, not when the holdings were read):

- a plan set to cancel at its period's end (or at Stripe's `cancel_at`, any date) grants until
  then and nothing after it, even while Stripe's `customer.subscription.deleted` is still on
  its way; an active plan whose
  renewal has not been recorded yet keeps granting (its period rolls forward);
- which subscription states grant: `active`, `trialing`, `past_due` (Stripe's retry window);
  not `unpaid` or `paused` (Stripe: revoke access), nor `incomplete`, `incomplete_expired`,
  `canceled`. `unpaid` and `paused` are still held: checkout and the catalog's hints send the
  buyer to the portal for them, and the billing status names the plan;
- a metered feature counts [period start, period end): the previous period's events never, an
  event at the boundary in the new period only;
- a late `customer.subscription.updated` never brings back what a deletion ended.

The provider's subscription is changed in the sandbox's store (as Stripe would hold it), then
any update of it sends `customer.subscription.updated`, whose handler re-reads that object.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from billing.v1 import (
    catalog_pb2,
    checkout_pb2,
    customer_pb2,
    customer_pb2_grpc,
    entitlement_pb2,
    usage_pb2,
    usage_pb2_grpc,
)
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for
from tests.conftest import SERVICE_MD, bearer_md
from tests.entitlements.support import E, bought, check, events, listing, metric
from tests.entitlements.test_hints import hints
from tollbooth.db.models import NotificationOutbox, Subscription
from tollbooth.notifications import envelope

K = entitlement_pb2
H = catalog_pb2
DAY = 86_400


@pytest.fixture
def world(pg_url: str, tmp_path: Path) -> Iterator[World]:
    w = start_world(pg_url, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def quiet(pg_url: str, tmp_path: Path) -> Iterator[World]:
    """The sandbox keeps its events; the test hands them over in the order it chooses."""
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


def plans(world: World) -> catalog_pb2.Price:
    """`pro` (a boolean and a metered feature) and `team` in the same group."""
    metric(world, "api_calls", "api.call")
    pro = world.price(
        "pro",
        group="plan",
        entitlements=[E(feature="pro"), E(feature="calls", metric="api_calls", limit="100")],
    )
    world.price("team", group="plan", product_id=pro.product_id, amount=9900)
    return pro


def customers_stub(world: World) -> customer_pb2_grpc.CustomerServiceStub:
    return customer_pb2_grpc.CustomerServiceStub(world.channel)


def only_subscription(world: World) -> str:
    (sub,) = world.stripe.v1.subscriptions.list(params={"limit": 100}).data  # this world's only
    return str(sub.id)


def at_provider(world: World, sub_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the provider's subscription, then update it so that Stripe's
    `customer.subscription.updated` is sent (and, in a delivering world, applied)."""
    with world.sandbox.app.state.store.tx() as store:
        sub = store.get(sub_id)
        assert sub is not None
        change(sub)
        store.put(sub)
    world.stripe.v1.subscriptions.update(sub_id, params={"metadata": {"touch": uuid.uuid4().hex}})
    world.settled()


def period(start: int, end: int) -> Callable[[dict[str, Any]], None]:
    def change(sub: dict[str, Any]) -> None:
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, end

    return change


def not_acted_on(world: World, frozen_time: int) -> Callable[[dict[str, Any]], None]:
    """A change that puts the provider's subscription on a test clock frozen at `frozen_time`:
    Stripe has not acted yet on a period's end or a `cancel_at` after it. (On the sandbox's
    default clock, which follows the wall clock, its tick would cancel or renew the
    subscription any moment, as Stripe does once its clock passes them.)"""
    clock = world.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": frozen_time})

    def change(sub: dict[str, Any]) -> None:
        sub["test_clock"] = clock.id

    return change


def sandbox_tick(world: World) -> None:
    """The sandbox's default-clock tick (it runs every few seconds), now: a test that keeps the
    provider from acting shows that it does, whenever the tick comes."""
    with world.sandbox.app.state.store.tx():
        world.sandbox.app.state.engine.tick_default_clock()


def entitled(world: World, token: str) -> tuple[bool, bool, list[str]]:
    """(pro allowed, calls allowed, the features listed), asked twice: the first answer may read
    the holdings, the second is the kept ones' (PostgreSQL); both must agree."""
    answers = [
        (
            check(world, "pro", token=token).allowed,
            check(world, "calls", token=token).allowed,
            [e.feature for e in listing(world, token=token).entitlements],
        )
        for _ in range(2)
    ]
    assert answers[0] == answers[1]
    return answers[0]


def next_action(world: World, token: str, lookup_key: str) -> str:
    answer = world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[checkout_pb2.CheckoutItem(lookup_key=lookup_key)],
            success_url="https://app.example/ok",
            cancel_url="https://app.example/pricing",
            request_id=uuid.uuid4().hex,
        ),
        metadata=bearer_md(token),
        timeout=30,
    )
    return str(answer.WhichOneof("next_action"))


# -- cancel at period end ---------------------------------------------------------------------


def test_a_plan_canceled_at_period_end_grants_until_then_and_not_after_before_its_deletion(
    world: World,
) -> None:
    pro = plans(world)
    token, account = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)
    world.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    world.settled()

    # Scheduled to cancel, its period not over: everything it grants, and it is still the plan.
    assert world.status(token).cancel_at_period_end
    assert entitled(world, token) == (True, True, ["calls", "pro"])
    assert hints(world, pro.product_id, token) == {
        "pro": H.PURCHASE_HINT_CURRENT,
        "team": H.PURCHASE_HINT_MANAGE,
    }

    # Its period has ended; Stripe's deletion has not arrived (late, or retried).
    now = int(time.time())
    not_yet = not_acted_on(world, now - 30 * DAY)

    def ended(sub: dict[str, Any]) -> None:
        period(now - 30 * DAY, now - 60)(sub)
        not_yet(sub)

    at_provider(world, sub_id, ended)
    sandbox_tick(world)
    assert entitled(world, token) == (False, False, [])
    got = check(world, "pro", account=account)  # the service key: the same answer
    assert (got.allowed, got.kind) == (False, K.ENTITLEMENT_KIND_UNSPECIFIED)
    status = world.status(token)
    assert (status.plan, list(status.entitlements)) == ("free", [])
    assert set(hints(world, pro.product_id, token).values()) == {H.PURCHASE_HINT_BUY}
    assert next_action(world, token, "team") == "session"  # no conflict with an ended plan

    # The deletion arrives: nothing changes for entitlements.
    world.stripe.v1.subscriptions.cancel(sub_id)
    world.settled()
    assert entitled(world, token) == (False, False, [])
    assert set(hints(world, pro.product_id, token).values()) == {H.PURCHASE_HINT_BUY}


def test_a_plan_stripe_cancels_at_a_date_grants_until_then_and_not_after_before_its_deletion(
    world: World,
) -> None:
    """Stripe's `cancel_at` (a cancellation scheduled for any date, mid-period here, as the
    dashboard's "cancel on a custom date" sets it): granted before that date; past it, nothing,
    though the period runs on and the deletion has not arrived."""
    pro = plans(world)
    token, account = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)
    now = int(time.time())

    def cancel_at(at: int) -> Callable[[dict[str, Any]], None]:
        def change(sub: dict[str, Any]) -> None:
            period(now - DAY, now + 29 * DAY)(sub)
            sub["cancel_at"], sub["cancel_at_period_end"] = at, False

        return change

    at_provider(world, sub_id, cancel_at(now + 10 * DAY))
    assert entitled(world, token) == (True, True, ["calls", "pro"])
    assert world.status(token).plan == "pro"

    at_provider(world, sub_id, cancel_at(now - 60))
    assert entitled(world, token) == (False, False, [])
    got = check(world, "pro", account=account)
    assert got.allowed is False
    assert world.status(token).plan == "free"
    assert set(hints(world, pro.product_id, token).values()) == {H.PURCHASE_HINT_BUY}
    assert next_action(world, token, "team") == "session"


def test_a_cancel_at_set_through_the_stripe_api_is_stored_and_ends_the_plan_at_that_instant(
    world: World,
) -> None:
    """End to end: `cancel_at` sent with the stripe library to the sandbox (as a merchant's
    backend or dashboard does), its `customer.subscription.updated` stored as the row's
    `cancel_at`; the plan grants before it and nothing from that instant, while the sandbox's
    `customer.subscription.deleted` is still held back; then the deletion arrives."""
    plans(world)
    token, account = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)

    def stored() -> Subscription:
        with world.deps.db.transaction(readonly=True) as session:
            return session.scalars(
                select(Subscription).where(Subscription.stripe_subscription_id == sub_id)
            ).one()

    far = int(time.time()) + 10 * DAY
    world.stripe.v1.subscriptions.update(sub_id, params={"cancel_at": far})
    world.settled()
    row = stored()
    assert row.cancel_at == dt.datetime.fromtimestamp(far, dt.UTC) and not row.cancel_at_period_end
    assert entitled(world, token) == (True, True, ["calls", "pro"])

    soon = int(time.time()) + 6  # time enough for the update to be applied before it
    world.stripe.v1.subscriptions.update(sub_id, params={"cancel_at": soon})
    world.settled()
    assert stored().cancel_at == dt.datetime.fromtimestamp(soon, dt.UTC)
    world.gate.open.clear()  # the deletion waits in the sandbox's queue
    try:
        gone = wait_for(
            lambda: (
                (s := world.stripe.v1.subscriptions.retrieve(sub_id)).status == "canceled" and s
            ),
            what="the sandbox's clock to pass cancel_at",
        )
        assert gone.ended_at == soon
        assert stored().state == "active"  # the deletion has not arrived
        assert entitled(world, token) == (False, False, [])
        assert check(world, "pro", account=account).allowed is False
        assert world.status(token).plan == "free"
    finally:
        world.gate.open.set()
    world.settled()
    assert stored().state == "canceled"
    assert entitled(world, token) == (False, False, [])


def test_a_cancel_at_removed_before_stripe_cancels_grants_again(world: World) -> None:
    """A cancellation date that has passed by this server's clock but that the merchant removed
    before Stripe acted on it (Stripe's object again has no `cancel_at`): the plan grants again
    once that update arrives, from kept holdings too."""
    plans(world)
    token, _ = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)
    now = int(time.time())
    not_yet = not_acted_on(world, now - DAY)

    def cancel_at(at: int | None) -> Callable[[dict[str, Any]], None]:
        def change(sub: dict[str, Any]) -> None:
            period(now - DAY, now + 29 * DAY)(sub)
            sub["cancel_at"], sub["cancel_at_period_end"] = at, False
            not_yet(sub)

        return change

    at_provider(world, sub_id, cancel_at(now - 60))
    assert entitled(world, token) == (False, False, [])
    sandbox_tick(world)
    at_provider(world, sub_id, cancel_at(None))
    assert entitled(world, token) == (True, True, ["calls", "pro"])
    assert world.status(token).plan == "pro"


def test_a_cancel_at_set_or_moved_alone_is_a_subscription_update(world: World) -> None:
    """Stripe's `cancel_at` scheduled, or moved to another date, with nothing else changed
    (Stripe's `customer.subscription.updated`) is a change of the subscription like any
    other: its `subscription.updated` notification is sent and the row's `updated_at` moves."""
    plans(world)
    token, account = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)
    now = int(time.time())

    def updated() -> tuple[int, dt.datetime]:
        with world.deps.db.transaction(readonly=True) as session:
            row = session.scalars(select(Subscription)).one()
            return world.notifications(account).count("subscription.updated"), row.updated_at

    for at in (now + 10 * DAY, now + 20 * DAY):
        sent, stamp = updated()

        def change(sub: dict[str, Any], at: int = at) -> None:
            sub["cancel_at"], sub["cancel_at_period_end"] = at, False

        at_provider(world, sub_id, change)
        with world.deps.db.transaction(readonly=True) as session:
            row = session.scalars(select(Subscription)).one()
            assert row.cancel_at == dt.datetime.fromtimestamp(at, dt.UTC)
        now_sent, now_stamp = updated()
        assert now_sent == sent + 1
        assert now_stamp > stamp


def test_a_scheduled_cancel_at_is_shown_wherever_the_subscription_is(world: World) -> None:
    """Stripe's `cancel_at` is visible to every reader of the subscription, not only enforced:
    GetBillingStatus' and ListSubscriptions' `cancel_at_time`, seed 003's status `cancelAt` and
    the `subscription.updated` notification's `cancelAt`; unset (null) when none is scheduled,
    and unset again once the merchant removes it."""
    plans(world)
    made = customers_stub(world).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=f"{uuid.uuid4().hex[:8]}@cancel-at.example"),
        metadata=SERVICE_MD,
    )
    token, account = world.token(made.account_id)
    assert account == made.account_id
    bought(world, token, "pro")
    sub_id = only_subscription(world)

    def shown() -> tuple[Any, ...]:
        status = world.status(token)
        (listed,) = world.checkout.ListSubscriptions(
            checkout_pb2.ListSubscriptionsRequest(account=account), metadata=SERVICE_MD
        ).subscriptions
        seed = customers_stub(world).GetCustomerSubscription(
            customer_pb2.GetCustomerSubscriptionRequest(customerEmail=made.email),
            metadata=SERVICE_MD,
        )
        return (
            status.cancel_at_time.ToSeconds() if status.HasField("cancel_at_time") else None,
            listed.cancel_at_time.ToSeconds() if listed.HasField("cancel_at_time") else None,
            seed.subscription.cancelAt.ToSeconds()
            if seed.subscription.HasField("cancelAt")
            else None,
        )

    def last_update() -> dict[str, Any]:
        with world.deps.db.transaction(readonly=True) as session:
            row = session.scalars(
                select(NotificationOutbox)
                .where(
                    NotificationOutbox.billing_account_id == account,
                    NotificationOutbox.type == "subscription.updated",
                )
                .order_by(NotificationOutbox.created_at.desc())
                .limit(1)
            ).one()
            return envelope.data(row)

    assert shown() == (None, None, None)
    at = int(time.time()) + 10 * DAY

    def schedule(value: int | None) -> Callable[[dict[str, Any]], None]:
        def change(sub: dict[str, Any]) -> None:
            sub["cancel_at"], sub["cancel_at_period_end"] = value, False

        return change

    at_provider(world, sub_id, schedule(at))
    assert shown() == (at, at, at)
    stamp = dt.datetime.fromtimestamp(at, dt.UTC)
    assert last_update()["cancelAt"] == envelope.timestamp(stamp)
    assert world.status(token).plan == "pro"  # scheduled, not yet reached

    at_provider(world, sub_id, schedule(None))
    assert shown() == (None, None, None)
    assert last_update()["cancelAt"] is None


def test_kept_holdings_stop_granting_when_the_period_ends_with_no_change_at_all(
    world: World,
) -> None:
    """The holdings are kept in memory (PostgreSQL) and nothing changes when the period ends:
    the end is applied at each call, not when they were read."""
    pro = plans(world)
    token, _ = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)
    world.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    world.settled()
    end = int(time.time()) + 8  # time enough to read and keep them first
    at_provider(world, sub_id, period(end - 30 * DAY, end))
    assert entitled(world, token) == (True, True, ["calls", "pro"])  # read, then kept
    assert world.status(token).plan == "pro"
    assert hints(world, pro.product_id, token)["team"] == H.PURCHASE_HINT_MANAGE
    while time.time() < end + 0.1:
        time.sleep(0.1)
    assert entitled(world, token) == (False, False, [])
    assert world.status(token).plan == "free"
    assert set(hints(world, pro.product_id, token).values()) == {H.PURCHASE_HINT_BUY}


def test_an_active_plan_whose_renewal_is_late_keeps_granting_over_a_rolled_period(
    world: World,
) -> None:
    plans(world)
    token, _ = world.token()
    bought(world, token, "pro")
    now = int(time.time())
    end = now - 60  # ended; the provider renews it, and that news has not arrived
    at_provider(world, only_subscription(world), period(end - 30 * DAY, end))
    assert entitled(world, token) == (True, True, ["calls", "pro"])
    calls = check(world, "calls", token=token)
    assert calls.period_start_time.ToDatetime(tzinfo=dt.UTC) == dt.datetime.fromtimestamp(
        end, dt.UTC
    )
    assert (world.status(token).plan, world.status(token).cancel_at_period_end) == ("pro", False)


# -- states -----------------------------------------------------------------------------------

# Stripe's status -> (grants entitlements, still held: the plan, the hints, checkout's conflict)
STATES = {
    "active": (True, True),
    "trialing": (True, True),
    "past_due": (True, True),
    "unpaid": (False, True),
    "paused": (False, True),
    "incomplete": (False, False),
    "incomplete_expired": (False, False),
    "canceled": (False, False),
}


def test_which_subscription_states_grant_entitlements(world: World) -> None:
    pro = plans(world)
    got: dict[str, tuple[bool, bool]] = {}
    for state in STATES:
        token, _ = world.token()
        bought(world, token, "pro")
        mine = world.checkout.ListSubscriptions(
            checkout_pb2.ListSubscriptionsRequest(), metadata=bearer_md(token), timeout=10
        ).subscriptions[0]
        at_provider(world, mine.stripe_subscription_id, lambda sub, s=state: sub.update(status=s))
        allowed, calls, features = entitled(world, token)
        assert allowed == calls == bool(features), state
        status = world.status(token)
        assert bool(status.entitlements) == allowed, state
        held = status.plan == "pro"
        assert hints(world, pro.product_id, token)["pro"] == (
            H.PURCHASE_HINT_CURRENT if held else H.PURCHASE_HINT_BUY
        ), state
        assert next_action(world, token, "team") == ("portal" if held else "session"), state
        got[state] = (allowed, held)
    assert got == STATES


# -- metered periods --------------------------------------------------------------------------


def test_metered_use_counts_its_own_period_only_and_the_boundary_in_the_new_one(
    world: World,
) -> None:
    plans(world)
    token, account = world.token()
    bought(world, token, "pro")
    sub_id = only_subscription(world)
    boundary = int(time.time()) - 3600
    at = dt.datetime.fromtimestamp(boundary, dt.UTC)
    events(world, account, "api.call", 2, when=at - dt.timedelta(seconds=1))  # the old period
    events(world, account, "api.call", 1, when=at - dt.timedelta(microseconds=1))
    events(world, account, "api.call", 1, when=at)  # the boundary: the new period's first instant
    events(world, account, "api.call", 1)  # now

    def counted() -> tuple[str, dt.datetime, dt.datetime]:
        answers = [check(world, "calls", token=token) for _ in range(2)]  # read, then kept
        assert answers[0].used == answers[1].used
        got = answers[0]
        return (
            got.used,
            got.period_start_time.ToDatetime(tzinfo=dt.UTC),
            got.period_end_time.ToDatetime(tzinfo=dt.UTC),
        )

    # The old period ended at the boundary; the renewal not recorded yet (it rolls forward).
    at_provider(world, sub_id, period(boundary - 30 * DAY, boundary))
    assert counted() == ("2", at, at + dt.timedelta(days=30))
    # The renewal recorded: the same period, the same count.
    at_provider(world, sub_id, period(boundary, boundary + 30 * DAY))
    assert counted() == ("2", at, at + dt.timedelta(days=30))
    # The previous period counts the other three, so each event is in exactly one of them.
    assert usage(world, account, at - dt.timedelta(days=30), at) == "3"
    assert usage(world, account, at, at + dt.timedelta(days=30)) == "2"


def usage(world: World, account: str, start: dt.datetime, end: dt.datetime) -> str:
    request = usage_pb2.GetUsageRequest(account=account, metric_code="api_calls")
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    stub = usage_pb2_grpc.UsageServiceStub(world.channel)
    return str(stub.GetUsage(request, metadata=SERVICE_MD, timeout=10).value)


# -- order ------------------------------------------------------------------------------------


def body_of(evt: dict[str, Any]) -> bytes:
    return json.dumps(evt).encode()


def test_late_updates_after_the_deletion_never_bring_entitlements_back(quiet: World) -> None:
    pro = plans(quiet)
    token, _ = quiet.token()
    cs = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(cs)
    assert signed_send(quiet, body_of(events_of(quiet, "checkout.session.completed", cs)[0])) == 200
    assert entitled(quiet, token) == (True, True, ["calls", "pro"])
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(cs).subscription)
    quiet.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    quiet.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": False})
    quiet.stripe.v1.subscriptions.cancel(sub_id)
    (deleted,) = events_of(quiet, "customer.subscription.deleted", sub_id)
    assert signed_send(quiet, body_of(deleted)) == 200
    assert entitled(quiet, token) == (False, False, [])

    late = [
        *events_of(quiet, "customer.subscription.created", sub_id),
        *events_of(quiet, "customer.subscription.updated", sub_id),  # active, then active again
    ]
    assert len(late) >= 3
    for evt in late:
        assert signed_send(quiet, body_of(evt)) == 200
        assert entitled(quiet, token) == (False, False, []), evt["type"]
    assert set(hints(quiet, pro.product_id, token).values()) == {H.PURCHASE_HINT_BUY}
    assert quiet.status(token).plan == "free"


def test_an_upgrade_of_an_unpaid_plan_grants_no_credits(world: World) -> None:
    """An `unpaid` subscription grants nothing: neither its features nor, when its quantity is
    raised, an upgrade's credits (Stripe attempts no payment of an unpaid subscription's
    invoices). The same change of an active plan grants the difference."""
    every = [
        catalog_pb2.CreditGrantSpec(
            credit_type="tokens", amount="100", on_purchase=True, on_renewal=True
        )
    ]
    world.price("pro", grants=every, entitlements=[E(feature="pro")])
    balances = {}
    for state in ("active", "unpaid"):
        token, account = world.token()
        bought(world, token, "pro")
        mine = world.checkout.ListSubscriptions(
            checkout_pb2.ListSubscriptionsRequest(), metadata=bearer_md(token), timeout=10
        ).subscriptions[0]
        sub_id = mine.stripe_subscription_id
        at_provider(world, sub_id, lambda sub, s=state: sub.update(status=s))

        def three(sub: dict[str, Any]) -> None:
            for item in sub["items"]["data"]:
                item["quantity"] = 3

        at_provider(world, sub_id, three)
        balances[state] = world.balance(account, "tokens")
    assert balances == {"active": "300", "unpaid": "100"}
