"""request_id idempotency on the idempotency_keys table, for every mutating RPC.

A key belongs to its caller: the scope is the caller (the service, or one billing account)
plus the request message type, so account B reusing account A's key never sees A's result.
The key row is inserted first, in the same transaction as the effect (INSERT ... ON CONFLICT
DO NOTHING), never checked then inserted: on PostgreSQL a concurrent request with the same
key waits on the uncommitted row, then sees the committed response. The response stored is
the serialised RPC response, so a replay returns exactly what the first call returned (a
debit replayed after the balance ran out still answers with the original success). If the
effect fails the transaction rolls back and takes the key with it, so the client may retry
with the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
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


class Fingerprint(str):
    """A request's fingerprint (the value stored) and the one a key stored before it changed
    holds for the same request (`rpc/fingerprint.py`), computed only when a stored key does
    not match the first; a plain str has none."""

    _legacy: Callable[[], str] | None

    def __new__(cls, value: str, *, legacy: Callable[[], str] | None = None) -> Fingerprint:
        made = super().__new__(cls, value)
        made._legacy = legacy
        return made

    def legacy(self) -> str | None:
        return None if self._legacy is None else self._legacy()


def matches(stored_hash: str, request_digest: str) -> bool:
    """Whether a key stored with `stored_hash` was stored for this request."""
    if stored_hash == request_digest:
        return True
    return isinstance(request_digest, Fingerprint) and stored_hash == request_digest.legacy()


def digest(canonical: bytes) -> str:
    """The stored fingerprint of a request's parameters."""
    return hashlib.sha256(canonical).hexdigest()


def validate_key(key: str) -> str:
    """`key` as sent, when usable: at most MAX_KEY_LENGTH characters and not blank (a key of
    spaces is no key: the servicer refuses it as missing where one is required)."""
    if not key.strip():
        raise errors.invalid(
            "request_id must not be blank", reason="FIELD_INVALID", field="request_id"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise errors.invalid(
            f"request_id is longer than {MAX_KEY_LENGTH} characters",
            reason="FIELD_INVALID",
            field="request_id",
        )
    return key


def claim(session: Session, scope: str, key: str, request_digest: str) -> Claim:
    """Claim (scope, key) for a request whose parameters hash to `request_digest`.

    Fresh when this transaction now owns the key: do the effect, then `complete`. A replay
    returns the first request's response; different parameters under the same key raise
    IDEMPOTENCY_KEY_REUSED.
    """
    row = claim_or_row(session, scope, key, request_digest)
    if row is None:
        return Claim(fresh=True)
    return Claim(fresh=False, response=stored_response(row, request_digest))


def stored_response(row: Any, request_digest: str) -> bytes:
    """The response stored under a claimed key (`row`: its request_hash and response), or the
    refusal: IDEMPOTENCY_KEY_REUSED for other parameters, FAILED_PRECONDITION while the first
    request has not completed (only reachable when one transaction claims a key twice)."""
    if not matches(row.request_hash, request_digest):
        raise errors.invalid(
            "request_id was already used with different parameters",
            reason="IDEMPOTENCY_KEY_REUSED",
            field="request_id",
        )
    if row.response is None:
        raise errors.failed_precondition(
            "FAILED_PRECONDITION", "a request with this request_id is still in progress"
        )
    return bytes(row.response)


def stored(session: Session, scope: str, key: str, request_digest: str | None) -> bytes | None:
    """The response stored for (scope, key), or None when the key is unused or in progress;
    IDEMPOTENCY_KEY_REUSED when it was used with other parameters (`request_digest` None: the
    caller found the two requests the same by their meaning). Reads only: for an operation
    that claims its key after work done outside this transaction (the provider's steps)."""
    validate_key(key)
    row = session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.response).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).first()
    if row is None:
        return None
    if request_digest is not None and not matches(row.request_hash, request_digest):
        raise errors.invalid(
            "request_id was already used with different parameters",
            reason="IDEMPOTENCY_KEY_REUSED",
            field="request_id",
        )
    return None if row.response is None else bytes(row.response)


def held_for_another(session: Session, scope: str, key: str, request_digest: str) -> bool:
    """Whether (scope, key) is claimed, answered or not, for other parameters than
    `request_digest`: for an operation that claims its key before its effect is done (a
    checkout answered another request's open session), so a twin can tell before it acts."""
    validate_key(key)
    row = session.execute(
        select(IdempotencyKey.request_hash).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).first()
    return row is not None and not matches(row.request_hash, request_digest)


def claimable(row: Any, request_digest: str) -> bool:
    """Whether a key's row (`claim_or_row`) is one this request may complete: claimed for
    these parameters (by this request's own earlier step, or an identical twin) and not yet
    answered."""
    return row.response is None and matches(row.request_hash, request_digest)


def complete(session: Session, scope: str, key: str, response: bytes) -> None:
    """Store the response of a fresh claim; replays return it. One UPDATE, no read first."""
    result = session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        .values(response=response)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RuntimeError(f"idempotency key {scope}/{key} was never claimed")


def claim_or_row(session: Session, scope: str, key: str, request_digest: str) -> Any | None:
    """`claim` that leaves the comparison to its caller: None when this transaction now owns
    the key (do the effect, then `complete`); else the key's row (request_hash, response), as
    committed by its first claimer (on PostgreSQL a concurrent claimer is waited out)."""
    validate_key(key)
    stmt = (
        upsert_insert(session, IdempotencyKey)
        .values(
            scope=scope, key=key, request_hash=request_digest, response=None, created_at=utcnow()
        )
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(IdempotencyKey.key)
    )
    if session.execute(stmt).first() is not None:
        return None
    return session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.response).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).one()


def retire(session: Session, scope: str, key: str, suffix: str) -> None:
    """Free (scope, key) for a new claim, keeping its row under `key:suffix` (the record of
    what it answered). A concurrent retire of the same key waits, then changes nothing."""
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        .values(key=f"{key}:{suffix}")
        .execution_options(synchronize_session=False)
    )
