"""ReserveCredits, CommitReservation and GrantCredits on PostgreSQL in two round trips.

The frame is `twotrips.Trip`'s (see there): the claim, the account, the balance lock and the
rows the operation needs under it in the first flush; the writes, the stored response and
COMMIT in the second. Between them the operation runs on the general path's own code
(`reservations.hold`, `reservations.settle_commit`, `grants.add_grant` on a `Locked` built
from the rows read), and `twotrips.written` turns what `Locked.flush` would write into
statements. An expiry due, grants beyond the first batch, an archived account continue in
the same transaction on the general path, whose answers, errors and their order are the same.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from tollbooth import errors, idempotency
from tollbooth.amounts import add, parse_amount
from tollbooth.auth.caller import Caller
from tollbooth.credit import debits, grants, reservations
from tollbooth.credit.rules import clean_hold_ttl, clean_reason, clean_type
from tollbooth.credit.twotrips import (
    LOCK,
    SPENDABLE,
    Trip,
    figures,
    grant_rows,
    locked_of,
    run,
    start,
    utc,
    written,
)
from tollbooth.credit.unit import GRANT_BATCH, Clock, Locked
from tollbooth.db.models import CreditGrant, CreditReservation
from tollbooth.metadata import clean_metadata
from tollbooth.notifications import outbox

R = TypeVar("R", bound=Message)

_RESERVATION_INSERT = """
INSERT INTO credit_reservations (id, billing_account_id, credit_type, amount, committed_amount,
  state, expire_at, allocations, reason, request_id, debit_id, created_at, closed_at)
VALUES (%(id)s, %(account)s, %(ctype)s, %(amount)s, NULL, %(state)s, %(expire_at)s,
  CAST(%(allocations)s AS json), %(reason)s, %(request_id)s, NULL, %(created_at)s, NULL)
"""
_RESERVATION_WRITE = """
UPDATE credit_reservations
SET state = %(state)s, committed_amount = %(committed_amount)s, debit_id = %(debit_id)s,
  closed_at = %(closed_at)s
WHERE id = %(id)s AND billing_account_id = %(account)s
"""
# The balance of a reservation, locked (the reservation's credit type never changes).
_RESERVATION_LOCK = (
    "SELECT b.balance, b.reserved, b.seq, b.next_event_at, b.depleted, b.depletions,"
    " b.updated_at, b.overage, b.credit_type FROM credit_balances AS b"
    " JOIN credit_reservations AS r"
    " ON r.billing_account_id = b.billing_account_id AND r.credit_type = b.credit_type"
    " WHERE r.id = %(reservation)s AND r.billing_account_id = %(account)s FOR UPDATE OF b"
)
# Then, under the lock, the reservation and the grants it holds from.
_RESERVATION = (
    "SELECT id, credit_type, amount, committed_amount, state, expire_at, allocations, reason,"
    " request_id, debit_id, created_at, closed_at FROM credit_reservations"
    " WHERE id = %(reservation)s AND billing_account_id = %(account)s"
)
_HELD_GRANTS = (
    "SELECT g.id, g.seq, g.priority, g.expire_at, g.remaining, g.held, g.state"
    " FROM credit_grants AS g WHERE g.billing_account_id = %(account)s AND g.id IN ("
    "  SELECT p ->> 'grant_id' FROM credit_reservations AS r"
    "  CROSS JOIN LATERAL json_array_elements(CAST(r.allocations AS json)) AS p"
    "  WHERE r.id = %(reservation)s AND r.billing_account_id = %(account)s)"
)
# A grant or a reservation holds its account FOR KEY SHARE, before its balance (the order
# refunds and renewals take): an ArchiveAccount in progress is waited for and then seen, and
# one that starts later waits for its commit, so none is acknowledged after the archive was.
# (The general path either falls back to runs in this transaction, after this lock.)
_ACCOUNT_KEY_SHARE = "SELECT archived_at FROM billing_accounts WHERE id = %(account)s FOR KEY SHARE"
# A grant's balance row, created if missing (`repository.ensure_balance`, for an account that
# exists: the account check comes after it in the pipeline).
_ENSURE = (
    "INSERT INTO credit_balances (billing_account_id, credit_type, balance, reserved, seq,"
    " next_event_at, depleted, depletions, updated_at, overage)"
    " SELECT id, %(ctype)s, 0, 0, 0, NULL, false, 0, %(created)s, 0"
    " FROM billing_accounts WHERE id = %(account)s"
    " ON CONFLICT (billing_account_id, credit_type) DO NOTHING"
)
_GRANT_INSERT = """
INSERT INTO credit_grants (id, billing_account_id, credit_type, amount, remaining, held, state,
  priority, expire_at, expiry_key, seq, reason, request_id, metadata, created_at, closed_at)
VALUES (%(id)s, %(account)s, %(ctype)s, %(amount)s, %(remaining)s, %(held)s, %(state)s,
  %(priority)s, %(expire_at)s, %(expiry_key)s, %(seq)s, %(reason)s, %(request_id)s,
  CAST(%(metadata)s AS json), %(created_at)s, NULL)
"""


@dataclass(frozen=True)
class Request:
    """What every converted RPC passes: who, under which key, and how to answer."""

    caller: Caller
    ref: str
    key: str
    scope: str
    digest: str
    clock: Clock


def _frame(
    session: Session, r: Request, response_type: type[R], body: Callable[[Trip], R]
) -> R | None:
    """`twotrips.run` for a request whose request_id is valid (None: the general path)."""
    if not r.key:
        return None
    try:
        idempotency.validate_key(r.key)
    except errors.DomainError:
        return None
    return run(
        session,
        r.caller,
        r.ref,
        key=r.key,
        scope=r.scope,
        digest=r.digest,
        response_type=response_type,
        body=body,
    )


# -- ReserveCredits ---------------------------------------------------------------------------


def reserve(
    session: Session,
    r: Request,
    *,
    credit_type: str,
    amount: str,
    ttl_sec: int,
    reason: str,
    out: Callable[[CreditReservation], R],
    response_type: type[R],
) -> R | None:
    """ReserveCredits with idempotency (`reservations.reserve`); None when only the general
    path can answer (nothing was done)."""
    try:
        ctype, value = clean_type(credit_type), parse_amount(amount)
        why, ttl = clean_reason(reason), clean_hold_ttl(ttl_sec)
    except errors.DomainError:
        return None

    def general(trip: Trip) -> R:
        return trip.general(
            lambda: out(
                reservations.reserve(
                    session,
                    r.caller,
                    r.ref,
                    credit_type=credit_type,
                    amount=amount,
                    ttl_sec=ttl_sec,
                    reason=reason,
                    request_id=r.key,
                    clock=r.clock,
                )
            )
        )

    def body(trip: Trip) -> R:
        account, (shared, lock, spendable) = trip.open(
            [_ACCOUNT_KEY_SHARE, LOCK, SPENDABLE], {"ctype": ctype, "limit": GRANT_BATCH}
        )
        held = shared.fetchone()
        row = figures(lock.fetchone())
        if account.archived_at is not None or held is None or held.archived_at is not None:
            return general(trip)  # ACCOUNT_ARCHIVED, as the general path says it
        now = debits.fast_start(row, ctype, value, r.clock)
        first = spendable.fetchall()
        if now is None or (
            len(first) == GRANT_BATCH and add(*(g.remaining for g in first)) < value
        ):
            return general(trip)  # an expiry due, or more grants than the first batch
        locked = locked_of(session, trip.account_id, ctype, row, now)
        locked.load_grants(grant_rows(trip.account_id, ctype, first))
        hold = reservations.hold(locked, value, ttl, why, r.key)
        writes = written(locked)  # the rows as `Locked.flush` leaves them
        response = out(hold)
        writes.append((_RESERVATION_INSERT, _reservation_values(hold)))
        return trip.finish(writes, response)

    return _frame(session, r, response_type, body)


def _reservation_values(res: CreditReservation) -> dict[str, Any]:
    return {
        "id": res.id,
        "account": res.billing_account_id,
        "ctype": res.credit_type,
        "amount": res.amount,
        "committed_amount": res.committed_amount,
        "state": res.state,
        "expire_at": res.expire_at,
        "allocations": json.dumps(res.allocations),
        "reason": res.reason,
        "request_id": res.request_id,
        "debit_id": res.debit_id,
        "created_at": res.created_at,
        "closed_at": res.closed_at,
    }


# -- CommitReservation ------------------------------------------------------------------------


def commit(
    session: Session,
    r: Request,
    *,
    reservation_id: str,
    amount: str,
    out: Callable[[CreditReservation], R],
    response_type: type[R],
) -> R | None:
    """CommitReservation with idempotency (`reservations.commit`); None when only the
    general path can answer (nothing was done)."""
    rid = reservation_id.strip()
    if not rid:
        return None

    def general(trip: Trip) -> R:
        return trip.general(
            lambda: out(
                reservations.commit(
                    session,
                    r.caller,
                    r.ref,
                    reservation_id=reservation_id,
                    amount=amount,
                    request_id=r.key,
                    clock=r.clock,
                )
            )
        )

    def body(trip: Trip) -> R:
        _, (lock, found, held) = trip.open(
            [_RESERVATION_LOCK, _RESERVATION, _HELD_GRANTS], {"reservation": rid}
        )
        res_row = found.fetchone()
        if res_row is None:
            raise errors.not_found("reservation", reservation_id)
        row = figures(lock.fetchone())
        assert row is not None  # a reservation implies its balance row
        now = start(row, r.clock)
        if now is None:
            return general(trip)  # expiries due, maybe this hold's: recorded first
        res = _reservation(trip.account_id, res_row)
        actual = reservations.commit_amount(res, amount)
        locked = locked_of(session, trip.account_id, res.credit_type, row, now)
        locked.load_grants(grant_rows(trip.account_id, res.credit_type, held.fetchall()))
        if locked.add_holds([res]):  # a grant of the hold not read: cannot be, but be safe
            return general(trip)
        reservations.settle_commit(locked, res, actual, r.key)
        writes = written(locked)  # the rows as `Locked.flush` leaves them
        response = out(res)
        writes.append((_RESERVATION_WRITE, _reservation_values(res)))
        return trip.finish(writes, response)

    return _frame(session, r, response_type, body)


def _reservation(account_id: str, row: Any) -> CreditReservation:
    """A reservation read in a pipeline, as an object outside the session."""
    return CreditReservation(
        id=row.id,
        billing_account_id=account_id,
        credit_type=row.credit_type,
        amount=row.amount,
        committed_amount=row.committed_amount,
        state=row.state,
        expire_at=utc(row.expire_at),
        allocations=row.allocations,
        reason=row.reason,
        request_id=row.request_id,
        debit_id=row.debit_id,
        created_at=utc(row.created_at),
        closed_at=utc(row.closed_at),
    )


# -- GrantCredits -----------------------------------------------------------------------------


def grant(
    session: Session,
    r: Request,
    *,
    credit_type: str,
    amount: str,
    reason: str,
    priority: int,
    expire_at: dt.datetime | None,
    metadata: dict[str, str],
    out: Callable[[CreditGrant], R],
    response_type: type[R],
) -> R | None:
    """GrantCredits with idempotency (`grants.grant`, announced: `account.credits.granted`
    queued in the grant's transaction); None when only the general path can answer."""
    try:
        ctype, value = clean_type(credit_type), parse_amount(amount)
        why, meta = clean_reason(reason), clean_metadata(metadata)
    except errors.DomainError:
        return None

    def general(trip: Trip) -> R:
        return trip.general(
            lambda: out(
                grants.grant(
                    session,
                    r.caller,
                    r.ref,
                    credit_type=credit_type,
                    amount=amount,
                    reason=reason,
                    priority=priority,
                    expire_at=expire_at,
                    request_id=r.key,
                    metadata=metadata,
                    clock=r.clock,
                    announce=True,
                )
            )
        )

    def body(trip: Trip) -> R:
        account, (shared, _, lock) = trip.open(
            [_ACCOUNT_KEY_SHARE, _ENSURE, LOCK], {"ctype": ctype, "created": r.clock()}
        )
        held = shared.fetchone()
        row = figures(lock.fetchone())
        if account.archived_at is not None or held is None or held.archived_at is not None:
            return general(trip)  # ACCOUNT_ARCHIVED, as the general path says it
        if row is None:
            return general(trip)
        now = start(row, r.clock)
        if now is None:
            return general(trip)  # expiries due: recorded first
        locked: Locked = locked_of(session, trip.account_id, ctype, row, now)
        new = grants.add_grant(locked, value, why, priority, expire_at, r.key, meta)
        writes = written(locked)  # the rows as `Locked.flush` leaves them
        response = out(new)
        writes.append((_GRANT_INSERT, _grant_values(new)))
        writes.append((outbox.PG_ENQUEUE, outbox.pg_params(outbox.row(**grants.announcement(new)))))
        return trip.finish(writes, response)

    return _frame(session, r, response_type, body)


def _grant_values(g: CreditGrant) -> dict[str, Any]:
    return {
        "id": g.id,
        "account": g.billing_account_id,
        "ctype": g.credit_type,
        "amount": g.amount,
        "remaining": g.remaining,
        "held": g.held,
        "state": g.state,
        "priority": g.priority,
        "expire_at": g.expire_at,
        "expiry_key": g.expiry_key,
        "seq": g.seq,
        "reason": g.reason,
        "request_id": g.request_id,
        "metadata": json.dumps(g.attributes),
        "created_at": g.created_at,
    }
