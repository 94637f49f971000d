"""Checkout rules: what can be bought, what the portal shows, how a session reads.

Services flush, never commit, and never call the provider: the steps that do
(`tollbooth.checkout.intents`) call it between transactions. State never changes here on a
redirect: subscriptions, purchases and grants are written only by webhook finalisation
(`tollbooth.checkout.fulfilment`, `tollbooth.subscriptions.effects`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import amounts, errors
from tollbooth.accounts.service import owner
from tollbooth.auth.caller import Caller
from tollbooth.catalog import repository as catalog
from tollbooth.catalog.fields import clean_currency, provider_amount_refusal
from tollbooth.checkout import repository
from tollbooth.currencies import MIN_CHARGE
from tollbooth.currencies import known as held_currency
from tollbooth.db.models import CheckoutSession, Price, Product
from tollbooth.provider import repository as links
from tollbooth.subscriptions import repository as subscriptions

log = logging.getLogger(__name__)

MAX_ITEMS = 20
MAX_QUANTITY = 999_999
# The provider's limit on an amount it charges: eight digits of minor units.
MAX_TOTAL = 99_999_999
# Stripe's client_reference_id holds at most 200 characters; longer references stay ours.
MAX_PROVIDER_REFERENCE = 200
NEXT_CHECKOUT = "checkout"
NEXT_PORTAL = "portal"
MODES = ("payment", "subscription", "setup")


@dataclass(frozen=True)
class ItemRequest:
    """One requested line: a price id or a lookup key (exactly one), and a quantity; or, in
    seed 003's form (`which == "price"`), `price`: a provider price id, a catalog price id or
    a lookup key."""

    catalog_price_id: str = ""
    lookup_key: str = ""
    quantity: int = 0
    which: str | None = None
    price: str = ""
    # The body's own name for this line when it is not `items[i]` / `line_items[i]`: seed
    # 002's `tier` (a lookup key), so an error names the field the caller sent.
    label: str = ""


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


def where(item: ItemRequest, index: int) -> str:
    """The line as the body named it: `tier`, `items[i]` or `line_items[i]`."""
    return item.label or f"{'line_items' if item.which == 'price' else 'items'}[{index}]"


def _resolve_item(session: Session, item: ItemRequest, index: int) -> Price:
    name = where(item, index)
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
                field=name if item.label else f"{name}.lookup_key",
            )
        price = found
    elif item.which == "price":
        price = _seed_price(session, item.price.strip(), index)
    else:
        raise errors.required(f"{name}.catalog_price_id or {name}.lookup_key")
    product = session.get(Product, price.product_id)
    if not price.active or product is None or not product.active:
        raise errors.failed_precondition(
            "ARCHIVED", f"{name}: price {price.id!r} is archived", price_id=price.id
        )
    return price


def _seed_price(session: Session, ident: str, index: int) -> Price:
    """Seed 003's `line_items[].price`: our catalog price id, the provider's price id stored
    for a catalog price, or the lookup key of an active price (in that order)."""
    name = f"line_items[{index}].price"
    if not ident:
        raise errors.required(name)
    found = (
        session.get(Price, ident)
        or links.price_by_stripe_id(session, ident)
        or catalog.active_price_with_lookup_key(session, ident)
    )
    if found is None:
        raise errors.invalid(
            f"{name}: price {errors.shown(ident)} is not in the catalog",
            reason="PRICE_NOT_FOUND",
            field=name,
        )
    return found


@dataclass
class _Line:
    price: Price
    quantity: int


DEFAULT_OFFER_VARIABLE = "BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY"


def default_offer(session: Session, lookup_key: str) -> list[_Line]:
    """What a checkout naming no items sells (seed 001's body names none): one of the active
    price whose lookup key BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY names. Unset, `items` is
    required; set to a key no active price has, the offer is PRICE_NOT_FOUND."""
    key = lookup_key.strip()
    if not key:
        raise errors.DomainError(
            errors.Kind.INVALID_ARGUMENT,
            "FIELD_REQUIRED",
            "items (or line_items) is required: name what to buy, or have the operator set"
            f" {DEFAULT_OFFER_VARIABLE} to the lookup_key of the price a checkout without"
            " items sells",
            field="items",
        )
    price = catalog.active_price_with_lookup_key(session, key)
    product = session.get(Product, price.product_id) if price is not None else None
    if price is None or product is None or not product.active:
        raise errors.invalid(
            f"no items were given and the default offer ({DEFAULT_OFFER_VARIABLE}="
            f"{errors.shown(key)}) is not an active price of the catalog",
            reason="PRICE_NOT_FOUND",
            field="items",
        )
    return [_Line(price, 1)]


def check_currency(requested: str, lines: Sequence[_Line]) -> str:
    """Seed 001's `currency`: an ISO 4217 code (CURRENCY_INVALID) that the checkout's prices
    are in (FIELD_INVALID otherwise). A checkout of no prices (setup mode) has nothing to
    compare it with: it is its session's currency, returned (lower case); else empty."""
    if not requested.strip():
        return ""
    code = clean_currency(requested)
    if not lines:
        return code
    actual = lines[0].price.currency
    if code != actual:
        raise errors.invalid(
            f"currency is {code.upper()} but the checkout's prices are in {actual.upper()}",
            reason="FIELD_INVALID",
            field="currency",
        )
    return ""


def setup_currency(session: Session) -> str:
    """Setup mode's currency when none is asked for (the provider chooses payment methods by
    it): the catalog's most common among active prices the provider can be paid in (not one
    stored in IQD before CreatePrice refused it); usd for an empty catalog."""
    currencies = Counter(
        p.currency for p in catalog.all_active_prices(session) if held_currency(p.currency)
    )
    return currencies.most_common(1)[0][0] if currencies else "usd"


def resolve_items(session: Session, items: Sequence[ItemRequest]) -> list[_Line]:
    if not items:
        raise errors.required("items or line_items")
    # The list as the body named it: seed 003's `line_items`, else `items`.
    listed = "line_items" if items[0].which == "price" else "items"
    if len(items) > MAX_ITEMS:
        raise errors.invalid(f"at most {MAX_ITEMS} items per checkout", field=listed)
    lines: list[_Line] = []
    seen: set[str] = set()
    granted: dict[str, Decimal] = {}
    for i, item in enumerate(items):
        line = where(item, i)  # as the body said
        if item.quantity < 0 or item.quantity > MAX_QUANTITY:
            raise errors.invalid(
                f"{line}.quantity must be between 1 and {MAX_QUANTITY}",
                field=f"{line}.quantity",
            )
        price = _resolve_item(session, item, i)
        if price.id in seen:
            raise errors.invalid(
                f"{line}: price {price.id!r} is listed twice; use quantity",
                field=line,
            )
        seen.add(price.id)
        # CreatePrice refuses such a price; one stored before that rule is refused here, before
        # an intent is recorded, rather than by the provider after.
        if refusal := provider_amount_refusal(price.unit_amount, price.currency):
            raise errors.invalid(
                f"{line}: price {price.id!r}'s unit_amount: {refusal}",
                reason="CHECKOUT_AMOUNT_INVALID",
                field=line,
            )
        lines.append(_Line(price, item.quantity or 1))
        amounts.add_grants(granted, price.credit_grants or [], item.quantity or 1, line)
    if sum(ln.price.unit_amount * ln.quantity for ln in lines) > MAX_TOTAL:
        raise errors.invalid(
            f"the checkout's total is over {MAX_TOTAL} minor units (each item's unit amount"
            " times its quantity, summed): the provider charges no more at once",
            reason="CHECKOUT_AMOUNT_INVALID",
            field=listed,
        )
    if len({ln.price.currency for ln in lines}) > 1:
        raise errors.invalid("all items of a checkout must share one currency", field=listed)
    cadences = {
        (ln.price.interval, ln.price.interval_count or 1)
        for ln in lines
        if ln.price.type == "recurring"
    }
    if len(cadences) > 1:
        raise errors.invalid(
            "recurring items of one checkout must share one billing interval", field=listed
        )
    return lines


def granted_by(lines: Sequence[_Line]) -> dict[str, Decimal]:
    """What the lines' prices grant on purchase and renewal, times quantity, by credit type."""
    granted: dict[str, Decimal] = {}
    for i, ln in enumerate(lines):
        amounts.add_grants(granted, ln.price.credit_grants or [], ln.quantity, f"items[{i}]")
    return granted


def check_minimum_charge(mode: str, lines: Sequence[_Line], listed: str) -> None:
    """A payment-mode checkout's total is at least the provider's minimum charge in its
    currency (Stripe refuses the session under it); subscriptions and free totals are exempt
    (Stripe carries a small invoice over; a free checkout charges nothing)."""
    if mode != "payment" or not lines:
        return
    total = sum(ln.price.unit_amount * ln.quantity for ln in lines)
    currency = lines[0].price.currency
    least = MIN_CHARGE.get(currency, 1)
    if 0 < total < least:
        raise errors.invalid(
            f"the checkout's total of {total} minor units of {currency} is under the"
            f" provider's minimum charge of {least}",
            reason="CHECKOUT_AMOUNT_INVALID",
            field=listed,
        )


def check_mode(requested: str, lines: Sequence[_Line]) -> str:
    """The checkout's mode: seed 003's `mode` checked against the prices, or (empty) derived
    from them. A price that does not fit the mode is CHECKOUT_MODE_MISMATCH."""
    recurring = [ln.price.id for ln in lines if ln.price.type == "recurring"]
    mode = requested.strip().lower()
    if not mode:
        return "subscription" if recurring else "payment"
    if mode not in MODES:
        raise errors.invalid(
            "mode must be payment, subscription or setup", field="mode", mode=requested[:40]
        )
    if mode == "setup" and lines:
        raise errors.invalid(
            "setup mode saves a payment method and takes no items",
            reason="CHECKOUT_MODE_MISMATCH",
            field="line_items",
            mode=mode,
        )
    if mode == "payment" and recurring:
        raise errors.invalid(
            f"price {recurring[0]!r} is recurring: buy it in subscription mode",
            reason="CHECKOUT_MODE_MISMATCH",
            field="mode",
            mode=mode,
            price_id=recurring[0],
        )
    if mode == "subscription" and not recurring:
        raise errors.invalid(
            "subscription mode needs at least one recurring price; one-time prices are bought"
            " in payment mode",
            reason="CHECKOUT_MODE_MISMATCH",
            field="mode",
            mode=mode,
        )
    return mode


# -- reading ---------------------------------------------------------------------------------


def get_checkout_session(session: Session, caller: Caller, checkout_id: str) -> CheckoutSession:
    """By our id or the provider's (`cs_...`, seed 003). Another account's session answers
    exactly like one that does not exist."""
    ident = checkout_id.strip()
    if not ident:
        raise errors.required("checkout_session_id")
    if ident.startswith("cs_"):
        row = repository.checkout_by_stripe_id(session, ident, owner=owner(caller))
    else:
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

# Stripe lists at most 10 products in a portal configuration's plan switch
# (`features.subscription_update.products`); more is refused (400), and no portal opens.
MAX_SWITCH_PRODUCTS = 10


def held_offer(session: Session, account_id: str) -> list[tuple[Price, Product]]:
    """What the portal may switch the account's subscriptions to: every active recurring price
    of each group its live subscriptions hold (a price without a group is a group of its own),
    whether anybody bought it yet or not; none of a group it does not hold. The products of
    the prices it holds come first (the plan switch lists at most `MAX_SWITCH_PRODUCTS`)."""
    live = subscriptions.live_subscriptions(session, account_id)
    items = [
        item
        for held in subscriptions.items_of(session, [s.id for s in live]).values()
        for item in held
    ]
    groups = {item.subscription_group for item in items if item.subscription_group}
    singles = {item.price_id for item in items if item.price_id and not item.subscription_group}
    offer = links.recurring_prices_in(session, groups, singles)
    prices = {item.price_id for item in items}
    holds = {product.id for price, product in offer if price.id in prices}
    return sorted(offer, key=lambda pair: pair[1].id not in holds)  # stable: catalog order kept


def unsynced_offer(session: Session, account_id: str) -> list[str]:
    """The prices of `held_offer` with no provider price yet: to sync before the portal."""
    return [
        price.id
        for price, product in held_offer(session, account_id)
        if not (price.stripe_price_id and product.stripe_product_id)
    ]


def portal_features(session: Session, options: PortalOptions, account_id: str) -> dict[str, Any]:
    """Portal options mapped to a provider portal configuration's features; the plan switch
    offers `held_offer` (its prices synced beforehand)."""
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
        for price, product in held_offer(session, account_id):
            if not (product.stripe_product_id and price.stripe_price_id):
                continue
            if product.stripe_product_id not in products and len(products) == MAX_SWITCH_PRODUCTS:
                log.warning(
                    "portal of %s: the plan switch lists %d products (Stripe's most), not "
                    "product %s",
                    account_id,
                    MAX_SWITCH_PRODUCTS,
                    product.id,
                    extra={"event": "portal_products_capped"},
                )
                continue
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


def from_unix(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    return dt.datetime.fromtimestamp(int(value), dt.UTC)
