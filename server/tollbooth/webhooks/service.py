"""The inbox: each verified provider event is recorded once, in one transaction.

Handlers that act on events arrive with checkout; they will run in the same transaction as
the insert, so an event's effects and its id commit together.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.webhooks import repository


def record_event(
    session: Session,
    *,
    event_id: str,
    type_: str,
    api_version: str,
    livemode: bool,
    created: dt.datetime | None,
    payload: bytes,
) -> bool:
    """Returns True when the event was already recorded (a redelivery)."""
    if not event_id:
        raise errors.required("event_id")
    if len(event_id) > 100 or not type_ or len(type_) > 100:
        raise errors.invalid("event_id and type must be 1-100 characters")
    if not payload:
        raise errors.required("payload")
    inserted = repository.insert_event(
        session,
        event_id=event_id,
        type_=type_,
        api_version=api_version,
        livemode=livemode,
        created=created,
        payload=payload,
    )
    return not inserted
