"""One PostgreSQL LISTEN connection per database and process, on a daemon thread, for the
in-process views that drop what they keep when a change commits (`tollbooth.catalog.snapshot`,
`tollbooth.subscriptions.holdings`, `tollbooth.usage.known_metrics`).

Each view subscribes its channels (`subscribe(db, channels, connected=..., notified=...)`) to
the one `Listener` of its database (`listener_of(db)`). The rules a view relies on, per
subscription:

- `connected()` is called once its channels are listened to on the current connection, before
  anything on them is heard: a view drops everything there, so nothing committed after the
  (re)connect is missed. A lost connection reconnects, listens again and calls every
  subscription's `connected()`; a subscription made while connected joins at the next beat;
- `notified(notify)` is called for every notification on its channels, in order;
- the thread proves its connection alive every `bound / 4` (a `SELECT 1`); a subscription's
  `alive()` is false when no heartbeat sent in the last `bound` seconds has been answered
  (connection lost, PostgreSQL restarted), before it has joined the current connection, or
  once it is closed; a view then answers from the database. A heartbeat's time is when it was
  sent, not when its answer came: every commit before it has been heard with the answer, so
  a view serves nothing committed more than `bound` ago that it has not heard of, however
  slow the answer;
- a connection that dies silently (no RST: a network black hole, a peer that acknowledges but
  never answers) does not hold the thread for long: the statements of a beat (`LISTEN`s and
  the heartbeat) not answered within `DEAD_AFTER × bound` (4 s) get the connection cut (a
  watchdog thread shuts its socket down) and the thread reconnects, so it is noticed within
  about `DEAD_AFTER × bound + bound / 4` of the last answer. TCP keepalives and
  `tcp_user_timeout` (the same deadline) let the kernel give up on a path that acknowledges
  nothing as well;
- `vouched`: every commit before this time has been heard (the time the previous heartbeat was
  sent), for a view's `as_of`.

The connection's `application_name` is `tollbooth-listener:<pid>`, so pg_stat_activity shows
each process's listener.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from tollbooth.db import Database
from tollbooth.db.types import utcnow

log = logging.getLogger("tollbooth.db.listen")

BOUND_SEC = 1.0
DEAD_AFTER = 4  # bounds: a beat not answered by then gets its connection cut
DEAD_AFTER_SEC = DEAD_AFTER * BOUND_SEC
APPLICATION = "tollbooth-listener"


class _Closeable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=_Closeable)
V = TypeVar("V")


class PerDatabase(Generic[T]):
    """One `T` per `Database` in this process (`of(db)`), made on first use and closed when
    the database is disposed; `find(session.bind)` for a session's commit hooks."""

    def __init__(self, make: Callable[[Database], T]) -> None:
        self._make = make
        self._found: dict[int, T] = {}
        self._lock = threading.Lock()

    def of(self, db: Database) -> T:
        key = id(db.engine)
        found = self._found.get(key)
        if found is None:
            with self._lock:
                found = self._found.get(key)
                if found is None:
                    found = self._found[key] = self._make(db)
                    db.on_dispose(lambda: self._forget(key))
        return found

    def find(self, bind: object) -> T | None:
        return self._found.get(id(bind)) if bind is not None else None

    def _forget(self, key: int) -> None:
        with self._lock:
            found = self._found.pop(key, None)
        if found is not None:
            found.close()


class Subscription:
    """One view's channels and callbacks on its database's listener."""

    def __init__(
        self,
        listener: Listener,
        channels: Sequence[str],
        connected: Callable[[], None],
        notified: Callable[[Any], None],
    ) -> None:
        self.listener = listener
        self.channels = frozenset(channels)
        self.connected = connected
        self.notified = notified
        self.joined = 0  # the connection (Listener.generation) its `connected()` ran on
        self.closed = False

    def alive(self) -> bool:
        """Joined the listener's connection, which proved alive within the bound."""
        return not self.closed and self.listener.alive() and self.listener.serves(self)

    @property
    def vouched(self) -> dt.datetime:
        return self.listener.vouched

    def close(self) -> None:
        self.listener.unsubscribe(self)


class Listener:
    """The LISTEN connection of one database in this process (`listener_of(db)`)."""

    def __init__(self, db: Database, *, bound_sec: float = BOUND_SEC) -> None:
        self._db = db
        self._bound = bound_sec
        self._dead_after = DEAD_AFTER * bound_sec
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        # The watchdog's: the current connection's socket (a duplicate of its descriptor, so
        # it is never another one's) and when its pending beat is due (None: none pending).
        self._watch = threading.Condition()
        self._socket: socket.socket | None = None
        self._due: float | None = None
        self._subscriptions: tuple[Subscription, ...] = ()  # replaced, never changed
        self.generation = 0  # connections made; 0: none yet
        self._alive_at = 0.0  # monotonic time the last answered heartbeat was sent
        self.vouched = dt.datetime.min.replace(tzinfo=dt.UTC)

    def subscribe(
        self,
        channels: Sequence[str],
        *,
        connected: Callable[[], None],
        notified: Callable[[Any], None],
    ) -> Subscription:
        subscription = Subscription(self, channels, connected, notified)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscription.closed = True
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def serves(self, subscription: Subscription) -> bool:
        return subscription.joined == self.generation != 0

    def alive(self) -> bool:
        """Started (idempotent) and proved alive within the bound."""
        self.start()
        return time.monotonic() - self._alive_at <= self._bound

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
                self._thread.start()
                self._watcher = threading.Thread(
                    target=self._watchdog, name="listener-watchdog", daemon=True
                )
                self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        with self._watch:
            self._watch.notify_all()
        for thread in (self._thread, self._watcher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        dsn = self._db.url.replace("postgresql+psycopg://", "postgresql://", 1)
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with (
                    psycopg.connect(
                        dsn,
                        autocommit=True,
                        connect_timeout=5,
                        application_name=f"{APPLICATION}:{os.getpid()}",
                        # The kernel gives up on a path that acknowledges nothing (ignored on
                        # a Unix socket); the watchdog on a peer that acknowledges but never
                        # answers.
                        keepalives=1,
                        keepalives_idle=max(1, math.ceil(self._bound)),
                        keepalives_interval=1,
                        keepalives_count=max(1, math.ceil(self._dead_after)),
                        tcp_user_timeout=math.ceil(self._dead_after * 1000),
                    ) as conn,
                    self._watched(conn),
                ):
                    self.generation += 1
                    listening: set[str] = set()
                    with self._answered():
                        self._join(conn, listening)
                    backoff = 0.2
                    self._serve(conn, listening)
            except Exception:  # noqa: BLE001 - reconnect; the views read the database meanwhile
                self._alive_at = 0.0
                if self._stop.is_set():
                    return
                log.warning("the listener lost its connection; reconnecting", exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._alive_at = 0.0

    @contextlib.contextmanager
    def _watched(self, conn: Any) -> Iterator[None]:
        """The watchdog may cut `conn` while the block runs."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        with self._watch:
            self._socket = sock
        try:
            yield
        finally:
            with self._watch:
                self._socket, self._due = None, None
            sock.close()

    @contextlib.contextmanager
    def _answered(self) -> Iterator[None]:
        """The block's statements must be answered within `DEAD_AFTER × bound`, or the
        watchdog cuts the connection (the block then raises and the thread reconnects)."""
        with self._watch:
            self._due = time.monotonic() + self._dead_after
            self._watch.notify_all()
        try:
            yield
        finally:
            with self._watch:
                self._due = None

    def _watchdog(self) -> None:
        """Shut down the socket of a connection whose beat is overdue: libpq then reads the
        end of the stream, at once, instead of waiting for the kernel to give up (minutes)."""
        with self._watch:
            while not self._stop.is_set():
                due = self._due
                left = None if due is None else due - time.monotonic()
                if left is None or left > 0:
                    self._watch.wait(left)
                    continue
                self._due = None
                if self._socket is not None:
                    log.warning("the listener's connection did not answer; cutting it")
                    with contextlib.suppress(OSError):
                        self._socket.shutdown(socket.SHUT_RDWR)

    def _join(self, conn: Any, listening: set[str]) -> None:
        """Listen to the channels of every subscription not on this connection yet, then
        call its `connected()`: it drops what it keeps, and hears every later commit."""
        for subscription in self._subscriptions:
            if subscription.joined == self.generation:
                continue
            for channel in sorted(subscription.channels - listening):
                conn.execute(f"LISTEN {channel}")
                listening.add(channel)
            subscription.connected()
            subscription.joined = self.generation

    def _dispatch(self, notify: Any) -> None:
        for subscription in self._subscriptions:
            if notify.channel in subscription.channels and self.serves(subscription):
                subscription.notified(notify)

    def _serve(self, conn: Any, listening: set[str]) -> None:
        beat = self._bound / 4
        previous: dt.datetime | None = None
        while not self._stop.is_set():
            with self._answered():
                self._join(conn, listening)  # subscriptions made since the last beat
                sent, sent_at = utcnow(), time.monotonic()
                conn.execute("SELECT 1")
            # Notifications that arrived with the reply (psycopg >= 3.2.4 keeps them).
            for notify in conn.notifies(timeout=0):
                self._dispatch(notify)
            # Every commit before the beat was sent has been heard: alive from then on.
            self._alive_at = sent_at
            if previous is not None:
                # Every commit before the previous beat was sent has been heard by now.
                self.vouched = previous
            previous = sent
            for notify in conn.notifies(timeout=beat):
                self._dispatch(notify)


_listeners: PerDatabase[Listener] = PerDatabase(Listener)


def listener_of(db: Database) -> Listener:
    """This process's listener of `db`: one connection for every view's channels."""
    return _listeners.of(db)


def subscribe(
    db: Database,
    channels: Sequence[str],
    *,
    connected: Callable[[], None],
    notified: Callable[[Any], None],
) -> Subscription:
    return listener_of(db).subscribe(channels, connected=connected, notified=notified)


class Reloaded(Generic[V]):
    """A view kept whole (the catalog, the metric definitions): `get()` is what to answer
    from, or None (read the database). A notification on its channels, its own process's
    write (`changed()`) or a reconnect marks it stale; the next read reloads it (`_load`)
    before answering, and never answers from what was loaded before the last change heard."""

    def __init__(self, db: Database, channels: Sequence[str]) -> None:
        self._db = db
        self._enabled = db.dialect == "postgresql"
        self._lock = threading.Lock()
        self._reload = threading.Lock()
        self._changes = 0  # notifications heard (and own writes)
        self._kept: V | None = None
        self._loaded_at_change = -1
        # `changed` on connect, before anything is loaded: nothing committed later is missed.
        self._subscription = subscribe(
            db, channels, connected=self.changed, notified=lambda n: self._on_notify(n)
        )

    def _load(self) -> V:
        raise NotImplementedError

    def changed(self) -> None:
        """A change committed (by this process, or heard from PostgreSQL)."""
        with self._lock:
            self._changes += 1

    def get(self) -> V | None:
        if not self._enabled or not self._subscription.alive():
            return None  # the listener cannot vouch for what is kept: read the database
        with self._lock:
            if self._kept is not None and self._loaded_at_change == self._changes:
                return self._kept
        with self._reload:
            with self._lock:
                wanted = self._changes
                if self._kept is not None and self._loaded_at_change == wanted:
                    return self._kept
            # Loaded after `wanted` changes were heard: a later notification reloads again.
            kept = self._load()
            with self._lock:
                self._kept, self._loaded_at_change = kept, wanted
            return kept

    def close(self) -> None:
        self._subscription.close()

    def _on_notify(self, _notify: object) -> None:
        self.changed()
