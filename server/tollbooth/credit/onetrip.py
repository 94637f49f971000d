"""DebitCredits on PostgreSQL in two round trips (psycopg pipeline mode, statements prepared).

The servicer's general path (`Servicer.write` around `debits.debit`) costs a round trip per
statement: BEGIN, the idempotency claim, the account, the balance lock, the grants, the
writes, the stored response, COMMIT. Here the same statements go in two flushes (the frame
is `twotrips.Trip`'s):

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

Since migration 0030 the servicer first tries `onecall` (the whole debit in one call of a
PostgreSQL function); this path answers what the function hands back, as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from tollbooth import errors, idempotency
from tollbooth.accounts.service import require_active
from tollbooth.amounts import fmt, parse_amount
from tollbooth.auth.caller import Caller
from tollbooth.credit import debits
from tollbooth.credit.rules import clean_reason, clean_type
from tollbooth.credit.twotrips import LOCK, SPENDABLE, Trip, figures, run, utc
from tollbooth.credit.unit import GRANT_BATCH, Clock, notify_depleted
from tollbooth.db.models import CreditLedgerEntry
from tollbooth.metadata import clean_metadata

R = TypeVar("R", bound=Message)

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
    statement yet; None when only the general path can answer (nothing was done)."""
    return run(
        session,
        caller,
        args.ref,
        key=args.key,
        scope=scope,
        digest=digest,
        response_type=response_type,
        body=lambda trip: _debit(trip, args, clock, out),
    )


def _debit(trip: Trip, a: Args, clock: Clock, out: Callable[[CreditLedgerEntry], R]) -> R:
    account_id = trip.account_id
    account, (lock, spendable) = trip.open(
        [LOCK, SPENDABLE], {"ctype": a.ctype, "limit": GRANT_BATCH}
    )
    require_active(account)  # an archived account spends nothing new (rolled back: no claim)
    row = figures(lock.fetchone())
    now = debits.fast_start(row, a.ctype, a.value, clock)
    plan = None
    if now is not None:
        grants = [g._replace(expire_at=utc(g.expire_at)) for g in spendable.fetchall()]
        plan = debits.plan_debit(
            account_id, a.ctype, a.value, a.why, a.key, a.meta, row, grants, now
        )
    if plan is None:  # an expiry due, or more grants than the first batch: the ORM
        return trip.general(
            lambda: out(
                debits.debit_general(
                    trip.session, account_id, a.ctype, a.value, a.why, a.key, a.meta, clock
                )
            )
        )
    assert now is not None
    if plan.newly_depleted:  # written now, in this transaction (before its COMMIT)
        notify_depleted(
            trip.session,
            account_id,
            a.ctype,
            plan.depletions,
            "debit",
            plan.entry.debit_id,
            now,
            now,
        )
    return trip.finish([(_WRITE, _values(plan))], out(plan.entry))


def _values(plan: debits.Plan) -> dict[str, object]:
    """The parameters of `_WRITE`."""
    e = plan.entry
    return {
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
    }
