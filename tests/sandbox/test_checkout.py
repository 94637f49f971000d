"""Checkout Sessions in payment, subscription and setup modes, and the completion helper."""

from __future__ import annotations

import pytest
import stripe

from tests.sandbox.support import Receiver, complete, monthly_price, subscribe, wait_for


def _one_time_price(client: stripe.StripeClient, amount: int = 2500) -> stripe.Price:
    product = client.v1.products.create(params={"name": "Credit pack"})
    return client.v1.prices.create(
        params={"product": product.id, "unit_amount": amount, "currency": "usd"}
    )


def test_payment_session_shape_and_line_items(client: stripe.StripeClient) -> None:
    price = _one_time_price(client)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 3}],
            "success_url": "https://app.example/ok?cs={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example/no",
            "client_reference_id": "acct_42",
            "metadata": {"order": "o-1"},
        }
    )
    assert isinstance(session, stripe.checkout.Session)
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert session.status == "open" and session.payment_status == "unpaid"
    assert session.amount_total == 7500 and session.currency == "usd"
    assert session.url is not None and "/sandbox/checkout/" in session.url
    assert session.client_reference_id == "acct_42" and session.metadata["order"] == "o-1"
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert items.object == "list" and len(items.data) == 1
    assert items.data[0].quantity == 3 and items.data[0].amount_total == 7500
    assert items.data[0].price is not None and items.data[0].price.id == price.id
    again = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert again.line_items is not None and again.line_items.data[0].id == items.data[0].id


def test_a_client_reference_id_over_200_characters_is_refused_as_stripe_refuses_it(
    client: stripe.StripeClient,
) -> None:
    price = _one_time_price(client)
    params = {
        "mode": "payment",
        "line_items": [{"price": price.id, "quantity": 1}],
        "success_url": "https://app.example/ok",
    }
    at_limit = client.v1.checkout.sessions.create(
        params={**params, "client_reference_id": "r" * 200}
    )
    assert at_limit.client_reference_id == "r" * 200
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(params={**params, "client_reference_id": "r" * 201})
    assert err.value.http_status == 400 and err.value.param == "client_reference_id"


def test_payment_completion_pays_and_emits(client: stripe.StripeClient, receiver: Receiver) -> None:
    price = _one_time_price(client, 1000)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
            "customer_creation": "always",
        }
    )
    done = complete(client, session.id)
    assert done.status == "complete" and done.payment_status == "paid"
    assert done.customer is not None and done.url is None
    pi = client.v1.payment_intents.retrieve(str(done.payment_intent))
    assert pi.status == "succeeded" and pi.amount_received == 1000
    completed = wait_for(
        lambda: [r for r in receiver.about(session.id) if r.type == "checkout.session.completed"],
        what="checkout.session.completed",
    )
    assert completed[0].body["data"]["object"]["payment_status"] == "paid"
    wait_for(lambda: "payment_intent.succeeded" in receiver.types_about(pi.id))


def test_subscription_completion_creates_active_subscription(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    price = monthly_price(client, 1500)
    done, sub = subscribe(client, price.id, email="sub@example.com")
    assert sub.id.startswith("sub_") and sub.status == "active"
    assert sub.customer == done.customer and sub.cancel_at_period_end is False
    item = sub["items"].data[0]
    assert item.price.id == price.id
    # Pinned API version: the billing period lives on the item.
    assert item.current_period_end > item.current_period_start
    assert "current_period_end" not in sub.to_dict()
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.status == "paid" and invoice.amount_paid == 1500
    assert invoice.billing_reason == "subscription_create"
    assert invoice.parent is not None and invoice.parent.subscription_details is not None
    assert invoice.parent.subscription_details.subscription == sub.id
    customer = client.v1.customers.retrieve(str(done.customer))
    assert customer.email == "sub@example.com"
    types = wait_for(
        lambda: (t := receiver.types_about(sub.id)) and "customer.subscription.created" in t and t,
        what="subscription events",
    )
    assert "customer.subscription.created" in types
    wait_for(lambda: "checkout.session.completed" in receiver.types_about(done.id))
    wait_for(lambda: "invoice.paid" in receiver.types_about(sub.id))


def test_setup_mode_saves_a_card(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer = client.v1.customers.create(params={"email": "setup@example.com"})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "currency": "usd",
            "customer": customer.id,
            "success_url": "https://app.example/ok",
        }
    )
    assert session.payment_status == "no_payment_required"
    done = complete(client, session.id)
    seti = client.v1.setup_intents.retrieve(str(done.setup_intent))
    assert seti.status == "succeeded" and seti.customer == customer.id
    pm = client.v1.payment_methods.retrieve(str(seti.payment_method))
    assert pm.customer == customer.id and pm.card is not None and pm.card.last4 == "4242"
    wait_for(lambda: "setup_intent.succeeded" in receiver.types_about(seti.id))


@pytest.mark.parametrize("currency", ["xyz", "usn", "us", "usdollar", "xau"])
def test_setup_mode_refuses_a_currency_stripe_does_not_hold(
    client: stripe.StripeClient, currency: str
) -> None:
    """As a price's or a payment intent's currency is checked (`wire.check_currency`): no
    ISO code, a fund code (USN), a code with no minor units (XAU, gold)."""
    customer = client.v1.customers.create(params={"email": "setup-currency@example.com"})
    before = client.v1.checkout.sessions.list(params={"customer": customer.id}).data
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={
                "mode": "setup",
                "currency": currency,
                "customer": customer.id,
                "success_url": "https://app.example/ok",
            }
        )
    assert (err.value.http_status, err.value.param) == (400, "currency")
    assert client.v1.checkout.sessions.list(params={"customer": customer.id}).data == before


def test_setup_mode_keeps_the_currency_in_lower_case(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "setup-upper@example.com"})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "currency": "EUR",
            "customer": customer.id,
            "success_url": "https://app.example/ok",
        }
    )
    assert session.currency == "eur"


def test_declining_card_leaves_session_open(client: stripe.StripeClient) -> None:
    price = monthly_price(client, 900)
    email = "declined-sub@example.com"
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
            "customer_email": email,
        }
    )
    with pytest.raises(stripe.CardError) as err:
        complete(client, session.id, card="4000 0000 0000 0002")
    assert err.value.http_status == 402 and err.value.code == "card_declined"
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.status == "open" and again.subscription is None
    assert client.v1.customers.list(params={"email": email}).data == []  # nothing created
    assert complete(client, session.id).status == "complete"  # a good card still works
    assert len(client.v1.customers.list(params={"email": email}).data) == 1


def test_declined_payment_records_the_failed_payment_intent(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    price = _one_time_price(client, 600)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        }
    )
    with pytest.raises(stripe.CardError) as err:
        complete(client, session.id, card="4000000000009995")
    assert err.value.error is not None and err.value.error.decline_code == "insufficient_funds"
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.status == "open" and again.payment_status == "unpaid"
    pi = client.v1.payment_intents.retrieve(str(again.payment_intent))
    assert pi.status == "requires_payment_method" and pi.last_payment_error is not None
    wait_for(lambda: "payment_intent.payment_failed" in receiver.types_about(pi.id))
    paid = complete(client, session.id)
    assert paid.payment_intent == pi.id  # the retry reuses the session's PaymentIntent
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"


def test_expire(client: stripe.StripeClient, receiver: Receiver) -> None:
    price = _one_time_price(client)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        }
    )
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
    with pytest.raises(stripe.InvalidRequestError):
        complete(client, session.id)
    wait_for(lambda: "checkout.session.expired" in receiver.types_about(session.id))


def test_mode_and_price_must_agree(client: stripe.StripeClient) -> None:
    recurring = monthly_price(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [{"price": recurring.id, "quantity": 1}],
                "success_url": "https://app.example/ok",
            }
        )
    assert err.value.param == "line_items"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [{"price": recurring.id}],
                "success_url": "https://app.example/ok",
            }
        )
    assert err.value.code == "parameter_missing" and err.value.param == "line_items[0][quantity]"


def test_list_sessions_by_customer(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "list@example.com"})
    price = _one_time_price(client)
    made = [
        client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "customer": customer.id,
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": "https://app.example/ok",
            }
        ).id
        for _ in range(2)
    ]
    listed = client.v1.checkout.sessions.list(params={"customer": customer.id})
    assert [s.id for s in listed.data] == made[::-1]


@pytest.mark.parametrize("mode", ["subscription", "payment", "setup"])
def test_a_session_whose_customer_was_deleted_is_refused_as_a_400_not_a_500(
    client: stripe.StripeClient, mode: str
) -> None:
    """DeleteCustomer (seed 003) deletes the Stripe customer while a checkout of it may still
    be open. Paying it crashed the sandbox (HTTP 500: the deleted customer's stub has no
    `invoice_settings`); as Stripe refuses a deleted customer, it is a 400 `resource_missing`
    naming the customer, and nothing changes: no subscription, no payment, the session open."""
    customer = client.v1.customers.create(params={"email": f"gone-{mode}@example.com"})
    params: dict = {
        "mode": mode,
        "customer": customer.id,
        "success_url": "https://app.example/ok",
    }
    if mode == "subscription":
        params["line_items"] = [{"price": monthly_price(client, 700).id, "quantity": 1}]
    elif mode == "payment":
        params["line_items"] = [{"price": _one_time_price(client, 700).id, "quantity": 1}]
    else:
        params["currency"] = "usd"
    session = client.v1.checkout.sessions.create(params=params)
    client.v1.customers.delete(customer.id)
    with pytest.raises(stripe.InvalidRequestError) as err:
        complete(client, session.id)
    assert err.value.http_status == 400
    assert err.value.code == "resource_missing" and err.value.param == "customer"
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.status == "open" and again.subscription is None
    assert again.payment_intent is None and again.setup_intent is None
    assert client.v1.subscriptions.list(params={"customer": customer.id}).data == []
