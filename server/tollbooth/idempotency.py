"""request_id idempotency on the idempotency_keys table, usable by any domain.

The key row is inserted first, in the same transaction as the effect (INSERT ... ON CONFLICT
DO NOTHING), never checked then inserted: on PostgreSQL a concurrent request with the same
key waits on the uncommitted row, then sees the committed response. If the effect fails the
transaction rolls back and takes the key with it, so the client may retry with the same key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.db import upsert_insert
from tollbooth.db.models import IdempotencyKey
from tollbooth.db.types import utcnow

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a key: fresh (do the effect) or a replay of a stored response."""

    fresh: bool
    response: bytes | None = None


def request_hash(request: object) -> str:
    """A stable digest of the request's parameters (dataclasses, mappings, sequences, scalars)."""
    canonical = json.dumps(_plain(request), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"cannot hash {type(value).__name__} for idempotency")


def validate_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        raise errors.invalid(
            f"request_id is longer than {MAX_KEY_LENGTH} characters", field="request_id"
        )
    return key


def claim(session: Session, scope: str, key: str, digest: str) -> Claim:
    """Claim (scope, key) for a request whose parameters hash to `digest`.

    Fresh when this transaction now owns the key: do the effect, then `complete`. A replay
    returns the first request's response; different parameters under the same key raise
    IDEMPOTENCY_KEY_REUSED.
    """
    stmt = (
        upsert_insert(session, IdempotencyKey)
        .values(scope=scope, key=key, request_hash=digest, response=None, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(IdempotencyKey.key)
    )
    if session.execute(stmt).first() is not None:
        return Claim(fresh=True)
    row = session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.response).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).one()
    if row.request_hash != digest:
        raise errors.invalid(
            "request_id was already used with different parameters",
            reason="IDEMPOTENCY_KEY_REUSED",
            field="request_id",
        )
    if row.response is None:
        # Only reachable when the same transaction claims a key twice before completing it.
        raise errors.failed_precondition(
            "FAILED_PRECONDITION", "a request with this request_id is still in progress"
        )
    return Claim(fresh=False, response=bytes(row.response))


def complete(session: Session, scope: str, key: str, response: bytes) -> None:
    """Store the response of a fresh claim; replays return it."""
    row = session.get(IdempotencyKey, (scope, key))
    if row is None:
        raise RuntimeError(f"idempotency key {scope}/{key} was never claimed")
    row.response = response
    session.flush()


def run_once(
    session: Session, *, scope: str, key: str, request: object, effect: Callable[[], bytes]
) -> bytes:
    """Run `effect` at most once per (scope, key); replays get its first response.

    Without a key the effect simply runs. `request` holds the parameters that make two calls
    "the same request"; the caller normalises it first, so equivalent spellings match.
    """
    if not key:
        return effect()
    validate_key(key)
    outcome = claim(session, scope, key, request_hash(request))
    if not outcome.fresh:
        assert outcome.response is not None
        return outcome.response
    response = effect()
    complete(session, scope, key, response)
    return response
