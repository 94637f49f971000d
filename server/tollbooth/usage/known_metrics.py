"""The billable metrics in memory: every metric's definition (`MetricSpec`) of this process,
reloaded after a change, so that a metered CheckEntitlement reads only its usage total.

On PostgreSQL a trigger on `billable_metrics` (migration 0023) sends a notification on channel
`tollbooth_metrics` when a transaction that changed it commits. One daemon thread per process
(per `Database`: `of(db)`) LISTENs (`tollbooth.db.listen`); a notification marks the definitions
stale and the next read reloads them all (one statement: the table is small) before answering.

The rules, the same as the catalog snapshot's (`tollbooth.catalog.snapshot`):

- a read never answers from definitions loaded before the last notification it has heard;
- the listener proves its connection alive every `BOUND_SEC / 4` (a `SELECT 1`); when it has
  not done so for `BOUND_SEC` (connection lost, PostgreSQL restarted) nothing kept is used and
  callers read the metric from the database; a reconnect marks everything stale. So a change
  is served by every process at most about `BOUND_SEC` (1 s) after its commit, usually within
  milliseconds;
- a transaction of this process that changed metrics (ORM rows, or the repository's own
  statements: `repository.METRICS_CHANGED`) marks them stale when it commits: a process sees
  its own writes at once;
- `as_of`: every metric change committed before it is in (the later of when the definitions
  were read and when the listener last vouched for them).

SQLite has no notifications: there nothing is kept (`get()` is None) and callers read the
database.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from tollbooth.db import Database
from tollbooth.db.listen import Listener
from tollbooth.db.models import BillableMetric
from tollbooth.db.types import utcnow
from tollbooth.usage import repository
from tollbooth.usage.aggregate import MetricSpec
from tollbooth.usage.repository import METRICS_CHANGED
from tollbooth.usage.service import spec_of

CHANNEL = "tollbooth_metrics"
BOUND_SEC = 1.0


@dataclass(frozen=True)
class Known:
    """Every metric's definition, by code; never changed once built (shared by threads)."""

    specs: dict[str, MetricSpec]
    as_of: dt.datetime  # every metric change committed before it is in


class KnownMetrics:
    """One per process and database (`of(db)`). `get()` is the definitions to answer from,
    or None (read the database)."""

    def __init__(self, db: Database, *, bound_sec: float = BOUND_SEC) -> None:
        self._db = db
        self._enabled = db.dialect == "postgresql"
        self._lock = threading.Lock()
        self._reload = threading.Lock()
        self._changes = 0  # notifications heard (and own writes)
        self._known: Known | None = None
        self._loaded_at_change = -1
        # Listening before anything is loaded (`changed` on connect): nothing committed later
        # is missed.
        self._listener = Listener(
            db,
            (CHANNEL,),
            name="metrics-listener",
            bound_sec=bound_sec,
            connected=self.changed,
            notified=self._on_notify,
        )

    def changed(self) -> None:
        """A change to metrics committed (by this process, or heard from PostgreSQL)."""
        with self._lock:
            self._changes += 1

    def get(self) -> Known | None:
        if not self._enabled or not self._listener.alive():
            return None  # the listener cannot vouch for what is kept: read the database
        # Read before the change count: a change heard before this time has been counted.
        vouched = self._listener.vouched
        with self._lock:
            known = self._known if self._loaded_at_change == self._changes else None
        if known is None:
            known = self._load()
        return Known(known.specs, vouched) if vouched > known.as_of else known

    def _load(self) -> Known:
        with self._reload:
            with self._lock:
                wanted = self._changes
                if self._known is not None and self._loaded_at_change == wanted:
                    return self._known
            # Read after `wanted` changes were heard: a later notification reloads again.
            taken = utcnow()
            with self._db.transaction(readonly=True) as session:
                specs = {m.code: spec_of(m) for m in repository.all_metrics(session)}
            known = Known(specs, taken)
            with self._lock:
                self._known, self._loaded_at_change = known, wanted
            return known

    def close(self) -> None:
        self._listener.close()

    def _on_notify(self, _notify: object) -> None:
        self.changed()


# -- one per database, and this process's own writes ------------------------------------------

_registry: dict[int, KnownMetrics] = {}
_registry_lock = threading.Lock()


def of(db: Database) -> KnownMetrics:
    """This process's metric definitions of `db` (one per Database: its listener, its copy)."""
    key = id(db.engine)
    found = _registry.get(key)
    if found is None:
        with _registry_lock:
            found = _registry.get(key)
            if found is None:
                found = _registry[key] = KnownMetrics(db)
                db.on_dispose(lambda: _forget(key))
    return found


def _forget(key: int) -> None:
    with _registry_lock:
        found = _registry.pop(key, None)
    if found is not None:
        found.close()


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    objects = chain(session.new, session.dirty, session.deleted)
    if any(isinstance(obj, BillableMetric) for obj in objects):
        session.info[METRICS_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(METRICS_CHANGED, False):
        return
    known = _registry.get(id(session.bind)) if session.bind is not None else None
    if known is not None:
        known.changed()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(METRICS_CHANGED, None)
