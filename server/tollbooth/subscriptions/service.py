"""Subscription rules: the plan an account is on, what it holds, and what it may buy.

State never changes here: subscriptions and purchases are written only by the provider's
events (`tollbooth.subscriptions.effects`, `tollbooth.checkout.fulfilment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.accounts.customers import SubscriptionSummary
from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller
from tollbooth.catalog import repository as catalog
from tollbooth.db.models import Price, Product, Purchase, Subscription
from tollbooth.db.subscription_items import SubscriptionItem
from tollbooth.paging import Keyset, Micros, Text
from tollbooth.subscriptions import repository

HINT_NONE = ""
HINT_BUY = "BUY"
HINT_MANAGE = "MANAGE"
HINT_CURRENT = "CURRENT"


@dataclass
class BillingStatusView:
    billing_account_id: str
    plan: str
    plan_price_id: str
    subscription: Subscription | None
    entitlements: list[tuple[str, str]] = field(default_factory=list)


# -- conflicts --------------------------------------------------------------------------------


def price_group(price: Price) -> str:
    """Non-stackable recurring prices of one group conflict; a price without a group forms a
    group of its own (holding it twice is the conflict)."""
    return price.subscription_group or f"price:{price.id}"


def held_groups(session: Session, subs: Sequence[Subscription]) -> dict[str, set[str]]:
    """The groups each subscription holds (by its id): one per non-stackable recurring item."""
    out: dict[str, set[str]] = {}
    for ident, items in repository.items_of(session, [s.id for s in subs]).items():
        out[ident] = {
            item.subscription_group or f"price:{item.price_id}"
            for item in items
            if not item.stackable and (item.subscription_group or item.price_id)
        }
    return out


def conflicting_subscription(
    session: Session, account_id: str, prices: Sequence[Price]
) -> Subscription | None:
    """A live subscription that a requested non-stackable recurring price conflicts with."""
    wanted = {
        price_group(price): price
        for price in prices
        if price.type == "recurring" and not price.stackable
    }
    if not wanted:
        return None
    live = repository.live_subscriptions(session, account_id)
    groups = held_groups(session, live)
    for sub in live:
        if groups[sub.id] & wanted.keys():
            return sub
    return None


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
    held_price_ids = [h.price_id for h in repository.held_prices(session, account.id)]
    prices = catalog.prices_by_ids(session, sorted(set(held_price_ids)))
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


def _newest_first(query: str, page_size: int) -> Keyset[Any]:
    """Subscriptions and purchases page newest first: (created_at, id), descending."""
    return Keyset.of(query, (Micros(), Text()), lambda r: (r.created_at, r.id), page_size)


def list_subscriptions(
    session: Session, caller: Caller, account_ref: str, page_size: int, page_token: str
) -> tuple[list[Subscription], str]:
    account = resolve(session, caller, account_ref)
    keyset = _newest_first(f"subscriptions:{account.id}", page_size)
    rows = repository.list_subscriptions(
        session, account.id, after=keyset.after(page_token), limit=keyset.limit
    )
    page = keyset.page(rows)
    return page.items, page.next_page_token


def items_of(session: Session, subs: Sequence[Subscription]) -> dict[str, list[SubscriptionItem]]:
    """Every recurring item of each subscription (by its id), in the provider's order."""
    return repository.items_of(session, [s.id for s in subs])


def list_purchases(
    session: Session, caller: Caller, account_ref: str, page_size: int, page_token: str
) -> tuple[list[Purchase], str]:
    account = resolve(session, caller, account_ref)
    keyset = _newest_first(f"purchases:{account.id}", page_size)
    rows = repository.list_purchases(
        session, account.id, after=keyset.after(page_token), limit=keyset.limit
    )
    page = keyset.page(rows)
    return page.items, page.next_page_token


# -- catalog hints ----------------------------------------------------------------------------


def purchase_hints(session: Session, caller: Caller, prices: Sequence[Price]) -> list[str]:
    """Per price, for a bearer caller:

    - CURRENT: the account holds this non-stackable price (a live subscription to it, or a
      one-time purchase of it);
    - MANAGE: it is a non-stackable recurring price of a group in which the account holds a
      live subscription (checkout would answer with the portal: change the plan there);
    - BUY: anything else, including a stackable price already held (buy more).

    Service callers get no hint (""). The catalog servicer is handed this function at
    assembly (`tollbooth.app`)."""
    if not caller.is_bearer or not caller.account_id:
        return [HINT_NONE for _ in prices]
    live = repository.live_subscriptions(session, caller.account_id)
    held = {h.price_id for h in repository.held_prices(session, caller.account_id)}
    groups = set().union(*held_groups(session, live).values())
    hints = []
    for price in prices:
        if price.id in held and not price.stackable:
            hints.append(HINT_CURRENT)
        elif price.type == "recurring" and not price.stackable and price_group(price) in groups:
            hints.append(HINT_MANAGE)
        else:
            hints.append(HINT_BUY)
    return hints


# -- seed 003's subscription status -----------------------------------------------------------


def status_of_accounts(session: Session, account_ids: Sequence[str]) -> SubscriptionSummary | None:
    """The subscription seed 003's status-by-e-mail shows: the first of the accounts (oldest
    first) holding a live one, else the newest subscription of any of them; None if none."""
    found = [s for s in (repository.status_subscription(session, a) for a in account_ids) if s]
    if not found:
        return None
    live = [s for s in found if s.state in repository.LIVE_STATES]
    sub = live[0] if live else max(found, key=lambda s: (s.created_at, s.id))
    price = catalog.get_price(session, sub.price_id) if sub.price_id else None
    product = catalog.get_product(session, price.product_id) if price is not None else None
    return SubscriptionSummary(
        id=sub.id,
        plan_id=sub.price_id or sub.stripe_price_id or "",
        status=sub.state,
        current_period_end=sub.current_period_end,
        stripe_subscription_id=sub.stripe_subscription_id,
        cancel_at_period_end=sub.cancel_at_period_end,
        plan_name=product.name if product is not None else (sub.lookup_key or ""),
        account_id=sub.billing_account_id,
    )
