"""The versions a kept copy is checked with (migration 0036, `tollbooth.db.versions`): bumped in
the transaction of the change, visible with it and never before, once per catalog transaction,
per account for holdings, and by nothing else (credits and usage take no lock for them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.entitlements.test_holdings import _purchase
from tests.entitlements.test_holdings import _seed as seed_holdings
from tollbooth.db import Database, versions
from tollbooth.db.models import Price, Product

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def test_a_catalog_change_bumps_the_version_once_at_its_commit_and_a_rollback_not(
    db: Database,
) -> None:
    before = versions.read(db).catalog
    assert before is not None
    with db.transaction() as session:
        session.add(Product(id="prod_v", name="V", position=1, seq=1))
        session.flush()
        session.add_all(
            [
                Price(
                    id=f"price_v{n}",
                    product_id="prod_v",
                    currency="usd",
                    unit_amount=100 + n,
                    type="one_time",
                    position=n,
                    seq=n,
                )
                for n in range(2)
            ]
        )
        session.flush()
        session.execute(text("UPDATE prices SET nickname = 'v' WHERE product_id = 'prod_v'"))
        # Not visible to anyone before the rows are (another connection reads it now).
        assert versions.read(db).catalog == before
    assert versions.read(db).catalog == before + 1
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.execute(text("UPDATE products SET name = 'W' WHERE id = 'prod_v'"))
        raise RuntimeError("rolled back")
    assert versions.read(db).catalog == before + 1


def test_a_holdings_change_bumps_its_account_only(db: Database) -> None:
    mine, once, _ = seed_holdings(db)
    other, _, _ = seed_holdings(db)
    before, others = versions.read(db, mine), versions.read(db, other)
    with db.transaction() as session:
        _purchase(session, mine, once)
    after = versions.read(db, mine)
    assert after.account == (before.account or 0) + 1
    assert (after.catalog, after.every) == (before.catalog, before.every)
    assert versions.read(db, other) == others
    assert not versions.covers(before.holdings(), after.holdings())
    assert versions.covers(after.holdings(), before.holdings())


def test_only_catalog_and_holdings_tables_bump_a_version(db: Database) -> None:
    """Debits, grants, usage and every other table take no lock on a version row."""
    with db.transaction() as session:
        tables = set(
            session.scalars(
                text(
                    "SELECT DISTINCT c.relname FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
                    "WHERE p.proname IN ('tollbooth_catalog_bump', 'tollbooth_holdings_bump')"
                )
            )
        )
    assert tables == {"products", "prices", "subscriptions", "subscription_items", "purchases"}
