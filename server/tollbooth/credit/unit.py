"""The unit of work of the credit operations: one balance row, locked, and its book.

Every change to a balance first locks its row (`repository.lock_balance`), records any expiry
that has come due since the last write (so the ledger shows it, at its own instant), then
asks the engine what to change, appends the ledger entries and writes the grants and holds
back, all in the caller's transaction. The balance row carries the ledger's running total,
so a reader answers from one row unless an expiry is due, in which case it computes the
balance as of `now` without writing anything (`queries.compute_balance`).

The clock is always a parameter: the servicer passes the real one, tests their own. A write
reads it only once it holds the balance lock, and never earlier than the balance's last
write, so the entries of one balance are in time order even across replicas whose clocks
differ slightly. Operations flush, never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.amounts import ZERO, add, fmt, neg, sub
from tollbooth.credit import engine, repository
from tollbooth.credit.engine import Book, Effect, Expired, Lapsed, Voided
from tollbooth.db.models import CreditBalance, CreditGrant, CreditLedgerEntry, CreditReservation
from tollbooth.ids import new_id
from tollbooth.notifications import outbox

DEPLETED_NOTIFICATION = "credits.balance_depleted"
# A debit loads this many grants first; only a debit larger than all of them loads the rest.
GRANT_BATCH = 50

Clock = Callable[[], dt.datetime]
# Ledger note of the entry a reservation writes when it lapses.
LAPSED_NOTE = "reservation expired"
# Changes that consume credit: a balance they bring to zero is "depleted".
CONSUMING = ("debit", "expiration", "void")


def grant_model(row: CreditGrant) -> engine.Grant:
    return engine.Grant(
        id=row.id,
        seq=row.seq,
        priority=row.priority,
        expire_at=row.expire_at,
        remaining=row.remaining,
        held=row.held,
        state=row.state,
    )


def hold_model(row: CreditReservation) -> engine.Hold:
    return engine.Hold(
        id=row.id,
        amount=row.amount,
        expire_at=row.expire_at,
        portions=[engine.Portion(p["grant_id"], Decimal(p["amount"])) for p in row.allocations],
        state=row.state,
    )


def portions_json(portions: list[engine.Portion]) -> list[dict[str, str]]:
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
                self.book.grants[r.id] = grant_model(r)

    def load_holds(self, rows: list[CreditReservation]) -> None:
        missing = self.add_holds(rows)
        self.load_grants(repository.grants_by_ids(self.session, self.account_id, missing))

    def add_holds(self, rows: list[CreditReservation]) -> set[str]:
        """Put the holds in the book; the ids of the grants they hold from not loaded yet."""
        for r in rows:
            if r.id not in self.hold_rows:
                self.hold_rows[r.id] = r
                self.book.holds[r.id] = hold_model(r)
        return {
            p.grant_id
            for h in self.book.holds.values()
            for p in h.portions
            if p.grant_id not in self.grant_rows
        }

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
        # The entry that took the last credits names the cause: a grant's expiry, or a lapse
        # giving back credits of a voided grant ("void"), never "expiration" for both.
        self.depletion("settle")
        self.flush()

    def expect_event(self, at: dt.datetime | None) -> None:
        if at is not None and (self.row.next_event_at is None or at < self.row.next_event_at):
            self.row.next_event_at = at

    # ledger
    def entry(
        self,
        kind: str,
        amount: Decimal,
        at: dt.datetime,
        *,
        overage: Decimal = ZERO,
        **fields: Any,
    ) -> CreditLedgerEntry:
        """Append one entry: `amount` changes the balance, `overage` the balance's overage."""
        row = self.row
        row.seq += 1
        row.balance = add(row.balance, amount)
        if kind in ("reservation", "release"):
            row.reserved = sub(row.reserved, amount)
        if overage:
            row.overage = add(row.overage, overage)
        if row.balance < 0 or row.reserved < 0 or row.overage < 0:  # the lock prevents it
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
            overage=overage,
            created_at=at,
            **fields,
        )
        self.entries.append(e)
        return e

    def record(self, effects: list[Effect], reason: str = "", request_id: str = "") -> None:
        for eff in effects:
            if isinstance(eff, Expired):
                self.entry("expiration", neg(eff.amount), eff.at, grant_id=eff.grant_id)
            elif isinstance(eff, Voided):
                self.entry(
                    "void",
                    neg(eff.amount),
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
        """A balance that reaches zero by consumption notifies once; rising above re-arms it.

        Only a write that takes credits (an entry of a consuming kind, below zero) depletes: an
        expiry or void of a grant whose credits are all held takes nothing (the hold, which may
        give credits back, is what keeps the balance at zero), while credits that a release or
        a commit gives back and that expire or are voided at once do deplete it (that entry's
        kind is then the cause)."""
        row = self.row
        if row.balance > 0:
            row.depleted = False
            return
        if row.depleted:
            return
        taken = [e for e in self.entries if e.kind in CONSUMING and e.amount < 0]
        if not taken:
            return
        if cause not in CONSUMING:
            cause = taken[-1].kind
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
        self.session.add_all(self.apply()[2])
        self.session.flush()

    def apply(
        self,
    ) -> tuple[list[CreditGrant], list[CreditReservation], list[CreditLedgerEntry]]:
        """Copy what the engine changed into the rows, without a statement: the grant rows
        and hold rows changed, and the new ledger entries (handed over, no longer pending)."""
        grants, holds = [], []
        for gid in self.book.dirty_grants:
            g, r = self.book.grants[gid], self.grant_rows[gid]
            r.remaining, r.held = g.remaining, g.held
            if r.state != g.state:
                r.state = g.state
                if g.state in (engine.EXPIRED, engine.VOIDED):
                    r.closed_at = self.now
            grants.append(r)
        for hid in self.book.dirty_holds:
            h, hr = self.book.holds[hid], self.hold_rows[hid]
            if hr.state != h.state:
                hr.state = h.state
                hr.closed_at = h.expire_at if h.state == engine.LAPSED else self.now
            holds.append(hr)
        self.book.dirty_grants.clear()
        self.book.dirty_holds.clear()
        self.row.updated_at = self.now
        entries, self.entries = self.entries, []
        return grants, holds, entries


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


def lock(
    session: Session, account_id: str, credit_type: str, clock: Clock, *, create: bool
) -> Locked | None:
    """The balance locked, with its due expiries recorded; None when it does not exist."""
    if create:
        repository.ensure_balance(session, account_id, credit_type, clock())
    row = repository.lock_balance(session, account_id, credit_type)
    if row is None:
        return None
    locked = Locked(session, row, max(clock(), row.updated_at))
    locked.settle()
    return locked
