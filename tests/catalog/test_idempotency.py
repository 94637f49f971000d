"""request_id on mutating catalog RPCs: replays return the first result, reuse is refused."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import func, select

from billing.v1 import catalog_pb2
from tests.catalog.support import call, fails, price, product
from tollbooth.db.models import IdempotencyKey, Price, Product
from tollbooth.rpc.servicer import request_fingerprint

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def count(db, model, *where) -> int:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_create_product_replay_returns_the_first_product(channel, db):  # type: ignore[no-untyped-def]
    first = product(channel, "Pro", request_id="req-1", description="d")
    again = product(channel, "Pro", request_id="req-1", description="d")
    assert again.product_id == first.product_id
    assert count(db, Product) == 1
    other = product(channel, "Pro", request_id="req-2", description="d")
    assert other.product_id != first.product_id  # another key is another request


def test_create_product_key_reused_with_other_parameters_is_refused(channel, db):  # type: ignore[no-untyped-def]
    product(channel, "Pro", request_id="req-1")
    fails(INVALID, "IDEMPOTENCY_KEY_REUSED", product, channel, "Team", request_id="req-1")
    assert count(db, Product) == 1


def test_create_price_replay_and_reuse(channel, db):  # type: ignore[no-untyped-def]
    prod = product(channel, "Pro").product_id
    first = price(channel, prod, request_id="p-1", lookup_key="pro", unit_amount=900)
    # The lookup_key is taken now; a replay still answers with the first price.
    again = price(channel, prod, request_id="p-1", lookup_key="pro", unit_amount=900)
    assert again.price_id == first.price_id
    fails(
        INVALID,
        "IDEMPOTENCY_KEY_REUSED",
        price,
        channel,
        prod,
        request_id="p-1",
        lookup_key="pro",
        unit_amount=1000,
    )
    assert count(db, Price) == 1


def test_failed_create_does_not_consume_the_request_id(channel, db):  # type: ignore[no-untyped-def]
    prod = product(channel, "Pro").product_id
    price(channel, prod, lookup_key="pro")
    fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        price,
        channel,
        prod,
        request_id="p-1",
        lookup_key="pro",
    )
    # rolled back with the effect (the setup's own creates carry keys of their own)
    assert count(db, IdempotencyKey, IdempotencyKey.key == "p-1") == 0
    created = price(channel, prod, request_id="p-1", lookup_key="pro-2")
    assert created.lookup_key == "pro-2"


def test_update_and_archive_take_request_ids_too(channel):  # type: ignore[no-untyped-def]
    prod = product(channel, "Pro").product_id

    def rename(name: str):  # type: ignore[no-untyped-def]
        return call(
            channel,
            "UpdateProduct",
            catalog_pb2.UpdateProductRequest(
                product=catalog_pb2.Product(product_id=prod, name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                request_id="u-1",
            ),
        )

    assert rename("Team").name == "Team"
    assert rename("Team").name == "Team"
    fails(INVALID, "IDEMPOTENCY_KEY_REUSED", rename, "Other")
    archive = catalog_pb2.ArchiveProductRequest(product_id=prod, request_id="a-1")
    assert not call(channel, "ArchiveProduct", archive).active
    assert not call(channel, "ArchiveProduct", archive).active


def test_concurrent_creates_with_one_request_id_make_one_product(channel, db):  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: product(channel, "Pro", request_id="same"), range(8)))
    assert len({p.product_id for p in results}) == 1
    assert count(db, Product) == 1


def test_fingerprint_ignores_request_id_and_map_order_but_not_values():
    def req(request_id: str, **metadata: str) -> catalog_pb2.CreateProductRequest:
        msg = catalog_pb2.CreateProductRequest(request_id=request_id)
        msg.product.name = "Pro"
        for k, v in metadata.items():
            msg.product.metadata[k] = v
        return msg

    assert request_fingerprint(req("a", x="1", y="2")) == request_fingerprint(
        req("b", y="2", x="1")
    )
    assert request_fingerprint(req("a", x="1")) != request_fingerprint(req("a", x="2"))


def test_concurrent_prices_with_one_lookup_key_make_one_active_price(channel, db):  # type: ignore[no-untyped-def]
    prod = product(channel, "Pro").product_id

    def attempt(i: int) -> str:
        try:
            price(channel, prod, lookup_key="pro", unit_amount=100 + i)
            return "created"
        except grpc.RpcError as err:
            return err.code().name

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert sorted(outcomes) == ["ALREADY_EXISTS"] * 7 + ["created"]
    assert count(db, Price) == 1


def test_a_retried_update_whose_mask_lists_the_same_paths_in_another_order_is_replayed(channel):  # type: ignore[no-untyped-def]
    """An update mask is a set of paths (AIP-161): a retry that rebuilt it in another order (or
    named a path twice) is the same request, replayed, never IDEMPOTENCY_KEY_REUSED."""
    prod = product(channel, "Pro", description="old").product_id

    def update(paths: list[str], name: str = "Team"):  # type: ignore[no-untyped-def]
        return call(
            channel,
            "UpdateProduct",
            catalog_pb2.UpdateProductRequest(
                product=catalog_pb2.Product(product_id=prod, name=name, description="new"),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                request_id="mask-order",
            ),
        )

    first = update(["name", "description"])
    assert (first.name, first.description) == ("Team", "new")
    assert update(["description", "name"]) == first
    assert update(["description", "name", "name"]) == first
    fails(INVALID, "IDEMPOTENCY_KEY_REUSED", update, ["name"])
    fails(INVALID, "IDEMPOTENCY_KEY_REUSED", update, ["description", "name"], "Other")


def test_fingerprint_ignores_the_order_of_update_mask_paths_but_not_the_paths():
    def req(*paths: str) -> catalog_pb2.UpdatePriceRequest:
        msg = catalog_pb2.UpdatePriceRequest(update_mask=field_mask_pb2.FieldMask(paths=paths))
        msg.price.price_id = "price_1"
        return msg

    assert request_fingerprint(req("nickname", "position")) == request_fingerprint(
        req("position", "nickname")
    )
    assert request_fingerprint(req("nickname")) != request_fingerprint(req("nickname", "position"))
    assert request_fingerprint(req()) != request_fingerprint(req("*"))
