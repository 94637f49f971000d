"""Payment intents of a customer DeleteCustomer deleted (its account archived), over real gRPC
against the sandbox, SQLite and PostgreSQL.

The customer's open intents are canceled at the provider after the delete commits (never
inside its transaction): the buyer's page can no longer pay them, and GetPaymentIntent says
`canceled`. A provider failure there does not undo the delete: `tollbooth reconcile` cancels
them later. A payment that still succeeds for the archived account (paid between the delete
and the cancel) is refunded once by the fulfilment guard and grants nothing."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import stripe
from sqlalchemy import select

from billing.v1 import customer_pb2, customer_pb2_grpc, payment_pb2
from tests.checkout.support import World, start_world, wait_for
from tests.conftest import SERVICE_MD
from tests.payments.support import (
    SEED_BODY,
    confirm,
    intent_row,
    one_time_pack,
    purchases,
    stub,
)
from tollbooth import app
from tollbooth.db.models import NotificationOutbox
from tollbooth.errors import DomainError, Kind
from tollbooth.payments import guard

CANCEL = "/v1/payment_intents/{}/cancel"


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The provider client never retries by itself: one injected 500 is one failed call."""
    w = start_world(database_url, tmp_path, STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def customers(world: World) -> customer_pb2_grpc.CustomerServiceStub:
    return customer_pb2_grpc.CustomerServiceStub(world.channel)


def new_customer(world: World) -> customer_pb2.Customer:
    return customers(world).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email="payer@example.com", name="Payer"),
        metadata=SERVICE_MD,
        timeout=30,
    )


def open_intent(world: World, account: str, **fields: object) -> payment_pb2.PaymentIntent:
    """Seed 003's body for the customer's account, by a backend (no request_id, as seed 003)."""
    body = {**SEED_BODY, **fields}
    made = stub(world).CreatePaymentIntent(
        payment_pb2.CreatePaymentIntentRequest(account=account, **body),  # type: ignore[arg-type]
        metadata=SERVICE_MD,
        timeout=30,
    )
    assert made.intent_status == "requires_payment_method"
    return made


def delete(world: World, customer_id: str) -> customer_pb2.DeleteCustomerResponse:
    return customers(world).DeleteCustomer(
        customer_pb2.DeleteCustomerRequest(customer_id=customer_id), metadata=SERVICE_MD, timeout=30
    )


def shown(world: World, ident: str) -> payment_pb2.PaymentIntent:
    return stub(world).GetPaymentIntent(
        payment_pb2.GetPaymentIntentRequest(payment_intent_id=ident), metadata=SERVICE_MD
    )


def at_stripe(world: World, stripe_id: str) -> str:
    return str(world.stripe.v1.payment_intents.retrieve(stripe_id).status)


def test_delete_customer_cancels_its_open_payment_intents(world: World) -> None:
    customer = new_customer(world)
    made = open_intent(world, customer.account_id)
    assert delete(world, customer.id).deleted

    assert at_stripe(world, made.stripe_payment_intent_id) == "canceled"
    with pytest.raises(stripe.InvalidRequestError) as refused:  # the buyer's page pays it
        confirm(world, made.stripe_payment_intent_id)
    assert refused.value.code == "payment_intent_unexpected_state"
    answer = shown(world, made.payment_intent_id)
    assert (answer.intent_status, answer.status) == (
        "canceled",
        payment_pb2.PAYMENT_INTENT_STATUS_CANCELED,
    )
    world.settled()  # its payment_intent.canceled changes nothing more
    assert intent_row(world, made.payment_intent_id).status == "canceled"
    assert purchases(world, customer.account_id) == []


def test_a_cancel_the_provider_fails_does_not_undo_the_delete_and_reconcile_finishes_it(
    world: World,
) -> None:
    customer = new_customer(world)
    made = open_intent(world, customer.account_id)
    pi = made.stripe_payment_intent_id
    world.sandbox.stalls.add("POST", CANCEL.format(pi), seconds=0, status=500)
    assert delete(world, customer.id).deleted  # the delete stands
    assert at_stripe(world, pi) == "requires_payment_method"
    assert intent_row(world, made.payment_intent_id).status == "requires_payment_method"

    report = app.reconcile(world.settings)
    assert report.failed == []
    lines = [line for line in report.changed if made.payment_intent_id in line]
    assert lines == [
        f"payment intent {made.payment_intent_id}: canceled at Stripe ({pi}): its customer"
        " was deleted"
    ]
    assert at_stripe(world, pi) == "canceled"
    assert intent_row(world, made.payment_intent_id).status == "canceled"
    assert shown(world, pi).intent_status == "canceled"

    again = app.reconcile(world.settings)  # nothing left to cancel
    assert [line for line in again.changed + again.failed if made.payment_intent_id in line] == []


def test_a_payment_made_before_the_cancel_is_refunded_once_and_grants_nothing(
    world: World,
) -> None:
    """Paid at the provider just before the delete (its event not applied yet): the cancel
    finds it succeeded and leaves it; its event then refunds it through the fulfilment guard
    (no purchase, no grant), and a redelivery refunds nothing twice."""
    price = one_time_pack(world, "pack")
    customer = new_customer(world)
    made = open_intent(world, customer.account_id, amount=0, currency="", catalog_price_id=price)
    pi = made.stripe_payment_intent_id
    world.settled()
    world.gate.open.clear()  # the payment's event waits at the gate
    confirm(world, pi)
    assert delete(world, customer.id).deleted
    assert at_stripe(world, pi) == "succeeded"  # a payment taken is never canceled
    world.gate.open.set()
    world.settled()

    row = wait_for(
        lambda: (r := intent_row(world, made.payment_intent_id)).refund_id and r,
        what="the refund recorded",
    )
    assert (row.status, row.purchase_id) == ("succeeded", None)
    store = world.sandbox.app.state.store
    with store.lock:
        refunds = [r["id"] for _, r in store.all("refund") if r["payment_intent"] == pi]
    assert refunds == [row.refund_id]  # once, whatever was redelivered
    assert purchases(world, customer.account_id) == []
    assert world.balance(customer.account_id, "pack_calls") == "0"
    assert world.notifications(customer.account_id)[-1] == "payment_intent.duplicate_refunded"
    answer = shown(world, made.payment_intent_id)
    assert (answer.intent_status, answer.refund_id, answer.purchase_id) == (
        "succeeded",
        row.refund_id,
        "",
    )
    with world.deps.db.transaction(readonly=True) as session:
        [told] = session.scalars(
            select(NotificationOutbox.payload).where(
                NotificationOutbox.billing_account_id == customer.account_id,
                NotificationOutbox.type == "payment_intent.duplicate_refunded",
            )
        ).all()
    assert (told["reason"], told["refund"]) == (guard.ARCHIVED, row.refund_id)


def test_a_retry_of_the_delete_cancels_what_a_failed_cancel_left_open(world: World) -> None:
    customer = new_customer(world)
    made = open_intent(world, customer.account_id)
    pi = made.stripe_payment_intent_id
    world.sandbox.stalls.add("POST", CANCEL.format(pi), seconds=0, status=500)
    assert delete(world, customer.id).deleted
    assert at_stripe(world, pi) == "requires_payment_method"

    with pytest.raises(grpc.RpcError) as again:  # seed 003's retry: no request_id
        delete(world, customer.id)
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    assert at_stripe(world, pi) == "canceled"
    assert intent_row(world, made.payment_intent_id).status == "canceled"


def test_the_apply_phase_refuses_a_payment_of_an_account_archived_after_its_read_phase(
    world: World,
) -> None:
    """The read phase saw the account active (nothing refunded); DeleteCustomer committed
    before the apply phase took the account's lock: that attempt records nothing and fails
    ACCOUNT_ARCHIVED, so the inbox retries it and the retry's read phase refunds."""
    customer = new_customer(world)
    made = open_intent(world, customer.account_id)
    row = intent_row(world, made.payment_intent_id)
    with world.deps.db.transaction(readonly=True) as session:
        guard.check(session, row)  # active: passes
    assert delete(world, customer.id).deleted
    with world.deps.db.transaction(readonly=True) as session:
        with pytest.raises(DomainError) as refused:
            guard.check(session, row)
    assert (refused.value.kind, refused.value.reason) == (Kind.FAILED_PRECONDITION, guard.ARCHIVED)
