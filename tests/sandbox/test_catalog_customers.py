"""Customers, products and prices through the official stripe library."""

from __future__ import annotations

import uuid

import pytest
import stripe

from tests.sandbox.support import Receiver, monthly_price, wait_for


def test_customer_create_retrieve_update_delete(client: stripe.StripeClient) -> None:
    created = client.v1.customers.create(
        params={"email": "ada@example.com", "name": "Ada", "metadata": {"account": "acct_1"}}
    )
    assert isinstance(created, stripe.Customer)
    assert created.id.startswith("cus_") and created.object == "customer"
    assert created.livemode is False and created.test_clock is None
    fetched = client.v1.customers.retrieve(created.id)
    assert fetched.email == "ada@example.com" and fetched.metadata["account"] == "acct_1"
    updated = client.v1.customers.update(
        created.id, params={"name": "Ada L.", "metadata": {"plan": "pro", "account": ""}}
    )
    assert updated.name == "Ada L."
    assert updated.metadata.to_dict() == {"plan": "pro"}  # "" unsets a key, as in Stripe
    deleted = client.v1.customers.delete(created.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(created.id).deleted is True
    # As at Stripe: a deleted customer is shown, never updated (404, not a sandbox 500).
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.update(created.id, params={"name": "Ada"})
    assert refused.value.http_status == 404 and refused.value.code == "resource_missing"


def test_customer_list_filters_by_email_and_paginates(client: stripe.StripeClient) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    ids = [client.v1.customers.create(params={"email": email}).id for _ in range(3)]
    client.v1.customers.create(params={"email": "someone-else@example.com"})
    page = client.v1.customers.list(params={"email": email, "limit": 2})
    assert page.object == "list" and page.url == "/v1/customers"
    assert page.has_more is True and [c.id for c in page.data] == ids[::-1][:2]
    rest = client.v1.customers.list(
        params={"email": email, "limit": 2, "starting_after": page.data[-1].id}
    )
    assert [c.id for c in rest.data] == [ids[0]] and rest.has_more is False
    everything = [c.id for c in page.auto_paging_iter()]
    assert everything == ids[::-1]


def test_products_and_prices(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(
        params={"name": "Credits pack", "metadata": {"grants": "credits:100"}}
    )
    assert product.id.startswith("prod_") and product.active is True
    key = f"pack-{uuid.uuid4().hex[:6]}"
    price = client.v1.prices.create(
        params={"product": product.id, "unit_amount": 900, "currency": "EUR", "lookup_key": key}
    )
    assert price.id.startswith("price_") and price.type == "one_time"
    assert price.currency == "eur" and price.unit_amount == 900 and price.recurring is None
    assert client.v1.prices.retrieve(price.id).lookup_key == key
    renamed = client.v1.products.update(product.id, params={"name": "Credits pack (100)"})
    assert renamed.name == "Credits pack (100)"
    archived = client.v1.prices.update(price.id, params={"active": False, "metadata": {"a": "b"}})
    assert archived.active is False and archived.metadata["a"] == "b"
    listed = client.v1.prices.list(params={"lookup_keys": [key]})
    assert [p.id for p in listed.data] == [price.id]
    assert client.v1.prices.list(params={"lookup_keys": [key], "active": True}).data == []
    assert price.id in [p.id for p in client.v1.prices.list(params={"product": product.id}).data]
    assert product.id in [p.id for p in client.v1.products.list(params={"limit": 100}).data]


def test_recurring_price_and_lookup_key_transfer(client: stripe.StripeClient) -> None:
    key = f"pro-{uuid.uuid4().hex[:6]}"
    first = monthly_price(client, 1000, lookup_key=key)
    assert first.recurring.interval == "month" and first.recurring.interval_count == 1
    with pytest.raises(stripe.InvalidRequestError) as err:
        monthly_price(client, 1200, lookup_key=key)
    assert err.value.http_status == 400 and err.value.param == "lookup_key"
    second = monthly_price(client, 1200, lookup_key=key, transfer_lookup_key=True)
    assert [p.id for p in client.v1.prices.list(params={"lookup_keys": [key]}).data] == [second.id]
    assert client.v1.prices.retrieve(first.id).lookup_key is None


def test_changes_emit_signed_events(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer = client.v1.customers.create(params={"email": "events@example.com"})
    client.v1.customers.update(customer.id, params={"name": "Evented"})
    wait_for(lambda: len(receiver.about(customer.id)) >= 2, what="customer events")
    created, updated = receiver.about(customer.id)[:2]
    assert (created.type, updated.type) == ("customer.created", "customer.updated")
    assert updated.body["data"]["previous_attributes"] == {"name": None}
    assert updated.body["data"]["object"]["name"] == "Evented"
    event = client.v1.events.retrieve(updated.event_id)
    assert event.type == "customer.updated" and event.api_version == stripe.api_version
    assert event.livemode is False and event.data.object["id"] == customer.id
