"""Migration 0032 on a catalog where products already share a Stripe product: the newest keeps
the link, the older ones (archived or not) are unlinked, other links stay; afterwards a second
link is refused by the database itself, an archived product's included."""

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
    column("stripe_product_id", String),
    column("metadata", JSON),
    column("entitlements", JSON),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
)


def test_shared_product_links_keep_the_newest_and_the_index_refuses_a_new_one(
    database_url: str,
) -> None:
    downgrade(database_url, "0031")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    engine = create_engine(normalize_url(database_url))

    def row(ident: str, seq: int, stripe: str | None, active: bool = True) -> dict[str, object]:
        return {
            "id": ident,
            "name": ident,
            "description": "",
            "active": active,
            "position": seq,
            "seq": seq,
            "stripe_product_id": stripe,
            "metadata": {},
            "entitlements": [],
            "created_at": now,
            "updated_at": now,
        }

    try:
        with engine.begin() as conn:
            conn.execute(
                PRODUCTS.insert(),
                [
                    row("prod_archived", 1, "prod_S", active=False),
                    row("prod_older", 2, "prod_S"),
                    row("prod_newest", 3, "prod_S"),
                    row("prod_other", 4, "prod_T"),
                    row("prod_unlinked", 5, None),
                    row("prod_unlinked_too", 6, None),
                ],
            )
        upgrade(database_url)
        with engine.connect() as conn:
            links = dict(conn.execute(select(PRODUCTS.c.id, PRODUCTS.c.stripe_product_id)).all())
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(PRODUCTS.insert().values(**row("prod_late", 7, "prod_T", active=False)))
    finally:
        engine.dispose()
        upgrade(database_url)
    assert links == {
        "prod_archived": None,
        "prod_older": None,
        "prod_newest": "prod_S",
        "prod_other": "prod_T",
        "prod_unlinked": None,
        "prod_unlinked_too": None,
    }
