"""The inbox RPC: exactly once per event id, even under concurrent deliveries."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET, bearer_md
from tests.devstack import grpc_server
from tests.helpers import error_reason
from tollbooth.webhooks import repository
from tollbooth.webhooks.signature import header


def payload(event_id: str, **fields: object) -> bytes:
    body = {"id": event_id, "object": "event", "type": "invoice.paid", "created": 1_700_000_000}
    body.update(fields)
    return json.dumps(body).encode()


def send(channel, body: bytes, signature: str | None = None):  # type: ignore[no-untyped-def]
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    return stub.RecordStripeEvent(
        webhook_pb2.RecordStripeEventRequest(
            payload=body,
            stripe_signature=header(body, WEBHOOK_SECRET) if signature is None else signature,
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )


def record(channel, event_id: str):  # type: ignore[no-untyped-def]
    return send(channel, payload(event_id))


def test_redelivery_is_reported_duplicate_and_stored_once(channel, db):  # type: ignore[no-untyped-def]
    assert record(channel, "evt_a").duplicate is False
    assert record(channel, "evt_a").duplicate is True
    with db.transaction() as session:
        assert repository.count_events(session, "evt_a") == 1


def test_a_service_key_without_a_stripe_signature_records_nothing(channel, db):  # type: ignore[no-untyped-def]
    """A backend key alone cannot forge an event: 403, nothing stored."""
    body = payload("evt_forged", type="checkout.session.completed")
    for signature in (
        "",
        "t=1,v1=00",
        header(body, "whsec_guessed"),
        header(b"{}", WEBHOOK_SECRET),
    ):
        with pytest.raises(grpc.RpcError) as exc:
            send(channel, body, signature)
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(exc.value) == "STRIPE_SIGNATURE_REQUIRED"
    with db.transaction() as session:
        assert repository.count_events(session, "evt_forged") == 0


def test_a_stale_signature_records_nothing(channel, db):  # type: ignore[no-untyped-def]
    body = payload("evt_stale")
    with pytest.raises(grpc.RpcError) as exc:
        send(channel, body, header(body, WEBHOOK_SECRET, int(time.time()) - 3600))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        payload(""),
        payload("evt_\u0000nul"),
        payload("evt_" + "x" * 200),
        payload("evt_ok", type="invoice.\u0000paid"),
        payload("evt_ok", type=""),
        payload("evt_ok", api_version="v" * 61),
        payload("evt_ok", created=10**13),
        payload("evt_ok", created=-1),
        payload("evt_ok", created="yesterday"),
        payload("evt_ok", livemode="yes"),
        b'{"id": "evt_deep", "type": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=[
        "not-json",
        "not-an-object",
        "empty-id",
        "nul-in-id",
        "long-id",
        "nul-in-type",
        "empty-type",
        "long-api-version",
        "created-after-9999",
        "created-negative",
        "created-not-int",
        "livemode-not-bool",
        "nested-100k-deep",
    ],
)
def test_a_signed_event_that_can_never_be_stored_is_a_permanent_invalid_argument(channel, db, body):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        send(channel, body)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "WEBHOOK_EVENT_INVALID"
    with db.transaction() as session:
        assert repository.count_events(session) == 0


def test_bearer_tokens_cannot_record_events(channel, deps):  # type: ignore[no-untyped-def]
    token, _ = deps.codec.issue(
        billing_account_id="acct_x", principal_id="p", user_id="u", scopes=["checkout"], ttl_sec=60
    )
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.RecordStripeEvent(
            webhook_pb2.RecordStripeEventRequest(payload=payload("evt_b")),
            metadata=bearer_md(token),
            timeout=10,
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.postgres
def test_concurrent_deliveries_on_postgres_store_one(pg_url):  # type: ignore[no-untyped-def]
    from tests.conftest import make_env
    from tollbooth.app import Deps
    from tollbooth.config import Settings
    from tollbooth.db import Database

    deps = Deps.build(Settings.from_env(make_env(pg_url)), Database(pg_url))
    with grpc_server(deps) as port:
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
            deps.db.dispose()
