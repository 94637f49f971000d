"""Webhook finalisation (DESIGN section 6): what each provider event changes.

`apply_event` runs inside the transaction that records the event in the inbox and marks it
processed, so the event id and its effects commit together or not at all. Every effect is
also guarded by its own natural key, because the provider can send two distinct events for
one change:

- one fulfilment per checkout session: `billing_effects` key `checkout:{cs_…}`;
- one renewal per invoice: key `invoice:{in_…}`; its credit grants carry request ids
  `invoice:{in_…}:{price}:{n}` (and a checkout's `checkout:{cs_…}:{price}:{n}`);
- outbound notifications carry dedupe keys (`subscription.created:{sub}` and so on).

Order safety: a subscription's state is never taken from the event. The handler locks our row
first (inserting a placeholder when it is new), then re-fetches Stripe's current object and
writes that: whoever holds the lock fetches last, so the stored state is always the newest the
provider reported, whatever order events arrive in. `canceled` and `incomplete_expired` are
terminal: nothing ever moves a subscription out of them.

Events of types not listed in HANDLERS, and events about objects this service did not create
(a customer that is not one of our accounts), are stored and acknowledged without effect.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.auth.caller import SERVICE
from tollbooth.checkout import repository
from tollbooth.checkout.provider import StripeProvider
from tollbooth.credit import grants as credit_grants
from tollbooth.db.models import CheckoutSession, Price, Purchase, Subscription
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id

log = logging.getLogger("tollbooth.fulfilment")

Handler = Callable[["Context", dict[str, Any]], None]


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


def _id(value: Any) -> str | None:
    """An object reference: a plain id, or an expanded object's id."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
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
    existing = repository.subscription_by_stripe_id(session, stripe_subscription_id)
    if existing is None:
        if customer_hint:
            account = repository.account_by_customer(session, customer_hint)
        else:  # the event did not say whose it is: ask the provider
            truth = ctx.provider.retrieve_subscription(stripe_subscription_id)
            customer = _id((truth or {}).get("customer"))
            account = repository.account_by_customer(session, customer) if customer else None
        if account is None:
            return None  # not one of our customers: acknowledge, change nothing
        created = repository.ensure_subscription_row(
            session, account.id, stripe_subscription_id, "incomplete"
        )
    else:
        created = False
    row = repository.lock_subscription(session, stripe_subscription_id)
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
    price = repository.price_by_stripe_id(ctx.session, stripe_price) if stripe_price else None
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
        repository.notify(
            ctx.session, "subscription.created", account, payload, f"subscription.created:{sub}"
        )
        ctx.changes.append(f"subscription {sub} created: {status}")
    if status == "canceled" and before.get("state") != "canceled":
        repository.notify(
            ctx.session, "subscription.canceled", account, payload, f"subscription.canceled:{sub}"
        )
        ctx.changes.append(f"subscription {sub} canceled")
    elif not created:
        repository.notify(ctx.session, "subscription.updated", account, payload)
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


def _grant(
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
        amount = Decimal(str(spec["amount"])) * max(quantity, 1)
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
        )
        repository.notify(
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


# -- checkout ---------------------------------------------------------------------------------


def on_checkout_completed(ctx: Context, obj: dict[str, Any]) -> None:
    stripe_id = _id(obj.get("id"))
    if not stripe_id:
        return
    row = repository.checkout_by_stripe_id(ctx.session, stripe_id, lock=True)
    if row is None:
        return  # a checkout this service did not create
    now = ctx.clock()
    if obj.get("status") in ("complete", "expired") and row.status != obj["status"]:
        row.status = str(obj["status"])
        row.url = None
    payment_status = str(obj.get("payment_status") or row.payment_status)
    row.payment_status = payment_status
    row.updated_at = now
    if obj.get("status") != "complete" or payment_status not in ("paid", "no_payment_required"):
        return  # not paid yet (an async method): checkout.session.async_payment_succeeded will
    if not repository.claim_effect(
        ctx.session, f"checkout:{stripe_id}", ctx.event_id, row.billing_account_id
    ):
        return  # fulfilled already, by this event or a twin
    _fulfil(ctx, row, obj, now)


def _fulfil(ctx: Context, row: CheckoutSession, obj: dict[str, Any], now: dt.datetime) -> None:
    account = row.billing_account_id
    row.fulfilled_at = now
    sub_id = _id(obj.get("subscription"))
    if sub_id:
        row.stripe_subscription_id = sub_id
        sync_subscription(ctx, sub_id, _id(obj.get("customer")))
    prices = repository.prices_by_ids(ctx.session, [i["price_id"] for i in row.items])
    for line, item in enumerate(row.items):
        price = prices.get(item["price_id"])
        if price is None:
            continue
        quantity = int(item.get("quantity") or 1)
        if price.type != "recurring":
            ctx.session.add(
                Purchase(
                    id=new_id("pur"),
                    billing_account_id=account,
                    checkout_session_id=row.id,
                    line=line,
                    price_id=price.id,
                    stripe_price_id=price.stripe_price_id,
                    lookup_key=price.lookup_key,
                    quantity=quantity,
                    amount_total=price.unit_amount * quantity,
                    currency=price.currency,
                    created_at=now,
                )
            )
        _grant(
            ctx,
            account,
            price,
            quantity,
            when="on_purchase",
            request_prefix=f"checkout:{row.stripe_checkout_session_id}",
            reason=f"purchase of {price.lookup_key or price.id}",
        )
    ctx.session.flush()
    repository.notify(
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
        },
        f"checkout.completed:{row.stripe_checkout_session_id}",
    )
    ctx.changes.append(f"checkout {row.id} fulfilled")


def on_checkout_expired(ctx: Context, obj: dict[str, Any]) -> None:
    stripe_id = _id(obj.get("id"))
    row = repository.checkout_by_stripe_id(ctx.session, stripe_id, lock=True) if stripe_id else None
    if row is not None and row.status == "open":
        row.status = "expired"
        row.url = None
        row.updated_at = ctx.clock()
        ctx.changes.append(f"checkout {row.id} expired")


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
    repository.notify(
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
    if not repository.claim_effect(ctx.session, f"invoice:{invoice_id}", ctx.event_id, account):
        return  # this invoice's renewal was applied already
    lines = ((obj.get("lines") or {}).get("data")) or []
    for n, line in enumerate(lines):
        stripe_price = _line_price(line) if isinstance(line, dict) else None
        price = repository.price_by_stripe_id(ctx.session, stripe_price) if stripe_price else None
        if price is None:
            continue
        _grant(
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
    repository.notify(
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


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_checkout_completed,
    "checkout.session.async_payment_succeeded": on_checkout_completed,
    "checkout.session.expired": on_checkout_expired,
    "customer.subscription.created": on_subscription,
    "customer.subscription.updated": on_subscription,
    "customer.subscription.deleted": on_subscription,
    "customer.subscription.paused": on_subscription,
    "customer.subscription.resumed": on_subscription,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_failed": on_invoice_payment_failed,
}


def apply_event(
    session: Session, provider: StripeProvider, event: dict[str, Any], event_id: str
) -> list[str]:
    """Apply one event's effects in `session`; returns a line per change (for operators)."""
    handler = HANDLERS.get(str(event.get("type")))
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if handler is None or not isinstance(obj, dict):
        return []
    ctx = Context(session, provider, event_id)
    handler(ctx, obj)
    session.flush()
    return ctx.changes
