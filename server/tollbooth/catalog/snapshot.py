"""The catalog in memory: every product and price of this process, reloaded after a change.

Every listing checks its copy first (`Snapshot.fresh`): one statement reads the catalog's
version (`tollbooth.db.versions`, bumped by every transaction that changes products or prices,
migration 0036) and the copy answers only when it was loaded at that version; else it is
reloaded before answering. So a listing holds every change committed before the call began,
whether this process's listener has heard of it yet or not. The listener below only drops a
copy early.

On PostgreSQL a trigger on `products` and `prices` (migration 0019) sends a notification on
channel `tollbooth_catalog` when a transaction that changed them commits. Each server process
keeps one connection LISTENing (a daemon thread); a notification marks the snapshot stale and
the next read reloads it (two queries, one transaction) before answering.

The listener's rule (what `get()` alone, without the version, vouches for): a read never
answers from a snapshot older than the last notification it has received, and the listener
proves its connection alive every `BOUND_SEC / 4` (a `SELECT 1`); when it has not done so for
`BOUND_SEC` (its connection dropped, PostgreSQL restarted, or went silent: cut after
`DEAD_AFTER × BOUND_SEC` and made anew) the snapshot is not used and reads go to the database
until the listener is back. A write through this process's own CatalogService marks the
snapshot stale at once.
SQLite has no notifications: there the catalog is read from the database on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.catalog.paging import order_key
from tollbooth.db import Database, versions
from tollbooth.db.listen import BOUND_SEC, Reloaded
from tollbooth.db.models import Price, Product

CHANNEL = "tollbooth_catalog"
__all__ = ["BOUND_SEC", "CHANNEL", "Catalog", "Snapshot", "load"]


@dataclass(frozen=True)
class Catalog:
    """Detached, fully loaded rows in listing order; never changed once built."""

    products: list[Product]  # archived included, in (position, seq, id) order
    by_id: dict[str, Product]
    prices: dict[str, list[Price]]  # product id -> its prices (archived included), in order
    price_by_id: dict[str, Price] = field(default_factory=dict)
    # What the servicer derived from these rows (their contract messages, by kind, id and
    # hint), built on first use and dropped with the snapshot: never older than the rows.
    converted: dict[tuple[str, str, str], Any] = field(
        default_factory=dict, compare=False, repr=False
    )
    # The catalog's version read before these rows (None: not read): never newer than them.
    version: int | None = None


def load(session: Session) -> Catalog:
    products = sorted(session.scalars(select(Product)), key=order_key)
    prices: dict[str, list[Price]] = {p.id: [] for p in products}
    price_by_id: dict[str, Price] = {}
    for price in sorted(session.scalars(select(Price)), key=order_key):
        prices.setdefault(price.product_id, []).append(price)
        price_by_id[price.id] = price
    session.expunge_all()  # every column is loaded (no relationships): safe to share
    return Catalog(products, {p.id: p for p in products}, prices, price_by_id)


class Snapshot(Reloaded[Catalog]):
    """One per process (per CatalogServicer). `get()` is the catalog to answer from, or None
    (read the database)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, (CHANNEL,))

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _load(self) -> Catalog:
        with self._db.transaction(readonly=True) as session:
            # The version first, then the rows: a change committed in between leaves the copy
            # tagged older than its rows (reloaded at the next read), never newer.
            version = versions.load_tag(session).catalog
            return replace(load(session), version=version)

    def fresh(self, version: int | None = None) -> Catalog | None:
        """The catalog to answer from, holding every change committed before the call: the
        kept one when it was loaded at the current version (`version`, read by the caller,
        else read here: one statement), else one reloaded now; None: read the database."""
        kept = self.get()
        if kept is None:
            return None
        if version is None:
            version = versions.read(self._db).catalog
        if versions.covers((kept.version,), (version,)):
            return kept
        # Committed elsewhere and not heard yet by this process's listener: reload now, once
        # for every reader that saw the new version (the reload's version is read after
        # `version`, so it holds the change).
        with self._reload:
            with self._lock:
                kept, wanted = self._kept, self._changes
                if (
                    kept is not None
                    and self._loaded_at_change == wanted
                    and versions.covers((kept.version,), (version,))
                ):
                    return kept
            loaded = self._load()
            with self._lock:
                self._kept, self._loaded_at_change = loaded, wanted
            return loaded
