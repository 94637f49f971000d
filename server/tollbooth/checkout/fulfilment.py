"""Checkout-session effects of the provider's events (DESIGN section 6).

Registered with the webhook inbox at assembly (`tollbooth.app`). The provider is the truth:
the read phase (outside any transaction) fetches the checkout session and its subscription
from the provider, and fulfilment acts on their status and payment status, never on the
event body's. One fulfilment per checkout session, guarded by the
`billing_effects` key `checkout:{cs_…}`: the purchases, subscription and credit grants it
brings are written by the subscriptions room (`tollbooth.subscriptions.effects`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tollbooth.catalog import repository as catalog
from tollbooth.checkout import guard, once, repository
from tollbooth.db import Database
from tollbooth.db.models import CheckoutSession
from tollbooth.errors import DomainError, Kind
from tollbooth.notifications import outbox
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions import refunds
from tollbooth.subscriptions.effects import (
    Context,
    Effect,
    Facts,
    Reader,
    bound,
    grant_for_price,
    record_purchase,
    sync_subscription,
)
from tollbooth.webhooks.dispatch import Handler, Ignored, claim_effect
from tollbooth.webhooks.dispatch import object_id as _id

STATUSES = ("open", "complete", "expired")
PAYMENT_STATUSES = ("paid", "unpaid", "no_payment_required")


def _session_of(obj: dict[str, Any]) -> str:
    stripe_id = _id(obj.get("id"))
    if not stripe_id:
        raise Ignored("the event names no usable checkout session id")
    return stripe_id


def read_checkout(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
    """The provider's checkout session (and its subscription), whatever the event says."""
    stripe_id = _session_of(obj)
    try:
        truth = provider.retrieve_checkout_session(stripe_id)
    except DomainError as exc:
        if exc.kind is Kind.INVALID_ARGUMENT:  # the provider does not know it
            raise Ignored(f"the provider does not know checkout session {stripe_id}") from exc
        raise
    facts.checkout_sessions[stripe_id] = truth
    if truth.get("mode") == "setup":
        _default_payment_method(provider, truth)
        return
    sub_id = _id(truth.get("subscription"))
    intent = _id(truth.get("payment_intent"))
    if sub_id:
        facts.read_subscription(provider, sub_id)
        # The checkout's own first invoice: the subscription's latest is a renewal's once
        # this event is applied after one (held back, or retried meanwhile).
        invoice = _id(truth.get("invoice")) or _id(
            (facts.subscription(sub_id) or {}).get("latest_invoice")
        )
        if invoice and truth.get("payment_status") == "paid":
            intent = provider.invoice_payment_intent(invoice)
    facts.payment_intents[stripe_id] = intent  # what paid it: a refund voids what it bought


def _default_payment_method(provider: StripeProvider, truth: dict[str, Any]) -> None:
    """Setup mode: the card the buyer saved becomes the customer's default payment method.
    A provider call, so in the read phase (no transaction open); repeating it is harmless."""
    if truth.get("status") != "complete":
        return
    customer = _id(truth.get("customer"))
    seti_id = _id(truth.get("setup_intent"))
    if not customer or not seti_id:
        return
    seti = provider.retrieve_setup_intent(seti_id)
    method = _id(seti.get("payment_method"))
    if seti.get("status") == "succeeded" and method:
        provider.set_default_payment_method(customer, method)


def on_checkout_completed(ctx: Context, obj: dict[str, Any]) -> None:
    stripe_id = _session_of(obj)
    truth = ctx.facts.checkout_sessions[stripe_id]
    row = repository.checkout_by_stripe_id(ctx.session, stripe_id, owner=None, lock=True)
    if row is None:
        raise Ignored("a checkout session this service did not create")
    now = ctx.clock()
    status = truth.get("status")
    if status in ("complete", "expired") and row.status != status:
        row.status = str(status)
        row.url = None
    payment_status = truth.get("payment_status")
    if payment_status in PAYMENT_STATUSES:
        row.payment_status = str(payment_status)
    row.updated_at = now
    if status != "complete" or payment_status not in ("paid", "no_payment_required"):
        # Not paid (yet): an async method's checkout.session.async_payment_succeeded will say.
        ctx.changes.append(f"checkout {row.id} not paid at the provider: nothing granted")
        return
    if not claim_effect(ctx.session, f"checkout:{stripe_id}", ctx.event_id, row.billing_account_id):
        return  # fulfilled already, by this event or a twin
    canceled = ctx.facts.guard
    sub_id = _id(truth.get("subscription"))
    if sub_id and canceled is None:
        guard.check(ctx.session, row, ctx.facts, sub_id)
    if isinstance(canceled, guard.Canceled):
        _yielded(ctx, row, canceled, now)
        return
    if isinstance(canceled, once.Refunded):
        _refunded(ctx, row, canceled, now)
        return
    once.check(ctx.session, row)
    _fulfil(ctx, row, truth, now)


def _yielded(
    ctx: Context, row: CheckoutSession, canceled: guard.Canceled, now: dt.datetime
) -> None:
    """The checkout's subscription was canceled and refunded by the guard: nothing granted."""
    row.fulfilled_at = now
    row.stripe_subscription_id = canceled.subscription
    # Never the account's plan: recorded (canceled) without a `subscription.created`.
    sync_subscription(ctx, canceled.subscription, announce=False)
    outbox.enqueue(
        ctx.session,
        "checkout.conflict_canceled",
        row.billing_account_id,
        {
            "checkout_session_id": row.id,
            "stripe_checkout_session_id": row.stripe_checkout_session_id,
            "stripe_subscription_id": canceled.subscription,
            "kept_stripe_subscription_id": canceled.kept,
            "refunded_invoice": canceled.invoice,
            "refund": canceled.refund,
        },
        f"checkout.conflict_canceled:{row.stripe_checkout_session_id}",
    )
    ctx.changes.append(
        f"checkout {row.id}: subscription {canceled.subscription} canceled and refunded"
        f" (the group holds {canceled.kept})"
    )


def _refunded(ctx: Context, row: CheckoutSession, done: once.Refunded, now: dt.datetime) -> None:
    """The checkout bought a price the account holds already, or grants more than the
    account's balance can store: refunded (its subscription canceled) by the read phase;
    nothing granted."""
    row.fulfilled_at = now
    if done.subscription:
        row.stripe_subscription_id = done.subscription
        sync_subscription(ctx, done.subscription, announce=False)  # never the account's plan
    outbox.enqueue(
        ctx.session,
        "checkout.duplicate_refunded",
        row.billing_account_id,
        {
            "checkout_session_id": row.id,
            "stripe_checkout_session_id": row.stripe_checkout_session_id,
            "price_id": done.price_id,
            "refunded_payment_intent": done.payment_intent,
            "refund": done.refund,
            "stripe_subscription_id": done.subscription,
            "reason": done.reason,
            "credit_type": done.credit_type or None,
            "refund_refused": done.refused,
        },
        f"checkout.duplicate_refunded:{row.stripe_checkout_session_id}",
    )
    why = (
        f"its {done.credit_type} grant no longer fits the balance"
        if done.reason == once.NOT_STORABLE
        else "it is held already"
    )
    paid = f"payment {done.payment_intent} refunded" if done.payment_intent else "nothing paid"
    if done.refused:
        paid = f"payment {done.payment_intent} not refunded (Stripe: {done.refused})"
    ctx.changes.append(f"checkout {row.id}: price {done.price_id}: {why}; {paid}, nothing granted")


def _fulfil(ctx: Context, row: CheckoutSession, truth: dict[str, Any], now: dt.datetime) -> None:
    account = row.billing_account_id
    repository.lock_account(ctx.session, account)  # before any grant: as a refund locks
    row.fulfilled_at = now
    sub_id = _id(truth.get("subscription"))
    period_start = None  # a plan's grants expire counting from its billing period's start
    if sub_id:
        row.stripe_subscription_id = sub_id
        recorded = sync_subscription(ctx, sub_id)
        period_start = recorded.current_period_start if recorded is not None else None
    prices = catalog.prices_by_ids(ctx.session, [i["price_id"] for i in row.items])
    paid_by = ctx.facts.payment_intents.get(row.stripe_checkout_session_id or "")
    for line, item in enumerate(row.items):
        price = prices.get(item["price_id"])
        if price is None:
            continue
        quantity = int(item.get("quantity") or 1)
        if price.type != "recurring":
            record_purchase(
                ctx, account, row.id, line, price, quantity, now, stripe_payment_intent=paid_by
            )
        grant_for_price(
            ctx,
            account,
            price,
            quantity,
            when="on_purchase",
            request_prefix=f"checkout:{row.stripe_checkout_session_id}",
            reason=f"purchase of {price.lookup_key or price.id}",
            payment_intent=paid_by,
            anchor=period_start if price.type == "recurring" else None,
        )
    ctx.session.flush()
    refunds.settle(ctx, account, paid_by)  # a refund applied before this fulfilment
    outbox.enqueue(
        ctx.session,
        "checkout.completed",
        account,
        {
            "checkout_session_id": row.id,
            "stripe_checkout_session_id": row.stripe_checkout_session_id,
            "mode": row.mode,
            "client_reference": row.client_reference,
            "amount_total": row.amount_total,
            "currency": row.currency,
            "items": row.items,
            "invoice_id": _invoice_of(ctx, truth, sub_id),
            "payment_id": paid_by,
        },
        f"checkout.completed:{row.stripe_checkout_session_id}",
    )
    ctx.changes.append(f"checkout {row.id} fulfilled")


def _invoice_of(ctx: Context, truth: dict[str, Any], sub_id: str | None) -> str | None:
    """The provider's invoice the checkout paid: the session's own, else (older API versions)
    its subscription's latest; None for a payment without an invoice."""
    invoice = _id(truth.get("invoice"))
    if not invoice and sub_id:
        invoice = _id((ctx.facts.subscription(sub_id) or {}).get("latest_invoice"))
    return invoice or None


def on_checkout_expired(ctx: Context, obj: dict[str, Any]) -> None:
    stripe_id = _session_of(obj)
    if ctx.facts.checkout_sessions[stripe_id].get("status") != "expired":
        raise Ignored("the provider does not report this checkout session expired")
    row = repository.checkout_by_stripe_id(ctx.session, stripe_id, owner=None, lock=True)
    if row is None:
        raise Ignored("a checkout session this service did not create")
    if row.status == "open":
        row.status = "expired"
        row.url = None
        row.updated_at = ctx.clock()
        ctx.changes.append(f"checkout {row.id} expired")


HANDLERS: dict[str, tuple[Reader, Effect]] = {
    "checkout.session.completed": (read_checkout, on_checkout_completed),
    "checkout.session.async_payment_succeeded": (read_checkout, on_checkout_completed),
    "checkout.session.expired": (read_checkout, on_checkout_expired),
}


def guarded(db: Database) -> Reader:
    """`read_checkout`, then the fulfilment guard's provider calls (`tollbooth.checkout.guard`)."""

    def read(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
        read_checkout(provider, facts, obj)
        facts.guard = guard.prepare(db, provider, facts, _session_of(obj))
        if facts.guard is None:  # a price bought once, and held: refunded (`checkout.once`)
            facts.guard = once.prepare(db, provider, facts, _session_of(obj))

    return read


def handlers(provider: StripeProvider, db: Database) -> dict[str, Handler]:
    """The inbox handlers of this room, by event type."""
    table = {
        **HANDLERS,
        "checkout.session.completed": (guarded(db), on_checkout_completed),
        "checkout.session.async_payment_succeeded": (guarded(db), on_checkout_completed),
    }
    return {kind: bound(provider, *pair) for kind, pair in table.items()}
