"""Further API rules: concurrency under one idempotency key, deletions, filters, expiry."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import stripe

from tests.sandbox.support import Receiver, client_for, monthly_price, subscribe, wait_for
from tollbooth.sandbox.app import SandboxHandle


def test_concurrent_requests_with_one_key_create_one_object(sandbox: SandboxHandle) -> None:
    key = str(uuid.uuid4())
    email = f"{key[:8]}@example.com"

    def create(_: int) -> str:
        client = client_for(sandbox.url)
        return client.v1.customers.create(
            params={"email": email}, options={"idempotency_key": key}
        ).id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(create, range(16)))
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
