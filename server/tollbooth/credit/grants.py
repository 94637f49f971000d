"""Grant credits to a balance, and void what is left of a grant.

A grant pays overage back first: when usage burned beyond the balance (the balance's
`overage`), the grant's GRANT entry is followed by an OVERAGE_PAID entry taking
min(grant, overage) from the new grant (balance and overage both go down by it); only the
rest of the grant is spendable. Both entries are written under the balance lock, like every
burn, so concurrent grants and burns never pay back the same overage twice nor miss any.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.service import require_active, resolve
from tollbooth.amounts import MAX_TOTAL, ZERO, add, fmt, neg, parse_amount, sub
from tollbooth.auth.caller import Caller
from tollbooth.credit import engine, repository
from tollbooth.credit.rules import clean_reason, clean_type
from tollbooth.credit.unit import Clock, Locked, lock
from tollbooth.db.models import CreditGrant
from tollbooth.ids import new_id
from tollbooth.metadata import clean_metadata
from tollbooth.notifications import outbox

# Ledger note of the entry of a grant paying overage back.
OVERAGE_PAID_NOTE = "overage paid back"
GRANTED_NOTIFICATION = "credits.granted"


def grant(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    amount: str,
    reason: str,
    priority: int,
    expire_at: dt.datetime | None,
    request_id: str,
    metadata: dict[str, str],
    clock: Clock,
    for_purchase: bool = False,
    announce: bool = False,
) -> CreditGrant:
    """A new grant. An archived account takes none, except what a purchase already paid
    for brings (`for_purchase`: the provider's renewals of a subscription it still holds).
    `announce`: queue `account.credits.granted` in the same transaction (the API's grants;
    the purchase effects queue their own, with the price that brought them)."""
    account = resolve(session, caller, account_ref)
    if not for_purchase:
        require_active(account)
    ctype = clean_type(credit_type)
    value = parse_amount(amount)
    why = clean_reason(reason)
    meta = clean_metadata(metadata)
    locked = lock(session, account.id, ctype, clock, create=True)
    assert locked is not None
    row = add_grant(locked, value, why, priority, expire_at, request_id, meta)
    session.add(row)
    locked.flush()
    if announce:
        outbox.enqueue(session, **announcement(row))
    return row


def add_grant(
    locked: Locked,
    value: Decimal,
    why: str,
    priority: int,
    expire_at: dt.datetime | None,
    request_id: str,
    meta: dict[str, str],
) -> CreditGrant:
    """Grant `value` to the locked balance: the new grant (not added to the session), its
    ledger entry and the overage it pays back; refused when it expires before `now` or would
    take the balance past the largest storable amount."""
    now = locked.now
    ctype = locked.credit_type
    if expire_at is not None and expire_at <= now:
        raise errors.invalid("expire_time must be in the future", field="expire_time")
    if add(locked.row.balance, locked.row.reserved, value) > MAX_TOTAL:
        raise errors.invalid(
            f"the {ctype} balance would exceed the largest storable amount",
            reason="AMOUNT_INVALID",
            field="amount",
        )
    gid = new_id("cgr")
    e = locked.entry("grant", value, now, grant_id=gid, reason=why, request_id=request_id)
    paid = min(value, locked.row.overage)
    if paid > 0:
        locked.entry(
            "overage_paid",
            neg(paid),
            now,
            overage=neg(paid),
            grant_id=gid,
            reason=OVERAGE_PAID_NOTE,
            request_id=request_id,
            allocations=[{"grant_id": gid, "amount": fmt(paid)}],
        )
    remaining = sub(value, paid)
    row = CreditGrant(
        id=gid,
        billing_account_id=locked.account_id,
        credit_type=ctype,
        amount=value,
        remaining=remaining,
        held=ZERO,
        state=engine.ACTIVE if remaining > 0 else engine.DEPLETED,
        priority=priority,
        expire_at=expire_at,
        expiry_key=engine.expiry_key(expire_at),
        seq=e.seq,
        reason=why,
        request_id=request_id,
        attributes=meta,
        created_at=now,
    )
    locked.expect_event(expire_at)
    locked.depletion("grant")
    return row


def announcement(row: CreditGrant) -> dict[str, Any]:
    """`outbox.enqueue`'s arguments for `account.credits.granted` of a new grant."""
    return {
        "type_": GRANTED_NOTIFICATION,
        "account_id": row.billing_account_id,
        "payload": {
            "grant_id": row.id,
            "credit_type": row.credit_type,
            "amount": fmt(row.amount),
            "reason": row.reason,
            "request_id": row.request_id,
        },
        "dedupe_key": f"{GRANTED_NOTIFICATION}:{row.id}",
        "now": row.created_at,
    }


def void_grant(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    grant_id: str,
    reason: str,
    request_id: str,
    clock: Clock,
) -> CreditGrant:
    """Void what is left of a grant; parts under holds are voided when they come back."""
    account = resolve(session, caller, account_ref)
    if not grant_id.strip():
        raise errors.required("grant_id")
    why = clean_reason(reason)
    found = repository.grant(session, account.id, grant_id.strip())
    if found is None:
        raise errors.not_found("grant", grant_id)
    locked = lock(session, account.id, found.credit_type, clock, create=False)
    assert locked is not None
    now = locked.now
    row = repository.grant(session, account.id, found.id)  # again, under the lock
    assert row is not None
    if row.state == engine.VOIDED:
        raise errors.failed_precondition(
            "GRANT_VOIDED", f"grant {row.id!r} is already voided", grant_id=row.id
        )
    locked.load_grants([row])
    locked.record(locked.book.void(row.id, now), why or "voided", request_id)
    locked.depletion("void")
    locked.flush()
    return row
