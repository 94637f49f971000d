"""Read-only transactions on PostgreSQL run without BEGIN/COMMIT (tollbooth.db): each statement
is its own transaction, which under READ COMMITTED it effectively was already."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tollbooth.db import Database


def _two_clocks(db: Database, *, readonly: bool) -> tuple[object, object]:
    with db.transaction(readonly=readonly) as session:
        first = session.execute(text("SELECT now()")).scalar()
        session.execute(text("SELECT pg_sleep(0.01)"))
        second = session.execute(text("SELECT now()")).scalar()
    return first, second


@pytest.mark.postgres
def test_readonly_statements_are_not_in_one_transaction_but_writes_are(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        first, second = _two_clocks(db, readonly=True)
        assert first != second  # now() is the transaction's start: two transactions
        first, second = _two_clocks(db, readonly=False)
        assert first == second  # one transaction
        # The pooled connection comes back in its default mode: a write block is atomic.
        with pytest.raises(RuntimeError):
            with db.transaction() as session:
                session.execute(text("CREATE TABLE ro_probe (x int)"))
                raise RuntimeError("roll back")
        with db.transaction(readonly=True) as session:
            assert session.execute(text("SELECT to_regclass('ro_probe')")).scalar() is None
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_streamed_read_gets_its_transaction_and_the_connection_comes_back_clean(
    pg_url: str,
) -> None:
    db = Database(pg_url, pool_size=1, max_overflow=0)  # one connection: the same one again
    try:
        with db.transaction(readonly=True) as session:
            rows = session.execute(
                text("SELECT generate_series(1, 5000)").execution_options(yield_per=100)
            )
            assert sum(1 for _ in rows) == 5000
        first, second = _two_clocks(db, readonly=True)
        assert first != second  # autocommit again, no transaction left open
        with db.transaction(readonly=True) as session:
            state = session.execute(
                text("SELECT state FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            ).scalar()
        assert state == "active"
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_plain_autocommit_connection_comes_back_to_the_pool_transactional(pg_url: str) -> None:
    """`Database.autocommit()` (a warm CheckEntitlement's one statement): each statement its
    own transaction; the same pooled connection then serves an atomic write block."""
    db = Database(pg_url, pool_size=1, max_overflow=0)  # one connection: the same one again
    try:
        with db.autocommit() as conn:
            first = conn.execute(text("SELECT now()")).scalar()
            conn.execute(text("SELECT pg_sleep(0.01)"))
            second = conn.execute(text("SELECT now()")).scalar()
        assert first != second  # two transactions
        with pytest.raises(RuntimeError):
            with db.transaction() as session:
                session.execute(text("CREATE TABLE ac_probe (x int)"))
                raise RuntimeError("roll back")
        with db.autocommit() as conn:
            assert conn.execute(text("SELECT to_regclass('ac_probe')")).scalar() is None
        first, second = _two_clocks(db, readonly=False)
        assert first == second  # one transaction
    finally:
        db.dispose()


def test_autocommit_is_for_postgresql_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(RuntimeError), db.autocommit():
            pass
    finally:
        db.dispose()
