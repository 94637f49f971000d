"""An upgrade's grant is for the rest of the plan's time in this period: it expires at the
period's end, or at Stripe's `cancel_at` when the subscription is scheduled to end before it
(a cancellation set for any instant). Once `cancel_at` has passed the plan holds nothing
(`subscriptions.repository.ended`): an upgrade seen then grants nothing, as one seen after the
period's end does. `cancel_at` is set on the sandbox through the stripe library where it can
be (a future instant); one already passed is written in the sandbox's store, as Stripe would
hold it once the instant passed and before its clock acted on it."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send
from tollbooth.db.models import CreditGrant, Price, StripeEvent, Subscription

DAY = 86_400


def _grants(amount: str) -> list[catalog_pb2.CreditGrantSpec]:
    return [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount=amount, on_purchase=True, on_renewal=True
        )
    ]


def _subscribed(quiet: World) -> tuple[str, str, dict[str, str]]:
    """`pro` (100 a period) bought and fulfilled, `team` (300) at the provider: (account, the
    Stripe subscription, Stripe price ids by lookup key)."""
    quiet.price("pro", grants=_grants("100"))
    quiet.price("team", grants=_grants("300"), amount=9900)
    token, account = quiet.token()
    cs = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(cs)
    completed = events_of(quiet, "checkout.session.completed", cs)[0]
    assert signed_send(quiet, json.dumps(completed).encode()) == 200
    assert quiet.balance(account, "api_calls") == "100"
    quiet.buy(quiet.token()[0], "team")  # someone's checkout puts `team` at the provider
    with quiet.deps.db.transaction(readonly=True) as session:
        prices = {
            p.lookup_key or "": p.stripe_price_id or "" for p in session.scalars(select(Price))
        }
    return account, str(quiet.stripe.v1.checkout.sessions.retrieve(cs).subscription), prices


def _deliver_last_update(quiet: World, sub_id: str) -> str:
    """The sandbox's latest `customer.subscription.updated` of the subscription, handed over:
    the inbox's status for it."""
    event = events_of(quiet, "customer.subscription.updated", sub_id)[-1]
    assert signed_send(quiet, json.dumps(event).encode()) == 200
    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event["id"])
        assert row is not None
        return str(row.status)


def _upgrade(quiet: World, sub_id: str, prices: dict[str, str]) -> str:
    item = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    quiet.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["team"]}]}
    )
    return _deliver_last_update(quiet, sub_id)


def _upgrade_grants(quiet: World, account: str) -> list[CreditGrant]:
    with quiet.deps.db.transaction(readonly=True) as session:
        return list(
            session.scalars(
                select(CreditGrant).where(
                    CreditGrant.billing_account_id == account,
                    CreditGrant.reason.like("upgrade to %"),
                )
            )
        )


def _at(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def test_an_upgrade_grant_expires_at_a_cancel_at_before_the_period_end(quiet: World) -> None:
    account, sub_id, prices = _subscribed(quiet)
    end = int(quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"].data[0].current_period_end)
    cancel_at = int(time.time()) + 10 * DAY
    assert cancel_at < end
    quiet.stripe.v1.subscriptions.update(sub_id, params={"cancel_at": cancel_at})
    assert _deliver_last_update(quiet, sub_id) == "applied"
    assert _upgrade(quiet, sub_id, prices) == "applied"
    (grant,) = _upgrade_grants(quiet, account)
    assert grant.amount == 200
    assert grant.expire_at == _at(cancel_at)
    assert quiet.balance(account, "api_calls") == "300"


def test_an_upgrade_grant_expires_at_the_period_end_before_a_later_cancel_at(
    quiet: World,
) -> None:
    account, sub_id, prices = _subscribed(quiet)
    end = int(quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"].data[0].current_period_end)
    quiet.stripe.v1.subscriptions.update(sub_id, params={"cancel_at": end + 5 * DAY})
    assert _deliver_last_update(quiet, sub_id) == "applied"
    assert _upgrade(quiet, sub_id, prices) == "applied"
    (grant,) = _upgrade_grants(quiet, account)
    assert grant.expire_at == _at(end)


def test_an_upgrade_seen_after_the_cancel_at_passed_grants_nothing(quiet: World) -> None:
    """The period runs on, but the plan ended at `cancel_at`: there is nothing left of it to
    grant for (and a grant expiring then would be refused by the ledger, failing the event)."""
    account, sub_id, prices = _subscribed(quiet)
    passed = int(time.time()) - 60
    # Stripe has not acted yet: its clock for the subscription has not reached `passed` (on
    # the sandbox's default clock, which follows the wall clock, its tick would delete it).
    held = quiet.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": passed - 60})

    def change(sub: dict[str, Any]) -> None:
        sub["cancel_at"], sub["cancel_at_period_end"] = passed, False
        sub["test_clock"] = held.id

    with quiet.sandbox.app.state.store.tx() as store:
        sub = store.get(sub_id)
        assert sub is not None
        change(sub)
        store.put(sub)
        quiet.sandbox.app.state.engine.tick_default_clock()  # at the worst moment
    assert _upgrade(quiet, sub_id, prices) == "applied"
    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.scalars(
            select(Subscription).where(Subscription.stripe_subscription_id == sub_id)
        ).one()
        assert (row.cancel_at, row.quantity) == (_at(passed), 1)
        assert row.current_period_end is not None and row.current_period_end > _at(passed)
    assert _upgrade_grants(quiet, account) == []
    assert quiet.balance(account, "api_calls") == "100"
