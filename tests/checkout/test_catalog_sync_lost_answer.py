"""A catalog sync whose create reached the provider but whose answer was lost (the provider
made the product or price, our client timed out): the next sync finds that object by the
catalog id in its metadata and links it, instead of creating a second one. The idempotency
key alone does not cover it: Stripe forgets a key after 24 hours, and a product renamed since
sends other parameters under the same key (refused as IDEMPOTENCY_KEY_REUSED)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World, start_world
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason


@pytest.fixture
def impatient(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The provider client gives up after 1 s and never retries by itself."""
    w = start_world(database_url, tmp_path, STRIPE_TIMEOUT_SEC="1", STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def checkout(world: World, token: str, lookup_key: str, request_id: str) -> Any:
    return world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[checkout_pb2.CheckoutItem(lookup_key=lookup_key, quantity=1)],
            success_url="https://app.example/ok",
            request_id=request_id,
        ),
        metadata=bearer_md(token),
        timeout=30,
    )


def at_the_provider(world: World, kind: str, key: str, ident: str) -> list[str]:
    store = world.sandbox.app.state.store
    with store.lock:
        objects = store.all(kind)
    return [obj["id"] for _, obj in objects if (obj.get("metadata") or {}).get(key) == ident]


def forget_idempotency_keys(world: World) -> None:
    """What Stripe does 24 hours after a key's first use."""
    with world.sandbox.app.state.store.tx() as store:
        store.forget_idempotency_before(time.time() + 1)


@pytest.mark.parametrize(
    "path,then",
    [
        ("/v1/products", "key-expired"),
        ("/v1/products", "renamed"),
        ("/v1/prices", "key-expired"),
    ],
)
def test_a_create_whose_answer_was_lost_is_found_not_made_twice(
    impatient: World, path: str, then: str
) -> None:
    world = impatient
    price = world.price("pro")
    token, _ = world.token()
    stall = world.sandbox.stalls.add("POST", path, seconds=10.0, after=True)
    with pytest.raises(grpc.RpcError) as err:
        checkout(world, token, "pro", "first")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    stall.release.set()
    kind, ident = (
        ("product", price.product_id) if path == "/v1/products" else ("price", price.price_id)
    )
    assert len(at_the_provider(world, kind, f"tollbooth_{kind}_id", ident)) == 1  # made there
    if then == "key-expired":
        forget_idempotency_keys(world)
    else:
        world.catalog.UpdateProduct(
            catalog_pb2.UpdateProductRequest(
                product=catalog_pb2.Product(product_id=price.product_id, name="Pro, renamed"),
                update_mask={"paths": ["name"]},
                request_id=f"rename-{uuid.uuid4().hex}",
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )

    session = checkout(world, token, "pro", "second").session
    assert session.stripe_checkout_session_id
    products = at_the_provider(world, "product", "tollbooth_product_id", price.product_id)
    prices = at_the_provider(world, "price", "tollbooth_price_id", price.price_id)
    assert len(products) == 1, products
    assert len(prices) == 1, prices
    linked = world.catalog.GetPrice(
        catalog_pb2.GetPriceRequest(price_id=price.price_id), metadata=SERVICE_MD, timeout=10
    )
    assert linked.stripe_price_id == prices[0]
    assert world.stripe.v1.prices.retrieve(prices[0]).product == products[0]
