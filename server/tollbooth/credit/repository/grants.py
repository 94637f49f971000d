"""Queries of `credit_grants`: spendable grants in consumption order, one grant, listings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, func, select, text, tuple_
from sqlalchemy.orm import Session

from tollbooth.credit.repository.common import arrays, fresh
from tollbooth.db.models import CreditGrant
from tollbooth.paging import after_clause

_G = CreditGrant.__table__

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
        for r in session.execute(_PG_SPENDABLE, {**arrays(keys), "limit": limit}):
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


# Built once: the debit's hot path only binds values.
_SPENDABLE = (
    select(_G.c.id, _G.c.seq, _G.c.priority, _G.c.expire_at, _G.c.remaining, _G.c.held, _G.c.state)
    .where(
        _G.c.billing_account_id == bindparam("k_account"),
        _G.c.credit_type == bindparam("k_type"),
        _G.c.state == "active",
    )
    .order_by(_G.c.priority, _G.c.expiry_key, _G.c.seq)
    .limit(bindparam("k_limit"))
)


def spendable_grants(session: Session, account_id: str, credit_type: str, limit: int) -> list[Any]:
    """The first `limit` active grants of one balance in consumption order, without the ORM
    (the debit's fast path, under the balance lock)."""
    return list(
        session.execute(
            _SPENDABLE, {"k_account": account_id, "k_type": credit_type, "k_limit": limit}
        ).all()
    )


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
    return list(session.execute(fresh(stmt)).scalars())


def grants_by_ids(session: Session, account_id: str, ids: Iterable[str]) -> list[CreditGrant]:
    """Grants of this account by id (those its holds took from)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return list(
        session.execute(
            fresh(
                select(CreditGrant).where(
                    CreditGrant.id.in_(wanted), CreditGrant.billing_account_id == account_id
                )
            )
        ).scalars()
    )


def grant(session: Session, account_id: str, grant_id: str) -> CreditGrant | None:
    """A grant of this account; another account's grant is None, like a missing one."""
    return session.execute(
        fresh(
            select(CreditGrant).where(
                CreditGrant.id == grant_id, CreditGrant.billing_account_id == account_id
            )
        )
    ).scalar_one_or_none()


def list_grants(
    session: Session,
    account_id: str,
    credit_type: str,
    include_inactive: bool,
    *,
    after: tuple[Any, ...] | None,
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
        stmt = stmt.where(after_clause(order, after))
    return list(session.execute(stmt.order_by(*order).limit(limit)).scalars())
