"""Billing portal configurations and sessions; subscription updates and cancellation."""

from __future__ import annotations

import pytest
import stripe

from tests.sandbox.support import Receiver, monthly_price, subscribe, wait_for


def test_portal_configuration_and_session(client: stripe.StripeClient) -> None:
    basic = monthly_price(client, 1000, name="Basic")
    pro = client.v1.prices.create(
        params={
            "product": str(basic.product),
            "unit_amount": 2000,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    config = client.v1.billing_portal.configurations.create(
        params={
            "business_profile": {"headline": "Tollbooth"},
            "features": {
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
                "subscription_cancel": {"enabled": True, "mode": "immediately"},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": str(basic.product), "prices": [basic.id, pro.id]}],
                },
            },
        }
    )
    assert config.id.startswith("bpc_") and config.object == "billing_portal.configuration"
    assert config.features.subscription_cancel.mode == "immediately"
    assert config.features.subscription_update.products[0].prices == [basic.id, pro.id]
    fetched = client.v1.billing_portal.configurations.retrieve(config.id)
    assert fetched.business_profile.headline == "Tollbooth"
    updated = client.v1.billing_portal.configurations.update(
        config.id, params={"features": {"invoice_history": {"enabled": False}}}
    )
    assert updated.features.invoice_history.enabled is False
    listed = client.v1.billing_portal.configurations.list(params={"limit": 100})
    assert config.id in [c.id for c in listed.data]

    customer = client.v1.customers.create(params={"email": "portal@example.com"})
    session = client.v1.billing_portal.sessions.create(
        params={
            "customer": customer.id,
            "configuration": config.id,
            "return_url": "https://app.example/account",
        }
    )
    assert session.id.startswith("bps_") and session.object == "billing_portal.session"
    assert session.configuration == config.id and session.return_url.endswith("/account")
    assert "/sandbox/portal/" in session.url
    default = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example/account"}
    )
    assert default.configuration != config.id  # the default configuration
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing_portal.sessions.create(
            params={"customer": "cus_missing", "return_url": "https://x.example"}
        )
    assert err.value.code == "resource_missing" and err.value.param == "customer"


def test_cancel_at_period_end_then_undo(client: stripe.StripeClient, receiver: Receiver) -> None:
    _, sub = subscribe(client, monthly_price(client).id)
    period_end = sub["items"].data[0].current_period_end
    updated = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert updated.cancel_at_period_end is True and updated.cancel_at == period_end
    assert updated.status == "active"
    event = wait_for(
        lambda: [
            r
            for r in receiver.about(sub.id)
            if r.type == "customer.subscription.updated"
            and r.body["data"]["object"]["cancel_at_period_end"]
        ],
        what="cancel_at_period_end update event",
    )[0]
    assert event.body["data"]["previous_attributes"]["cancel_at_period_end"] is False
    undone = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert undone.cancel_at_period_end is False and undone.cancel_at is None


def test_price_change_via_items(client: stripe.StripeClient) -> None:
    basic = monthly_price(client, 1000)
    pro = monthly_price(client, 3000)
    _, sub = subscribe(client, basic.id)
    item = sub["items"].data[0]
    changed = client.v1.subscriptions.update(
        sub.id,
        params={"items": [{"id": item.id, "price": pro.id}], "proration_behavior": "none"},
    )
    assert changed["items"].data[0].id == item.id
    assert changed["items"].data[0].price.id == pro.id
    listed = client.v1.subscriptions.list(params={"price": pro.id})
    assert [s.id for s in listed.data] == [sub.id]


def test_cancel_now(client: stripe.StripeClient, receiver: Receiver) -> None:
    done, sub = subscribe(client, monthly_price(client).id)
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.ended_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(sub.id)
    customer = str(done.customer)
    assert client.v1.subscriptions.list(params={"customer": customer}).data == []
    everything = client.v1.subscriptions.list(params={"customer": customer, "status": "all"})
    assert [s.id for s in everything.data] == [sub.id]
    wait_for(lambda: "customer.subscription.deleted" in receiver.types_about(sub.id))


def test_invoices_list_and_lines(client: stripe.StripeClient) -> None:
    done, sub = subscribe(client, monthly_price(client, 4200).id)
    invoices = client.v1.invoices.list(params={"customer": str(done.customer)})
    assert len(invoices.data) == 1 and invoices.data[0].id == sub.latest_invoice
    invoice = invoices.data[0]
    assert invoice.id.startswith("in_") and invoice.number is not None
    assert invoice.lines.data[0].amount == 4200
    assert invoice.lines.data[0].pricing is not None
    assert invoice.lines.data[0].pricing.price_details.price == sub["items"].data[0].price.id
    by_sub = client.v1.invoices.list(params={"subscription": sub.id})
    assert [i.id for i in by_sub.data] == [invoice.id]
    lines = client.v1.invoices.line_items.list(invoice.id)
    assert [ln.id for ln in lines.data] == [invoice.lines.data[0].id]
