"""Further API rules: concurrency under one idempotency key, deletions, filters, expiry."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import stripe

from tests.sandbox.support import Receiver, client_for, monthly_price, subscribe, wait_for
from tollbooth.sandbox.app import SandboxHandle


def test_concurrent_requests_with_one_key_create_one_object(sandbox: SandboxHandle) -> None:
    """As on Stripe, a request whose key one still in progress uses is 409
    `idempotency_key_in_use` (nothing saved); the others get the one object."""
    key = str(uuid.uuid4())
    email = f"{key[:8]}@example.com"

    def create(_: int) -> str | None:
        client = client_for(sandbox.url)
        try:
            return client.v1.customers.create(
                params={"email": email}, options={"idempotency_key": key}
            ).id
        except stripe.StripeError as err:
            assert err.http_status == 409, err
            assert err.error is not None and err.error.code == "idempotency_key_in_use"
            return None

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(create, range(16))) - {None}
    assert len(ids) == 1
    listed = client_for(sandbox.url).v1.customers.list(params={"email": email})
    assert [c.id for c in listed.data] == list(ids)


def test_deleting_a_customer_cancels_its_subscriptions(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    done, sub = subscribe(client, monthly_price(client).id)
    client.v1.customers.delete(str(done.customer))
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    wait_for(lambda: "customer.subscription.deleted" in receiver.types_about(sub.id))
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing_portal.sessions.create(
            params={"customer": str(done.customer), "return_url": "https://app.example"}
        )


def test_created_filter(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Created filter"})
    assert product.id in [
        p.id
        for p in client.v1.products.list(
            params={"created": {"gte": product.created}, "limit": 100}
        ).data
    ]
    assert product.id not in [
        p.id
        for p in client.v1.products.list(
            params={"created": {"lt": product.created}, "limit": 100}
        ).data
    ]


def test_unsupported_features_are_refused_not_ignored(client: stripe.StripeClient) -> None:
    price = monthly_price(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": "https://app.example/ok",
                "subscription_data": {"trial_period_days": 7},
            }
        )
    assert err.value.param == "subscription_data[trial_period_days]"


def test_trials_on_a_price_are_refused_not_ignored(client: stripe.StripeClient) -> None:
    """README "Stripe sandbox": trials, discounts and automatic tax are refused wherever the
    pinned API takes them, not only at checkout: a test of a trial must not pass on a
    subscription that never had one."""
    with pytest.raises(stripe.InvalidRequestError) as err:
        monthly_price(client, recurring={"interval": "month", "trial_period_days": 7})
    assert err.value.param == "recurring[trial_period_days]"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"trial_end": "now"}, "trial_end"),
        ({"trial_from_plan": True}, "trial_from_plan"),
        ({"discounts": [{"coupon": "SAVE10"}]}, "discounts"),
        ({"automatic_tax": {"enabled": True}}, "automatic_tax[enabled]"),
    ],
)
def test_trials_discounts_and_tax_on_a_subscription_are_refused_not_ignored(
    client: stripe.StripeClient, params: dict[str, object], param: str
) -> None:
    _, sub = subscribe(client, monthly_price(client).id)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.update(sub.id, params=params)  # type: ignore[arg-type]
    assert err.value.param == param
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_events_list_by_type(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Event filter"})
    events = client.v1.events.list(params={"type": "product.created", "limit": 100})
    assert events.data and all(e.type == "product.created" for e in events.data)
    assert product.id in [e.data.object["id"] for e in events.data]
    wildcard = client.v1.events.list(params={"type": "product.*", "limit": 5})
    assert all(e.type.startswith("product.") for e in wildcard.data)


def test_open_session_expires_when_its_clock_passes_expires_at(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_767_225_600})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "currency": "usd",
            "customer": customer.id,
            "success_url": "https://app.example/ok",
        }
    )
    assert session.expires_at == 1_767_225_600 + 24 * 3600
    client.v1.test_helpers.test_clocks.advance(
        clock.id, params={"frozen_time": session.expires_at + 1}
    )
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"
    wait_for(lambda: "checkout.session.expired" in receiver.types_about(session.id))


def test_concurrent_checkouts_while_delivering(sandbox: SandboxHandle, receiver: Receiver) -> None:
    client = client_for(sandbox.url)
    price = monthly_price(client, 300)

    def buy(i: int) -> str:
        own = client_for(sandbox.url)
        _, sub = subscribe(own, price.id, email=f"concurrent-{i}@example.com")
        return str(sub.id)

    with ThreadPoolExecutor(6) as pool:
        subs = list(pool.map(buy, range(12)))
    assert len(set(subs)) == 12
    assert {
        s.id for s in client.v1.subscriptions.list(params={"price": price.id, "limit": 100}).data
    } == set(subs)
    for sub_id in subs:
        wait_for(lambda s=sub_id: "invoice.paid" in receiver.types_about(s), what=sub_id)
        created = [r for r in receiver.about(sub_id) if r.type == "customer.subscription.created"]
        assert len(created) == 1  # no faults configured: exactly one delivery


def test_index_and_hosted_invoice_pages(
    client: stripe.StripeClient, sandbox: SandboxHandle
) -> None:
    import httpx

    _, sub = subscribe(client, monthly_price(client, 1100, name="Invoice page").id)
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.hosted_invoice_url is not None
    assert "/sandbox/invoices/" in invoice.hosted_invoice_url
    page = httpx.get(invoice.hosted_invoice_url)
    assert page.status_code == 200 and "SANDBOX" in page.text
    assert str(invoice.number) in page.text and "11.00 USD" in page.text
    index = httpx.get(f"{sandbox.url}/", follow_redirects=True)
    assert index.status_code == 200 and "SANDBOX" in index.text
    assert "invoice.paid" in index.text
