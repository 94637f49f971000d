"""Webhook delivery: signatures, retries until 2xx, and each injected fault."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import stripe

from tests.sandbox.conftest import sandbox_config
from tests.sandbox.support import (
    WEBHOOK_SECRET,
    Receiver,
    client_for,
    complete,
    monthly_price,
    wait_for,
)
from tollbooth.sandbox.app import SandboxHandle, start_sandbox
from tollbooth.webhooks.signature import verify

Factory = Callable[[str], tuple[SandboxHandle, Receiver, stripe.StripeClient]]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Factory]:
    started: list[tuple[SandboxHandle, Receiver]] = []

    def factory(faults: str = "") -> tuple[SandboxHandle, Receiver, stripe.StripeClient]:
        receiver = Receiver().start()
        handle = start_sandbox(
            sandbox_config(tmp_path / f"s{len(started)}.db", receiver.url, faults)
        )
        started.append((handle, receiver))
        return handle, receiver, client_for(handle.url)

    yield factory
    for handle, receiver in started:
        handle.stop()
        receiver.stop()


def _event_ids(client: stripe.StripeClient) -> list[str]:
    """Every event the sandbox created, oldest first."""
    return [e.id for e in client.v1.events.list(params={"limit": 100}).auto_paging_iter()][::-1]


def test_events_arrive_signed_and_verifiable(make: Factory) -> None:
    _, receiver, client = make("")
    customer = client.v1.customers.create(params={"email": "signed@example.com"})
    got = wait_for(lambda: receiver.about(customer.id), what="customer.created")[0]
    assert receiver.rejected == 0
    assert got.type == "customer.created" and got.body["id"].startswith("evt_")
    assert got.body["api_version"] == stripe.api_version and got.body["livemode"] is False
    assert got.body["data"]["object"]["email"] == "signed@example.com"
    parts = dict(p.split("=", 1) for p in got.signature.split(","))
    assert set(parts) == {"t", "v1"} and len(parts["v1"]) == 64
    # The service's own strict verifier accepts the raw bytes; another secret does not.
    assert verify(got.raw, got.signature, (WEBHOOK_SECRET,)) == int(parts["t"])
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(got.raw, got.signature, "whsec_other")
    assert client.v1.events.retrieve(got.event_id).type == "customer.created"


def test_receiver_failing_twice_gets_the_event_three_times(make: Factory) -> None:
    handle, receiver, client = make("")
    receiver.script[:] = [500, 500]
    customer = client.v1.customers.create(params={"email": "retry@example.com"})
    copies = wait_for(
        lambda: (c := receiver.about(customer.id)) and len(c) >= 3 and c, what="three deliveries"
    )
    assert {c.event_id for c in copies} == {copies[0].event_id}
    assert receiver.requests == 3
    wait_for(
        lambda: client.v1.events.retrieve(copies[0].event_id).pending_webhooks == 0,
        what="delivery marked done",
    )
    assert len(receiver.about(customer.id)) == 3  # no fourth copy after the 200


def test_sandbox_keeps_retrying_while_the_endpoint_is_down(make: Factory) -> None:
    handle, receiver, client = make("")
    receiver.script[:] = [503] * 6
    customer = client.v1.customers.create(params={"email": "down@example.com"})
    wait_for(lambda: len(receiver.about(customer.id)) >= 7, what="seven attempts")
    # The receiver counts the seventh request before it answers 200; the sandbox marks the
    # delivery done when that answer reaches it.
    event = client.v1.events.list(params={"type": "customer.created"}).data[0]
    wait_for(
        lambda: client.v1.events.retrieve(event.id).pending_webhooks == 0,
        what="delivery marked done",
    )
    assert len(receiver.about(customer.id)) == 7  # six 503s, one 200, no eighth copy


def test_duplicate_fault_sends_every_event_twice(make: Factory) -> None:
    _, receiver, client = make("duplicate=1,seed=1")
    customer = client.v1.customers.create(params={"email": "dup@example.com"})
    client.v1.customers.update(customer.id, params={"name": "Dup"})
    copies = wait_for(lambda: (c := receiver.about(customer.id)) and len(c) >= 4 and c)
    counts = Counter(c.event_id for c in copies)
    assert len(counts) == 2 and set(counts.values()) == {2}


def test_twin_fault_sends_a_second_distinct_event(make: Factory) -> None:
    _, receiver, client = make("twin=1,seed=3")
    customer = client.v1.customers.create(params={"email": "twin@example.com"})
    copies = wait_for(lambda: (c := receiver.about(customer.id)) and len(c) >= 2 and c)
    assert [c.type for c in copies] == ["customer.created", "customer.created"]
    assert copies[0].event_id != copies[1].event_id
    assert copies[0].body["data"] == copies[1].body["data"]
    listed = client.v1.events.list(params={"type": "customer.created"})
    assert {e.id for e in listed.data} == {c.event_id for c in copies}


def test_shuffle_fault_changes_the_order(make: Factory) -> None:
    _, receiver, client = make("shuffle=1,seed=7")
    price = monthly_price(client)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        }
    )
    complete(client, session.id)
    created = _event_ids(client)
    wait_for(lambda: len(receiver.received) >= len(created), what="every event")
    arrived = [r.event_id for r in receiver.received]
    assert sorted(arrived) == sorted(created)  # all there, none twice
    assert arrived != created


def test_delay_fault_waits_before_each_delivery(make: Factory) -> None:
    handle, receiver, client = make("delay_ms=20-40,seed=5")
    customer = client.v1.customers.create(params={"email": "slow@example.com"})
    client.v1.customers.update(customer.id, params={"name": "Slow"})
    wait_for(lambda: len(receiver.about(customer.id)) >= 2)
    delays = handle.deliverer.delays
    assert len(delays) >= 2 and all(0.020 <= d <= 0.040 for d in delays)


def test_no_faults_keeps_creation_order_and_sends_once(make: Factory) -> None:
    _, receiver, client = make("")
    price = monthly_price(client)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        }
    )
    complete(client, session.id)
    created = _event_ids(client)
    wait_for(lambda: len(receiver.received) >= len(created), what="every event")
    assert [r.event_id for r in receiver.received] == created
    assert receiver.rejected == 0
