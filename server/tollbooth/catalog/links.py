"""Links to Stripe objects are checked at Stripe before they are written.

A product's `stripe_product_id` and a price's `stripe_price_id` name objects a checkout and the
webhooks rely on: CreateProduct/UpdateProduct/CreatePrice/UpdatePrice look a new link up at the
provider first, outside any transaction (the servicer's, before it opens one). An id the
provider does not hold (looked up as the kind the field names: a price id is no product) is 400
STRIPE_LINK_NOT_FOUND naming the field, one it holds archived (`active: false`) 400
STRIPE_LINK_INACTIVE; a provider that cannot say is 503 PROVIDER_UNAVAILABLE.
Either way nothing is written. An update that leaves the link as stored, a cleared link and a
replayed request_id ask the provider nothing. A price's new link must also charge what the price
charges (amount, currency, recurrence: a Stripe price never changes them), else 400
STRIPE_PRICE_MISMATCH naming both: compared in the write's transaction, with what was read
before it, so the refused write leaves nothing (before, only the first checkout found out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tollbooth import errors
from tollbooth.db.models import Price
from tollbooth.errors import DomainError, Kind

# (kind, id) -> what the provider holds under that id, None if nothing
# (`StripeProvider.linkable`).
Lookup = Callable[[str, str], dict[str, Any] | None]


def new_link(given: str, stored: str | None) -> str:
    """The link a write would store that is not stored already ("" when none)."""
    link = given.strip()
    return link if link and link != (stored or "") else ""


def check(lookup: Lookup, kind: str, field: str, link: str) -> dict[str, Any] | None:
    """Refuse `link` (the `field` of a `kind`) unless the provider holds it; what it holds
    (None when there is no new link to look up)."""
    if not link:
        return None
    found = lookup(kind, link)
    if found is None:
        raise DomainError(
            Kind.INVALID_ARGUMENT,
            "STRIPE_LINK_NOT_FOUND",
            f"{field}: Stripe has no {kind} {errors.shown(link)}",
            field=field,
            **{f"stripe_{kind}_id": link},
        )
    if found.get("active") is False:
        raise DomainError(
            Kind.INVALID_ARGUMENT,
            "STRIPE_LINK_INACTIVE",
            f"{field}: Stripe {kind} {errors.shown(link)} is archived there (active: false), so"
            " no checkout could sell it: restore it at Stripe or link an active one",
            field=field,
            **{f"stripe_{kind}_id": link},
        )
    return found


def charging_as(price: Price, remote: dict[str, Any] | None, field: str) -> Price:
    """`price` as written, unless its new provider price (`remote`, looked up before the
    transaction) charges another amount, currency or recurrence: a checkout would sell at the
    provider's figures (`provider.sync.check_link` refuses it there too)."""
    if remote is None or price.stripe_price_id != remote.get("id"):
        return price
    recurring = remote.get("recurring") or {}
    theirs = (
        remote.get("currency"),
        remote.get("unit_amount"),
        recurring.get("interval") or None,
        int(recurring.get("interval_count") or 1) if recurring else None,
    )
    ours = (
        price.currency,
        price.unit_amount,
        price.interval or None,
        (price.interval_count or 1) if price.interval else None,
    )
    if theirs != ours:
        raise DomainError(
            Kind.INVALID_ARGUMENT,
            "STRIPE_PRICE_MISMATCH",
            f"{field}: Stripe price {errors.shown(price.stripe_price_id or '')} charges "
            f"{_figures(*theirs)}, not {_figures(*ours)}: link one that matches",
            field=field,
            stripe_price_id=price.stripe_price_id or "",
        )
    return price


def _figures(currency: Any, amount: Any, interval: Any, count: Any) -> str:
    return f"{amount} {currency}" + (f" every {count} {interval}" if interval else "")
