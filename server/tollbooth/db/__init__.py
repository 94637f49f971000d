"""Engine, sessions and the one-transaction-per-RPC helper."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

READONLY_OPTION = "tollbooth_readonly"

# How long a dead PostgreSQL may keep a caller waiting (libpq's own parameters; a database URL
# that names one, `?connect_timeout=10`, keeps its value). Without them libpq waits on a
# server that takes the connection and answers nothing for ever, and the kernel gives up on a
# path that stopped acknowledging only after two hours idle (keepalive) or about 15 minutes of
# retransmissions: the RPC's worker thread is held all that time, the caller sees its own
# deadline instead of UNAVAILABLE.
CONNECT_TIMEOUT_SEC = 5
TCP_USER_TIMEOUT_SEC = 30  # sent data unacknowledged this long: the connection is dead
CONNECTION_SETTINGS: dict[str, int] = {
    "connect_timeout": CONNECT_TIMEOUT_SEC,
    "keepalives": 1,
    "keepalives_idle": 30,  # an idle connection is probed after 30 s,
    "keepalives_interval": 5,  # every 5 s,
    "keepalives_count": 3,  # and given up after 3 probes unanswered (45 s in all)
    "tcp_user_timeout": TCP_USER_TIMEOUT_SEC * 1000,
}

log = logging.getLogger("tollbooth.db")

# Transactions this thread holds open (`Database.transaction`): the network boundary checks it.
_held = threading.local()

# Set (to 1) by the test suite: a call to a network peer made while this thread holds a
# transaction raises instead of only logging.
STRICT_BOUNDARY_ENV = "TOLLBOOTH_STRICT_NETWORK_BOUNDARY"


class TransactionAcrossNetworkCall(RuntimeError):
    """A network peer was called while this thread held a database transaction open."""


def transactions_held() -> int:
    """How many `Database.transaction` blocks this thread is inside now."""
    return getattr(_held, "depth", 0)


def no_transaction_held(peer: str) -> None:
    """Called just before a request to a network peer (Stripe, a notification receiver):
    a transaction open on this thread would hold its locks (and SQLite's write lock) for as
    long as the peer takes to answer. Logged as an error; raised under the test suite
    (`TOLLBOOTH_STRICT_NETWORK_BOUNDARY=1`) so any path that does it fails its tests."""
    depth = transactions_held()
    if not depth:
        return
    message = f"a call to {peer} was made inside {depth} open database transaction(s)"
    log.error(message)
    if os.environ.get(STRICT_BOUNDARY_ENV) == "1":
        raise TransactionAcrossNetworkCall(message)


def upsert_insert(session: Session, model: Any) -> Any:
    """An INSERT that supports ON CONFLICT on both backends (PostgreSQL and SQLite)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain PostgreSQL URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# SQLSTATE read_only_sql_transaction: a write on a hot standby, or with
# default_transaction_read_only on. The RPC answers UNAVAILABLE DATABASE_READ_ONLY.
READ_ONLY_SQLSTATE = "25006"


def is_read_only(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy's or the driver's) is PostgreSQL refusing a write because
    the database is read-only."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == READ_ONLY_SQLSTATE


# SQLSTATEs of PostgreSQL ending the session itself for a timeout an operator set
# (idle_in_transaction_session_timeout, transaction_timeout): the driver classes them as
# InternalError, yet the connection is gone, as when a backend is terminated.
SESSION_ENDED_SQLSTATES = frozenset({"25P03", "25P04"})


def is_lost_connection(exc: BaseException) -> bool:
    """Whether `exc` is the connection lost under the call, whatever error class the driver
    gave it: SQLAlchemy found it a disconnect (and dropped the connection from the pool), or
    PostgreSQL ended the session for a timeout. The RPC answers UNAVAILABLE, as for the
    OperationalError of a terminated backend."""
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) in SESSION_ENDED_SQLSTATES


def _retire_read_only(engine: Engine) -> None:
    """A connection that met a read-only database is not given back to the pool: the next one
    is made afresh, so a URL naming several hosts (`target_session_attrs=read-write`) reaches
    the new primary after a failover. Only that connection: the others find out for themselves."""

    @event.listens_for(engine, "handle_error")
    def _read_only(context):  # type: ignore[no-untyped-def]
        if is_read_only(context.original_exception):
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = False


def _retire_connection(session: Session) -> None:
    """Retire the connection of `session`'s transaction, which met a read-only database
    outside SQLAlchemy's statements (DebitCredits' pipelined trips, usage ingest's cursor: the
    `handle_error` hook above never sees those), so the next transaction gets a fresh one."""
    with contextlib.suppress(Exception):
        session.connection().invalidate()


def connection_settings(url: str) -> dict[str, int]:
    """`CONNECTION_SETTINGS` for a PostgreSQL `url`, less those its query names itself."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "postgresql":
        return {}
    return {k: v for k, v in CONNECTION_SETTINGS.items() if k not in parsed.query}


# The SQL name of Python's str.lower on every SQLite connection (see make_engine).
UNICODE_LOWER = "tollbooth_lower"


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def make_engine(url: str, **kwargs: object) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # A new file is the owner's only (it holds endpoint secrets), as the generated
            # credentials are; SQLite gives its WAL and shm files this mode. An existing
            # file keeps the mode its owner gave it (any other failure is SQLite's to report).
            with contextlib.suppress(OSError):
                os.close(
                    os.open(path.split("?", 1)[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                )
        for key in ("pool_size", "max_overflow"):
            kwargs.pop(key, None)  # sized for PostgreSQL; SQLite keeps its own pool
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy emit BEGIN itself, so a transaction holds its lock from the start.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # SQLite's lower() folds ASCII only: e-mails are compared "in any case" through
            # this one, Python's (PostgreSQL's lower() folds by its locale, on both sides).
            dbapi_conn.create_function(UNICODE_LOWER, 1, _unicode_lower, deterministic=True)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # Writers take the write lock up front (no lock upgrades, no SQLITE_BUSY midway);
            # read-only transactions stay deferred so they never queue behind writers (WAL).
            readonly = conn.get_execution_options().get(READONLY_OPTION)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    options: dict[str, object] = {"pool_size": 10, "max_overflow": 20}
    options.update(kwargs)
    options["connect_args"] = {
        **connection_settings(url),
        **dict(options.get("connect_args") or {}),  # type: ignore[call-overload]
    }
    engine = create_engine(url, **options)
    _ping_when_idle(engine)
    _stream_in_a_transaction(engine)
    _retire_read_only(engine)
    return engine


def _stream_in_a_transaction(engine: Engine) -> None:
    """A read-only block runs in autocommit, but a streamed result (`yield_per`, a server-side
    cursor) needs a transaction block: such a statement turns autocommit off for the rest of
    the block (the pool restores the connection's mode when it comes back)."""

    @event.listens_for(engine, "before_execute")
    def _begin_for_stream(conn, clause, multiparams, params, options):  # type: ignore[no-untyped-def]
        merged = {**conn.get_execution_options(), **(options or {})}
        if not (merged.get("stream_results") or merged.get("yield_per")):
            return
        dbapi_conn = conn.connection.dbapi_connection
        if dbapi_conn is not None and dbapi_conn.autocommit:
            dbapi_conn.autocommit = False


# A pooled connection idle longer than this is pinged before use (a round trip); one in steady
# use is not, so a busy server pays no ping per transaction.
PING_IDLE_SEC = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's `pool_pre_ping`, for connections that sat idle: one that PostgreSQL closed
    meanwhile (a restart, a terminated backend) is replaced before a transaction sees it."""

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_IDLE_SEC:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)  # what pool_pre_ping runs (outside a transaction)
        except Exception as exc:
            # The pool discards this connection and checks out another (a fresh one).
            raise DisconnectionError(str(exc)) from exc


class Database:
    """Owns the engine and hands out one transaction at a time."""

    def __init__(self, url: str, **engine_kwargs: object) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._on_dispose: list[Callable[[], None]] = []
        self._postgres = self.engine.dialect.name == "postgresql"

    def on_dispose(self, callback: Callable[[], None]) -> None:
        """Run `callback` when this database is disposed (a listener closing its connection)."""
        self._on_dispose.append(callback)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """One transaction: commits when the block ends, rolls back on any exception.

        `readonly` is a promise that the block only reads; on SQLite it skips the write lock.
        On PostgreSQL its statements run without BEGIN and COMMIT (autocommit): under READ
        COMMITTED each statement takes its own snapshot either way, and the two commands
        cost a round trip each.
        """
        with self._sessions() as session, session.begin():
            if readonly:
                options: dict[str, Any] = {READONLY_OPTION: True}
                if self._postgres:
                    options["isolation_level"] = "AUTOCOMMIT"
                session.connection(execution_options=options)
            _held.depth = transactions_held() + 1
            try:
                yield session
            except BaseException as exc:
                if is_read_only(exc):
                    _retire_connection(session)
                raise
            finally:
                _held.depth -= 1

    def read_one(
        self,
        sql: str,
        params: Mapping[str, Any],
        *,
        prepare: bool | None = None,
        passes: str | None = None,
    ) -> Any:
        """The first row of one statement (psycopg's `%(name)s` parameters) run in autocommit
        on a pooled PostgreSQL connection through the driver's own cursor: one round trip, no
        session, no SQLAlchemy statement machinery (for a warm CheckEntitlement's usage total
        or balance: about a third of the CPU of the same statement on a SQLAlchemy
        `Connection`; also the rate limits' counter upsert, which commits on its own). A
        driver error is raised as SQLAlchemy's (`OperationalError`...: the RPC answers
        UNAVAILABLE, as on every other path; so is a failure to connect), and the connection
        is then not given back to the pool; a lost one also retires the pool's older
        connections, as a session's does.

        `prepare`: psycopg's (True: a statement prepared on the connection's first use, one
        round trip less afterwards). `passes`: a SQLSTATE the statement raises on purpose
        (the one-call debit's "hand back"): that error is raised as the driver's own and the
        connection, healthy, goes back to the pool."""
        if not self._postgres:
            raise RuntimeError("Database.read_one is for PostgreSQL")
        import psycopg

        try:
            fairy = self.engine.raw_connection()  # the pool's connect raises the driver's error
        except psycopg.Error as exc:
            raise DBAPIError.instance(sql, dict(params), exc, psycopg.Error) from exc
        conn = fairy.driver_connection
        healthy = False
        try:
            conn.autocommit = True  # type: ignore[union-attr]
            with conn.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(sql, params, prepare=prepare)
                row = cur.fetchone()
            conn.autocommit = False  # type: ignore[union-attr]  # the pool's default mode
            healthy = True
            return row
        except psycopg.Error as exc:
            if passes is not None and exc.sqlstate == passes:
                conn.autocommit = False  # type: ignore[union-attr]
                healthy = True
                raise
            lost = self.engine.dialect.is_disconnect(exc, conn, None)  # type: ignore[arg-type]
            if lost:
                # As a session does on a lost connection: every connection the pool holds
                # from before is replaced at its next checkout (PostgreSQL restarted or
                # dropped them too), rather than failing one more call each.
                self.engine.pool._invalidate(fairy, exc, _checkin=False)
            raise DBAPIError.instance(
                sql, dict(params), exc, psycopg.Error, connection_invalidated=lost
            ) from exc
        finally:
            if not healthy:
                fairy.invalidate()  # broken, or left in autocommit: never reused
            fairy.close()

    def dispose(self) -> None:
        callbacks, self._on_dispose = self._on_dispose, []
        for callback in callbacks:
            callback()
        self.engine.dispose()
