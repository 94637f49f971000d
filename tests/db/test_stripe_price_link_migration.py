"""Migration 0031 on a catalog where active prices already share a Stripe price: the newest
keeps the link (the price the webhooks' mapping already chose), the older active ones are
unlinked, archived prices and other links stay; afterwards a second active link is refused by
the database itself."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, column, create_engine, select
from sqlalchemy import table as sa_table
from sqlalchemy.exc import IntegrityError

from tollbooth.db import normalize_url
from tollbooth.db.migrate import downgrade, upgrade
from tollbooth.db.types import UTCDateTime

PRODUCTS = sa_table(
    "products",
    column("id", String),
    column("name", String),
    column("description", String),
    column("active", Boolean),
    column("position", Integer),
    column("seq", BigInteger),
    column("metadata", JSON),
    column("entitlements", JSON),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
)
PRICES = sa_table(
    "prices",
    column("id", String),
    column("product_id", String),
    column("currency", String),
    column("unit_amount", BigInteger),
    column("type", String),
    column("stripe_price_id", String),
    column("stackable", Boolean),
    column("credit_grants", JSON),
    column("entitlements", JSON),
    column("active", Boolean),
    column("position", Integer),
    column("seq", BigInteger),
    column("nickname", String),
    column("metadata", JSON),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
)


def test_shared_active_links_keep_the_newest_and_the_index_refuses_a_new_one(
    database_url: str,
) -> None:
    downgrade(database_url, "0030")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    engine = create_engine(normalize_url(database_url))

    def row(ident: str, seq: int, stripe: str | None, active: bool = True) -> dict[str, object]:
        return {
            "id": ident,
            "product_id": "prod_m",
            "currency": "usd",
            "unit_amount": 100 * seq,
            "type": "one_time",
            "stripe_price_id": stripe,
            "stackable": False,
            "credit_grants": [],
            "entitlements": [],
            "active": active,
            "position": seq,
            "seq": seq,
            "nickname": "",
            "metadata": {},
            "created_at": now,
            "updated_at": now,
        }

    try:
        with engine.begin() as conn:
            conn.execute(
                PRODUCTS.insert().values(
                    id="prod_m",
                    name="M",
                    description="",
                    active=True,
                    position=1,
                    seq=1,
                    metadata={},
                    entitlements=[],
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                PRICES.insert(),
                [
                    row("price_archived", 1, "price_S", active=False),
                    row("price_older", 2, "price_S"),
                    row("price_newest", 3, "price_S"),
                    row("price_other", 4, "price_T"),
                    row("price_unlinked", 5, None),
                ],
            )
        upgrade(database_url)
        with engine.connect() as conn:
            links = dict(conn.execute(select(PRICES.c.id, PRICES.c.stripe_price_id)).all())
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(PRICES.insert().values(**row("price_late", 6, "price_S")))
    finally:
        engine.dispose()
        upgrade(database_url)
    assert links == {
        "price_archived": "price_S",
        "price_older": None,
        "price_newest": "price_S",
        "price_other": "price_T",
        "price_unlinked": None,
    }
