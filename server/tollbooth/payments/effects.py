"""Payment-intent effects of the provider's events (DESIGN section 6), for the intents this
service created (PaymentService). Registered with the webhook inbox at assembly.

The provider is the truth: the read phase (outside any transaction) fetches the payment
intent, and the effects act on its status, never on the event body's. Intents this service
did not create are ignored: a checkout's payment intents carry no metadata of ours (their
purchases are recorded by the checkout's fulfilment), and neither do any other.

- `payment_intent.succeeded`: the purchase (and the grants of a named price) once per intent,
  guarded by the `billing_effects` key `payment_intent:{pi_…}`; a duplicate or a second event
  for the same payment changes nothing. Grants go through the same path as a checkout's
  (`subscriptions.effects.record_purchase` / `grant_for_price`), carrying the payment intent,
  so a full refund (`charge.refunded`) voids them too. A payment of a price bought once that
  the account holds already (another intent's purchase, or a checkout's) records no purchase:
  it is refunded as a duplicate (`tollbooth.payments.guard`); so is any payment of an account
  archived since (its customer deleted, the intent paid before its cancel reached Stripe).
- `payment_intent.payment_failed`: the failure (code, decline code, message, time) on our row;
  a late failure event never moves a succeeded intent back.
- `payment_intent.canceled`: the row is `canceled` (never from `succeeded`), so it is no
  longer the open intent a second tab is given.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tollbooth.accounts import repository as accounts
from tollbooth.catalog import repository as catalog
from tollbooth.db import Database
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.errors import DomainError, Kind
from tollbooth.notifications import outbox
from tollbooth.payments import guard, repository
from tollbooth.payments.intents import OURS
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions import refunds
from tollbooth.subscriptions.effects import Context, Facts, grant_for_price, record_purchase
from tollbooth.webhooks.dispatch import Handler, Ignored, as_dict, claim_effect
from tollbooth.webhooks.dispatch import object_id as _id

# Statuses the provider reports; a row never leaves `succeeded` or `canceled`.
FINAL = ("succeeded", "canceled")


class IntentFacts(Facts):
    """The provider's payment intent, read before any transaction opens."""

    def __init__(self) -> None:
        super().__init__()
        self.intent: dict[str, Any] = {}


def read_intent(provider: StripeProvider, obj: dict[str, Any]) -> IntentFacts:
    """The provider's payment intent (Ignored when it is not one of ours)."""
    stripe_id = _id(obj.get("id"))
    if not stripe_id:
        raise Ignored("the event names no usable payment intent id")
    if not as_dict(obj.get("metadata")).get(OURS):
        raise Ignored("a payment intent this service did not create (a checkout's, or another)")
    try:
        truth = provider.retrieve_payment_intent(stripe_id)
    except DomainError as exc:
        if exc.kind is Kind.INVALID_ARGUMENT:  # the provider does not know it
            raise Ignored(f"the provider does not know payment intent {stripe_id}") from exc
        raise
    facts = IntentFacts()
    facts.intent = truth
    return facts


def read_succeeded(db: Database, provider: StripeProvider, obj: dict[str, Any]) -> IntentFacts:
    """`read_intent`, then the guard of prices bought once (`tollbooth.payments.guard`): a
    payment of a price the account holds already is refunded here, outside any transaction."""
    facts = read_intent(provider, obj)
    ours = _id(as_dict(facts.intent.get("metadata")).get(OURS))
    facts.guard = guard.prepare(db, provider, facts.intent, ours or "")
    return facts


def _ours(ctx: Context) -> Any:
    """Our row of the provider's intent, locked; Ignored when it is not one of ours."""
    truth = ctx.facts.intent  # type: ignore[attr-defined]
    stripe_id = str(truth.get("id"))
    ours = _id(as_dict(truth.get("metadata")).get(OURS))
    row = repository.intent_by_id(ctx.session, ours, owner=None, lock=True) if ours else None
    if row is None or row.stripe_payment_intent_id not in (None, stripe_id):
        raise Ignored("a payment intent this service did not create")
    if row.stripe_payment_intent_id is None:  # the create call's answer was never recorded
        row.stripe_payment_intent_id = stripe_id
    return row


def on_succeeded(ctx: Context, obj: dict[str, Any]) -> None:
    truth = ctx.facts.intent  # type: ignore[attr-defined]
    row = _ours(ctx)
    stripe_id = row.stripe_payment_intent_id
    if truth.get("status") != "succeeded":
        raise Ignored("the provider does not report this payment intent succeeded")
    account = row.billing_account_id
    if not claim_effect(ctx.session, f"payment_intent:{stripe_id}", ctx.event_id, account):
        return  # recorded already, by this event or a twin
    now = ctx.clock()
    accounts.by_id_for_update(ctx.session, account)  # successes of one account take turns
    if isinstance(ctx.facts.guard, guard.Duplicate):
        _refunded(ctx, row, ctx.facts.guard, now)
        return
    guard.check(ctx.session, row)  # a purchase the read phase did not see: retried
    price = (
        catalog.prices_by_ids(ctx.session, [row.price_id]).get(row.price_id)
        if row.price_id
        else None
    )
    received = truth.get("amount_received")
    amount = received if type(received) is int and received > 0 else row.amount
    row.purchase_id = record_purchase(
        ctx,
        account,
        None,
        0,
        price,
        1,
        now,
        payment_intent_id=row.id,
        paid=(amount, row.currency),
        stripe_payment_intent=stripe_id,
    )
    if price is not None:
        grant_for_price(
            ctx,
            account,
            price,
            1,
            when="on_purchase",
            request_prefix=f"payment_intent:{stripe_id}",
            reason=f"purchase of {price.lookup_key or price.id}",
            payment_intent=stripe_id,
        )
    refunds.settle(ctx, account, stripe_id)  # a refund applied before this success
    row.status = "succeeded"
    row.succeeded_at = now
    row.updated_at = now
    ctx.session.flush()
    outbox.enqueue(
        ctx.session,
        "payment_intent.succeeded",
        account,
        {
            "payment_intent_id": row.id,
            "stripe_payment_intent_id": stripe_id,
            "purchase_id": row.purchase_id,
            "amount": amount,
            "currency": row.currency,
            "price_id": row.price_id,
        },
        f"payment_intent.succeeded:{stripe_id}",
    )
    ctx.changes.append(f"payment intent {row.id} succeeded: purchase {row.purchase_id}")


def _refunded(ctx: Context, row: PaymentIntent, done: guard.Duplicate, now: dt.datetime) -> None:
    """The intent bought a price the account holds already, grants more than the account's
    balance can store, or its account is archived: refunded in full by the read phase; no
    purchase, nothing granted, the refund recorded on the intent."""
    truth = ctx.facts.intent  # type: ignore[attr-defined]
    received = truth.get("amount_received")
    row.status = "succeeded"  # the provider's status: paid, then refunded
    row.succeeded_at = row.succeeded_at or now
    row.duplicate_of = done.purchase_id or None
    row.refund_id = done.refund
    row.refunded_at = now
    row.updated_at = now
    ctx.session.flush()
    outbox.enqueue(
        ctx.session,
        "payment_intent.duplicate_refunded",
        row.billing_account_id,
        {
            "payment_intent_id": row.id,
            "stripe_payment_intent_id": row.stripe_payment_intent_id,
            "price_id": done.price_id or None,
            "duplicate_of_purchase_id": done.purchase_id or None,
            "refund": done.refund,
            "amount": received if type(received) is int and received > 0 else row.amount,
            "currency": row.currency,
            "reason": done.reason,
            "credit_type": done.credit_type or None,
            "refund_refused": done.refused,
        },
        f"payment_intent.duplicate_refunded:{row.stripe_payment_intent_id}",
    )
    why = {
        guard.NOT_STORABLE: f"its {done.credit_type} grant no longer fits the balance",
        guard.ARCHIVED: "its account is archived",
    }.get(done.reason, f"it is held already (purchase {done.purchase_id})")
    paid = f"payment refunded ({done.refund})"
    if done.refused:
        paid = f"payment not refunded (Stripe: {done.refused})"
    bought = f"price {done.price_id}: " if done.price_id else ""
    ctx.changes.append(f"payment intent {row.id}: {bought}{why}; {paid}, nothing granted")


def on_failed(ctx: Context, obj: dict[str, Any]) -> None:
    truth = ctx.facts.intent  # type: ignore[attr-defined]
    row = _ours(ctx)
    # The attempt this event reports (the provider's intent may have moved on since).
    error = as_dict(obj.get("last_payment_error")) or as_dict(truth.get("last_payment_error"))
    if not error:
        raise Ignored("the payment intent reports no failed attempt")
    now = ctx.clock()
    row.failure_code = str(error.get("code") or "payment_failed")[:100]
    row.decline_code = str(error["decline_code"])[:100] if error.get("decline_code") else None
    row.failure_message = str(error.get("message") or "")[:1000] or None
    row.failed_at = now
    status = truth.get("status")
    # Only `on_succeeded` moves a row to succeeded (with its purchase): a failure read after a
    # later attempt succeeded must not, or the price would look free before it is recorded.
    if row.status not in FINAL and isinstance(status, str) and status and status != "succeeded":
        row.status = status[:32]
    row.updated_at = now
    charge = _id(error.get("charge")) or ctx.event_id
    outbox.enqueue(
        ctx.session,
        "payment_intent.payment_failed",
        row.billing_account_id,
        {
            "payment_intent_id": row.id,
            "stripe_payment_intent_id": row.stripe_payment_intent_id,
            "failure_code": row.failure_code,
            "decline_code": row.decline_code,
            "amount": row.amount,
            "currency": row.currency,
        },
        f"payment_intent.payment_failed:{charge}",
    )
    ctx.changes.append(f"payment intent {row.id}: attempt failed ({row.failure_code})")


def on_canceled(ctx: Context, obj: dict[str, Any]) -> None:
    """The provider canceled the intent (its API or dashboard, or this service: its customer
    deleted, or made without request_id and left pending, `payments.closing`):
    it can no longer be paid, so a second tab is no longer given it (`intents._record`)."""
    truth = ctx.facts.intent  # type: ignore[attr-defined]
    row = _ours(ctx)
    if truth.get("status") != "canceled":
        raise Ignored("the provider does not report this payment intent canceled")
    if row.status in FINAL:
        return  # a row never leaves succeeded or canceled
    row.status = "canceled"
    row.updated_at = ctx.clock()
    ctx.changes.append(f"payment intent {row.id}: canceled at the provider")


def handlers(provider: StripeProvider, db: Database) -> dict[str, Handler]:
    """The inbox handlers of this room, by event type."""

    def bound(read: Any, effect: Any) -> Handler:
        def apply(session: Any, event_id: str, obj: dict[str, Any], facts: Any) -> list[str]:
            ctx = Context(session, facts, event_id)
            effect(ctx, obj)
            return ctx.changes

        return Handler(read, apply)

    return {
        "payment_intent.succeeded": bound(
            lambda obj: read_succeeded(db, provider, obj), on_succeeded
        ),
        "payment_intent.payment_failed": bound(lambda obj: read_intent(provider, obj), on_failed),
        "payment_intent.canceled": bound(lambda obj: read_intent(provider, obj), on_canceled),
    }
