"""The inbox: each provider event is verified, validated and recorded once, in one transaction.

Only Stripe can put an event here: the server checks the Stripe-Signature over the raw body
itself (the sidecar's check is not trusted), so a backend service key alone records nothing.
Everything the inbox stores is read from the signed payload, never from other request fields.

A correctly signed event that can never be stored (not JSON, nested too deep, an id, type,
api_version or created out of range) is refused permanently (WEBHOOK_EVENT_INVALID, HTTP 400):
redelivering it for three days would change nothing.

The handlers (registered at assembly in a `tollbooth.webhooks.dispatch.Registry`: checkout's
and subscriptions' effects) run in the same transaction as the insert and
set `processed_at`, so an event's effects and its id commit together; a handler failure rolls
back everything, the event included, and answers 5xx (never INVALID_ARGUMENT, which the
sidecar would turn into a permanent 400), so the provider delivers it again. An event already
stored but not processed (stored before handlers existed, or by an older version) is processed
when it is delivered again, or by `tollbooth webhooks replay`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.db.types import utcnow
from tollbooth.errors import DomainError, Kind
from tollbooth.webhooks import repository
from tollbooth.webhooks.dispatch import Registry
from tollbooth.webhooks.signature import SignatureError, verify

EVENT_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,100}")
EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
API_VERSION_RE = re.compile(r"[A-Za-z0-9_.\-]{1,60}")
# Unix seconds up to 9999-12-31T23:59:59Z, the last instant a timestamp column holds.
MAX_CREATED = 253_402_300_799


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    type: str
    api_version: str
    livemode: bool
    created: dt.datetime | None


def _invalid(message: str) -> errors.DomainError:
    return errors.invalid(message, reason="WEBHOOK_EVENT_INVALID")


def parse_event(payload: bytes) -> ParsedEvent:
    """Read and bound the fields the inbox stores; anything unusable is WEBHOOK_EVENT_INVALID."""
    if not payload:
        raise errors.required("payload")
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _invalid("the signed body is not a JSON document this service can read") from exc
    if not isinstance(event, dict):
        raise _invalid("the signed body is not a Stripe event object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id):
        raise _invalid("event id must be 1-100 letters, digits, '_' or '-'")
    if not isinstance(event_type, str) or not EVENT_TYPE_RE.fullmatch(event_type):
        raise _invalid("event type must be 1-100 letters, digits, '.', '_' or '-'")
    api_version = event.get("api_version") or ""
    if not isinstance(api_version, str) or (
        api_version and not API_VERSION_RE.fullmatch(api_version)
    ):
        raise _invalid("api_version must be at most 60 letters, digits, '.', '_' or '-'")
    created_raw = event.get("created")
    created = None
    if created_raw is not None:
        if type(created_raw) is not int or not 0 <= created_raw <= MAX_CREATED:
            raise _invalid("created must be Unix seconds no later than year 9999")
        created = dt.datetime.fromtimestamp(created_raw, dt.UTC)
    livemode = event.get("livemode", False)
    if not isinstance(livemode, bool):
        raise _invalid("livemode must be a boolean")
    return ParsedEvent(event_id, event_type, api_version, livemode, created)


def verify_signature(
    payload: bytes, signature: str, secrets: tuple[str, ...], tolerance_sec: int
) -> None:
    """The server's own check: a service key is not proof that Stripe sent the event."""
    try:
        verify(payload, signature, secrets, tolerance_sec)
    except SignatureError as exc:
        raise errors.permission_denied(
            "STRIPE_SIGNATURE_REQUIRED",
            f"recording an event needs a valid Stripe-Signature over its raw body: {exc}",
        ) from exc


def record_event(session: Session, payload: bytes, registry: Registry) -> tuple[ParsedEvent, bool]:
    """Store a verified event once and apply it once.

    Returns the event and whether it had been applied before (nothing was done again).
    """
    event = parse_event(payload)
    inserted = repository.insert_event(
        session,
        event_id=event.event_id,
        type_=event.type,
        api_version=event.api_version,
        livemode=event.livemode,
        created=event.created,
        payload=payload,
    )
    if not inserted:
        stored = repository.lock_event(session, event.event_id)
        if stored is None or stored.processed_at is not None:
            return event, True
    process(session, event.event_id, payload, registry)
    return event, False


def process(session: Session, event_id: str, payload: bytes, registry: Registry) -> list[str]:
    """Run the handlers of a stored event and mark it processed, in the caller's transaction."""
    body = json.loads(payload)
    try:
        changes = registry.apply(session, body, event_id)
    except DomainError as exc:
        if exc.kind is Kind.UNAVAILABLE:
            raise  # the provider or the database is down: 503, the provider retries
        # A rule refused the effect (bad catalog metadata, say). Retrying may succeed once an
        # operator fixes it, so this is a 5xx, never the sidecar's permanent 400.
        raise DomainError(
            Kind.INTERNAL,
            "INTERNAL",
            f"event {event_id} could not be applied: {exc.reason}",
            event_id=event_id,
        ) from exc
    repository.mark_processed(session, event_id, utcnow())
    return changes


def replay(session: Session, event_id: str, registry: Registry) -> tuple[bool, list[str]]:
    """Apply one stored event again (operators: `tollbooth webhooks replay`).

    Harmless when it was applied already: every effect is guarded by its natural key and
    subscriptions are re-read from the provider. Returns (found, changes).
    """
    stored = repository.lock_event(session, event_id)
    if stored is None:
        return False, []
    return True, process(session, event_id, bytes(stored.payload), registry)
