"""Shortcuts for payment-intent tests over the checkout world (server, sidecar, sandbox)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import grpc
from sqlalchemy import select, update

from billing.v1 import catalog_pb2, payment_pb2, payment_pb2_grpc, token_pb2, token_pb2_grpc
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, bearer_md
from tollbooth.auth.caller import SERVICE
from tollbooth.db.models import Purchase, StripeEvent
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.db.types import utcnow
from tollbooth.payments import intents, service
from tollbooth.rpc.servicer import idempotency_scope

SCOPES = ["payments", "billing:read", "credits:read"]
PACK = [catalog_pb2.CreditGrantSpec(credit_type="pack_calls", amount="250", on_purchase=True)]
# Seed 003's "Create Payment Intent" body, as written.
SEED_BODY = {
    "amount": 2999,
    "currency": "usd",
    "description": "Purchase from YourApp",
    "receipt_email": "customer@example.com",
}


def stub(world: World) -> payment_pb2_grpc.PaymentServiceStub:
    return payment_pb2_grpc.PaymentServiceStub(world.channel)


def token(world: World, scopes: list[str] | None = None) -> tuple[str, str]:
    reply = token_pb2_grpc.TokenServiceStub(world.channel).IssueToken(
        token_pb2.IssueTokenRequest(
            principal_id=f"payer-{uuid.uuid4().hex[:8]}",
            user_id="u1",
            scopes=SCOPES if scopes is None else scopes,
            email="payer@example.com",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    return reply.access_token, reply.billing_account_id


def create(world: World, bearer: str, **fields: Any) -> payment_pb2.PaymentIntent:
    body = {**SEED_BODY, **fields}
    return stub(world).CreatePaymentIntent(
        payment_pb2.CreatePaymentIntentRequest(**body), metadata=bearer_md(bearer), timeout=30
    )


def get(world: World, bearer: str, ident: str) -> payment_pb2.PaymentIntent:
    return stub(world).GetPaymentIntent(
        payment_pb2.GetPaymentIntentRequest(payment_intent_id=ident),
        metadata=bearer_md(bearer),
        timeout=10,
    )


def confirm(world: World, stripe_id: str, payment_method: str = "pm_card_visa") -> dict[str, Any]:
    """Stripe's test helper: confirm with a test payment method (the card element's job)."""
    response = world.stripe.raw_request(
        "post", f"/v1/payment_intents/{stripe_id}/confirm", payment_method=payment_method
    )
    return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]


def one_time_pack(world: World, lookup_key: str, amount: int = 1500) -> str:
    return world.price(lookup_key, amount=amount, recurring=False, grants=PACK).price_id


def purchases(world: World, account: str) -> list[Purchase]:
    with world.deps.db.transaction(readonly=True) as session:
        return list(session.scalars(select(Purchase).where(Purchase.billing_account_id == account)))


def inbox_status(world: World, event_id: str) -> tuple[str, str | None]:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event_id)
        assert row is not None, event_id
        return row.status, row.last_error


def rpc_error(call: Any) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as err:
        return err
    raise AssertionError("the call succeeded")


def create_as_service(world: World, account: str, request_id: str) -> payment_pb2.PaymentIntent:
    """Seed 003's body for `account`, sent by a backend with its service key."""
    return stub(world).CreatePaymentIntent(
        payment_pb2.CreatePaymentIntentRequest(account=account, request_id=request_id, **SEED_BODY),
        metadata=SERVICE_MD,
        timeout=30,
    )


def crashed_after_commit(world: World, account: str, request_id: str) -> str:
    """What `create_as_service` leaves when its process dies (kill -9) between the intent and
    the provider call: the pending row committed, the provider never called. Our id."""
    request = service.PaymentRequest(
        account_ref=account,
        amount=SEED_BODY["amount"],
        currency=SEED_BODY["currency"],
        description=SEED_BODY["description"],
        receipt_email=SEED_BODY["receipt_email"],
        catalog_price_id="",
        request_scope=idempotency_scope(SERVICE, payment_pb2.CreatePaymentIntentRequest()),
        request_id=request_id,
    )
    with world.deps.db.transaction() as session:
        return intents._record(session, SERVICE, request).id


def backdate(world: World, intent_id: str, age: dt.timedelta) -> None:
    """Make the intent `age` old (recorded, and last touched, that long ago)."""
    when = utcnow() - age
    with world.deps.db.transaction() as session:
        session.execute(
            update(PaymentIntent)
            .where(PaymentIntent.id == intent_id)
            .values(created_at=when, updated_at=when)
        )


def intent_row(world: World, intent_id: str) -> PaymentIntent:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(PaymentIntent, intent_id)
        assert row is not None, intent_id
        return row


def at_provider(world: World, intent_id: str) -> list[str]:
    """The provider's payment intents created for our intent (its metadata names it)."""
    listed = world.stripe.v1.payment_intents.list(params={"limit": 100}).data
    return [pi.id for pi in listed if pi.metadata.to_dict().get(intents.OURS) == intent_id]
