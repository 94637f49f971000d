"""Every query of checkout sessions.

Queries of one session take `owner`: the caller's account id, or None for every account (a
service caller, the provider's events); see `tollbooth.accounts.service.owner`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import BillingAccount, CheckoutSession, CheckoutSlot
from tollbooth.db.types import utcnow


def checkout_by_id(
    session: Session, checkout_id: str, *, owner: str | None
) -> CheckoutSession | None:
    stmt = select(CheckoutSession).where(CheckoutSession.id == checkout_id)
    if owner is not None:
        stmt = stmt.where(CheckoutSession.billing_account_id == owner)
    return session.scalars(stmt).first()


def checkout_by_stripe_id(
    session: Session, stripe_id: str, *, owner: str | None, lock: bool = False
) -> CheckoutSession | None:
    stmt = select(CheckoutSession).where(CheckoutSession.stripe_checkout_session_id == stripe_id)
    if owner is not None:
        stmt = stmt.where(CheckoutSession.billing_account_id == owner)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def add_checkout(session: Session, row: CheckoutSession) -> None:
    session.add(row)
    session.flush()


def claim_slot(session: Session, account_id: str, group: str, checkout_id: str) -> str:
    """Take the (account, group) slot for `checkout_id` unless it is held; the holder's id.

    INSERT ... ON CONFLICT DO NOTHING, never read-then-insert: on PostgreSQL a concurrent claim
    waits on the uncommitted row and then sees the committed holder."""
    inserted = session.execute(
        upsert_insert(session, CheckoutSlot)
        .values(
            billing_account_id=account_id,
            subscription_group=group,
            checkout_session_id=checkout_id,
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["billing_account_id", "subscription_group"])
        .returning(CheckoutSlot.checkout_session_id)
    ).first()
    if inserted is not None:
        return checkout_id
    return str(
        session.scalars(
            select(CheckoutSlot.checkout_session_id).where(
                CheckoutSlot.billing_account_id == account_id,
                CheckoutSlot.subscription_group == group,
            )
        ).one()
    )


def hand_over_slot(
    session: Session, account_id: str, group: str, holder: str, checkout_id: str
) -> bool:
    """Give the slot to `checkout_id` if `holder` still has it (compare and set)."""
    result = session.execute(
        update(CheckoutSlot)
        .where(
            CheckoutSlot.billing_account_id == account_id,
            CheckoutSlot.subscription_group == group,
            CheckoutSlot.checkout_session_id == holder,
        )
        .values(checkout_session_id=checkout_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def one_plan_per_key(session: Session, scope: str, key: str) -> None:
    """Plans of one request_id (`key`, in the caller's `scope`) take turns, until their
    transactions end (PostgreSQL; SQLite serialises writers anyway): the second sees what the
    first committed for the key (its intent, or its claim of the key when it was answered an
    open checkout)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"checkout-plan\x1f{scope}\x1f{key}"},
        )


def take_slot(
    session: Session,
    account_id: str,
    group: str,
    checkout_id: str,
    alive: Callable[[CheckoutSession | None], bool],
    attempts: int,
) -> tuple[bool, CheckoutSession | None]:
    """Claim the (account, group) slot for `checkout_id`, or take it over from a holder that is
    not `alive`: (True, None) once it is ours, (False, holder) while a live one holds it,
    (False, None) when other checkouts took it `attempts` times over.

    Two requests can read the same dead holder; the second's compare and set then finds the
    slot moved on (to the first, whose transaction it waited for) and reads the slot afresh:
    going on as if the slot were its own left two payable checkouts of one group."""
    for _ in range(attempts):
        holder_id = claim_slot(session, account_id, group, checkout_id)
        if holder_id == checkout_id:
            return True, None
        holder = checkout_by_id(session, holder_id, owner=account_id)
        if alive(holder):
            return False, holder
        if hand_over_slot(session, account_id, group, holder_id, checkout_id):
            return True, None
    return False, None


def mark_checkout(
    session: Session,
    checkout_id: str,
    *,
    account_id: str,
    only_from: tuple[str, ...],
    **values: object,
) -> bool:
    """Update a checkout row if its status is still one of `only_from` (a webhook may have
    moved it on meanwhile); whether it was updated."""
    result = session.execute(
        update(CheckoutSession)
        .where(
            CheckoutSession.id == checkout_id,
            CheckoutSession.billing_account_id == account_id,
            CheckoutSession.status.in_(only_from),
        )
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_pending(session: Session, checkout_id: str, *, account_id: str) -> None:
    session.execute(
        delete(CheckoutSession)
        .where(
            CheckoutSession.id == checkout_id,
            CheckoutSession.billing_account_id == account_id,
            CheckoutSession.status == "pending",
        )
        .execution_options(synchronize_session=False)
    )


def stale_pending(
    session: Session, *, before: dt.datetime, owner: str | None
) -> list[CheckoutSession]:
    """Intents recorded before `before` whose provider step never finished."""
    stmt = select(CheckoutSession).where(
        CheckoutSession.status == "pending", CheckoutSession.created_at < before
    )
    if owner is not None:
        stmt = stmt.where(CheckoutSession.billing_account_id == owner)
    return list(session.scalars(stmt.order_by(CheckoutSession.created_at)))


# -- the fulfilment guard (tollbooth.checkout.guard) -------------------------------------------


def lock_account(session: Session, account_id: str) -> None:
    """Fulfilments of one account take turns here (the group check, then the grants)."""
    session.execute(
        select(BillingAccount.id).where(BillingAccount.id == account_id).with_for_update()
    )


def fulfilled_subscription_ids(session: Session, account_id: str) -> set[str]:
    """Subscriptions that a fulfilled checkout of the account brought (and granted for)."""
    return {
        str(sub)
        for sub in session.scalars(
            select(CheckoutSession.stripe_subscription_id).where(
                CheckoutSession.billing_account_id == account_id,
                CheckoutSession.fulfilled_at.is_not(None),
                CheckoutSession.stripe_subscription_id.is_not(None),
            )
        )
    }
