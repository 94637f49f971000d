"""Usage over REST through a real Envoy: seed 001's event as written, batches, metrics and
GetUsage on both surfaces."""

from __future__ import annotations

import pytest

from tests.conftest import SERVICE_KEY

pytestmark = pytest.mark.envoy

KEY = {"x-api-key": SERVICE_KEY}
# Seed 001, step 6, byte for byte in meaning: camelCase names, the account by its alias.
SEED_001_EVENT = {
    "uniqueId": "evt_123456",
    "account": "acc_abc123",
    "eventName": "api_call",
    "timestamp": "2025-03-09T15:03:17Z",
    "properties": {"endpoint": "/v1/analyze", "tokens": 1500},
}
MARCH = "start_time=2025-03-01T00:00:00Z&end_time=2025-04-01T00:00:00Z"


@pytest.fixture(scope="module")
def token(stack) -> str:  # type: ignore[no-untyped-def]
    """acc_abc123 exists (seed 001, step 1) and holds a usage:read token."""
    r = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "acc_abc123", "scopes": ["usage:read"]}, KEY
    )
    assert r.status == 200, r.body
    return r.json()["access_token"]


def test_seed_001_event_is_accepted_then_duplicate(stack, token) -> None:  # type: ignore[no-untyped-def]
    first = stack.request("POST", "/mgt/v1/events", SEED_001_EVENT, KEY)
    again = stack.request("POST", "/mgt/v1/events", SEED_001_EVENT, KEY)
    assert (first.status, first.json()["status"]) == (200, "EVENT_STATUS_ACCEPTED")
    assert first.json()["unique_id"] == "evt_123456"
    assert (again.status, again.json()["status"]) == (200, "EVENT_STATUS_DUPLICATE")


def test_rejected_single_event_is_http_400_with_the_reason(stack, token) -> None:  # type: ignore[no-untyped-def]
    r = stack.request("POST", "/mgt/v1/events", {**SEED_001_EVENT, "account": "nobody"}, KEY)
    assert (r.status, r.reason) == (400, "ACCOUNT_UNKNOWN")


def test_whitespace_only_unique_id_gets_the_derived_id(stack, token) -> None:  # type: ignore[no-untyped-def]
    body = {**SEED_001_EVENT, "uniqueId": "   ", "properties": {"tokens": 31}}
    blank = stack.request("POST", "/mgt/v1/events", body, KEY)
    without = {k: v for k, v in body.items() if k != "uniqueId"}
    again = stack.request("POST", "/mgt/v1/events", without, KEY)
    assert (blank.status, blank.json()["status"]) == (200, "EVENT_STATUS_ACCEPTED"), blank.body
    assert blank.json()["unique_id"].startswith("derived_")
    assert (again.status, again.json()["status"]) == (200, "EVENT_STATUS_DUPLICATE"), again.body
    assert again.json()["unique_id"] == blank.json()["unique_id"]


def test_events_take_the_service_key_only(stack, token) -> None:  # type: ignore[no-untyped-def]
    assert stack.request("POST", "/mgt/v1/events", SEED_001_EVENT).status == 401
    bearer = {"authorization": f"Bearer {token}"}
    assert stack.request("POST", "/mgt/v1/events", SEED_001_EVENT, bearer).status == 403


def test_batch_answers_each_event(stack, token) -> None:  # type: ignore[no-untyped-def]
    events = [
        {**SEED_001_EVENT, "uniqueId": "rest_b1", "properties": {"tokens": "0.5"}},
        {**SEED_001_EVENT, "uniqueId": "rest_b2", "account": "nobody"},
        {**SEED_001_EVENT, "uniqueId": "rest_b1"},
    ]
    r = stack.request("POST", "/mgt/v1/events:batch", {"events": events}, KEY)
    assert r.status == 200, r.body
    got = [(x["unique_id"], x["status"], x["reason"]) for x in r.json()["results"]]
    assert got == [
        ("rest_b1", "EVENT_STATUS_ACCEPTED", ""),
        ("rest_b2", "EVENT_STATUS_REJECTED", "ACCOUNT_UNKNOWN"),
        ("rest_b1", "EVENT_STATUS_DUPLICATE", ""),
    ]


def test_metric_and_usage_on_both_surfaces(stack, token) -> None:  # type: ignore[no-untyped-def]
    stack.request("POST", "/mgt/v1/events", SEED_001_EVENT, KEY)
    stack.request(
        "POST",
        "/mgt/v1/events",
        {
            **SEED_001_EVENT,
            "uniqueId": "rest_u2",
            "properties": {"endpoint": "/v1/chat", "tokens": 0.25},
        },
        KEY,
    )
    r = stack.request(
        "POST",
        "/mgt/v1/metrics?request_id=rest-tokens",
        {
            "code": "rest_tokens",
            "event_name": "api_call",
            "aggregation": "AGGREGATION_SUM",
            "property": "tokens",
        },
        KEY,
    )
    assert r.status == 200, r.body
    assert (
        stack.request("GET", "/mgt/v1/metrics/rest_tokens", None, KEY).json()["property"]
        == "tokens"
    )
    mgt = stack.request(
        "GET",
        f"/mgt/v1/accounts/acc_abc123/usage?metric_code=rest_tokens&{MARCH}&group_by=endpoint",
        None,
        KEY,
    )
    assert mgt.status == 200, mgt.body
    body = mgt.json()
    # Other tests of this module may add events to the account; these two are always there.
    groups = {g["key"]: g["value"] for g in body["groups"]}
    assert groups["/v1/analyze"] == "1500" and groups["/v1/chat"] == "0.25"
    api = stack.request(
        "GET",
        f"/api/v1/usage?metric_code=rest_tokens&{MARCH}",
        None,
        {"authorization": f"Bearer {token}"},
    )
    assert api.status == 200, api.body
    assert api.json()["value"] == body["value"]
    assert api.json()["billing_account_id"] == body["billing_account_id"]


def test_bearer_cannot_read_another_account_on_the_api_surface(stack, token) -> None:  # type: ignore[no-untyped-def]
    other = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "someone-else"}, KEY
    ).json()
    r = stack.request(
        "GET",
        f"/api/v1/usage?account={other['billing_account_id']}&metric_code=rest_tokens&{MARCH}",
        None,
        {"authorization": f"Bearer {token}"},
    )
    assert (r.status, r.reason) == (404, "NOT_FOUND")


def test_metrics_crud_paths(stack, token) -> None:  # type: ignore[no-untyped-def]
    created = stack.request(
        "POST",
        "/mgt/v1/metrics?request_id=rest-crud",
        {"code": "rest_crud", "event_name": "x", "aggregation": "AGGREGATION_COUNT"},
        KEY,
    )
    assert created.status == 200, created.body
    patched = stack.request(
        "PATCH", "/mgt/v1/metrics/rest_crud?request_id=rest-crud-1", {"name": "Crud"}, KEY
    )
    assert (patched.status, patched.json()["name"]) == (200, "Crud")
    listed = stack.request("GET", "/mgt/v1/metrics?page_size=100", None, KEY).json()
    assert "rest_crud" in [m["code"] for m in listed["metrics"]]
    assert (
        stack.request(
            "DELETE", "/mgt/v1/metrics/rest_crud?request_id=rest-crud-2", None, KEY
        ).status
        == 200
    )
    assert stack.request("GET", "/mgt/v1/metrics/rest_crud", None, KEY).status == 404
