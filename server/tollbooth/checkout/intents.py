"""Checkout and portal at the provider boundary: intent, call, result; never a call inside a
transaction.

CreateCheckoutSession runs in three steps:

1. one short transaction checks the request, answers a conflict with an active subscription
   (the portal), claims the account's slot of every subscription group it buys in
   (`checkout_slots`) and records the intent: a `pending` checkout row holding the request's
   items, URLs and reference. Its id is derived from the caller's scope and `request_id`, so a
   retry finds it; the provider's idempotency key is derived from that id and the provider's
   parameters from the row alone, so every attempt sends the same request;
2. with no transaction open: the customer, the prices, the session at the provider;
3. a second short transaction records the provider's answer on the row.

A crash or timeout between leaves a `pending` row that the next attempt completes: the same
request again (`request_id`), or any later checkout of the same group (it completes, then
reuses or expires, the one holding the slot). A request the provider refuses (a 4xx: it created
nothing) is withdrawn instead: its row goes, so no later checkout inherits the refusal.

One open checkout per account and subscription group: a second request for the same group
gets the live one back when it asks for the same thing (same items, URLs and reference), and
otherwise expires it at the provider first and takes its place.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tollbooth import errors, idempotency
from tollbooth.accounts import customer_sync
from tollbooth.accounts.service import fill_email, require_active, resolve
from tollbooth.auth.caller import SERVICE, Caller
from tollbooth.checkout import once, repository
from tollbooth.checkout.asked import CheckoutRequest, asked, checkout_id_for
from tollbooth.checkout.portal import create_portal, same_account
from tollbooth.checkout.service import (
    MAX_PROVIDER_REFERENCE,
    NEXT_CHECKOUT,
    NEXT_PORTAL,
    CheckoutResult,
    PortalOptions,
    from_unix,
    granted_by,
    setup_currency,
)
from tollbooth.credit.queries import check_grants_fit
from tollbooth.db import Database
from tollbooth.db.models import CheckoutSession, Price
from tollbooth.db.types import utcnow
from tollbooth.provider import sync
from tollbooth.provider.client import REFUSED, StripeProvider
from tollbooth.provider.keys import (
    ParametersChanged,
    blocked_by,
    idempotency_key,
    past_key_lifetime,
    refused_line,
    sent_again,
)
from tollbooth.subscriptions.service import (
    already_purchased,
    conflicting_subscription,
    held_once,
    price_group,
)

log = logging.getLogger("tollbooth.checkout")

LIVE = ("pending", "open")
# An intent still pending after this long was left by a crash or a timeout: the sweeper's.
STALE_AFTER = dt.timedelta(minutes=10)
# The metadata key that names our intent on a provider checkout session.
OURS = "tollbooth_checkout_id"
MAX_TAKEOVERS = 5


@dataclass(frozen=True)
class Intent:
    """A checkout row as read in a transaction (plain values, safe outside it)."""

    id: str
    account_id: str
    stripe_id: str | None
    status: str
    mode: str
    items: list[dict[str, Any]]
    success_url: str
    cancel_url: str
    reference: str
    created_at: dt.datetime
    currency: str = ""

    @classmethod
    def of(cls, row: CheckoutSession) -> Intent:
        return cls(
            id=row.id,
            account_id=row.billing_account_id,
            stripe_id=row.stripe_checkout_session_id,
            status=row.status,
            mode=row.mode,
            items=[dict(item) for item in row.items],
            success_url=row.success_url or "",
            cancel_url=row.cancel_url or "",
            reference=row.client_reference,
            created_at=row.created_at,
            currency=row.currency,
        )


@dataclass
class _Plan:
    account_id: str
    ours: Intent | None = None  # our intent, to complete
    reuse: Intent | None = None  # the live checkout asking for the same thing
    blockers: list[tuple[str, Intent]] | None = None  # (group, holder) to expire first
    portal_for: str = ""  # conflicting subscription id: the answer is the portal
    refusal: errors.DomainError | None = None  # raised once the plan's transaction committed
    return_url: str = ""


def _groups(prices: Sequence[Price]) -> list[str]:
    """Slots held while live: non-stackable recurring groups, `once:{price}` per one-time."""
    groups = {price_group(p) for p in prices if p.type == "recurring" and not p.stackable}
    return sorted(groups) + once.slots(prices)


def _alive(row: CheckoutSession | None, now: dt.datetime) -> bool:
    if row is None or row.status not in LIVE:
        return False
    return row.expires_at is None or row.expires_at > now


# -- step 1: the intent -----------------------------------------------------------------------


def _plan(session: Session, caller: Caller, req: CheckoutRequest, origins: Sequence[str]) -> _Plan:
    if req.also_named:  # an id and its alias are one account; two accounts are FIELD_INVALID
        same_account(session, caller, req.account_ref, req.also_named)
    account = require_active(resolve(session, caller, req.account_ref))
    want = asked(session, req, origins, caller)
    lines, success, cancel, reference = want.lines, want.success, want.cancel, want.reference
    mode, email, fingerprint, legacy = want.mode, want.email, want.fingerprint, want.legacy
    prices = [ln.price for ln in lines]
    ours_id = checkout_id_for(req.request_scope, account.id, req.request_id)
    if req.request_id:
        repository.one_plan_per_key(session, req.request_scope, req.request_id)
    own = repository.checkout_by_id(session, ours_id, owner=account.id)
    if own is not None:  # a retry of this very request
        if own.fingerprint not in (fingerprint, legacy):
            raise _key_reused()
    elif req.request_id and idempotency.held_for_another(
        session, req.request_scope, req.request_id, req.request_digest
    ):
        # A twin under this request_id, with other parameters, was answered an open checkout
        # (its plan claimed the key): refused before anything is expired or made for it.
        raise _key_reused()
    # Refused before anything is written (the e-mail included); only a stale intent goes.
    held = held_once(session, account.id, prices) if prices else None
    if held is not None and (own is None or own.status in LIVE):
        if own is not None:  # bought since: never sent now (pending), nor handed out (open)
            repository.delete_pending(session, own.id, account_id=account.id)
        return _Plan(account.id, refusal=already_purchased(held.id))
    if email:
        account = fill_email(session, account, email)
    conflict = conflicting_subscription(session, account.id, prices) if prices else None
    if conflict is not None and (own is None or own.status == "pending"):
        if own is not None:  # a plan of the group was bought since this intent was recorded
            repository.delete_pending(session, own.id, account_id=account.id)
        return _Plan(account.id, portal_for=conflict.id, return_url=cancel or success)
    if own is not None:
        return _Plan(account.id, ours=Intent.of(own), blockers=_holders(session, own, prices))
    now = utcnow()
    check_grants_fit(session, account.id, granted_by(lines), now, "items")
    blockers: list[tuple[str, Intent]] = []
    for group in _groups(prices):
        holder = _live_holder(session, account.id, group, ours_id, now)
        if holder is None:
            continue
        if holder.fingerprint in (fingerprint, legacy):
            if req.request_id:  # no intent of ours marks the key: its claim does, now
                idempotency.claim_or_row(
                    session, req.request_scope, req.request_id, req.request_digest
                )
            return _Plan(account.id, reuse=Intent.of(holder))
        blockers.append((group, Intent.of(holder)))
    row = CheckoutSession(
        id=ours_id,
        billing_account_id=account.id,
        stripe_checkout_session_id=None,
        status="pending",
        payment_status="unpaid",
        mode=mode,
        url=None,
        items=[
            {
                "price_id": ln.price.id,
                "lookup_key": ln.price.lookup_key or "",
                "quantity": ln.quantity,
            }
            for ln in lines
        ],
        amount_total=0,
        currency=lines[0].price.currency if lines else want.currency or setup_currency(session),
        client_reference=reference,
        success_url=success,
        cancel_url=cancel,
        fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
    )
    repository.add_checkout(session, row)
    return _Plan(account.id, ours=Intent.of(row), blockers=blockers)


def _key_reused() -> errors.DomainError:
    return errors.invalid(
        "request_id was already used with different parameters",
        reason="IDEMPOTENCY_KEY_REUSED",
        field="request_id",
    )


def _holders(
    session: Session, own: CheckoutSession, prices: Sequence[Price]
) -> list[tuple[str, Intent]]:
    """On a retry: the live checkouts still holding a slot our intent waits for."""
    if own.status not in LIVE:
        return []
    now = utcnow()
    out: list[tuple[str, Intent]] = []
    for group in _groups(prices):
        holder = _live_holder(session, own.billing_account_id, group, own.id, now)
        if holder is not None:
            out.append((group, Intent.of(holder)))
    return out


def _live_holder(
    session: Session, account_id: str, group: str, ours_id: str, now: dt.datetime
) -> CheckoutSession | None:
    """The live checkout holding the account's slot of `group`; None once the slot is ours."""
    ours, holder = repository.take_slot(
        session, account_id, group, ours_id, lambda row: _alive(row, now), MAX_TAKEOVERS
    )
    if not ours and holder is None:
        raise _crowded()
    return holder


def _still_open(holder: Intent) -> errors.DomainError:
    return errors.DomainError(
        errors.Kind.UNAVAILABLE,
        "PROVIDER_UNAVAILABLE",
        f"the payment provider would not close this account's other open checkout"
        f" ({holder.id}); retry",
    )


def _crowded() -> errors.DomainError:
    return errors.DomainError(
        errors.Kind.UNAVAILABLE,
        "PROVIDER_UNAVAILABLE",
        "other checkouts of this account keep taking its place; retry",
    )


# -- step 2: the provider, no transaction open ------------------------------------------------


def ensure_customer(db: Database, provider: StripeProvider, account_id: str) -> str:
    """The account's provider customer, created on first need and brought up to the account's
    name, email and metadata: the accounts room's one path (`customer_sync`), so checkout and
    the account service never send the provider two different first requests for one key."""
    return customer_sync.sync_customer(db, provider, account_id, create=True)


def provider_params(intent: Intent, customer: str, stripe_prices: list[str]) -> dict[str, Any]:
    """The provider's parameters: from the recorded intent only, the same on every attempt."""
    metadata = {"billing_account_id": intent.account_id, OURS: intent.id}
    params: dict[str, Any] = {
        "mode": intent.mode,
        "customer": customer,
        "success_url": intent.success_url,
        "metadata": metadata,
    }
    if intent.mode == "setup":  # a card to keep: no items; the currency picks the methods
        params["currency"] = intent.currency
        params["setup_intent_data"] = {"metadata": dict(metadata)}
    else:
        params["line_items"] = [
            {"price": stripe_price, "quantity": int(item["quantity"])}
            for item, stripe_price in zip(intent.items, stripe_prices, strict=True)
        ]
    if intent.cancel_url:
        params["cancel_url"] = intent.cancel_url
    if intent.reference and len(intent.reference) <= MAX_PROVIDER_REFERENCE:
        params["client_reference_id"] = intent.reference
    if intent.mode == "subscription":
        params["subscription_data"] = {"metadata": {"billing_account_id": intent.account_id}}
    return params


def realise(db: Database, provider: StripeProvider, intent: Intent) -> Intent:
    """The intent's session at the provider (created now, or found again by its idempotency
    key), recorded on its row; returns the row as it then is."""
    return _realised(db, provider, intent)[0]


def _realised(db: Database, provider: StripeProvider, intent: Intent) -> tuple[Intent, bool]:
    """`realise`, and whether this call moved the row from `pending` (False: a concurrent
    request, sweep or provider event had moved it on when the answer was recorded)."""
    if intent.stripe_id is not None:
        return intent, False
    customer = ensure_customer(db, provider, intent.account_id)
    try:
        stripe_prices = [
            sync.ensure_price_synced(db, provider, item["price_id"]) for item in intent.items
        ]
        remote = sent_again(
            lambda: provider.create_checkout_session(
                provider_params(intent, customer, stripe_prices),
                idempotency=idempotency_key("checkout", intent.id),
            )
        )
    except errors.DomainError as exc:
        # Refused, or a mislinked price: it would fail again, so the row and its hold go.
        if exc.reason in (REFUSED, sync.MISMATCH):
            _withdraw(db, intent)
        raise
    with db.transaction() as session:
        moved = repository.mark_checkout(
            session,
            intent.id,
            account_id=intent.account_id,
            only_from=("pending",),
            stripe_checkout_session_id=remote["id"],
            status=remote.get("status") or "open",
            payment_status=remote.get("payment_status") or "unpaid",
            url=remote.get("url"),
            amount_total=int(remote.get("amount_total") or 0),
            expires_at=from_unix(remote.get("expires_at")),
            items=[
                {**item, "stripe_price_id": stripe_price}
                for item, stripe_price in zip(intent.items, stripe_prices, strict=True)
            ],
        )
        row = repository.checkout_by_id(session, intent.id, owner=intent.account_id)
        if row is None:  # withdrawn meanwhile (its group was bought): nothing to answer with
            raise errors.failed_precondition(
                "FAILED_PRECONDITION", "this checkout was withdrawn meanwhile; ask again"
            )
        return Intent.of(row), moved


def _withdraw(db: Database, intent: Intent) -> None:
    """The provider refused to create the intent's session, so none exists there and the same
    request would be refused again: the pending row goes (and with it its hold on the groups'
    slots, which the next checkout takes over), instead of being completed by every later
    checkout of its groups, and the sweeper, and failing them all with this refusal."""
    with db.transaction() as session:
        repository.delete_pending(session, intent.id, account_id=intent.account_id)


def _withdrawn(db: Database, intent: Intent) -> bool:
    with db.transaction(readonly=True) as session:
        return repository.checkout_by_id(session, intent.id, owner=intent.account_id) is None


def _retire(db: Database, provider: StripeProvider, holder: Intent) -> str:
    """Expire a live checkout at the provider (creating it first if it is still an intent, so
    its own late call finds it expired); the provider's status afterwards ("withdrawn" when the
    provider refused to create it: nothing to expire). A refused key is the holder's, not ours."""
    try:
        done = realise(db, provider, holder)
    except ParametersChanged as exc:
        raise blocked_by(f"another open checkout of this account ({holder.id})") from exc
    except errors.DomainError as exc:
        if exc.reason == REFUSED and _withdrawn(db, holder):
            return "withdrawn"
        raise
    assert done.stripe_id is not None
    remote = provider.expire_checkout_session(done.stripe_id)
    status = str(remote.get("status") or "expired")
    with db.transaction() as session:
        repository.mark_checkout(
            session,
            holder.id,
            account_id=holder.account_id,
            only_from=LIVE,
            status=status,
            payment_status=remote.get("payment_status") or "unpaid",
        )
    return status


def sweep_pending(
    db: Database, provider: StripeProvider, *, older_than: dt.timedelta = STALE_AFTER
) -> tuple[list[str], list[str], list[str]]:
    """The sweeper (`tollbooth reconcile`): complete every intent left `pending` (a crash or a
    timeout between the steps, and no retry since) with its own key and parameters, so the
    provider holds exactly the session a late retry will get back. (changes, failures, left
    alone), the rule of the payment-intent sweeper (`tollbooth.payments.intents`): an intent
    pending for longer than the provider keeps its idempotency key (`KEY_LIFETIME`, 24 h) is
    not sent again (a second session could be created: a possible double charge), nor is one
    whose account was archived since (the request path refuses the account, ACCOUNT_ARCHIVED,
    and so does the sweep), nor one whose key the provider refuses because the parameters
    changed since a first attempt used it (`ParametersChanged`: the account's provider
    customer, or a price's provider id, changed); they are logged and reported for an
    operator, on every run alike, not as failures. A change is
    reported by the run that made it: the answer is recorded only on a row still `pending`
    (a conditional update), and a run that finds it moved on meanwhile (another sweep, a
    client's retry, the provider's event) logs it as already done and reports nothing."""
    with db.transaction(readonly=True) as session:
        stale = [
            Intent.of(row)
            for row in repository.stale_pending(session, before=utcnow() - older_than, owner=None)
        ]
    changes: list[str] = []
    failures: list[str] = []
    left_alone: list[str] = []
    for intent in stale:
        # Checked before each call, not once.
        line = past_key_lifetime(f"checkout {intent.id}", intent.created_at, OURS, now=utcnow())
        if line is None and _archived(db, intent.account_id):
            line = (
                f"checkout {intent.id}: account {intent.account_id} is archived: not sent (a"
                f" first attempt may have created it at the provider); look it up by metadata"
                f" {OURS}"
            )
        if line is not None:
            log.warning("%s", line)
            left_alone.append(line)
            continue
        try:
            done, moved = _realised(db, provider, intent)
        except ParametersChanged:
            line = refused_line(f"checkout {intent.id}", OURS)
            log.warning("%s", line)
            left_alone.append(line)
            continue
        except errors.DomainError as exc:
            failures.append(f"checkout {intent.id}: {exc}")
            continue
        if not moved:
            log.info(
                "checkout %s: already %s (%s), done meanwhile by another run or request;"
                " nothing changed",
                intent.id,
                done.status,
                done.stripe_id,
            )
            continue
        changes.append(f"checkout {intent.id}: pending -> {done.status} ({done.stripe_id})")
    return changes, failures, left_alone


def _archived(db: Database, account_id: str) -> bool:
    """Whether the account is archived (the request path's rule, `require_active`)."""
    with db.transaction(readonly=True) as session:
        account = resolve(session, SERVICE, account_id)
    try:
        require_active(account)
    except errors.DomainError:
        return True
    return False


# -- the operations ---------------------------------------------------------------------------


def _planned(db: Database, caller: Caller, req: CheckoutRequest, origins: Sequence[str]) -> _Plan:
    """`_plan` in its own transaction; once more when a concurrent twin (the same request_id)
    recorded the same intent id first: the second plan reads it back (the same request is
    served by it, another one is IDEMPOTENCY_KEY_REUSED)."""
    for attempt in (1, 2):
        try:
            with db.transaction() as session:
                return _plan(session, caller, req, origins)
        except IntegrityError:
            if attempt == 2 or not req.request_id:
                raise
    raise AssertionError("unreachable")


def create_checkout(
    db: Database,
    provider: StripeProvider,
    caller: Caller,
    req: CheckoutRequest,
    origins: Sequence[str],
) -> CheckoutResult:
    plan = _planned(db, caller, req, origins)
    if plan.refusal is not None:
        raise plan.refusal
    if plan.portal_for:
        return _portal_instead(db, provider, caller, req, plan)
    if plan.reuse is not None:
        return _answer(db, realise(db, provider, plan.reuse))
    assert plan.ours is not None
    ours = plan.ours
    blockers = plan.blockers or []
    rounds = 0
    while blockers:
        rounds += 1
        if rounds > MAX_TAKEOVERS:
            raise _crowded()
        for group, holder in blockers:
            retired = _retire(db, provider, holder)
            if retired == "open":
                # The provider refused the expire and the session is still payable: handed
                # over, the account would hold two payable checkouts of one group.
                raise _still_open(holder)
            if retired == "complete":
                # Paid meanwhile: the group is taken; the answer is the portal (for a price
                # bought once, the refusal).
                with db.transaction() as session:
                    repository.delete_pending(session, ours.id, account_id=ours.account_id)
                if group.startswith(once.SLOT):
                    raise once.refused_by_slot(group)
                return _portal_instead(db, provider, caller, req, plan)
            with db.transaction() as session:
                repository.hand_over_slot(session, ours.account_id, group, holder.id, ours.id)
        with db.transaction() as session:
            own = repository.checkout_by_id(session, ours.id, owner=ours.account_id)
            assert own is not None
            prices = [session.get(Price, item["price_id"]) for item in own.items]
            blockers = _holders(session, own, [p for p in prices if p is not None])
    return _answer(db, realise(db, provider, ours))


def _answer(db: Database, intent: Intent) -> CheckoutResult:
    with db.transaction(readonly=True) as session:
        row = repository.checkout_by_id(session, intent.id, owner=intent.account_id)
        assert row is not None
        return CheckoutResult(next_action=NEXT_CHECKOUT, url=row.url or "", session=row)


def _portal_instead(
    db: Database, provider: StripeProvider, caller: Caller, req: CheckoutRequest, plan: _Plan
) -> CheckoutResult:
    portal = create_portal(
        db,
        provider,
        caller,
        account_ref=plan.account_id,
        return_url=plan.return_url or req.cancel_url or req.success_url,
        options=PortalOptions(),
        request_scope=req.request_scope,
        request_id=f"conflict:{req.request_id}" if req.request_id else "",
        origins=None,
    )
    return CheckoutResult(
        next_action=NEXT_PORTAL, url=portal.url, conflicting_subscription_id=plan.portal_for
    )
