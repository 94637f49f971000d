"""The versions of what a server process keeps in memory (migration 0036), read with one
statement: a kept copy answers only when the versions it was loaded at are the current ones.

Every transaction that changes the catalog (`products`, `prices`) bumps `catalog_version`, and
one that changes an account's holdings (`subscriptions`, their items, `purchases`) bumps that
account's row of `holdings_version` (the account '' for every account), in the transaction
itself, at its commit. So a read that takes the versions before it answers sees every change
committed before the call began, heard by its process's listener or not; the listener
(`tollbooth.db.listen`) only drops a copy early.

The race a copy must not lose: its tag is read before its rows (`load_tag`, in the loading
transaction, before the rows' statements), so a change committed in between leaves the copy
tagged older than its rows (reloaded at the next read), never newer.

Coalesced (group commit): a process runs at most one version read at a time (`read`). A call
that arrives while one is in flight waits for the next one, which is sent after it arrived
(never the one in flight: that may have been sent before a change the caller saw committed),
and every call that arrived meanwhile shares it: one statement takes the catalog's version,
every account's row and the rows of all the waiting calls' accounts. An error of the shared
read (the database down: SQLAlchemy's `OperationalError`, the RPC answers UNAVAILABLE) is
raised to each of its callers, and to the calls already waiting for the next one, which is not
sent (they answer within one connect timeout, as their own reads would, not two); the call
after them reads afresh. Nobody waits on a leader that is gone: a leader hands its result, or
its error, on in a `finally`.

PostgreSQL only; on SQLite nothing is kept and every read goes to the database.
"""

from __future__ import annotations

import itertools
import threading
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from tollbooth.db import Database
from tollbooth.db.listen import PerDatabase

EVERY = ""  # the holdings_version row of every account

_SQL = (
    "SELECT (SELECT version FROM catalog_version WHERE id = 1),"
    " (SELECT version FROM holdings_version WHERE billing_account_id = %(every)s),"
    " (SELECT version FROM holdings_version WHERE billing_account_id = %(account)s)"
)


class Versions(NamedTuple):
    """The catalog's version, every account's holdings version and the version of the
    holdings of `account_id` (None: no change to it recorded yet)."""

    catalog: int | None
    every: int | None
    account: int | None
    account_id: str = EVERY

    def holdings(self) -> tuple[int | None, int | None, int | None]:
        """What an account's kept holdings are tagged with: they hold the entitlements of
        prices and products too, so the catalog's version is part of it."""
        return (self.catalog, self.every, self.account)


def covers(kept: tuple[int | None, ...] | None, seen: tuple[int | None, ...]) -> bool:
    """Whether a copy tagged `kept` holds every change the versions `seen` count: versions
    only grow (None: no change recorded yet, 0), so a copy loaded at or after them does. The
    first is the catalog's, whose one row is always there: without it (deleted by hand)
    nothing is covered and every read goes to the database."""
    if kept is None or len(kept) != len(seen) or None in (kept[0], seen[0]):
        return False
    return all((k or 0) >= (s or 0) for k, s in zip(kept, seen, strict=True))


# The shared read: the accounts' rows as one JSON object (account -> version; absent: none yet).
_SHARED_SQL = (
    "SELECT (SELECT version FROM catalog_version WHERE id = 1),"
    " (SELECT version FROM holdings_version WHERE billing_account_id = %(every)s),"
    " (SELECT jsonb_object_agg(billing_account_id, version) FROM holdings_version"
    " WHERE billing_account_id = ANY(%(accounts)s))"
)

# How many shared version statements this process has sent (a diagnostic: calls per statement).
sent = itertools.count()


class _Batch:
    """The callers of one shared read: open (joinable) until its leader sends it."""

    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.callers = 0
        self.turn = threading.Event()  # its leader may send it (no other read in flight)
        self.done = threading.Event()
        self.row: tuple[int | None, int | None, dict[str, int]] | None = None
        self.error: BaseException | None = None
        self.inherited = False  # failed with the read before it: never sent, no turn held


class Coalescer:
    """One per database in this process: at most one version read in flight. The first
    caller of a batch leads it: it waits for the turn, closes the batch and sends its read;
    when it is done, it hands the turn to the batch opened meanwhile (if any). A read that
    failed fails that batch too, unsent (the database failed while its callers waited: they
    answer as their own reads would, without waiting for another attempt), and the next
    caller starts afresh."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._busy = False  # a batch holds the turn (its read in flight or about to be)
        self._open: _Batch | None = None  # the batch the next caller joins, not sent yet

    def read(self, account_id: str) -> Versions:
        with self._lock:
            batch = self._open
            lead = batch is None
            if batch is None:
                batch = self._open = _Batch()
                if not self._busy:
                    self._busy = True
                    batch.turn.set()
            batch.accounts.add(account_id)
            batch.callers += 1
        if lead:
            self._lead(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        assert batch.row is not None
        catalog, every, accounts = batch.row
        return Versions(catalog, every, accounts.get(account_id), account_id)

    def _lead(self, batch: _Batch) -> None:
        try:
            batch.turn.wait()  # handed on by the previous read's leader when it is done
            with self._lock:
                if self._open is batch:
                    self._open = None  # closed: whoever comes now waits for the next read
                accounts = sorted(batch.accounts)
            if not batch.inherited:
                next(sent)
                params = {"every": EVERY, "accounts": accounts}
                catalog, every, rows = self._db.read_one(_SHARED_SQL, params, prepare=True)
                batch.row = (catalog, every, rows or {})
        except BaseException as exc:  # noqa: BLE001 - every caller of the read gets it
            batch.error = exc
        finally:
            with self._lock:
                if self._open is batch:  # never sent: nobody may join it now
                    self._open = None
                if batch.turn.is_set() and not batch.inherited:
                    self._hand_on(batch.error)
            batch.done.set()

    def _hand_on(self, error: BaseException | None) -> None:
        """The turn, from a batch done (under the lock), to the batch opened meanwhile."""
        following = self._open
        if following is None:
            self._busy = False
            return
        if error is not None:  # fails with it, unsent; whoever comes next starts afresh
            following.error, following.inherited = error, True
            self._open = None
            self._busy = False
        following.turn.set()

    def waiting(self) -> int:
        """How many calls wait for the read not sent yet (tests)."""
        with self._lock:
            return self._open.callers if self._open is not None else 0

    def close(self) -> None:
        pass


_coalescers: PerDatabase[Coalescer] = PerDatabase(Coalescer)


def read(db: Database, account_id: str = EVERY) -> Versions:
    """The current versions, read by a statement sent after this call began (autocommit, on
    a pooled connection), shared with the calls that wait for it (`Coalescer`)."""
    return _coalescers.of(db).read(account_id)


def load_tag(session: Session, account_id: str = EVERY) -> Versions:
    """The versions within `session`, read before what it loads (the tag of a copy)."""
    row = session.execute(
        text(
            _SQL.replace("%(every)s", ":every").replace("%(account)s", ":account"),
        ),
        {"every": EVERY, "account": account_id},
    ).one()
    catalog, every, account = row
    return Versions(catalog, every, account, account_id)
