"""Webhooks through Envoy and the sidecar into the durable inbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import WEBHOOK_SECRET
from tollbooth.config import Settings
from tollbooth.webhooks import repository
from tollbooth.webhooks.sidecar import create_app, start_in_thread
from tollbooth.webhooks.signature import header

PATH = "/v1/billing/webhooks"


def event(event_type: str = "invoice.paid") -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": event_type,
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": {"id": "in_1"}},
        }
    ).encode()


def stored(stack, event_id: str) -> int:  # type: ignore[no-untyped-def]
    with stack.deps.db.transaction() as session:
        return repository.count_events(session, event_id)


def post(stack, body: bytes, signature: str | None):  # type: ignore[no-untyped-def]
    headers = {"Stripe-Signature": signature} if signature is not None else {}
    return stack.request("POST", PATH, body, headers)


def test_unsigned_event_is_400_and_not_stored(stack):  # type: ignore[no-untyped-def]
    body = event()
    resp = post(stack, body, None)
    assert resp.status == 400
    assert resp.reason == "WEBHOOK_SIGNATURE_INVALID"
    assert stored(stack, json.loads(body)["id"]) == 0


def test_event_signed_an_hour_in_the_future_is_400(stack):  # type: ignore[no-untyped-def]
    body = event()
    resp = post(stack, body, header(body, WEBHOOK_SECRET, int(time.time()) + 3600))
    assert resp.status == 400
    assert stored(stack, json.loads(body)["id"]) == 0


def test_event_signed_an_hour_ago_is_400(stack):  # type: ignore[no-untyped-def]
    body = event()
    assert post(stack, body, header(body, WEBHOOK_SECRET, int(time.time()) - 3600)).status == 400


def test_event_signed_with_another_secret_is_400(stack):  # type: ignore[no-untyped-def]
    body = event()
    assert post(stack, body, header(body, "whsec_other")).status == 400


def test_body_changed_after_signing_is_400(stack):  # type: ignore[no-untyped-def]
    body = event()
    sig = header(body, WEBHOOK_SECRET)
    reserialised = json.dumps(json.loads(body), indent=2).encode()
    assert post(stack, reserialised, sig).status == 400


def test_signed_event_posted_twice_is_stored_once(stack):  # type: ignore[no-untyped-def]
    body = event("checkout.session.completed")
    first = post(stack, body, header(body, WEBHOOK_SECRET))
    second = post(stack, body, header(body, WEBHOOK_SECRET))
    assert (first.status, second.status) == (200, 200)
    assert first.json() == {"received": True, "duplicate": False}
    assert second.json() == {"received": True, "duplicate": True}
    assert stored(stack, json.loads(body)["id"]) == 1


def test_unknown_event_type_is_acknowledged_and_stored(stack):  # type: ignore[no-untyped-def]
    body = event("some.future.event")
    resp = post(stack, body, header(body, WEBHOOK_SECRET))
    assert resp.status == 200 and resp.json()["duplicate"] is False
    assert stored(stack, json.loads(body)["id"]) == 1


def test_stored_payload_is_the_raw_body(stack):  # type: ignore[no-untyped-def]
    from tollbooth.db.models import StripeEvent

    body = event()
    assert post(stack, body, header(body, WEBHOOK_SECRET)).status == 200
    with stack.deps.db.transaction() as session:
        row = session.get(StripeEvent, json.loads(body)["id"])
        assert row is not None and bytes(row.payload) == body


def test_signed_body_that_is_not_an_event_is_a_permanent_400(stack):  # type: ignore[no-untyped-def]
    body = b'{"hello": "world"}'
    resp = post(stack, body, header(body, WEBHOOK_SECRET))
    assert resp.status == 400 and resp.reason == "WEBHOOK_EVENT_INVALID"


@pytest.mark.parametrize(
    "signature",
    ["t=" + "9" * 400 + ",v1=00", "t=\u0663,v1=00", "t=1,v1=\u00e9\u00e9", "v1=00", "t=,v1="],
)
def test_a_hostile_signature_header_is_400_not_a_crash(stack, signature):  # type: ignore[no-untyped-def]
    body = event()
    resp = post(stack, body, signature.encode().decode("unicode_escape"))
    assert resp.status == 400 and resp.reason == "WEBHOOK_SIGNATURE_INVALID"
    assert stack.request("GET", "/api/v1/catalog/products").status == 401  # still serving


def test_a_correctly_signed_but_unstorable_event_is_400_not_503(stack):  # type: ignore[no-untyped-def]
    for body in (
        json.dumps({"id": "evt_x", "type": "a", "api_version": "v" * 61}).encode(),
        json.dumps({"id": "evt_y", "type": "a", "created": 10**13}).encode(),
        b'{"id": "evt_z", "type": "a", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        resp = post(stack, body, header(body, WEBHOOK_SECRET))
        assert resp.status == 400 and resp.reason == "WEBHOOK_EVENT_INVALID"


def test_sidecar_answers_5xx_when_the_server_cannot_record(tmp_path):  # type: ignore[no-untyped-def]
    """Nothing committed means a retryable answer, so Stripe delivers again."""
    import urllib.error
    import urllib.request

    from tests.conftest import make_env
    from tests.devstack import HeldPorts

    # The server's port stays held (refusing) for the whole test: nothing comes to answer.
    with HeldPorts(2) as held:
        port, dead = held.ports
        settings = Settings.from_env(make_env("sqlite://", BILLING_GRPC_PORT=str(dead)))
        held.release(port)
        server = start_in_thread(settings, port)
        try:
            body = event()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{PATH}",
                data=body,
                method="POST",
                headers={"Stripe-Signature": header(body, WEBHOOK_SECRET)},
            )
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(req, timeout=30)
            assert exc.value.code == 503
            assert json.loads(exc.value.read())["error"]["reason"] == "SERVICE_UNAVAILABLE"
        finally:
            server.stop()


def test_sidecar_refuses_to_start_without_a_secret() -> None:
    settings = Settings.from_env(
        {
            "STRIPE_API_KEY": "sk_test_x",
            "BILLING_SERVICE_KEYS": "a-backend-service-key",
            "BILLING_JWT_KEYS": "k:0123456789abcdef0123456789abcdef",
        }
    )
    assert settings.webhook_secrets == ()
    with pytest.raises(RuntimeError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(settings)
    proc = subprocess.run(
        [sys.executable, "-m", "tollbooth.cli", "serve-sidecar"],
        env={
            "STRIPE_API_KEY": "sk_test_x",
            "BILLING_SERVICE_KEYS": "a-backend-service-key",
            "BILLING_JWT_KEYS": "k:0123456789abcdef0123456789abcdef",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": ":".join(sys.path),
        },
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert proc.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in proc.stderr


def test_stalled_connections_do_not_hold_threads(stack):  # type: ignore[no-untyped-def]
    """200 clients that send half a request and stall cost no thread each, and the sidecar
    keeps answering everyone else."""
    import socket
    import threading

    before = threading.active_count()
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", stack.settings.sidecar_port), timeout=5)
            s.sendall(
                b"POST /v1/billing/webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            socks.append(s)
        assert threading.active_count() - before < 10
        body = event()
        resp = post(stack, body, header(body, WEBHOOK_SECRET))
        assert resp.status == 200
    finally:
        for s in socks:
            s.close()
