"""DebitCredits on PostgreSQL in one round trip: one call of `tollbooth_debit` (migration 0030).

A pooled connection runs in autocommit for this call, so the one statement is its own
transaction (no session):
the function claims the request_id, resolves the account, locks the balance, takes the grants
in the engine's consumption order, writes the grants, the balance, the ledger entry and the
stored response, and COMMIT follows at the end of the statement. The balance lock is held only
inside PostgreSQL (no network wait, no turn of the GIL while it is held).

What the function does not do exactly as `debits` would, it refuses with SQLSTATE TB001
before the statement ends: the statement's transaction rolls back (the claim with it, nothing
is written), and `fresh` answers None so that the caller runs the existing path
(`onetrip.debit`, then the general path), which answers, refuses and orders its errors as
before. A replay answers with the stored response through `idempotency.stored_response`, as
`twotrips.Trip.open` does.

One difference of timing from the two flushes: the instant of the debit is the clock read just
before the call (never earlier than the balance's last write: the function takes the later of
the two), where the two flushes read it once the lock is granted, one round trip later. Each
balance's entries stay in time order either way; a debit that waited at the lock is recorded
at the instant it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from tollbooth import idempotency
from tollbooth.auth.caller import Caller
from tollbooth.credit.onetrip import Args
from tollbooth.credit.unit import GRANT_BATCH, Clock
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id

# The SQLSTATE of "take the existing path" (nothing was written).
FALL_BACK = "TB001"

CALL = (
    "SELECT outcome, response, request_hash FROM tollbooth_debit("
    "%(scope)s, %(key)s, %(hash)s, %(claimed_at)s, %(bearer)s, %(ref)s, %(account)s,"
    " %(ctype)s, %(amount)s, %(reason)s, CAST(NULLIF(%(metadata)s, '') AS json), %(clock)s,"
    " %(entry_id)s, %(debit_id)s, %(batch)s)"
)


def debit(
    db: Database,
    caller: Caller,
    args: Args,
    *,
    scope: str,
    digest: str,
    clock: Clock,
    parse: Callable[[bytes], Any],
) -> Any:
    """The reply (`parse` of the response bytes) of a debit in one call, or None when the
    existing path must answer (nothing was written). No session: one pooled connection in
    autocommit for the one statement (`Database.read_one`)."""
    if caller.is_bearer:
        account = caller.account_id or ""
    elif args.ref:
        account = args.ref
    else:
        return None  # no account named: the general path refuses it
    params = {
        "scope": scope,
        "key": args.key,
        "hash": digest,
        "claimed_at": utcnow(),
        "bearer": caller.is_bearer,
        "ref": args.ref,
        "account": account,
        "ctype": args.ctype,
        "amount": args.value,
        "reason": args.why,
        # Never None: the parameter keeps one type on every call.
        "metadata": json.dumps(args.meta) if args.meta else "",
        "clock": clock(),
        "entry_id": new_id("cle"),
        "debit_id": new_id("dbt"),
        "batch": GRANT_BATCH,
    }
    try:
        # Not prepared: psycopg prepares a statement before its first execution and forgets the
        # name when that execution fails, but PostgreSQL keeps it; each hand-back (TB001) on a
        # connection where the call had not yet succeeded left one prepared statement behind
        # for the life of the connection. Unnamed, the call is still one round trip.
        row = db.read_one(CALL, params, prepare=False, passes=FALL_BACK)
    except psycopg.Error as exc:  # FALL_BACK: read_one raises any other as SQLAlchemy's
        if exc.sqlstate != FALL_BACK:
            raise
        return None
    outcome, response, request_hash = row
    if outcome == "replay":
        return parse(idempotency.stored_response(_Stored(request_hash, response), digest))
    return parse(bytes(response))


class _Stored:
    """The key's row as `idempotency.stored_response` reads it."""

    def __init__(self, request_hash: str, response: bytes | None) -> None:
        self.request_hash = request_hash
        self.response = response
