"""A checkout's completion applied late, after the subscription renewed (its event held back,
or failing and retried by the inbox meanwhile): the credits it grants are recorded as bought
by the checkout's own first invoice, never by whatever invoice is the subscription's latest
when the event is finally applied. So a full refund of the first payment voids them, and a
full refund of the renewal voids only the renewal's."""

from __future__ import annotations

import json

from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send
from tollbooth.db.models import CreditGrant

EVERY = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
    )
]


def send_all(world: World, event_type: str, object_id: str) -> None:
    for evt in events_of(world, event_type, object_id):
        assert signed_send(world, json.dumps(evt).encode()) == 200


def intent_of(world: World, invoice_id: str) -> str:
    invoice = world.stripe.v1.invoices.retrieve(invoice_id)
    return str(invoice.payments.data[0].payment.payment_intent)


def refund(world: World, intent: str) -> None:
    world.stripe.v1.refunds.create(params={"payment_intent": intent})
    charge = str(world.stripe.v1.payment_intents.retrieve(intent).latest_charge)
    send_all(world, "charge.refunded", charge)


def grants_by_state(world: World, account: str) -> dict[str, list[str]]:
    """request_id of each of the account's grants, by state."""
    out: dict[str, list[str]] = {}
    with world.deps.db.transaction(readonly=True) as session:
        for g in session.scalars(
            select(CreditGrant).where(CreditGrant.billing_account_id == account)
        ):
            out.setdefault(g.state, []).append(g.request_id)
    return out


def late_checkout(world: World) -> tuple[str, str, str, str]:
    """`pro` bought and paid, renewed 31 days on, and only then its events delivered
    (checkout last): (account, stripe checkout session, first invoice, renewal invoice)."""
    world.price("pro", grants=EVERY)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    session = world.stripe.v1.checkout.sessions.retrieve(stripe_id)
    sub_id, first = str(session.subscription), str(session.invoice)
    world.advance(31)  # the renewal, paid at the provider
    renewal = str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    assert renewal != first
    send_all(world, "customer.subscription.created", sub_id)
    send_all(world, "invoice.paid", renewal)
    send_all(world, "checkout.session.completed", stripe_id)
    assert world.balance(account, "api_calls") == "200"
    return account, stripe_id, first, renewal


def test_a_full_refund_of_the_first_payment_voids_a_late_checkouts_grants(quiet: World):
    account, stripe_id, first, _ = late_checkout(quiet)
    refund(quiet, intent_of(quiet, first))
    assert quiet.balance(account, "api_calls") == "100"  # the renewal's are kept
    voided = grants_by_state(quiet, account).get("voided", [])
    assert len(voided) == 1 and voided[0].startswith(f"checkout:{stripe_id}:")


def test_a_full_refund_of_the_renewal_keeps_a_late_checkouts_grants(quiet: World):
    account, _, _, renewal = late_checkout(quiet)
    refund(quiet, intent_of(quiet, renewal))
    assert quiet.balance(account, "api_calls") == "100"  # the first payment's are kept
    voided = grants_by_state(quiet, account).get("voided", [])
    assert len(voided) == 1 and voided[0].startswith(f"invoice:{renewal}:")
