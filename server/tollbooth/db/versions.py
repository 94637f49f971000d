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

PostgreSQL only; on SQLite nothing is kept and every read goes to the database.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from tollbooth.db import Database

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


def read(db: Database, account_id: str = EVERY) -> Versions:
    """The current versions (one statement, autocommit, on a pooled connection)."""
    row = db.read_one(_SQL, {"every": EVERY, "account": account_id}, prepare=True)
    catalog, every, account = row
    return Versions(catalog, every, account, account_id)


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
