"""Operator commands: re-apply stored webhook events, and reconcile subscriptions with Stripe.

Both are safe to run at any time and as often as wanted: every effect is guarded by its
natural key, and subscription state is always re-read from the provider under a row lock.
Each event or subscription is handled in its own transaction, so one failure stops nothing
else; failures are counted and reported.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tollbooth.checkout import repository
from tollbooth.checkout.fulfilment import Context, sync_subscription
from tollbooth.checkout.provider import StripeProvider
from tollbooth.db import Database
from tollbooth.errors import DomainError

T = TypeVar("T")


@dataclass
class Report:
    seen: int = 0
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _progress(items: list[T], desc: str, show: bool | None) -> Iterator[T]:
    """A tqdm bar on a terminal (long runs); plain iteration otherwise."""
    from tqdm import tqdm

    bar: Iterable[T] = tqdm(items, desc=desc, unit="item", disable=show, file=sys.stderr)
    yield from bar


def replay_events(
    db: Database,
    provider: StripeProvider,
    *,
    since: dt.datetime | None = None,
    event_id: str | None = None,
    progress: bool | None = None,
) -> Report:
    """Apply stored events again, oldest first (all, received since `since`, or one)."""
    from tollbooth.webhooks import repository as inbox
    from tollbooth.webhooks.service import replay

    with db.transaction(readonly=True) as session:
        ids = inbox.events_to_replay(session, since=since, event_id=event_id)
    report = Report()
    for ident in _progress(ids, "replaying events", None if progress is None else not progress):
        report.seen += 1
        try:
            with db.transaction() as session:
                _, changes = replay(session, ident, provider)
        except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
            report.failed.append(f"{ident}: {_why(exc)}")
            continue
        report.changed.extend(f"{ident}: {line}" for line in changes)
    return report


def reconcile(db: Database, provider: StripeProvider, *, progress: bool | None = None) -> Report:
    """Compare every subscription with the provider and repair drift.

    Every subscription we store, plus every subscription the provider lists for our billed
    accounts (one that a lost event never told us about), is re-read and written as Stripe
    says it is now.
    """
    with db.transaction(readonly=True) as session:
        known = repository.all_subscription_ids(session)
        customers = [a.stripe_customer_id for a in repository.billed_accounts(session)]
    targets: dict[str, str | None] = dict.fromkeys(known)
    report = Report()
    for customer in customers:
        assert customer is not None
        try:
            for remote in provider.list_subscriptions(customer):
                targets.setdefault(str(remote["id"]), customer)
        except DomainError as exc:
            report.failed.append(f"customer {customer}: {_why(exc)}")
    show = None if progress is None else not progress
    for sub_id in _progress(list(targets), "reconciling subscriptions", show):
        report.seen += 1
        try:
            with db.transaction() as session:
                ctx = Context(session, provider, "reconcile")
                sync_subscription(ctx, sub_id, targets[sub_id])
                session.flush()
        except Exception as exc:  # noqa: BLE001
            report.failed.append(f"{sub_id}: {_why(exc)}")
            continue
        report.changed.extend(ctx.changes)
    return report


def _why(exc: Any) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.reason}: {exc.message}"
    return type(exc).__name__
