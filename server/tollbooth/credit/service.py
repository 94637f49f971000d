"""Credit rules: grants, debits, holds, voids and balances. Flushes, never commits.

Every change to a balance first locks its row (`repository.lock_balance`), records any expiry
that has come due since the last write (so the ledger shows it, at its own instant), then
asks the engine what to change, appends the ledger entries and writes the grants and holds
back, all in the caller's transaction. The balance row carries the ledger's running total,
so a reader answers from one row unless an expiry is due, in which case it computes the
balance as of `now` without writing anything.

The clock is always a parameter: the servicer passes the real one, tests their own. A write
reads it only once it holds the balance lock, and never earlier than the balance's last
write, so the entries of one balance are in time order even across replicas whose clocks
differ slightly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from tollbooth import errors, paging
from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller
from tollbooth.catalog.fields import (
    CREDIT_TYPE_RE,
    MAX_AMOUNT_FRAC_DIGITS,
    MAX_AMOUNT_INT_DIGITS,
    clean_credit_amount,
    clean_metadata,
)
from tollbooth.credit import engine, repository
from tollbooth.credit.engine import ZERO, Book, Effect, Expired, Lapsed, Voided, add, fmt, sub
from tollbooth.db.models import (
    BillingAccount,
    CreditBalance,
    CreditGrant,
    CreditLedgerEntry,
    CreditReservation,
    ExactDecimal,
    UnboundedDecimal,
)
from tollbooth.ids import new_id
from tollbooth.notifications import outbox

DEPLETED_NOTIFICATION = "credits.balance_depleted"
DEFAULT_HOLD_TTL_SEC = 900
MAX_HOLD_TTL_SEC = 7 * 86_400
# NUMERIC(38, 18): a balance (free plus held) stays below 10^20.
MAX_TOTAL = Decimal(10) ** MAX_AMOUNT_INT_DIGITS - Decimal(10) ** -MAX_AMOUNT_FRAC_DIGITS
MAX_REASON = 500
# Timestamps from 0001-01-01 to 9999-12-31 (the range of google.protobuf.Timestamp).
MIN_TS_SECONDS, MAX_TS_SECONDS = -62_135_596_800, 253_402_300_799
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# A debit loads this many grants first; only a debit larger than all of them loads the rest.
GRANT_BATCH = 50

Clock = Callable[[], dt.datetime]
# Ledger notes of the entries a reservation writes when it closes.
LAPSED_NOTE = "reservation expired"
COMMITTED_NOTE = "reservation committed"
RELEASED_NOTE = "reservation released"
PLAIN_ZERO = re.compile(r"0+(?:\.0+)?")
# Changes that consume credit: a balance they bring to zero is "depleted".
CONSUMING = ("debit", "expiration", "void")
# Overage is not bounded by what was granted (see `burn_many`): exact at any size it can
# reach (a burn is at most ~10^350, see usage.burn), rounding is an error.
WIDE = decimal.Context(
    prec=1000,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Rounded, decimal.Overflow],
)


# -- validation -----------------------------------------------------------------------------


def clean_type(raw: str, field_name: str = "credit_type") -> str:
    value = raw.strip()
    if not value:
        raise errors.required(field_name)
    if not CREDIT_TYPE_RE.fullmatch(value):
        raise errors.invalid(
            f"{field_name} must be 1-100 letters, digits and _.:- ", field=field_name
        )
    return value


def parse_amount(raw: str, field_name: str = "amount", *, allow_zero: bool = False) -> Decimal:
    """A decimal string with at most 20 integer and 18 fractional digits; finer is refused."""
    if not raw:
        raise errors.required(field_name)
    if allow_zero and PLAIN_ZERO.fullmatch(raw):
        return ZERO
    return Decimal(clean_credit_amount(raw, field_name))


def clean_reason(raw: str) -> str:
    value = raw.strip()
    if len(value) > MAX_REASON:
        raise errors.invalid(f"reason is longer than {MAX_REASON} characters", field="reason")
    return value


def timestamp(seconds: int, nanos: int, field_name: str) -> dt.datetime:
    if not MIN_TS_SECONDS <= seconds <= MAX_TS_SECONDS or not 0 <= nanos < 1_000_000_000:
        raise errors.invalid(f"{field_name} is out of range", field=field_name)
    return EPOCH + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)


def insufficient(credit_type: str, balance: Decimal, required: Decimal) -> errors.DomainError:
    shortfall = sub(required, balance)
    return errors.failed_precondition(
        "INSUFFICIENT_CREDITS",
        f"not enough {credit_type} credits: {fmt(balance)} available, {fmt(required)} "
        f"required, {fmt(shortfall)} short",
        credit_type=credit_type,
        balance=fmt(balance),
        required=fmt(required),
        shortfall=fmt(shortfall),
    )


# -- one locked balance ---------------------------------------------------------------------


def _grant_model(row: CreditGrant) -> engine.Grant:
    return engine.Grant(
        id=row.id,
        seq=row.seq,
        priority=row.priority,
        expire_at=row.expire_at,
        remaining=row.remaining,
        held=row.held,
        state=row.state,
    )


def _hold_model(row: CreditReservation) -> engine.Hold:
    return engine.Hold(
        id=row.id,
        amount=row.amount,
        expire_at=row.expire_at,
        portions=[engine.Portion(p["grant_id"], Decimal(p["amount"])) for p in row.allocations],
        state=row.state,
    )


def _portions_json(portions: list[engine.Portion]) -> list[dict[str, str]]:
    return [{"grant_id": p.grant_id, "amount": fmt(p.amount)} for p in portions]


class Locked:
    """One balance row, locked for this transaction, and the part of its book loaded so far."""

    def __init__(self, session: Session, row: CreditBalance, now: dt.datetime) -> None:
        self.session = session
        self.row = row
        self.now = now
        self.book = Book()
        self.grant_rows: dict[str, CreditGrant] = {}
        self.hold_rows: dict[str, CreditReservation] = {}
        self.entries: list[CreditLedgerEntry] = []

    @property
    def account_id(self) -> str:
        return self.row.billing_account_id

    @property
    def credit_type(self) -> str:
        return self.row.credit_type

    # loading
    def load_grants(self, rows: list[CreditGrant]) -> None:
        for r in rows:
            if r.id not in self.grant_rows:
                self.grant_rows[r.id] = r
                self.book.grants[r.id] = _grant_model(r)

    def load_holds(self, rows: list[CreditReservation]) -> None:
        for r in rows:
            if r.id not in self.hold_rows:
                self.hold_rows[r.id] = r
                self.book.holds[r.id] = _hold_model(r)
        missing = {
            p.grant_id
            for h in self.book.holds.values()
            for p in h.portions
            if p.grant_id not in self.grant_rows
        }
        self.load_grants(repository.grants_by_ids(self.session, missing))

    def load_everything(self) -> None:
        self.load_grants(repository.active_grants(self.session, self.account_id, self.credit_type))
        self.load_holds(
            repository.held_reservations(self.session, self.account_id, self.credit_type)
        )

    def load_spendable(self, amount: Decimal) -> None:
        """Enough grants, in consumption order, to cover `amount` (all of them if need be)."""
        first = repository.active_grants(
            self.session, self.account_id, self.credit_type, limit=GRANT_BATCH
        )
        self.load_grants(first)
        if len(first) == GRANT_BATCH and add(*(g.remaining for g in first)) < amount:
            self.load_grants(
                repository.active_grants(self.session, self.account_id, self.credit_type)
            )

    # time
    def settle(self) -> None:
        """Record every expiry due at `now` (grants and holds), each at its own instant."""
        due = self.row.next_event_at
        if due is None or due > self.now:
            return
        self.load_everything()
        self.record(self.book.settle(self.now))
        self.row.next_event_at = self.book.next_event_at()
        self.depletion("expiration")
        self.flush()

    def expect_event(self, at: dt.datetime | None) -> None:
        if at is not None and (self.row.next_event_at is None or at < self.row.next_event_at):
            self.row.next_event_at = at

    # ledger
    def entry(
        self, kind: str, amount: Decimal, at: dt.datetime, **fields: Any
    ) -> CreditLedgerEntry:
        row = self.row
        row.seq += 1
        row.balance = add(row.balance, amount)
        if kind in ("reservation", "release"):
            row.reserved = sub(row.reserved, amount)
        if row.balance < 0 or row.reserved < 0:  # the lock makes this unreachable
            raise RuntimeError(f"credit balance {row.billing_account_id}/{row.credit_type} < 0")
        fields.setdefault("reason", "")
        fields.setdefault("request_id", "")
        e = CreditLedgerEntry(
            id=new_id("cle"),
            billing_account_id=row.billing_account_id,
            credit_type=row.credit_type,
            seq=row.seq,
            kind=kind,
            amount=amount,
            balance_after=row.balance,
            created_at=at,
            **fields,
        )
        self.entries.append(e)
        return e

    def record(self, effects: list[Effect], reason: str = "", request_id: str = "") -> None:
        for eff in effects:
            if isinstance(eff, Expired):
                self.entry("expiration", -eff.amount, eff.at, grant_id=eff.grant_id)
            elif isinstance(eff, Voided):
                self.entry(
                    "void",
                    -eff.amount,
                    eff.at,
                    grant_id=eff.grant_id,
                    reason=reason,
                    request_id=request_id,
                )
            elif isinstance(eff, Lapsed):
                self.entry(
                    "release",
                    eff.amount,
                    eff.at,
                    reservation_id=eff.hold_id,
                    reason=LAPSED_NOTE,
                )

    def depletion(self, cause: str, debit_id: str | None = None) -> None:
        """A balance that reaches zero by consumption notifies once; rising above re-arms it."""
        row = self.row
        if row.balance > 0:
            row.depleted = False
            return
        if row.depleted or cause not in CONSUMING:
            return
        row.depleted = True
        row.depletions += 1
        at = self.entries[-1].created_at if self.entries else self.now
        notify_depleted(
            self.session,
            row.billing_account_id,
            row.credit_type,
            row.depletions,
            cause,
            debit_id,
            at,
            self.now,
        )

    def flush(self) -> None:
        """Write back what the engine changed, then the new ledger entries."""
        for gid in self.book.dirty_grants:
            g, r = self.book.grants[gid], self.grant_rows[gid]
            r.remaining, r.held = g.remaining, g.held
            if r.state != g.state:
                r.state = g.state
                if g.state in (engine.EXPIRED, engine.VOIDED):
                    r.closed_at = self.now
        for hid in self.book.dirty_holds:
            h, hr = self.book.holds[hid], self.hold_rows[hid]
            if hr.state != h.state:
                hr.state = h.state
                hr.closed_at = h.expire_at if h.state == engine.LAPSED else self.now
        self.book.dirty_grants.clear()
        self.book.dirty_holds.clear()
        self.row.updated_at = self.now
        self.session.add_all(self.entries)
        self.entries = []
        self.session.flush()


def notify_depleted(
    session: Session,
    account_id: str,
    credit_type: str,
    number: int,
    cause: str,
    debit_id: str | None,
    at: dt.datetime,
    now: dt.datetime,
) -> None:
    """The `number`-th depletion of this balance: once, whatever retries or replicas do."""
    outbox.enqueue(
        session,
        DEPLETED_NOTIFICATION,
        account_id,
        {
            "billing_account_id": account_id,
            "credit_type": credit_type,
            "balance": "0",
            "cause": cause,
            "debit_id": debit_id,
            "occurred_at": at.isoformat(),
        },
        f"{DEPLETED_NOTIFICATION}:{account_id}:{credit_type}:{number}",
        now,
    )


def _lock(
    session: Session, account_id: str, credit_type: str, clock: Clock, *, create: bool
) -> Locked | None:
    if create:
        repository.ensure_balance(session, account_id, credit_type, clock())
    row = repository.lock_balance(session, account_id, credit_type)
    if row is None:
        return None
    locked = Locked(session, row, max(clock(), row.updated_at))
    locked.settle()
    return locked


# -- operations -----------------------------------------------------------------------------


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
) -> CreditGrant:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type)
    value = parse_amount(amount)
    why = clean_reason(reason)
    meta = clean_metadata(metadata)
    locked = _lock(session, account.id, ctype, clock, create=True)
    assert locked is not None
    now = locked.now
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
    row = CreditGrant(
        id=gid,
        billing_account_id=account.id,
        credit_type=ctype,
        amount=value,
        remaining=value,
        held=ZERO,
        state=engine.ACTIVE,
        priority=priority,
        expire_at=expire_at,
        expiry_key=engine.expiry_key(expire_at),
        seq=e.seq,
        reason=why,
        request_id=request_id,
        attributes=meta,
        created_at=now,
    )
    session.add(row)
    locked.expect_event(expire_at)
    locked.depletion("grant")
    locked.flush()
    return row


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
    fast = _debit_fast(session, account.id, ctype, value, why, request_id, meta, clock)
    if fast is not None:
        return fast
    locked = _lock(session, account.id, ctype, clock, create=False)
    if locked is None or locked.row.balance < value:
        raise insufficient(ctype, locked.row.balance if locked else ZERO, value)
    now = locked.now
    locked.load_spendable(value)
    portions = locked.book.debit(value, now)
    debit_id = new_id("dbt")
    e = locked.entry(
        "debit",
        -value,
        now,
        debit_id=debit_id,
        reason=why,
        request_id=request_id,
        allocations=_portions_json(portions),
        attributes=meta or None,
    )
    locked.depletion("debit", debit_id)
    locked.flush()
    return e


_B = CreditBalance.__table__
_G = CreditGrant.__table__
_L = CreditLedgerEntry.__table__
# Built once: the hot path only binds values.
_BALANCE_KEY = (_B.c.billing_account_id == bindparam("k_account")) & (
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
    .where(_BALANCE_KEY)
    .with_for_update()
)
_SPENDABLE = (
    select(_G.c.id, _G.c.seq, _G.c.priority, _G.c.expire_at, _G.c.remaining, _G.c.held, _G.c.state)
    .where(
        _G.c.billing_account_id == bindparam("k_account"),
        _G.c.credit_type == bindparam("k_type"),
        _G.c.state == "active",
    )
    .order_by(_G.c.priority, _G.c.expiry_key, _G.c.seq)
    .limit(GRANT_BATCH)
)
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
    .where(_BALANCE_KEY)
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
    .where(_BALANCE_KEY)
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
  grant_id, debit_id, reservation_id, reason, request_id, allocations, metadata, created_at)
SELECT v.id, v.a, v.t, v.seq, 'debit', v.amount, v.balance_after, NULL, v.debit_id, NULL,
  v.reason, '', v.allocations, v.metadata, v.at
FROM jsonb_to_recordset(CAST(:ledger AS jsonb)) AS v(id varchar, a varchar, t varchar,
  seq bigint, amount numeric, balance_after numeric, debit_id varchar, reason varchar,
  allocations json, metadata json, at timestamptz)
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
    key = {"k_account": account_id, "k_type": ctype}
    row = session.execute(_BALANCE_LOCK, key).first()
    if row is None:
        raise insufficient(ctype, ZERO, value)
    now = max(clock(), row.updated_at)
    if row.next_event_at is not None and row.next_event_at <= now:
        return None
    if row.balance < value:
        raise insufficient(ctype, row.balance, value)
    grants = session.execute(_SPENDABLE, key).all()
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
    seq = row.seq + 1
    entry = CreditLedgerEntry(
        id=new_id("cle"),
        billing_account_id=account_id,
        credit_type=ctype,
        seq=seq,
        kind="debit",
        amount=-value,
        balance_after=balance_after,
        grant_id=None,
        debit_id=new_id("dbt"),
        reservation_id=None,
        reason=why,
        request_id=request_id,
        allocations=_portions_json(portions),
        attributes=meta or None,
        created_at=now,
    )
    depleted, depletions = row.depleted, row.depletions
    if balance_after > 0:
        depleted = False
    elif not depleted:
        depleted, depletions = True, depletions + 1
        notify_depleted(session, account_id, ctype, depletions, "debit", entry.debit_id, now, now)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _PG_DEBIT_WRITE,
            {
                "grants": json.dumps(
                    [{"id": g, "remaining": fmt(r), "state": st} for g, r, st in grant_writes]
                ),
                "balance": balance_after,
                "seq": seq,
                "depleted": depleted,
                "depletions": depletions,
                "now": now,
                "account": account_id,
                "ctype": ctype,
                "id": entry.id,
                "amount": entry.amount,
                "debit_id": entry.debit_id,
                "reason": why,
                "request_id": request_id,
                "allocations": json.dumps(entry.allocations),
                "metadata": json.dumps(meta) if meta else None,
            },
        )
        return entry
    session.execute(
        _GRANT_WRITE,
        [{"g_id": g, "g_remaining": r, "g_state": st} for g, r, st in grant_writes],
    )
    session.execute(_LEDGER_INSERT, {name: getattr(entry, attr) for attr, name in _LEDGER_COLUMNS})
    session.execute(
        _BALANCE_WRITE,
        {
            **key,
            "v_balance": balance_after,
            "v_seq": seq,
            "v_depleted": depleted,
            "v_depletions": depletions,
            "v_now": now,
        },
    )
    return entry


# -- burns (usage) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Burn:
    """Take `amount` (>= 0, any size) from a balance now; what the balance lacks is overage."""

    account_id: str
    credit_type: str
    amount: Decimal
    reason: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class Burned:
    burn: Burn
    taken: Decimal
    overage: Decimal
    # The DEBIT ledger entry of what was taken; None when the balance held nothing.
    entry_id: str | None
    debit_id: str | None


def burn(
    session: Session,
    account_id: str,
    credit_type: str,
    amount: Decimal,
    *,
    reason: str,
    metadata: dict[str, str],
    clock: Clock,
) -> Burned:
    """One burn; see `burn_many`."""
    return burn_many(session, [Burn(account_id, credit_type, amount, reason, metadata)], clock)[0]


def burn_many(session: Session, burns: list[Burn], clock: Clock) -> list[Burned]:
    """Burn credits for work already done: never refused for lack of credits.

    Each burn takes min(balance, amount) through the debit path (grants in consumption order,
    one DEBIT ledger entry with its allocations, the depletion notification when it empties
    the balance) and adds the rest to the balance's overage. Burns of one balance apply in
    the order given. The account ids must exist (callers resolved them); the balance rows are
    created when missing, so overage shows even where nothing was ever granted.

    Every balance is created and then locked in key order, all in two statements, whatever
    the number of balances: concurrent writers cannot deadlock and a batch of many accounts
    costs a few round trips, not a few per account. A balance with an expiry due, or whose
    first grants do not cover what it gives, takes the general path (`Locked`), which records
    the expiries first.
    """
    if not burns:
        return []
    by_key: dict[tuple[str, str], list[Burn]] = {}
    for b in burns:
        if b.amount < 0:
            raise ValueError("a burn amount is never negative")
        by_key.setdefault((b.account_id, b.credit_type), []).append(b)
    keys = sorted(by_key)
    repository.ensure_balances(session, keys, clock())
    rows = repository.lock_balances(session, keys)
    done: dict[int, Burned] = {}
    slow: list[tuple[str, str]] = []
    fast: dict[tuple[str, str], tuple[Any, dt.datetime, Decimal]] = {}
    for key in keys:
        row = rows[key]
        now = max(clock(), row.updated_at)
        if row.next_event_at is not None and row.next_event_at <= now:
            slow.append(key)
            continue
        wanted = _wide_sum(b.amount for b in by_key[key])
        fast[key] = (row, now, min(row.balance, wanted))
    grants = repository.spendable_grants_of(
        session, [k for k, (_, _, take) in fast.items() if take > 0], GRANT_BATCH
    )
    grant_writes: list[dict[str, Any]] = []
    ledger_rows: list[dict[str, Any]] = []
    balance_writes: list[dict[str, Any]] = []
    for key, (row, now, take) in fast.items():
        loaded = grants.get(key, [])
        if len(loaded) == GRANT_BATCH and add(*(g.remaining for g in loaded)) < take:
            slow.append(key)
            continue
        book = Book.of(
            engine.Grant(g.id, g.seq, g.priority, g.expire_at, g.remaining, g.held, g.state)
            for g in loaded
        )
        balance, seq, overage = row.balance, row.seq, row.overage
        depleted, depletions = row.depleted, row.depletions
        for b in by_key[key]:
            taken = min(balance, b.amount)
            rest = WIDE.subtract(b.amount, taken)
            overage = WIDE.add(overage, rest)
            entry_id = debit_id = None
            if taken > 0:
                portions = book.debit(taken, now)
                balance = sub(balance, taken)
                seq += 1
                entry_id, debit_id = new_id("cle"), new_id("dbt")
                ledger_rows.append(
                    {
                        "id": entry_id,
                        "billing_account_id": b.account_id,
                        "credit_type": b.credit_type,
                        "seq": seq,
                        "kind": "debit",
                        "amount": -taken,
                        "balance_after": balance,
                        "grant_id": None,
                        "debit_id": debit_id,
                        "reservation_id": None,
                        "reason": b.reason,
                        "request_id": "",
                        "allocations": _portions_json(portions),
                        "metadata": _burn_metadata(b, rest),
                        "created_at": now,
                    }
                )
                if balance > 0:
                    depleted = False
                elif not depleted:
                    depleted, depletions = True, depletions + 1
                    notify_depleted(
                        session,
                        b.account_id,
                        b.credit_type,
                        depletions,
                        "debit",
                        debit_id,
                        now,
                        now,
                    )
            done[id(b)] = Burned(b, taken, rest, entry_id, debit_id)
        grant_writes += [
            {
                "g_id": gid,
                "g_remaining": book.grants[gid].remaining,
                "g_state": book.grants[gid].state,
            }
            for gid in sorted(book.dirty_grants)
        ]
        balance_writes.append(
            {
                "k_account": key[0],
                "k_type": key[1],
                "v_balance": balance,
                "v_seq": seq,
                "v_depleted": depleted,
                "v_depletions": depletions,
                "v_overage": overage,
                "v_now": now,
            }
        )
    if balance_writes:
        _write_burns(session, grant_writes, ledger_rows, balance_writes)
    for key in sorted(slow):
        for b, burned in _burn_locked(session, key, by_key[key], clock):
            done[id(b)] = burned
    return [done[id(b)] for b in burns]


def _write_burns(
    session: Session,
    grant_writes: list[dict[str, Any]],
    ledger_rows: list[dict[str, Any]],
    balance_writes: list[dict[str, Any]],
) -> None:
    """Grants, ledger entries and balances of the fast path: one statement on PostgreSQL."""
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
                        "amount": fmt(e["amount"]),
                        "balance_after": fmt(e["balance_after"]),
                        "debit_id": e["debit_id"],
                        "reason": e["reason"],
                        "allocations": e["allocations"],
                        "metadata": e["metadata"],
                        "at": e["created_at"].isoformat(),
                    }
                    for e in ledger_rows
                ]
            ),
        },
    )


def _wide_sum(values: Any) -> Decimal:
    total = ZERO
    for v in values:
        total = WIDE.add(total, v)
    return total


def _burn_metadata(b: Burn, rest: Decimal) -> dict[str, str]:
    return {**b.metadata, "burn": fmt(b.amount), "overage": fmt(rest)}


def _burn_locked(
    session: Session, key: tuple[str, str], burns: list[Burn], clock: Clock
) -> list[tuple[Burn, Burned]]:
    """The general path: expiries due are recorded first, then each burn as above."""
    locked = _lock(session, key[0], key[1], clock, create=False)
    assert locked is not None  # created and locked by burn_many
    now = locked.now
    out = []
    for b in burns:
        taken = min(locked.row.balance, b.amount)
        rest = WIDE.subtract(b.amount, taken)
        locked.row.overage = WIDE.add(locked.row.overage, rest)
        entry_id = debit_id = None
        if taken > 0:
            locked.load_spendable(taken)
            portions = locked.book.debit(taken, now)
            debit_id = new_id("dbt")
            e = locked.entry(
                "debit",
                -taken,
                now,
                debit_id=debit_id,
                reason=b.reason,
                allocations=_portions_json(portions),
                attributes=_burn_metadata(b, rest),
            )
            entry_id = e.id
            locked.depletion("debit", debit_id)
        out.append((b, Burned(b, taken, rest, entry_id, debit_id)))
    locked.flush()
    return out


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
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type)
    value = parse_amount(amount)
    why = clean_reason(reason)
    if ttl_sec < 0 or ttl_sec > MAX_HOLD_TTL_SEC:
        raise errors.invalid(
            f"ttl_sec must be between 0 (the default, {DEFAULT_HOLD_TTL_SEC}) and "
            f"{MAX_HOLD_TTL_SEC}",
            field="ttl_sec",
        )
    locked = _lock(session, account.id, ctype, clock, create=False)
    if locked is None or locked.row.balance < value:
        raise insufficient(ctype, locked.row.balance if locked else ZERO, value)
    now = locked.now
    expire_at = now + dt.timedelta(seconds=ttl_sec or DEFAULT_HOLD_TTL_SEC)
    locked.load_spendable(value)
    rid = new_id("crs")
    hold = locked.book.hold(rid, value, expire_at, now)
    row = CreditReservation(
        id=rid,
        billing_account_id=account.id,
        credit_type=ctype,
        amount=value,
        committed_amount=None,
        state=engine.HELD,
        expire_at=expire_at,
        allocations=_portions_json(hold.portions),
        reason=why,
        request_id=request_id,
        created_at=now,
    )
    session.add(row)
    locked.hold_rows[rid] = row
    locked.entry("reservation", -value, now, reservation_id=rid, reason=why, request_id=request_id)
    locked.expect_event(expire_at)
    locked.depletion("reservation")
    locked.flush()
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
    locked = _lock(session, account.id, found.credit_type, clock, create=False)
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
    now = locked.now
    if res.state != engine.HELD:
        raise _closed(res)
    actual = res.amount if not amount else parse_amount(amount, allow_zero=True)
    if actual > res.amount:
        raise errors.invalid(
            f"amount {fmt(actual)} is more than the {fmt(res.amount)} reserved",
            reason="AMOUNT_INVALID",
            field="amount",
        )
    locked.load_holds([res])
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
            -actual,
            now,
            debit_id=debit_id,
            reservation_id=res.id,
            reason=res.reason,
            request_id=request_id,
            allocations=_portions_json(consumed),
        )
    locked.record(effects)
    res.committed_amount = actual
    res.debit_id = debit_id
    locked.depletion("debit" if debit_id else "release", debit_id)
    locked.flush()
    return res


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
    locked = _lock(session, account.id, found.credit_type, clock, create=False)
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


# -- reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BalanceView:
    billing_account_id: str
    credit_type: str
    balance: Decimal
    reserved: Decimal
    as_of: dt.datetime
    overage: Decimal = ZERO


@dataclass(frozen=True)
class Availability:
    available: bool
    balance: Decimal
    required: Decimal
    shortfall: Decimal


def compute_balance(
    session: Session, account_id: str, credit_type: str, now: dt.datetime
) -> tuple[Decimal, Decimal]:
    """(available, reserved) as of `now`, writing nothing.

    The stored figures are exact until the row's next event; past it, the due expiries are
    applied to a copy of the book in memory.
    """
    row = repository.read_balance(session, account_id, credit_type)
    if row is None:
        return ZERO, ZERO
    if row.next_event_at is None or row.next_event_at > now:
        return row.balance, row.reserved
    grants = {
        g.id: _grant_model(g) for g in repository.active_grants(session, account_id, credit_type)
    }
    holds = [_hold_model(r) for r in repository.held_reservations(session, account_id, credit_type)]
    referenced = {p.grant_id for h in holds for p in h.portions} - set(grants)
    for g in repository.grants_by_ids(session, referenced):
        grants[g.id] = _grant_model(g)
    book = Book.of(grants.values(), holds)
    effects = book.settle(now)
    available = add(row.balance, *(engine.effect_delta(e) for e in effects))
    return available, book.reserved()


def balance(
    session: Session, caller: Caller, account_ref: str, credit_type: str, now: dt.datetime
) -> BalanceView:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type, "type")
    available, reserved = compute_balance(session, account.id, ctype, now)
    row = repository.read_balance(session, account.id, ctype)  # loaded just above
    overage = row.overage if row is not None else ZERO
    return BalanceView(account.id, ctype, available, reserved, now, overage)


def availability(
    session: Session,
    caller: Caller,
    account_ref: str,
    credit_type: str,
    required: str,
    now: dt.datetime,
) -> Availability:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type, "type")
    need = parse_amount(required, "required")
    available, _ = compute_balance(session, account.id, ctype, now)
    short = sub(need, available) if need > available else ZERO
    return Availability(short == 0, available, need, short)


def settle_due(
    session: Session, account: BillingAccount, credit_type: str, now: dt.datetime
) -> None:
    """Record due expiries of the account's balances, so a listing shows them."""
    for ctype in repository.due_credit_types(session, account.id, credit_type, now):
        _lock(session, account.id, ctype, lambda: now, create=False)


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_page_token: str


def _micros(at: dt.datetime) -> int:
    return engine.expiry_key(at)


def _from_micros(value: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=value)


def list_grants(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    include_inactive: bool,
    page_size: int,
    page_token: str,
    now: dt.datetime,
) -> Page:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type) if credit_type.strip() else ""
    size = paging.page_size(page_size)
    query = f"credit-grants:{account.id}:{ctype}:{int(include_inactive)}"
    after = paging.decode(page_token, query, (str, int, int, int))
    settle_due(session, account, ctype, now)
    rows = repository.list_grants(session, account.id, ctype, include_inactive, after, size + 1)
    token = ""
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        token = paging.encode(query, [last.credit_type, last.priority, last.expiry_key, last.seq])
    return Page(rows, token)


def list_ledger(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    page_size: int,
    page_token: str,
    now: dt.datetime,
) -> Page:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type) if credit_type.strip() else ""
    size = paging.page_size(page_size)
    query = f"credit-ledger:{account.id}:{ctype}"
    key = paging.decode(page_token, query, (int, int, str))
    before = None
    if key is not None:
        micros, seq, ident = key
        assert isinstance(micros, int)
        try:
            before = [_from_micros(micros), seq, ident]
        except OverflowError as exc:
            raise paging.bad_token() from exc
    settle_due(session, account, ctype, now)
    rows = repository.list_ledger(session, account.id, ctype, before, size + 1)
    token = ""
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        token = paging.encode(query, [_micros(last.created_at), last.seq, last.id])
    return Page(rows, token)
