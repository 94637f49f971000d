"""An upgrade seen once the provider's billing period has ended (the renewal not made yet: the
provider renews a moment after the period's end; or a paused subscription, which renews not
at all) grants nothing: nothing is left of that period, and the renewal grants the new plan.
Its grant, expiring at the period's end, used to be refused by the ledger (an expiry in the
past), so the subscription's event failed on every attempt and the new quantity was never
recorded."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send
from tollbooth.db.models import StripeEvent, Subscription

EVERY = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
    )
]


def at_provider(world: World, sub_id: str, change: Any) -> None:
    """Change the provider's subscription as it would hold it."""
    with world.sandbox.app.state.store.tx() as store:
        sub = store.get(sub_id)
        assert sub is not None
        for item in sub["items"]["data"]:
            change(item)
        store.put(sub)


def updated(world: World, created: dict[str, Any], n: int) -> tuple[str, str | None]:
    """A `customer.subscription.updated` naming the subscription (the handler reads the
    provider's object, whatever the body says): the inbox's status and error for it."""
    body = {**created, "id": f"{created['id']}_u{n}", "type": "customer.subscription.updated"}
    assert signed_send(world, json.dumps(body).encode()) == 200
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, body["id"])
        assert row is not None
        return row.status, row.last_error


def test_an_upgrade_seen_after_the_period_ended_grants_nothing_and_is_recorded(
    quiet: World,
) -> None:
    quiet.price("pro", grants=EVERY)
    token, account = quiet.token()
    cs = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(cs)
    completed = events_of(quiet, "checkout.session.completed", cs)[0]
    assert signed_send(quiet, json.dumps(completed).encode()) == 200
    assert quiet.balance(account, "api_calls") == "100"
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(cs).subscription)
    created = events_of(quiet, "customer.subscription.created", sub_id)[0]

    now = int(time.time())

    def ended(item: dict[str, Any]) -> None:
        item["current_period_start"] = now - 31 * 86_400
        item["current_period_end"] = now - 60

    # Stripe has not renewed it yet: the sandbox's subscription on a test clock before the
    # period's end (on the default clock, which follows the wall clock, the sandbox's tick
    # would renew it any moment, and the upgrade below would then be in the new period).
    clock = quiet.stripe.v1.test_helpers.test_clocks.create(
        params={"frozen_time": now - 30 * 86_400}
    )
    with quiet.sandbox.app.state.store.tx() as store:
        sub = store.get(sub_id)
        assert sub is not None
        sub["test_clock"] = clock.id
        store.put(sub)
    at_provider(quiet, sub_id, ended)
    assert updated(quiet, created, 1) == ("applied", None)
    at_provider(quiet, sub_id, lambda item: item.update(quantity=3))
    assert updated(quiet, created, 2) == ("applied", None)

    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.scalars(
            select(Subscription).where(Subscription.stripe_subscription_id == sub_id)
        ).one()
        assert row.quantity == 3
    assert quiet.balance(account, "api_calls") == "100"  # nothing for a period that is over
