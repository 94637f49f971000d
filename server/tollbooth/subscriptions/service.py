"""Subscription rules: the plan an account is on, what it holds, and what it may buy.

State never changes here: subscriptions and purchases are written only by the provider's
events (`tollbooth.subscriptions.effects`, `tollbooth.checkout.fulfilment`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.customers import SubscriptionSummary
from tollbooth.accounts.refs import AccountRefs
from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller
from tollbooth.catalog import repository as catalog
from tollbooth.db import Database
from tollbooth.db.models import Price, Purchase, Subscription
from tollbooth.db.subscription_items import SubscriptionItem
from tollbooth.db.types import utcnow
from tollbooth.db.versions import Versions
from tollbooth.paging import Keyset, Micros, Text
from tollbooth.subscriptions import holdings, repository
from tollbooth.subscriptions.holdings import AccountHoldings, Holdings

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


def bought_once(price: Price) -> bool:
    """A non-stackable one-time price: an account that holds it (a purchase of it not refunded
    in full) is not sold it again (`tollbooth.checkout.once`)."""
    return price.type != "recurring" and not price.stackable


def held_once(
    session: Session, account_id: str, prices: Sequence[Price], *, besides: str | None = None
) -> Price | None:
    """The first of `prices` that is bought once and that the account holds already (by a
    purchase not made by checkout `besides`)."""
    once = [p for p in prices if bought_once(p)]
    have = repository.held_purchased(session, account_id, [p.id for p in once], besides=besides)
    return next((p for p in once if p.id in have), None)


def held_besides_intent(
    session: Session, account_id: str, price: Price, intent_id: str
) -> Purchase | None:
    """The purchase by which the account holds `price`, bought once, other than the one
    payment intent `intent_id` made (`tollbooth.payments.guard`); None for other prices."""
    if not bought_once(price):
        return None
    return repository.holding_purchase(session, account_id, price.id, besides_intent=intent_id)


def already_purchased(price_id: str) -> errors.DomainError:
    """The refusal of a checkout or payment intent buying a price `held_once`."""
    return errors.failed_precondition(
        "PRICE_ALREADY_PURCHASED",
        f"the account already holds price {price_id!r}: a one-time price that is not stackable"
        " is bought once (until a full refund of it)",
        price_id=price_id,
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


def status_of(kept: AccountHoldings, now: dt.datetime) -> BillingStatusView:
    """The billing status at `now` of the account whose holdings these are: its plan, and every
    entitlement its held prices and their products grant (product's first), by price id."""
    held = kept.at(now)
    plan = current_plan(list(held.live))
    by_price = {row.holding.price_id: row for row in held.held if row.holding.grants_at(now)}
    entitlements: list[tuple[str, str]] = []
    for price_id in sorted(by_price):
        row = by_price[price_id]
        for e in [*row.product_entitlements, *row.price_entitlements]:
            pair = (str(e["feature"]), str(e.get("value", "")))
            if pair not in entitlements:
                entitlements.append(pair)
    return BillingStatusView(
        billing_account_id=held.account_id,
        plan=(plan.lookup_key or plan.price_id or plan.stripe_price_id or "unknown")
        if plan
        else "free",
        plan_price_id=(plan.price_id or "") if plan else "",
        subscription=plan,
        entitlements=entitlements,
    )


def billing_status_from_memory(
    accounts: AccountRefs, kept: Holdings, caller: Caller, account_ref: str
) -> BillingStatusView | None:
    """The status from memory when the account was resolved and its holdings are kept at
    the current versions (one statement: every change committed before the call is in);
    else None (`billing_status` reads)."""
    account_id = accounts.known(caller, account_ref)
    held = kept.current(account_id) if account_id is not None else None
    return status_of(held, utcnow()) if held is not None else None


def billing_status(
    session: Session, accounts: AccountRefs, kept: Holdings, caller: Caller, account_ref: str
) -> BillingStatusView:
    now = utcnow()
    account_id = accounts.account_id(session, caller, account_ref)
    return status_of(kept.get(session, account_id, now, fresh=True), now)


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


def purchase_hints(
    db: Database, caller: Caller, prices: Sequence[Price], seen: Versions | None = None
) -> list[str]:
    """Per price, for a bearer caller:

    - CURRENT: the account holds this non-stackable price (a live subscription to it, or a
      one-time purchase of it);
    - MANAGE: it is a non-stackable recurring price of a group in which the account holds a
      live subscription (checkout would answer with the portal: change the plan there);
    - BUY: anything else, including a stackable price already held (buy more).

    Service callers get no hint (""). What the account holds comes from the process's memory
    (`tollbooth.subscriptions.holdings`) when kept at the current versions (`seen`: read by
    the listing at its start), else from one read-only transaction. The catalog servicer is
    handed this function at assembly (`tollbooth.app`)."""
    if not caller.is_bearer or not caller.account_id:
        return [HINT_NONE for _ in prices]
    kept = holdings.of(db)
    now = utcnow()
    held = kept.current(caller.account_id, seen)
    if held is None:
        with db.transaction(readonly=True) as session:
            held = kept.get(session, caller.account_id, now, fresh=True)
    return hints_of(held, prices, now)


def hints_of(kept: AccountHoldings, prices: Sequence[Price], now: dt.datetime) -> list[str]:
    """`purchase_hints` from what the account holds at `now` (an `unpaid` or `paused`
    subscription is held: the portal is where it is paid or resumed)."""
    held = kept.at(now)
    price_ids = {row.holding.price_id for row in held.held}
    groups = held.groups
    hints = []
    for price in prices:
        if price.id in price_ids and not price.stackable:
            hints.append(HINT_CURRENT)
        elif price.type == "recurring" and not price.stackable and price_group(price) in groups:
            hints.append(HINT_MANAGE)
        else:
            hints.append(HINT_BUY)
    return hints


# -- seed 003's subscription status -----------------------------------------------------------


def status_of_accounts(session: Session, account_ids: Sequence[str]) -> SubscriptionSummary | None:
    """The subscription seed 003's status-by-e-mail shows: the newest live one of the first
    of the accounts (oldest first) holding one; None when none does (seed 003: "subscription:
    null if the customer has no active subscription", so a canceled one is not shown)."""
    live = [subs[0] for a in account_ids if (subs := repository.live_subscriptions(session, a))]
    if not live:
        return None
    sub = live[0]
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
        cancel_at=sub.cancel_at,
    )
