"""Operator command: re-apply stored webhook events (`tollbooth webhooks replay`).

Safe to run at any time and as often as wanted: every effect is guarded by its natural key,
and subscription state is always re-read from the provider under a row lock. Each event is
handled in its own transaction, so one failure stops nothing else; failures are counted and
reported.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tollbooth.errors import DomainError
from tollbooth.webhooks import repository
from tollbooth.webhooks.service import Inbox

T = TypeVar("T")


@dataclass
class Report:
    """What an operator command did: items seen, one line per change, one per failure, one per
    item it must not touch and leaves to an operator (not a failure of this run)."""

    seen: int = 0
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)


def progress(items: list[T], desc: str, show: bool | None) -> Iterator[T]:
    """A tqdm bar on a terminal (long runs); plain iteration otherwise."""
    from tqdm import tqdm

    bar: Iterable[T] = tqdm(items, desc=desc, unit="item", disable=show, file=sys.stderr)
    yield from bar


def why(exc: Any) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.reason}: {exc.message}"
    return type(exc).__name__


def replay_events(
    inbox: Inbox,
    *,
    since: dt.datetime | None = None,
    event_id: str | None = None,
    failed_only: bool = False,
    progress_bar: bool | None = None,
) -> Report:
    """Apply stored events again, oldest first (all, received since `since`, one, or the
    failed ones)."""
    with inbox.db.transaction(readonly=True) as session:
        if failed_only:
            ids = repository.failed_ids(session)
        else:
            ids = repository.events_to_replay(session, since=since, event_id=event_id)
    report = Report()
    show = None if progress_bar is None else not progress_bar
    for ident in progress(ids, "replaying events", show):
        report.seen += 1
        try:
            outcome = inbox.replay(ident)
        except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
            report.failed.append(f"{ident}: {why(exc)}")
            continue
        if outcome.status == "failed":
            report.failed.append(f"{ident}: {outcome.error}")
        report.changed.extend(f"{ident}: {line}" for line in outcome.changes)
    return report
