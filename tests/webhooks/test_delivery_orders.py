"""Random delivery orders of whole subscription lifecycles, with duplicates and twins from the
sandbox's fault injection: the final state always equals the sandbox's truth, and a canceled
subscription never comes back.

Each round holds the sandbox's deliveries back (the relay answers 503, so it queues and
retries) while a lifecycle runs (checkout, maybe a renewal paid or failed, maybe a cancel at
period end or now, maybe the period end), then lets everything through at once: the sandbox
sends the backlog shuffled (`shuffle=1`), some events twice (`duplicate`), some changes as two
distinct events (`twin`). 20 rounds by default, 200 with BILLING_SOAK=1.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from billing.v1 import checkout_pb2
from tests.checkout.support import World, start_world
from tests.conftest import SERVICE_MD
from tests.devstack import migrated_sqlite

ROUNDS = 200 if os.environ.get("BILLING_SOAK") == "1" else 20
STATES = {v: k for k, v in checkout_pb2.SubscriptionState.items()}


@pytest.fixture
def faulty(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    url = migrated_sqlite(tmp_path / "billing.db")
    w = start_world(
        url, tmp_path, faults="duplicate=0.3,shuffle=1,twin=0.2,seed=20261122", retry_max_sec=0.3
    )
    yield w
    w.stop()


def ours(world: World, account: str) -> checkout_pb2.Subscription:
    listed = world.checkout.ListSubscriptions(
        checkout_pb2.ListSubscriptionsRequest(account=account), metadata=SERVICE_MD
    ).subscriptions
    assert len(listed) == 1
    return listed[0]


def states_told(world: World, account: str) -> list[str]:
    """The states our outbound subscription notifications reported, in order."""
    from sqlalchemy import select

    from tollbooth.db.models import NotificationOutbox

    with world.deps.db.transaction(readonly=True) as session:
        rows = session.scalars(
            select(NotificationOutbox)
            .where(
                NotificationOutbox.billing_account_id == account,
                NotificationOutbox.type.like("subscription.%"),
            )
            .order_by(NotificationOutbox.created_at)
        )
        return [r.payload["state"] for r in rows]


@pytest.mark.soak
@pytest.mark.timeout(120 + ROUNDS * 10)
def test_random_delivery_orders_end_in_the_sandboxs_truth_and_never_revive_a_cancel(faulty):  # type: ignore[no-untyped-def]
    world = faulty
    world.price("pro")
    for round_no in range(ROUNDS):
        rng = random.Random(round_no)
        token, account = world.token()
        world.gate.open.clear()
        failing = rng.random() < 0.3
        stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
        world.pay(stripe_id, card="4000000000000341" if failing else None)
        sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
        if rng.random() < 0.5:
            world.advance(31)
        ending = rng.choice(["keep", "at_period_end", "now"])
        if ending == "at_period_end":
            world.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
            if rng.random() < 0.7:
                world.advance(31)
        elif ending == "now":
            world.stripe.v1.subscriptions.cancel(sub_id)
        world.gate.open.set()
        world.settled()

        truth = world.stripe.v1.subscriptions.retrieve(sub_id)
        mine = ours(world, account)
        assert STATES[mine.state] == f"SUBSCRIPTION_STATE_{truth.status.upper()}", round_no
        assert mine.cancel_at_period_end == truth.cancel_at_period_end, round_no
        item = truth["items"].data[0]
        assert mine.current_period_end_time.seconds == item.current_period_end, round_no
        told = states_told(world, account)
        if "canceled" in told:
            assert set(told[told.index("canceled") :]) == {"canceled"}, (round_no, told)
        if truth.status != "canceled":  # end it, so later rounds renew one subscription only
            world.stripe.v1.subscriptions.cancel(sub_id)
            world.settled()
            assert ours(world, account).state == checkout_pb2.SUBSCRIPTION_STATE_CANCELED
    # The faults really happened: events arrived out of their creation order, some twice.
    from sqlalchemy import select

    from tollbooth.db.models import StripeEvent

    store = world.sandbox.app.state.store
    with world.deps.db.transaction(readonly=True) as session:
        received = list(
            session.scalars(select(StripeEvent.event_id).order_by(StripeEvent.received_at))
        )
    with store.lock:
        created = [store.seq_of(e) for e in received]
    assert any(a > b for a, b in zip(created, created[1:], strict=False)), "never out of order"
    assert len(world.gate.forwarded) > len(set(world.gate.forwarded)), "no duplicate delivery"
