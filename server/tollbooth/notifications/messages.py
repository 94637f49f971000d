"""Inspection and replay: the messages and attempts of an endpoint; resend one, or all since."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import errors, paging
from tollbooth.db.models import (
    NotificationAttempt,
    NotificationDelivery,
    NotificationEndpoint,
    NotificationOutbox,
)
from tollbooth.notifications import endpoints, envelope, repository

STATES = (repository.PENDING, repository.DELIVERED, repository.FAILED)
Message = tuple[NotificationDelivery, NotificationOutbox]


def list_messages(
    session: Session, endpoint_id: str, state: str | None, page_size: int, page_token: str
) -> paging.Page[Message]:
    endpoints.get(session, endpoint_id)
    ks: paging.Keyset[Message] = paging.Keyset.of(
        f"notification-messages:{endpoint_id}:{state or ''}",
        (paging.Int(),),
        lambda m: (m[0].position,),
        page_size,
    )
    rows = repository.list_messages(session, endpoint_id, state, ks.after(page_token), ks.limit)
    return ks.page(rows)


def list_attempts(
    session: Session, endpoint_id: str, notification_id: str, page_size: int, page_token: str
) -> paging.Page[NotificationAttempt]:
    endpoints.get(session, endpoint_id)
    ks: paging.Keyset[Any] = paging.Keyset.of(
        f"notification-attempts:{endpoint_id}:{notification_id}",
        (paging.Micros(), paging.Text()),
        lambda a: (a.created_at, a.id),
        page_size,
    )
    rows = repository.list_attempts(
        session, endpoint_id, notification_id or None, ks.after(page_token), ks.limit
    )
    return ks.page(rows)


def deliveries_of(
    session: Session, notification_ids: Sequence[str]
) -> dict[str, list[NotificationDelivery]]:
    """Each notification's deliveries (by endpoint id); one with none is not in the result."""
    out: dict[str, list[NotificationDelivery]] = {}
    for d in repository.deliveries_of(session, notification_ids):
        out.setdefault(d.notification_id, []).append(d)
    return out


def queued(session: Session, notification_id: str) -> NotificationOutbox:
    """The notification, queued for delivery (NOT_FOUND, or NOTIFICATION_NOT_QUEUED while the
    delivery process has not given it its place yet)."""
    if not notification_id:
        raise errors.required("notification_id")
    row = repository.get_notification(session, notification_id)
    if row is None:
        raise errors.not_found("notification", notification_id)
    if row.position is None:
        raise errors.failed_precondition(
            "NOTIFICATION_NOT_QUEUED",
            "the notification is not queued for delivery yet; it is sent shortly anyway",
        )
    return row


def sending(session: Session, endpoint_id: str) -> NotificationEndpoint:
    """The endpoint a resend names, key-share locked (see `resend`): NOT_FOUND, or
    NOTIFICATION_ENDPOINT_DISABLED when it is disabled (nothing is sent to it then: the
    message would read as pending and due, and not go)."""
    endpoint = endpoints.get(session, endpoint_id, share=True)
    if not endpoint.enabled:
        raise errors.failed_precondition(
            "NOTIFICATION_ENDPOINT_DISABLED",
            "the endpoint is disabled and nothing is sent to it: enable it, then resend",
            endpoint_id=endpoint_id,
        )
    return endpoint


def resend(session: Session, endpoint_id: str, notification_id: str, now: dt.datetime) -> Message:
    """The message is pending again for this endpoint (created if the endpoint never had it);
    NOTIFICATION_TYPE_NOT_WANTED when the endpoint's event_types leave its type out."""
    # Only a key-share lock on the endpoint (what inserting the delivery takes anyway, taken
    # first so that a concurrent delete is waited for, then NOT_FOUND): it does not conflict
    # with the FOR NO KEY UPDATE that recording an attempt takes after the delivery's lock.
    endpoint = sending(session, endpoint_id)
    row = queued(session, notification_id)
    if not endpoints.wants(endpoint, row):
        # It was never sent there and the fan-out would never send it: a resend would
        # deliver a type the receiver said it does not take.
        raise errors.failed_precondition(
            "NOTIFICATION_TYPE_NOT_WANTED",
            f"the endpoint's event_types leave out {envelope.public_type(row.type)}: "
            "add the type to the endpoint to have it sent there",
            endpoint_id=endpoint_id,
            type=envelope.public_type(row.type),
        )
    repository.insert_deliveries(session, endpoint_id, [row], now, reset=True)
    delivery = repository.get_delivery(session, endpoint_id, notification_id)
    assert delivery is not None
    session.refresh(delivery)
    return delivery, row


def resend_since(session: Session, endpoint_id: str, since: dt.datetime, now: dt.datetime) -> int:
    """Every message written at or after `since` that the endpoint wants is pending again.
    A `since` in the future names nothing: refused, not answered with 0 as if all were done."""
    if since > now:
        raise errors.invalid(
            f"since is in the future (now is {now:%Y-%m-%dT%H:%M:%SZ}): nothing was written"
            " after it",
            "FIELD_INVALID",
            field="since",
        )
    endpoint = sending(session, endpoint_id)  # as `resend`
    types = [envelope.internal_type(t) for t in endpoint.event_types or []]
    rows = repository.notifications_since(session, since, types or None)
    return repository.insert_deliveries(session, endpoint_id, rows, now, reset=True)
