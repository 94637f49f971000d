"""The inbox: each provider event is verified, stored once, then applied (store first, then apply).

Only Stripe can put an event here: the server checks the Stripe-Signature over the raw body
itself (the sidecar's check is not trusted), so a backend service key alone records nothing.
Everything the inbox stores is read from the signed payload, never from other request fields.

A correctly signed event that can never be stored (not JSON, nested too deep, an id, type,
api_version or created out of range) is refused permanently (WEBHOOK_EVENT_INVALID, HTTP 400):
redelivering it for three days would change nothing.

Store first, then apply (CONVENTIONS.md, after Lago's inbound webhooks): a verified event
is committed on its own (`store`) before any effect runs, so nothing a handler does can lose
it. Its effects run afterwards (`Inbox.apply`): the handler reads the provider's current
state outside any transaction, then applies in a second transaction that also marks the
event `applied`. A handler failure is recorded on the event (attempts, last error, next
attempt, status `failed`) and retried with backoff by the server's inbox worker
(`tollbooth.webhooks.worker`), by a redelivery, or by an operator's replay; after
MAX_ATTEMPTS it stays failed until replayed. An event this service does not act on (unknown
type, a livemode other than the configured key's, a shape it cannot use, an object that is
not ours) is `ignored`, with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import deadline, errors
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.errors import DomainError
from tollbooth.webhooks import repository
from tollbooth.webhooks.dispatch import Ignored, Registry
from tollbooth.webhooks.signature import SignatureError, verify

EVENT_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,100}")
EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
API_VERSION_RE = re.compile(r"[A-Za-z0-9_.\-]{1,60}")
# Unix seconds up to 9999-12-31T23:59:59Z, the last instant a timestamp column holds.
MAX_CREATED = 253_402_300_799
# Events larger than this are applied by the worker, not while the sidecar waits.
INLINE_MAX_BYTES = 64 * 1024
# Automatic retries: 10 s, 20 s, 40 s ... at most an hour apart, MAX_ATTEMPTS attempts in all
# (the first delay is BILLING_INBOX_RETRY_FIRST_MS).
MAX_ATTEMPTS = 12
BACKOFF_BASE_SEC = 10
BACKOFF_MAX_SEC = 3600
# How long a delivery or the worker may take to apply before another may try it.
LEASE_SEC = 120
# How long a delivery waits for the effects of the event it stored before it answers anyway
# (well under the sidecar's 15 s limit): the apply goes on in the background, under its lease.
INLINE_BUDGET_SEC = 5.0
# Background applies at once per process; more wait their turn (or the worker, after the lease).
INLINE_WORKERS = 8
DONE = ("applied", "ignored")

log = logging.getLogger("tollbooth.inbox")


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


def store(
    session: Session, payload: bytes, *, defer: bool = False
) -> tuple[ParsedEvent, bool, str]:
    """Commit a verified event on its own, once: (event, whether this call stored it, status).

    A `defer`red event is due for the worker at once; others are leased to the caller, which
    applies it right after the commit."""
    event = parse_event(payload)
    now = utcnow()
    inserted = repository.insert_event(
        session,
        event_id=event.event_id,
        type_=event.type,
        api_version=event.api_version,
        livemode=event.livemode,
        created=event.created,
        payload=payload,
        next_attempt_at=now if defer else now + dt.timedelta(seconds=LEASE_SEC),
    )
    row = repository.read_event(session, event.event_id)
    return event, inserted, row.status if row is not None else "pending"


def backoff(
    attempts: int, now: dt.datetime, first_sec: float = BACKOFF_BASE_SEC
) -> dt.datetime | None:
    """When to try again after `attempts` failed attempts (the first after `first_sec`);
    None once MAX_ATTEMPTS is reached."""
    if attempts >= MAX_ATTEMPTS:
        return None
    delay = min(first_sec * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SEC)
    return now + dt.timedelta(seconds=delay)


def why(exc: BaseException) -> str:
    """The event's `last_error`: one line an operator can read. For anything but a domain error,
    the class and the first line of its text: a database error's cause without SQLAlchemy's
    `[SQL: ...]` and bound parameters (the full one is logged)."""
    if isinstance(exc, DomainError):
        return " ".join(f"{exc.reason}: {exc.message}".split())[:500]
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return " ".join(f"{type(exc).__name__}: {first}".split()).removesuffix(":")[:500]


@dataclass
class Outcome:
    """What one attempt at an event ended in."""

    status: str  # applied, ignored, failed, pending (not applied: too large), missing
    changes: list[str] = field(default_factory=list)
    error: str | None = None


def _new_appliers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(INLINE_WORKERS, thread_name_prefix="inbox-apply")


@dataclass
class Inbox:
    """The stored events and what applies them (the server, the worker, operators)."""

    db: Database
    registry: Registry
    livemode: bool = False
    inline_budget_sec: float = INLINE_BUDGET_SEC
    retry_first_sec: float = BACKOFF_BASE_SEC  # BILLING_INBOX_RETRY_FIRST_MS
    _appliers: ThreadPoolExecutor = field(default_factory=_new_appliers, repr=False)

    def apply(self, event_id: str) -> Outcome:
        """Try once to apply a stored event; the outcome is recorded on the event."""
        with self.db.transaction(readonly=True) as session:
            row = repository.read_event(session, event_id)
            if row is None:
                return Outcome("missing")
            if row.status in DONE:
                return Outcome(row.status, [], row.last_error)
            payload, livemode = bytes(row.payload), bool(row.livemode)
        try:
            return self._apply(event_id, payload, livemode)
        except Ignored as exc:
            with self.db.transaction() as session:
                locked = repository.lock_event(session, event_id)
                if locked is not None and locked.status not in DONE:
                    repository.mark_done(session, event_id, "ignored", utcnow(), exc.reason)
            return Outcome("ignored", [], exc.reason)
        except Exception as exc:  # noqa: BLE001 - recorded on the event, retried
            error = why(exc)
            if not isinstance(exc, DomainError):
                log.exception("applying event %s failed", event_id)
            else:
                log.warning("applying event %s failed: %s", event_id, error)
            with self.db.transaction() as session:
                locked = repository.lock_event(session, event_id)
                if locked is not None and locked.status not in DONE:
                    attempts = locked.attempts + 1
                    retry_at = backoff(attempts, utcnow(), self.retry_first_sec)
                    repository.mark_failed(session, event_id, error, retry_at)
            return Outcome("failed", [], error)

    def _apply(self, event_id: str, payload: bytes, livemode: bool) -> Outcome:
        try:
            body: Any = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # stored before parse_event checked it
            raise Ignored("the payload is not a JSON document") from exc
        if livemode != self.livemode:
            mode = "live" if livemode else "test"
            raise Ignored(f"a {mode}-mode event; the configured key is not {mode}-mode")
        handler, obj = self.registry.resolve(body)
        with deadline.exempt():  # not cut by a calling RPC's budget: attempts and leases
            facts = handler.read(obj)  # the provider, outside any transaction and lock
        with self.db.transaction() as session:
            locked = repository.lock_event(session, event_id)
            if locked is None or locked.status in DONE:
                return Outcome(locked.status if locked else "missing")
            changes = handler.apply(session, event_id, obj, facts)
            session.flush()
            repository.mark_done(session, event_id, "applied", utcnow())
        return Outcome("applied", changes)

    def record(self, payload: bytes) -> tuple[ParsedEvent, bool, Outcome]:
        """Store a verified event, then apply it now unless it is large (the worker will).

        The answer never waits on the effects longer than `inline_budget_sec`: the apply runs
        in the background and, past the budget, the outcome is `pending` while it goes on
        (a slow provider read cannot make the delivery time out once the event is stored).
        Returns the event, whether it was stored before, and the outcome."""
        defer = len(payload) > INLINE_MAX_BYTES
        with self.db.transaction() as session:
            event, inserted, status = store(session, payload, defer=defer)
        if status in DONE:
            return event, not inserted, Outcome(status)
        if defer:
            return event, not inserted, Outcome("pending")
        running = self._appliers.submit(self.apply, event.event_id)
        try:
            return event, not inserted, running.result(timeout=self.inline_budget_sec)
        except FutureTimeout:
            log.info("event %s is still being applied; answered as stored", event.event_id)
            return event, not inserted, Outcome("pending")

    def replay(self, event_id: str, *, seen: str | None = None) -> Outcome:
        """Apply one stored event again, whatever its status (operators).

        Harmless when it was applied already: every effect is guarded by its natural key and
        subscriptions are re-read from the provider. `seen` is the event's version
        (`repository.event_version`) on the console page the operator clicked: when the event
        has changed since (replayed from another tab, retried meanwhile), nothing is done and
        DomainError EVENT_CHANGED is raised, so two tabs never replay one event twice. It is
        checked under the event's row lock, which a concurrent replay holds until its reset
        is committed."""
        with self.db.transaction() as session:
            locked = repository.lock_event(session, event_id)
            if locked is None:
                return Outcome("missing")
            if seen is not None and repository.event_version(locked) != seen:
                raise errors.failed_precondition(
                    "EVENT_CHANGED",
                    f"the event is {locked.status} and changed since this page was shown "
                    "(replayed from another tab or retried meanwhile): reload the page to "
                    "replay it",
                )
            locked.status = "pending"
            locked.attempts = 0
            locked.next_attempt_at = utcnow() + dt.timedelta(seconds=LEASE_SEC)
        return self.apply(event_id)

    def replay_failed(self) -> list[tuple[str, Outcome]]:
        with self.db.transaction(readonly=True) as session:
            ids = repository.failed_ids(session)
        return [(ident, self.replay(ident)) for ident in ids]
