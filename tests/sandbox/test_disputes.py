"""Disputes in the sandbox: opened on a succeeded charge by the test helper, read and closed
with the official library (Stripe's close accepts the dispute: lost), settled won by the
helper, each change delivered signed as Stripe's `charge.dispute.*` event."""

from __future__ import annotations

import json

import pytest
import stripe

from tests.sandbox.support import Receiver, wait_for


def _paid_charge(client: stripe.StripeClient) -> str:
    customer = client.v1.customers.create(params={"email": "dispute@example.com"})
    pi = client.v1.payment_intents.create(
        params={"amount": 2500, "currency": "usd", "customer": customer.id}
    )
    paid = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    return str(paid.latest_charge)


def _open(client: stripe.StripeClient, charge: str, **params: str) -> dict:  # type: ignore[type-arg]
    response = client.raw_request("post", f"/v1/test_helpers/charges/{charge}/dispute", **params)
    return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]


def test_a_dispute_closed_through_the_library_is_lost_and_both_events_arrive(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    charge = _paid_charge(client)
    opened = _open(client, charge, reason="fraudulent")
    assert (opened["charge"], opened["status"], opened["reason"]) == (
        charge,
        "needs_response",
        "fraudulent",
    )
    assert opened["amount"] == 2500 and opened["currency"] == "usd"
    assert client.v1.charges.retrieve(charge).disputed is True
    got = client.v1.disputes.retrieve(opened["id"])
    assert (got.id, got.status, got.charge) == (opened["id"], "needs_response", charge)
    closed = client.v1.disputes.close(opened["id"])
    assert closed.status == "lost"
    wait_for(
        lambda: (
            receiver.types_about(opened["id"])
            == ["charge.dispute.created", "charge.dispute.closed"]
        )
    )
    body = receiver.about(opened["id"])[-1].body
    assert body["data"]["object"]["object"] == "dispute"
    assert body["data"]["object"]["status"] == "lost"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.disputes.close(opened["id"])  # closed for good


def test_the_helper_settles_a_dispute_won(client: stripe.StripeClient) -> None:
    charge = _paid_charge(client)
    opened = _open(client, charge)
    response = client.raw_request(
        "post", f"/v1/test_helpers/disputes/{opened['id']}/close", status="won"
    )
    assert json.loads(response.body)["status"] == "won"  # type: ignore[attr-defined]
    assert client.v1.disputes.retrieve(opened["id"]).status == "won"


def test_a_charge_is_disputed_once_and_bad_input_is_a_400(client: stripe.StripeClient) -> None:
    charge = _paid_charge(client)
    opened = _open(client, charge)
    with pytest.raises(stripe.InvalidRequestError):
        _open(client, charge)
    with pytest.raises(stripe.InvalidRequestError):
        _open(client, "ch_doesnotexist")
    with pytest.raises(stripe.InvalidRequestError):
        client.raw_request(
            "post", f"/v1/test_helpers/disputes/{opened['id']}/close", status="maybe"
        )
    assert client.v1.disputes.retrieve(opened["id"]).status == "needs_response"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"charge": charge})
    assert err.value.code == "charge_disputed"
