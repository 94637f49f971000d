"""The group guard (one live plan per group) meeting a checkout whose completion is applied
only after its subscription renewed: the subscription it cancels is refunded for everything
it charged, its checkout's first invoice and the renewal, not only its latest invoice."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.checkout.support import World, signed_send, start_world
from tests.webhooks.guards import completed, second_open_session


@pytest.fixture
def quiet(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()


def refunded_in_full(world: World, invoice_id: str) -> bool:
    invoice = world.stripe.v1.invoices.retrieve(invoice_id)
    intent = invoice.payments.data[0].payment.payment_intent
    charge = world.stripe.v1.payment_intents.retrieve(str(intent)).latest_charge
    raw = json.loads(world.stripe.raw_request("get", f"/v1/charges/{charge}").body)  # type: ignore[attr-defined]
    return bool(raw["refunded"] is True and raw["amount_refunded"] == raw["amount"])


def test_a_late_yielding_checkout_is_refunded_its_first_invoice_and_its_renewal(quiet: World):
    quiet.price("pro")
    token, _ = quiet.token()
    first = quiet.buy(token, "pro").session.stripe_checkout_session_id
    later = second_open_session(quiet, first)
    quiet.pay(first)
    assert signed_send(quiet, completed(quiet, first)) == 200
    quiet.pay(later)  # paid after the purchase; its completion is held back
    session = quiet.stripe.v1.checkout.sessions.retrieve(later)
    sub_id, first_invoice = str(session.subscription), str(session.invoice)
    quiet.advance(31)  # both renew, paid
    renewal = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    assert renewal != first_invoice
    assert signed_send(quiet, completed(quiet, later)) == 200
    assert quiet.stripe.v1.subscriptions.retrieve(sub_id).status == "canceled"
    assert refunded_in_full(quiet, first_invoice)
    assert refunded_in_full(quiet, renewal)
