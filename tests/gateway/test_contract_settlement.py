"""The contract as re-settled on 2026-12-01, through Envoy: seed spellings still accepted,
request_id required on mutating RPCs (in the query where the body is the resource)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.conftest import SERVICE_KEY

pytestmark = pytest.mark.envoy
SERVICE = {"x-api-key": SERVICE_KEY}


def _lifetime(token: str) -> int:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"]) - int(claims["iat"])


def test_seed_000s_session_ttl_sec_and_the_settled_session_ttl_seconds(stack) -> None:  # type: ignore[no-untyped-def]
    for body, lifetime in (
        ({"session_ttl_sec": 600}, 600),
        ({"session_ttl_seconds": 300}, 300),
        ({"sessionTtlSeconds": 120}, 120),
        ({}, 900),
    ):
        resp = stack.request(
            "POST",
            "/mgt/v1/token/issue",
            {"principal_id": f"ttl-{uuid.uuid4().hex[:8]}", "user_id": "u", **body},
            SERVICE,
        )
        assert resp.status == 200, resp.body
        issued = resp.json()
        assert _lifetime(issued["access_token"]) == lifetime, body
        assert "expire_time" in issued and "expires_at" not in issued


def test_seed_001s_event_timestamp_is_the_event_time(stack) -> None:  # type: ignore[no-untyped-def]
    principal = f"evt-{uuid.uuid4().hex[:8]}"
    stack.request("POST", "/mgt/v1/token/issue", {"principal_id": principal}, SERVICE)
    for key in ("timestamp", "event_time"):
        event = {
            "uniqueId": f"e-{uuid.uuid4().hex}",
            "account": principal,
            "eventName": "api.request",
            key: "2025-03-09T15:03:17Z",
            "properties": {"tokens": 3},
        }
        resp = stack.request("POST", "/mgt/v1/events", event, SERVICE)
        assert resp.status == 200, resp.body
        assert resp.json()["status"] == "EVENT_STATUS_ACCEPTED", key


def test_a_mutating_rpc_without_request_id_is_400_field_required(stack) -> None:  # type: ignore[no-untyped-def]
    created = stack.request("POST", "/mgt/v1/catalog/products", {"name": "No key"}, SERVICE)
    assert (created.status, created.reason) == (400, "FIELD_REQUIRED")
    (info,) = [d for d in created.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["metadata"]["field"] == "request_id"
    keyed = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Keyed"},
        SERVICE,
    )
    assert keyed.status == 200, keyed.body
    principal = f"void-{uuid.uuid4().hex[:8]}"
    stack.request("POST", "/mgt/v1/token/issue", {"principal_id": principal}, SERVICE)
    base = f"/mgt/v1/accounts/{principal}/credits"
    grant = stack.request(
        "POST",
        f"{base}/grants",
        {"creditType": "units", "amount": "5", "requestId": uuid.uuid4().hex},
        SERVICE,
    ).json()
    void = stack.request("POST", f"{base}/grants/{grant['grant_id']}:void", {}, SERVICE)
    assert (void.status, void.reason) == (400, "FIELD_REQUIRED")
    void = stack.request(
        "POST", f"{base}/grants/{grant['grant_id']}:void", {"requestId": "v-1"}, SERVICE
    )
    assert void.status == 200 and void.json()["state"] == "GRANT_STATE_VOIDED"
