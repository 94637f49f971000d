"""Credit grants that no longer fit the account's balance (README "A paid purchase whose
credits no longer fit").

A balance is stored as NUMERIC(38, 18). A purchase is refused when it is created if its
grants would not fit, but the balance can grow before its payment is recorded, and a renewal
or an upgrade grants with no request to refuse. Such a grant could never be written: its
event would fail on every attempt. Instead the event completes without it, the payment that
bought it (when there is one) is refunded in full, and the company is told, with the reason
`CREDITS_NOT_STORABLE` and the credit type.

- a checkout or a payment intent: refunded by its fulfilment guard (`checkout.once`,
  `payments.guard`), as a duplicate is;
- a renewal (`invoice.paid`): its read phase refunds the invoice's payment (no transaction
  open) and the apply phase records it under the account's lock, grants nothing and sends
  `invoice.renewal_refunded`; one that meets it there unseen fails `CREDITS_NOT_STORABLE` and
  its retry refunds; a renewal nothing paid for (a 100 % discount) is only told;
- an upgrade (`subscriptions.upgrades`): no payment of its own to refund (a proration is
  billed with other charges, or not at all): the credit type that does not fit is not granted
  and `subscription.upgrade_not_granted` says so.

A refund of ours for that reason carries no Stripe `reason`: it is no duplicate payment, and
not the customer's request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import amounts, errors
from tollbooth.credit.queries import first_not_storable
from tollbooth.db import Database
from tollbooth.db.models import Price, Subscription
from tollbooth.db.types import utcnow
from tollbooth.notifications import outbox
from tollbooth.provider import repository as links
from tollbooth.provider.client import StripeProvider, refund_or_refusal
from tollbooth.provider.keys import idempotency_key
from tollbooth.subscriptions import repository
from tollbooth.subscriptions.effects import Context, Facts, Reader, invoice_ids, renewed
from tollbooth.webhooks.dispatch import object_id as _id

NOT_STORABLE = "CREDITS_NOT_STORABLE"
RENEWAL_REFUNDED = "invoice.renewal_refunded"


def refund(provider: StripeProvider, payment_intent: str) -> str | None:
    """Refund in full a payment whose grants cannot be stored; the refund's id (None: the
    provider reports it refunded already). One key per payment, whichever event asks."""
    key = idempotency_key("overflow-refund", payment_intent)
    return provider.refund_payment(payment_intent, idempotency=key, reason=None)


def not_storable(
    session: Session, account_id: str, bought: Iterable[tuple[Price, int]], when: str
) -> tuple[str, str] | None:
    """(price id, credit type) when the `when` grants (`on_purchase`, `on_renewal`) of
    `bought` (price, quantity) would take a balance of the account past the largest storable
    amount, or one of them alone is past it; None when they all fit. Read only: the apply
    phase asks again under the account's lock."""
    granted: dict[str, Decimal] = {}
    first: dict[str, str] = {}
    for n, (price, quantity) in enumerate(bought):
        specs = [s for s in price.credit_grants or [] if s.get(when)]
        try:
            amounts.add_grants(granted, specs, max(quantity, 1), f"items[{n}]")
        except errors.DomainError:  # one grant alone is past the cap
            return price.id, str(specs[0].get("credit_type") or "") if specs else ""
        for spec in specs:
            first.setdefault(str(spec.get("credit_type") or ""), price.id)
    kind = first_not_storable(session, account_id, granted, utcnow())
    return None if kind is None else (first[kind], kind)


# -- renewals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenewalRefunded:
    """What the read phase did for a renewal whose grants cannot be stored."""

    invoice: str
    price_id: str
    credit_type: str
    payment_intent: str | None  # what paid the invoice (None: nothing did)
    refund: str | None  # None: nothing to refund, or the provider had refunded it already
    refused: str | None = None  # Stripe's code when it refuses the refund for good


def guarded_renewal(db: Database, read_invoice: Reader) -> Reader:
    """`read_invoice`, then, for a renewal whose grants cannot be stored, the refund of its
    payment (no transaction open)."""

    def read(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
        read_invoice(provider, facts, obj)
        facts.guard = _prepare_renewal(db, provider, facts, obj)

    return read


def _prepare_renewal(
    db: Database, provider: StripeProvider, facts: Facts, obj: dict[str, Any]
) -> RenewalRefunded | None:
    invoice_id, sub_id = invoice_ids(obj)
    truth = facts.subscription(sub_id)
    if obj.get("billing_reason") != "subscription_cycle" or truth is None:
        return None
    customer = _id(truth.get("customer"))
    with db.transaction(readonly=True) as session:
        account = links.account_by_customer(session, customer) if customer else None
        if account is None:
            return None  # not ours: the apply phase ignores it
        if repository.effect_claimed_at(session, account.id, f"invoice:{invoice_id}"):
            return None  # applied already: a replay changes nothing
        lines = renewed(session, facts, sub_id, invoice_id)
        full = not_storable(session, account.id, [(p, q) for p, q, _ in lines], "on_renewal")
    if full is None:
        return None
    paid_by = facts.payment_intents.get(invoice_id)
    done, refused = (
        refund_or_refusal(lambda: refund(provider, paid_by)) if paid_by else (None, None)
    )
    return RenewalRefunded(invoice_id, full[0], full[1], paid_by, done, refused)


def renewal_skipped(
    ctx: Context,
    row: Subscription,
    obj: dict[str, Any],
    invoice_id: str,
    lines: list[tuple[Price, int, Any]],
) -> bool:
    """Apply phase, under the account's lock, the renewal claimed: True when its grants are
    not made (the read phase refunded its payment, or nothing paid for it), and the company is
    told. One the read phase did not see, with a payment to refund, fails the attempt; its
    retry refunds."""
    done = ctx.facts.guard
    if not (isinstance(done, RenewalRefunded) and done.invoice == invoice_id):
        account = row.billing_account_id
        bought = [(price, quantity) for price, quantity, _ in lines]
        full = not_storable(ctx.session, account, bought, "on_renewal")
        if full is None:
            return False
        paid_by = ctx.facts.payment_intents.get(invoice_id)
        if paid_by:
            raise errors.failed_precondition(
                NOT_STORABLE,
                f"invoice {invoice_id}: what price {full[0]!r} grants no longer fits the"
                f" account's {errors.shown(full[1])} balance; the next attempt refunds it",
                price_id=full[0],
            )
        done = RenewalRefunded(invoice_id, full[0], full[1], None, None)
    _tell_renewal(ctx, row, obj, done)
    return True


def _tell_renewal(
    ctx: Context, row: Subscription, obj: dict[str, Any], done: RenewalRefunded
) -> None:
    paid, currency = obj.get("amount_paid"), obj.get("currency")
    outbox.enqueue(
        ctx.session,
        RENEWAL_REFUNDED,
        row.billing_account_id,
        {
            "stripe_invoice_id": done.invoice,
            "subscription_id": row.id,
            "stripe_subscription_id": row.stripe_subscription_id,
            "price_id": done.price_id,
            "refunded_payment_intent": done.payment_intent,
            "refund": done.refund,
            "amount_paid": paid if type(paid) is int else None,
            "currency": currency if isinstance(currency, str) else None,
            "reason": NOT_STORABLE,
            "credit_type": done.credit_type or None,
            "refund_refused": done.refused,
        },
        f"{RENEWAL_REFUNDED}:{done.invoice}",
    )
    what = f"payment {done.payment_intent} refunded" if done.payment_intent else "nothing paid"
    if done.refused:
        what = f"payment {done.payment_intent} not refunded (Stripe: {done.refused})"
    ctx.changes.append(
        f"invoice {done.invoice}: its {done.credit_type} grant no longer fits the balance;"
        f" {what}, nothing granted"
    )
