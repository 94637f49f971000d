"""Reserve credits (a hold), then commit the actual cost or release the hold."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.service import require_active, resolve
from tollbooth.amounts import ZERO, fmt, neg, parse_amount
from tollbooth.auth.caller import Caller
from tollbooth.credit import engine, repository
from tollbooth.credit.rules import clean_hold_ttl, clean_reason, clean_type, insufficient
from tollbooth.credit.unit import Clock, Locked, lock, portions_json
from tollbooth.db.models import CreditReservation
from tollbooth.ids import new_id

# Ledger notes of the entries a reservation writes when it closes.
COMMITTED_NOTE = "reservation committed"
RELEASED_NOTE = "reservation released"


def reserve(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    amount: str,
    ttl_sec: int,
    reason: str,
    request_id: str,
    clock: Clock,
) -> CreditReservation:
    account = require_active(resolve(session, caller, account_ref))  # no new holds
    ctype = clean_type(credit_type)
    value = parse_amount(amount)
    why = clean_reason(reason)
    ttl = clean_hold_ttl(ttl_sec)
    locked = lock(session, account.id, ctype, clock, create=False)
    if locked is None or locked.row.balance < value:
        raise insufficient(ctype, locked.row.balance if locked else ZERO, value)
    locked.load_spendable(value)
    row = hold(locked, value, ttl, why, request_id)
    session.add(row)
    locked.flush()
    return row


def hold(locked: Locked, value: Decimal, ttl: int, why: str, request_id: str) -> CreditReservation:
    """Hold `value` of the locked balance (its spendable grants loaded, enough of them) for
    `ttl` seconds: the new reservation (not added to the session) and its ledger entry."""
    now = locked.now
    expire_at = now + dt.timedelta(seconds=ttl)
    rid = new_id("crs")
    hold = locked.book.hold(rid, value, expire_at, now)
    row = CreditReservation(
        id=rid,
        billing_account_id=locked.account_id,
        credit_type=locked.credit_type,
        amount=value,
        committed_amount=None,
        state=engine.HELD,
        expire_at=expire_at,
        allocations=portions_json(hold.portions),
        reason=why,
        request_id=request_id,
        created_at=now,
    )
    locked.hold_rows[rid] = row
    locked.entry(
        "reservation", neg(value), now, reservation_id=rid, reason=why, request_id=request_id
    )
    locked.expect_event(expire_at)
    locked.depletion("reservation")
    return row


def _open_reservation(
    session: Session, caller: Caller, account_ref: str, reservation_id: str, clock: Clock
) -> tuple[Locked, CreditReservation]:
    account = resolve(session, caller, account_ref)
    if not reservation_id.strip():
        raise errors.required("reservation_id")
    found = repository.reservation(session, account.id, reservation_id.strip())
    if found is None:
        raise errors.not_found("reservation", reservation_id)
    locked = lock(session, account.id, found.credit_type, clock, create=False)
    assert locked is not None  # a reservation implies its balance row
    # Read again under the lock: another transaction may have settled it meanwhile.
    res = repository.reservation(session, account.id, found.id)
    assert res is not None
    return locked, res


def _closed(res: CreditReservation) -> errors.DomainError:
    return errors.failed_precondition(
        "RESERVATION_CLOSED",
        f"reservation {res.id!r} is {res.state}, not held",
        reservation_id=res.id,
        state=res.state,
    )


def commit(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    reservation_id: str,
    amount: str,
    request_id: str,
    clock: Clock,
) -> CreditReservation:
    """Debit the actual cost (at most the hold; empty means all of it), release the rest."""
    locked, res = _open_reservation(session, caller, account_ref, reservation_id, clock)
    actual = commit_amount(res, amount)
    locked.load_holds([res])
    settle_commit(locked, res, actual, request_id)
    locked.flush()
    return res


def commit_amount(res: CreditReservation, amount: str) -> Decimal:
    """What a commit of `res` consumes (`amount`, empty for all of the hold), or the refusal:
    RESERVATION_CLOSED, then an amount that is invalid or more than the hold."""
    if res.state != engine.HELD:
        raise _closed(res)
    actual = res.amount if not amount else parse_amount(amount, allow_zero=True)
    if actual > res.amount:
        raise errors.invalid(
            f"amount {fmt(actual)} is more than the {fmt(res.amount)} reserved",
            reason="AMOUNT_INVALID",
            field="amount",
        )
    return actual


def settle_commit(locked: Locked, res: CreditReservation, actual: Decimal, request_id: str) -> None:
    """Consume `actual` of the open hold `res` (in the book with its grants), give back the
    rest: the ledger entries, the reservation's figures, the depletion."""
    now = locked.now
    consumed, effects = locked.book.commit(res.id, actual, now)
    locked.entry(
        "release",
        res.amount,
        now,
        reservation_id=res.id,
        reason=COMMITTED_NOTE,
        request_id=request_id,
    )
    debit_id = None
    if actual > 0:
        debit_id = new_id("dbt")
        locked.entry(
            "debit",
            neg(actual),
            now,
            debit_id=debit_id,
            reservation_id=res.id,
            reason=res.reason,
            request_id=request_id,
            allocations=portions_json(consumed),
        )
    locked.record(effects)
    res.committed_amount = actual
    res.debit_id = debit_id
    locked.depletion("debit" if debit_id else "release", debit_id)


def release(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    reservation_id: str,
    request_id: str,
    clock: Clock,
) -> CreditReservation:
    """Give a hold back. Releasing a released or lapsed hold changes nothing."""
    locked, res = _open_reservation(session, caller, account_ref, reservation_id, clock)
    now = locked.now
    if res.state in (engine.RELEASED, engine.LAPSED):
        return res
    if res.state != engine.HELD:
        raise _closed(res)
    locked.load_holds([res])
    effects = locked.book.release(res.id, now)
    locked.entry(
        "release",
        res.amount,
        now,
        reservation_id=res.id,
        reason=RELEASED_NOTE,
        request_id=request_id,
    )
    locked.record(effects)
    locked.depletion("release")
    locked.flush()
    return res
