"""Checkout rules: what can be bought, and when the portal is the answer.

Services flush, never commit. Provider calls happen inside the RPC's transaction with
idempotency keys derived from the request_id, so a transaction that rolls back and is retried
gets the same provider objects back instead of new ones. State never changes here on a
redirect: subscriptions, purchases and grants are written only by webhook finalisation
(`tollbooth.checkout.fulfilment`, `tollbooth.subscriptions.effects`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.service import owner, require_active, resolve
from tollbooth.auth.caller import Caller
from tollbooth.catalog import repository as catalog
from tollbooth.checkout import repository
from tollbooth.db.models import BillingAccount, CheckoutSession, Price, Product, Subscription
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id
from tollbooth.provider import repository as links
from tollbooth.provider import sync
from tollbooth.provider.client import StripeProvider
from tollbooth.provider.keys import idempotency_key
from tollbooth.subscriptions.service import conflicting_subscription

MAX_ITEMS = 20
MAX_QUANTITY = 999_999
# Stripe's client_reference_id holds at most 200 characters; longer references stay ours.
MAX_PROVIDER_REFERENCE = 200
NEXT_CHECKOUT = "checkout"
NEXT_PORTAL = "portal"


@dataclass(frozen=True)
class ItemRequest:
    """One requested line: a price id or a lookup key (exactly one), and a quantity."""

    catalog_price_id: str = ""
    lookup_key: str = ""
    quantity: int = 0
    which: str | None = None


@dataclass(frozen=True)
class PortalOptions:
    allow_cancel: bool = True
    show_invoices: bool = True
    allow_payment_method_update: bool = True
    allow_plan_change: bool = True


@dataclass
class CheckoutResult:
    next_action: str
    url: str
    session: CheckoutSession | None = None
    conflicting_subscription_id: str = ""


@dataclass
class PortalResult:
    portal_session_id: str
    url: str
    return_url: str
    created: dt.datetime


# -- validation -----------------------------------------------------------------------------


def clean_url(value: str, field_name: str, *, required: bool) -> str:
    value = value.strip()
    if not value:
        if required:
            raise errors.required(field_name)
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise errors.invalid(f"{field_name} must be an http(s) URL", field=field_name)
    return value


def _resolve_item(session: Session, item: ItemRequest, index: int) -> Price:
    name = f"items[{index}]"
    if item.which == "catalog_price_id":
        ident = item.catalog_price_id.strip()
        if not ident:
            raise errors.required(f"{name}.catalog_price_id")
        price = session.get(Price, ident)
        if price is None:
            raise errors.invalid(
                f"{name}: price {errors.shown(ident)} does not exist",
                reason="PRICE_NOT_FOUND",
                field=f"{name}.catalog_price_id",
            )
    elif item.which == "lookup_key":
        key = item.lookup_key.strip()
        if not key:
            raise errors.required(f"{name}.lookup_key")
        found = catalog.active_price_with_lookup_key(session, key)
        if found is None:
            raise errors.invalid(
                f"{name}: no active price has lookup_key {errors.shown(key)}",
                reason="PRICE_NOT_FOUND",
                field=f"{name}.lookup_key",
            )
        price = found
    else:
        raise errors.required(f"{name}.catalog_price_id or {name}.lookup_key")
    product = session.get(Product, price.product_id)
    if not price.active or product is None or not product.active:
        raise errors.failed_precondition(
            "ARCHIVED", f"{name}: price {price.id!r} is archived", price_id=price.id
        )
    return price


@dataclass
class _Line:
    price: Price
    quantity: int


def resolve_items(session: Session, items: Sequence[ItemRequest]) -> list[_Line]:
    if not items:
        raise errors.required("items")
    if len(items) > MAX_ITEMS:
        raise errors.invalid(f"at most {MAX_ITEMS} items per checkout", field="items")
    lines: list[_Line] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.quantity < 0 or item.quantity > MAX_QUANTITY:
            raise errors.invalid(
                f"items[{i}].quantity must be between 1 and {MAX_QUANTITY}",
                field=f"items[{i}].quantity",
            )
        price = _resolve_item(session, item, i)
        if price.id in seen:
            raise errors.invalid(
                f"items[{i}]: price {price.id!r} is listed twice; use quantity",
                field=f"items[{i}]",
            )
        seen.add(price.id)
        lines.append(_Line(price, item.quantity or 1))
    if len({ln.price.currency for ln in lines}) > 1:
        raise errors.invalid("all items of a checkout must share one currency", field="items")
    cadences = {
        (ln.price.interval, ln.price.interval_count or 1)
        for ln in lines
        if ln.price.type == "recurring"
    }
    if len(cadences) > 1:
        raise errors.invalid(
            "recurring items of one checkout must share one billing interval", field="items"
        )
    return lines


# -- customers --------------------------------------------------------------------------------


def ensure_customer(session: Session, provider: StripeProvider, account: BillingAccount) -> str:
    """The account's provider customer, created on first need with the account id in its
    metadata. Concurrent first calls get one customer (idempotency key = the account)."""
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = provider.create_customer(account.id, email=account.email, name=account.name)
    links.link_customer(session, account.id, customer["id"])
    session.refresh(account)
    assert account.stripe_customer_id is not None
    return account.stripe_customer_id


# -- checkout ---------------------------------------------------------------------------------


def conflict_for(session: Session, account_id: str, lines: list[_Line]) -> Subscription | None:
    """A live subscription that a requested non-stackable recurring price conflicts with."""
    return conflicting_subscription(session, account_id, [ln.price for ln in lines])


def create_checkout_session(
    session: Session,
    provider: StripeProvider,
    caller: Caller,
    *,
    account_ref: str,
    items: Sequence[ItemRequest],
    success_url: str,
    cancel_url: str,
    client_reference: str,
    request_scope: str,
    request_id: str,
) -> CheckoutResult:
    account = require_active(resolve(session, caller, account_ref))
    success = clean_url(success_url, "success_url", required=True)
    cancel = clean_url(cancel_url, "cancel_url", required=False)
    reference = client_reference.strip()
    lines = resolve_items(session, items)
    conflict = conflict_for(session, account.id, lines)
    if conflict is not None:
        portal = create_portal_session(
            session,
            provider,
            caller,
            account_ref=account.id,
            return_url=cancel or success,
            options=PortalOptions(),
            request_scope=request_scope,
            request_id=f"conflict:{request_id}" if request_id else "",
        )
        return CheckoutResult(
            next_action=NEXT_PORTAL, url=portal.url, conflicting_subscription_id=conflict.id
        )
    customer = ensure_customer(session, provider, account)
    mode = "subscription" if any(ln.price.type == "recurring" for ln in lines) else "payment"
    ours = new_id("chk")
    line_items = [
        {"price": sync.ensure_price_synced(session, provider, ln.price), "quantity": ln.quantity}
        for ln in lines
    ]
    metadata = {"billing_account_id": account.id, "tollbooth_checkout_id": ours}
    params: dict[str, Any] = {
        "mode": mode,
        "customer": customer,
        "line_items": line_items,
        "success_url": success,
        "metadata": metadata,
    }
    if cancel:
        params["cancel_url"] = cancel
    if reference and len(reference) <= MAX_PROVIDER_REFERENCE:
        params["client_reference_id"] = reference
    if mode == "subscription":
        params["subscription_data"] = {"metadata": {"billing_account_id": account.id}}
    key = idempotency_key("checkout", request_scope, account.id, request_id) if request_id else None
    remote = provider.create_checkout_session(params, idempotency=key)
    now = utcnow()
    row = repository.checkout_by_stripe_id(session, remote["id"], owner=account.id)
    if row is None:
        row = CheckoutSession(
            id=ours,
            billing_account_id=account.id,
            stripe_checkout_session_id=remote["id"],
            status=remote.get("status") or "open",
            payment_status=remote.get("payment_status") or "unpaid",
            mode=mode,
            url=remote.get("url"),
            items=[
                {
                    "price_id": ln.price.id,
                    "lookup_key": ln.price.lookup_key or "",
                    "quantity": ln.quantity,
                    "stripe_price_id": ln.price.stripe_price_id,
                }
                for ln in lines
            ],
            amount_total=int(remote.get("amount_total") or 0),
            currency=str(remote.get("currency") or lines[0].price.currency),
            client_reference=reference,
            expires_at=_from_unix(remote.get("expires_at")),
            created_at=now,
            updated_at=now,
        )
        repository.add_checkout(session, row)
    return CheckoutResult(next_action=NEXT_CHECKOUT, url=row.url or "", session=row)


def get_checkout_session(session: Session, caller: Caller, checkout_id: str) -> CheckoutSession:
    """Another account's session answers exactly like one that does not exist."""
    ident = checkout_id.strip()
    if not ident:
        raise errors.required("checkout_session_id")
    row = repository.checkout_by_id(session, ident, owner=owner(caller))
    if row is None:
        raise errors.not_found("checkout session", ident)
    return row


def effective_status(row: CheckoutSession, now: dt.datetime) -> str:
    """An open session past its expiry is expired, even before the provider says so."""
    if row.status == "open" and row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return row.status


# -- portal -----------------------------------------------------------------------------------


def portal_features(session: Session, options: PortalOptions) -> dict[str, Any]:
    """Portal options mapped to a provider portal configuration's features."""
    features: dict[str, Any] = {
        "invoice_history": {"enabled": options.show_invoices},
        "payment_method_update": {"enabled": options.allow_payment_method_update},
        "customer_update": {
            "enabled": options.allow_payment_method_update,
            "allowed_updates": ["email", "address", "name"]
            if options.allow_payment_method_update
            else [],
        },
        "subscription_cancel": {
            "enabled": options.allow_cancel,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
    }
    products: dict[str, list[str]] = {}
    if options.allow_plan_change:
        for price, product in links.synced_recurring_prices(session):
            assert product.stripe_product_id and price.stripe_price_id
            products.setdefault(product.stripe_product_id, []).append(price.stripe_price_id)
    features["subscription_update"] = (
        {
            "enabled": True,
            "default_allowed_updates": ["price"],
            "proration_behavior": "none",
            "products": [{"product": p, "prices": ids} for p, ids in products.items()],
        }
        if products
        else {"enabled": False}
    )
    return features


def create_portal_session(
    session: Session,
    provider: StripeProvider,
    caller: Caller,
    *,
    account_ref: str,
    return_url: str,
    options: PortalOptions,
    request_scope: str,
    request_id: str,
) -> PortalResult:
    account = resolve(session, caller, account_ref)
    back = clean_url(return_url, "return_url", required=True)
    if not account.stripe_customer_id:
        raise errors.failed_precondition(
            "ACCOUNT_NOT_BILLED",
            "this account has never been billed: there is nothing to manage yet",
            billing_account_id=account.id,
        )
    configuration = provider.portal_configuration(portal_features(session, options))
    key = idempotency_key("portal", request_scope, account.id, request_id) if request_id else None
    remote = provider.create_portal_session(
        account.stripe_customer_id, back, configuration, idempotency=key
    )
    return PortalResult(
        portal_session_id=remote["id"],
        url=remote["url"],
        return_url=remote.get("return_url") or back,
        created=_from_unix(remote.get("created")) or utcnow(),
    )


def _from_unix(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    return dt.datetime.fromtimestamp(int(value), dt.UTC)
