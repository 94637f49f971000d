"""The in-memory catalog (tollbooth.catalog.snapshot): served from memory while nothing
changes, and a change committed anywhere is served by another process within the stated bound.

No timing assertions: each check polls until the change is visible, with a deadline of the
bound plus slack, and asserts that it became visible."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from sqlalchemy import text

from billing.v1 import catalog_pb2, catalog_pb2_grpc
from tests.catalog.support import SLACK_SEC, poll
from tests.conftest import SERVICE_KEY, make_env
from tests.devstack import free_port
from tollbooth.catalog.snapshot import BOUND_SEC, Snapshot
from tollbooth.db import Database
from tollbooth.db.models import Product

SVC = (("x-api-key", SERVICE_KEY),)


@contextmanager
def replica(url: str) -> Iterator[grpc.Channel]:
    """`serve-grpc` in its own process (as `run` starts a replica's processes)."""
    with replica_process(url) as (channel, _pid):
        yield channel


@contextmanager
def replica_process(url: str) -> Iterator[tuple[grpc.Channel, int]]:
    """`replica`, with the process id of the server."""
    port = free_port()
    env = {
        **os.environ,
        **make_env(url, BILLING_GRPC_PORT=str(port), BILLING_LOG_LEVEL="WARNING"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", "serve-grpc"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            yield channel, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nicknames(channel: grpc.Channel, product_id: str) -> list[str]:
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    reply = stub.ListPrices(
        catalog_pb2.ListPricesRequest(product_id=product_id), metadata=SVC, timeout=10
    )
    return [p.nickname for p in reply.prices]


@pytest.mark.postgres
def test_a_change_through_one_process_is_served_by_another_within_the_bound(
    pg_url: str,
) -> None:
    with replica(pg_url) as writer, replica(pg_url) as reader:
        stub = catalog_pb2_grpc.CatalogServiceStub(writer)
        product = stub.CreateProduct(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(name="Snapshot plan"), request_id=str(uuid.uuid4())
            ),
            metadata=SVC,
            timeout=10,
        )
        assert poll(lambda: nicknames(reader, product.product_id) == [], BOUND_SEC + SLACK_SEC)
        for n in range(3):  # the reader's snapshot is warm: each change must still show
            stub.CreatePrice(
                catalog_pb2.CreatePriceRequest(
                    price=catalog_pb2.Price(
                        product_id=product.product_id,
                        currency="usd",
                        unit_amount=100 + n,
                        type=catalog_pb2.PRICE_TYPE_ONE_TIME,
                        nickname=f"tier {n}",
                    ),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=SVC,
                timeout=10,
            )
            wanted = [f"tier {i}" for i in range(n + 1)]
            assert poll(
                lambda w=wanted: nicknames(reader, product.product_id) == w,  # type: ignore[misc]
                BOUND_SEC + SLACK_SEC,
            ), nicknames(reader, product.product_id)
            # The writer reads its own write at once (no wait).
            assert nicknames(writer, product.product_id) == wanted

        # A change made outside any server (as `catalog apply` or an operator's SQL would).
        db = Database(pg_url)
        try:
            with db.transaction() as session:
                session.execute(
                    text("UPDATE prices SET nickname = 'renamed' WHERE product_id = :p"),
                    {"p": product.product_id},
                )
        finally:
            db.dispose()
        assert poll(
            lambda: nicknames(reader, product.product_id) == ["renamed"] * 3,
            BOUND_SEC + SLACK_SEC,
        ), nicknames(reader, product.product_id)


@pytest.mark.postgres
def test_the_snapshot_is_reused_until_a_commit_and_dropped_without_its_listener(
    pg_url: str,
) -> None:
    db, other = Database(pg_url), Database(pg_url)
    snapshot = Snapshot(db)
    try:
        assert poll(lambda: snapshot.get() is not None, BOUND_SEC + SLACK_SEC)
        first = snapshot.get()
        assert first is not None and snapshot.get() is first  # nothing changed: no reload
        with other.transaction() as session:
            session.add(Product(id="prod_snap", name="Snap", position=1, seq=999_999))

        def reloaded() -> bool:
            current = snapshot.get()
            return current is not None and "prod_snap" in current.by_id

        assert poll(reloaded, BOUND_SEC + SLACK_SEC)
        snapshot.close()  # the listener stops: the snapshot can no longer vouch for itself
        assert poll(lambda: snapshot.get() is None, BOUND_SEC + SLACK_SEC)
    finally:
        db.dispose()
        other.dispose()


def test_sqlite_reads_the_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'billing.db'}")
    try:
        assert Snapshot(db).get() is None
    finally:
        db.dispose()
