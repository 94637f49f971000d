"""An upgrade whose `customer.subscription.updated` is applied only after the subscription
renewed (held back, or failing and retried meanwhile): the renewal's invoice grants the new
plan's amounts for the new period, so the upgrade grants nothing more. The difference an
upgrade grants is for the rest of the period in which it happened, and that period is over."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send
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
    """(reason, amount) of each of the account's grants."""
    with world.deps.db.transaction(readonly=True) as session:
        return [
            (g.reason, Decimal(g.amount))
            for g in session.scalars(
                select(CreditGrant).where(CreditGrant.billing_account_id == account)
            )
        ]


@pytest.mark.parametrize("renewal_first", [True, False], ids=["renewal-first", "update-first"])
def test_an_upgrade_applied_after_the_renewal_grants_nothing_beyond_it(
    quiet: World, renewal_first: bool
):
    quiet.price("pro", grants=every("100"))
    quiet.price("team", grants=every("300"), amount=9900)
    quiet.buy(quiet.token()[0], "team")  # someone's checkout puts `team` at the provider
    with quiet.deps.db.transaction(readonly=True) as session:
        prices = {p.lookup_key: p.stripe_price_id for p in session.scalars(select(Price))}
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    for kind in ("customer.subscription.created", "checkout.session.completed"):
        for evt in events_of(quiet, kind, sub_id if "subscription" in kind else stripe_id):
            send(quiet, evt)
    before = quiet.stripe.v1.subscriptions.retrieve(sub_id)
    item = before["items"]["data"][0]
    quiet.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["team"]}]}
    )
    upgraded = events_of(quiet, "customer.subscription.updated", sub_id)
    assert upgraded  # the upgrade's event, held back
    quiet.advance(31)  # the renewal, paid at the provider, on team
    renewal = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    renewal_invoice = quiet.stripe.v1.invoices.retrieve(renewal)
    assert renewal_invoice.billing_reason == "subscription_cycle"
    now = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    assert now["current_period_start"] >= item["current_period_end"]  # a new period
    paid = events_of(quiet, "invoice.paid", renewal)
    late = [*paid, *upgraded] if renewal_first else [*upgraded, *paid]
    for evt in late:
        send(quiet, evt)
    # pro's purchase grant, then team's renewal for the new period: nothing else
    amounts = sorted(amount for _, amount in granted(quiet, account))
    assert amounts == [Decimal(100), Decimal(300)], granted(quiet, account)
    assert quiet.balance(account, "api_calls") == "400"


@pytest.mark.parametrize("change", ["upgrade", "downgrade"])
def test_a_renewal_applied_after_a_plan_change_grants_the_plan_it_charged_for(
    quiet: World, change: str
):
    """The renewal invoice paid for the plan held at the renewal; a change later in the
    period, applied before that invoice's late `invoice.paid`, does not change what it
    grants (the change itself grants any difference, once)."""
    quiet.price("pro", grants=every("100"))
    quiet.price("team", grants=every("300"), amount=9900)
    for key in ("pro", "team"):  # someone's checkouts put both at the provider
        quiet.buy(quiet.token()[0], key)
    with quiet.deps.db.transaction(readonly=True) as session:
        prices = {p.lookup_key: p.stripe_price_id for p in session.scalars(select(Price))}
    assert all(prices.values())
    first, then = ("pro", "team") if change == "upgrade" else ("team", "pro")
    token, account = quiet.token()
    stripe_id = quiet.buy(token, first).session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    for evt in events_of(quiet, "customer.subscription.created", sub_id):
        send(quiet, evt)
    for evt in events_of(quiet, "checkout.session.completed", stripe_id):
        send(quiet, evt)
    quiet.advance(31)  # the renewal, paid on the first plan
    renewal = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    for evt in events_of(quiet, "customer.subscription.updated", sub_id):
        send(quiet, evt)  # the new period
    seen = len(events_of(quiet, "customer.subscription.updated", sub_id))
    item = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    quiet.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices[then]}]}
    )
    for evt in events_of(quiet, "customer.subscription.updated", sub_id)[seen:]:
        send(quiet, evt)  # the change, in the renewed period
    for evt in events_of(quiet, "invoice.paid", renewal):
        send(quiet, evt)  # late
    reasons = dict(granted(quiet, account))
    assert reasons[f"renewal of {first}"] == reasons[f"purchase of {first}"]
    assert f"renewal of {then}" not in reasons
    # the first plan twice (purchase, renewal), and an upgrade's difference in the new period
    expected = Decimal(400) if change == "upgrade" else Decimal(600)
    assert sum(reasons.values()) == expected
    assert Decimal(quiet.balance(account, "api_calls")) == expected


def test_an_upgrade_seen_before_the_renewal_it_follows_grants_the_difference_once(quiet: World):
    """Renewed on pro, then upgraded to team in the new period, and the upgrade's event is the
    first applied after the renewal (the renewal's own events come later): the upgrade grants
    team's difference over pro, which the renewal charged for, and the renewal grants pro."""
    quiet.price("pro", grants=every("100"))
    quiet.price("team", grants=every("300"), amount=9900)
    for key in ("pro", "team"):  # someone's checkouts put both at the provider
        quiet.buy(quiet.token()[0], key)
    with quiet.deps.db.transaction(readonly=True) as session:
        prices = {p.lookup_key: p.stripe_price_id for p in session.scalars(select(Price))}
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    for evt in events_of(quiet, "customer.subscription.created", sub_id):
        send(quiet, evt)
    for evt in events_of(quiet, "checkout.session.completed", stripe_id):
        send(quiet, evt)
    quiet.advance(31)  # the renewal, paid on pro; none of its events applied yet
    renewal = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    held_back = events_of(quiet, "customer.subscription.updated", sub_id)
    item = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    quiet.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["team"]}]}
    )
    upgrade = events_of(quiet, "customer.subscription.updated", sub_id)[len(held_back) :]
    assert upgrade
    for evt in [*upgrade, *held_back, *events_of(quiet, "invoice.paid", renewal)]:
        send(quiet, evt)
    reasons = dict(granted(quiet, account))
    assert reasons == {
        "purchase of pro": Decimal(100),
        "renewal of pro": Decimal(100),
        "upgrade to team": Decimal(200),
    }
    assert Decimal(quiet.balance(account, "api_calls")) == Decimal(400)
