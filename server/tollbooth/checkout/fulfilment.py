"""Checkout-session effects of the provider's events (DESIGN section 6).

Registered with the webhook inbox at assembly (`tollbooth.app`); each runs inside the
transaction that records the event. One fulfilment per checkout session, guarded by the
`billing_effects` key `checkout:{cs_…}`: the purchases, subscription and credit grants it
brings are written by the subscriptions room (`tollbooth.subscriptions.effects`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tollbooth.catalog import repository as catalog
from tollbooth.checkout import repository
from tollbooth.db.models import CheckoutSession
from tollbooth.notifications import outbox
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions.effects import (
    Context,
    Effect,
    bound,
    grant_for_price,
    record_purchase,
    sync_subscription,
)
from tollbooth.webhooks.dispatch import Handler, claim_effect
from tollbooth.webhooks.dispatch import object_id as _id


def on_checkout_completed(ctx: Context, obj: dict[str, Any]) -> None:
    stripe_id = _id(obj.get("id"))
    if not stripe_id:
        return
    row = repository.checkout_by_stripe_id(ctx.session, stripe_id, owner=None, lock=True)
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
    if not claim_effect(ctx.session, f"checkout:{stripe_id}", ctx.event_id, row.billing_account_id):
        return  # fulfilled already, by this event or a twin
    _fulfil(ctx, row, obj, now)


def _fulfil(ctx: Context, row: CheckoutSession, obj: dict[str, Any], now: dt.datetime) -> None:
    account = row.billing_account_id
    row.fulfilled_at = now
    sub_id = _id(obj.get("subscription"))
    if sub_id:
        row.stripe_subscription_id = sub_id
        sync_subscription(ctx, sub_id, _id(obj.get("customer")))
    prices = catalog.prices_by_ids(ctx.session, [i["price_id"] for i in row.items])
    for line, item in enumerate(row.items):
        price = prices.get(item["price_id"])
        if price is None:
            continue
        quantity = int(item.get("quantity") or 1)
        if price.type != "recurring":
            record_purchase(ctx, account, row.id, line, price, quantity, now)
        grant_for_price(
            ctx,
            account,
            price,
            quantity,
            when="on_purchase",
            request_prefix=f"checkout:{row.stripe_checkout_session_id}",
            reason=f"purchase of {price.lookup_key or price.id}",
        )
    ctx.session.flush()
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
        },
        f"checkout.completed:{row.stripe_checkout_session_id}",
    )
    ctx.changes.append(f"checkout {row.id} fulfilled")


def on_checkout_expired(ctx: Context, obj: dict[str, Any]) -> None:
    stripe_id = _id(obj.get("id"))
    row = (
        repository.checkout_by_stripe_id(ctx.session, stripe_id, owner=None, lock=True)
        if stripe_id
        else None
    )
    if row is not None and row.status == "open":
        row.status = "expired"
        row.url = None
        row.updated_at = ctx.clock()
        ctx.changes.append(f"checkout {row.id} expired")


HANDLERS: dict[str, Effect] = {
    "checkout.session.completed": on_checkout_completed,
    "checkout.session.async_payment_succeeded": on_checkout_completed,
    "checkout.session.expired": on_checkout_expired,
}


def handlers(provider: StripeProvider) -> dict[str, Handler]:
    """The inbox handlers of this room, by event type."""
    return {event_type: bound(provider, effect) for event_type, effect in HANDLERS.items()}
