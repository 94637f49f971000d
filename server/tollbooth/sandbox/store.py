"""SQLite state: every Stripe object as JSON, idempotency results, the delivery queue.

One lock serialises every transaction: webhook delivery runs in its own thread and requests in
a thread pool, and a sandbox needs correctness far more than write concurrency.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_type ON objects (type, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    created REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (done, next_at);
"""


class Store:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self._depth = 0

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[Store]:
        """One transaction; an exception with `commit=True` keeps the effects, others roll back."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException as exc:
                if getattr(exc, "commit", False):
                    self.conn.execute("COMMIT")
                else:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def breathe(self, pause: float = 0.002) -> None:
        """Inside the outermost transaction: commit what is done so far, let the requests
        waiting for the lock run theirs, and begin again. For work done in steps (a test
        clock's advance over many periods) that must not hold every other request; each step
        is whole, and a failure later rolls back the current step only. Elsewhere a no-op."""
        if self._depth != 1:
            return
        self.conn.execute("COMMIT")
        self._depth = 0
        self.lock.release()
        try:
            time.sleep(pause)  # the lock is not fair: give a waiting thread the chance to take it
        finally:
            self.lock.acquire()
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1

    # -- objects --------------------------------------------------------------------------------

    def get(self, object_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM objects WHERE id = ?", (object_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":"))
        self.conn.execute(
            "INSERT INTO objects (id, type, data) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (obj["id"], obj["object"], data),
        )

    def seq_of(self, object_id: str) -> int | None:
        row = self.conn.execute("SELECT seq FROM objects WHERE id = ?", (object_id,)).fetchone()
        return int(row[0]) if row else None

    def all(self, kind: str) -> list[tuple[int, dict[str, Any]]]:
        """Every object of a type, newest first (Stripe's list order)."""
        rows = self.conn.execute(
            "SELECT seq, data FROM objects WHERE type = ? ORDER BY seq DESC", (kind,)
        ).fetchall()
        return [(int(seq), json.loads(data)) for seq, data in rows]

    # -- idempotency ----------------------------------------------------------------------------

    def idempotent_result(self, key: str) -> tuple[str, int, str] | None:
        row = self.conn.execute(
            "SELECT fingerprint, status, body FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        return (row[0], int(row[1]), row[2]) if row else None

    def save_idempotent(
        self, key: str, fingerprint: str, status: int, body: str, now: float
    ) -> None:
        self.conn.execute(
            "INSERT INTO idempotency (key, fingerprint, status, body, created) VALUES (?,?,?,?,?)",
            (key, fingerprint, status, body, now),
        )

    def forget_idempotency_before(self, cutoff: float) -> None:
        self.conn.execute("DELETE FROM idempotency WHERE created < ?", (cutoff,))

    # -- deliveries -----------------------------------------------------------------------------

    def enqueue(self, event_id: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO deliveries (event_id, created, next_at) VALUES (?, ?, ?)",
            (event_id, now, now),
        )

    def due(self, now: float) -> list[tuple[int, str, float, int]]:
        rows = self.conn.execute(
            "SELECT id, event_id, created, attempts FROM deliveries "
            "WHERE done = 0 AND next_at <= ? ORDER BY id",
            (now,),
        ).fetchall()
        return [(int(a), str(b), float(c), int(d)) for a, b, c, d in rows]

    def next_due_at(self) -> float | None:
        row = self.conn.execute("SELECT MIN(next_at) FROM deliveries WHERE done = 0").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def mark_delivery(
        self, delivery_id: int, *, done: bool, status: int | None, next_at: float, attempts: int
    ) -> None:
        self.conn.execute(
            "UPDATE deliveries SET done = ?, last_status = ?, next_at = ?, attempts = ? "
            "WHERE id = ?",
            (1 if done else 0, status, next_at, attempts, delivery_id),
        )

    def pending_for(self, event_id: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE event_id = ? AND done = 0", (event_id,)
        ).fetchone()
        return int(row[0])
