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
def test_read_one_commits_its_statement_and_gives_the_connection_back_transactional(
    pg_url: str,
) -> None:
    """`Database.read_one` (a warm CheckEntitlement's one statement): the statement is its own
    transaction; the same pooled connection then serves an atomic write block."""
    db = Database(pg_url, pool_size=1, max_overflow=0)  # one connection: the same one again
    other = Database(pg_url)
    try:
        with db.transaction() as session:
            session.execute(text("CREATE TABLE ro_one (x int)"))
        assert db.read_one("INSERT INTO ro_one VALUES (%(x)s) RETURNING x", {"x": 7}) == (7,)
        with other.transaction(readonly=True) as session:  # committed: seen elsewhere
            assert session.execute(text("SELECT x FROM ro_one")).scalars().all() == [7]
        with pytest.raises(RuntimeError):
            with db.transaction() as session:
                session.execute(text("INSERT INTO ro_one VALUES (8)"))
                raise RuntimeError("roll back")
        assert db.read_one("SELECT count(*) FROM ro_one", {}) == (1,)
        assert db.read_one("SELECT 1 WHERE false", {}) is None
    finally:
        db.dispose()
        other.dispose()


@pytest.mark.postgres
def test_read_one_raises_sqlalchemy_errors_and_drops_a_broken_connection(pg_url: str) -> None:
    """A driver error is SQLAlchemy's (OperationalError: the RPC answers UNAVAILABLE) and the
    connection it came from is not reused."""
    from sqlalchemy import exc

    db = Database(pg_url, pool_size=1, max_overflow=0)
    other = Database(pg_url)
    try:
        with pytest.raises(exc.ProgrammingError):
            db.read_one("SELECT * FROM no_such_table", {})
        (pid,) = db.read_one("SELECT pg_backend_pid()", {})
        with other.transaction() as session:  # the server drops that connection
            session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(exc.OperationalError):
            db.read_one("SELECT 1", {})
        (again,) = db.read_one("SELECT pg_backend_pid()", {})  # a new connection
        assert again != pid
    finally:
        db.dispose()
        other.dispose()


def test_read_one_is_for_postgresql_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(RuntimeError):
            db.read_one("SELECT 1", {})
    finally:
        db.dispose()
