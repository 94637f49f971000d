"""Every query on products and prices. Portable between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select, text, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import Price, Product, Sequence
from tollbooth.paging import after_clause

# pg_advisory_xact_lock key of catalog as code ("ctlg" in ASCII).
APPLY_LOCK = 0x63746C67
PRODUCT_SEQUENCE = "catalog.products"
PRICE_SEQUENCE = "catalog.prices"


class LookupKeyTaken(Exception):
    """The partial unique index on active lookup keys refused a write."""


class ProductKeyTaken(Exception):
    """The unique index on product keys refused a write."""


class StripePriceTaken(Exception):
    """The partial unique index on active prices' Stripe price ids refused a write."""


class StripeProductTaken(Exception):
    """The partial unique index on products' Stripe product ids refused a write (0032)."""


def lock_for_apply(session: Session) -> None:
    """One catalog apply at a time, until its transaction ends: a second one waits, then plans
    against what the first committed (READ COMMITTED reads after the wait see it). SQLite
    serialises writers anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPLY_LOCK})


def next_seq(session: Session, name: str) -> int:
    """The next value of a named counter, in one statement.

    On PostgreSQL the upsert locks the counter row until commit, so values are handed out
    (and committed) in order; SQLite serialises writers anyway.
    """
    stmt = (
        upsert_insert(session, Sequence)
        .values(name=name, value=1)
        .on_conflict_do_update(index_elements=["name"], set_={"value": Sequence.value + 1})
        .returning(Sequence.value)
    )
    return int(session.execute(stmt).scalar_one())


def flush(session: Session) -> None:
    """Flush pending writes, turning a lookup-key collision into LookupKeyTaken."""
    try:
        session.flush()
    except IntegrityError as exc:
        detail = str(exc.orig)
        if "lookup_key" in detail:
            raise LookupKeyTaken() from exc
        if "stripe_price_id" in detail:
            raise StripePriceTaken() from exc
        if "stripe_product_id" in detail:
            raise StripeProductTaken() from exc
        if "uq_products_key" in detail or "products.key" in detail:
            raise ProductKeyTaken() from exc
        raise


def get_product(session: Session, product_id: str, *, lock: bool = False) -> Product | None:
    """The product; with `lock`, its row locked until commit and read after the lock was
    granted (a concurrent archive's change is seen, not overwritten)."""
    if not product_id:
        return None
    if lock:
        return _locked(session, select(Product).where(Product.id == product_id))
    return session.get(Product, product_id)


def get_price(session: Session, price_id: str, *, lock: bool = False) -> Price | None:
    """The price; `lock` as in `get_product`."""
    if not price_id:
        return None
    if lock:
        return _locked(session, select(Price).where(Price.id == price_id))
    return session.get(Price, price_id)


def _locked(session: Session, stmt: Any) -> Any:
    return session.scalars(stmt.with_for_update().execution_options(populate_existing=True)).first()


def prices_by_ids(session: Session, ids: list[str]) -> dict[str, Price]:
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Price).where(Price.id.in_(ids)))}


def max_product_position(session: Session) -> int | None:
    return session.scalar(select(func.max(Product.position)))


def max_price_position(session: Session, product_id: str) -> int | None:
    return session.scalar(select(func.max(Price.position)).where(Price.product_id == product_id))


def product_with_key(session: Session, key: str) -> Product | None:
    return session.scalars(select(Product).where(Product.key == key)).first()


def active_price_with_lookup_key(session: Session, lookup_key: str) -> Price | None:
    return session.scalars(
        select(Price).where(Price.lookup_key == lookup_key, Price.active == true())
    ).first()


def active_price_with_stripe_price_id(
    session: Session, stripe_price_id: str, other_than: str
) -> Price | None:
    return session.scalars(
        select(Price).where(
            Price.stripe_price_id == stripe_price_id,
            Price.active == true(),
            Price.id != other_than,
        )
    ).first()


def product_with_stripe_product_id(
    session: Session, stripe_product_id: str, other_than: str
) -> Product | None:
    return session.scalars(
        select(Product).where(
            Product.stripe_product_id == stripe_product_id, Product.id != other_than
        )
    ).first()


def _after(
    stmt: Select, model: type[Product] | type[Price], after: tuple[Any, ...] | None
) -> Select:
    """Keyset condition: strictly after `after` in (position, seq, id) order."""
    order = [model.position, model.seq, model.id]
    if after is not None:
        stmt = stmt.where(after_clause(order, after))
    return stmt.order_by(*order)


def list_products(
    session: Session, *, active_only: bool, after: tuple[Any, ...] | None, limit: int
) -> list[Product]:
    stmt = select(Product)
    if active_only:
        stmt = stmt.where(Product.active == true())
    return list(session.scalars(_after(stmt, Product, after).limit(limit)))


def list_prices(
    session: Session,
    product_id: str,
    *,
    active_only: bool,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[Price]:
    stmt = select(Price).where(Price.product_id == product_id)
    if active_only:
        stmt = stmt.where(Price.active == true())
    return list(session.scalars(_after(stmt, Price, after).limit(limit)))


def all_products(session: Session) -> list[Product]:
    """Every product, archived included, in creation order (the catalog is small)."""
    return list(session.scalars(select(Product).order_by(Product.seq, Product.id)))


def all_active_prices(session: Session) -> list[Price]:
    return list(
        session.scalars(select(Price).where(Price.active == true()).order_by(Price.seq, Price.id))
    )
