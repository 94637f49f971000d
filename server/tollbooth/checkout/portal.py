"""The customer portal: a provider portal session for an account's customer, with a
configuration mapped from the request's options (`service.portal_features`).

No provider call runs inside a transaction: the account is checked and the offer read in
one, the offer's prices synced and the session created with none open.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.repository import customer_gone
from tollbooth.accounts.service import resolve, resolve_by_customer
from tollbooth.auth.caller import Caller
from tollbooth.checkout.redirects import check_redirect
from tollbooth.checkout.service import (
    PortalOptions,
    PortalResult,
    from_unix,
    portal_features,
    unsynced_offer,
)
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.provider import sync
from tollbooth.provider.client import StripeProvider
from tollbooth.provider.keys import idempotency_key
from tollbooth.subscriptions.repository import ever_billed


def create_portal(
    db: Database,
    provider: StripeProvider,
    caller: Caller,
    *,
    account_ref: str,
    return_url: str,
    options: PortalOptions,
    customer: str = "",
    also_named: str = "",
    request_scope: str,
    request_id: str,
    origins: Sequence[str] | None,
    require_billed: bool = False,
) -> PortalResult:
    """A portal session: checked and read in one transaction, created with none open. The
    plans it offers (every active price of the groups the account holds) are synced to the
    provider first, each with no transaction open: one never bought by anyone had no provider
    price yet, and the portal left it out. The idempotency key covers what the parameters
    derive from (request and configuration).

    Without a return_url (seed 002's request has no body) the portal leads back to the first
    allowed origin, the configured home of the app. `also_named` is a second name of the
    account (seed 001's `accountId` beside `account`), which must name the same one. The
    return_url is checked (`redirects.check_redirect`) on `origins` for a bearer token alone;
    a call carrying the service key may name any http(s) origin; `origins` None: checked
    already (a checkout's own URL).

    `require_billed` (CreatePortalSession): the account must have a subscription or a paid
    purchase, not only a provider customer (ACCOUNT_NOT_BILLED). A checkout answering with the
    portal instead has established that the account holds the group (perhaps paid at the
    provider before its webhook arrived) and passes False."""
    if not return_url.strip() and origins:
        return_url = f"{origins[0]}/"
    with db.transaction() as session:
        if also_named:
            same_account(session, caller, account_ref, also_named)
        account = resolve_by_customer(session, caller, account_ref, customer)
        if customer_gone(session, account):
            # DeleteCustomer deleted it (or its Stripe call is still to finish): answered as
            # GetCustomer answers it, and Stripe is not asked for a portal it cannot open.
            raise errors.not_found("customer", account.stripe_customer_id or account.id)
        back = (
            check_redirect(
                return_url, "return_url", origins, required=True, any_origin=caller.from_backend
            )
            if origins is not None
            else return_url.strip()
        )
        # A customer alone is not enough: a checkout left unpaid (or CreateCustomer) made
        # one, and its portal would manage nothing.
        billed = not require_billed or ever_billed(session, account.id)
        if not account.stripe_customer_id or not billed:
            raise errors.failed_precondition(
                "ACCOUNT_NOT_BILLED",
                "this account has never been billed: there is nothing to manage yet",
                billing_account_id=account.id,
            )
        customer, account_id = account.stripe_customer_id, account.id
        unsynced = unsynced_offer(session, account_id) if options.allow_plan_change else []
    for price_id in unsynced:  # no transaction open
        sync.ensure_price_synced(db, provider, price_id)
    with db.transaction(readonly=True) as session:
        features = portal_features(session, options, account_id)
    configuration = provider.portal_configuration(features)
    key = (
        idempotency_key("portal", request_scope, account_id, request_id, configuration, back)
        if request_id
        else None
    )
    remote = provider.create_portal_session(customer, back, configuration, idempotency=key)
    return PortalResult(
        portal_session_id=remote["id"],
        url=remote["url"],
        return_url=remote.get("return_url") or back,
        created=from_unix(remote.get("created")) or utcnow(),
    )


def same_account(session: Session, caller: Caller, named: str, other: str) -> None:
    """Refuse two names (`account`, seed 001's `accountId`) that are not of one account
    (FIELD_INVALID, whether either exists or not, before anything else is said of them); an
    id and its alias are one account."""

    def found(ref: str) -> str | None:
        try:
            return resolve(session, caller, ref).id
        except errors.DomainError as exc:
            if exc.kind is not errors.Kind.NOT_FOUND:
                raise
            return None

    first = found(named)
    if first is None or first != found(other):
        raise errors.invalid(
            "account and accountId name different accounts; send one",
            reason="FIELD_INVALID",
            field="account_id",
        )
