"""Operator command: reconcile subscriptions with Stripe (`tollbooth reconcile`).

Safe to run at any time and as often as wanted: subscription state is always re-read from
the provider (outside any transaction), then written under the row's lock. Each subscription
is handled in its own transaction, so one failure stops nothing else; failures are counted
and reported. The subscriptions room owns the rows: it hands this command the ids it knows,
the function that reads one from the provider and the one that writes that read
(`tollbooth.subscriptions.effects.read_for_resync`, `resync`), at assembly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.db import Database
from tollbooth.errors import DomainError
from tollbooth.provider import repository
from tollbooth.provider.client import StripeProvider
from tollbooth.webhooks.replay import Report, progress, why

Known = Callable[[Session], list[str]]
Read = Callable[[str], Any]
Resync = Callable[[Session, str, Any], list[str]]


def reconcile(
    db: Database,
    provider: StripeProvider,
    *,
    known: Known,
    read: Read,
    resync: Resync,
    progress_bar: bool | None = None,
) -> Report:
    """Compare every subscription with the provider and repair drift.

    Every subscription we store (`known`), plus every subscription the provider lists for our
    billed accounts (one that a lost event never told us about), is re-read and written as
    Stripe says it is now (`resync`).
    """
    with db.transaction(readonly=True) as session:
        ids = known(session)
        customers = [a.stripe_customer_id for a in repository.billed_accounts(session)]
    targets: dict[str, str | None] = dict.fromkeys(ids)
    report = Report()
    for customer in customers:
        assert customer is not None
        try:
            for remote in provider.list_subscriptions(customer):
                targets.setdefault(str(remote["id"]), customer)
        except DomainError as exc:
            report.failed.append(f"customer {customer}: {why(exc)}")
    show = None if progress_bar is None else not progress_bar
    for sub_id in progress(list(targets), "reconciling subscriptions", show):
        report.seen += 1
        try:
            facts = read(sub_id)  # the provider, outside any transaction
            with db.transaction() as session:
                changes = resync(session, sub_id, facts)
        except Exception as exc:  # noqa: BLE001
            report.failed.append(f"{sub_id}: {why(exc)}")
            continue
        report.changed.extend(changes)
    return report
