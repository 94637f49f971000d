"""The account's provider customer: created on first need, kept in step with the account.

Never across the network inside a transaction (CONVENTIONS.md, after Brandur Leach): every
change to the account bumps `version` in the RPC's own transaction (the intent, committed);
then, with no transaction open, the provider is called with an idempotency key derived from
what is sent; then `customer_version` records what the provider acknowledged. A sync that
fails leaves `customer_version < version`, and the next sync of the account sends it again.
Two syncs of one account may reach the provider in either order: one that finds, after its
send, that a newer change committed meanwhile sends the newest state again (under a key of its
own), so a slow older send never leaves the provider behind the account.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from tollbooth import errors
from tollbooth.accounts import repository
from tollbooth.accounts.manage import ACCOUNT_KEY
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.provider import repository as links
from tollbooth.provider.client import StripeProvider
from tollbooth.provider.keys import idempotency_key

log = logging.getLogger("tollbooth.accounts")

# Sends of one sync: the first, and again while changes keep committing during a send.
MAX_SENDS = 3


@dataclass(frozen=True)
class Snapshot:
    """What the provider should hold, as of `version`."""

    account_id: str
    customer_id: str | None
    version: int
    customer_version: int
    deleted: bool
    fields: dict[str, Any]


def snapshot(db: Database, account_id: str) -> Snapshot:
    with db.transaction(readonly=True) as session:
        account = repository.by_id(session, account_id)
        if account is None:
            raise errors.not_found("account", account_id)
        return Snapshot(
            account_id=account.id,
            customer_id=account.stripe_customer_id,
            version=account.version,
            customer_version=account.customer_version,
            deleted=account.customer_deleted_at is not None,
            fields={
                "email": account.email or "",
                "name": account.name or "",
                "description": account.description or "",
                "phone": account.phone or "",
                "metadata": {**(account.attributes or {}), ACCOUNT_KEY: account.id},
            },
        )


def sync_customer(db: Database, provider: StripeProvider, account_id: str, *, create: bool) -> str:
    """Bring the provider customer up to the account's version; create it first if `create`
    and it has none. The customer id ("" when the account has none and `create` is False)."""
    return _sync(db, provider, account_id, create=create)[0]


# What a sync did (`_sync`): sent the account to the provider; nothing to send (in step, no
# customer, or the customer recorded deleted); found the customer deleted at the provider.
SENT, NOTHING, GONE = "sent", "nothing", "gone"


def _sync(
    db: Database, provider: StripeProvider, account_id: str, *, create: bool, again: str = ""
) -> tuple[str, str]:
    """`sync_customer`, and what it did (SENT, NOTHING, GONE). `again` names a later try of
    a send that may have failed (a sweep's run): its key is its own, since Stripe answers a
    key it already saw with the saved answer, a 500 included, for 24 h."""
    snap = snapshot(db, account_id)
    if snap.deleted:
        return snap.customer_id or "", NOTHING
    customer = snap.customer_id
    if customer is None:
        if not create:
            return "", NOTHING
        # Same request as the checkout's first need (key = the account): one customer per account.
        made = provider.create_customer(snap.account_id, email=None, name=None)
        with db.transaction() as session:
            links.link_customer(session, snap.account_id, str(made["id"]))
        snap = snapshot(db, account_id)
        customer = snap.customer_id
        assert customer is not None
    elif snap.customer_version >= snap.version:
        return customer, NOTHING
    outcome = NOTHING
    overwrote: int | None = None  # the version a send of ours may have put over a newer one
    for _ in range(MAX_SENDS):
        params = dict(snap.fields)
        remote = provider.retrieve_customer(customer)
        if remote.get("deleted"):  # deleted at Stripe (not by us): nothing left to update
            with db.transaction() as session:
                if repository.record_customer_deleted(session, snap.account_id, utcnow()):
                    outcome = GONE
            break
        for key in (remote.get("metadata") or {}).keys() - params["metadata"].keys():
            params["metadata"][key] = ""  # removed here: remove there too
        parts = [str(snap.version), json.dumps(params, sort_keys=True)]
        if overwrote is not None:  # not the first send of this state: its key replays only
            parts.append(f"over:{overwrote}")
        if again:
            parts.append(f"again:{again}")
        provider.update_customer(
            customer, params, idempotency=idempotency_key("customer-sync", snap.account_id, *parts)
        )
        outcome = SENT
        with db.transaction() as session:
            repository.record_customer_version(session, snap.account_id, snap.version)
            current = repository.by_id(session, snap.account_id)
            newer = current is not None and current.version > snap.version
        if not newer:
            break
        # A change committed while ours was on its way, and its own sync may have reached the
        # provider first: ours then landed over it. Send the newest state again, under a key of
        # its own (the other sync's key would only replay its answer, not apply it again).
        overwrote = snap.version
        snap = snapshot(db, account_id)
        if snap.deleted:
            break
    return customer, outcome


def sync_quietly(db: Database, provider: StripeProvider, account_id: str) -> None:
    """After an update: follow at the provider if the account has a customer. A provider
    failure is logged; the account stays ahead (customer_version < version) until next time."""
    try:
        sync_customer(db, provider, account_id, create=False)
    except errors.DomainError as exc:
        log.warning("provider customer of %s not updated yet: %s", account_id, exc.reason)


def delete_customer(db: Database, provider: StripeProvider, account_id: str) -> None:
    """Delete the provider customer (the account was archived in the RPC's transaction)."""
    snap = snapshot(db, account_id)
    if snap.customer_id and not snap.deleted:
        provider.delete_customer(snap.customer_id)
    with db.transaction() as session:
        repository.record_customer_deleted(session, account_id, utcnow())


def sweep_deletes(db: Database, provider: StripeProvider) -> tuple[list[str], list[str]]:
    """`reconcile`: finish every DeleteCustomer whose provider call failed (the account was
    archived, its provider customer, and the subscriptions it pays, stayed alive): delete the
    provider customer, as DeleteCustomer does (Stripe cancels its subscriptions with it), then
    record it. No transaction is open across the provider call; a customer the provider no
    longer knows is recorded deleted; a failure is reported and left for the next run.
    (changes, failures)."""
    with db.transaction(readonly=True) as session:
        targets = repository.customers_left_to_delete(session)
    changes: list[str] = []
    failures: list[str] = []
    for account_id, customer_id in targets:
        what = f"customer {customer_id} of account {account_id}"
        try:
            provider.delete_customer(customer_id)
        except errors.DomainError as exc:
            log.warning("%s not deleted at the provider yet: %s", what, exc.reason)
            failures.append(f"{what}: {exc.reason}: {exc.message}")
            continue
        with db.transaction() as session:
            if repository.record_customer_deleted(session, account_id, utcnow()):
                changes.append(f"{what}: deleted at Stripe (DeleteCustomer left it)")
            # else: a DeleteCustomer retry or another run recorded it meanwhile
    return changes, failures


def sweep_updates(db: Database, provider: StripeProvider) -> tuple[list[str], list[str]]:
    """`reconcile`: bring every provider customer an account change left behind (its sync
    after UpdateAccount failed: `customer_version < version`) up to the account, as the next
    sync of that account would. No transaction is open across the provider calls; a failure
    is reported and left for the next run. (changes, failures)."""
    with db.transaction(readonly=True) as session:
        targets = repository.customers_behind(session)
    changes: list[str] = []
    failures: list[str] = []
    run = utcnow().isoformat()  # this run's keys: not the failed sync's, nor an earlier run's
    for account_id in targets:
        try:
            customer, outcome = _sync(db, provider, account_id, create=False, again=run)
        except errors.DomainError as exc:
            log.warning("provider customer of %s not updated yet: %s", account_id, exc.reason)
            failures.append(f"customer of account {account_id}: {exc.reason}: {exc.message}")
            continue
        # NOTHING: a concurrent sync or DeleteCustomer finished it since the query above.
        if outcome == GONE:
            changes.append(
                f"customer {customer} of account {account_id}: deleted at Stripe, not by "
                "this service; recorded deleted (no longer updated)"
            )
        elif outcome == SENT:
            changes.append(
                f"customer {customer} of account {account_id}: updated at Stripe to the "
                "account (its sync after the change had failed)"
            )
    return changes, failures
