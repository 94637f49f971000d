"""Queries of `credit_balances`: create, lock and read balance rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, text, tuple_
from sqlalchemy.orm import Session

from tollbooth.credit.repository.common import arrays
from tollbooth.db import Database, upsert_insert
from tollbooth.db.models import BillingAccount, CreditBalance
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
        session.execute(_PG_ENSURE, {**arrays(keys), "now": now})
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


def lock_balances(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """Several balance rows, locked in key order until the transaction ends.

    PostgreSQL locks the rows of `SELECT ... ORDER BY ... FOR UPDATE` in the sorted order, so
    every writer of several balances takes their locks in one order: no deadlock among them.
    """
    if not keys:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_LOCK_BALANCES, arrays(keys)).all()
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


# Built once: the debit's hot path only binds values.
BALANCE_KEY = (_B.c.billing_account_id == bindparam("k_account")) & (
    _B.c.credit_type == bindparam("k_type")
)
_BALANCE_LOCK = (
    select(
        _B.c.balance,
        _B.c.seq,
        _B.c.next_event_at,
        _B.c.depleted,
        _B.c.depletions,
        _B.c.updated_at,
    )
    .where(BALANCE_KEY)
    .with_for_update()
)


def lock_balance_figures(session: Session, account_id: str, credit_type: str) -> Any:
    """The figures of one balance row, locked like `lock_balance`, without the ORM (the
    debit's fast path): balance, seq, next_event_at, depleted, depletions, updated_at; None
    when the row does not exist."""
    return session.execute(_BALANCE_LOCK, {"k_account": account_id, "k_type": credit_type}).first()


def read_balance(session: Session, account_id: str, credit_type: str) -> CreditBalance | None:
    return session.get(CreditBalance, (account_id, credit_type))


_BALANCE_FIGURES = (
    "SELECT balance, next_event_at FROM credit_balances"
    " WHERE billing_account_id = %(account)s AND credit_type = %(credit_type)s"
)


def balance_figures(db: Database, account_id: str, credit_type: str) -> Any:
    """(balance, next_event_at) of one balance row, or None: one statement in autocommit
    through the driver's cursor (`Database.read_one`), for a read that needs nothing else."""
    return db.read_one(_BALANCE_FIGURES, {"account": account_id, "credit_type": credit_type})


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


def due_balances(session: Session, now: dt.datetime, limit: int) -> list[tuple[str, str]]:
    """(account id, credit type) of up to `limit` balances with an event (a grant's expiry, a
    hold's lapse) at or before `now` not yet recorded, soonest first (index
    `ix_credit_balances_next_event_at`)."""
    stmt = (
        select(CreditBalance.billing_account_id, CreditBalance.credit_type)
        .where(CreditBalance.next_event_at.is_not(None), CreditBalance.next_event_at <= now)
        .order_by(CreditBalance.next_event_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.execute(stmt)]


def account_balances(session: Session, account_id: str) -> list[CreditBalance]:
    """Every balance row of one account, by credit type (the operator console)."""
    return list(
        session.scalars(
            select(CreditBalance)
            .where(CreditBalance.billing_account_id == account_id)
            .order_by(CreditBalance.credit_type)
        )
    )


_A = BillingAccount.__table__
_ACCOUNT_BALANCE = (
    select(
        _A.c.id,
        _A.c.principal_id,
        _B.c.balance,
        _B.c.reserved,
        _B.c.next_event_at,
        _B.c.overage,
    )
    .select_from(
        _A.outerjoin(
            _B,
            (_B.c.billing_account_id == _A.c.id) & (_B.c.credit_type == bindparam("k_type")),
        )
    )
    .limit(1)
)
_ACCOUNT_BALANCE_BY_ID = _ACCOUNT_BALANCE.where(_A.c.id == bindparam("k_account"))
_ACCOUNT_BALANCE_BY_PRINCIPAL = _ACCOUNT_BALANCE.where(_A.c.principal_id == bindparam("k_account"))


def account_balance(
    session: Session, account_id: str, credit_type: str, *, by_principal: bool = False
) -> Any:
    """One statement: the account (`id`, `principal_id`) named by `account_id` (or by its
    principal id), with its `credit_type` balance figures (`balance`, `reserved`,
    `next_event_at`, `overage`: all None when it has no such balance row); None when no
    account has that id (principal id). GetBalance's read: the account check and the row."""
    stmt = _ACCOUNT_BALANCE_BY_PRINCIPAL if by_principal else _ACCOUNT_BALANCE_BY_ID
    return session.execute(stmt, {"k_account": account_id, "k_type": credit_type}).first()


class AccountBalance(NamedTuple):
    """`account_balance`'s row, read by `plain_account_balance`."""

    id: str
    principal_id: str
    balance: Decimal | None
    reserved: Decimal | None
    next_event_at: dt.datetime | None
    overage: Decimal | None


_PLAIN_ACCOUNT_BALANCE = (
    "SELECT a.id, a.principal_id, b.balance, b.reserved, b.next_event_at, b.overage"
    " FROM billing_accounts AS a LEFT OUTER JOIN credit_balances AS b"
    " ON b.billing_account_id = a.id AND b.credit_type = %(k_type)s"
    " WHERE a.{key} = %(k_account)s LIMIT 1"
)
_PLAIN_BY_ID = _PLAIN_ACCOUNT_BALANCE.format(key="id")
_PLAIN_BY_PRINCIPAL = _PLAIN_ACCOUNT_BALANCE.format(key="principal_id")


def plain_account_balance(
    db: Database, account_id: str, credit_type: str, *, by_principal: bool = False
) -> AccountBalance | None:
    """`account_balance`, the same statement in autocommit through the driver's cursor
    (`Database.read_one`: no session, no BEGIN/COMMIT); PostgreSQL only."""
    sql = _PLAIN_BY_PRINCIPAL if by_principal else _PLAIN_BY_ID
    row = db.read_one(sql, {"k_account": account_id, "k_type": credit_type})
    if row is None:
        return None
    found = AccountBalance(*row)
    if found.next_event_at is not None:  # as `UTCDateTime` gives it: aware, in UTC
        found = found._replace(next_event_at=found.next_event_at.astimezone(dt.UTC))
    return found
