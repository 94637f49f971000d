"""Queries of `credit_ledger`: the listing, newest first, and one debit by id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.db.models import CreditLedgerEntry
from tollbooth.paging import after_clause


def list_ledger(
    session: Session,
    account_id: str,
    credit_type: str,
    *,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[CreditLedgerEntry]:
    """Newest first: effective time, then the balance's entry number, then the id.

    `after` is the key of the last entry of the previous page (the next page is older).
    """
    order = [CreditLedgerEntry.created_at, CreditLedgerEntry.seq, CreditLedgerEntry.id]
    stmt = select(CreditLedgerEntry).where(CreditLedgerEntry.billing_account_id == account_id)
    if credit_type:
        stmt = stmt.where(CreditLedgerEntry.credit_type == credit_type)
    if after is not None:
        stmt = stmt.where(after_clause(order, after, descending=True))
    return list(session.execute(stmt.order_by(*(c.desc() for c in order)).limit(limit)).scalars())


def debit_entry(session: Session, account_id: str, debit_id: str) -> CreditLedgerEntry | None:
    """The ledger entry of a debit of this account; another account's is None, like a missing
    one. The account's ledger index bounds the search to its own entries."""
    return session.execute(
        select(CreditLedgerEntry)
        .where(
            CreditLedgerEntry.billing_account_id == account_id,
            CreditLedgerEntry.debit_id == debit_id,
            CreditLedgerEntry.kind == "debit",
        )
        .limit(1)
    ).scalar_one_or_none()
