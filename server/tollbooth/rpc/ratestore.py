"""A `limits` storage kept in the service's own database, so every replica shares the counters
without another server to run (Redis stays an option: BILLING_RATE_LIMIT_STORAGE).

Registered with `limits` under the scheme `tollbooth+db` (subclassing `limits.storage.Storage`
registers it). It implements the fixed window: `incr` is one atomic upsert that starts a new
window when the old one has ended, so concurrent replicas never lose a count. On PostgreSQL
that upsert is one statement in autocommit on a pooled connection (`Database.read_one`): one
round trip, no session; the table is UNLOGGED, so its commit never waits for the disk.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from limits.storage import Storage
from sqlalchemy import case, delete, func, select
from sqlalchemy import exc as sa_exc

from tollbooth.db import Database, upsert_insert
from tollbooth.db.models import RateLimitCounter

SCHEME = "tollbooth+db"
_TABLE = RateLimitCounter.__table__
# The width of `rate_limit_counters.key` (String(250)).
KEY_WIDTH = 250
# The most ended counters one `purge_ended` removes (a bounded statement, however many wait).
PURGE_BATCH = 1000


# `incr_window`'s upsert for the driver's cursor (PostgreSQL): in DO UPDATE, the table's
# columns are the stored row's, so both CASEs see the window as it was.
_PG_UPSERT = (
    "INSERT INTO rate_limit_counters AS c (key, count, expires_ms)"
    " VALUES (%(key)s, %(amount)s, %(ends)s)"
    " ON CONFLICT (key) DO UPDATE SET"
    " count = CASE WHEN c.expires_ms <= %(now)s THEN %(amount)s ELSE c.count + %(amount)s END,"
    " expires_ms = CASE WHEN c.expires_ms <= %(now)s THEN %(ends)s ELSE c.expires_ms END"
    " RETURNING c.count, c.expires_ms"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def stored_key(key: str) -> str:
    """The counter's key as stored: as given when it fits the column, else a prefix and the
    whole key's digest (a backend may name a long account; a key the column refused would
    fail the storage, which lets every call through)."""
    width = KEY_WIDTH
    if len(key) <= width:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: width - len(digest) - 1]}#{digest}"


class DatabaseStorage(Storage):
    """Fixed-window counters in `rate_limit_counters`. Pass the service's `Database` as
    `database=`; a bare URI `tollbooth+db://` is only meaningful with it."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        database: Database | None = None,
        **options: Any,
    ) -> None:
        if database is None:
            raise ValueError("the database storage needs the service's database (database=)")
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.database = database
        self._postgres = database.dialect == "postgresql"

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sa_exc.SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.incr_window(key, expiry, amount)[0]

    def incr_window(self, key: str, expiry: int, amount: int = 1) -> tuple[int, int]:
        """`incr`, also giving when the window counted in ends (ms since the epoch)."""
        key = stored_key(key)
        now = _now_ms()
        ends = now + int(expiry) * 1000
        if self._postgres:
            params = {"key": key, "amount": amount, "ends": ends, "now": now}
            row = self.database.read_one(_PG_UPSERT, params)
            return int(row[0]), int(row[1])
        with self.database.transaction() as session:
            insert = upsert_insert(session, RateLimitCounter).values(
                key=key, count=amount, expires_ms=ends
            )
            ended = _TABLE.c.expires_ms <= now
            statement = insert.on_conflict_do_update(
                index_elements=[_TABLE.c.key],
                set_={
                    "count": case((ended, amount), else_=_TABLE.c.count + amount),
                    "expires_ms": case((ended, ends), else_=_TABLE.c.expires_ms),
                },
            ).returning(_TABLE.c.count, _TABLE.c.expires_ms)
            count, expires_ms = session.execute(statement).one()
            return int(count), int(expires_ms)

    def get(self, key: str) -> int:
        key = stored_key(key)
        with self.database.transaction(readonly=True) as session:
            count = session.execute(
                select(_TABLE.c.count).where(_TABLE.c.key == key, _TABLE.c.expires_ms > _now_ms())
            ).scalar_one_or_none()
        return int(count or 0)

    def get_expiry(self, key: str) -> float:
        key = stored_key(key)
        with self.database.transaction(readonly=True) as session:
            ends = session.execute(
                select(_TABLE.c.expires_ms).where(_TABLE.c.key == key)
            ).scalar_one_or_none()
        now = _now_ms()
        return max(int(ends or now), now) / 1000

    def check(self) -> bool:
        try:
            with self.database.transaction(readonly=True) as session:
                session.execute(select(func.count()).select_from(_TABLE).limit(1))
            return True
        except sa_exc.SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.database.transaction() as session:
            result = session.execute(delete(RateLimitCounter))
            return int(getattr(result, "rowcount", 0) or 0)

    def purge_ended(self, prefix: str, limit: int = PURGE_BATCH) -> int:
        """Delete up to `limit` counters whose key starts with `prefix` and whose window has
        ended (how many). An ended window counts as nothing (`get` gives 0, `incr` starts a
        new one), so this changes no answer: it keeps keys used once (a console sign-out's
        session id) from staying in the table for ever. A counter renewed meanwhile is kept:
        the DELETE checks the window again on the row it deletes."""
        now = _now_ms()
        ended = _TABLE.c.expires_ms <= now
        keys = (
            select(_TABLE.c.key)
            .where(_TABLE.c.key.startswith(prefix, autoescape=True), ended)
            .limit(limit)
        )
        with self.database.transaction() as session:
            result = session.execute(delete(RateLimitCounter).where(_TABLE.c.key.in_(keys), ended))
            return int(getattr(result, "rowcount", 0) or 0)

    def clear(self, key: str) -> None:
        key = stored_key(key)
        with self.database.transaction() as session:
            session.execute(delete(RateLimitCounter).where(RateLimitCounter.key == key))
