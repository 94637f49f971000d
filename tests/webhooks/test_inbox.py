"""The inbox RPC: exactly once per event id, even under concurrent deliveries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason
from tollbooth.webhooks import repository


def record(channel, event_id: str):  # type: ignore[no-untyped-def]
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    return stub.RecordStripeEvent(
        webhook_pb2.RecordStripeEventRequest(
            event_id=event_id, type="invoice.paid", payload=b'{"id":"%s"}' % event_id.encode()
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )


def test_redelivery_is_reported_duplicate_and_stored_once(channel, db):  # type: ignore[no-untyped-def]
    assert record(channel, "evt_a").duplicate is False
    assert record(channel, "evt_a").duplicate is True
    with db.transaction() as session:
        assert repository.count_events(session, "evt_a") == 1


def test_missing_event_id_is_invalid(channel):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        record(channel, "")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "FIELD_REQUIRED"


def test_bearer_tokens_cannot_record_events(channel, deps):  # type: ignore[no-untyped-def]
    token, _ = deps.codec.issue(
        billing_account_id="acct_x", principal_id="p", user_id="u", scopes=["checkout"], ttl_sec=60
    )
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.RecordStripeEvent(
            webhook_pb2.RecordStripeEventRequest(event_id="evt_b"),
            metadata=bearer_md(token),
            timeout=10,
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.postgres
def test_concurrent_deliveries_on_postgres_store_one(pg_url):  # type: ignore[no-untyped-def]
    from tests.conftest import make_env
    from tollbooth.config import Settings
    from tollbooth.db import Database
    from tollbooth.deps import Deps
    from tollbooth.rpc.server import build_server

    deps = Deps.build(Settings.from_env(make_env(pg_url)), Database(pg_url))
    server, port, _ = build_server(deps, "127.0.0.1:0")
    server.start()
    try:
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(8)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: record(channels[i % 8], "evt_race"), range(16)))
        assert sum(not a.duplicate for a in answers) == 1
        with deps.db.transaction() as session:
            assert repository.count_events(session, "evt_race") == 1
        for ch in channels:
            ch.close()
    finally:
        server.stop(grace=None).wait()
        deps.db.dispose()
