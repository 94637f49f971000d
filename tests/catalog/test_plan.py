"""Pure planning of catalog-as-code changes: file vs stored catalog, no database."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tollbooth.catalog import as_code, spec
from tollbooth.catalog import plan as p
from tollbooth.catalog.plan import PlanError, StoredPrice, StoredProduct

FILE = {
    "products": [
        {
            "key": "pro",
            "name": "Pro",
            "prices": [
                {
                    "lookup_key": "pro_monthly",
                    "currency": "usd",
                    "unit_amount": 900,
                    "interval": "month",
                    "nickname": "Monthly",
                },
                {"lookup_key": "pro_pack", "currency": "usd", "unit_amount": 500},
            ],
        },
        {"key": "team", "name": "Team"},
    ],
}


def desired(document=None):  # type: ignore[no-untyped-def]
    return spec.parse(document or FILE)


def stored_from(catalog, ids=None):  # type: ignore[no-untyped-def]
    """The stored catalog exactly as `catalog` describes it."""
    products, prices = [], []
    seq = 0
    for product in catalog.products:
        seq += 1
        product_id = f"prod_{product.key}"
        products.append(StoredProduct(product_id, True, seq, product.fields))
        for price in product.prices:
            seq += 1
            prices.append(
                StoredPrice(
                    f"price_{price.lookup_key}", True, seq, replace(price, product_id=product_id)
                )
            )
    return products, prices


def kinds(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [type(a).__name__ for a in result.actions]


def test_empty_store_creates_products_before_their_prices():
    result = as_code.plan(desired(), [], [])
    assert kinds(result) == ["CreateProduct", "CreateProduct", "CreatePrice", "CreatePrice"]
    assert {a.product_key for a in result.actions if isinstance(a, p.CreatePrice)} == {"pro"}
    assert all(a.product_id is None for a in result.actions if isinstance(a, p.CreatePrice))
    assert len(result.lines()) == 4


def test_matching_store_plans_nothing():
    products, prices = stored_from(desired())
    result = as_code.plan(desired(), products, prices, archive_missing=True)
    assert not result and result.lines() == []


def test_mutable_changes_are_updates_in_place():
    products, prices = stored_from(desired())
    changed = desired(
        {
            "products": [
                {
                    **FILE["products"][0],
                    "name": "Pro plan",
                    "prices": [
                        {
                            **FILE["products"][0]["prices"][0],
                            "nickname": "Per month",
                            "stackable": True,
                        },
                        FILE["products"][0]["prices"][1],
                    ],
                },
                FILE["products"][1],
            ]
        }
    )
    result = as_code.plan(changed, products, prices)
    assert kinds(result) == ["UpdateProduct", "UpdatePrice"]
    update_product, update_price = result.actions
    assert update_product.paths == ("name",) and update_product.product_id == "prod_pro"
    assert update_price.paths == ("stackable", "nickname")
    assert update_price.price_id == "price_pro_monthly"


@pytest.mark.parametrize(
    "change",
    [
        {"unit_amount": 1000},
        {"currency": "eur"},
        {"interval": "year"},
        {"interval_count": 3},
        {"type": "one_time", "interval": None},
    ],
)
def test_changed_amount_or_shape_replaces_the_price(change):  # type: ignore[no-untyped-def]
    products, prices = stored_from(desired())
    monthly = {
        k: v for k, v in {**FILE["products"][0]["prices"][0], **change}.items() if v is not None
    }
    changed = desired(
        {
            "products": [
                {**FILE["products"][0], "prices": [monthly, FILE["products"][0]["prices"][1]]},
                FILE["products"][1],
            ]
        }
    )
    result = as_code.plan(changed, products, prices)
    assert kinds(result) == ["ArchivePrice", "CreatePrice"]  # archive first frees the key
    archive, create = result.actions
    assert archive.price_id == "price_pro_monthly"
    assert next(iter(change)) in archive.why
    assert create.product_id == "prod_pro" and create.fields.lookup_key == "pro_monthly"


def test_missing_entries_are_archived_only_when_asked():
    products, prices = stored_from(desired())
    extra_product = StoredProduct(
        "prod_manual", True, 99, replace(products[1].fields, name="M", key="")
    )
    gone_product = StoredProduct("prod_old", False, 98, products[1].fields)
    extra_price = StoredPrice("price_extra", True, 100, replace(prices[0].fields, lookup_key=""))
    manual_price = StoredPrice(
        "price_manual",
        True,
        101,
        replace(prices[0].fields, lookup_key="m", product_id="prod_manual"),
    )
    all_products = [*products, extra_product, gone_product]
    all_prices = [*prices, extra_price, manual_price]
    assert not as_code.plan(desired(), all_products, all_prices)
    result = as_code.plan(desired(), all_products, all_prices, archive_missing=True)
    assert kinds(result) == ["ArchivePrice", "ArchiveProduct"]
    assert result.actions[0].price_id == "price_extra"
    assert result.actions[1].product_id == "prod_manual"  # the archived one stays as it is


def test_archived_product_with_the_key_is_restored():
    products, prices = stored_from(desired())
    products[1] = replace(products[1], active=False)
    result = as_code.plan(desired(), products, prices)
    assert kinds(result) == ["RestoreProduct"]
    assert result.actions[0].product_id == "prod_team"


def test_lookup_key_held_under_another_product_moves():
    products, prices = stored_from(desired())
    moved = desired(
        {
            "products": [
                {**FILE["products"][0], "prices": [FILE["products"][0]["prices"][0]]},
                {**FILE["products"][1], "prices": [FILE["products"][0]["prices"][1]]},
            ]
        }
    )
    result = as_code.plan(moved, products, prices, archive_missing=True)
    assert kinds(result) == ["ArchivePrice", "CreatePrice"]
    assert result.actions[0].price_id == "price_pro_pack"
    assert result.actions[1].product_id == "prod_team"


def test_stripe_links_are_left_alone_unless_the_file_names_them():
    products, prices = stored_from(desired())
    products[0] = replace(
        products[0], fields=replace(products[0].fields, stripe_product_id="prod_S1")
    )
    assert not as_code.plan(desired(), products, prices)
    linked = desired(
        {"products": [{**FILE["products"][0], "stripe_product_id": "prod_S2"}, FILE["products"][1]]}
    )
    result = as_code.plan(linked, products, prices)
    assert kinds(result) == ["UpdateProduct"]
    assert result.actions[0].paths == ("stripe_product_id",)


def test_two_active_products_with_one_key_is_an_error():
    products, prices = stored_from(desired())
    twin = replace(products[0], id="prod_twin", seq=50)
    with pytest.raises(PlanError):
        as_code.plan(desired(), [*products, twin], prices)


def test_plan_lines_name_each_action():
    products, prices = stored_from(desired())
    products[0] = replace(products[0], fields=replace(products[0].fields, name="Old"))
    (line,) = as_code.plan(desired(), products, prices).lines()
    assert line.startswith("update product pro (prod_pro)")
    assert "'Old' -> 'Pro'" in line
