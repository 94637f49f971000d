"""Every query of checkout: sessions, subscriptions, purchases, effect guards, the outbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import (
    BillingAccount,
    BillingEffect,
    CheckoutSession,
    NotificationOutbox,
    Price,
    Product,
    Purchase,
    Subscription,
)
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id

# Subscription states in which the account holds the price (conflicts, hints, plan).
LIVE_STATES = ("active", "trialing", "past_due", "unpaid", "paused")
# States Stripe never leaves.
TERMINAL_STATES = ("canceled", "incomplete_expired")


# -- accounts ---------------------------------------------------------------------------------


def account_by_customer(session: Session, customer_id: str) -> BillingAccount | None:
    return session.scalars(
        select(BillingAccount).where(BillingAccount.stripe_customer_id == customer_id)
    ).first()


def link_customer(session: Session, account_id: str, customer_id: str) -> None:
    """Set the account's provider customer unless one is set already (first writer wins)."""
    session.execute(
        update(BillingAccount)
        .where(BillingAccount.id == account_id, BillingAccount.stripe_customer_id.is_(None))
        .values(stripe_customer_id=customer_id)
    )


def stripe_customer_of(session: Session, account_id: str) -> str | None:
    return session.scalar(
        select(BillingAccount.stripe_customer_id).where(BillingAccount.id == account_id)
    )


def billed_accounts(session: Session) -> list[BillingAccount]:
    return list(
        session.scalars(
            select(BillingAccount)
            .where(BillingAccount.stripe_customer_id.is_not(None))
            .order_by(BillingAccount.id)
        )
    )


# -- catalog links ----------------------------------------------------------------------------


def link_product(session: Session, product_id: str, stripe_product_id: str) -> None:
    session.execute(
        update(Product)
        .where(Product.id == product_id, Product.stripe_product_id.is_(None))
        .values(stripe_product_id=stripe_product_id)
    )


def link_price(session: Session, price_id: str, stripe_price_id: str) -> None:
    session.execute(
        update(Price)
        .where(Price.id == price_id, Price.stripe_price_id.is_(None))
        .values(stripe_price_id=stripe_price_id)
    )


def price_by_stripe_id(session: Session, stripe_price_id: str) -> Price | None:
    return session.scalars(
        select(Price)
        .where(Price.stripe_price_id == stripe_price_id)
        .order_by(Price.active.desc(), Price.seq.desc())
    ).first()


def prices_by_ids(session: Session, ids: list[str]) -> dict[str, Price]:
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Price).where(Price.id.in_(ids)))}


def active_price_by_lookup_key(session: Session, lookup_key: str) -> Price | None:
    return session.scalars(
        select(Price).where(Price.lookup_key == lookup_key, Price.active.is_(True))
    ).first()


def unsynced_active_prices(session: Session) -> list[Price]:
    return list(
        session.scalars(
            select(Price)
            .where(Price.active.is_(True), Price.stripe_price_id.is_(None))
            .order_by(Price.seq)
        )
    )


def synced_recurring_prices(session: Session) -> list[tuple[Price, Product]]:
    rows = session.execute(
        select(Price, Product)
        .join(Product, Product.id == Price.product_id)
        .where(
            Price.active.is_(True),
            Product.active.is_(True),
            Price.type == "recurring",
            Price.stripe_price_id.is_not(None),
            Product.stripe_product_id.is_not(None),
        )
        .order_by(Product.position, Product.seq, Price.position, Price.seq)
    )
    return [(price, product) for price, product in rows]


# -- checkout sessions ------------------------------------------------------------------------


def checkout_by_id(session: Session, checkout_id: str) -> CheckoutSession | None:
    return session.get(CheckoutSession, checkout_id)


def checkout_by_stripe_id(
    session: Session, stripe_id: str, *, lock: bool = False
) -> CheckoutSession | None:
    stmt = select(CheckoutSession).where(CheckoutSession.stripe_checkout_session_id == stripe_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


# -- subscriptions ----------------------------------------------------------------------------


def live_subscriptions(session: Session, account_id: str) -> list[Subscription]:
    return list(
        session.scalars(
            select(Subscription)
            .where(
                Subscription.billing_account_id == account_id,
                Subscription.state.in_(LIVE_STATES),
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


def lock_subscription(session: Session, stripe_subscription_id: str) -> Subscription | None:
    return session.scalars(
        select(Subscription)
        .where(Subscription.stripe_subscription_id == stripe_subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def subscription_by_stripe_id(session: Session, stripe_subscription_id: str) -> Subscription | None:
    return session.scalars(
        select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id)
    ).first()


def all_subscription_ids(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Subscription.stripe_subscription_id).order_by(Subscription.created_at)
        )
    )


def _newest_first(model: Any, account_id: str, after: tuple[dt.datetime, str] | None, limit: int):  # type: ignore[no-untyped-def]
    stmt = select(model).where(model.billing_account_id == account_id)
    if after is not None:
        at, ident = after
        stmt = stmt.where(
            or_(model.created_at < at, and_(model.created_at == at, model.id < ident))
        )
    return stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit)


def list_subscriptions(
    session: Session, account_id: str, after: tuple[dt.datetime, str] | None, limit: int
) -> list[Subscription]:
    return list(session.scalars(_newest_first(Subscription, account_id, after, limit)))


def list_purchases(
    session: Session, account_id: str, after: tuple[dt.datetime, str] | None, limit: int
) -> list[Purchase]:
    return list(session.scalars(_newest_first(Purchase, account_id, after, limit)))


def all_purchases(session: Session, account_id: str) -> list[Purchase]:
    return list(
        session.scalars(
            select(Purchase).where(Purchase.billing_account_id == account_id).limit(1000)
        )
    )


# -- guards and the outbox --------------------------------------------------------------------


def claim_effect(session: Session, key: str, event_id: str, account_id: str | None) -> bool:
    """Insert-first natural-key guard: True only for the one transaction that applies it."""
    stmt = (
        upsert_insert(session, BillingEffect)
        .values(key=key, event_id=event_id, billing_account_id=account_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(BillingEffect.key)
    )
    return session.execute(stmt).first() is not None


def notify(
    session: Session,
    type_: str,
    account_id: str | None,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
) -> None:
    """An outbound notification in this transaction; once per dedupe_key when one is given."""
    stmt = upsert_insert(session, NotificationOutbox).values(
        id=new_id("ntf"),
        type=type_,
        billing_account_id=account_id,
        dedupe_key=dedupe_key,
        payload=payload,
        created_at=utcnow(),
        attempts=0,
    )
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedupe_key"])
    session.execute(stmt)
