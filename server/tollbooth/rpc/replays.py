"""Whether a rate-limited write is a replay: its `request_id` already answered, for this very
request. The rate limits (`rpc/ratelimit.py`) do not charge a replay to the operation's own
classes, nor refuse it there: it creates nothing, and its answer is the one stored.

The answer is looked for as the servicer replays it (`Servicer.write` and `Servicer.staged`,
`rpc/servicer.py`): the key's row in `idempotency_keys` under the caller's scope (the backends,
or one billing account, and the request type), with a stored response and the request's own
fingerprint. One statement on the primary key; on PostgreSQL in autocommit on a pooled
connection (`Database.read_one`), one round trip with no session.

A key still in progress, stored for other parameters (IDEMPOTENCY_KEY_REUSED, or a twin the
servicer finds the same only by resolving it: a price by lookup key then by id), or unused is
no replay: the call is charged as any other. When the database cannot answer, the call is not
charged to those classes: the write cannot run without the database either (each one records
its intent or its key there before anything else), and a client retrying through an outage
would otherwise use up its limit on calls that did nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select

from tollbooth.auth.caller import Caller
from tollbooth.db import Database
from tollbooth.db.models import IdempotencyKey
from tollbooth.idempotency import MAX_KEY_LENGTH, matches
from tollbooth.rpc.servicer import canonical_currency, idempotency_scope, request_fingerprint
from tollbooth.text import SINGLE_LINE

log = logging.getLogger("tollbooth.ratelimit")

# The form of a request its servicer takes the fingerprint of, where it is not the request
# itself (`Servicer.staged(same_as=...)`): one currency in any case is one request.
FORMS: dict[str, Callable[[Any], Message]] = {
    "CreateCheckoutSessionRequest": canonical_currency,
    "CreatePaymentIntentRequest": canonical_currency,
}
# Scopes besides the caller's own a request type stores its answer under: UpdateCustomer's
# answer is kept under `…|customer` (`accounts/customer_servicer._update_once`).
SUFFIXES: dict[str, tuple[str, ...]] = {"UpdateCustomerRequest": ("", "|customer")}

_PG_SQL = (
    "SELECT request_hash FROM idempotency_keys"
    " WHERE scope = ANY(%(scopes)s) AND key = %(key)s AND response IS NOT NULL LIMIT 1"
)


class Verdict(enum.Enum):
    REPLAY = "replay"  # answered already, for this request: not charged
    NEW = "new"  # charged as any call
    UNKNOWN = "unknown"  # the database did not answer: not charged (see the module's text)


class Replays:
    """Looks up a request's stored answer in the database of the caller's environment."""

    def __init__(self, databases: Mapping[str, Database]) -> None:
        self._databases = dict(databases)
        self._default = next(iter(self._databases), "")

    def verdict(self, caller: Caller, request: Message | None) -> Verdict:
        key = str(getattr(request, "request_id", "") or "")
        # No key, or one the edge refuses right after (it runs nothing): charged.
        if request is None or not key.strip() or len(key) > MAX_KEY_LENGTH:
            return Verdict.NEW
        if SINGLE_LINE.search(key) or caller.kind not in ("service", "bearer"):
            return Verdict.NEW
        db = self._databases.get(caller.environment or self._default)
        if db is None:
            return Verdict.NEW
        name = request.DESCRIPTOR.name
        try:
            form = FORMS.get(name, lambda r: r)(request)
            fingerprint = request_fingerprint(form)
        except Exception:  # noqa: BLE001 - a request the edge refuses: charged as any
            return Verdict.NEW
        scope = idempotency_scope(caller, request)
        scopes = [scope + suffix for suffix in SUFFIXES.get(name, ("",))]
        try:
            stored = self._stored_hash(db, scopes, key)
        except Exception:  # noqa: BLE001 - the database is out: so is the write
            log.warning("request_id lookup for a rate limit failed; not charged", exc_info=True)
            return Verdict.UNKNOWN
        if stored is not None and matches(stored, fingerprint):
            return Verdict.REPLAY
        return Verdict.NEW

    @staticmethod
    def _stored_hash(db: Database, scopes: list[str], key: str) -> str | None:
        """The fingerprint the key's answer was stored for (None: unused or in progress)."""
        if db.dialect == "postgresql":
            row = db.read_one(_PG_SQL, {"scopes": scopes, "key": key})
            return None if row is None else str(row[0])
        with db.transaction(readonly=True) as session:
            found = session.execute(
                select(IdempotencyKey.request_hash)
                .where(
                    IdempotencyKey.scope.in_(scopes),
                    IdempotencyKey.key == key,
                    IdempotencyKey.response.is_not(None),
                )
                .limit(1)
            ).scalar()
        return None if found is None else str(found)
