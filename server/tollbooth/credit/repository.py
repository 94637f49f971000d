"""Every query of the credit domain."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, text, tuple_
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import (
    CreditBalance,
    CreditGrant,
    CreditLedgerEntry,
    CreditReservation,
)
from tollbooth.db.types import UTCDateTime


def ensure_balance(session: Session, account_id: str, credit_type: str, now: dt.datetime) -> None:
    """Create the balance row if it is missing (conflict-proof on both backends)."""
    session.execute(
        upsert_insert(session, CreditBalance)
        .values(
            billing_account_id=account_id,
            credit_type=credit_type,
            balance=Decimal(0),
            reserved=Decimal(0),
            seq=0,
            next_event_at=None,
            depleted=False,
            depletions=0,
            updated_at=now,
            overage=Decimal(0),
        )
        .on_conflict_do_nothing(index_elements=["billing_account_id", "credit_type"])
    )


def ensure_balances(session: Session, keys: list[tuple[str, str]], now: dt.datetime) -> None:
    """Create the missing balance rows of (account, credit type) keys, in key order.

    Every writer of several balances creates them in the same order before it locks any,
    so two of them never wait for each other's new rows in opposite orders.
    """
    if not keys:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_ENSURE, {**_arrays(keys), "now": now})
        return
    session.execute(
        _ENSURE_ONE,
        [{"k_account": a, "k_type": t, "v_now": now} for a, t in sorted(keys)],
    )


# One statement, compiled once: the new rows are zero balances.
_PG_ENSURE = text(
    """
INSERT INTO credit_balances (billing_account_id, credit_type, balance, reserved, seq,
  next_event_at, depleted, depletions, updated_at, overage)
SELECT k.a, k.t, 0, 0, 0, NULL, false, 0, :now, 0
FROM unnest(CAST(:accounts AS varchar[]), CAST(:types AS varchar[])) AS k(a, t)
ORDER BY k.a, k.t
ON CONFLICT (billing_account_id, credit_type) DO NOTHING
"""
).bindparams(bindparam("now", type_=UTCDateTime()))
_ENSURE_ONE = text(
    "INSERT INTO credit_balances (billing_account_id, credit_type, balance, reserved, seq,"
    " next_event_at, depleted, depletions, updated_at, overage)"
    " VALUES (:k_account, :k_type, '0', '0', 0, NULL, 0, 0, :v_now, '0')"
    " ON CONFLICT (billing_account_id, credit_type) DO NOTHING"
).bindparams(bindparam("v_now", type_=UTCDateTime()))


_B = CreditBalance.__table__
_G = CreditGrant.__table__


# PostgreSQL: the keys as two arrays joined on the primary key (index lookups, whatever the
# number of balances); rows locked in key order.
_PG_LOCK_BALANCES = text(
    "SELECT b.billing_account_id, b.credit_type, b.balance, b.seq, b.next_event_at,"
    " b.depleted, b.depletions, b.updated_at, b.overage"
    " FROM credit_balances AS b"
    " JOIN unnest(CAST(:accounts AS varchar[]), CAST(:types AS varchar[])) AS k(a, t)"
    " ON b.billing_account_id = k.a AND b.credit_type = k.t"
    " ORDER BY b.billing_account_id, b.credit_type FOR UPDATE OF b"
).columns(
    _B.c.billing_account_id,
    _B.c.credit_type,
    _B.c.balance,
    _B.c.seq,
    _B.c.next_event_at,
    _B.c.depleted,
    _B.c.depletions,
    _B.c.updated_at,
    _B.c.overage,
)


def _arrays(keys: list[tuple[str, str]]) -> dict[str, list[str]]:
    accounts, types = zip(*sorted(keys), strict=True)
    return {"accounts": list(accounts), "types": list(types)}


def lock_balances(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """Several balance rows, locked in key order until the transaction ends.

    PostgreSQL locks the rows of `SELECT ... ORDER BY ... FOR UPDATE` in the sorted order, so
    every writer of several balances takes their locks in one order: no deadlock among them.
    """
    if not keys:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_LOCK_BALANCES, _arrays(keys)).all()
    else:
        rows = session.execute(
            select(
                _B.c.billing_account_id,
                _B.c.credit_type,
                _B.c.balance,
                _B.c.seq,
                _B.c.next_event_at,
                _B.c.depleted,
                _B.c.depletions,
                _B.c.updated_at,
                _B.c.overage,
            )
            .where(tuple_(_B.c.billing_account_id, _B.c.credit_type).in_(sorted(keys)))
            .order_by(_B.c.billing_account_id, _B.c.credit_type)
        ).all()
    return {(r.billing_account_id, r.credit_type): r for r in rows}


_GRANT_COLUMNS = (
    _G.c.id,
    _G.c.billing_account_id,
    _G.c.credit_type,
    _G.c.seq,
    _G.c.priority,
    _G.c.expire_at,
    _G.c.remaining,
    _G.c.held,
    _G.c.state,
)
_PG_SPENDABLE = text(
    "SELECT g.id, g.billing_account_id, g.credit_type, g.seq, g.priority, g.expire_at,"
    " g.remaining, g.held, g.state"
    " FROM unnest(CAST(:accounts AS varchar[]), CAST(:types AS varchar[])) AS k(a, t)"
    " CROSS JOIN LATERAL (SELECT * FROM credit_grants AS c"
    "  WHERE c.billing_account_id = k.a AND c.credit_type = k.t AND c.state = 'active'"
    "  ORDER BY c.priority, c.expiry_key, c.seq LIMIT :limit) AS g"
    " ORDER BY g.billing_account_id, g.credit_type, g.priority, g.expiry_key, g.seq"
).columns(*_GRANT_COLUMNS)


def spendable_grants_of(
    session: Session, keys: list[tuple[str, str]], limit: int
) -> dict[tuple[str, str], list[Any]]:
    """The first `limit` active grants of each balance, in consumption order, in one query."""
    if not keys:
        return {}
    out: dict[tuple[str, str], list[Any]] = {k: [] for k in keys}
    if session.get_bind().dialect.name == "postgresql":
        for r in session.execute(_PG_SPENDABLE, {**_arrays(keys), "limit": limit}):
            out[(r.billing_account_id, r.credit_type)].append(r)
        return out
    rank = (
        func.row_number()
        .over(
            partition_by=(_G.c.billing_account_id, _G.c.credit_type),
            order_by=(_G.c.priority, _G.c.expiry_key, _G.c.seq),
        )
        .label("rank")
    )
    ranked = (
        select(*_GRANT_COLUMNS, rank)
        .where(
            tuple_(_G.c.billing_account_id, _G.c.credit_type).in_(sorted(keys)),
            _G.c.state == "active",
        )
        .subquery()
    )
    for r in session.execute(
        select(ranked)
        .where(ranked.c.rank <= limit)
        .order_by(ranked.c.billing_account_id, ranked.c.credit_type, ranked.c.rank)
    ):
        out[(r.billing_account_id, r.credit_type)].append(r)
    return out


def lock_balance(session: Session, account_id: str, credit_type: str) -> CreditBalance | None:
    """The balance row, locked until the transaction ends (SELECT ... FOR UPDATE).

    Every change to a balance goes through this lock, so concurrent writers of one balance
    queue here and each sees the row as the previous one committed it.
    """
    return session.execute(
        select(CreditBalance)
        .where(
            CreditBalance.billing_account_id == account_id,
            CreditBalance.credit_type == credit_type,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def read_balance(session: Session, account_id: str, credit_type: str) -> CreditBalance | None:
    return session.get(CreditBalance, (account_id, credit_type))


def due_credit_types(
    session: Session, account_id: str, credit_type: str, now: dt.datetime
) -> list[str]:
    """Credit types of the account with an expiry at or before `now` not yet recorded."""
    stmt = select(CreditBalance.credit_type).where(
        CreditBalance.billing_account_id == account_id,
        CreditBalance.next_event_at.is_not(None),
        CreditBalance.next_event_at <= now,
    )
    if credit_type:
        stmt = stmt.where(CreditBalance.credit_type == credit_type)
    return sorted(session.execute(stmt).scalars())


def active_grants(
    session: Session, account_id: str, credit_type: str, limit: int | None = None
) -> list[CreditGrant]:
    """Grants that still hold credit (free or under a hold), in consumption order."""
    stmt = (
        select(CreditGrant)
        .where(
            CreditGrant.billing_account_id == account_id,
            CreditGrant.credit_type == credit_type,
            CreditGrant.state == "active",
        )
        .order_by(CreditGrant.priority, CreditGrant.expiry_key, CreditGrant.seq)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(_fresh(stmt)).scalars())


def _fresh(stmt: Any) -> Any:
    """Rows as the database has them now, even if this session loaded them before a lock."""
    return stmt.execution_options(populate_existing=True)


def grants_by_ids(session: Session, ids: Iterable[str]) -> list[CreditGrant]:
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return list(
        session.execute(_fresh(select(CreditGrant).where(CreditGrant.id.in_(wanted)))).scalars()
    )


def held_reservations(
    session: Session, account_id: str, credit_type: str
) -> list[CreditReservation]:
    return list(
        session.execute(
            _fresh(
                select(CreditReservation).where(
                    CreditReservation.billing_account_id == account_id,
                    CreditReservation.credit_type == credit_type,
                    CreditReservation.state == "held",
                )
            )
        ).scalars()
    )


def grant(session: Session, account_id: str, grant_id: str) -> CreditGrant | None:
    """A grant of this account; another account's grant is None, like a missing one."""
    return session.execute(
        _fresh(
            select(CreditGrant).where(
                CreditGrant.id == grant_id, CreditGrant.billing_account_id == account_id
            )
        )
    ).scalar_one_or_none()


def reservation(session: Session, account_id: str, reservation_id: str) -> CreditReservation | None:
    return session.execute(
        _fresh(
            select(CreditReservation).where(
                CreditReservation.id == reservation_id,
                CreditReservation.billing_account_id == account_id,
            )
        )
    ).scalar_one_or_none()


def _after(columns: list[Any], values: list[Any], descending: bool) -> ColumnElement[bool]:
    """Strictly after `values` in the lexicographic order of `columns` (keyset paging)."""
    clauses = []
    for i, col in enumerate(columns):
        prefix = [c == v for c, v in zip(columns[:i], values[:i], strict=True)]
        step = col < values[i] if descending else col > values[i]
        clauses.append(and_(*prefix, step))
    return or_(*clauses)


def list_grants(
    session: Session,
    account_id: str,
    credit_type: str,
    include_inactive: bool,
    after: list[Any] | None,
    limit: int,
) -> list[CreditGrant]:
    """Consumption order: credit type, priority, expiry, age."""
    order = [CreditGrant.credit_type, CreditGrant.priority, CreditGrant.expiry_key, CreditGrant.seq]
    stmt = select(CreditGrant).where(CreditGrant.billing_account_id == account_id)
    if credit_type:
        stmt = stmt.where(CreditGrant.credit_type == credit_type)
    if not include_inactive:
        stmt = stmt.where(CreditGrant.state == "active")
    if after is not None:
        stmt = stmt.where(_after(order, after, descending=False))
    return list(session.execute(stmt.order_by(*order).limit(limit)).scalars())


def list_ledger(
    session: Session,
    account_id: str,
    credit_type: str,
    before: list[Any] | None,
    limit: int,
) -> list[CreditLedgerEntry]:
    """Newest first: effective time, then the balance's entry number, then the id."""
    order = [CreditLedgerEntry.created_at, CreditLedgerEntry.seq, CreditLedgerEntry.id]
    stmt = select(CreditLedgerEntry).where(CreditLedgerEntry.billing_account_id == account_id)
    if credit_type:
        stmt = stmt.where(CreditLedgerEntry.credit_type == credit_type)
    if before is not None:
        stmt = stmt.where(_after(order, before, descending=True))
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
