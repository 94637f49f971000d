"""Dispatch: which handler applies a provider event, filled at assembly (`tollbooth.app`).

The inbox knows no domain. Each room whose state an event changes registers a handler for
that event type, in two phases (DESIGN section 6, "never across the network inside a
transaction"):

- `read(obj)` runs outside any transaction and lock: it asks the provider for the current
  state of what the event is about (the provider is the truth, never the event body alone);
- `apply(session, event_id, obj, facts)` runs in the transaction that marks the event applied,
  with what `read` returned, and makes no network call.

Either phase raises `Ignored` when the event is nothing this service acts on (a shape it
cannot use, an object that is not ours); the inbox then records the event as ignored with
that reason. Events of types nobody registered are stored and ignored.

Every effect is also guarded by its own natural key (`claim_effect`), because the provider
can send two distinct events for one change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.webhooks import repository

# Stripe's ids are short ASCII words (`sub_…`, `cs_test_…`); anything else is not an id.
OBJECT_ID_RE = re.compile(r"[A-Za-z0-9_]{1,100}")


class Ignored(Exception):
    """The event asks for nothing this service does; `reason` says why (stored for operators)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Read = Callable[[dict[str, Any]], Any]
Apply = Callable[[Session, str, dict[str, Any], Any], list[str]]


@dataclass(frozen=True)
class Handler:
    """One event type's effects: `read` from the provider first, then `apply` under locks."""

    read: Read
    apply: Apply


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

    def resolve(self, event: dict[str, Any]) -> tuple[Handler, dict[str, Any]]:
        """The handler of an event and the object it is about; `Ignored` when there is none."""
        event_type = str(event.get("type"))
        handler = self._handlers.get(event_type)
        if handler is None:
            raise Ignored(f"no handler for {event_type[:100]}")
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not isinstance(obj, dict):
            raise Ignored("data.object is not an object")
        return handler, obj


def claim_effect(session: Session, key: str, event_id: str, account_id: str | None) -> bool:
    """Insert-first natural-key guard: True only for the one transaction that applies it."""
    return repository.claim_effect(session, key, event_id, account_id)


def object_id(value: Any) -> str | None:
    """An object reference in an event: a plain id, or an expanded object's id; None for
    anything that is not a plausible Stripe id (too long, odd characters, another type)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and OBJECT_ID_RE.fullmatch(value):
        return value
    return None


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is an object, else an empty one (hostile shapes read as absent)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
