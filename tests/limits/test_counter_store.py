"""The rate limits' counters in the service database (`rpc/ratestore.DatabaseStorage`): a
fixed window per key, and on PostgreSQL one statement per count (a lease refill happens inside
a caller's RPC)."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select, update

from tests.credit.wire import Recorder
from tollbooth.db import Database
from tollbooth.db.migrate import upgrade
from tollbooth.db.models import RateLimitCounter
from tollbooth.rpc.ratestore import DatabaseStorage


def _backdate(db: Database, key: str) -> None:
    """The key's window ended a second ago."""
    with db.transaction() as session:
        session.execute(
            update(RateLimitCounter)
            .where(RateLimitCounter.key == key)
            .values(expires_ms=time.time_ns() // 1_000_000 - 1000)
        )


def test_a_window_counts_until_it_ends_then_a_new_one_starts(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    try:
        storage = DatabaseStorage(database=db)
        key = f"test/{uuid.uuid4().hex}"
        before = time.time_ns() // 1_000_000
        count, ends = storage.incr_window(key, 60, 5)
        assert count == 5 and before + 60_000 <= ends <= time.time_ns() // 1_000_000 + 60_000
        assert storage.incr_window(key, 60, 3) == (8, ends)  # same window: added, same end
        assert storage.get(key) == 8
        _backdate(db, key)
        assert storage.get(key) == 0
        restarted = time.time_ns() // 1_000_000
        count, new_ends = storage.incr_window(key, 60, 2)
        assert count == 2 and new_ends >= restarted + 60_000  # a new window from now
        assert storage.incr(key, 60) == 3
        other = f"test/{uuid.uuid4().hex}"
        assert storage.incr(other, 60) == 1  # each key its own count
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_count_on_postgresql_is_one_statement_in_one_round_trip(pg_url: str) -> None:
    """No session, no BEGIN/COMMIT: the upsert of an UNLOGGED table commits on its own
    without waiting for the disk."""
    upgrade(pg_url)
    db = Database(pg_url)
    recorder = Recorder(db)
    try:
        storage = DatabaseStorage(database=db)
        key = f"test/{uuid.uuid4().hex}"
        storage.incr_window(key, 60, 1)  # the pool's first connection opened
        (count, _ends), statements, trips = recorder.call(lambda: storage.incr_window(key, 60, 4))
        assert count == 5
        assert trips == 1, statements
        assert len(statements) == 1 and "rate_limit_counters" in statements[0], statements
        assert recorder.sessions == 0
    finally:
        recorder.forget()
        db.dispose()


def test_purge_removes_only_ended_counters_under_the_prefix(database_url: str) -> None:
    """`purge_ended(prefix)`: the ended windows whose key starts with the prefix, as written
    (`_` is no wildcard), and no live one."""
    upgrade(database_url)
    db = Database(database_url)
    try:
        storage = DatabaseStorage(database=db)
        run = uuid.uuid4().hex[:8]
        ended, lookalike, live = f"p_{run}/a", f"pX{run}/b", f"p_{run}/c"
        for key in (ended, lookalike, live):
            storage.incr(key, 60)
        _backdate(db, ended)
        _backdate(db, lookalike)
        assert storage.purge_ended(f"p_{run}/") == 1
        assert storage.get_expiry(ended) <= time.time() + 1  # gone: "ends now"
        with db.transaction(readonly=True) as session:
            kept = set(session.scalars(select(RateLimitCounter.key)))
        assert ended not in kept and {lookalike, live} <= kept
        assert storage.get(live) == 1
    finally:
        db.dispose()
