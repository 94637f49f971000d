"""The catalog in memory: every product and price of this process, reloaded after a change.

On PostgreSQL a trigger on `products` and `prices` (migration 0019) sends a notification on
channel `tollbooth_catalog` when a transaction that changed them commits. Each server process
keeps one connection LISTENing (a daemon thread); a notification marks the snapshot stale and
the next read reloads it (two queries, one transaction) before answering.

The bound: a read never answers from a snapshot older than the last notification it has
received, and the listener proves its connection alive every `BOUND_SEC / 4` (a `SELECT 1`);
when it has not done so for `BOUND_SEC` (its connection dropped, PostgreSQL restarted) the
snapshot is not used and reads go to the database until the listener is back. So a change is
served by every process at most about `BOUND_SEC` (1 s) after its commit, usually within a few
milliseconds. A write through this process's own CatalogService marks the snapshot stale at
once (read your own writes). SQLite has no notifications: there the catalog is read from the
database on every call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.catalog.paging import order_key
from tollbooth.db import Database
from tollbooth.db.listen import Listener
from tollbooth.db.models import Price, Product

CHANNEL = "tollbooth_catalog"
BOUND_SEC = 1.0


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


def load(session: Session) -> Catalog:
    products = sorted(session.scalars(select(Product)), key=order_key)
    prices: dict[str, list[Price]] = {p.id: [] for p in products}
    price_by_id: dict[str, Price] = {}
    for price in sorted(session.scalars(select(Price)), key=order_key):
        prices.setdefault(price.product_id, []).append(price)
        price_by_id[price.id] = price
    session.expunge_all()  # every column is loaded (no relationships): safe to share
    return Catalog(products, {p.id: p for p in products}, prices, price_by_id)


class Snapshot:
    """One per process (per CatalogServicer). `get()` is the catalog to answer from, or None
    (read the database)."""

    def __init__(self, db: Database, *, bound_sec: float = BOUND_SEC) -> None:
        self._db = db
        self._enabled = db.dialect == "postgresql"
        self._lock = threading.Lock()
        self._reload = threading.Lock()
        self._changes = 0  # notifications heard (and own writes)
        self._catalog: Catalog | None = None
        self._loaded_at_change = -1
        # Listening before the snapshot loads (`changed` on connect): nothing committed later
        # is missed.
        self._listener = Listener(
            db,
            (CHANNEL,),
            name="catalog-listener",
            bound_sec=bound_sec,
            connected=self.changed,
            notified=self._on_notify,
        )
        if self._enabled:
            db.on_dispose(self.close)

    def changed(self) -> None:
        """A change committed (by this process, or heard from PostgreSQL)."""
        with self._lock:
            self._changes += 1

    def get(self) -> Catalog | None:
        if not self._enabled:
            return None
        if not self._listener.alive():
            return None  # the listener cannot vouch for the snapshot: read the database
        with self._lock:
            if self._catalog is not None and self._loaded_at_change == self._changes:
                return self._catalog
        with self._reload:
            with self._lock:
                wanted = self._changes
                if self._catalog is not None and self._loaded_at_change == wanted:
                    return self._catalog
            # Loaded after `wanted` changes were heard: a later notification reloads again.
            with self._db.transaction(readonly=True) as session:
                catalog = load(session)
            with self._lock:
                self._catalog, self._loaded_at_change = catalog, wanted
            return catalog

    def close(self) -> None:
        self._listener.close()

    def _on_notify(self, _notify: object) -> None:
        self.changed()
