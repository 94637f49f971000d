"""A price stored before grant expiries were capped (at 100 years) may hold a larger one: its
purchase still grants, the expiry counted as the cap. Before, dating the grant overflowed
Python's datetime and the paid checkout's event failed on every retry (charged, nothing
granted). SQLite and PostgreSQL, through the sandbox's checkout."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World
from tollbooth.catalog.fields import MAX_GRANT_EXPIRY_SEC
from tollbooth.db.models import CreditGrant, Price


def test_a_stored_expiry_past_the_cap_grants_with_the_cap(world: World) -> None:
    spec = catalog_pb2.CreditGrantSpec(
        credit_type="calls", amount="100", on_purchase=True, expires_after_seconds=3600
    )
    made = world.price("old-pack", recurring=False, amount=500, grants=[spec])
    with world.deps.db.transaction() as session:  # as stored before the cap existed
        row = session.get(Price, made.price_id)
        assert row is not None
        row.credit_grants = [{**row.credit_grants[0], "expires_after_sec": 400_000_000_000}]
    token, account = world.token()
    before = dt.datetime.now(dt.UTC)
    world.pay(world.buy(token, "old-pack").session.stripe_checkout_session_id)
    world.settled()
    assert world.balance(account, "calls") == "100"
    with world.deps.db.transaction(readonly=True) as session:
        [expire_at] = session.scalars(
            select(CreditGrant.expire_at).where(CreditGrant.billing_account_id == account)
        ).all()
    assert expire_at is not None
    expire_at = expire_at if expire_at.tzinfo else expire_at.replace(tzinfo=dt.UTC)
    cap = dt.timedelta(seconds=MAX_GRANT_EXPIRY_SEC)
    assert before + cap - dt.timedelta(days=2) <= expire_at <= before + cap + dt.timedelta(days=2)
