"""Test clocks and renewals: paid, failed (past_due) and cancel-at-period-end."""

from __future__ import annotations

import threading

import pytest
import stripe

from tests.sandbox.support import Receiver, monthly_price, subscribe, wait_for

DAY = 86400


def _advance(client: stripe.StripeClient, clock_id: str, frozen_time: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": frozen_time})


def test_three_renewals_yield_three_paid_invoices(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(
        params={"frozen_time": 1_767_225_600, "name": "three renewals"}  # 2026-01-01
    )
    assert clock.id.startswith("clock_") and clock.status == "ready"
    customer = client.v1.customers.create(
        params={"email": "renew@example.com", "test_clock": clock.id}
    )
    assert customer.test_clock == clock.id
    _, sub = subscribe(client, monthly_price(client, 1500).id, customer=customer.id)
    assert sub.start_date == 1_767_225_600 and sub.test_clock == clock.id
    ends = []
    for _ in range(3):
        end = client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end
        ends.append(end)
        _advance(client, clock.id, end + 3600)
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == ends[-1] + 3600
    # January, February, March: calendar months, anchored on the 1st.
    assert [e - s for s, e in zip([1_767_225_600, *ends[:-1]], ends, strict=True)] == [
        31 * DAY,
        28 * DAY,
        31 * DAY,
    ]
    renewals = [
        i
        for i in client.v1.invoices.list(params={"subscription": sub.id}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert len(renewals) == 3
    assert all(i.status == "paid" and i.amount_paid == 1500 for i in renewals)
    assert sorted(i.lines.data[0].period.start for i in renewals) == ends
    now = client.v1.subscriptions.retrieve(sub.id)
    assert now.status == "active" and now.latest_invoice == renewals[0].id
    renewal_ids = {i.id for i in renewals}

    def paid_renewals() -> set[str]:
        return {
            r.body["data"]["object"]["id"]
            for r in receiver.about(sub.id)
            if r.type == "invoice.paid"
        } & renewal_ids

    wait_for(lambda: paid_renewals() == renewal_ids, what="three invoice.paid events")
    created = {
        r.body["data"]["object"]["id"]
        for r in receiver.about(sub.id)
        if r.type == "invoice.created"
    }
    assert renewal_ids <= created


def test_default_clock_advances_customers_without_a_clock(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    _, sub = subscribe(client, monthly_price(client, 700).id)
    assert sub.test_clock is None
    clock = client.v1.test_helpers.test_clocks.retrieve("clock_default")
    _advance(client, "clock_default", clock.frozen_time + 31 * DAY)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after["items"].data[0].current_period_start == sub["items"].data[0].current_period_end
    invoice = client.v1.invoices.retrieve(str(after.latest_invoice))
    assert invoice.billing_reason == "subscription_cycle" and invoice.status == "paid"
    wait_for(
        lambda: any(
            r.type == "invoice.paid" and r.body["data"]["object"]["id"] == invoice.id
            for r in receiver.about(sub.id)
        ),
        what="invoice.paid for the renewal",
    )


def test_failing_card_renews_into_past_due(client: stripe.StripeClient, receiver: Receiver) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_767_225_600})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    _, sub = subscribe(
        client, monthly_price(client).id, customer=customer.id, card="4000000000000341"
    )
    assert sub.status == "active"  # attached and paid while the customer was present
    _advance(client, clock.id, sub["items"].data[0].current_period_end + 60)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.status == "past_due"
    invoice = client.v1.invoices.retrieve(str(after.latest_invoice))
    assert invoice.status == "open" and invoice.attempt_count == 1 and invoice.amount_paid == 0
    wait_for(lambda: "invoice.payment_failed" in receiver.types_about(sub.id))
    wait_for(
        lambda: any(
            r.type == "customer.subscription.updated"
            and r.body["data"]["object"]["status"] == "past_due"
            for r in receiver.about(sub.id)
        )
    )


def test_cancel_at_period_end_ends_at_period_end(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_767_225_600})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    _, sub = subscribe(client, monthly_price(client).id, customer=customer.id)
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    end = sub["items"].data[0].current_period_end
    _advance(client, clock.id, end - 60)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    _advance(client, clock.id, end + 60)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.status == "canceled" and after.ended_at == end
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 1  # no renewal
    wait_for(lambda: "customer.subscription.deleted" in receiver.types_about(sub.id))


def test_clock_cannot_go_back(client: stripe.StripeClient) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_767_225_600})
    with pytest.raises(stripe.InvalidRequestError) as err:
        _advance(client, clock.id, 1_767_225_600 - 1)
    assert err.value.param == "frozen_time"
    listed = client.v1.test_helpers.test_clocks.list(params={"limit": 100})
    assert {clock.id, "clock_default"} <= {c.id for c in listed.data}
    assert client.v1.test_helpers.test_clocks.delete(clock.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert err.value.http_status == 404


def test_an_advance_past_a_thousand_periods_or_the_year_9999_is_400_and_changes_nothing(
    client: stripe.StripeClient,
) -> None:
    """One advance acts on at most 1000 period ends: sending a clock with a monthly
    subscription to the year 9999 renewed for ever, holding every other request of the
    sandbox. It is refused with nothing done (clock and subscription as they were), as is a
    frozen_time past 9999-12-31 (on create too); a smaller step still renews."""
    start = 1_767_225_600
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    _, sub = subscribe(client, monthly_price(client, 700).id, customer=customer.id)
    end = sub["items"].data[0].current_period_end
    for target in (253_402_300_799, start + 1001 * 31 * DAY):
        with pytest.raises(stripe.InvalidRequestError) as err:
            _advance(client, clock.id, target)
        assert err.value.http_status == 400 and err.value.param == "frozen_time"
        assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == start
        again = client.v1.subscriptions.retrieve(sub.id)
        assert again.status == "active" and again["items"].data[0].current_period_end == end
    for past_9999 in (253_402_300_800, 10**30):
        with pytest.raises(stripe.InvalidRequestError) as err:
            _advance(client, clock.id, past_9999)
        assert err.value.param == "frozen_time"
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.test_helpers.test_clocks.create(params={"frozen_time": past_9999})
        assert err.value.param == "frozen_time"
    _advance(client, clock.id, end + 3600)
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end > end


def test_a_period_that_would_end_after_the_year_9999_is_400_not_500(
    client: stripe.StripeClient,
) -> None:
    """A clock near the end of 9999: a subscription whose first period would end in the year
    10000 cannot be made (400, the session left open), where it was a 500."""
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 253_402_300_000})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": monthly_price(client, 900).id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        }
    )
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.raw_request("post", f"/v1/test_helpers/checkout/sessions/{session.id}/complete")
    assert err.value.http_status == 400
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_other_requests_are_answered_while_a_long_advance_runs(
    client: stripe.StripeClient,
) -> None:
    """An advance over hundreds of periods lets other requests in between its periods (it
    held the sandbox's one lock throughout: ~30 s for 1000 periods, every request waiting):
    meanwhile the clock reads `advancing`, a second advance of it is refused, and the
    advance still ends `ready` at its target with every period renewed."""
    start = 1_767_225_600
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    product = client.v1.products.create(params={"name": "Daily"})
    daily = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 100,
            "currency": "usd",
            "recurring": {"interval": "day"},
        }
    )
    _, sub = subscribe(client, daily.id, customer=customer.id)
    target = start + 300 * DAY + 60
    failures: list[BaseException] = []

    def advance() -> None:
        try:
            _advance(client, clock.id, target)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    runner = threading.Thread(target=advance)
    runner.start()
    seen_advancing = False
    while runner.is_alive() and not seen_advancing:
        now = client.v1.test_helpers.test_clocks.retrieve(clock.id)
        seen_advancing = now.status == "advancing" and runner.is_alive()
    if seen_advancing:
        with pytest.raises(stripe.InvalidRequestError) as err:
            _advance(client, clock.id, target + DAY)
        assert err.value.http_status == 400
    runner.join(timeout=300)
    assert not failures, failures
    assert seen_advancing, "no request was answered while the advance ran"
    done = client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert done.status == "ready" and done.frozen_time == target
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after["items"].data[0].current_period_end == start + 301 * DAY
