"""Every query of the entitlements room: one statement reads what an account holds and what
each held price and its product grant."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.db.models import Price, Product
from tollbooth.entitlements.grants import HeldPrice
from tollbooth.subscriptions.repository import Holding, holdings_select


def held_prices(session: Session, account_id: str) -> list[HeldPrice]:
    """The account's holdings joined to their prices and products, in one round trip: the
    holdings through the account's indexes, prices and products by primary key."""
    held = holdings_select(account_id).subquery("held")
    stmt = (
        select(
            held.c.price_id,
            held.c.quantity,
            held.c.source,
            held.c.period_start,
            held.c.period_end,
            held.c.created_at,
            Price.entitlements,
            Product.entitlements,
        )
        .select_from(held)
        .join(Price, Price.id == held.c.price_id)
        .join(Product, Product.id == Price.product_id)
    )
    return [
        HeldPrice(Holding(*row[:6]), row[6] or [], row[7] or [])
        for row in session.execute(stmt).all()
    ]
