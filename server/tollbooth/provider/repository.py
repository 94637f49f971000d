"""Every query of the provider links: which account, product and price are which at Stripe."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tollbooth.db.models import BillingAccount, Price, Product

# -- customers --------------------------------------------------------------------------------


def account_by_customer(session: Session, customer_id: str) -> BillingAccount | None:
    return session.scalars(
        select(BillingAccount).where(BillingAccount.stripe_customer_id == customer_id)
    ).first()


def link_customer(session: Session, account_id: str, customer_id: str) -> None:
    """Set the account's provider customer unless one is set already (first writer wins)."""
    session.execute(
        update(BillingAccount)
        .where(BillingAccount.id == account_id, BillingAccount.stripe_customer_id.is_(None))
        .values(stripe_customer_id=customer_id)
    )


def billed_accounts(session: Session) -> list[BillingAccount]:
    return list(
        session.scalars(
            select(BillingAccount)
            .where(BillingAccount.stripe_customer_id.is_not(None))
            .order_by(BillingAccount.id)
        )
    )


# -- catalog links ----------------------------------------------------------------------------


def link_product(session: Session, product_id: str, stripe_product_id: str) -> None:
    """Link an unlinked product to a provider product no other product links (one catalog
    product per provider product, migration 0032); else nothing changes."""
    held = select(Product.id).where(Product.stripe_product_id == stripe_product_id).exists()
    session.execute(
        update(Product)
        .where(Product.id == product_id, Product.stripe_product_id.is_(None), ~held)
        .values(stripe_product_id=stripe_product_id)
    )


def link_price(session: Session, price_id: str, stripe_price_id: str) -> None:
    session.execute(
        update(Price)
        .where(Price.id == price_id, Price.stripe_price_id.is_(None))
        .values(stripe_price_id=stripe_price_id)
    )


def stripe_price_held(session: Session, stripe_price_id: str) -> bool:
    """Whether an active price is linked to this provider price (it names one at most)."""
    held = session.scalar(
        select(Price.id)
        .where(Price.stripe_price_id == stripe_price_id, Price.active.is_(True))
        .limit(1)
    )
    return held is not None


def price_by_stripe_id(session: Session, stripe_price_id: str) -> Price | None:
    return session.scalars(
        select(Price)
        .where(Price.stripe_price_id == stripe_price_id)
        .order_by(Price.active.desc(), Price.seq.desc())
    ).first()


def unsynced_active_prices(session: Session) -> list[Price]:
    return list(
        session.scalars(
            select(Price)
            .where(Price.active.is_(True), Price.stripe_price_id.is_(None))
            .order_by(Price.seq)
        )
    )


def recurring_prices_in(
    session: Session, groups: Collection[str], price_ids: Collection[str]
) -> list[tuple[Price, Product]]:
    """Active recurring prices of active products in `groups` or among `price_ids`, linked to
    the provider or not, in the catalog's order."""
    if not groups and not price_ids:
        return []
    rows = session.execute(
        select(Price, Product)
        .join(Product, Product.id == Price.product_id)
        .where(
            Price.active.is_(True),
            Product.active.is_(True),
            Price.type == "recurring",
            or_(Price.subscription_group.in_(list(groups)), Price.id.in_(list(price_ids))),
        )
        .order_by(Product.position, Product.seq, Price.position, Price.seq)
    )
    return [(price, product) for price, product in rows]
