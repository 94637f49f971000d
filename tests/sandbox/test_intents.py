"""PaymentIntents and SetupIntents confirmed with Stripe's test payment methods."""

from __future__ import annotations

import pytest
import stripe

from tests.sandbox.support import Receiver, wait_for


def test_payment_intent_confirm_succeeds(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer = client.v1.customers.create(params={"email": "pi@example.com"})
    pi = client.v1.payment_intents.create(
        params={
            "amount": 1999,
            "currency": "usd",
            "customer": customer.id,
            "metadata": {"order": "7"},
        }
    )
    assert pi.id.startswith("pi_") and pi.status == "requires_payment_method"
    assert pi.client_secret is not None and pi.client_secret.startswith(pi.id)
    confirmed = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded" and confirmed.amount_received == 1999
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    wait_for(lambda: "payment_intent.succeeded" in receiver.types_about(pi.id))


def test_payment_intent_decline_is_402_and_recorded(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    with pytest.raises(stripe.CardError) as err:
        client.v1.payment_intents.create(
            params={
                "amount": 500,
                "currency": "usd",
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    assert err.value.http_status == 402 and err.value.code == "card_declined"
    error = err.value.error
    assert error is not None and error.payment_intent is not None
    pi_id = error.payment_intent.id
    pi = client.v1.payment_intents.retrieve(pi_id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None and pi.last_payment_error.code == "card_declined"
    wait_for(lambda: "payment_intent.payment_failed" in receiver.types_about(pi_id))


def test_setup_intent_confirm_attaches(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer = client.v1.customers.create(params={"email": "si@example.com"})
    seti = client.v1.setup_intents.create(params={"customer": customer.id})
    assert seti.id.startswith("seti_") and seti.status == "requires_payment_method"
    confirmed = client.v1.setup_intents.confirm(seti.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    pm = client.v1.payment_methods.retrieve(str(confirmed.payment_method))
    assert pm.customer == customer.id
    assert client.v1.setup_intents.retrieve(seti.id).status == "succeeded"
    wait_for(lambda: "setup_intent.succeeded" in receiver.types_about(seti.id))
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.setup_intents.confirm(seti.id)  # already succeeded
