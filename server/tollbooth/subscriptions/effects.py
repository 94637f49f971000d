"""Subscription and invoice effects of the provider's events (DESIGN section 6).

Registered with the webhook inbox at assembly (`tollbooth.app`); each runs inside the
transaction that records the event and marks it processed. Every effect is guarded by its own
natural key, because the provider can send two distinct events for one change:

- one renewal per invoice: `billing_effects` key `invoice:{in_…}`; its credit grants carry
  request ids `invoice:{in_…}:{price}:{n}` (a checkout's `checkout:{cs_…}:{price}:{n}`);
- outbound notifications carry dedupe keys (`subscription.created:{sub}` and so on).

Order safety: a subscription's state is never taken from the event. The handler locks our row
first (inserting a placeholder when it is new), then re-fetches Stripe's current object and
writes that: whoever holds the lock fetches last, so the stored state is always the newest the
provider reported, whatever order events arrive in. `canceled` and `incomplete_expired` are
terminal: nothing ever moves a subscription out of them.

Events about objects this service did not create (a customer that is not one of our accounts)
change nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import amounts
from tollbooth.auth.caller import SERVICE
from tollbooth.credit import grants as credit_grants
from tollbooth.db.models import Price, Purchase, Subscription
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id
from tollbooth.notifications import outbox
from tollbooth.provider import repository as links
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions import repository
from tollbooth.webhooks.dispatch import Handler, claim_effect
from tollbooth.webhooks.dispatch import object_id as _id

log = logging.getLogger("tollbooth.fulfilment")

Effect = Callable[["Context", dict[str, Any]], None]


class Context:
    """One event being applied: the transaction, the provider, and what it changed."""

    def __init__(self, session: Session, provider: StripeProvider, event_id: str) -> None:
        self.session = session
        self.provider = provider
        self.event_id = event_id
        self.changes: list[str] = []

    def clock(self) -> dt.datetime:
        return utcnow()


def _ts(value: Any) -> dt.datetime | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return dt.datetime.fromtimestamp(int(value), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# -- subscriptions ----------------------------------------------------------------------------


def _first_item(sub: dict[str, Any]) -> dict[str, Any]:
    data = ((sub.get("items") or {}).get("data")) or []
    return data[0] if data and isinstance(data[0], dict) else {}


def sync_subscription(
    ctx: Context, stripe_subscription_id: str, customer_hint: str | None
) -> Subscription | None:
    """Bring our row in line with Stripe's current object; None when it is not ours."""
    session = ctx.session
    existing = repository.subscription_by_stripe_id(session, stripe_subscription_id, owner=None)
    if existing is None:
        if customer_hint:
            account = links.account_by_customer(session, customer_hint)
        else:  # the event did not say whose it is: ask the provider
            truth = ctx.provider.retrieve_subscription(stripe_subscription_id)
            customer = _id((truth or {}).get("customer"))
            account = links.account_by_customer(session, customer) if customer else None
        if account is None:
            return None  # not one of our customers: acknowledge, change nothing
        created = repository.ensure_subscription_row(
            session, account.id, stripe_subscription_id, "incomplete"
        )
    else:
        created = False
    row = repository.lock_subscription(session, stripe_subscription_id, owner=None)
    assert row is not None
    truth = ctx.provider.retrieve_subscription(stripe_subscription_id)
    if truth is None:
        log.warning("subscription %s is unknown to the provider", stripe_subscription_id)
        return row
    _write_subscription(ctx, row, truth, created)
    return row


def _write_subscription(
    ctx: Context, row: Subscription, truth: dict[str, Any], created: bool
) -> None:
    status = str(truth.get("status") or "incomplete")
    if row.state in repository.TERMINAL_STATES and status not in repository.TERMINAL_STATES:
        log.warning(
            "subscription %s is %s here; refusing to move it to %s",
            row.stripe_subscription_id,
            row.state,
            status,
        )
        return
    item = _first_item(truth)
    stripe_price = _id(item.get("price"))
    price = links.price_by_stripe_id(ctx.session, stripe_price) if stripe_price else None
    before = _snapshot(row)
    row.state = status
    row.stripe_price_id = stripe_price
    row.price_id = price.id if price else None
    row.lookup_key = price.lookup_key if price else None
    row.subscription_group = price.subscription_group if price else None
    row.stackable = price.stackable if price else False
    row.quantity = int(item.get("quantity") or 1)
    row.current_period_start = _ts(
        item.get("current_period_start", truth.get("current_period_start"))
    )
    row.current_period_end = _ts(item.get("current_period_end", truth.get("current_period_end")))
    row.cancel_at_period_end = bool(truth.get("cancel_at_period_end"))
    row.canceled_at = _ts(truth.get("canceled_at"))
    row.ended_at = _ts(truth.get("ended_at"))
    row.latest_invoice = _id(truth.get("latest_invoice"))
    row.provider_created_at = _ts(truth.get("created"))
    now = ctx.clock()
    row.synced_at = now
    after = _snapshot(row)
    if after == before and not created:
        return
    row.updated_at = now
    ctx.session.flush()
    payload = _subscription_payload(row)
    account = row.billing_account_id
    sub = row.stripe_subscription_id
    if created:
        outbox.enqueue(
            ctx.session, "subscription.created", account, payload, f"subscription.created:{sub}"
        )
        ctx.changes.append(f"subscription {sub} created: {status}")
    if status == "canceled" and before.get("state") != "canceled":
        outbox.enqueue(
            ctx.session, "subscription.canceled", account, payload, f"subscription.canceled:{sub}"
        )
        ctx.changes.append(f"subscription {sub} canceled")
    elif not created:
        outbox.enqueue(ctx.session, "subscription.updated", account, payload)
        changed = sorted(k for k in after if after[k] != before.get(k))
        ctx.changes.append(f"subscription {sub} updated: {', '.join(changed)}")


def _snapshot(row: Subscription) -> dict[str, Any]:
    return {
        "state": row.state,
        "stripe_price_id": row.stripe_price_id,
        "price_id": row.price_id,
        "quantity": row.quantity,
        "current_period_start": row.current_period_start,
        "current_period_end": row.current_period_end,
        "cancel_at_period_end": row.cancel_at_period_end,
        "canceled_at": row.canceled_at,
        "ended_at": row.ended_at,
    }


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at else None


def _subscription_payload(row: Subscription) -> dict[str, Any]:
    return {
        "subscription_id": row.id,
        "stripe_subscription_id": row.stripe_subscription_id,
        "price_id": row.price_id,
        "lookup_key": row.lookup_key,
        "state": row.state,
        "current_period_end": _iso(row.current_period_end),
        "cancel_at_period_end": row.cancel_at_period_end,
    }


def on_subscription(ctx: Context, obj: dict[str, Any]) -> None:
    sub_id = _id(obj.get("id"))
    if sub_id:
        sync_subscription(ctx, sub_id, _id(obj.get("customer")))


# -- grants -----------------------------------------------------------------------------------


def grant_for_price(
    ctx: Context,
    account_id: str,
    price: Price,
    quantity: int,
    *,
    when: str,
    request_prefix: str,
    reason: str,
) -> None:
    for n, spec in enumerate(price.credit_grants or []):
        if not spec.get(when):
            continue
        # Exact, or AMOUNT_INVALID past the storage cap (issue 14, finding 7): never rounded.
        amount = amounts.times(str(spec["amount"]), max(quantity, 1), f"credit_grants[{n}].amount")
        now = ctx.clock()
        expires = int(spec.get("expires_after_sec") or 0)
        request_id = f"{request_prefix}:{price.id}:{n}"
        grant = credit_grants.grant(
            ctx.session,
            SERVICE,
            account_id,
            credit_type=str(spec["credit_type"]),
            amount=format(amount, "f"),
            reason=reason,
            priority=int(spec.get("priority") or 0),
            expire_at=now + dt.timedelta(seconds=expires) if expires else None,
            request_id=request_id,
            metadata={"price_id": price.id, "event_id": ctx.event_id},
            clock=ctx.clock,
            for_purchase=True,
        )
        outbox.enqueue(
            ctx.session,
            "credits.granted",
            account_id,
            {
                "grant_id": grant.id,
                "credit_type": grant.credit_type,
                "amount": format(amount, "f"),
                "price_id": price.id,
                "request_id": request_id,
            },
            f"credits.granted:{request_id}",
        )
        ctx.changes.append(f"granted {format(amount, 'f')} {grant.credit_type} to {account_id}")


def record_purchase(
    ctx: Context,
    account_id: str,
    checkout_session_id: str,
    line: int,
    price: Price,
    quantity: int,
    now: dt.datetime,
) -> None:
    """A one-off price bought through a checkout (its fulfilment calls this)."""
    repository.add_purchase(
        ctx.session,
        Purchase(
            id=new_id("pur"),
            billing_account_id=account_id,
            checkout_session_id=checkout_session_id,
            line=line,
            price_id=price.id,
            stripe_price_id=price.stripe_price_id,
            lookup_key=price.lookup_key,
            quantity=quantity,
            amount_total=price.unit_amount * quantity,
            currency=price.currency,
            created_at=now,
        ),
    )


# -- invoices ---------------------------------------------------------------------------------


def _invoice_subscription(obj: dict[str, Any]) -> str | None:
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    return _id(details.get("subscription")) or _id(obj.get("subscription"))


def _line_price(line: dict[str, Any]) -> str | None:
    pricing = (line.get("pricing") or {}).get("price_details") or {}
    return _id(pricing.get("price")) or _id(line.get("price"))


def on_invoice_paid(ctx: Context, obj: dict[str, Any]) -> None:
    invoice_id = _id(obj.get("id"))
    sub_id = _invoice_subscription(obj)
    if not invoice_id or not sub_id:
        return
    row = sync_subscription(ctx, sub_id, _id(obj.get("customer")))
    if row is None:
        return
    account = row.billing_account_id
    outbox.enqueue(
        ctx.session,
        "invoice.paid",
        account,
        {
            "stripe_invoice_id": invoice_id,
            "subscription_id": row.id,
            "billing_reason": obj.get("billing_reason"),
            "amount_paid": obj.get("amount_paid"),
            "currency": obj.get("currency"),
        },
        f"invoice.paid:{invoice_id}",
    )
    if obj.get("billing_reason") != "subscription_cycle":
        return  # the first invoice is the purchase: checkout fulfilment grants for it
    if not claim_effect(ctx.session, f"invoice:{invoice_id}", ctx.event_id, account):
        return  # this invoice's renewal was applied already
    lines = ((obj.get("lines") or {}).get("data")) or []
    for n, line in enumerate(lines):
        stripe_price = _line_price(line) if isinstance(line, dict) else None
        price = links.price_by_stripe_id(ctx.session, stripe_price) if stripe_price else None
        if price is None:
            continue
        grant_for_price(
            ctx,
            account,
            price,
            int(line.get("quantity") or 1),
            when="on_renewal",
            request_prefix=f"invoice:{invoice_id}:{n}",
            reason=f"renewal of {price.lookup_key or price.id}",
        )
    ctx.changes.append(f"invoice {invoice_id} renewal applied")


def on_invoice_payment_failed(ctx: Context, obj: dict[str, Any]) -> None:
    invoice_id = _id(obj.get("id"))
    sub_id = _invoice_subscription(obj)
    if not invoice_id or not sub_id:
        return
    row = sync_subscription(ctx, sub_id, _id(obj.get("customer")))
    if row is None:
        return
    attempt = int(obj.get("attempt_count") or 0)
    outbox.enqueue(
        ctx.session,
        "invoice.payment_failed",
        row.billing_account_id,
        {
            "stripe_invoice_id": invoice_id,
            "subscription_id": row.id,
            "state": row.state,
            "attempt_count": attempt,
            "amount_due": obj.get("amount_due"),
            "currency": obj.get("currency"),
        },
        f"invoice.payment_failed:{invoice_id}:{attempt}",
    )


HANDLERS: dict[str, Effect] = {
    "customer.subscription.created": on_subscription,
    "customer.subscription.updated": on_subscription,
    "customer.subscription.deleted": on_subscription,
    "customer.subscription.paused": on_subscription,
    "customer.subscription.resumed": on_subscription,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_failed": on_invoice_payment_failed,
}


def bound(provider: StripeProvider, effect: Effect) -> Handler:
    """`effect` as an inbox handler: a Context per event, its change lines returned."""

    def handler(session: Session, event_id: str, obj: dict[str, Any]) -> list[str]:
        ctx = Context(session, provider, event_id)
        effect(ctx, obj)
        return ctx.changes

    return handler


def handlers(provider: StripeProvider) -> dict[str, Handler]:
    """The inbox handlers of this room, by event type."""
    return {event_type: bound(provider, effect) for event_type, effect in HANDLERS.items()}


def resync(provider: StripeProvider) -> Callable[[Session, str, str | None], list[str]]:
    """Re-read one subscription from the provider and write it (the reconcile command)."""

    def run(session: Session, stripe_subscription_id: str, customer: str | None) -> list[str]:
        ctx = Context(session, provider, "reconcile")
        sync_subscription(ctx, stripe_subscription_id, customer)
        session.flush()
        return ctx.changes

    return run
