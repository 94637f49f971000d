"""The catalog linked to the provider: every price bought has a provider price.

A price (and its product) is created at the provider on its first checkout, or by
`tollbooth catalog apply --sync-stripe`, which first links a price to an active provider price
carrying the same lookup_key (same amount, currency and recurrence) and creates only what it
cannot link. The ids are stored in `stripe_product_id` / `stripe_price_id`; provider calls use
idempotency keys derived from our ids, so two replicas syncing one price at once create one
provider price, and the stored link is written only where none was (first writer wins).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tollbooth.db.models import Price, Product
from tollbooth.provider import repository
from tollbooth.provider.client import StripeProvider


def ensure_product_synced(session: Session, provider: StripeProvider, product: Product) -> str:
    if product.stripe_product_id:
        return product.stripe_product_id
    created = provider.create_product(
        product.id,
        name=product.name,
        description=product.description,
        metadata={k: str(v) for k, v in (product.attributes or {}).items()},
    )
    repository.link_product(session, product.id, created["id"])
    session.refresh(product)
    assert product.stripe_product_id is not None
    return product.stripe_product_id


def ensure_price_synced(session: Session, provider: StripeProvider, price: Price) -> str:
    """The provider price of `price`, created (with its product) when it has none yet."""
    if price.stripe_price_id:
        return price.stripe_price_id
    product = session.get(Product, price.product_id)
    assert product is not None
    stripe_product = ensure_product_synced(session, provider, product)
    created = provider.create_price(
        price.id,
        stripe_product_id=stripe_product,
        currency=price.currency,
        unit_amount=price.unit_amount,
        interval=price.interval,
        interval_count=price.interval_count,
        nickname=price.nickname,
        lookup_key=price.lookup_key,
    )
    repository.link_price(session, price.id, created["id"])
    session.refresh(price)
    assert price.stripe_price_id is not None
    return price.stripe_price_id


def _matches(price: Price, remote: dict[str, Any]) -> bool:
    recurring = remote.get("recurring") or {}
    return (
        remote.get("currency") == price.currency
        and remote.get("unit_amount") == price.unit_amount
        and (recurring.get("interval") or None) == (price.interval or None)
        and (int(recurring.get("interval_count") or 1) if recurring else None)
        == ((price.interval_count or 1) if price.interval else None)
    )


def sync_catalog(session: Session, provider: StripeProvider) -> list[str]:
    """Link or create the provider price of every active price that has none; one line each."""
    lines: list[str] = []
    for price in repository.unsynced_active_prices(session):
        label = price.lookup_key or price.id
        remote = provider.find_price_by_lookup_key(price.lookup_key) if price.lookup_key else None
        if remote is not None and _matches(price, remote):
            product = session.get(Product, price.product_id)
            assert product is not None
            if not product.stripe_product_id:
                repository.link_product(session, product.id, str(remote["product"]))
            repository.link_price(session, price.id, remote["id"])
            lines.append(f"link price {label} -> {remote['id']}")
            continue
        stripe_id = ensure_price_synced(session, provider, price)
        lines.append(f"create provider price for {label} -> {stripe_id}")
    return lines
