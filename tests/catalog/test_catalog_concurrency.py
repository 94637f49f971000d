"""Catalog writes raced from real concurrent clients over two server replicas on PostgreSQL:
one winner per natural key (the others ALREADY_EXISTS, never INTERNAL), one effect per
request_id, no lost update between masks, update against archive."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.support import call, price, product
from tests.helpers import all_at_once, outcome

pytestmark = pytest.mark.postgres

CLIENTS = 8
ROUNDS = 6


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def update_product(channel: grpc.Channel, product_id: str, **fields: str) -> catalog_pb2.Product:
    return call(
        channel,
        "UpdateProduct",
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        ),
    )


def update_price(channel: grpc.Channel, price_id: str, **fields: object) -> catalog_pb2.Price:
    return call(
        channel,
        "UpdatePrice",
        catalog_pb2.UpdatePriceRequest(
            price=catalog_pb2.Price(price_id=price_id, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        ),
    )


def test_concurrent_creates_of_one_product_key_make_one(replica_channels) -> None:  # type: ignore[no-untyped-def]
    key = fresh("k")[:40]
    results = all_at_once(
        [
            lambda i=i: product(replica_channels[i % 2], f"client {i}", key=key)
            for i in range(CLIENTS)
        ]
    )
    assert sorted(outcome(r) for r in results) == ["ALREADY_EXISTS/ALREADY_EXISTS"] * (
        CLIENTS - 1
    ) + ["OK"]


def test_concurrent_prices_with_one_lookup_key_make_one(replica_channels) -> None:  # type: ignore[no-untyped-def]
    owner = product(replica_channels[0], "lookup owner")
    key = fresh("lk")
    results = all_at_once(
        [
            lambda i=i: price(
                replica_channels[i % 2], owner.product_id, lookup_key=key, unit_amount=100 + i
            )
            for i in range(CLIENTS)
        ]
    )
    assert sorted(outcome(r) for r in results) == ["ALREADY_EXISTS/ALREADY_EXISTS"] * (
        CLIENTS - 1
    ) + ["OK"]


def test_two_prices_renamed_to_one_lookup_key_at_once_one_wins(replica_channels) -> None:  # type: ignore[no-untyped-def]
    owner = product(replica_channels[0], "rename owner")
    for _ in range(ROUNDS):
        a, b = (price(replica_channels[0], owner.product_id) for _ in range(2))
        key = fresh("lk")
        results = all_at_once(
            [
                lambda ch=ch, p=p, key=key: update_price(ch, p.price_id, lookup_key=key)
                for ch, p in zip(replica_channels, (a, b), strict=True)
            ]
        )
        assert sorted(outcome(r) for r in results) == ["ALREADY_EXISTS/ALREADY_EXISTS", "OK"]


def test_copies_of_one_create_under_one_request_id_make_one_product(replica_channels) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    same = all_at_once(
        [lambda i=i: product(replica_channels[i % 2], "once", key) for i in range(CLIENTS)]
    )
    assert {outcome(r) for r in same} == {"OK"}
    assert len({r.SerializeToString(deterministic=True) for r in same}) == 1  # type: ignore[union-attr]
    other = all_at_once(
        [lambda i=i: product(replica_channels[i % 2], f"other {i}", key) for i in range(CLIENTS)]
    )
    assert {outcome(r) for r in other} == {"INVALID_ARGUMENT/IDEMPOTENCY_KEY_REUSED"}


def test_two_updates_naming_different_fields_keep_both(replica_channels) -> None:  # type: ignore[no-untyped-def]
    one, two = replica_channels
    for _ in range(ROUNDS):
        made = product(one, "before", description="before")
        results = all_at_once(
            [
                lambda made=made: update_product(one, made.product_id, name="after"),
                lambda made=made: update_product(two, made.product_id, description="after"),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        got = call(one, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
        assert (got.name, got.description) == ("after", "after")


def test_an_update_racing_an_archive_keeps_both(replica_channels) -> None:  # type: ignore[no-untyped-def]
    one, two = replica_channels
    owner = product(one, "archive owner")
    for _ in range(ROUNDS):
        made = price(one, owner.product_id, nickname="before")
        results = all_at_once(
            [
                lambda made=made: update_price(one, made.price_id, nickname="after"),
                lambda made=made: call(
                    two, "ArchivePrice", catalog_pb2.ArchivePriceRequest(price_id=made.price_id)
                ),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        got = call(one, "GetPrice", catalog_pb2.GetPriceRequest(price_id=made.price_id))
        assert (got.nickname, got.active) == ("after", False)


ARCHIVES = {
    "product": ("ArchiveProduct", "GetProduct", "product_id"),
    "price": ("ArchivePrice", "GetPrice", "price_id"),
}


@pytest.mark.parametrize("what", sorted(ARCHIVES))
def test_concurrent_archives_answer_the_one_archive(replica_channels, what: str) -> None:  # type: ignore[no-untyped-def]
    """Archiving twice changes nothing (its update time included): archives at once on two
    replicas archive once, and every caller is answered the archived entry as stored."""
    one = replica_channels[0]
    archive, get, field = ARCHIVES[what]

    def request(method: str, ident: str):  # type: ignore[no-untyped-def]
        return getattr(catalog_pb2, f"{method}Request")(**{field: ident})

    for _ in range(ROUNDS // 2):
        made = product(one, "to archive")
        ident = made.product_id if what == "product" else price(one, made.product_id).price_id
        answers = all_at_once(
            [
                lambda i=i, ident=ident: call(
                    replica_channels[i % 2], archive, request(archive, ident)
                )
                for i in range(CLIENTS)
            ]
        )
        assert {outcome(a) for a in answers} == {"OK"}
        stored = call(one, get, request(get, ident))
        assert not stored.active
        assert all(a == stored for a in answers), [a.update_time for a in answers]  # type: ignore[union-attr]


def test_a_price_created_while_its_product_is_being_archived_is_refused(
    replica_channels, pg_shared_url: str
) -> None:  # type: ignore[no-untyped-def]
    """CreatePrice racing ArchiveProduct, on PostgreSQL, without timing luck: the archive
    (`catalog.service.archive_product`, the RPC's own code) runs in a transaction of this
    test that stays open until a replica's CreatePrice is found waiting on it (by its lock
    wait); then it commits. The create must then see the archive: 400 ARCHIVED, and the
    archived product holds no price. (It used to read the product unlocked, as still active,
    and wait only in its insert's foreign-key check, then insert: a new active price under an
    archived product, answered OK after the archive had committed.)"""
    from sqlalchemy import select, text

    from tollbooth.catalog import service
    from tollbooth.db import Database
    from tollbooth.db.models import Price

    one, two = replica_channels
    db = Database(pg_shared_url)
    try:
        for channel in (one, two):
            made = product(one, "archived while priced")
            with db.transaction() as session:
                holder = int(session.scalar(text("SELECT pg_backend_pid()")))
                service.archive_product(session, made.product_id)
                session.flush()
                create = run_in_thread(lambda ch=channel, made=made: price(ch, made.product_id))
                waiting = wait_blocked_by(db, holder)
                assert waiting, "CreatePrice never waited on the archive's transaction"
            assert outcome(create()) == "FAILED_PRECONDITION/ARCHIVED"
            with db.transaction(readonly=True) as session:
                prices = session.scalars(
                    select(Price).where(Price.product_id == made.product_id)
                ).all()
            assert prices == []
            got = call(one, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
            assert not got.active
    finally:
        db.dispose()


def run_in_thread(fn):  # type: ignore[no-untyped-def]
    """Start `fn` in a thread; the returned function joins it: its result or its RpcError."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except grpc.RpcError as err:
            out.append(err)

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> object:
        thread.join(timeout=60)
        assert out, "the call never ended"
        return out[0]

    return join


def wait_blocked_by(db, holder: int) -> bool:  # type: ignore[no-untyped-def]
    """Whether some backend comes to wait on a lock that backend `holder` holds (within 30 s),
    found by its lock wait, never by its statement's text."""
    from sqlalchemy import text

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with db.transaction(readonly=True) as session:
            if session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE :holder = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock'"
                ),
                {"holder": holder},
            ):
                return True
        time.sleep(0.02)
    return False
