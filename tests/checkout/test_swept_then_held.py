"""A checkout of a price bought once whose first attempt got no answer (the provider down),
completed at the provider since by `tollbooth reconcile` (its client never had the URL), and
the price then bought by a payment intent (another tab): the client's retry with the same
request_id is refused PRICE_ALREADY_PURCHASED, as a new request is, instead of being handed
that session's URL to pay a second time (refunded later by the fulfilment guard)."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
import sqlalchemy as sa

from billing.v1 import catalog_pb2
from tests.checkout.support import World, wait_for
from tests.helpers import error_reason
from tests.payments.support import confirm, create, purchases, token
from tollbooth import app
from tollbooth.checkout import intents
from tollbooth.db.models import CheckoutSession
from tollbooth.db.types import utcnow

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]
SCOPES = ["payments", "checkout", "billing:read", "credits:read"]


def test_a_swept_checkout_of_a_price_bought_since_is_refused_on_retry(world: World) -> None:
    price = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS).price_id
    bearer, account = token(world, SCOPES)
    world.sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=0, status=500)
    with pytest.raises(grpc.RpcError):
        world.buy(bearer, "lifetime", request_id="swept")
    when = utcnow() - (intents.STALE_AFTER + dt.timedelta(minutes=1))
    with world.deps.db.transaction() as session:
        session.execute(
            sa.update(CheckoutSession)
            .where(CheckoutSession.billing_account_id == account)
            .values(created_at=when, updated_at=when)
        )
    report = app.reconcile(world.settings)
    assert report.failed == [] and [c for c in report.changed if "pending -> open" in c]

    paid = create(world, bearer, amount=0, currency="", catalog_price_id=price)
    confirm(world, paid.stripe_payment_intent_id)
    wait_for(lambda: len(purchases(world, account)) == 1, what="the payment intent's purchase")

    with pytest.raises(grpc.RpcError) as again:
        world.buy(bearer, "lifetime", request_id="swept")
    assert error_reason(again.value) == "PRICE_ALREADY_PURCHASED"
