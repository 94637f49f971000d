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

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.catalog.paging import order_key
from tollbooth.db import Database
from tollbooth.db.models import Price, Product

log = logging.getLogger("tollbooth.catalog.snapshot")

CHANNEL = "tollbooth_catalog"
BOUND_SEC = 1.0


@dataclass(frozen=True)
class Catalog:
    """Detached, fully loaded rows in listing order; never changed once built."""

    products: list[Product]  # archived included, in (position, seq, id) order
    by_id: dict[str, Product]
    prices: dict[str, list[Price]]  # product id -> its prices (archived included), in order
    price_by_id: dict[str, Price] = field(default_factory=dict)


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
        self._bound = bound_sec
        self._enabled = db.dialect == "postgresql"
        self._lock = threading.Lock()
        self._reload = threading.Lock()
        self._changes = 0  # notifications heard (and own writes)
        self._catalog: Catalog | None = None
        self._loaded_at_change = -1
        self._alive_at = 0.0  # monotonic time the listener last proved its connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._enabled:
            db.on_dispose(self.close)

    def changed(self) -> None:
        """A change committed (by this process, or heard from PostgreSQL)."""
        with self._lock:
            self._changes += 1

    def get(self) -> Catalog | None:
        if not self._enabled:
            return None
        self._start()
        if time.monotonic() - self._alive_at > self._bound:
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
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- the listener ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._listen, name="catalog-listener", daemon=True
                )
                self._thread.start()

    def _listen(self) -> None:
        import psycopg

        dsn = self._db.url.replace("postgresql+psycopg://", "postgresql://", 1)
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Listening before the snapshot loads: nothing committed later is missed.
                    self.changed()
                    backoff = 0.2
                    self._serve(conn, self._on_notify)
            except Exception:  # noqa: BLE001 - reconnect; reads use the database meanwhile
                self._alive_at = 0.0
                if self._stop.is_set():
                    return
                log.warning("catalog listener lost its connection; reconnecting", exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._alive_at = 0.0

    def _on_notify(self) -> None:
        self.changed()

    def _serve(self, conn: object, notified: Callable[[], None]) -> None:
        beat = self._bound / 4
        while not self._stop.is_set():
            conn.execute("SELECT 1")  # type: ignore[attr-defined]
            self._alive_at = time.monotonic()
            for _ in conn.notifies(timeout=beat):  # type: ignore[attr-defined]
                notified()
