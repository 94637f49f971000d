"""The plain-statement writes of the fast paths (a debit, a batch of burns).

A burn writes DEBIT entries (what it took) and OVERAGE entries (what it lacked).

Grants, balances and ledger entries together, without the ORM's unit of work: one round
trip on PostgreSQL (the balance locks are held meanwhile, so fewer round trips is a shorter
queue on a hot balance), three statements elsewhere. Every row written belongs to a balance
the caller has locked.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, text, update
from sqlalchemy.orm import Session

from tollbooth.amounts import fmt
from tollbooth.credit.repository.balances import BALANCE_KEY
from tollbooth.db.models import (
    CreditBalance,
    CreditGrant,
    CreditLedgerEntry,
    ExactDecimal,
    UnboundedDecimal,
)

_B = CreditBalance.__table__
_G = CreditGrant.__table__
_L = CreditLedgerEntry.__table__
# Built once: the hot path only binds values. Grants are written by id alone: every id comes
# from a grant read with its account id (spendable_grants, spendable_grants_of) under that
# balance's lock, so ownership was checked before the write.
_GRANT_WRITE = (
    update(_G)  # type: ignore[arg-type]
    .where(_G.c.id == bindparam("g_id"))
    .values(
        remaining=bindparam("g_remaining", type_=ExactDecimal()),
        state=bindparam("g_state"),
    )
)
_LEDGER_INSERT = insert(_L)  # type: ignore[arg-type]
_BURN_BALANCE_WRITE = (
    update(_B)  # type: ignore[arg-type]
    .where(BALANCE_KEY)
    .values(
        balance=bindparam("v_balance", type_=ExactDecimal()),
        seq=bindparam("v_seq"),
        depleted=bindparam("v_depleted"),
        depletions=bindparam("v_depletions"),
        overage=bindparam("v_overage", type_=UnboundedDecimal()),
        updated_at=bindparam("v_now", type_=_B.c.updated_at.type),
    )
)
_BALANCE_WRITE = (
    update(_B)  # type: ignore[arg-type]
    .where(BALANCE_KEY)
    .values(
        balance=bindparam("v_balance", type_=ExactDecimal()),
        seq=bindparam("v_seq"),
        depleted=bindparam("v_depleted"),
        depletions=bindparam("v_depletions"),
        updated_at=bindparam("v_now", type_=_B.c.updated_at.type),
    )
)
# PostgreSQL: the writes of the burns of many balances in one round trip (every balance is
# locked; the grants written belong to them).
_PG_BURN_WRITE = text(
    """
WITH g AS (
  UPDATE credit_grants AS t SET remaining = v.remaining, state = v.state
  FROM jsonb_to_recordset(CAST(:grants AS jsonb)) AS v(id varchar, remaining numeric, state varchar)
  WHERE t.id = v.id
  RETURNING 1
), b AS (
  UPDATE credit_balances AS t
  SET balance = v.balance, seq = v.seq, depleted = v.depleted, depletions = v.depletions,
      overage = v.overage, updated_at = v.at
  FROM jsonb_to_recordset(CAST(:balances AS jsonb)) AS v(a varchar, t varchar, balance numeric,
    seq bigint, depleted boolean, depletions integer, overage numeric, at timestamptz)
  WHERE t.billing_account_id = v.a AND t.credit_type = v.t
  RETURNING 1
)
INSERT INTO credit_ledger (id, billing_account_id, credit_type, seq, kind, amount, balance_after,
  grant_id, debit_id, reservation_id, reason, request_id, allocations, metadata, created_at,
  overage)
SELECT v.id, v.a, v.t, v.seq, v.kind, v.amount, v.balance_after, NULL, v.debit_id, NULL,
  v.reason, '', v.allocations, v.metadata, v.at, v.overage
FROM jsonb_to_recordset(CAST(:ledger AS jsonb)) AS v(id varchar, a varchar, t varchar,
  seq bigint, kind varchar, amount numeric, balance_after numeric, debit_id varchar,
  reason varchar, allocations json, metadata json, at timestamptz, overage numeric)
"""
)
# PostgreSQL: the three writes of a debit in one round trip (the lock is held meanwhile, so
# fewer round trips is a shorter queue on a hot balance).
_PG_DEBIT_WRITE = text(
    """
WITH g AS (
  UPDATE credit_grants AS t SET remaining = v.remaining, state = v.state
  FROM jsonb_to_recordset(CAST(:grants AS jsonb)) AS v(id varchar, remaining numeric, state varchar)
  WHERE t.id = v.id
  RETURNING 1
), b AS (
  UPDATE credit_balances
  SET balance = :balance, seq = :seq, depleted = :depleted, depletions = :depletions,
      updated_at = :now
  WHERE billing_account_id = :account AND credit_type = :ctype
  RETURNING 1
)
INSERT INTO credit_ledger (id, billing_account_id, credit_type, seq, kind, amount, balance_after,
  grant_id, debit_id, reservation_id, reason, request_id, allocations, metadata, created_at)
VALUES (:id, :account, :ctype, :seq, 'debit', :amount, :balance, NULL, :debit_id, NULL, :reason,
  :request_id, CAST(:allocations AS json), CAST(:metadata AS json), :now)
"""
)
_LEDGER_COLUMNS = [(attr, col.name) for attr, col in CreditLedgerEntry.__mapper__.columns.items()]


def write_debit(
    session: Session,
    entry: CreditLedgerEntry,
    grant_writes: list[tuple[str, Decimal, str]],
    *,
    depleted: bool,
    depletions: int,
) -> None:
    """One debit of the fast path: its grants (id, remaining, state), the balance row (its
    figures after the debit: the entry's seq and balance_after, `depleted`, `depletions`,
    updated at the entry's time) and the ledger entry, which is not added to the session."""
    account_id, ctype, now = entry.billing_account_id, entry.credit_type, entry.created_at
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _PG_DEBIT_WRITE,
            {
                "grants": json.dumps(
                    [{"id": g, "remaining": fmt(r), "state": st} for g, r, st in grant_writes]
                ),
                "balance": entry.balance_after,
                "seq": entry.seq,
                "depleted": depleted,
                "depletions": depletions,
                "now": now,
                "account": account_id,
                "ctype": ctype,
                "id": entry.id,
                "amount": entry.amount,
                "debit_id": entry.debit_id,
                "reason": entry.reason,
                "request_id": entry.request_id,
                "allocations": json.dumps(entry.allocations),
                "metadata": json.dumps(entry.attributes) if entry.attributes else None,
            },
        )
        return
    session.execute(
        _GRANT_WRITE,
        [{"g_id": g, "g_remaining": r, "g_state": st} for g, r, st in grant_writes],
    )
    session.execute(_LEDGER_INSERT, {name: getattr(entry, attr) for attr, name in _LEDGER_COLUMNS})
    session.execute(
        _BALANCE_WRITE,
        {
            "k_account": account_id,
            "k_type": ctype,
            "v_balance": entry.balance_after,
            "v_seq": entry.seq,
            "v_depleted": depleted,
            "v_depletions": depletions,
            "v_now": now,
        },
    )


def write_burns(
    session: Session,
    grant_writes: list[dict[str, Any]],
    ledger_rows: list[dict[str, Any]],
    balance_writes: list[dict[str, Any]],
) -> None:
    """Grants, ledger entries and balances of the burns' fast path: one statement on
    PostgreSQL. Rows are dicts keyed by the bind names of the portable statements."""
    if session.get_bind().dialect.name != "postgresql":
        if grant_writes:
            session.execute(_GRANT_WRITE, grant_writes)
        if ledger_rows:
            session.execute(_LEDGER_INSERT, ledger_rows)
        session.execute(_BURN_BALANCE_WRITE, balance_writes)
        return
    session.execute(
        _PG_BURN_WRITE,
        {
            "grants": json.dumps(
                [
                    {"id": g["g_id"], "remaining": fmt(g["g_remaining"]), "state": g["g_state"]}
                    for g in grant_writes
                ]
            ),
            "balances": json.dumps(
                [
                    {
                        "a": b["k_account"],
                        "t": b["k_type"],
                        "balance": fmt(b["v_balance"]),
                        "seq": b["v_seq"],
                        "depleted": b["v_depleted"],
                        "depletions": b["v_depletions"],
                        "overage": fmt(b["v_overage"]),
                        "at": b["v_now"].isoformat(),
                    }
                    for b in balance_writes
                ]
            ),
            "ledger": json.dumps(
                [
                    {
                        "id": e["id"],
                        "a": e["billing_account_id"],
                        "t": e["credit_type"],
                        "seq": e["seq"],
                        "kind": e["kind"],
                        "amount": fmt(e["amount"]),
                        "balance_after": fmt(e["balance_after"]),
                        "debit_id": e["debit_id"],
                        "reason": e["reason"],
                        "allocations": e["allocations"],
                        "metadata": e["metadata"],
                        "at": e["created_at"].isoformat(),
                        "overage": fmt(e["overage"]),
                    }
                    for e in ledger_rows
                ]
            ),
        },
    )
