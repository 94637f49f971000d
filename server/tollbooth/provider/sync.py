"""The catalog linked to the provider: every price bought has a provider price.

A price (and its product) is created at the provider on its first checkout, or by
`tollbooth catalog apply --sync-stripe`, which first links a price to an active provider price
carrying the same lookup_key (same amount, currency and recurrence) and creates only what it
cannot link. The ids are stored in `stripe_product_id` / `stripe_price_id`; provider calls use
idempotency keys derived from our ids, so two replicas syncing one price at once create one
provider price, and the stored link is written only where none was (first writer wins).

No provider call runs inside a database transaction: what to send is read in one short
transaction, the provider is called with none open, and the link is written in another. A crash
between, or a create whose answer was lost (a timeout after the provider made the object),
leaves the price unlinked. The next sync or checkout first looks for the object by our id in
its metadata (`tollbooth_product_id`, `tollbooth_price_id`) and links what it finds; only when
there is none does it create, under the same idempotency key. The key alone would not do: the
provider forgets it after 24 hours, and a product renamed meanwhile sends other parameters
under it (refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tollbooth import errors
from tollbooth.db import Database
from tollbooth.db.models import Price, Product
from tollbooth.provider import repository
from tollbooth.provider.client import StripeProvider

MISMATCH = "STRIPE_PRICE_MISMATCH"


@dataclass(frozen=True)
class _PriceView:
    """What the provider needs to know of a price and its product, read in one transaction."""

    id: str
    product_id: str
    stripe_price_id: str | None
    stripe_product_id: str | None
    product_name: str
    product_description: str
    product_metadata: dict[str, str]
    currency: str
    unit_amount: int
    interval: str | None
    interval_count: int | None
    nickname: str
    lookup_key: str | None
    group: str = ""


def _view(db: Database, price_id: str) -> _PriceView:
    with db.transaction(readonly=True) as session:
        price = session.get(Price, price_id)
        assert price is not None
        product = session.get(Product, price.product_id)
        assert product is not None
        return _PriceView(
            id=price.id,
            product_id=product.id,
            stripe_price_id=price.stripe_price_id,
            stripe_product_id=product.stripe_product_id,
            product_name=product.name,
            product_description=product.description,
            product_metadata={k: str(v) for k, v in (product.attributes or {}).items()},
            currency=price.currency,
            unit_amount=price.unit_amount,
            interval=price.interval,
            interval_count=price.interval_count,
            nickname=price.nickname,
            lookup_key=price.lookup_key,
            # As `subscriptions.service.price_group` reads it: an ungrouped price is its own.
            group=price.subscription_group or f"price:{price.id}",
        )


def _stored_link(db: Database, model: type[Price] | type[Product], ident: str) -> str:
    with db.transaction(readonly=True) as session:
        if model is Price:
            price = session.get(Price, ident)
            linked = price.stripe_price_id if price is not None else None
        else:
            product = session.get(Product, ident)
            linked = product.stripe_product_id if product is not None else None
        assert linked is not None
        return linked


def ensure_product_synced(db: Database, provider: StripeProvider, view: _PriceView) -> str:
    if view.stripe_product_id:
        return view.stripe_product_id
    created = provider.find_product(view.product_id) or provider.create_product(
        view.product_id,
        name=view.product_name,
        description=view.product_description,
        metadata=view.product_metadata,
    )
    try:
        with db.transaction() as session:
            repository.link_product(session, view.product_id, created["id"])
    except IntegrityError:  # another product linked it in the same instant (unique index)
        pass
    with db.transaction(readonly=True) as session:
        product = session.get(Product, view.product_id)
        linked = product.stripe_product_id if product is not None else None
        holder = None if linked else session.scalar(_holder(created["id"], view.product_id))
    if linked:
        return linked
    # The provider product made for this one (its metadata names it) is linked by another
    # product (an operator's explicit link): one catalog product per provider product.
    raise errors.DomainError(
        errors.Kind.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        f"the Stripe product made for product {view.product_id} ({created['id']}) is linked to "
        f"product {holder}: link {view.product_id} to a Stripe product of its own",
        stripe_product_id=created["id"],
        product_id=holder or "",
    )


def _holder(stripe_product_id: str, product_id: str) -> Any:
    return (
        select(Product.id)
        .where(Product.stripe_product_id == stripe_product_id, Product.id != product_id)
        .limit(1)
    )


def ensure_price_synced(db: Database, provider: StripeProvider, price_id: str) -> str:
    """The provider price of `price_id`, created (with its product) when it has none yet; a
    linked one is checked to charge what the price says (`check_link`)."""
    view = _view(db, price_id)
    if view.stripe_price_id:
        check_link(provider, view)
        return view.stripe_price_id
    stripe_product = ensure_product_synced(db, provider, view)
    created = provider.find_price(view.id, stripe_product) or provider.create_price(
        view.id,
        stripe_product_id=stripe_product,
        currency=view.currency,
        unit_amount=view.unit_amount,
        interval=view.interval,
        interval_count=view.interval_count,
        nickname=view.nickname,
        lookup_key=view.lookup_key,
        group=view.group,
    )
    with db.transaction() as session:
        repository.link_price(session, view.id, created["id"])
    return _stored_link(db, Price, view.id)


# Links found to charge what their price says, by (provider price, currency, amount,
# recurrence): a provider price's amount, currency and recurrence never change, so each link
# is read once per process.
_VERIFIED: set[tuple[str, str, int, str | None, int | None]] = set()


def check_link(provider: StripeProvider, view: _PriceView) -> None:
    """A price linked explicitly (CreatePrice/UpdatePrice's `stripe_price_id`, a catalog file)
    to a provider price that charges another amount, currency or recurrence would sell at the
    provider's figures (the sync path compares; an explicit link was never compared): refused
    with FAILED_PRECONDITION STRIPE_PRICE_MISMATCH before anything is created, naming both."""
    assert view.stripe_price_id is not None
    interval_count = (view.interval_count or 1) if view.interval else None
    key = (view.stripe_price_id, view.currency, view.unit_amount, view.interval, interval_count)
    if key in _VERIFIED:
        return
    remote = provider.retrieve_price(view.stripe_price_id)
    if not _matches(view, remote):
        recurring = remote.get("recurring") or {}
        theirs = f"{remote.get('unit_amount')} {remote.get('currency')}"
        if recurring:
            theirs += f" every {recurring.get('interval_count') or 1} {recurring.get('interval')}"
        ours = f"{view.unit_amount} {view.currency}"
        if view.interval:
            ours += f" every {interval_count} {view.interval}"
        raise errors.failed_precondition(
            MISMATCH,
            f"price {view.id} is linked to provider price {view.stripe_price_id}, which charges "
            f"{theirs}, not {ours}: link a provider price that matches, or clear the link",
            price_id=view.id,
            stripe_price_id=view.stripe_price_id,
        )
    _VERIFIED.add(key)


def _matches(price: _PriceView, remote: dict[str, Any]) -> bool:
    recurring = remote.get("recurring") or {}
    return (
        remote.get("currency") == price.currency
        and remote.get("unit_amount") == price.unit_amount
        and (recurring.get("interval") or None) == (price.interval or None)
        and (int(recurring.get("interval_count") or 1) if recurring else None)
        == ((price.interval_count or 1) if price.interval else None)
    )


def _held(db: Database, stripe_price_id: str) -> bool:
    """Whether another active price is linked to it already (an operator's explicit link): then
    this price gets a provider price of its own instead."""
    with db.transaction(readonly=True) as session:
        return repository.stripe_price_held(session, stripe_price_id)


def sync_catalog(db: Database, provider: StripeProvider) -> list[str]:
    """Link or create the provider price of every active price that has none; one line each."""
    with db.transaction(readonly=True) as session:
        unsynced = [price.id for price in repository.unsynced_active_prices(session)]
    lines: list[str] = []
    for price_id in unsynced:
        view = _view(db, price_id)
        if view.stripe_price_id:
            continue  # linked meanwhile (another replica, a checkout)
        label = view.lookup_key or view.id
        remote = provider.find_price_by_lookup_key(view.lookup_key) if view.lookup_key else None
        if remote is not None and _matches(view, remote) and not _held(db, str(remote["id"])):
            with db.transaction() as session:
                if not view.stripe_product_id:
                    repository.link_product(session, view.product_id, str(remote["product"]))
                repository.link_price(session, view.id, remote["id"])
            lines.append(f"link price {label} -> {remote['id']}")
            continue
        stripe_id = ensure_price_synced(db, provider, view.id)
        lines.append(f"create provider price for {label} -> {stripe_id}")
    return lines
