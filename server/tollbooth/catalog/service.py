"""Catalog rules: what may be created, changed, archived and listed, and by whom.

Services flush, never commit: the caller (an RPC, or one `catalog apply`) owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.auth.caller import Caller
from tollbooth.catalog import fields as f
from tollbooth.catalog import paging, repository
from tollbooth.catalog.fields import (
    CreditGrant,
    Entitlement,
    PriceFields,
    ProductFields,
)
from tollbooth.catalog.plan import StoredPrice, StoredProduct
from tollbooth.catalog.snapshot import Catalog
from tollbooth.db.models import Price, Product
from tollbooth.db.types import utcnow
from tollbooth.errors import DomainError, Kind
from tollbooth.ids import new_id
from tollbooth.paging import Page

# ---------------------------------------------------------------------------------------------
# Products


def product_fields_of(product: Product) -> ProductFields:
    return ProductFields(
        name=product.name,
        key=product.key or "",
        description=product.description,
        position=product.position,
        stripe_product_id=product.stripe_product_id,
        metadata=dict(product.attributes or {}),
        entitlements=_entitlements_of(product.entitlements),
    )


def get_product(
    session: Session | None, product_id: str, catalog: Catalog | None = None, *, lock: bool = False
) -> Product:
    """One product, active or not (from the in-memory `catalog` when given; `lock`: its row
    locked until commit, read afresh)."""
    if not product_id:
        raise errors.required("product_id")
    if catalog is not None:
        product = catalog.by_id.get(product_id)
    else:
        assert session is not None
        product = repository.get_product(session, product_id, lock=lock)
    if product is None:
        raise errors.not_found("product", product_id)
    return product


def create_product(session: Session, fields: ProductFields) -> Product:
    """A new active product; position 0 places it after every existing product."""
    clean = f.clean_product(fields)
    if clean.key:
        _ensure_product_key_free(session, clean.key)
    if clean.stripe_product_id:
        _ensure_stripe_product_free(session, clean.stripe_product_id, "")
    now = utcnow()
    seq = repository.next_seq(session, repository.PRODUCT_SEQUENCE)
    position = clean.position or paging.next_position(repository.max_product_position(session))
    product = Product(
        id=new_id("prod"),
        key=clean.key or None,
        name=clean.name,
        description=clean.description,
        active=True,
        position=position,
        seq=seq,
        stripe_product_id=clean.stripe_product_id,
        attributes=dict(clean.metadata),
        entitlements=_entitlements_json(clean.entitlements),
        created_at=now,
        updated_at=now,
    )
    session.add(product)
    _flush_product(session, clean)
    return product


def update_product(
    session: Session, product_id: str, fields: ProductFields, paths: Sequence[str]
) -> Product:
    """Change the fields named in `paths` ("*": every mutable field); nothing else changes.

    Position 0 and stripe_product_id None mean "not given" and leave the stored value alone.
    """
    if not product_id:
        raise errors.required("product.product_id")
    apply, _ = f.mask_paths(paths, f.PRODUCT_MUTABLE, f.PRODUCT_OUTPUT_ONLY)
    product = get_product(session, product_id)
    changes = _given(fields, apply)
    merged = f.clean_product(replace(product_fields_of(product), **changes))
    if merged.key and merged.key != (product.key or ""):
        _ensure_product_key_free(session, merged.key)
    if merged.stripe_product_id and merged.stripe_product_id != product.stripe_product_id:
        _ensure_stripe_product_free(session, merged.stripe_product_id, product.id)
    _write_product(session, product, merged)
    return product


def archive_product(session: Session, product_id: str) -> Product:
    """Hide a product from public listing. Idempotent: an archived product comes back unchanged.

    Its prices are left as they are: they stay readable by id and by operators, but public
    listing shows nothing under an archived product.
    """
    product = get_product(session, product_id, lock=True)  # archives at once: one archive
    _archive(session, product)
    return product


def restore_product(session: Session, product_id: str) -> Product:
    """Make an archived product active again (catalog as code re-adding its key)."""
    product = get_product(session, product_id, lock=True)
    if not product.active:
        product.active = True
        product.updated_at = utcnow()
        repository.flush(session)
    return product


def list_products(
    session: Session | None,
    caller: Caller,
    *,
    page_size: int = 0,
    page_token: str = "",
    include_inactive: bool = False,
    catalog: Catalog | None = None,
) -> Page[Product]:
    """Products in configured order: position, then creation order (from the in-memory
    `catalog` when given, else the database)."""
    _check_include_inactive(caller, include_inactive)
    keyset = paging.keyset(
        paging.query_key("products", include_inactive=include_inactive), page_size
    )
    after = keyset.after(page_token)
    if catalog is not None:
        rows = _page_of(catalog.products, not include_inactive, after, keyset.limit)
    else:
        assert session is not None
        rows = repository.list_products(
            session, active_only=not include_inactive, after=after, limit=keyset.limit
        )
    return keyset.page(rows)


def _page_of(
    ordered: Sequence[Any], active_only: bool, after: tuple[Any, ...] | None, limit: int
) -> list[Any]:
    """What the keyset query would return, from rows already in (position, seq, id) order."""
    rows = []
    for row in ordered:
        if (active_only and not row.active) or (
            after is not None and paging.order_key(row) <= after
        ):
            continue
        rows.append(row)
        if len(rows) == limit:
            break
    return rows


# ---------------------------------------------------------------------------------------------
# Prices


def price_fields_of(price: Price) -> PriceFields:
    return PriceFields(
        product_id=price.product_id,
        currency=price.currency,
        unit_amount=price.unit_amount,
        type=price.type,
        interval=price.interval or "",
        interval_count=price.interval_count or 0,
        lookup_key=price.lookup_key or "",
        stripe_price_id=price.stripe_price_id,
        stackable=price.stackable,
        subscription_group=price.subscription_group or "",
        credit_grants=tuple(CreditGrant(**g) for g in price.credit_grants or []),
        entitlements=_entitlements_of(price.entitlements),
        position=price.position,
        nickname=price.nickname,
        metadata=dict(price.attributes or {}),
    )


def get_price(session: Session, price_id: str, *, lock: bool = False) -> Price:
    """One price, active or not (`lock` as in `get_product`)."""
    if not price_id:
        raise errors.required("price_id")
    price = repository.get_price(session, price_id, lock=lock)
    if price is None:
        raise errors.not_found("price", price_id)
    return price


def create_price(session: Session, fields: PriceFields) -> Price:
    """A new active price under an active product; position 0 places it last.

    The product's row is locked until commit and read after the lock is granted, as
    ArchiveProduct locks it: a create racing an archive either comes first (the archive
    waits, then archives the product as it archives any product, its prices left as they
    are) or sees the archive (ARCHIVED). Unlocked, it read the product still active, waited
    only in its insert's foreign-key check, and put an active price under the product the
    archive had just committed."""
    clean = f.clean_price(fields)
    product = get_product(session, clean.product_id, lock=True)
    if not product.active:
        raise errors.failed_precondition(
            "ARCHIVED", f"product {product.id!r} is archived", product_id=product.id
        )
    if clean.lookup_key:
        _ensure_lookup_key_free(session, clean.lookup_key)
    if clean.stripe_price_id:
        _ensure_stripe_price_free(session, clean.stripe_price_id, "")
    now = utcnow()
    seq = repository.next_seq(session, repository.PRICE_SEQUENCE)
    position = clean.position or paging.next_position(
        repository.max_price_position(session, product.id)
    )
    price = Price(
        id=new_id("price"),
        product_id=product.id,
        active=True,
        seq=seq,
        created_at=now,
        updated_at=now,
    )
    _assign_price(price, replace(clean, position=position))
    price.currency = clean.currency
    price.unit_amount = clean.unit_amount
    price.type = clean.type
    price.interval = clean.interval or None
    price.interval_count = clean.interval_count or None
    session.add(price)
    _flush_price(session, clean)
    return price


def update_price(
    session: Session,
    price_id: str,
    fields: PriceFields,
    paths: Sequence[str],
    given_immutable: Sequence[str] = (),
) -> Price:
    """Change the mutable fields named in `paths` ("*": every mutable field).

    Amount, currency, type, recurrence and product never change (PRICE_IMMUTABLE): naming
    one in `paths` is refused; `given_immutable` names the ones a request populated without
    naming them (an implied mask), refused only when they differ from the stored value. As
    for products, position 0 and stripe_price_id None leave the stored value alone.
    """
    if not price_id:
        raise errors.required("price.price_id")
    apply, immutable = f.mask_paths(paths, f.PRICE_MUTABLE, f.PRICE_OUTPUT_ONLY, f.PRICE_IMMUTABLE)
    if immutable:
        raise _immutable(immutable[0])
    price = get_price(session, price_id)
    current = price_fields_of(price)
    if given_immutable or f.is_full_mask(paths):
        _check_immutables_unchanged(current, fields)
    changes = _given(fields, apply)
    merged = f.clean_price(replace(current, **changes), new_amount=False)
    if price.active and merged.lookup_key and merged.lookup_key != current.lookup_key:
        _ensure_lookup_key_free(session, merged.lookup_key)
    if (
        price.active
        and merged.stripe_price_id
        and merged.stripe_price_id != current.stripe_price_id
    ):
        _ensure_stripe_price_free(session, merged.stripe_price_id, price.id)
    if merged != current:
        _assign_price(price, merged)
        price.updated_at = utcnow()
        _flush_price(session, merged)
    return price


def archive_price(session: Session, price_id: str) -> Price:
    """Take a price off sale. Idempotent; its lookup_key becomes free for a new price."""
    price = get_price(session, price_id, lock=True)  # archives at once: one archive
    _archive(session, price)
    return price


def _archive(session: Session, entry: Product | Price) -> None:
    """Deactivate a product or price; archiving twice changes nothing."""
    if entry.active:
        entry.active = False
        entry.updated_at = utcnow()
        repository.flush(session)


def list_prices(
    session: Session | None,
    caller: Caller,
    product_id: str,
    *,
    page_size: int = 0,
    page_token: str = "",
    include_inactive: bool = False,
    catalog: Catalog | None = None,
) -> Page[Price]:
    """Prices of one product in configured order.

    An unknown product is NOT_FOUND. An archived product lists no prices publicly (an empty
    page, as if it had none); with include_inactive an operator sees all of them.
    """
    if not product_id:
        raise errors.required("product_id")
    _check_include_inactive(caller, include_inactive)
    keyset = paging.keyset(
        paging.query_key("prices", parent=product_id, include_inactive=include_inactive),
        page_size,
    )
    after = keyset.after(page_token)
    product = get_product(session, product_id, catalog)
    if not include_inactive and not product.active:
        return Page([], "")
    if catalog is not None:
        ordered = catalog.prices.get(product.id, [])
        rows = _page_of(ordered, not include_inactive, after, keyset.limit)
    else:
        assert session is not None
        rows = repository.list_prices(
            session, product.id, active_only=not include_inactive, after=after, limit=keyset.limit
        )
    return keyset.page(rows)


# ---------------------------------------------------------------------------------------------
# Catalog as code


def catalog_state(
    session: Session, *, for_apply: bool = False
) -> tuple[list[StoredProduct], list[StoredPrice]]:
    """Every product (archived included) and every active price, as plain values.

    `for_apply`: first wait for any other catalog apply to end (`repository.lock_for_apply`),
    so the same file applied twice at once is applied once, the second finding no changes."""
    if for_apply:
        repository.lock_for_apply(session)
    products = [
        StoredProduct(id=p.id, active=p.active, seq=p.seq, fields=product_fields_of(p))
        for p in repository.all_products(session)
    ]
    prices = [
        StoredPrice(id=p.id, active=p.active, seq=p.seq, fields=price_fields_of(p))
        for p in repository.all_active_prices(session)
    ]
    return products, prices


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_include_inactive(caller: Caller, include_inactive: bool) -> None:
    if include_inactive and not caller.is_service:
        raise errors.permission_denied(
            "OPERATION_NOT_PERMITTED", "include_inactive takes a service key"
        )


def _given(fields: ProductFields | PriceFields, paths: Sequence[str]) -> dict[str, Any]:
    """The requested values of `paths`, minus the ones that mean "not given"."""
    changes: dict[str, Any] = {}
    for path in paths:
        value = getattr(fields, path)
        if path == "position" and value == 0:
            continue
        if path in ("stripe_product_id", "stripe_price_id") and value is None:
            continue
        changes[path] = value
    return changes


def _check_immutables_unchanged(current: PriceFields, requested: PriceFields) -> None:
    currency = requested.currency.strip().lower()
    given = (
        ("product_id", requested.product_id, current.product_id),
        ("currency", currency, current.currency),
        ("unit_amount", requested.unit_amount, current.unit_amount),
        ("type", requested.type, current.type),
        ("recurring.interval", requested.interval, current.interval),
        ("recurring.interval_count", requested.interval_count, current.interval_count),
    )
    for name, value, stored in given:
        if value and value != stored:
            raise _immutable(name)


def _immutable(name: str) -> DomainError:
    return errors.invalid(
        f"{name} of a price never changes: create a new price and archive this one",
        reason="PRICE_IMMUTABLE",
        field=name,
    )


def _ensure_lookup_key_free(session: Session, lookup_key: str) -> None:
    if repository.active_price_with_lookup_key(session, lookup_key) is not None:
        raise _lookup_key_taken(lookup_key)


def _lookup_key_taken(lookup_key: str) -> DomainError:
    return DomainError(
        Kind.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        f"an active price already has lookup_key {errors.shown(lookup_key)}",
        lookup_key=lookup_key,
    )


def _ensure_stripe_price_free(session: Session, stripe_price_id: str, price_id: str) -> None:
    """A provider price names at most one active price: the webhooks map a subscription item's
    provider price back to the catalog price it was bought as (`price_by_stripe_id`)."""
    holder = repository.active_price_with_stripe_price_id(session, stripe_price_id, price_id)
    if holder is not None:
        raise _stripe_price_taken(stripe_price_id, holder.id)


def _stripe_price_taken(stripe_price_id: str, holder: str = "") -> DomainError:
    extra = {"price_id": holder} if holder else {}
    return DomainError(
        Kind.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        f"an active price is already linked to stripe_price_id {errors.shown(stripe_price_id)}",
        stripe_price_id=stripe_price_id,
        **extra,
    )


def _ensure_product_key_free(session: Session, key: str) -> None:
    if repository.product_with_key(session, key) is not None:
        raise _product_key_taken(key)


def _product_key_taken(key: str) -> DomainError:
    return DomainError(
        Kind.ALREADY_EXISTS, "ALREADY_EXISTS", f"a product already has key {key!r}", key=key
    )


def _ensure_stripe_product_free(session: Session, stripe_product_id: str, product_id: str) -> None:
    """A Stripe product is linked by one product at most, archived ones included (restored,
    one keeps its link): the provider's objects map back to one catalog product."""
    holder = repository.product_with_stripe_product_id(session, stripe_product_id, product_id)
    if holder is not None:
        raise _stripe_product_taken(stripe_product_id, holder.id)


def _stripe_product_taken(stripe_product_id: str, holder: str = "") -> DomainError:
    extra = {"product_id": holder} if holder else {}
    return DomainError(
        Kind.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        f"a product is already linked to stripe_product_id {errors.shown(stripe_product_id)}",
        stripe_product_id=stripe_product_id,
        **extra,
    )


def _flush_product(session: Session, fields: ProductFields) -> None:
    try:
        repository.flush(session)
    except repository.ProductKeyTaken as exc:
        raise _product_key_taken(fields.key) from exc
    except repository.StripeProductTaken as exc:
        raise _stripe_product_taken(fields.stripe_product_id or "") from exc


def _flush_price(session: Session, fields: PriceFields) -> None:
    # The pre-checks answer the common case; the unique indexes settle concurrent writers.
    try:
        repository.flush(session)
    except repository.LookupKeyTaken as exc:
        raise _lookup_key_taken(fields.lookup_key) from exc
    except repository.StripePriceTaken as exc:
        raise _stripe_price_taken(fields.stripe_price_id or "") from exc


def _write_product(session: Session, product: Product, merged: ProductFields) -> None:
    if merged == product_fields_of(product):
        return
    product.name = merged.name
    product.key = merged.key or None
    product.description = merged.description
    product.position = merged.position
    product.stripe_product_id = merged.stripe_product_id
    product.attributes = dict(merged.metadata)
    product.entitlements = _entitlements_json(merged.entitlements)
    product.updated_at = utcnow()
    _flush_product(session, merged)


def _assign_price(price: Price, clean: PriceFields) -> None:
    """The mutable columns of a price."""
    price.lookup_key = clean.lookup_key or None
    price.stripe_price_id = clean.stripe_price_id
    price.stackable = clean.stackable
    price.subscription_group = clean.subscription_group or None
    price.credit_grants = [g.as_json() for g in clean.credit_grants]
    price.entitlements = _entitlements_json(clean.entitlements)
    price.position = clean.position
    price.nickname = clean.nickname
    price.attributes = dict(clean.metadata)


def _entitlements_of(stored: list | None) -> tuple[Entitlement, ...]:
    return tuple(Entitlement.from_json(e) for e in stored or [])


def _entitlements_json(items: Sequence[Entitlement]) -> list[dict[str, str]]:
    return [e.as_json() for e in items]
