"""Checkout rules: what can be bought, when the portal is the answer, what the account holds.

Services flush, never commit. Provider calls happen inside the RPC's transaction with
idempotency keys derived from the request_id, so a transaction that rolls back and is retried
gets the same provider objects back instead of new ones. State never changes here on a
redirect: subscriptions, purchases and grants are written only by webhook finalisation
(`tollbooth.checkout.fulfilment`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.orm import Session

from tollbooth import errors, paging
from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller
from tollbooth.checkout import repository, sync
from tollbooth.checkout.provider import StripeProvider, idempotency_key
from tollbooth.db.models import (
    BillingAccount,
    CheckoutSession,
    Price,
    Product,
    Purchase,
    Subscription,
)
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id

MAX_ITEMS = 20
MAX_QUANTITY = 999_999
# Stripe's client_reference_id holds at most 200 characters; longer references stay ours.
MAX_PROVIDER_REFERENCE = 200
NEXT_CHECKOUT = "checkout"
NEXT_PORTAL = "portal"

HINT_NONE = ""
HINT_BUY = "BUY"
HINT_MANAGE = "MANAGE"
HINT_CURRENT = "CURRENT"


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


@dataclass
class BillingStatusView:
    billing_account_id: str
    plan: str
    plan_price_id: str
    subscription: Subscription | None
    entitlements: list[tuple[str, str]] = field(default_factory=list)


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


def _group(price: Price) -> str:
    """Non-stackable recurring prices of one group conflict; a price without a group forms a
    group of its own (holding it twice is the conflict)."""
    return price.subscription_group or f"price:{price.id}"


def _holds_group(sub: Subscription) -> str | None:
    if sub.stackable:
        return None
    if sub.subscription_group:
        return sub.subscription_group
    return f"price:{sub.price_id}" if sub.price_id else None


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
        found = repository.active_price_by_lookup_key(session, key)
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
    repository.link_customer(session, account.id, customer["id"])
    session.refresh(account)
    assert account.stripe_customer_id is not None
    return account.stripe_customer_id


# -- checkout ---------------------------------------------------------------------------------


def conflict_for(session: Session, account_id: str, lines: list[_Line]) -> Subscription | None:
    """A live subscription that a requested non-stackable recurring price conflicts with."""
    wanted = {
        _group(ln.price): ln.price
        for ln in lines
        if ln.price.type == "recurring" and not ln.price.stackable
    }
    if not wanted:
        return None
    for sub in repository.live_subscriptions(session, account_id):
        group = _holds_group(sub)
        if group is not None and group in wanted:
            return sub
    return None


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
    account = resolve(session, caller, account_ref)
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
    row = repository.checkout_by_stripe_id(session, remote["id"])
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
        session.add(row)
        session.flush()
    return CheckoutResult(next_action=NEXT_CHECKOUT, url=row.url or "", session=row)


def get_checkout_session(session: Session, caller: Caller, checkout_id: str) -> CheckoutSession:
    """Another account's session answers exactly like one that does not exist."""
    ident = checkout_id.strip()
    if not ident:
        raise errors.required("checkout_session_id")
    row = repository.checkout_by_id(session, ident)
    if row is None or (caller.is_bearer and row.billing_account_id != caller.account_id):
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
        for price, product in repository.synced_recurring_prices(session):
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


# -- billing status and listings --------------------------------------------------------------

_PLAN_ORDER = {"active": 0, "trialing": 1, "past_due": 2, "unpaid": 3, "paused": 4}


def current_plan(subs: list[Subscription]) -> Subscription | None:
    """The plan: a non-stackable live subscription first, the healthiest, then the newest."""
    if not subs:
        return None
    return sorted(
        subs,
        key=lambda s: (s.stackable, _PLAN_ORDER.get(s.state, 9), -s.created_at.timestamp()),
    )[0]


def billing_status(session: Session, caller: Caller, account_ref: str) -> BillingStatusView:
    account = resolve(session, caller, account_ref)
    live = repository.live_subscriptions(session, account.id)
    plan = current_plan(live)
    held_price_ids = [s.price_id for s in live if s.price_id] + [
        p.price_id for p in repository.all_purchases(session, account.id) if p.price_id
    ]
    prices = repository.prices_by_ids(session, sorted(set(held_price_ids)))
    entitlements: list[tuple[str, str]] = []
    for price in prices.values():
        product = session.get(Product, price.product_id)
        for e in [*(product.entitlements if product else []), *(price.entitlements or [])]:
            pair = (str(e["feature"]), str(e.get("value", "")))
            if pair not in entitlements:
                entitlements.append(pair)
    return BillingStatusView(
        billing_account_id=account.id,
        plan=(plan.lookup_key or plan.price_id or plan.stripe_price_id or "unknown")
        if plan
        else "free",
        plan_price_id=(plan.price_id or "") if plan else "",
        subscription=plan,
        entitlements=entitlements,
    )


def _micros(at: dt.datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _page_after(token: str, query: str) -> tuple[dt.datetime, str] | None:
    key = paging.decode(token, query, (int, str))
    if key is None:
        return None
    micros, ident = key
    assert isinstance(micros, int) and isinstance(ident, str)
    try:
        at = dt.datetime.fromtimestamp(micros / 1_000_000, dt.UTC)
    except (OverflowError, ValueError, OSError) as exc:
        raise paging.bad_token() from exc
    return at, ident


def list_subscriptions(
    session: Session, caller: Caller, account_ref: str, page_size: int, page_token: str
) -> tuple[list[Subscription], str]:
    account = resolve(session, caller, account_ref)
    size = paging.page_size(page_size)
    query = f"subscriptions:{account.id}"
    rows = repository.list_subscriptions(
        session, account.id, _page_after(page_token, query), size + 1
    )
    return _paged(rows, size, query)


def list_purchases(
    session: Session, caller: Caller, account_ref: str, page_size: int, page_token: str
) -> tuple[list[Purchase], str]:
    account = resolve(session, caller, account_ref)
    size = paging.page_size(page_size)
    query = f"purchases:{account.id}"
    rows = repository.list_purchases(session, account.id, _page_after(page_token, query), size + 1)
    return _paged(rows, size, query)


def _paged(rows: list[Any], size: int, query: str) -> tuple[list[Any], str]:
    if len(rows) <= size:
        return rows, ""
    items = rows[:size]
    last = items[-1]
    return items, paging.encode(query, [_micros(last.created_at), last.id])


# -- catalog hints ----------------------------------------------------------------------------


def purchase_hints(session: Session, caller: Caller, prices: Sequence[Price]) -> list[str]:
    """Per price, for a bearer caller: CURRENT when the account holds it, MANAGE when it holds
    a conflicting subscription (the portal is the way to change), else BUY."""
    if not caller.is_bearer or not caller.account_id:
        return [HINT_NONE for _ in prices]
    live = repository.live_subscriptions(session, caller.account_id)
    held = {s.price_id for s in live if s.price_id}
    groups = {g for g in (_holds_group(s) for s in live) if g is not None}
    hints = []
    for price in prices:
        if price.id in held:
            hints.append(HINT_CURRENT)
        elif price.type == "recurring" and not price.stackable and _group(price) in groups:
            hints.append(HINT_MANAGE)
        else:
            hints.append(HINT_BUY)
    return hints


def _from_unix(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    return dt.datetime.fromtimestamp(int(value), dt.UTC)
