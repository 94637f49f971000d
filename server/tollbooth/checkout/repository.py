"""Every query of checkout sessions.

Queries of one session take `owner`: the caller's account id, or None for every account (a
service caller, the provider's events); see `tollbooth.accounts.service.owner`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.db.models import BillingAccount, CheckoutSession


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
