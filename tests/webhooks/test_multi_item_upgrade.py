"""A change to a subscription of several items is measured over all of its items: what the
whole set grants per period before the change and after it (each item's price x quantity),
and only the rise is granted, once. Measuring the first item alone granted nothing for a
second item's quantity raised, and granted the new first item's plan again (its credits were
granted already) when the first item was removed."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

from sqlalchemy import select

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World, events_of, signed_send
from tests.conftest import bearer_md
from tollbooth.db.models import CreditGrant, Price


def every(amount: str) -> list[catalog_pb2.CreditGrantSpec]:
    return [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount=amount, on_purchase=True, on_renewal=True
        )
    ]


def send(world: World, event: dict) -> None:  # type: ignore[type-arg]
    assert signed_send(world, json.dumps(event).encode()) == 200


def granted(world: World, account: str) -> list[tuple[str, Decimal]]:
    """(reason, amount) of each of the account's grants, oldest first."""
    with world.deps.db.transaction(readonly=True) as session:
        return [
            (g.reason, Decimal(g.amount))
            for g in session.scalars(
                select(CreditGrant)
                .where(CreditGrant.billing_account_id == account)
                .order_by(CreditGrant.created_at, CreditGrant.id)
            )
        ]


def subscribed_to_both(world: World, units: int = 1) -> tuple[str, str]:
    """An account subscribed to `pro` (100 a period) and `support` (50 a unit a period,
    `units` of it), its events applied; (account, the provider's subscription id)."""
    world.price("pro", group="plan", grants=every("100"))
    world.price("support", group="care", amount=500, grants=every("50"))
    token, account = world.token()
    answer = world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[
                checkout_pb2.CheckoutItem(lookup_key="pro", quantity=1),
                checkout_pb2.CheckoutItem(lookup_key="support", quantity=units),
            ],
            success_url="https://app.example/ok",
            cancel_url="https://app.example/pricing",
        ),
        metadata=bearer_md(token),
        timeout=30,
    )
    stripe_id = answer.session.stripe_checkout_session_id
    world.pay(stripe_id)
    sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    for evt in events_of(world, "customer.subscription.created", sub_id):
        send(world, evt)
    for evt in events_of(world, "checkout.session.completed", stripe_id):
        send(world, evt)
    assert sorted(granted(world, account)) == [
        ("purchase of pro", Decimal(100)),
        ("purchase of support", Decimal(50 * units)),
    ]
    return account, sub_id


def changed(world: World, sub_id: str, items: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    """The `customer.subscription.updated` events of one change of the provider's items."""
    seen = len(events_of(world, "customer.subscription.updated", sub_id))
    world.stripe.v1.subscriptions.update(sub_id, params={"items": items})
    events = events_of(world, "customer.subscription.updated", sub_id)[seen:]
    assert events
    return events


def twin(event: dict) -> dict:  # type: ignore[type-arg]
    """The same change, told again by another event (another id)."""
    out = copy.deepcopy(event)
    out["id"] = f"{event['id']}_twin"
    return out


def test_a_second_items_quantity_raised_grants_its_difference_once(quiet: World) -> None:
    account, sub_id = subscribed_to_both(quiet)
    items = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"]
    assert [i["quantity"] for i in items] == [1, 1]
    raised = changed(quiet, sub_id, [{"id": items[1]["id"], "quantity": 3}])
    for evt in raised:
        send(quiet, evt)
    upgrades = [(r, a) for r, a in granted(quiet, account) if r.startswith("upgrade")]
    assert [a for _, a in upgrades] == [Decimal(100)]  # two more units of support, 50 each
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(250)
    for evt in [*raised, *map(twin, raised), *raised]:  # replays and twins
        send(quiet, evt)
    assert len(granted(quiet, account)) == 3
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(250)


def test_removing_the_first_item_grants_nothing_more(quiet: World) -> None:
    """pro (100) first, support at 4 units (200) second: with pro removed, support is the
    first item, and grants more than pro did, but less than both did."""
    account, sub_id = subscribed_to_both(quiet, units=4)
    items = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"]
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(300)  # 100 + 4 x 50
    removed = changed(quiet, sub_id, [{"id": items[0]["id"], "deleted": True}])
    now = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"]
    assert [(i["id"], i["quantity"]) for i in now] == [(items[1]["id"], 4)]
    for evt in [*removed, *map(twin, removed), *removed]:
        send(quiet, evt)
    assert len(granted(quiet, account)) == 2  # the two purchases, nothing else
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(300)


def test_removing_the_first_item_then_raising_grants_only_past_the_old_level(
    quiet: World,
) -> None:
    """The level the whole set held in the period is the mark: after pro (100) is removed,
    support at 3 units (150) is below the 150 + 100 held before; 6 units (300) is 50 past it."""
    account, sub_id = subscribed_to_both(quiet)
    items = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"]
    steps = [
        [{"id": items[1]["id"], "quantity": 3}],  # 100 + 150: 100 more
        [{"id": items[0]["id"], "deleted": True}],  # 150: nothing
        [{"id": items[1]["id"], "quantity": 6}],  # 300: 50 past the 250 held
    ]
    for step in steps:
        for evt in changed(quiet, sub_id, step):
            send(quiet, evt)
    upgrades = [a for r, a in granted(quiet, account) if r.startswith("upgrade")]
    assert upgrades == [Decimal(100), Decimal(50)]
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(300)


def test_a_change_seen_first_after_the_renewal_is_measured_from_every_line_it_charged(
    quiet: World,
) -> None:
    """Renewed on pro and 4 units of support (300 a period), then pro removed in the new
    period, its event the first applied after the renewal (our record still in the old
    period): measured from all the renewal charged for, nothing is granted beyond the
    renewal; then support raised to 8 units (400) grants the 100 past the 300 held."""
    account, sub_id = subscribed_to_both(quiet, units=4)
    quiet.advance(31)  # the renewal, paid on both items; none of its events applied yet
    renewal = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    assert quiet.stripe.v1.invoices.retrieve(renewal).billing_reason == "subscription_cycle"
    held_back = events_of(quiet, "customer.subscription.updated", sub_id)
    items = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"]
    removed = changed(quiet, sub_id, [{"id": items[0]["id"], "deleted": True}])
    for evt in [*removed, *held_back, *events_of(quiet, "invoice.paid", renewal), *removed]:
        send(quiet, evt)
    reasons = sorted(granted(quiet, account))
    assert reasons == [
        ("purchase of pro", Decimal(100)),
        ("purchase of support", Decimal(200)),
        ("renewal of pro", Decimal(100)),
        ("renewal of support", Decimal(200)),
    ]
    for evt in changed(quiet, sub_id, [{"id": items[1]["id"], "quantity": 8}]):
        send(quiet, evt)
    upgrades = [a for r, a in granted(quiet, account) if r.startswith("upgrade")]
    assert upgrades == [Decimal(100)]
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(700)


def test_an_item_added_grants_its_plan_for_the_rest_of_the_period_once(quiet: World) -> None:
    """pro alone, then 2 units of support added by the merchant (no checkout): the first item
    is unchanged, and support's 100 a period is granted once."""
    quiet.price("pro", group="plan", grants=every("100"))
    quiet.price("support", group="care", amount=500, grants=every("50"))
    quiet.buy(quiet.token()[0], "support")  # someone's checkout puts support at the provider
    with quiet.deps.db.transaction(readonly=True) as session:
        support = session.scalars(select(Price).where(Price.lookup_key == "support")).one()
        stripe_support = support.stripe_price_id
    assert stripe_support
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    for evt in events_of(quiet, "customer.subscription.created", sub_id):
        send(quiet, evt)
    for evt in events_of(quiet, "checkout.session.completed", stripe_id):
        send(quiet, evt)
    added = changed(quiet, sub_id, [{"price": stripe_support, "quantity": 2}])
    for evt in [*added, *map(twin, added), *added]:
        send(quiet, evt)
    assert sorted(granted(quiet, account)) == [
        ("purchase of pro", Decimal(100)),
        ("upgrade to pro, support", Decimal(100)),
    ]
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(200)
