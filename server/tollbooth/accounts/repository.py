"""Every query on billing accounts."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import BillingAccount
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id


def insert_if_absent(
    session: Session, principal_id: str, email: str | None, name: str | None
) -> bool:
    """Insert the mapping unless the principal has one. True when this call created it."""
    stmt = (
        upsert_insert(session, BillingAccount)
        .values(
            id=new_id("acct"),
            principal_id=principal_id,
            email=email or None,
            name=name or None,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["principal_id"])
        .returning(BillingAccount.id)
    )
    return session.execute(stmt).first() is not None


def by_principal(session: Session, principal_id: str) -> BillingAccount | None:
    return session.scalars(
        select(BillingAccount).where(BillingAccount.principal_id == principal_id)
    ).first()


def by_id(session: Session, account_id: str) -> BillingAccount | None:
    return session.get(BillingAccount, account_id)


def search(session: Session, text: str, limit: int) -> list[BillingAccount]:
    """Accounts whose id or principal id (alias) is `text`, or whose email contains it
    (case-insensitive), newest first; every account when `text` is empty (the console)."""
    stmt = select(BillingAccount)
    if text:
        pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(
            or_(
                BillingAccount.id == text,
                BillingAccount.principal_id == text,
                func.lower(BillingAccount.email).like(pattern + "%", escape="\\"),
            )
        )
    order = (BillingAccount.created_at.desc(), BillingAccount.id.desc())
    return list(session.scalars(stmt.order_by(*order).limit(limit)))
