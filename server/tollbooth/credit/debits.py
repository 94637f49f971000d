"""Debit credits now, or refuse and change nothing: the common case in plain statements."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.accounts.service import require_active, resolve
from tollbooth.amounts import ZERO, add, neg, parse_amount, sub
from tollbooth.auth.caller import Caller
from tollbooth.credit import engine, repository
from tollbooth.credit.engine import Book
from tollbooth.credit.rules import clean_reason, clean_type, insufficient
from tollbooth.credit.unit import GRANT_BATCH, Clock, lock, notify_depleted, portions_json
from tollbooth.db.models import CreditLedgerEntry
from tollbooth.ids import new_id
from tollbooth.metadata import clean_metadata


def debit(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    amount: str,
    reason: str,
    request_id: str,
    metadata: dict[str, str],
    clock: Clock,
) -> CreditLedgerEntry:
    """Take `amount` now, or refuse (INSUFFICIENT_CREDITS) and change nothing."""
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type)
    value = parse_amount(amount)
    why = clean_reason(reason)
    meta = clean_metadata(metadata)
    require_active(account)  # an archived account spends nothing new
    fast = _debit_fast(session, account.id, ctype, value, why, request_id, meta, clock)
    if fast is not None:
        return fast
    return debit_general(session, account.id, ctype, value, why, request_id, meta, clock)


def debit_general(
    session: Session,
    account_id: str,
    ctype: str,
    value: Decimal,
    why: str,
    request_id: str,
    meta: dict[str, str],
    clock: Clock,
) -> CreditLedgerEntry:
    """Any debit, through the unit of work: expiries due recorded first, every grant loaded
    if the first ones do not cover it."""
    locked = lock(session, account_id, ctype, clock, create=False)
    if locked is None or locked.row.balance < value:
        raise insufficient(ctype, locked.row.balance if locked else ZERO, value)
    now = locked.now
    locked.load_spendable(value)
    portions = locked.book.debit(value, now)
    debit_id = new_id("dbt")
    e = locked.entry(
        "debit",
        neg(value),
        now,
        debit_id=debit_id,
        reason=why,
        request_id=request_id,
        allocations=portions_json(portions),
        attributes=meta or None,
    )
    locked.depletion("debit", debit_id)
    locked.flush()
    return e


def _debit_fast(
    session: Session,
    account_id: str,
    ctype: str,
    value: Decimal,
    why: str,
    request_id: str,
    meta: dict[str, str],
    clock: Clock,
) -> CreditLedgerEntry | None:
    """The common debit (no expiry due, the first grants cover it) in plain statements.

    Same lock, same engine, same rows as the general path, without the ORM's unit of work:
    the hot path of every replica. None means "take the general path" (the lock stays held).
    The grants are read after the lock is granted, in their own statement, so they are the
    rows as the previous holder of the lock committed them.
    """
    row = repository.lock_balance_figures(session, account_id, ctype)
    now = fast_start(row, ctype, value, clock)
    if now is None:
        return None
    grants = repository.spendable_grants(session, account_id, ctype, GRANT_BATCH)
    plan = plan_debit(account_id, ctype, value, why, request_id, meta, row, grants, now)
    if plan is None:
        return None
    if plan.newly_depleted:
        notify_depleted(
            session, account_id, ctype, plan.depletions, "debit", plan.entry.debit_id, now, now
        )
    repository.write_debit(
        session,
        plan.entry,
        plan.grant_writes,
        depleted=plan.depleted,
        depletions=plan.depletions,
    )
    return plan.entry


def fast_start(row: Any, ctype: str, value: Decimal, clock: Clock) -> dt.datetime | None:
    """The instant of a fast debit of the locked balance figures `row` (None: the row does not
    exist, refused), or None when an expiry is due (the general path records it first);
    INSUFFICIENT_CREDITS when the balance is short."""
    if row is None:
        raise insufficient(ctype, ZERO, value)
    now = max(clock(), row.updated_at)
    if row.next_event_at is not None and row.next_event_at <= now:
        return None
    if row.balance < value:
        raise insufficient(ctype, row.balance, value)
    return now


@dataclass(frozen=True)
class Plan:
    """What a fast debit writes: the entry, its grants (id, remaining, state), the balance's
    depletion figures, and whether this debit depleted it (one notification)."""

    entry: CreditLedgerEntry
    grant_writes: list[tuple[str, Decimal, str]]
    depleted: bool
    depletions: int
    newly_depleted: bool


def plan_debit(
    account_id: str,
    ctype: str,
    value: Decimal,
    why: str,
    request_id: str,
    meta: dict[str, str],
    row: Any,
    grants: list[Any],
    now: dt.datetime,
) -> Plan | None:
    """The engine's debit of `value` from the first `GRANT_BATCH` spendable `grants` (read
    after the lock of `row`); None when they do not cover it (the general path loads them
    all)."""
    if len(grants) == GRANT_BATCH and add(*(g.remaining for g in grants)) < value:
        return None
    book = Book.of(
        engine.Grant(g.id, g.seq, g.priority, g.expire_at, g.remaining, g.held, g.state)
        for g in grants
    )
    portions = book.debit(value, now)
    grant_writes = [
        (gid, book.grants[gid].remaining, book.grants[gid].state)
        for gid in sorted(book.dirty_grants)
    ]
    balance_after = sub(row.balance, value)
    entry = CreditLedgerEntry(
        id=new_id("cle"),
        billing_account_id=account_id,
        credit_type=ctype,
        seq=row.seq + 1,
        kind="debit",
        amount=neg(value),
        balance_after=balance_after,
        grant_id=None,
        debit_id=new_id("dbt"),
        reservation_id=None,
        reason=why,
        request_id=request_id,
        allocations=portions_json(portions),
        attributes=meta or None,
        created_at=now,
        overage=ZERO,
    )
    depleted, depletions, newly = row.depleted, row.depletions, False
    if balance_after > 0:
        depleted = False
    elif not depleted:
        depleted, depletions, newly = True, depletions + 1, True
    return Plan(entry, grant_writes, depleted, depletions, newly)
