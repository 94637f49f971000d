"""`tollbooth catalog apply --sync-stripe`: link to or create the provider's products and prices."""

from __future__ import annotations

import uuid

import grpc
import pytest
import yaml
from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, make_env
from tollbooth.catalog import as_code
from tollbooth.db.models import Price, Product

CATALOG = {
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
                },
                {
                    "lookup_key": "pro_yearly",
                    "currency": "usd",
                    "unit_amount": 9000,
                    "interval": "year",
                },
            ],
        }
    ]
}


def test_apply_links_existing_provider_prices_and_creates_the_rest(
    world: World, tmp_path, monkeypatch, capsys
):  # type: ignore[no-untyped-def]
    existing = world.stripe.v1.prices.create(
        params={
            "product_data": {"name": "Pro (made in the dashboard)"},
            "unit_amount": 900,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
        }
    )
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG))
    for key, value in make_env(
        world.settings.database_url, BILLING_SANDBOX_PORT=str(world.settings.sandbox_port)
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert as_code.main(["apply", str(path), "--sync-stripe"]) == 0
    out = capsys.readouterr().out
    assert f"link price pro_monthly -> {existing.id}" in out
    assert "create provider price for pro_yearly" in out
    with world.deps.db.transaction(readonly=True) as session:
        links = dict(session.execute(select(Price.lookup_key, Price.stripe_price_id)).all())
    assert links["pro_monthly"] == existing.id
    yearly = world.stripe.v1.prices.retrieve(links["pro_yearly"])
    assert (yearly.unit_amount, yearly.recurring.interval) == (9000, "year")
    before = len(world.stripe.v1.prices.list(params={"limit": 100}).data)
    assert as_code.main(["apply", str(path), "--sync-stripe"]) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    assert len(world.stripe.v1.prices.list(params={"limit": 100}).data) == before


def test_sync_never_links_a_provider_price_another_active_price_holds(
    world: World, tmp_path, monkeypatch, capsys
):  # type: ignore[no-untyped-def]
    """`legacy` is linked to the dashboard's price by hand; `pro_monthly` carries that price's
    lookup_key and amount, but a provider price names one active price (the webhooks map it
    back): the sync makes `pro_monthly` a provider price of its own instead of a second link."""
    existing = world.stripe.v1.prices.create(
        params={
            "product_data": {"name": "Pro (made in the dashboard)"},
            "unit_amount": 900,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
        }
    )
    catalog = {
        "products": [
            {
                "key": "pro",
                "name": "Pro",
                "prices": [
                    {
                        "lookup_key": "legacy",
                        "currency": "usd",
                        "unit_amount": 900,
                        "interval": "month",
                        "stripe_price_id": existing.id,
                    },
                    {
                        "lookup_key": "pro_monthly",
                        "currency": "usd",
                        "unit_amount": 900,
                        "interval": "month",
                    },
                ],
            }
        ]
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    for key, value in make_env(
        world.settings.database_url, BILLING_SANDBOX_PORT=str(world.settings.sandbox_port)
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert as_code.main(["apply", str(path), "--sync-stripe"]) == 0
    assert "create provider price for pro_monthly" in capsys.readouterr().out
    with world.deps.db.transaction(readonly=True) as session:
        links = dict(session.execute(select(Price.lookup_key, Price.stripe_price_id)).all())
    assert links["legacy"] == existing.id
    assert links["pro_monthly"] not in (None, existing.id)
    own = world.stripe.v1.prices.retrieve(links["pro_monthly"])
    assert (own.unit_amount, own.recurring.interval) == (900, "month")


def test_sync_links_a_provider_product_to_one_catalog_product_only(
    world: World, tmp_path, monkeypatch, capsys
):  # type: ignore[no-untyped-def]
    """The dashboard holds one Stripe product with two prices; the catalog sells them under two
    products. Each price links to its dashboard price, but a Stripe product is linked by one
    catalog product (migration 0032): the first keeps it, the second's product stays unlinked
    (before: the second link broke the unique index and the sync stopped with a traceback)."""
    product = world.stripe.v1.products.create(params={"name": "Plans (dashboard)"})
    made = {
        key: world.stripe.v1.prices.create(
            params={
                "product": product.id,
                "unit_amount": amount,
                "currency": "usd",
                "recurring": {"interval": "month"},
                "lookup_key": key,
            }
        ).id
        for key, amount in (("basic_m", 500), ("team_m", 2500))
    }
    catalog = {
        "products": [
            {
                "key": name,
                "name": name.title(),
                "prices": [
                    {
                        "lookup_key": key,
                        "currency": "usd",
                        "unit_amount": amount,
                        "interval": "month",
                    }
                ],
            }
            for name, key, amount in (("basic", "basic_m", 500), ("team", "team_m", 2500))
        ]
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    for key, value in make_env(
        world.settings.database_url, BILLING_SANDBOX_PORT=str(world.settings.sandbox_port)
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert as_code.main(["apply", str(path), "--sync-stripe"]) == 0
    out = capsys.readouterr().out
    assert f"link price basic_m -> {made['basic_m']}" in out
    assert f"link price team_m -> {made['team_m']}" in out
    with world.deps.db.transaction(readonly=True) as session:
        prices = dict(session.execute(select(Price.lookup_key, Price.stripe_price_id)).all())
        products = session.execute(select(Product.key, Product.stripe_product_id)).all()
    assert prices == made
    assert sorted(link or "" for _, link in products) == ["", product.id]


def test_a_checkout_whose_provider_product_another_product_holds_is_refused_cleanly(
    world: World,
):  # type: ignore[no-untyped-def]
    """Product A's provider product exists (made for A: its metadata names A) but A is not
    linked (the link write was lost); an operator has linked product B to it by hand. A's first
    checkout finds that provider product and cannot link it (one catalog product per provider
    product): a clear ALREADY_EXISTS naming the holder, and A stays unlinked (before: an
    assertion, INTERNAL)."""
    price_a = world.price(f"held_{uuid.uuid4().hex[:6]}")
    made_for_a = world.stripe.v1.products.create(
        params={"name": "A (made for A)", "metadata": {"tollbooth_product_id": price_a.product_id}}
    )
    product_b = world.catalog.CreateProduct(
        catalog_pb2.CreateProductRequest(
            product=catalog_pb2.Product(name="B", stripe_product_id=made_for_a.id),
            request_id=f"product-{uuid.uuid4().hex}",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    ).product_id
    token, _ = world.token()
    with pytest.raises(grpc.RpcError) as refused:
        world.buy(token, price_a.lookup_key)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS, refused.value.details()
    assert product_b in (refused.value.details() or "")
    with world.deps.db.transaction(readonly=True) as session:
        assert session.get(Product, price_a.product_id).stripe_product_id is None  # type: ignore[union-attr]
        assert session.get(Product, product_b).stripe_product_id == made_for_a.id  # type: ignore[union-attr]
