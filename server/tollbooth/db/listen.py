"""A PostgreSQL LISTEN connection on a daemon thread, for the in-process caches that drop what
they keep when a change commits (`tollbooth.catalog.snapshot`, `tollbooth.subscriptions.holdings`).

The rules a cache relies on:

- `connected()` is called once the channels are listened to, before anything is heard: a cache
  drops everything there, so nothing committed after the (re)connect is missed;
- `notified(notify)` is called for every notification, in order;
- the thread proves its connection alive every `bound / 4` (a `SELECT 1`); `alive()` is false
  when it has not done so for `bound` seconds (connection lost, PostgreSQL restarted), and a
  cache then answers from the database;
- `vouched`: every commit before this time has been heard (the time the previous heartbeat was
  sent), for a cache's `as_of`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tollbooth.db import Database
from tollbooth.db.types import utcnow

log = logging.getLogger("tollbooth.db.listen")


class Listener:
    def __init__(
        self,
        db: Database,
        channels: Sequence[str],
        *,
        name: str,
        bound_sec: float,
        connected: Callable[[], None],
        notified: Callable[[Any], None],
    ) -> None:
        self._db = db
        self._channels = tuple(channels)
        self._name = name
        self._bound = bound_sec
        self._connected = connected
        self._notified = notified
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._alive_at = 0.0  # monotonic time the connection last proved alive
        self.vouched = dt.datetime.min.replace(tzinfo=dt.UTC)

    def alive(self) -> bool:
        """Started (idempotent) and proved alive within the bound."""
        self.start()
        return time.monotonic() - self._alive_at <= self._bound

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        dsn = self._db.url.replace("postgresql+psycopg://", "postgresql://", 1)
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                    for channel in self._channels:
                        conn.execute(f"LISTEN {channel}")
                    self._connected()
                    backoff = 0.2
                    self._serve(conn)
            except Exception:  # noqa: BLE001 - reconnect; the cache reads the database meanwhile
                self._alive_at = 0.0
                if self._stop.is_set():
                    return
                log.warning("%s lost its connection; reconnecting", self._name, exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._alive_at = 0.0

    def _serve(self, conn: Any) -> None:
        beat = self._bound / 4
        previous: dt.datetime | None = None
        while not self._stop.is_set():
            sent = utcnow()
            conn.execute("SELECT 1")
            # Notifications that arrived with the reply (psycopg >= 3.2.4 keeps them).
            for notify in conn.notifies(timeout=0):
                self._notified(notify)
            self._alive_at = time.monotonic()
            if previous is not None:
                # Every commit before the previous beat was sent has been heard by now.
                self.vouched = previous
            previous = sent
            for notify in conn.notifies(timeout=beat):
                self._notified(notify)
