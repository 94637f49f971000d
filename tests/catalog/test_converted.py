"""Listing messages built once per catalog snapshot (`Catalog.converted`): the same bytes as
converting on every call, each caller's own hint, and nothing kept past a change."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from billing.v1 import catalog_pb2
from tests.catalog.support import (
    MONTHLY,
    SLACK_SEC,
    bearer_metadata,
    list_prices,
    poll,
    price,
    product,
)
from tollbooth.catalog import convert
from tollbooth.catalog.snapshot import BOUND_SEC
from tollbooth.db import Database
from tollbooth.db.models import Price

H = catalog_pb2
HINT = {
    "": H.PURCHASE_HINT_UNSPECIFIED,
    "BUY": H.PURCHASE_HINT_BUY,
    "MANAGE": H.PURCHASE_HINT_MANAGE,
    "CURRENT": H.PURCHASE_HINT_CURRENT,
}


def _row(n: int, **fields) -> Price:  # type: ignore[no-untyped-def]
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=dt.UTC)
    values = {
        "id": f"price_{n}",
        "product_id": "prod_1",
        "currency": "usd",
        "unit_amount": 1000 + n,
        "type": "recurring",
        "interval": "month",
        "interval_count": 1,
        "lookup_key": f"tier-{n}",
        "stripe_price_id": None,
        "stackable": False,
        "subscription_group": "plan",
        "credit_grants": [{"credit_type": "api", "amount": "5", "on_purchase": True}],
        "entitlements": [{"feature": "pro", "value": "true"}],
        "active": True,
        "position": n,
        "nickname": f"Tier {n}",
        "attributes": {f"k{i}": f"v{i}" for i in range(8)},
        "created_at": at,
        "updated_at": at,
        **fields,
    }
    return Price(**values)


def test_kept_messages_give_the_same_bytes_and_each_caller_its_own_hints() -> None:
    rows = [_row(n) for n in range(3)]
    memo: convert.Memo = {}
    for hints in (["CURRENT", "MANAGE", "BUY"], ["", "", ""], ["BUY", "", "MANAGE"], ["", "", ""]):
        got = convert.list_prices_out(rows, hints, "next", memo)
        fresh = catalog_pb2.ListPricesResponse(
            prices=[convert.price_out(r, h) for r, h in zip(rows, hints, strict=True)],
            next_page_token="next",
        )
        assert got.SerializeToString() == fresh.SerializeToString()
        assert [p.hint for p in got.prices] == [HINT[h] for h in hints]
    # Built once per price and hint, and each kept message carries the hint it is kept for.
    assert sorted(memo) == sorted(
        {("price", f"price_{n}", h) for n, h in [(0, "CURRENT"), (1, "MANAGE"), (2, "BUY")]}
        | {("price", f"price_{n}", "") for n in range(3)}
        | {("price", "price_0", "BUY"), ("price", "price_2", "MANAGE")}
    )
    for (_, _, hint), message in memo.items():
        assert message.hint == HINT[hint]


def test_an_edit_made_outside_the_server_is_listed_and_no_hint_leaks(channel, database_url):  # type: ignore[no-untyped-def]
    plan = product(channel, "Converted")
    for n in range(2):
        price(
            channel,
            plan.product_id,
            type=H.PRICE_TYPE_RECURRING,
            recurring=MONTHLY,
            lookup_key=f"conv-{n}",
            metadata={"tier": "old"},
        )
    bearer = bearer_metadata(channel, "converted-user")
    for _ in range(2):  # warm: the process's snapshot has built its messages
        assert [p.hint for p in list_prices(channel, plan.product_id, bearer).prices] == [
            H.PURCHASE_HINT_BUY
        ] * 2
        # A service caller after a bearer one, on the same kept messages: no hint at all.
        listed = list_prices(channel, plan.product_id).prices
        assert [(p.hint, dict(p.metadata)) for p in listed] == [
            (H.PURCHASE_HINT_UNSPECIFIED, {"tier": "old"})
        ] * 2

    # As `catalog apply` or an operator's SQL would: not through this process's servicer.
    db = Database(database_url)
    try:
        with db.transaction() as session:
            session.execute(
                update(Price)
                .where(Price.product_id == plan.product_id)
                .values(attributes={"tier": "new"})
            )
    finally:
        db.dispose()

    def shows_new() -> bool:
        listed = list_prices(channel, plan.product_id, bearer).prices
        return [dict(p.metadata) for p in listed] == [{"tier": "new"}] * 2

    assert poll(shows_new, BOUND_SEC + SLACK_SEC)
