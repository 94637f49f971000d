"""Stripe's `cancel_at` on `POST /v1/subscriptions/{id}`: a cancellation scheduled for any
instant (a Unix timestamp; `""` clears it), through the official library. The test clock
passing it deletes the subscription at that instant, as the period's end does for
`cancel_at_period_end`."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.sandbox.support import Receiver, monthly_price, subscribe, wait_for

DAY = 86400
START = 1_767_225_600  # 2026-01-01


def _clocked(client: stripe.StripeClient) -> tuple[str, stripe.Subscription]:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": START})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    _, sub = subscribe(client, monthly_price(client).id, customer=customer.id)
    return clock.id, sub


def _advance(client: stripe.StripeClient, clock_id: str, frozen_time: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": frozen_time})


def _events(receiver: Receiver, sub_id: str, kind: str) -> list[dict[str, Any]]:
    return [r.body["data"] for r in receiver.about(sub_id) if r.type == kind]


def _period_end(sub: stripe.Subscription) -> int:
    return int(sub["items"].data[0].current_period_end)


def test_a_cancel_at_mid_period_deletes_the_subscription_at_that_instant(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock, sub = _clocked(client)
    at = START + 10 * DAY
    assert at < _period_end(sub)
    updated = client.v1.subscriptions.update(sub.id, params={"cancel_at": at})
    assert (updated.cancel_at, updated.cancel_at_period_end) == (at, False)
    assert updated.canceled_at == START and updated.status == "active"
    assert updated.cancellation_details is not None
    assert updated.cancellation_details.reason == "cancellation_requested"
    sent = wait_for(
        lambda: [
            e
            for e in _events(receiver, sub.id, "customer.subscription.updated")
            if e["object"]["cancel_at"] == at
        ],
        what="the update event carrying cancel_at",
    )
    assert sent[0]["previous_attributes"]["cancel_at"] is None

    _advance(client, clock, at - 60)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    _advance(client, clock, at + 60)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert (after.status, after.ended_at, after.cancel_at) == ("canceled", at, at)
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 1  # no renewal
    deleted = wait_for(
        lambda: _events(receiver, sub.id, "customer.subscription.deleted"),
        what="customer.subscription.deleted",
    )
    assert deleted[0]["object"]["ended_at"] == at


def test_a_cancel_at_after_the_period_end_renews_first_then_deletes_at_it(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock, sub = _clocked(client)
    end = _period_end(sub)
    at = end + 5 * DAY
    client.v1.subscriptions.update(sub.id, params={"cancel_at": at})
    _advance(client, clock, end + 60)
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert (renewed.status, renewed.cancel_at) == ("active", at)
    assert _period_end(renewed) > at
    invoices = client.v1.invoices.list(params={"subscription": sub.id}).data
    assert [i.billing_reason for i in invoices].count("subscription_cycle") == 1
    _advance(client, clock, at + 60)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert (after.status, after.ended_at) == ("canceled", at)
    wait_for(lambda: _events(receiver, sub.id, "customer.subscription.deleted"))


def test_an_empty_cancel_at_clears_the_scheduled_cancellation(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock, sub = _clocked(client)
    at = START + 10 * DAY
    client.v1.subscriptions.update(sub.id, params={"cancel_at": at})
    cleared = client.v1.subscriptions.update(sub.id, params={"cancel_at": ""})
    assert (cleared.cancel_at, cleared.canceled_at, cleared.cancel_at_period_end) == (
        None,
        None,
        False,
    )
    assert cleared.cancellation_details is not None
    assert cleared.cancellation_details.reason is None
    wait_for(
        lambda: any(
            e["object"]["cancel_at"] is None and e["previous_attributes"].get("cancel_at") == at
            for e in _events(receiver, sub.id, "customer.subscription.updated")
        ),
        what="the update event clearing cancel_at",
    )
    # A period-end cancellation is a cancel_at too: "" clears it as well.
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    again = client.v1.subscriptions.update(sub.id, params={"cancel_at": ""})
    assert (again.cancel_at, again.cancel_at_period_end) == (None, False)
    _advance(client, clock, _period_end(sub) + 60)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


@pytest.mark.parametrize("at_period_end", [True, False])
def test_cancel_at_with_cancel_at_period_end_is_refused(
    client: stripe.StripeClient, at_period_end: bool
) -> None:
    _, sub = _clocked(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.update(
            sub.id,
            params={"cancel_at": START + 10 * DAY, "cancel_at_period_end": at_period_end},
        )
    assert err.value.http_status == 400
    assert err.value.param == "cancel_at_period_end"
    same = client.v1.subscriptions.retrieve(sub.id)
    assert (same.cancel_at, same.cancel_at_period_end, same.canceled_at) == (None, False, None)
    listed = client.v1.events.list(params={"type": "customer.subscription.updated", "limit": 100})
    about = [e for e in listed.data if e.data.object["id"] == sub.id]
    assert about and not [e for e in about if "cancel_at" in (e.data.previous_attributes or {})]


@pytest.mark.parametrize("offset", [-DAY, -1, 0])
def test_a_cancel_at_not_in_the_future_is_refused(client: stripe.StripeClient, offset: int) -> None:
    """In the past by the subscription's clock (its test clock here), or at that very instant."""
    clock, sub = _clocked(client)
    _advance(client, clock, START + 3 * DAY)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.update(
            sub.id, params={"cancel_at": START + 3 * DAY + offset, "metadata": {"a": "b"}}
        )
    assert (err.value.http_status, err.value.param) == (400, "cancel_at")
    same = client.v1.subscriptions.retrieve(sub.id)
    assert (same.cancel_at, same.status, same.metadata.to_dict()) == (None, "active", {})


@pytest.mark.parametrize("value", ["tomorrow", "12.5", "max_billed_until", "-5", "\u0662" * 10])
def test_a_cancel_at_that_is_no_timestamp_is_refused(
    client: stripe.StripeClient, value: str
) -> None:
    _, sub = _clocked(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.update(sub.id, params={"cancel_at": value})
    assert (err.value.http_status, err.value.param) == (400, "cancel_at")
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at is None


@pytest.mark.parametrize("value", ["min_period_end", "max_period_end"])
def test_cancel_at_period_end_names_resolve_to_the_period_end_at_once(
    client: stripe.StripeClient, value: str
) -> None:
    _, sub = _clocked(client)
    updated = client.v1.subscriptions.update(sub.id, params={"cancel_at": value})
    assert (updated.cancel_at, updated.cancel_at_period_end) == (_period_end(sub), False)
