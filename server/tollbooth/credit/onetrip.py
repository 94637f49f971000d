"""DebitCredits on PostgreSQL in two round trips (psycopg pipeline mode, statements prepared).

The servicer's general path (`Servicer.write` around `debits.debit`) costs a round trip per
statement: BEGIN, the idempotency claim, the account, the balance lock, the grants, the
writes, the stored response, COMMIT. Here the same statements go in two flushes:

1. BEGIN, the claim (INSERT ... ON CONFLICT DO NOTHING), the stored response of the key, the
   account, the balance lock (SELECT ... FOR UPDATE) and the spendable grants;
2. the debit's writes, the stored response and COMMIT.

PostgreSQL runs the statements of a pipeline one after the other, each with its own snapshot
(READ COMMITTED): the key row is read after the claim has waited out a concurrent holder of
the key, and the grants after the balance lock is granted, so they are the rows as the
previous holder of the lock committed them, exactly as in separate round trips. Only the
network waits are merged. The engine (`debits.plan_debit`, `engine.Book`) decides, in
Python, between the flushes, while the lock is held: one allocation rule.

Anything unusual (an expiry due, grants beyond the first batch, a depletion notification, a
replay, a refusal) continues in the same transaction on the ordinary paths, so answers,
errors and their order are those of the general path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from google.protobuf.message import Message
from psycopg.rows import namedtuple_row
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from tollbooth import errors, idempotency
from tollbooth.accounts import repository as accounts
from tollbooth.amounts import fmt, parse_amount
from tollbooth.auth.caller import Caller
from tollbooth.credit import debits
from tollbooth.credit.rules import clean_reason, clean_type
from tollbooth.credit.unit import GRANT_BATCH, Clock, notify_depleted
from tollbooth.db.models import CreditLedgerEntry
from tollbooth.db.types import utcnow
from tollbooth.metadata import clean_metadata

R = TypeVar("R", bound=Message)

_BEGIN = "BEGIN"
_COMMIT = "COMMIT"
_CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at)"
    " VALUES (%(scope)s, %(key)s, %(hash)s, NULL, %(now)s)"
    " ON CONFLICT (scope, key) DO NOTHING RETURNING key"
)
_STORED = (
    "SELECT request_hash, response FROM idempotency_keys WHERE scope = %(scope)s AND key = %(key)s"
)
_ACCOUNT = "SELECT id, principal_id FROM billing_accounts WHERE id = %(account)s"
_LOCK = (
    "SELECT balance, seq, next_event_at, depleted, depletions, updated_at FROM credit_balances"
    " WHERE billing_account_id = %(account)s AND credit_type = %(ctype)s FOR UPDATE"
)
_GRANTS = (
    "SELECT id, seq, priority, expire_at, remaining, held, state FROM credit_grants"
    " WHERE billing_account_id = %(account)s AND credit_type = %(ctype)s AND state = 'active'"
    " ORDER BY priority, expiry_key, seq LIMIT %(limit)s"
)
# The three writes of `repository.write_debit`, in one statement.
_WRITE = """
WITH g AS (
  UPDATE credit_grants AS t SET remaining = v.remaining, state = v.state
  FROM jsonb_to_recordset(CAST(%(grants)s AS jsonb)) AS v(id varchar, remaining numeric,
    state varchar)
  WHERE t.id = v.id
  RETURNING 1
), b AS (
  UPDATE credit_balances
  SET balance = %(balance)s, seq = %(seq)s, depleted = %(depleted)s,
      depletions = %(depletions)s, updated_at = %(now)s
  WHERE billing_account_id = %(account)s AND credit_type = %(ctype)s
  RETURNING 1
)
INSERT INTO credit_ledger (id, billing_account_id, credit_type, seq, kind, amount, balance_after,
  grant_id, debit_id, reservation_id, reason, request_id, allocations, metadata, created_at)
VALUES (%(id)s, %(account)s, %(ctype)s, %(seq)s, 'debit', %(amount)s, %(balance)s, NULL,
  %(debit_id)s, NULL, %(reason)s, %(request_id)s, CAST(%(allocations)s AS json),
  CAST(%(metadata)s AS json), %(now)s)
"""
_COMPLETE = (
    "UPDATE idempotency_keys SET response = %(response)s WHERE scope = %(scope)s AND key = %(key)s"
)


@dataclass(frozen=True)
class Args:
    """A DebitCredits request, validated before any statement (the general path validates
    after the claim and the account; a request this refuses takes that path instead)."""

    ref: str
    ctype: str
    value: Decimal
    why: str
    key: str
    meta: dict[str, str]


def args_of(
    account: str, credit_type: str, amount: str, reason: str, key: str, metadata: dict[str, str]
) -> Args | None:
    """The validated request, or None when any field is refused (the general path raises
    the same error, after the same checks as before)."""
    if not key:
        return None
    try:
        idempotency.validate_key(key)
        return Args(
            account.strip(),
            clean_type(credit_type),
            parse_amount(amount),
            clean_reason(reason),
            key,
            clean_metadata(metadata),
        )
    except errors.DomainError:
        return None


def _account_id(session: Session, caller: Caller, ref: str) -> str | None:
    """The account the debit names, as `resolve` finds it; None when only the general path
    can say (an unknown principal)."""
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
    if caller.is_bearer:
        if row is None:
            raise errors.not_found("account", ref or "(token account)")
        if ref and ref not in (row.id, row.principal_id):
            raise errors.not_found("account", ref)
    elif row is None:
        raise errors.not_found("account", ref)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def debit(
    session: Session,
    caller: Caller,
    args: Args,
    *,
    scope: str,
    digest: str,
    clock: Clock,
    out: Callable[[CreditLedgerEntry], R],
    response_type: type[R],
) -> R | None:
    """DebitCredits with idempotency, in `session`'s transaction, which must not have run a
    statement yet; None when only the general path can answer (nothing was done).

    The connection runs in autocommit for this transaction (SQLAlchemy restores its mode when
    it goes back to the pool) so that BEGIN and COMMIT travel in the pipelines instead of
    costing a round trip each; the transaction is the explicit BEGIN's, and SQLAlchemy's own
    COMMIT or ROLLBACK at the end of the block ends it when this has not."""
    conn = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    account_id = _account_id(session, caller, args.ref)
    if account_id is None:
        return None
    raw: Any = conn.connection.dbapi_connection
    try:
        return _Debit(session, raw, caller, args, account_id, scope, digest).run(
            clock, out, response_type
        )
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


@dataclass
class _Debit:
    session: Session
    raw: Any
    caller: Caller
    args: Args
    account_id: str
    scope: str
    digest: str

    def _cursor(self) -> Any:
        return self.raw.cursor(row_factory=namedtuple_row)

    def run(self, clock: Clock, out: Callable[[CreditLedgerEntry], R], response_type: type[R]) -> R:
        a = self.args
        params = {
            "scope": self.scope,
            "key": a.key,
            "hash": self.digest,
            "now": utcnow(),
            "account": self.account_id,
            "ctype": a.ctype,
            "limit": GRANT_BATCH,
        }
        raw = self.raw
        with raw.pipeline():
            raw.execute(_BEGIN)
            claimed = self._cursor().execute(_CLAIM, params, prepare=True)
            stored = self._cursor().execute(_STORED, params, prepare=True)
            account = self._cursor().execute(_ACCOUNT, params, prepare=True)
            lock = self._cursor().execute(_LOCK, params, prepare=True)
            spendable = self._cursor().execute(_GRANTS, params, prepare=True)
        if claimed.fetchone() is None:
            return self._replay(stored.fetchone(), response_type)
        _check_account(self.caller, a.ref, account.fetchone())
        row = lock.fetchone()
        if row is not None:
            row = row._replace(
                next_event_at=_utc(row.next_event_at), updated_at=_utc(row.updated_at)
            )
        now = debits.fast_start(row, a.ctype, a.value, clock)
        plan = None
        if now is not None:
            grants = [g._replace(expire_at=_utc(g.expire_at)) for g in spendable.fetchall()]
            plan = debits.plan_debit(
                self.account_id, a.ctype, a.value, a.why, a.key, a.meta, row, grants, now
            )
        if plan is None:  # an expiry due, or more grants than the first batch: the ORM
            entry = debits.debit_general(
                self.session, self.account_id, a.ctype, a.value, a.why, a.key, a.meta, clock
            )
            response = out(entry)
            idempotency.complete(
                self.session, self.scope, a.key, response.SerializeToString(deterministic=True)
            )
            return response  # committed by the transaction block
        assert now is not None
        if plan.newly_depleted:  # written now, in this transaction (before its COMMIT)
            notify_depleted(
                self.session,
                self.account_id,
                a.ctype,
                plan.depletions,
                "debit",
                plan.entry.debit_id,
                now,
                now,
            )
        response = out(plan.entry)
        self._write(plan, response.SerializeToString(deterministic=True))
        return response

    def _replay(self, key_row: Any, response_type: type[R]) -> R:
        """The key was claimed before: `idempotency.claim`'s answers."""
        stored = idempotency.stored_response(key_row, self.digest)
        self.raw.commit()
        return response_type.FromString(stored)

    def _write(self, plan: debits.Plan, response: bytes) -> None:
        """The debit's rows, the stored response and COMMIT: one flush."""
        e = plan.entry
        values = {
            "grants": json.dumps(
                [{"id": g, "remaining": fmt(r), "state": st} for g, r, st in plan.grant_writes]
            ),
            "balance": e.balance_after,
            "seq": e.seq,
            "depleted": plan.depleted,
            "depletions": plan.depletions,
            "now": e.created_at,
            "account": e.billing_account_id,
            "ctype": e.credit_type,
            "id": e.id,
            "amount": e.amount,
            "debit_id": e.debit_id,
            "reason": e.reason,
            "request_id": e.request_id,
            "allocations": json.dumps(e.allocations),
            "metadata": json.dumps(e.attributes) if e.attributes else None,
            "response": response,
            "scope": self.scope,
            "key": self.args.key,
        }
        raw = self.raw
        with raw.pipeline():
            self._cursor().execute(_WRITE, values, prepare=True)
            # The claim above inserted this key row in this transaction: it is there to update
            # (`idempotency.complete` checks the count; here it is known before COMMIT).
            self._cursor().execute(_COMPLETE, values, prepare=True)
            raw.execute(_COMMIT)
