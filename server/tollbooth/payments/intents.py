"""CreatePaymentIntent at the provider boundary: intent, call, result; never a call inside a
transaction (the shape of `tollbooth.checkout.intents`).

1. one short transaction checks the request (`service.clean`) and records the intent: a
   `pending` row holding amount, currency, description, receipt e-mail and price. Its id is
   derived from the caller's scope and `request_id`, so a retry finds it; the provider's
   idempotency key is derived from that id and the provider's parameters from the row alone,
   so every attempt sends the same request;
2. with no transaction open: the account's provider customer, then the payment intent;
3. a second short transaction records the provider's id, status and client secret on the row.

A crash or timeout between leaves a `pending` row that a retry with the same `request_id`
completes with the same key (the provider answers with the intent it created the first time),
or, when no retry comes, the sweeper (`sweep_pending`, run by `tollbooth reconcile`). A request
the provider refuses (a 4xx: it created nothing) leaves no row.

A price bought once (one-time, not stackable) is sold by one open intent per account: the
creations of an account take turns on its row, and while an intent of the price can still be
paid (neither succeeded nor canceled) every other request for it, from a second tab or with
another request_id, is answered that same intent (its amount, description and receipt e-mail),
so the provider can take the payment once. Before it is handed to another request, that open
intent is re-read from the provider (no transaction open): one the provider canceled, its
`payment_intent.canceled` not applied yet, is recorded canceled then and a new one is made.
One paid by a checkout meanwhile is refunded at fulfilment (`tollbooth.payments.guard`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tollbooth import amounts, errors
from tollbooth.accounts import customer_sync
from tollbooth.accounts import repository as accounts
from tollbooth.accounts.service import require_active, resolve
from tollbooth.auth.caller import SERVICE, Caller
from tollbooth.credit.queries import check_grants_fit
from tollbooth.db import Database
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id
from tollbooth.payments import closing, repository, service
from tollbooth.payments.closing import OURS
from tollbooth.provider.client import REFUSED, StripeProvider
from tollbooth.provider.keys import (
    KEY_LIFETIME,
    ParametersChanged,
    idempotency_key,
    past_key_lifetime,
    refused_line,
    sent_again,
)
from tollbooth.subscriptions.service import already_purchased, bought_once, held_once

log = logging.getLogger("tollbooth.payments")

# An intent still pending after this long was left by a crash or a timeout: the sweeper's.
STALE_AFTER = dt.timedelta(minutes=10)


def intent_id_for(scope: str, account_id: str, request_id: str) -> str:
    """Our id: derived from the request when it has a request_id, so a retry finds the intent
    the first attempt recorded."""
    if not request_id:
        return new_id("pay")
    digest = hashlib.sha256("\x1f".join((scope, account_id, request_id)).encode()).hexdigest()
    return f"pay_{digest[:24]}"


def same_intent(db: Database, caller: Caller, req: service.PaymentRequest, answered: str) -> bool:
    """Whether the intent `answered` (the id the response stored under the request's
    request_id names) is the one `req` asks for (the price's amount written out or left to
    the price, spaces the service strips): the `equivalent` of `Servicer.staged`, so a stored
    request_id and the intent agree on what is the same request. False when there is none or
    `req` is refused."""
    if not answered:
        return False
    try:
        with db.transaction(readonly=True) as session:
            account = resolve(session, caller, req.account_ref)
            own = repository.intent_by_id(session, answered, owner=account.id)
            return own is not None and own.fingerprint == service.clean(session, req).fingerprint()
    except errors.DomainError:
        return False


def _record(session: Session, caller: Caller, req: service.PaymentRequest) -> PaymentIntent:
    return _record_or_share(session, caller, req)[0]


def _record_or_share(
    session: Session, caller: Caller, req: service.PaymentRequest
) -> tuple[PaymentIntent, bool]:
    """The intent to answer, and whether it is another request's open intent of a price
    bought once (a second tab's share), which the provider may have canceled since."""
    account = require_active(resolve(session, caller, req.account_ref))
    cleaned = service.clean(session, req)
    ours_id = intent_id_for(req.request_scope, account.id, req.request_id)
    own = repository.intent_by_id(session, ours_id, owner=account.id)
    if own is not None:  # a retry of this very request
        if own.fingerprint != cleaned.fingerprint():
            raise errors.invalid(
                "request_id was already used with different parameters",
                reason="IDEMPOTENCY_KEY_REUSED",
                field="request_id",
            )
        if own.status not in ("succeeded", "canceled") and cleaned.price is not None:
            if held_once(session, account.id, [cleaned.price]):
                # Bought since by another purchase (a checkout in another tab): refused, as a
                # new request is. One still `pending` (its provider call failed) is withdrawn:
                # it is never sent now, as a checkout's retry is not.
                refusal = already_purchased(cleaned.price.id)
                if own.status == "pending":
                    raise _HeldSince(own.id, account.id, refusal)
                raise refusal
        return own, False
    if cleaned.price is not None and bought_once(cleaned.price):
        # Creations of one account take turns here, so two tabs cannot both miss each other
        # (FOR NO KEY UPDATE: the account's ledger inserts meanwhile are not held up).
        accounts.by_id_for_update(session, account.id, keys_shared=True)
        if held_once(session, account.id, [cleaned.price]):
            raise already_purchased(cleaned.price.id)  # a price bought once, held already
        shared = repository.open_intent_for_price(
            session, account.id, cleaned.price.id, forgotten_before=utcnow() - KEY_LIFETIME
        )
        if shared is not None:
            return shared, True  # a second tab pays the same intent: the provider takes it once
    now = utcnow()
    if cleaned.price is not None:
        granted: dict[str, Decimal] = {}
        amounts.add_grants(granted, cleaned.price.credit_grants or [], 1, "catalog_price_id")
        check_grants_fit(session, account.id, granted, now, "catalog_price_id")
    row = PaymentIntent(
        id=ours_id,
        billing_account_id=account.id,
        stripe_payment_intent_id=None,
        status="pending",
        amount=cleaned.amount,
        currency=cleaned.currency,
        description=cleaned.description,
        receipt_email=cleaned.receipt_email,
        price_id=cleaned.price.id if cleaned.price else None,
        fingerprint=cleaned.fingerprint(),
        keyed=bool(req.request_id),
        created_at=now,
        updated_at=now,
    )
    repository.add_intent(session, row)
    return row, False


class _HeldSince(Exception):
    """A retry of a `pending` intent of a price bought once that the account holds since:
    its row is withdrawn (nothing was given to pay) and `refusal` answered."""

    def __init__(self, intent_id: str, account_id: str, refusal: errors.DomainError) -> None:
        super().__init__(refusal.message)
        self.intent_id = intent_id
        self.account_id = account_id
        self.refusal = refusal


def provider_params(row: PaymentIntent, customer: str) -> dict[str, Any]:
    """The provider's parameters: from the recorded intent only, the same on every attempt."""
    metadata = {"billing_account_id": row.billing_account_id, OURS: row.id}
    if row.price_id:
        metadata["catalog_price_id"] = row.price_id
    params: dict[str, Any] = {
        "amount": row.amount,
        "currency": row.currency,
        "customer": customer,
        "metadata": metadata,
    }
    if row.description:
        params["description"] = row.description
    if row.receipt_email:
        params["receipt_email"] = row.receipt_email
    return params


def realise(db: Database, provider: StripeProvider, row: PaymentIntent) -> PaymentIntent:
    """The intent at the provider (created now, or found again by its idempotency key),
    recorded on its row; returns the row as it then is."""
    return _realised(db, provider, row)[0]


def _realised(
    db: Database, provider: StripeProvider, row: PaymentIntent
) -> tuple[PaymentIntent, bool]:
    """`realise`, and whether this call moved the row from `pending` (False: a concurrent
    request, sweep or provider event had moved it on when the answer was recorded)."""
    if row.stripe_payment_intent_id is not None and row.client_secret is not None:
        return row, False
    customer = customer_sync.sync_customer(db, provider, row.billing_account_id, create=True)
    try:
        remote = sent_again(
            lambda: provider.create_payment_intent(
                provider_params(row, customer),
                idempotency=idempotency_key("payment_intent", row.id),
            )
        )
    except errors.DomainError as exc:
        if exc.reason == REFUSED:
            # The provider created nothing and would refuse the same request again: a refused
            # request leaves nothing here either (no pending row for the sweeper to resend).
            with db.transaction() as session:
                repository.delete_pending(session, row.id, account_id=row.billing_account_id)
        raise
    with db.transaction() as session:
        locked = repository.intent_by_id(session, row.id, owner=row.billing_account_id, lock=True)
        if locked is None:
            raise errors.not_found("payment intent", row.id)
        # The provider's events may have moved it on already (succeeded before we got here).
        if locked.stripe_payment_intent_id is None:
            locked.stripe_payment_intent_id = str(remote["id"])
        if locked.client_secret is None:
            locked.client_secret = remote.get("client_secret")
        moved = locked.status == "pending"  # read under the row's lock
        if moved:
            locked.status = str(remote.get("status") or "requires_payment_method")
        locked.updated_at = utcnow()
        withdrawn = locked.status == "canceled" and remote.get("status") != "canceled"
    if withdrawn:
        # Recorded canceled while this create was on its way (the sweep withdrew it, not
        # finding it at the provider yet): canceled there too, so nobody pays it. A failure
        # is logged; the provider's intent stays open until an operator cancels it.
        try:
            closing.cancel_at_provider(provider, str(remote["id"]))
        except errors.DomainError as exc:
            log.warning("payment intent %s: not canceled at Stripe (%s)", row.id, exc.reason)
    return locked, moved


def _recorded(
    db: Database, caller: Caller, req: service.PaymentRequest
) -> tuple[PaymentIntent, bool]:
    for attempt in (1, 2):
        try:
            with db.transaction() as session:
                try:
                    return _record_or_share(session, caller, req)
                except _HeldSince as held:  # withdrawn in this transaction, then refused
                    repository.delete_pending(session, held.intent_id, account_id=held.account_id)
                    refusal = held.refusal
            raise refusal
        except IntegrityError:
            # A concurrent twin (same request_id) recorded the same id first: read it back.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _canceled_meanwhile(db: Database, provider: StripeProvider, row: PaymentIntent) -> bool:
    """Whether the provider canceled this shared open intent before its
    `payment_intent.canceled` event was applied; if so it is recorded canceled here (compare
    and set: never from succeeded or canceled), so the price is free for a new intent. Read
    with no transaction open; a failed read keeps the intent (its event will settle it)."""
    if row.stripe_payment_intent_id is None:
        return False  # its provider step is under way: nothing to read yet
    try:
        remote = provider.retrieve_payment_intent(row.stripe_payment_intent_id)
    except errors.DomainError as exc:
        log.warning("payment intent %s: not re-read (%s); handed out", row.id, exc.reason)
        return False
    if remote.get("status") != "canceled":
        return False
    with db.transaction() as session:
        repository.mark_intent(
            session,
            row.id,
            account_id=row.billing_account_id,
            only_from=(row.status,),
            status="canceled",
            updated_at=utcnow(),
        )
    log.info("payment intent %s: canceled at the provider before its event", row.id)
    return True


def create_payment_intent(
    db: Database, provider: StripeProvider, caller: Caller, req: service.PaymentRequest
) -> PaymentIntent:
    row, shared = _recorded(db, caller, req)
    # A shared intent canceled at the provider is never handed out: recorded canceled, the
    # next round makes (or shares) a new one. Bounded: each round retires one canceled intent.
    for _ in range(3):
        if not (shared and _canceled_meanwhile(db, provider, row)):
            break
        row, shared = _recorded(db, caller, req)
    return realise(db, provider, row)


class Sweep(NamedTuple):
    """What `sweep_pending` did: one line per intent completed, per provider failure (left
    pending for the next sweep), per intent too old to complete safely or of an archived
    account (left alone)."""

    changed: list[str]
    failed: list[str]
    left_alone: list[str]


def sweep_pending(
    db: Database, provider: StripeProvider, *, older_than: dt.timedelta = STALE_AFTER
) -> Sweep:
    """The sweeper (`tollbooth reconcile`): complete every intent left `pending` (a crash or a
    timeout between the steps, and no retry since) through `realise`, with its own key and
    parameters, so the provider holds exactly the intent a late retry will get back.

    An intent older than the provider's idempotency-key lifetime is neither sent again (the
    key may be gone: a second intent could be created) nor canceled: it is logged and
    reported for an operator to look up at the provider by its metadata. So is one whose
    account was archived since: the request path refuses it (ACCOUNT_ARCHIVED), and so does
    the sweep. And so is one whose key the provider refuses because the parameters changed
    since a first attempt used it (`ParametersChanged`: the account's provider customer was
    relinked): no run could complete it, so it is not a failure; every run reports it alike.

    One made without request_id (seed 003 sends none; `keyed` False) is never sent again: no
    client can retry it (it never had its id), so completing it would only make an unpaid
    intent nobody knows about. It is canceled instead (`closing.withdraw_unkeyed`: looked up
    at the provider by its metadata, canceled there if a first attempt made it), reported as
    a change; a provider failure leaves it pending for the next sweep.

    A change is reported by the run that made it: the answer is recorded only on a row still
    `pending` (under its lock), and a run that finds it moved on meanwhile (another sweep, a
    client's retry, the provider's event) logs it as already done and reports nothing."""
    with db.transaction(readonly=True) as session:
        stale = repository.stale_pending(session, before=utcnow() - older_than)
    done = Sweep([], [], [])
    for row in stale:
        # Checked before each call, not once.
        line = past_key_lifetime(f"payment intent {row.id}", row.created_at, OURS, now=utcnow())
        if line is not None:
            log.warning("%s", line)
            done.left_alone.append(line)
            continue
        archived = _archived(db, row)
        if archived is not None:
            log.warning("%s", archived)
            done.left_alone.append(archived)
            continue
        if not row.keyed:  # no client can retry it: never sent again, canceled
            try:
                withdrawn = closing.withdraw_unkeyed(db, provider, row)
            except closing.StillPayable as paid:
                log.warning("%s", paid)
                done.left_alone.append(str(paid))
                continue
            except errors.DomainError as exc:
                done.failed.append(
                    f"payment intent {row.id}: {exc.reason}: {exc.message} (still pending:"
                    " the next sweep tries again)"
                )
                continue
            if withdrawn is not None:
                done.changed.append(withdrawn)
            continue
        try:
            result, moved = _realised(db, provider, row)
        except ParametersChanged:
            line = refused_line(f"payment intent {row.id}", OURS)
            log.warning("%s", line)
            done.left_alone.append(line)
            continue
        except errors.DomainError as exc:  # the row stays pending, as after a failed request
            done.failed.append(
                f"payment intent {row.id}: {exc.reason}: {exc.message} (still pending: the next"
                " sweep tries again)"
            )
            continue
        if not moved:
            log.info(
                "payment intent %s: already %s (%s), done meanwhile by another run or request;"
                " nothing changed",
                row.id,
                result.status,
                result.stripe_payment_intent_id,
            )
            continue
        done.changed.append(
            f"payment intent {row.id}: pending -> {result.status}"
            f" ({result.stripe_payment_intent_id})"
        )
    return done


def _archived(db: Database, row: PaymentIntent) -> str | None:
    """The report line of an intent whose account is archived (the request path's rule,
    `require_active`); None when the sweep may complete it."""
    with db.transaction(readonly=True) as session:
        account = resolve(session, SERVICE, row.billing_account_id)
    try:
        require_active(account)
    except errors.DomainError:
        return (
            f"payment intent {row.id}: account {account.id} is archived: not sent (a first"
            f" attempt may have created it at the provider); look it up by metadata {OURS}"
        )
    return None
