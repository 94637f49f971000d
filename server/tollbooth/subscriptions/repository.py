"""Every query of subscriptions and purchases.

Queries of one owned object take `owner`: the caller's account id, or None for every account
(a service caller, the provider's events, operators); see `tollbooth.accounts.service.owner`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Select,
    delete,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import (
    BillingEffect,
    CreditGrant,
    Price,
    Product,
    Purchase,
    Subscription,
)
from tollbooth.db.subscription_items import SubscriptionItem
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id
from tollbooth.paging import after_clause

# Subscription states in which the account holds the price (conflicts, hints, plan).
LIVE_STATES = ("active", "trialing", "past_due", "unpaid", "paused")
# Of those, the states whose prices grant their entitlements: `past_due` is Stripe's retry
# window; `unpaid` (the retries are over) and `paused` (a trial ended with no payment method)
# are held, to be fixed in the portal, but grant nothing (Stripe: revoke access).
GRANTING_STATES = ("active", "trialing", "past_due")
# States Stripe never leaves.
TERMINAL_STATES = ("canceled", "incomplete_expired")


# Session.info key: the accounts whose holdings this transaction changed (EVERY: any account's);
# `tollbooth.subscriptions.holdings` drops them from memory when the transaction commits.
CHANGED_ACCOUNTS = "tollbooth.holdings.changed"
EVERY = ""


def note_change(session: Session, account_id: str = EVERY) -> None:
    """This transaction changes `account_id`'s holdings (a statement the ORM does not see)."""
    session.info.setdefault(CHANGED_ACCOUNTS, set()).add(account_id)


def _owned(stmt: Select[Any], owner: str | None) -> Select[Any]:
    return stmt if owner is None else stmt.where(Subscription.billing_account_id == owner)


def ended(
    cancel_at_period_end: bool | None,
    period_end: dt.datetime | None,
    now: dt.datetime,
    cancel_at: dt.datetime | None = None,
) -> bool:
    """A subscription set to cancel at its period's end whose period has ended, or whose
    Stripe `cancel_at` (a cancellation the merchant scheduled for any date) has passed: the
    provider has canceled it, whether or not its `customer.subscription.deleted` has arrived
    (late or retried). It holds and grants nothing from that instant; one not set to cancel
    whose period has ended is renewing (its renewal not recorded yet) and is still held."""
    if cancel_at is not None and cancel_at <= now:
        return True
    return bool(cancel_at_period_end) and period_end is not None and period_end <= now


def live_subscriptions(
    session: Session, account_id: str, now: dt.datetime | None = None
) -> list[Subscription]:
    """The account's live subscriptions at `now` (default: the time of the call), newest
    first: a live state, and not `ended`."""
    at = now or utcnow()
    return list(
        session.scalars(
            select(Subscription)
            .where(
                Subscription.billing_account_id == account_id,
                Subscription.state.in_(LIVE_STATES),
                or_(
                    Subscription.cancel_at_period_end.is_(False),
                    Subscription.current_period_end.is_(None),
                    Subscription.current_period_end > at,
                ),
                or_(Subscription.cancel_at.is_(None), Subscription.cancel_at > at),
            )
            .order_by(Subscription.created_at.desc(), Subscription.id.desc())
        )
    )


def ensure_subscription_row(
    session: Session, account_id: str, stripe_subscription_id: str, state: str
) -> bool:
    """Insert a placeholder row for the subscription unless it exists; True if inserted.

    The row exists so that it can be locked before Stripe's object is fetched: whoever holds
    the lock fetches and writes, so the last write is always the latest fetch."""
    now = utcnow()
    note_change(session, account_id)
    stmt = (
        upsert_insert(session, Subscription)
        .values(
            id=new_id("sub"),
            billing_account_id=account_id,
            stripe_subscription_id=stripe_subscription_id,
            state=state,
            stackable=False,
            quantity=1,
            cancel_at_period_end=False,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["stripe_subscription_id"])
        .returning(Subscription.id)
    )
    return session.execute(stmt).first() is not None


def lock_subscription(
    session: Session, stripe_subscription_id: str, *, owner: str | None
) -> Subscription | None:
    stmt = select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id)
    return session.scalars(
        _owned(stmt, owner).with_for_update().execution_options(populate_existing=True)
    ).first()


def subscription_by_stripe_id(
    session: Session, stripe_subscription_id: str, *, owner: str | None
) -> Subscription | None:
    stmt = select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id)
    return session.scalars(_owned(stmt, owner)).first()


def replace_items(
    session: Session, subscription: Subscription, items: list[dict[str, Any]]
) -> None:
    """Rewrite a subscription's recurring items (dicts of SubscriptionItem's columns but the
    subscription's id and position), in the provider's order; the caller holds its row lock
    (it passes the row it locked, so the owner is the row's)."""
    note_change(session, subscription.billing_account_id)
    session.execute(
        delete(SubscriptionItem).where(SubscriptionItem.subscription_id == subscription.id)
    )
    if items:
        session.execute(
            insert(SubscriptionItem),
            [
                {**item, "subscription_id": subscription.id, "position": n}
                for n, item in enumerate(items)
            ],
        )


def items_of(session: Session, subscription_ids: list[str]) -> dict[str, list[SubscriptionItem]]:
    """The recurring items of each subscription, in the provider's order."""
    out: dict[str, list[SubscriptionItem]] = {ident: [] for ident in subscription_ids}
    if not subscription_ids:
        return out
    rows = session.scalars(
        select(SubscriptionItem)
        .where(SubscriptionItem.subscription_id.in_(subscription_ids))
        .order_by(SubscriptionItem.subscription_id, SubscriptionItem.position)
    )
    for row in rows:
        out[row.subscription_id].append(row)
    return out


def all_subscription_ids(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Subscription.stripe_subscription_id).order_by(Subscription.created_at)
        )
    )


def _newest_first(
    model: type[Subscription] | type[Purchase],
    account_id: str,
    after: tuple[Any, ...] | None,
    limit: int,
) -> Select[Any]:
    """One account's rows, newest first by (created_at, id); `after`: the previous page's last."""
    order = [model.created_at, model.id]
    stmt = select(model).where(model.billing_account_id == account_id)
    if after is not None:
        stmt = stmt.where(after_clause(order, after, descending=True))
    return stmt.order_by(*(c.desc() for c in order)).limit(limit)


def list_subscriptions(
    session: Session, account_id: str, *, after: tuple[Any, ...] | None, limit: int
) -> list[Subscription]:
    return list(session.scalars(_newest_first(Subscription, account_id, after, limit)))


def list_purchases(
    session: Session, account_id: str, *, after: tuple[Any, ...] | None, limit: int
) -> list[Purchase]:
    return list(session.scalars(_newest_first(Purchase, account_id, after, limit)))


def ever_billed(session: Session, account_id: str) -> bool:
    """Whether the account ever had something billed to manage: a subscription (in any
    state: its invoices stay to see) or a paid purchase (a purchase row is written only once
    paid). A customer made for a checkout left unpaid has neither."""
    subscribed = select(Subscription.id).where(Subscription.billing_account_id == account_id)
    paid = select(Purchase.id).where(Purchase.billing_account_id == account_id)
    return (
        session.execute(subscribed.limit(1)).first() is not None
        or session.execute(paid.limit(1)).first() is not None
    )


def add_purchase(session: Session, purchase: Purchase) -> None:
    session.add(purchase)


def held_purchased(
    session: Session, account_id: str, price_ids: Iterable[str], *, besides: str | None = None
) -> set[str]:
    """Of `price_ids`, those the account holds by a one-time purchase not refunded in full
    (as `holdings_rows` counts them), leaving out purchases made by checkout `besides`."""
    wanted = list(price_ids)
    if not wanted:
        return set()
    stmt = select(Purchase.price_id).where(
        Purchase.billing_account_id == account_id,
        Purchase.price_id.in_(wanted),
        Purchase.refunded_at.is_(None),
    )
    if besides is not None:
        stmt = stmt.where(Purchase.checkout_session_id.is_distinct_from(besides))
    return {str(p) for p in session.scalars(stmt)}


def holding_purchase(
    session: Session, account_id: str, price_id: str, *, besides_intent: str
) -> Purchase | None:
    """The oldest purchase by which the account holds one-time price `price_id` (not refunded
    in full), leaving out the one payment intent `besides_intent` made."""
    stmt = select(Purchase).where(
        Purchase.billing_account_id == account_id,
        Purchase.price_id == price_id,
        Purchase.refunded_at.is_(None),
        Purchase.payment_intent_id.is_distinct_from(besides_intent),
    )
    return session.scalars(stmt.order_by(Purchase.created_at, Purchase.id).limit(1)).first()


# -- what an account holds --------------------------------------------------------------------
#
# The one place that knows how held prices are stored: every recurring item
# (`subscription_items.price_id`) of a live subscription, and `purchases.price_id` of a paid
# one-time line not refunded since. Entitlements, billing status and purchase hints read
# holdings only through `holdings_rows` (kept per process by `tollbooth.subscriptions.holdings`).

HOLDING_SUBSCRIPTION = "subscription"
HOLDING_PURCHASE = "purchase"


@dataclass(frozen=True)
class Holding:
    price_id: str
    quantity: int
    source: str  # HOLDING_SUBSCRIPTION | HOLDING_PURCHASE
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    created_at: dt.datetime
    state: str = "active"  # the subscription's (a purchase: unused)
    cancel_at_period_end: bool = False
    cancel_at: dt.datetime | None = None

    def held_at(self, now: dt.datetime) -> bool:
        """Still held at `now`: a purchase (until refunded, which removes it), or a
        subscription not `ended`."""
        return self.source != HOLDING_SUBSCRIPTION or not ended(
            self.cancel_at_period_end, self.period_end, now, self.cancel_at
        )

    def grants_at(self, now: dt.datetime) -> bool:
        """Its price's entitlements are granted at `now`: held, and a subscription's state is
        one of `GRANTING_STATES`."""
        if self.source != HOLDING_SUBSCRIPTION:
            return True
        return self.state in GRANTING_STATES and self.held_at(now)


def holdings_rows(session: Session, account_id: str) -> list[Any]:
    """Everything `tollbooth.subscriptions.holdings` keeps of one account, in one round trip:
    one row per (live subscription, item) (a subscription without items: one row, item columns
    NULL) and per one-time purchase of a catalog price, each with its price's and product's
    entitlements (NULL when the price is not in the catalog). Columns: source, sub_id, state,
    sub_stackable, lookup_key, sub_price_id, stripe_price_id, period_start, period_end,
    cancel_at_period_end, cancel_at, created_at, position, price_id, quantity,
    subscription_group, item_stackable, price_entitlements, product_entitlements."""
    subs = (
        select(
            literal(HOLDING_SUBSCRIPTION).label("source"),
            Subscription.id.label("sub_id"),
            Subscription.state.label("state"),
            Subscription.stackable.label("sub_stackable"),
            Subscription.lookup_key.label("lookup_key"),
            Subscription.price_id.label("sub_price_id"),
            Subscription.stripe_price_id.label("stripe_price_id"),
            Subscription.current_period_start.label("period_start"),
            Subscription.current_period_end.label("period_end"),
            Subscription.cancel_at_period_end.label("cancel_at_period_end"),
            Subscription.cancel_at.label("cancel_at"),
            Subscription.created_at.label("created_at"),
            SubscriptionItem.position.label("position"),
            SubscriptionItem.price_id.label("price_id"),
            SubscriptionItem.quantity.label("quantity"),
            SubscriptionItem.subscription_group.label("subscription_group"),
            SubscriptionItem.stackable.label("item_stackable"),
        )
        .outerjoin(SubscriptionItem, SubscriptionItem.subscription_id == Subscription.id)
        .where(
            Subscription.billing_account_id == account_id,
            Subscription.state.in_(LIVE_STATES),
        )
    )
    bought = select(
        literal(HOLDING_PURCHASE),
        Purchase.id,
        null(),
        null(),
        null(),
        null(),
        null(),
        null(),
        null(),
        null(),
        null(),
        Purchase.created_at,
        null(),
        Purchase.price_id,
        Purchase.quantity,
        null(),
        null(),
    ).where(
        Purchase.billing_account_id == account_id,
        Purchase.price_id.is_not(None),
        Purchase.refunded_at.is_(None),
    )
    held = union_all(subs, bought).subquery("held")
    stmt = (
        select(held, Price.entitlements, Product.entitlements)
        .select_from(held)
        .outerjoin(Price, Price.id == held.c.price_id)
        .outerjoin(Product, Product.id == Price.product_id)
    )
    return list(session.execute(stmt).all())


def refund_purchases(
    session: Session, account_id: str, payment_intent: str, now: dt.datetime
) -> list[Purchase]:
    """Mark the account's purchases that one payment paid as refunded (no longer held); the
    ones this call marked."""
    rows = list(
        session.scalars(
            select(Purchase)
            .where(
                Purchase.billing_account_id == account_id,
                Purchase.stripe_payment_intent_id == payment_intent,
                Purchase.refunded_at.is_(None),
            )
            .order_by(Purchase.created_at, Purchase.id)
        )
    )
    for row in rows:
        row.refunded_at = now
    session.flush()
    return rows


def _level_prefix(row: Subscription, period: int, kind: str) -> str:
    digest = hashlib.sha256(f"{row.stripe_subscription_id}\x1f{period}\x1f{kind}".encode())
    return f"level:{digest.hexdigest()[:40]}:"


def with_upgrades_reached(
    session: Session, row: Subscription, period: int, old: dict[str, Decimal], kinds: Iterable[str]
) -> dict[str, Decimal]:
    """`old` (what the previous plan gives per period, by credit type), raised to the highest
    level the subscription held in the billing period starting at `period` (`note_levels`), so
    flipping back and forth (1 -> 3 -> 1 -> 2, or 3 -> 1 -> 3) grants nothing twice."""
    out = dict(old)
    for kind in set(kinds) | set(old):
        prefix = _level_prefix(row, period, kind)
        keys = session.scalars(
            select(BillingEffect.key).where(
                BillingEffect.billing_account_id == row.billing_account_id,
                BillingEffect.key.startswith(prefix, autoescape=True),
            )
        )
        for key in keys:
            level = Decimal(key[len(prefix) :])
            out[kind] = max(out.get(kind, Decimal(0)), level)
    return out


def note_levels(
    session: Session, row: Subscription, period: int, levels: dict[str, Decimal], event: str
) -> None:
    """Record, per credit type, a level the subscription held in this billing period (what it
    had before a change, and what the change brought): later changes start from the highest."""
    for kind, level in levels.items():
        if level > 0:
            key = _level_prefix(row, period, kind) + format(level, "f")
            session.execute(
                upsert_insert(session, BillingEffect)
                .values(
                    key=key,
                    event_id=event,
                    billing_account_id=row.billing_account_id,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )


def effect_claimed_at(session: Session, account_id: str, key: str) -> dt.datetime | None:
    """When a `billing_effects` guard of the account was claimed (a mark, read only); None
    when it was not."""
    return session.scalar(
        select(BillingEffect.created_at).where(
            BillingEffect.key == key, BillingEffect.billing_account_id == account_id
        )
    )


def grants_bought_by(session: Session, account_id: str, payment_intent: str) -> list[CreditGrant]:
    """The account's grants with something left that one payment bought (their metadata says
    which PaymentIntent paid for them)."""
    rows = session.scalars(
        select(CreditGrant)
        .where(
            CreditGrant.billing_account_id == account_id,
            CreditGrant.state.in_(("active", "depleted")),
        )
        .order_by(CreditGrant.created_at, CreditGrant.id)
    )
    return [g for g in rows if (g.attributes or {}).get("payment_intent") == payment_intent]
