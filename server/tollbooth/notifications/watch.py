"""WatchNotifications: the outbox in position order from a cursor, for gRPC callers.

The cursor is a notification's position (decimal text). Positions are handed out in commit
order by the delivery process (`repository.assign_positions`), so resuming after the last
cursor a client saw neither skips nor repeats. The stream polls; it ends when the client
cancels (`cancelled` is set) or after `idle_sec` without anything to send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from tollbooth import errors
from tollbooth.db import Database
from tollbooth.db.models import NotificationOutbox
from tollbooth.notifications import envelope, repository
from tollbooth.notifications.endpoints import clean_types

BATCH = 100
MAX_CURSOR = 2**63 - 1


def parse_cursor(cursor: str) -> int:
    if not cursor:
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19 or int(cursor) > MAX_CURSOR:
        raise errors.invalid(
            "cursor must be a cursor from a previous WatchNotifications response",
            reason="CURSOR_INVALID",
            field="cursor",
        )
    return int(cursor)


def watch(
    db: Database,
    cursor: str,
    event_types: Sequence[str],
    cancelled: threading.Event,
    *,
    poll_sec: float,
    idle_sec: float,
) -> Iterator[NotificationOutbox]:
    position = parse_cursor(cursor)
    types = [envelope.internal_type(t) for t in clean_types(event_types)] or None
    if position:
        with db.transaction(readonly=True) as session:
            newest = repository.newest_position(session)
        if position > newest:
            # Positions only grow: a cursor past the newest came from no response (altered,
            # or another database's). Followed, it would skip everything up to it unseen.
            raise errors.invalid(
                "cursor is past the newest notification: it came from no previous "
                "WatchNotifications response",
                reason="CURSOR_INVALID",
                field="cursor",
            )
    idle_since = time.monotonic()
    while not cancelled.is_set():
        with db.transaction(readonly=True) as session:
            rows = list(repository.notifications_after(session, position, types, BATCH))
        for row in rows:
            if cancelled.is_set():
                return
            assert row.position is not None
            position = row.position
            yield row
        if rows:
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since >= idle_sec:
            return
        cancelled.wait(poll_sec)
