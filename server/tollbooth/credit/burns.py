"""Burn credits for work already done (usage): never refused, what is lacking is overage.

Overage is in the ledger: a burn beyond the balance writes an OVERAGE entry (amount 0, its
`overage` the uncovered rest), so the ledger's overage column sums to the balance's overage.
A later grant pays overage back first (`credit.grants`). The burn model has no periods (a
burn is dated when its events are stored, the balance spans every period), so overage is one
running figure per balance; each OVERAGE entry is dated, which splits it by any period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.amounts import ZERO, add, fmt, neg, sub, total
from tollbooth.credit import engine, repository
from tollbooth.credit.engine import Book
from tollbooth.credit.unit import GRANT_BATCH, Clock, lock, notify_depleted, portions_json
from tollbooth.ids import new_id


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
    # The OVERAGE ledger entry of what was not covered; None when nothing was lacking.
    overage_entry_id: str | None = None


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
        wanted = total(b.amount for b in by_key[key])
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
            rest = sub(b.amount, taken)
            entry_id = debit_id = overage_id = None
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
                        "amount": neg(taken),
                        "balance_after": balance,
                        "grant_id": None,
                        "debit_id": debit_id,
                        "reservation_id": None,
                        "reason": b.reason,
                        "request_id": "",
                        "allocations": portions_json(portions),
                        "metadata": _burn_metadata(b, rest),
                        "created_at": now,
                        "overage": ZERO,
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
            if rest > 0:
                overage = add(overage, rest)
                seq += 1
                overage_id = new_id("cle")
                ledger_rows.append(
                    {
                        "id": overage_id,
                        "billing_account_id": b.account_id,
                        "credit_type": b.credit_type,
                        "seq": seq,
                        "kind": "overage",
                        "amount": ZERO,
                        "balance_after": balance,
                        "grant_id": None,
                        "debit_id": None,
                        "reservation_id": None,
                        "reason": b.reason,
                        "request_id": "",
                        "allocations": None,
                        "metadata": _burn_metadata(b, rest),
                        "created_at": now,
                        "overage": rest,
                    }
                )
            done[id(b)] = Burned(b, taken, rest, entry_id, debit_id, overage_id)
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
        repository.write_burns(session, grant_writes, ledger_rows, balance_writes)
    for key in sorted(slow):
        for b, burned in _burn_locked(session, key, by_key[key], clock):
            done[id(b)] = burned
    return [done[id(b)] for b in burns]


def _burn_metadata(b: Burn, rest: Decimal) -> dict[str, str]:
    return {**b.metadata, "burn": fmt(b.amount), "overage": fmt(rest)}


def _burn_locked(
    session: Session, key: tuple[str, str], burns: list[Burn], clock: Clock
) -> list[tuple[Burn, Burned]]:
    """The general path: expiries due are recorded first, then each burn as above."""
    locked = lock(session, key[0], key[1], clock, create=False)
    assert locked is not None  # created and locked by burn_many
    now = locked.now
    out = []
    for b in burns:
        taken = min(locked.row.balance, b.amount)
        rest = sub(b.amount, taken)
        entry_id = debit_id = overage_id = None
        if taken > 0:
            locked.load_spendable(taken)
            portions = locked.book.debit(taken, now)
            debit_id = new_id("dbt")
            e = locked.entry(
                "debit",
                neg(taken),
                now,
                debit_id=debit_id,
                reason=b.reason,
                allocations=portions_json(portions),
                attributes=_burn_metadata(b, rest),
            )
            entry_id = e.id
            locked.depletion("debit", debit_id)
        if rest > 0:
            overage_id = locked.entry(
                "overage",
                ZERO,
                now,
                overage=rest,
                reason=b.reason,
                attributes=_burn_metadata(b, rest),
            ).id
        out.append((b, Burned(b, taken, rest, entry_id, debit_id, overage_id)))
    locked.flush()
    return out
