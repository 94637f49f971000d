"""Refunds in the sandbox take Stripe's reasons only (`duplicate`, `fraudulent`,
`requested_by_customer`) or none, as Stripe does: a refund the service sends with another
reason would be refused by Stripe, so the sandbox refuses it too."""

from __future__ import annotations

import pytest
import stripe

from tests.sandbox.test_disputes import _paid_charge


def test_a_refund_takes_stripes_reasons_or_none(client: stripe.StripeClient) -> None:
    charge = _paid_charge(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"charge": charge, "reason": "credits_not_storable"})
    assert err.value.param == "reason"
    assert client.v1.charges.retrieve(charge).amount_refunded == 0  # nothing refunded
    first = client.v1.refunds.create(params={"charge": charge, "amount": 100})
    assert first.reason is None
    second = client.v1.refunds.create(
        params={"charge": charge, "amount": 100, "reason": "requested_by_customer"}
    )
    assert second.reason == "requested_by_customer"
    assert client.v1.refunds.retrieve(first.id).reason is None
