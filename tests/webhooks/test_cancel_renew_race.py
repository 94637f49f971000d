"""PostgreSQL, real threads: a subscription's renewal (invoice.paid) and its cancellation
(customer.subscription.deleted), each with a twin, delivered at once. Whatever order the locks
give: every delivery is acknowledged, the renewal grants once, and the subscription ends
canceled (a late renewal never brings it back)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from billing.v1 import checkout_pb2
from tests.checkout.support import World, events_of, signed_send, start_world
from tests.webhooks.test_delivery_orders import ours
from tests.webhooks.test_refund_lock_order import subscribed

pytestmark = pytest.mark.postgres


@pytest.fixture
def world(pg_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


@pytest.mark.parametrize("attempt", range(3))
def test_a_renewal_and_a_cancellation_delivered_at_once_grant_once_and_end_canceled(
    world: World, attempt: int
) -> None:
    account, sub_id = subscribed(world)
    world.advance(31)  # the renewal, paid
    renewal = str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    world.stripe.v1.subscriptions.cancel(sub_id)
    paid = events_of(world, "invoice.paid", renewal)[-1]
    deleted = events_of(world, "customer.subscription.deleted", sub_id)[-1]
    bodies = [
        json.dumps(evt).encode()
        for evt in (
            paid,
            deleted,
            {**paid, "id": paid["id"] + "_twin"},
            {**deleted, "id": deleted["id"] + "_twin"},
        )
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda body: signed_send(world, body), bodies))
    assert answers == [200, 200, 200, 200]
    assert world.balance(account, "api_calls") == "200"  # the purchase's 100, one renewal's 100
    assert ours(world, account).state == checkout_pb2.SUBSCRIPTION_STATE_CANCELED
