"""Every query of payment intents.

Queries of one intent take `owner`: the caller's account id, or None for every account (a
service caller, the provider's events); see `tollbooth.accounts.service.owner`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from tollbooth.db.models import BillingEffect
from tollbooth.db.payment_intents import PaymentIntent

# Statuses an intent never leaves; the others can still be paid, or canceled.
FINAL = ("succeeded", "canceled")
NOT_FINAL = (
    "pending",
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "processing",
)


def intent_by_id(
    session: Session, intent_id: str, *, owner: str | None, lock: bool = False
) -> PaymentIntent | None:
    stmt = select(PaymentIntent).where(PaymentIntent.id == intent_id)
    if owner is not None:
        stmt = stmt.where(PaymentIntent.billing_account_id == owner)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def intent_by_either_id(session: Session, ident: str, *, owner: str | None) -> PaymentIntent | None:
    """By our id (`pay_…`) or the provider's (`pi_…`)."""
    stmt = select(PaymentIntent).where(
        or_(PaymentIntent.id == ident, PaymentIntent.stripe_payment_intent_id == ident)
    )
    if owner is not None:
        stmt = stmt.where(PaymentIntent.billing_account_id == owner)
    return session.scalars(stmt).first()


def open_intent_for_price(
    session: Session, account_id: str, price_id: str, *, forgotten_before: dt.datetime
) -> PaymentIntent | None:
    """The account's oldest intent buying `price_id` that can still be paid: neither succeeded
    nor canceled. `pending` counts (its provider step is under way, or the sweeper's) unless
    it was recorded before `forgotten_before` (the sweeper leaves those alone for good)."""
    stmt = select(PaymentIntent).where(
        PaymentIntent.billing_account_id == account_id,
        PaymentIntent.price_id == price_id,
        PaymentIntent.status.not_in(("succeeded", "canceled")),
        or_(PaymentIntent.status != "pending", PaymentIntent.created_at >= forgotten_before),
    )
    return session.scalars(stmt.order_by(PaymentIntent.created_at, PaymentIntent.id)).first()


def stale_pending(session: Session, *, before: dt.datetime) -> list[PaymentIntent]:
    """Intents recorded before `before` whose provider step never finished, oldest first."""
    stmt = select(PaymentIntent).where(
        PaymentIntent.status == "pending", PaymentIntent.created_at < before
    )
    return list(session.scalars(stmt.order_by(PaymentIntent.created_at)))


def open_at_provider(session: Session, *, account_id: str | None) -> list[PaymentIntent]:
    """Intents the provider holds (its id recorded) that can still be paid, oldest first: of
    `account_id`, or (None) of every account whose customer DeleteCustomer deleted (its mark
    `customer.delete:{account}`, `accounts.repository.delete_mark`)."""
    stmt = select(PaymentIntent).where(
        PaymentIntent.status.not_in(FINAL), PaymentIntent.stripe_payment_intent_id.is_not(None)
    )
    if account_id is not None:
        stmt = stmt.where(PaymentIntent.billing_account_id == account_id)
    else:
        stmt = stmt.join(
            BillingEffect,
            BillingEffect.key == "customer.delete:" + PaymentIntent.billing_account_id,
        )
    return list(session.scalars(stmt.order_by(PaymentIntent.created_at, PaymentIntent.id)))


def add_intent(session: Session, row: PaymentIntent) -> None:
    session.add(row)
    session.flush()


def mark_intent(
    session: Session, intent_id: str, *, account_id: str, only_from: tuple[str, ...], **values: Any
) -> bool:
    """Set `values` on the intent if its status is one of `only_from` (compare and set)."""
    result = session.execute(
        update(PaymentIntent)
        .where(
            PaymentIntent.id == intent_id,
            PaymentIntent.billing_account_id == account_id,
            PaymentIntent.status.in_(only_from),
        )
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_pending(session: Session, intent_id: str, *, account_id: str) -> None:
    """Forget an intent the provider never created (it refused the request)."""
    session.execute(
        delete(PaymentIntent)
        .where(
            PaymentIntent.id == intent_id,
            PaymentIntent.billing_account_id == account_id,
            PaymentIntent.status == "pending",
            PaymentIntent.stripe_payment_intent_id.is_(None),
        )
        .execution_options(synchronize_session=False)
    )
