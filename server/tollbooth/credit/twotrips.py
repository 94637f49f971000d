"""The frame of a credit write in two round trips on PostgreSQL (psycopg pipeline mode).

The servicer's general path (`Servicer.write`) costs a round trip per statement: BEGIN, the
idempotency claim, the account, the balance lock, the rows the operation reads, its writes,
the stored response, COMMIT. A `Trip` sends the same statements in two flushes:

1. BEGIN, the claim (INSERT ... ON CONFLICT DO NOTHING), the stored response of the key, the
   account, then the operation's reads (the balance lock, and what it needs under it);
2. the operation's writes, the stored response and COMMIT.

PostgreSQL runs the statements of a pipeline one after the other, each with its own snapshot
(READ COMMITTED): the key row is read after the claim has waited out a concurrent holder of
the key, and rows read after the balance lock are those the previous holder of the lock
committed, exactly as in separate round trips. Only the network waits are merged.

Between the flushes the operation decides in Python, while the lock is held; a case it does
not handle continues in the same transaction on the general path (`Trip.general`), so answers,
errors and their order are those of the general path. Used by `onetrip` (DebitCredits) and
`pipelined` (ReserveCredits, CommitReservation, GrantCredits).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from google.protobuf.message import Message
from psycopg.rows import namedtuple_row
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from tollbooth import idempotency
from tollbooth.accounts import repository as accounts
from tollbooth.amounts import fmt
from tollbooth.auth.caller import Caller
from tollbooth.credit.unit import Locked
from tollbooth.db.models import CreditBalance, CreditGrant, CreditLedgerEntry
from tollbooth.db.types import utcnow
from tollbooth.errors import not_found

R = TypeVar("R", bound=Message)

BEGIN = "BEGIN"
COMMIT = "COMMIT"
CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at)"
    " VALUES (%(scope)s, %(key)s, %(hash)s, NULL, %(now)s)"
    " ON CONFLICT (scope, key) DO NOTHING RETURNING key"
)
STORED = (
    "SELECT request_hash, response FROM idempotency_keys WHERE scope = %(scope)s AND key = %(key)s"
)
ACCOUNT = "SELECT id, principal_id, archived_at FROM billing_accounts WHERE id = %(account)s"
# The figures `Locked` works on (and the debit's fast path), locked until COMMIT.
LOCK = (
    "SELECT balance, reserved, seq, next_event_at, depleted, depletions, updated_at, overage"
    " FROM credit_balances"
    " WHERE billing_account_id = %(account)s AND credit_type = %(ctype)s FOR UPDATE"
)
# The first spendable grants, in consumption order (read after the lock).
SPENDABLE = (
    "SELECT id, seq, priority, expire_at, remaining, held, state FROM credit_grants"
    " WHERE billing_account_id = %(account)s AND credit_type = %(ctype)s AND state = 'active'"
    " ORDER BY priority, expiry_key, seq LIMIT %(limit)s"
)
COMPLETE = (
    "UPDATE idempotency_keys SET response = %(response)s WHERE scope = %(scope)s AND key = %(key)s"
)
# What `Locked.flush` writes through the ORM, as plain statements of the second flush.
GRANTS_WRITE = """
UPDATE credit_grants AS t
SET remaining = v.remaining, held = v.held, state = v.state,
  closed_at = COALESCE(v.closed_at, t.closed_at)
FROM jsonb_to_recordset(CAST(%(grants)s AS jsonb)) AS v(id varchar, remaining numeric,
  held numeric, state varchar, closed_at timestamptz)
WHERE t.id = v.id AND t.billing_account_id = %(account)s
"""
BALANCE_WRITE = """
UPDATE credit_balances
SET balance = %(balance)s, reserved = %(reserved)s, seq = %(seq)s,
  next_event_at = %(next_event_at)s, depleted = %(depleted)s, depletions = %(depletions)s,
  overage = %(overage)s, updated_at = %(updated_at)s
WHERE billing_account_id = %(account)s AND credit_type = %(ctype)s
"""
LEDGER_INSERT = """
INSERT INTO credit_ledger (id, billing_account_id, credit_type, seq, kind, amount, balance_after,
  grant_id, debit_id, reservation_id, reason, request_id, allocations, metadata, created_at,
  overage)
SELECT v.id, %(account)s, %(ctype)s, v.seq, v.kind, v.amount, v.balance_after, v.grant_id,
  v.debit_id, v.reservation_id, v.reason, v.request_id, v.allocations, v.metadata, v.at,
  v.overage
FROM jsonb_to_recordset(CAST(%(ledger)s AS jsonb)) AS v(id varchar, seq bigint, kind varchar,
  amount numeric, balance_after numeric, grant_id varchar, debit_id varchar,
  reservation_id varchar, reason varchar, request_id varchar, allocations json, metadata json,
  at timestamptz, overage numeric)
ORDER BY v.seq
"""


class _Replayed(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, response: bytes) -> None:
        self.response = response


def account_id_of(session: Session, caller: Caller, ref: str) -> str | None:
    """The account a request names, as `resolve` finds it; None when only the general path
    can say (an unknown principal, no account named)."""
    ref = ref.strip()
    if caller.is_bearer:
        return caller.account_id or ""
    if not ref:
        return None
    if ref.startswith("acct_"):
        return ref
    found = accounts.by_principal(session, ref)
    return None if found is None else found.id


def _check_account(caller: Caller, ref: str, row: Any) -> None:
    """`accounts.service.resolve`'s refusals, on the account row read in the pipeline."""
    ref = ref.strip()
    if caller.is_bearer:
        if row is None:
            raise not_found("account", ref or "(token account)")
        if ref and ref not in (row.id, row.principal_id):
            raise not_found("account", ref)
    elif row is None:
        raise not_found("account", ref)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def figures(row: Any) -> Any:
    """A LOCK row (None stays None) with its instants in UTC."""
    if row is None:
        return None
    return row._replace(next_event_at=utc(row.next_event_at), updated_at=utc(row.updated_at))


def start(row: Any, clock: Callable[[], dt.datetime]) -> dt.datetime | None:
    """The instant of a write on the locked `figures` (`unit.lock`'s), or None when an expiry
    is due: the general path records it first."""
    now: dt.datetime = max(clock(), row.updated_at)
    if row.next_event_at is not None and row.next_event_at <= now:
        return None
    return now


@dataclass
class Trip:
    """One request's transaction on the raw connection: `open`, then `finish` or `general`."""

    session: Session
    raw: Any
    caller: Caller
    ref: str
    account_id: str
    scope: str
    key: str
    digest: str

    def cursor(self) -> Any:
        return self.raw.cursor(row_factory=namedtuple_row)

    def open(self, reads: Sequence[str], params: dict[str, Any]) -> tuple[Any, list[Any]]:
        """The first flush: BEGIN, the claim, the key's row, the account, then `reads`.

        Returns the account row and the cursors of `reads`. A key claimed before answers
        with its stored response (or its refusal) and ends the trip; an account the caller
        may not name is refused (`resolve`'s answers) after the claim, as on the general
        path."""
        params = {
            **params,
            "scope": self.scope,
            "key": self.key,
            "hash": self.digest,
            "now": utcnow(),
            "account": self.account_id,
        }
        raw = self.raw
        with raw.pipeline():
            raw.execute(BEGIN)
            claimed = self.cursor().execute(CLAIM, params, prepare=True)
            stored = self.cursor().execute(STORED, params, prepare=True)
            account = self.cursor().execute(ACCOUNT, params, prepare=True)
            cursors = [self.cursor().execute(sql, params, prepare=True) for sql in reads]
        if claimed.fetchone() is None:
            response = idempotency.stored_response(stored.fetchone(), self.digest)
            raw.commit()
            raise _Replayed(response)
        row = account.fetchone()
        _check_account(self.caller, self.ref, row)
        return row, cursors

    def general(self, effect: Callable[[], R]) -> R:
        """The general path, in this transaction (the key claimed); committed by the
        transaction block."""
        response = effect()
        idempotency.complete(
            self.session, self.scope, self.key, response.SerializeToString(deterministic=True)
        )
        return response

    def finish(self, writes: Iterable[tuple[str, dict[str, Any]]], response: R) -> R:
        """The second flush: `writes`, the stored response and COMMIT."""
        raw = self.raw
        done = {
            "response": response.SerializeToString(deterministic=True),
            "scope": self.scope,
            "key": self.key,
        }
        with raw.pipeline():
            for sql, values in writes:
                self.cursor().execute(sql, values, prepare=True)
            # The claim inserted this key row in this transaction: it is there to update
            # (`idempotency.complete` checks the count; here it is known before COMMIT).
            self.cursor().execute(COMPLETE, done, prepare=True)
            raw.execute(COMMIT)
        return response


def run(
    session: Session,
    caller: Caller,
    ref: str,
    *,
    key: str,
    scope: str,
    digest: str,
    response_type: type[R],
    body: Callable[[Trip], R],
) -> R | None:
    """`body` on a `Trip` in `session`'s transaction, which must not have run a statement yet;
    None when only the general path can answer (nothing was done).

    The connection runs in autocommit for this transaction (SQLAlchemy restores its mode when
    it goes back to the pool) so that BEGIN and COMMIT travel in the pipelines instead of
    costing a round trip each; the transaction is the explicit BEGIN's, and SQLAlchemy's own
    COMMIT or ROLLBACK at the end of the block ends it when the trip has not."""
    conn = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    account_id = account_id_of(session, caller, ref)
    if account_id is None:
        return None
    raw: Any = conn.connection.dbapi_connection
    try:
        return body(Trip(session, raw, caller, ref, account_id, scope, key, digest))
    except _Replayed as replay:
        return response_type.FromString(replay.response)
    except psycopg.Error as exc:
        # As SQLAlchemy reports it (a dropped connection is an OperationalError: UNAVAILABLE,
        # and the pool discards the connection).
        _rollback(raw)
        if raw.broken or raw.closed:
            conn.invalidate()
        raise sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc
    except BaseException:
        _rollback(raw)
        raise


def _rollback(raw: Any) -> None:
    """End the explicit BEGIN's transaction if it is still open (a no-op once committed)."""
    with contextlib.suppress(psycopg.Error):
        raw.rollback()


def locked_of(session: Session, account_id: str, ctype: str, row: Any, now: dt.datetime) -> Locked:
    """A `Locked` on the figures of the LOCK row (a balance object outside the session:
    `Locked.apply` changes it, `written` writes it)."""
    balance = CreditBalance(
        billing_account_id=account_id,
        credit_type=ctype,
        balance=row.balance,
        reserved=row.reserved,
        seq=row.seq,
        next_event_at=utc(row.next_event_at),
        depleted=row.depleted,
        depletions=row.depletions,
        updated_at=utc(row.updated_at),
        overage=row.overage,
    )
    return Locked(session, balance, now)


def grant_rows(account_id: str, ctype: str, rows: Iterable[Any]) -> list[CreditGrant]:
    """Grant rows read in a pipeline (id, seq, priority, expire_at, remaining, held, state)
    as objects outside the session, for `Locked.load_grants`."""
    return [
        CreditGrant(
            id=g.id,
            billing_account_id=account_id,
            credit_type=ctype,
            seq=g.seq,
            priority=g.priority,
            expire_at=utc(g.expire_at),
            remaining=g.remaining,
            held=g.held,
            state=g.state,
        )
        for g in rows
    ]


def written(locked: Locked) -> list[tuple[str, dict[str, Any]]]:
    """`Locked.flush` as statements: what the engine changed in the grants, the balance row
    and the new ledger entries (a new grant or reservation, and changed reservations, are the
    caller's)."""
    grants, _, entries = locked.apply()
    b = locked.row
    key = {"account": b.billing_account_id, "ctype": b.credit_type}
    out: list[tuple[str, dict[str, Any]]] = []
    if grants:
        rows = [
            {
                "id": g.id,
                "remaining": fmt(g.remaining),
                "held": fmt(g.held),
                "state": g.state,
                "closed_at": None if g.closed_at is None else g.closed_at.isoformat(),
            }
            for g in sorted(grants, key=lambda g: g.id)
        ]
        out.append((GRANTS_WRITE, {**key, "grants": json.dumps(rows)}))
    out.append(
        (
            BALANCE_WRITE,
            {
                **key,
                "balance": b.balance,
                "reserved": b.reserved,
                "seq": b.seq,
                "next_event_at": b.next_event_at,
                "depleted": b.depleted,
                "depletions": b.depletions,
                "overage": b.overage,
                "updated_at": b.updated_at,
            },
        )
    )
    if entries:
        out.append((LEDGER_INSERT, {**key, "ledger": json.dumps([_entry(e) for e in entries])}))
    return out


def _entry(e: CreditLedgerEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "seq": e.seq,
        "kind": e.kind,
        "amount": fmt(e.amount),
        "balance_after": fmt(e.balance_after),
        "grant_id": e.grant_id,
        "debit_id": e.debit_id,
        "reservation_id": e.reservation_id,
        "reason": e.reason,
        "request_id": e.request_id,
        "allocations": e.allocations,
        "metadata": e.attributes or None,
        "at": e.created_at.isoformat(),
        "overage": fmt(e.overage),
    }
