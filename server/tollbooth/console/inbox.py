"""The console's one door to the Stripe event inbox and the notification deliveries.

Everything the console reads or does about stored events and notifications goes through this
module. An event's `status` is the inbox's own (`tollbooth.webhooks.service`): `applied`,
`ignored` (with the reason), `failed` (attempts, last error, next automatic attempt) or
`pending` (stored, not applied yet). A replay is `Inbox.replay`, handed in by the assembly as
a callable; the page's Replay form carries the event's version, checked there under the
event's row lock. Deliveries and their attempts are read, and a message resent, through
`tollbooth.notifications.messages` (the functions the RPCs and `notifications resend` use).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from tollbooth import errors, paging
from tollbooth.db.models import (
    NotificationAttempt,
    NotificationDelivery,
    NotificationOutbox,
    StripeEvent,
)
from tollbooth.notifications import endpoints as notification_endpoints
from tollbooth.notifications import envelope, messages
from tollbooth.notifications import repository as notification_repository
from tollbooth.webhooks.repository import event_version

STATUSES = ("failed", "pending", "applied", "ignored")
REPLAYABLE = ("failed", "pending")
EVENTS = 50
ENDPOINTS = 50
MESSAGES = 50
NOTIFICATIONS = 50

T = TypeVar("T")


@dataclass(frozen=True)
class Paged(Generic[T]):
    """One page of a console list, with the tokens of the pages after and before it ("" when
    there is none)."""

    items: list[T]
    next_token: str = ""
    previous_token: str = ""


# Rows of a list in its page order (`backward`: the opposite order) strictly after an ordering
# key (None: from the start), at most `limit` of them.
Fetch = Callable[[tuple[Any, ...] | None, int, bool], Sequence[T]]


def paged(
    name: str,
    parts: Sequence[paging.Part],
    key: Callable[[T], Sequence[Any]],
    size: int,
    fetch: Fetch[T],
    page_token: str = "",
    before_token: str = "",
) -> Paged[T]:
    """A page of a console list (every paged page of the console): the first, the one after
    `page_token` or the one before `before_token`. Tokens are signed for the console, for the
    list `name` (which names its filter or account) and for their direction, so none passes
    for another list's, the other direction's or an RPC's. DomainError PAGE_TOKEN_INVALID for
    an altered or foreign token, or both tokens at once."""
    forward = paging.Keyset.of(f"console-{name}-after", parts, key, size, maximum=size)
    backward = paging.Keyset.of(f"console-{name}-before", parts, key, size, maximum=size)
    if page_token and before_token:
        raise paging.bad_token()
    if before_token:
        after = backward.after(before_token)
        rows = list(fetch(after, backward.limit, True))
        has_previous, has_next = len(rows) > backward.size, True  # the page it came from
        found = list(reversed(rows[: backward.size]))
    else:
        after = forward.after(page_token)
        rows = list(fetch(after, forward.limit, False))
        has_previous, has_next = after is not None, len(rows) > forward.size
        found = rows[: forward.size]
    return Paged(
        found,
        next_token=forward.token(key(found[-1])) if has_next and found else "",
        previous_token=backward.token(key(found[0])) if has_previous and found else "",
    )


def newest_first(session: Session, stmt: Select[Any], columns: tuple[Any, ...]) -> Fetch[Any]:
    """The `Fetch` of a list of `stmt`'s rows newest first by `columns` (the last one a
    tie-breaker, so the order is total): strictly after a key, in page order, or the opposite
    order (`backward`), at most `limit` of them."""

    def fetch(after: tuple[Any, ...] | None, limit: int, backward: bool) -> list[Any]:
        page = stmt
        if after is not None:
            page = page.where(paging.after_clause(columns, after, descending=not backward))
        order = [c.asc() if backward else c.desc() for c in columns]
        return list(session.scalars(page.order_by(*order).limit(limit)))

    return fetch


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    status: str
    attempts: int
    last_error: str
    next_attempt_at: dt.datetime | None
    received_at: dt.datetime
    processed_at: dt.datetime | None
    object_id: str
    version: str = ""  # what a Replay form carries back: the event as this page showed it


@dataclass(frozen=True)
class Outcome:
    """What a replay ended in: the inbox's status, the changes made, the error if it failed."""

    status: str
    changed: list[str]
    error: str | None = None


# Replays one stored event by id (the assembly binds the inbox), given the version of it the
# operator's page showed (None: no check); DomainError EVENT_CHANGED when it changed since.
Replayer = Callable[[str, str | None], Outcome]


def _object_id(payload: bytes) -> str:
    try:
        obj = json.loads(payload).get("data", {}).get("object", {})
        return str(obj.get("id", "")) if isinstance(obj, dict) else ""
    except (ValueError, AttributeError, RecursionError):
        return ""


def events(
    session: Session, status: str, page_token: str = "", before_token: str = ""
) -> Paged[Event]:
    """A page of stored events of one status ("" for all), newest first (then by id): the
    first, the one after `page_token` (older) or before `before_token` (newer)."""
    stmt = select(StripeEvent)
    if status:
        stmt = stmt.where(StripeEvent.status == status)
    page = paged(
        f"events:{status}",
        (paging.Micros(), paging.Text()),
        lambda row: (row.received_at, row.event_id),
        EVENTS,
        newest_first(session, stmt, (StripeEvent.received_at, StripeEvent.event_id)),
        page_token,
        before_token,
    )
    return Paged(
        [
            Event(
                event_id=row.event_id,
                type=row.type,
                status=row.status,
                attempts=row.attempts,
                last_error=row.last_error or "",
                next_attempt_at=row.next_attempt_at if row.status == "failed" else None,
                received_at=row.received_at,
                processed_at=row.processed_at,
                object_id=_object_id(bytes(row.payload)),
                version=event_version(row),
            )
            for row in page.items
        ],
        page.next_token,
        page.previous_token,
    )


def event_status(session: Session, event_id: str) -> str | None:
    if "\x00" in event_id:  # no row holds one (PostgreSQL text cannot): nothing to ask
        return None
    row = session.get(StripeEvent, event_id)
    return None if row is None else row.status


def replayable(status: str | None) -> bool:
    return status in REPLAYABLE


@dataclass(frozen=True)
class Attempt:
    number: int
    status_code: int
    latency_ms: int
    error: str
    at: dt.datetime


@dataclass(frozen=True)
class Delivery:
    notification_id: str
    type: str
    account_id: str | None
    state: str
    attempts: int
    last_error: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    version: str = ""  # what a Resend form carries back: the delivery as this page showed it
    tries: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    enabled: bool
    disabled_reason: str
    deliveries: list[Delivery]


def _delivery(
    d: NotificationDelivery, row: NotificationOutbox, tries: list[NotificationAttempt]
) -> Delivery:
    return Delivery(
        notification_id=row.id,
        type=envelope.public_type(row.type),
        account_id=row.billing_account_id,
        state=d.state,
        attempts=d.attempts,
        last_error=d.last_error,
        created_at=row.created_at,
        delivered_at=d.delivered_at,
        version=version_of(d),
        tries=[
            Attempt(a.number, a.status_code, a.latency_ms, a.error, a.created_at)
            for a in sorted(tries, key=lambda a: a.number)
        ],
    )


def attempts_of(
    session: Session, endpoint_id: str, notification_ids: list[str]
) -> list[NotificationAttempt]:
    """Every attempt to deliver these messages to the endpoint (a message is retried for at
    most the give-up window, so a few dozen each at most)."""
    if not notification_ids:
        return []
    a = NotificationAttempt
    stmt = select(a).where(a.endpoint_id == endpoint_id, a.notification_id.in_(notification_ids))
    return list(session.scalars(stmt.order_by(a.notification_id, a.number)))


def deliveries(session: Session, page_token: str = "", before_token: str = "") -> Paged[Endpoint]:
    """A page of endpoints, oldest first (the first, the one after `page_token`, or the one
    before `before_token`), each with its latest messages, their delivery state and attempts.
    DomainError PAGE_TOKEN_INVALID for an altered or foreign token, or both tokens."""

    def fetch(after: tuple[Any, ...] | None, limit: int, backward: bool) -> list[Any]:
        return list(
            notification_repository.list_endpoints(session, after, limit, descending=backward)
        )

    page = paged(
        "endpoints",
        (paging.Micros(), paging.Text()),
        lambda e: (e.created_at, e.id),
        ENDPOINTS,
        fetch,
        page_token,
        before_token,
    )
    out: list[Endpoint] = []
    for ep in page.items:
        listed = messages.list_messages(session, ep.id, None, MESSAGES, "")
        tries: dict[str, list[NotificationAttempt]] = defaultdict(list)
        for a in attempts_of(session, ep.id, [row.id for _, row in listed.items]):
            tries[a.notification_id].append(a)
        out.append(
            Endpoint(
                id=ep.id,
                url=notification_endpoints.shown_url(ep.url),
                enabled=ep.enabled,
                disabled_reason=ep.disabled_reason,
                deliveries=[_delivery(d, row, tries[row.id]) for d, row in listed.items],
            )
        )
    return Paged(out, page.next_token, page.previous_token)


def version_of(delivery: NotificationDelivery) -> str:
    """Changes whenever the delivery does (a resend, an attempt): `updated_at`, to the µs."""
    return delivery.updated_at.isoformat()


def resend(
    session: Session,
    endpoint_id: str,
    notification_id: str,
    now: dt.datetime,
    seen: str | None = None,
) -> str:
    """The message is pending again for the endpoint (DomainError when it cannot be).

    `seen` is the delivery's version on the page the operator clicked: when the delivery has
    changed since (another tab resent it, the delivery process sent it again), the form is
    stale and nothing is done (409 NOTIFICATION_CHANGED), so two tabs never resend twice."""
    if "\x00" in endpoint_id + notification_id:  # as in event_status
        raise errors.not_found("notification", notification_id)
    if seen is not None:
        # The endpoint's key-share lock first, as messages.resend takes it (the same order as
        # a delete), then the delivery's row lock: a concurrent resend waits here, then sees
        # the version this one wrote.
        notification_endpoints.get(session, endpoint_id, share=True)
        d = NotificationDelivery
        current = session.scalars(
            select(d)
            .where(d.endpoint_id == endpoint_id, d.notification_id == notification_id)
            .with_for_update(key_share=True)
        ).first()
        if current is None:  # no page showed it: a hand-made form, or one from elsewhere
            messages.queued(session, notification_id)  # NOT_FOUND, NOT_QUEUED first
            raise errors.failed_precondition(
                "NOTIFICATION_CHANGED",
                "this endpoint has no delivery of the message to resend from this page: "
                "reload the page",
            )
        if version_of(current) != seen:
            raise errors.failed_precondition(
                "NOTIFICATION_CHANGED",
                f"the message is {current.state} and changed since this page was shown "
                "(resent from another tab or sent again): reload the page to resend it",
            )
    delivery, _ = messages.resend(session, endpoint_id, notification_id, now)
    return delivery.state


@dataclass(frozen=True)
class Sent:
    """A notification's delivery to one endpoint, as ListNotificationMessages tells it."""

    endpoint_id: str
    state: str
    attempts: int
    delivered_at: dt.datetime | None


@dataclass(frozen=True)
class Notification:
    id: str
    type: str
    account_id: str | None
    created_at: dt.datetime
    payload: dict[str, Any]
    deliveries: list[Sent]  # one per endpoint it is queued for, by endpoint id


def notifications(
    session: Session, account_id: str, page_token: str = "", before_token: str = ""
) -> Paged[Notification]:
    """A page of the account's notifications in the outbox, newest first (then by id): the
    first, the one after `page_token` (older) or before `before_token` (newer)."""
    o = NotificationOutbox
    page = paged(
        f"account-notifications:{account_id}",
        (paging.Micros(), paging.Text()),
        lambda row: (row.created_at, row.id),
        NOTIFICATIONS,
        newest_first(
            session, select(o).where(o.billing_account_id == account_id), (o.created_at, o.id)
        ),
        page_token,
        before_token,
    )
    # The outbox row's own delivered_at and attempts are never written: a notification goes to
    # every endpoint that wants it, each delivery with its own state and attempts.
    sent = messages.deliveries_of(session, [row.id for row in page.items])
    return Paged(
        [
            Notification(
                id=row.id,
                type=envelope.public_type(row.type),  # as every other read names it
                account_id=row.billing_account_id,
                created_at=row.created_at,
                payload=dict(row.payload or {}),
                deliveries=[
                    Sent(d.endpoint_id, d.state, d.attempts, d.delivered_at)
                    for d in sent.get(row.id, [])
                ],
            )
            for row in page.items
        ],
        page.next_token,
        page.previous_token,
    )
