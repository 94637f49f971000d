"""The billable metrics in memory: every metric's definition (`MetricSpec`) of this process,
reloaded after a change, so that a metered CheckEntitlement reads only its usage total.

On PostgreSQL a trigger on `billable_metrics` (migration 0023) sends a notification on channel
`tollbooth_metrics` when a transaction that changed it commits. The process's one listening
connection per `Database` (`tollbooth.db.listen`) hears it for `of(db)`; a notification marks
the definitions stale and the next read reloads them all (one statement: the table is small)
before answering.

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
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from tollbooth.db import Database
from tollbooth.db.listen import BOUND_SEC, PerDatabase, Reloaded
from tollbooth.db.models import BillableMetric
from tollbooth.db.types import utcnow
from tollbooth.usage import repository
from tollbooth.usage.aggregate import MetricSpec
from tollbooth.usage.repository import METRICS_CHANGED
from tollbooth.usage.service import spec_of

CHANNEL = "tollbooth_metrics"
__all__ = ["BOUND_SEC", "CHANNEL", "Known", "KnownMetrics", "of"]


@dataclass(frozen=True)
class Known:
    """Every metric's definition, by code; never changed once built (shared by threads)."""

    specs: dict[str, MetricSpec]
    as_of: dt.datetime  # every metric change committed before it is in


class KnownMetrics(Reloaded[Known]):
    """One per process and database (`of(db)`). `get()` is the definitions to answer from,
    or None (read the database)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, (CHANNEL,))

    def get(self) -> Known | None:
        # Read before the change count: a change heard before this time has been counted.
        vouched = self._subscription.vouched
        known = super().get()
        if known is None:
            return None
        return Known(known.specs, vouched) if vouched > known.as_of else known

    def _load(self) -> Known:
        taken = utcnow()
        with self._db.transaction(readonly=True) as session:
            specs = {m.code: spec_of(m) for m in repository.all_metrics(session)}
        return Known(specs, taken)


# -- one per database, and this process's own writes ------------------------------------------

_views: PerDatabase[KnownMetrics] = PerDatabase(KnownMetrics)


def of(db: Database) -> KnownMetrics:
    """This process's metric definitions of `db` (one per Database: its copy)."""
    return _views.of(db)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    objects = chain(session.new, session.dirty, session.deleted)
    if any(isinstance(obj, BillableMetric) for obj in objects):
        session.info[METRICS_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(METRICS_CHANGED, False):
        return
    known = _views.find(session.bind)
    if known is not None:
        known.changed()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(METRICS_CHANGED, None)
