"""Subscriptions, purchases and billing status as contract messages."""

from __future__ import annotations

from collections.abc import Sequence

from billing.v1 import catalog_pb2, checkout_pb2
from tollbooth.db.models import Purchase, Subscription
from tollbooth.db.subscription_items import SubscriptionItem
from tollbooth.rpc.convert import ts
from tollbooth.subscriptions.service import BillingStatusView

UNSPECIFIED = checkout_pb2.SUBSCRIPTION_STATE_UNSPECIFIED
STATE = {
    "incomplete": checkout_pb2.SUBSCRIPTION_STATE_INCOMPLETE,
    "trialing": checkout_pb2.SUBSCRIPTION_STATE_TRIALING,
    "active": checkout_pb2.SUBSCRIPTION_STATE_ACTIVE,
    "past_due": checkout_pb2.SUBSCRIPTION_STATE_PAST_DUE,
    "unpaid": checkout_pb2.SUBSCRIPTION_STATE_UNPAID,
    "canceled": checkout_pb2.SUBSCRIPTION_STATE_CANCELED,
    "incomplete_expired": checkout_pb2.SUBSCRIPTION_STATE_INCOMPLETE_EXPIRED,
    "paused": checkout_pb2.SUBSCRIPTION_STATE_PAUSED,
}


def item_out(item: SubscriptionItem) -> checkout_pb2.SubscriptionItem:
    return checkout_pb2.SubscriptionItem(
        price_id=item.price_id or "",
        stripe_price_id=item.stripe_price_id or "",
        lookup_key=item.lookup_key or "",
        subscription_group=item.subscription_group or "",
        quantity=item.quantity,
    )


def subscription_out(
    row: Subscription, items: Sequence[SubscriptionItem] = ()
) -> checkout_pb2.Subscription:
    return checkout_pb2.Subscription(
        subscription_id=row.id,
        stripe_subscription_id=row.stripe_subscription_id,
        price_id=row.price_id or "",
        lookup_key=row.lookup_key or "",
        subscription_group=row.subscription_group or "",
        quantity=row.quantity,
        state=STATE.get(row.state, UNSPECIFIED),
        current_period_start_time=(
            ts(row.current_period_start) if row.current_period_start else None
        ),
        current_period_end_time=ts(row.current_period_end) if row.current_period_end else None,
        cancel_at_period_end=row.cancel_at_period_end,
        cancel_time=ts(row.canceled_at) if row.canceled_at else None,
        create_time=ts(row.created_at),
        items=[item_out(i) for i in items],
        cancel_at_time=ts(row.cancel_at) if row.cancel_at else None,
    )


def purchase_out(row: Purchase) -> checkout_pb2.Purchase:
    return checkout_pb2.Purchase(
        purchase_id=row.id,
        price_id=row.price_id or "",
        lookup_key=row.lookup_key or "",
        quantity=row.quantity,
        amount_total=row.amount_total,
        currency=row.currency,
        checkout_session_id=row.checkout_session_id or "",
        payment_intent_id=row.payment_intent_id or "",
        create_time=ts(row.created_at),
        refund_time=ts(row.refunded_at) if row.refunded_at else None,
    )


def billing_status_out(view: BillingStatusView) -> checkout_pb2.BillingStatus:
    sub = view.subscription
    return checkout_pb2.BillingStatus(
        billing_account_id=view.billing_account_id,
        plan=view.plan,
        plan_price_id=view.plan_price_id,
        state=STATE.get(sub.state, UNSPECIFIED) if sub else UNSPECIFIED,
        current_period_end_time=(
            ts(sub.current_period_end) if sub and sub.current_period_end else None
        ),
        current_period_end=ts(sub.current_period_end) if sub and sub.current_period_end else None,
        cancel_at_period_end=bool(sub and sub.cancel_at_period_end),
        entitlements=[catalog_pb2.Entitlement(feature=f, value=v) for f, v in view.entitlements],
        status=sub.state if sub and sub.state else None,
        cancel_at_time=ts(sub.cancel_at) if sub and sub.cancel_at else None,
    )
