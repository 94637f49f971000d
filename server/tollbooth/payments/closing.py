"""Payment intents nobody may pay any more, canceled at the provider and recorded `canceled`.
Never across the network inside a transaction: the rows are read, the provider is called with
none open, then each row is set `canceled` by compare and set (never from succeeded).

- The open intents of a customer DeleteCustomer deleted (its account archived): `cancel_open`
  right after the delete commits (handed to CustomerService at assembly), and `sweep_deleted`
  from `tollbooth reconcile` for those a provider failure left open. A failure never undoes
  the delete. An intent the provider will not cancel because it was paid meanwhile (between
  the delete and the cancel) is left to its `payment_intent.succeeded`: the fulfilment guard
  refunds a payment of an archived account and grants nothing (`payments.guard`).
- An intent made WITHOUT request_id that a failed provider call left `pending`
  (`withdraw_unkeyed`, from `intents.sweep_pending`): no client can retry it (it was never
  given its id; a retry without the key is a new intent), so it is never sent again. A first
  attempt may have created it at the provider all the same (the answer lost): it is looked up
  there by its metadata and canceled, not left an unpaid intent nobody knows about.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from tollbooth import errors
from tollbooth.accounts import repository as accounts
from tollbooth.db import Database
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.db.types import utcnow
from tollbooth.payments import repository
from tollbooth.provider.client import REFUSED, StripeProvider

log = logging.getLogger("tollbooth.payments")

# The metadata key that marks a provider payment intent as one of ours, naming our id
# (checkout's carry none); `intents.OURS`.
OURS = "tollbooth_payment_intent_id"


class Closed(NamedTuple):
    """One line per intent canceled, and per provider failure (left for the next run)."""

    changed: list[str]
    failed: list[str]


def cancel_at_provider(provider: StripeProvider, stripe_id: str) -> tuple[dict[str, Any], bool]:
    """Cancel the provider's intent: (the intent as the provider then has it, whether this
    call canceled it). One it refuses to cancel (paid or being paid, or canceled already) is
    read instead, to say which."""
    try:
        return provider.cancel_payment_intent(stripe_id), True
    except errors.DomainError as exc:
        if exc.reason != REFUSED:
            raise
        return provider.retrieve_payment_intent(stripe_id), False


def cancel_open(db: Database, provider: StripeProvider, account_id: str) -> Closed:
    """DeleteCustomer, after its commit (and its retries): cancel the account's open intents.
    Never raises for the provider: a failure is logged and left to `reconcile`."""
    with db.transaction(readonly=True) as session:
        rows = repository.open_at_provider(session, account_id=account_id)
    done = _cancel_all(db, provider, rows)
    for line in done.changed:
        log.info("%s", line)
    for line in done.failed:
        log.warning("%s", line)
    return done


def sweep_deleted(db: Database, provider: StripeProvider) -> Closed:
    """`reconcile`: cancel every open intent of a customer DeleteCustomer deleted (its cancel
    after the commit failed, or an intent's create was answered after it ran)."""
    with db.transaction(readonly=True) as session:
        rows = repository.open_at_provider(session, account_id=None)
    return _cancel_all(db, provider, rows)


def _cancel_all(db: Database, provider: StripeProvider, rows: list[PaymentIntent]) -> Closed:
    done = Closed([], [])
    for row in rows:
        stripe_id = str(row.stripe_payment_intent_id)
        try:
            remote, ours = cancel_at_provider(provider, stripe_id)
        except errors.DomainError as exc:
            done.failed.append(
                f"payment intent {row.id}: not canceled at Stripe ({stripe_id}): {exc.reason}:"
                f" {exc.message} (its customer was deleted; the next reconcile tries again)"
            )
            continue
        if remote.get("status") != "canceled":
            # Paid (or being paid) before the cancel: its events record it; the fulfilment
            # guard refunds a payment of an archived account.
            log.warning(
                "payment intent %s: %s at Stripe, not canceled", row.id, remote.get("status")
            )
            continue
        # Reported by the run whose call canceled it (its `payment_intent.canceled` may
        # record it first), or else by the one that recorded it.
        if _record_canceled(db, row, stripe_id) or ours:
            done.changed.append(
                f"payment intent {row.id}: canceled at Stripe ({stripe_id}): its customer was"
                " deleted"
            )
    return done


def _record_canceled(db: Database, row: PaymentIntent, stripe_id: str | None) -> bool:
    """Set `canceled` on a row not yet final (False: its event or another run did first)."""
    values: dict[str, Any] = {"status": "canceled", "updated_at": utcnow()}
    if stripe_id is not None and row.stripe_payment_intent_id is None:
        values["stripe_payment_intent_id"] = stripe_id
    with db.transaction() as session:
        return repository.mark_intent(
            session,
            row.id,
            account_id=row.billing_account_id,
            only_from=repository.NOT_FINAL,
            **values,
        )


class StillPayable(Exception):
    """An intent made without request_id that the provider will not cancel: paid, or being
    paid (nobody was given it through us). Its report line: left for its events to record."""


def withdraw_unkeyed(db: Database, provider: StripeProvider, row: PaymentIntent) -> str | None:
    """The sweep's line for a `pending` intent made without request_id, canceled (at the
    provider too when a first attempt made it there); None when it was done meanwhile.
    Raises the provider's DomainError: the row stays `pending` for the next sweep; and
    `StillPayable` for one the provider reports paid."""
    with db.transaction(readonly=True) as session:
        account = accounts.by_id(session, row.billing_account_id)
        customer = account.stripe_customer_id if account is not None else None
    # Sent only with the account's provider customer: with none recorded, nothing was sent.
    found = provider.find_payment_intent(customer, OURS, row.id) if customer else None
    where = "not at Stripe"
    stripe_id = None
    ours = False
    if found is not None:
        stripe_id = str(found["id"])
        remote = found
        if found.get("status") != "canceled":
            remote, ours = cancel_at_provider(provider, stripe_id)
        if remote.get("status") != "canceled":  # paid: nobody had its secret; its event decides
            raise StillPayable(
                f"payment intent {row.id}: {remote.get('status')} at Stripe ({stripe_id}): not"
                " canceled; its provider events record it"
            )
        where = f"canceled at Stripe: {stripe_id}"
    # Reported by the run whose call canceled it (its event may record it first), or else
    # by the one that recorded it.
    if not _record_canceled(db, row, stripe_id) and not ours:
        return None
    return (
        f"payment intent {row.id}: pending -> canceled (created without request_id: no client"
        f" can retry it; {where})"
    )
