"""The fulfilment guard: one live plan per subscription group, whatever slipped through.

A checkout opened before a purchase and paid after it can bring a second subscription in a
group where the account already holds one. The rule: in a group, the subscription the
provider created first is kept, unless a later one was fulfilled (granted) already, which is
then kept instead. The other is canceled at the provider at once, its first invoice refunded,
nothing is granted for it, and a `checkout.conflict_canceled` notification records it.

The provider calls happen in the handler's read phase, outside any transaction (`prepare`);
the apply phase re-checks under the account's lock (`check`), so two fulfilments of one
account take turns, and one that finds a conflict its read phase did not see fails (it is
retried by the inbox, and that retry's read phase cancels and refunds).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.catalog import repository as catalog
from tollbooth.checkout import repository
from tollbooth.db import Database
from tollbooth.db.models import CheckoutSession, Subscription
from tollbooth.errors import DomainError, Kind
from tollbooth.provider.client import StripeProvider, refund_or_refusal
from tollbooth.provider.keys import idempotency_key
from tollbooth.subscriptions import repository as subscriptions
from tollbooth.subscriptions.effects import Facts
from tollbooth.subscriptions.service import held_groups, price_group
from tollbooth.webhooks.dispatch import object_id as _id

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Canceled:
    """What the guard did at the provider for one checkout's subscription."""

    subscription: str
    kept: str
    invoice: str | None
    refund: str | None


def _created(value: Any) -> dt.datetime:
    if type(value) is int and 0 <= value < 253_402_300_800:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return EPOCH


def kept_instead(
    session: Session, row: CheckoutSession, subscription_id: str, created: dt.datetime
) -> Subscription | None:
    """The live subscription of the account that this checkout's subscription must yield to."""
    prices = catalog.prices_by_ids(session, [i["price_id"] for i in row.items])
    groups = {price_group(p) for p in prices.values() if p.type == "recurring" and not p.stackable}
    if not groups:
        return None
    fulfilled = repository.fulfilled_subscription_ids(session, row.billing_account_id)
    live = subscriptions.live_subscriptions(session, row.billing_account_id)
    held = held_groups(session, live)
    for sub in live:
        if sub.stripe_subscription_id == subscription_id or not held[sub.id] & groups:
            continue
        older = (sub.provider_created_at or EPOCH, sub.stripe_subscription_id) < (
            created,
            subscription_id,
        )
        if older or sub.stripe_subscription_id in fulfilled:
            return sub
    return None


def prepare(
    db: Database, provider: StripeProvider, facts: Facts, stripe_session_id: str
) -> Canceled | None:
    """Read phase: cancel and refund this checkout's subscription if it must yield."""
    truth = facts.checkout_sessions[stripe_session_id]
    sub_id = _id(truth.get("subscription"))
    sub = facts.subscriptions.get(sub_id) if sub_id else None
    # A plan that charged nothing (`no_payment_required`) yields too: there is no payment to
    # refund (`refund_invoice` finds none), but its apply phase refuses it all the same.
    completed = truth.get("payment_status") in ("paid", "no_payment_required")
    if not sub_id or sub is None or not completed:
        return None
    with db.transaction(readonly=True) as session:
        row = repository.checkout_by_stripe_id(session, stripe_session_id, owner=None)
        if row is None or row.fulfilled_at is not None:
            return None
        kept = kept_instead(session, row, sub_id, _created(sub.get("created")))
        if kept is None:
            return None
        kept_id = kept.stripe_subscription_id
    provider.cancel_subscription(sub_id, idempotency=idempotency_key("guard-cancel", sub_id))
    # Everything it charged: the checkout's own first invoice and, when this is applied after
    # a renewal, the latest too (each refunded once, by its own idempotency key).
    latest = _id(sub.get("latest_invoice"))
    invoice = _id(truth.get("invoice")) or latest
    refunds: list[str | None] = []
    for each in dict.fromkeys(i for i in (invoice, latest) if i):
        key = idempotency_key("guard-refund", each)
        refunds.append(
            refund_or_refusal(partial(provider.refund_invoice, each, idempotency=key))[0]
        )
    refund = refunds[0] if refunds else None  # the first invoice's, as notifications name it
    facts.subscriptions.pop(sub_id)
    facts.read_subscription(provider, sub_id)  # canceled now
    return Canceled(sub_id, kept_id, invoice, refund)


def check(session: Session, row: CheckoutSession, facts: Facts, sub_id: str) -> None:
    """Apply phase, under the account's lock: a conflict the read phase did not see fails the
    attempt (nothing is granted); the retry's read phase cancels and refunds."""
    repository.lock_account(session, row.billing_account_id)
    sub = facts.subscriptions.get(sub_id) or {}
    if sub.get("status") in ("canceled", "incomplete_expired"):
        return
    kept = kept_instead(session, row, sub_id, _created(sub.get("created")))
    if kept is not None:
        raise DomainError(
            Kind.FAILED_PRECONDITION,
            "SUBSCRIPTION_GROUP_CONFLICT",
            f"subscription {sub_id} conflicts with {kept.stripe_subscription_id} in its group;"
            " the next attempt cancels and refunds it",
        )
