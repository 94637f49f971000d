"""One usage event as the domain sees it, and the rules that need no database.

An event arrives as a protobuf message; `tollbooth.usage.convert` checks and normalises it in
one pass (the hot path) into a `Candidate`, or refuses it with an `Outcome`. From there on,
usage works on these plain values: `service.ingest` resolves accounts, derives missing ids,
stores and burns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DERIVED_PREFIX = "derived_"
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
# The longest event name (usage.proto's max_length of UsageEvent.event_name; convert checks
# that the two agree): a metric's event_name must fit it.
EVENT_NAME_LIMIT = 200

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer for one event."""

    unique_id: str
    status: str
    reason: str = ""
    message: str = ""
    # The field a rejection is about (the event's own name for it: `account`, `timestamp`),
    # so IngestEvent's error names it in `metadata.field` as every other refusal does.
    field: str = ""


@dataclass(slots=True)
class Candidate:
    """An event that passed every check that needs no database."""

    index: int
    unique_id: str  # as sent; empty until derived
    account_ref: str
    event_name: str
    # The timestamp as whole seconds and microseconds: cheaper than a datetime per event;
    # PostgreSQL builds the timestamptz itself.
    seconds: int
    micros: int
    properties: dict[str, Any]
    properties_json: str
    # The timestamp as RFC 3339 text, as protobuf prints it: set only for an event sent
    # without a unique id (the derived id hashes it).
    timestamp_text: str = ""
    account_id: str = ""

    @property
    def occurred_at(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=self.seconds, microseconds=self.micros)


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, UTF-8 as is: the stored form and the derived id's input."""
    return _ENCODE(value)


def derive_unique_id(account_id: str, event_name: str, timestamp: str, properties: str) -> str:
    """The id of an event sent without one (usage.proto documents the exact rule)."""
    material = f"{account_id}\n{event_name}\n{timestamp}\n{properties}".encode()
    return DERIVED_PREFIX + hashlib.sha256(material).hexdigest()


def final_unique_id(candidate: Candidate) -> str:
    """The sender's id, or the derived one (needs the resolved account id)."""
    if candidate.unique_id:
        return candidate.unique_id
    return derive_unique_id(
        candidate.account_id,
        candidate.event_name,
        candidate.timestamp_text,
        candidate.properties_json,
    )
