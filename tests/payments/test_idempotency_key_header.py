"""Stripe's `Idempotency-Key` header on seed 003's requests, through Envoy: a Stripe-style
client retries a create with the same header and no `request_id` in the body; the header is the
request's `request_id`, so the retry is answered the first intent, never a second charge."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from tests.checkout.support import Shop
from tests.conftest import SERVICE_KEY
from tests.payments import test_rest
from tests.payments.support import SEED_BODY
from tests.payments.test_rest import payer
from tollbooth.db.payment_intents import PaymentIntent

INTENTS = "/api/v1/payment/intents"
pay_shop = test_rest.pay_shop  # the stack behind Envoy, one per module


def intents_of(shop: Shop, account_id: str) -> int:
    with shop.stack.deps.db.transaction(readonly=True) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(PaymentIntent)
                .where(PaymentIntent.billing_account_id == account_id)
            )
        )


def seed_headers(token: str, key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "x-api-key": SERVICE_KEY, "Idempotency-Key": key}


def test_a_create_sent_again_with_its_idempotency_key_is_the_first_intent(pay_shop: Shop):
    token = payer(pay_shop)
    key = uuid.uuid4().hex
    first = pay_shop.stack.request("POST", INTENTS, SEED_BODY, seed_headers(token, key))
    assert first.status == 200, first.body
    again = pay_shop.stack.request("POST", INTENTS, SEED_BODY, seed_headers(token, key))
    assert again.status == 200, again.body
    assert again.json()["payment_intent_id"] == first.json()["payment_intent_id"]
    assert intents_of(pay_shop, first.json()["billing_account_id"]) == 1


def test_the_same_idempotency_key_with_another_amount_is_refused(pay_shop: Shop):
    token = payer(pay_shop)
    key = uuid.uuid4().hex
    first = pay_shop.stack.request("POST", INTENTS, SEED_BODY, seed_headers(token, key))
    assert first.status == 200, first.body
    other = pay_shop.stack.request(
        "POST", INTENTS, {**SEED_BODY, "amount": 5000}, seed_headers(token, key)
    )
    assert (other.status, other.reason) == (400, "IDEMPOTENCY_KEY_REUSED"), other.body
    assert intents_of(pay_shop, first.json()["billing_account_id"]) == 1


def test_an_idempotency_key_other_than_the_bodys_request_id_is_refused(pay_shop: Shop):
    token = payer(pay_shop)
    body = {**SEED_BODY, "request_id": "from-the-body"}
    resp = pay_shop.stack.request("POST", INTENTS, body, seed_headers(token, "from-the-header"))
    assert (resp.status, resp.reason) == (400, "FIELD_INVALID"), resp.body
    same = pay_shop.stack.request("POST", INTENTS, body, seed_headers(token, "from-the-body"))
    assert same.status == 200, same.body


def test_an_idempotency_key_is_held_to_the_rules_of_a_request_id(pay_shop: Shop):
    token = payer(pay_shop)
    long_key = pay_shop.stack.request("POST", INTENTS, SEED_BODY, seed_headers(token, "k" * 201))
    assert (long_key.status, long_key.reason) == (400, "FIELD_INVALID"), long_key.body
    created = pay_shop.stack.request("POST", INTENTS, SEED_BODY, seed_headers(token, "read-me"))
    assert created.status == 200, created.body
    read = pay_shop.stack.request(  # a read takes no key: the header is ignored
        "GET",
        f"{INTENTS}/{created.json()['payment_intent_id']}",
        None,
        seed_headers(token, "whatever"),
    )
    assert read.status == 200, read.body
