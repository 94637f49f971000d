"""What each account holds, in memory: its live subscriptions (with their items) and every held
price with the entitlements of the price and its product, kept per account in each server
process and dropped when it changes.

On PostgreSQL triggers on `subscriptions`, `subscription_items` and `purchases` (migration
0022) send a notification on channel `tollbooth_holdings` when a transaction that changed them
commits, its payload the account id; the catalog's channel (`tollbooth_catalog`, migration 0019)
drops every account (the entitlements of prices and products are part of what is kept). The
process's one listening connection per `Database` (`tollbooth.db.listen`) hears both.

The rules, the same as the catalog snapshot's (`tollbooth.catalog.snapshot`):

- a notification drops the account's entry; a read that began before a change was heard is
  not kept (per-account change counters), so an entry never outlives a change it missed;
- the listener proves its connection alive every `BOUND_SEC / 4` (a `SELECT 1`); when it has
  not done so for `BOUND_SEC` (connection lost, PostgreSQL restarted, or silent: cut after
  `DEAD_AFTER × BOUND_SEC` and made anew) nothing kept is used and reads go to the database;
  a reconnect drops every entry. So a change is served by every
  process at most about `BOUND_SEC` (1 s) after its commit, usually within milliseconds;
- a transaction of this process that changed holdings (ORM rows of subscriptions, items,
  purchases, prices, products, or the repository's own statements, `note_change`) drops the
  accounts it touched when it commits: a process sees its own writes at once;
- `as_of` of a kept entry: the later of when it was read and when the listener last vouched
  for it (the heartbeat before the last one, so every commit before it has been heard); a
  fresh read: the time taken before it.

Reads that must hold every change committed before the call began (GetBillingStatus, the
purchase hints of a listing) check a kept entry first: each entry is tagged with the versions
read before its rows (`tollbooth.db.versions`: the catalog's, every account's and its
account's, bumped in the transaction of every change, migration 0036) and answers only when
they are still the current ones (`current`, or `get(..., fresh=True)`: one statement); else it
is read again. CheckEntitlement and ListEntitlements keep the listener's rule and say how old
their answer is (`as_of_time`).

SQLite has no notifications: there nothing is kept and every call reads the database.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from tollbooth.catalog.snapshot import CHANNEL as CATALOG_CHANNEL
from tollbooth.db import Database, versions
from tollbooth.db.listen import BOUND_SEC, PerDatabase, subscribe
from tollbooth.db.models import Price, Product, Purchase, Subscription
from tollbooth.db.subscription_items import SubscriptionItem
from tollbooth.db.versions import Versions
from tollbooth.subscriptions import repository
from tollbooth.subscriptions.repository import CHANGED_ACCOUNTS as _NOTED
from tollbooth.subscriptions.repository import EVERY, HOLDING_SUBSCRIPTION, Holding

CHANNEL = "tollbooth_holdings"
__all__ = ["BOUND_SEC", "CHANNEL", "AccountHoldings", "HeldRow", "Holdings", "load", "of"]


@dataclass(frozen=True)
class HeldRow:
    """One holding with the entitlements of its price and of the price's product (as stored)."""

    holding: Holding
    price_entitlements: list[dict[str, Any]]
    product_entitlements: list[dict[str, Any]]


@dataclass(frozen=True)
class AccountHoldings:
    """What one account holds; never changed once built (shared by threads)."""

    account_id: str
    live: tuple[Subscription, ...]  # live subscriptions, newest first (transient rows)
    groups: frozenset[str]  # the groups their non-stackable items hold (purchase hints)
    held: tuple[HeldRow, ...]  # held catalog prices: subscriptions' items, then purchases
    as_of: dt.datetime  # every change committed before it is in
    groups_of: tuple[tuple[str, frozenset[str]], ...] = ()  # (subscription id, its groups)
    # The versions read before these rows (`Versions.holdings()`; None: not read).
    version: tuple[int | None, ...] | None = None

    def at(self, now: dt.datetime) -> AccountHoldings:
        """What is still held at `now`: without the subscriptions that ended at their period's
        end since they were read (`repository.ended`; kept entries outlive that instant, so
        every reader applies it at its own time)."""
        gone = {
            s.id
            for s in self.live
            if repository.ended(s.cancel_at_period_end, s.current_period_end, now, s.cancel_at)
        }
        if not gone:
            return self
        kept = tuple((ident, groups) for ident, groups in self.groups_of if ident not in gone)
        return replace(
            self,
            live=tuple(s for s in self.live if s.id not in gone),
            groups=frozenset(g for _, groups in kept for g in groups),
            held=tuple(row for row in self.held if row.holding.held_at(now)),
            groups_of=kept,
        )


def _order(row: Any) -> tuple[bool, float, str, int]:
    """Subscriptions first, newest first, then by id and item position."""
    position = row.position if row.position is not None else -1
    return (row.source != HOLDING_SUBSCRIPTION, -row.created_at.timestamp(), row.sub_id, position)


def load(
    session: Session,
    account_id: str,
    as_of: dt.datetime,
    version: tuple[int | None, ...] | None = None,
) -> AccountHoldings:
    """One statement (`repository.holdings_rows`), arranged; tagged `version` (read before)."""
    rows = sorted(repository.holdings_rows(session, account_id), key=_order)
    live: dict[str, Subscription] = {}
    groups: dict[str, set[str]] = {}
    held: list[HeldRow] = []
    for row in rows:
        if row.source == HOLDING_SUBSCRIPTION:
            if row.sub_id not in live:
                live[row.sub_id] = Subscription(
                    id=row.sub_id,
                    billing_account_id=account_id,
                    state=row.state,
                    stackable=row.sub_stackable,
                    lookup_key=row.lookup_key,
                    price_id=row.sub_price_id,
                    stripe_price_id=row.stripe_price_id,
                    current_period_start=row.period_start,
                    current_period_end=row.period_end,
                    cancel_at_period_end=row.cancel_at_period_end,
                    cancel_at=row.cancel_at,
                    created_at=row.created_at,
                )
            if row.position is None:  # a subscription without items
                continue
            if not row.item_stackable and (row.subscription_group or row.price_id):
                groups.setdefault(row.sub_id, set()).add(
                    row.subscription_group or f"price:{row.price_id}"
                )
        price_entitlements, product_entitlements = row[-2], row[-1]
        if row.price_id is None or price_entitlements is None:  # not a catalog price
            continue
        holding = Holding(
            row.price_id,
            row.quantity,
            row.source,
            row.period_start,
            row.period_end,
            row.created_at,
            row.state or "",
            bool(row.cancel_at_period_end),
            row.cancel_at,
        )
        held.append(HeldRow(holding, price_entitlements or [], product_entitlements or []))
    return AccountHoldings(
        account_id,
        tuple(live.values()),
        frozenset(g for each in groups.values() for g in each),
        tuple(held),
        as_of,
        tuple((ident, frozenset(each)) for ident, each in groups.items()),
        version,
    )


class Holdings:
    """One per process and database (`of(db)`): `cached()` answers from memory or None;
    `get()` answers from memory or reads (and keeps) within the caller's session."""

    def __init__(self, db: Database, *, max_accounts: int = 100_000) -> None:
        self._db = db
        self._max = max_accounts
        self._enabled = db.dialect == "postgresql"
        self._lock = threading.Lock()
        self._seq = 0  # changes heard (and own writes)
        self._everything_at = 0  # seq of the last change to every account
        self._changed_at: dict[str, int] = {}  # account -> seq of its last change
        self._entries: dict[str, AccountHoldings] = {}
        # Listening before anything is kept again (`changed(EVERY)` on connect): nothing
        # committed later is missed. Its `vouched` time is the module's as_of rule.
        self._subscription = subscribe(
            db,
            (CHANNEL, CATALOG_CHANNEL),
            connected=lambda: self.changed(EVERY),
            notified=lambda notify: self._on_notify(notify),
        )

    # -- changes ----------------------------------------------------------------------------

    def changed(self, account_id: str = EVERY) -> None:
        """A change to `account_id`'s holdings committed (EVERY: to any account's)."""
        with self._lock:
            self._seq += 1
            if account_id == EVERY or len(self._changed_at) >= self._max:
                self._everything_at = self._seq
                self._changed_at.clear()
                self._entries.clear()
            else:
                self._changed_at[account_id] = self._seq
                self._entries.pop(account_id, None)

    # -- reads ------------------------------------------------------------------------------

    def _vouched_for(self) -> bool:
        return self._enabled and self._subscription.alive()

    def cached(self, account_id: str) -> AccountHoldings | None:
        """The kept holdings of `account_id` when the listener vouches for them, else None."""
        if not self._vouched_for():
            return None
        # Read before the entry: a change heard before this time has dropped it already.
        vouched = self._subscription.vouched
        entry = self._entries.get(account_id)
        if entry is None:
            return None
        return replace(entry, as_of=vouched) if vouched > entry.as_of else entry

    def current(self, account_id: str, seen: Versions | None = None) -> AccountHoldings | None:
        """The kept holdings of `account_id` when they were read at the current versions
        (`seen`, read by the caller at its start with this account, else read here: one
        statement), so they hold every change committed before the call; else None."""
        hit = self.cached(account_id)
        if hit is None:
            return None
        if seen is None or seen.account_id != account_id:
            seen = versions.read(self._db, account_id)
        return hit if versions.covers(hit.version, seen.holdings()) else None

    def get(
        self, session: Session, account_id: str, now: dt.datetime, *, fresh: bool = False
    ) -> AccountHoldings:
        """The holdings of `account_id`: kept ones, else read now (`now` taken before).
        `fresh`: kept ones only when read at the current versions (one statement in
        `session`), so the answer holds every change committed before the call."""
        tag = None
        if not fresh:
            hit = self.cached(account_id)
            if hit is not None:
                return hit
        if self._enabled and (fresh or self._vouched_for()):
            # Before the rows: a change committed in between leaves the entry tagged older
            # than its rows (read again next time), never newer.
            tag = versions.load_tag(session, account_id).holdings()
        if fresh:
            hit = self.cached(account_id)
            if hit is not None and tag is not None and versions.covers(hit.version, tag):
                return hit
        with self._lock:
            seq = self._seq
        loaded = load(session, account_id, now, tag)
        if tag is not None and self._vouched_for():
            with self._lock:
                unchanged = (
                    self._everything_at <= seq and self._changed_at.get(account_id, 0) <= seq
                )
                if unchanged:
                    if len(self._entries) >= self._max:
                        self._entries.clear()
                    self._entries[account_id] = loaded
        return loaded

    def close(self) -> None:
        self._subscription.close()

    def _on_notify(self, notify: Any) -> None:
        self.changed(notify.payload if notify.channel == CHANNEL else EVERY)


# -- one per database, and this process's own writes ------------------------------------------

_views: PerDatabase[Holdings] = PerDatabase(Holdings)


def of(db: Database) -> Holdings:
    """This process's holdings of `db` (one per Database: its entries)."""
    return _views.of(db)


def _touched(objects: Iterable[object]) -> Iterable[str]:
    for obj in objects:
        if isinstance(obj, Subscription | Purchase):
            yield obj.billing_account_id
        elif isinstance(obj, SubscriptionItem | Price | Product):
            yield EVERY


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    touched = set(_touched(chain(session.new, session.dirty, session.deleted)))
    if touched:
        session.info.setdefault(_NOTED, set()).update(touched)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    noted: set[str] | None = session.info.pop(_NOTED, None)
    if not noted:
        return
    holdings = _views.find(session.bind)
    if holdings is None:
        return
    for account_id in sorted(noted):
        holdings.changed(account_id)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_NOTED, None)
