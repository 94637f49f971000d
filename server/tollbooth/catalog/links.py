"""Links to Stripe objects are checked at Stripe before they are written.

A product's `stripe_product_id` and a price's `stripe_price_id` name objects a checkout and the
webhooks rely on: CreateProduct/UpdateProduct/CreatePrice/UpdatePrice look a new link up at the
provider first, outside any transaction (the servicer's, before it opens one). An id the
provider does not hold (looked up as the kind the field names: a price id is no product) is 400
STRIPE_LINK_NOT_FOUND naming the field; a provider that cannot say is 503 PROVIDER_UNAVAILABLE.
Either way nothing is written. An update that leaves the link as stored, a cleared link and a
replayed request_id ask the provider nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from tollbooth import errors
from tollbooth.errors import DomainError, Kind

# (kind, id) -> whether the provider holds it (`StripeProvider.linkable`).
Lookup = Callable[[str, str], bool]


def new_link(given: str, stored: str | None) -> str:
    """The link a write would store that is not stored already ("" when none)."""
    link = given.strip()
    return link if link and link != (stored or "") else ""


def check(lookup: Lookup, kind: str, field: str, link: str) -> None:
    """Refuse `link` (the `field` of a `kind`) unless the provider holds it."""
    if link and not lookup(kind, link):
        raise DomainError(
            Kind.INVALID_ARGUMENT,
            "STRIPE_LINK_NOT_FOUND",
            f"{field}: Stripe has no {kind} {errors.shown(link)}",
            field=field,
            **{f"stripe_{kind}_id": link},
        )
