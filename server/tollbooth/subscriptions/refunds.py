"""Refunds (`charge.refunded`): what remains of the grants a refunded payment bought is voided,
and the one-time purchases it paid are no longer held (what they entitle ends).

Registered with the webhook inbox at assembly. The provider is the truth: the charge is read
from the provider first (outside any transaction), and only a charge it reports fully refunded
voids anything; a partial refund keeps the grants (the event is ignored with that reason).
Grants know the PaymentIntent that paid for them (their metadata, written at fulfilment and,
for a renewal's grants, from the renewal invoice's payment read with `invoice.paid`).
One voiding per charge, guarded by the `billing_effects` key `refund:{ch_…}`. A refund applied
before what the payment bought was recorded (events arrive in any order) leaves the mark
`refunded:{pi_…}`; recording it then ends it at once (`settle`, called by the fulfilments).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tollbooth.accounts import repository as accounts
from tollbooth.auth.caller import SERVICE
from tollbooth.credit import grants as credit_grants
from tollbooth.notifications import outbox
from tollbooth.provider import repository as links
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions import repository
from tollbooth.subscriptions.effects import Context, Effect, Facts, Reader
from tollbooth.webhooks.dispatch import Ignored, claim_effect
from tollbooth.webhooks.dispatch import object_id as _id


def _charge_of(obj: dict[str, Any]) -> str:
    charge_id = _id(obj.get("id"))
    if not charge_id:
        raise Ignored("the event names no usable charge id")
    return charge_id


def read_charge(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
    charge_id = _charge_of(obj)
    facts.charges[charge_id] = provider.retrieve_charge(charge_id)


def on_charge_refunded(ctx: Context, obj: dict[str, Any]) -> None:
    charge_id = _charge_of(obj)
    truth = ctx.facts.charges.get(charge_id)
    if truth is None:
        raise Ignored("the provider does not know this charge")
    if truth.get("refunded") is not True:
        raise Ignored("the charge is not fully refunded at the provider: grants are kept")
    intent, customer = _id(truth.get("payment_intent")), _id(truth.get("customer"))
    account = links.account_by_customer(ctx.session, customer) if customer else None
    if account is None or intent is None:
        raise Ignored("a charge of a customer that is not ours")
    end_payment(ctx, account.id, intent, charge_id, "refunded")


def end_payment(ctx: Context, account_id: str, intent: str, charge_id: str, cause: str) -> bool:
    """End what the payment of `charge_id` bought, as a full refund does: once per charge,
    whichever comes first of a full refund (`charge.refunded`) and a dispute lost
    (`subscriptions.disputes`); True only for the one that applies it."""
    if not claim_effect(ctx.session, f"refund:{charge_id}", ctx.event_id, account_id):
        return False  # voided already (a refund or a dispute of this charge, or a twin)
    # What the payment bought may not be recorded yet (this event came first): its fulfilment
    # finds this mark and ends it then (`settle`). The account's lock orders the two.
    accounts.by_id_for_update(ctx.session, account_id)
    claim_effect(ctx.session, refunded_mark(intent), ctx.event_id, account_id)
    _end_what_it_bought(ctx, account_id, intent, charge_id, cause=cause)
    return True


def refunded_mark(payment_intent: str) -> str:
    """The `billing_effects` key saying a PaymentIntent's payment was fully refunded."""
    return f"refunded:{payment_intent}"


def settle(ctx: Context, account_id: str, payment_intent: str | None) -> None:
    """After recording what a payment bought (fulfilment, renewal, payment intent): if a full
    refund of that payment was applied before, end what it bought now."""
    if not payment_intent:
        return
    accounts.by_id_for_update(ctx.session, account_id)
    refunded_at = repository.effect_claimed_at(
        ctx.session, account_id, refunded_mark(payment_intent)
    )
    if refunded_at is not None:  # the refund's own time, not this (later) fulfilment's
        _end_what_it_bought(ctx, account_id, payment_intent, None, when=refunded_at)


def _end_what_it_bought(
    ctx: Context,
    account_id: str,
    intent: str,
    charge: str | None,
    *,
    when: dt.datetime | None = None,
    cause: str = "refunded",
) -> None:
    """Void what remains of the grants `intent` paid for and end the purchases it paid, as
    refunded at `when` (the refund's time; now by default); `cause` says why (refunded, or
    lost in a dispute)."""
    what = f"charge {charge}" if charge else f"payment {intent}"
    refunded_at = when or ctx.clock()
    for purchase in repository.refund_purchases(ctx.session, account_id, intent, refunded_at):
        ctx.changes.append(f"purchase {purchase.id} refunded: {what} {cause}")
    for grant in repository.grants_bought_by(ctx.session, account_id, intent):
        voided = credit_grants.void_grant(
            ctx.session,
            SERVICE,
            account_id,
            grant_id=grant.id,
            reason=f"refund of {what}" if cause == "refunded" else f"{what} {cause}",
            request_id=f"refund:{charge or intent}:{grant.id}",
            clock=ctx.clock,
        )
        outbox.enqueue(
            ctx.session,
            "credits.voided",
            account_id,
            {
                "grant_id": voided.id,
                "credit_type": voided.credit_type,
                "charge": charge,
                "payment_intent": intent,
            },
            f"credits.voided:refund:{grant.id}",
        )
        ctx.changes.append(f"grant {voided.id} voided: {what} {cause}")


HANDLERS: dict[str, tuple[Reader, Effect]] = {
    "charge.refunded": (read_charge, on_charge_refunded),
}
