"""Dispatch: which handler applies a provider event, filled at assembly (`tollbooth.app`).

The inbox knows no domain. Each room whose state an event changes registers a handler for
that event type; a handler gets the transaction, the event id and the event's object, and
returns one line per change (for operators). Events of types nobody registered are stored and
acknowledged without effect.

Every effect is also guarded by its own natural key (`claim_effect`), because the provider
can send two distinct events for one change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.webhooks import repository

Handler = Callable[[Session, str, dict[str, Any]], list[str]]


class Registry:
    """Event type -> handler; one handler per type."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, event_type: str, handler: Handler) -> None:
        if event_type in self._handlers:
            raise ValueError(f"a handler for {event_type!r} is registered already")
        self._handlers[event_type] = handler

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def apply(self, session: Session, event: dict[str, Any], event_id: str) -> list[str]:
        """Apply one event's effects in `session`; returns a line per change."""
        handler = self._handlers.get(str(event.get("type")))
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if handler is None or not isinstance(obj, dict):
            return []
        changes = handler(session, event_id, obj)
        session.flush()
        return changes


def claim_effect(session: Session, key: str, event_id: str, account_id: str | None) -> bool:
    """Insert-first natural-key guard: True only for the one transaction that applies it."""
    return repository.claim_effect(session, key, event_id, account_id)


def object_id(value: Any) -> str | None:
    """An object reference in an event: a plain id, or an expanded object's id."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None
