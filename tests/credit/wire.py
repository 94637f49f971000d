"""Round trips on the wire: libpq's trace of every connection a server checks out.

One round trip is a run of client messages answered by the server. `serve_traced` starts a
server on a real PostgreSQL whose pooled connections are traced while `Wire.recording`;
`traced` makes one call and counts its round trips.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
from google.protobuf.message import Message
from sqlalchemy import event
from sqlalchemy.orm import Session

from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import stub
from tests.devstack import serving
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import Database


class Wire:
    """libpq traces of the connections the server checks out while `recording`."""

    def __init__(self) -> None:
        self.recording = False
        self.files: list[Any] = []

    def start(self, dbapi_conn: Any) -> None:
        if not self.recording:
            return
        f = tempfile.TemporaryFile("w+")
        self.files.append(f)
        dbapi_conn.pgconn.trace(f.fileno())
        dbapi_conn.pgconn.set_trace_flags(
            psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
        )

    @staticmethod
    def stop(dbapi_conn: Any) -> None:
        dbapi_conn.pgconn.untrace()

    def round_trips(self) -> tuple[int, list[str]]:
        """Round trips (client messages, then the server's answer) over every trace, and the
        statements sent."""
        trips, statements = 0, []
        for f in self.files:
            f.flush()
            f.seek(0)
            sending = False
            for line in f:
                side = line.split("\t", 1)[0]
                if side == "F":
                    sending = True
                    if "\tParse\t" in line or "\tQuery\t" in line:
                        statements.append(line.split('"')[3] if "Parse" in line else line)
                elif side == "B" and sending:
                    trips += 1
                    sending = False
            f.close()
        self.files = []
        return trips, statements


def serve_traced(url: str) -> Iterator[tuple[grpc.Channel, Wire, Deps]]:
    """A server on `url` with its connections traced, and a channel to it (a fixture's body)."""
    # The per-key and per-account rate limits refill their leases from PostgreSQL now and
    # then, on a pooled connection of their own, inside whichever call happens to need it:
    # those statements are not the call's, and counting them made the figures flaky.
    env = make_env(url, BILLING_RATE_LIMIT_KEY="off", BILLING_RATE_LIMIT_ACCOUNT="off")
    deps = Deps.build(Settings.from_env(env))
    wire = Wire()
    # After the pool's own checkout listeners (the idle ping is not counted: a connection in
    # steady use is not pinged).
    event.listen(deps.db.engine, "checkout", lambda c, r, p: wire.start(c))
    event.listen(deps.db.engine, "checkin", lambda c, r: wire.stop(c))
    try:
        with serving(deps) as ch:
            yield ch, wire, deps
    finally:
        deps.db.dispose()


def traced(
    channel: grpc.Channel, wire: Wire, method: str, request: Message
) -> tuple[Any, int, list[str]]:
    """One call of CreditService `method`: its answer (or error), round trips, statements."""
    wire.recording = True
    try:
        reply = getattr(stub(channel), method)(request, metadata=SERVICE_MD, timeout=10)
    except grpc.RpcError as err:
        reply = err
    finally:
        wire.recording = False
    trips, statements = wire.round_trips()
    return reply, trips, statements


class Recorder:
    """What the server sends PostgreSQL while on (libpq's trace of every connection it checks
    out: the statements, each parsed anew, and the round trips), and the ORM sessions it
    begins on its engine."""

    def __init__(self, db: Database) -> None:
        self.on = False
        self.sessions = 0  # ORM sessions that began a transaction on the server's engine
        self.wire = Wire()

        def began(session, transaction, connection) -> None:  # type: ignore[no-untyped-def]
            if self.on and connection.engine is db.engine:
                self.sessions += 1

        event.listen(Session, "after_begin", began)
        self.forget = lambda: event.remove(Session, "after_begin", began)
        # No server-side prepared statements: every statement is sent with its text (a Parse
        # message), so the trace names each one. How many are sent does not depend on it.
        event.listen(db.engine, "connect", lambda c, r: setattr(c, "prepare_threshold", None))
        # After the pool's own checkout listeners (the idle ping is not counted).
        event.listen(db.engine, "checkout", lambda c, r, p: self.wire.start(c))
        event.listen(db.engine, "checkin", lambda c, r: self.wire.stop(c))

    def call(self, fn: Any) -> tuple[Any, list[str], int]:
        """fn's result, the statements sent and the round trips."""
        self.sessions = 0
        self.on = self.wire.recording = True
        try:
            result = fn()
        finally:
            self.on = self.wire.recording = False
        trips, statements = self.wire.round_trips()
        return result, statements, trips


def serve_recorded(url: str) -> Iterator[tuple[grpc.Channel, Database, Recorder]]:
    """A server on `url` whose database is watched by a `Recorder`, and a channel to it (a
    fixture's body)."""
    db = Database(url)
    recorder = Recorder(db)
    # Rate limits off: their leases refill from PostgreSQL now and then inside whichever
    # call needs it, and those statements are not the call's.
    env = make_env(url, BILLING_RATE_LIMIT_KEY="off", BILLING_RATE_LIMIT_ACCOUNT="off")
    try:
        with serving(Deps.build(Settings.from_env(env), db)) as channel:
            yield channel, db, recorder
    finally:
        recorder.forget()
        db.dispose()
