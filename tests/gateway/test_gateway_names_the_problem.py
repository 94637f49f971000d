"""The gateway names what is wrong: unknown JSON fields, wrong JSON types, refused origins."""

from __future__ import annotations

import pytest

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def test_a_misspelt_grant_field_is_400_field_unknown_naming_it(stack):  # type: ignore[no-untyped-def]
    body = {"credit_type": "api", "amount": "5", "expiresAt": "2030-01-01T00:00:00Z"}
    resp = stack.request("POST", "/mgt/v1/accounts/acct_x/credits/grants", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "FIELD_UNKNOWN"
    info = resp.json()["details"][0]
    assert info["metadata"]["field"] == "expiresAt"
    assert "expiresAt" in resp.json()["message"]


def test_an_unknown_nested_field_is_named_with_its_path(stack):  # type: ignore[no-untyped-def]
    body = {"principal_id": "p-nested", "scopes": [], "extra": {"deep": 1}}
    resp = stack.request("POST", "/mgt/v1/token/issue", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "FIELD_UNKNOWN"
    assert resp.json()["details"][0]["metadata"]["field"] == "extra"


def test_proto_and_json_names_and_free_form_keys_pass(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", {"principalId": "p-camel"}, SERVICE)
    assert resp.status == 200, resp.body
    resp = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-snake"}, SERVICE)
    assert resp.status == 200, resp.body


def test_unknown_field_refused_before_anything_is_written(stack):  # type: ignore[no-untyped-def]
    body = {"principal_id": "p-never", "sesion_ttl_sec": 60}
    assert stack.request("POST", "/mgt/v1/token/issue", body, SERVICE).reason == "FIELD_UNKNOWN"
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-never"}, SERVICE)
    assert again.json()["account_created"] is True


def test_a_wrong_json_type_names_the_field_and_the_expected_type(stack):  # type: ignore[no-untyped-def]
    body = {"principal_id": "p-type", "session_ttl_sec": "month"}
    resp = stack.request("POST", "/mgt/v1/token/issue", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "MALFORMED_REQUEST"
    message = resp.json()["message"]
    assert "session_ttl_sec" in message and "TYPE_INT" in message


def test_not_json_at_all_is_still_malformed(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", b"{not json", SERVICE)
    assert resp.status == 400
    assert resp.reason == "MALFORMED_REQUEST"


@pytest.mark.parametrize("path", ["/api/v1/credits/balance", "/mgt/v1/token/issue"])
def test_a_preflight_from_an_origin_not_allowed_is_403_with_a_reason(stack, path):  # type: ignore[no-untyped-def]
    headers = {"origin": "http://evil.example", "access-control-request-method": "POST"}
    resp = stack.request("OPTIONS", path, None, headers)
    assert resp.status == 403
    assert resp.reason == "ORIGIN_NOT_ALLOWED"
    assert "origin" in resp.json()["message"]


def test_a_preflight_from_an_allowed_origin_still_passes(stack):  # type: ignore[no-untyped-def]
    headers = {"origin": "http://localhost:3000", "access-control-request-method": "GET"}
    resp = stack.request("OPTIONS", "/api/v1/credits/balance", None, headers)
    assert resp.status == 200
    assert resp.headers.get("access-control-allow-origin") == "http://localhost:3000"


def test_free_form_keys_under_struct_fields_are_not_checked(stack):  # type: ignore[no-untyped-def]
    body = {"event_name": "x", "account": "p", "properties": {"any.k,ey": {"thing": 1}}}
    resp = stack.request("POST", "/mgt/v1/events", body, SERVICE)
    assert resp.reason != "FIELD_UNKNOWN", resp.body


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        (
            "/mgt/v1/token/issue",
            b'{"principal_id": "p-dup-a", "principal_id": "p-dup-b"}',
            "principal_id",
        ),
        (
            "/mgt/v1/accounts/acct_x/credits/grants",
            b'{"credit_type": "api", "amount": "1", "amount": "1000000"}',
            "amount",
        ),
        (
            "/mgt/v1/events:batch",
            b'{"events": [{"account": "p", "event_name": "x", "event_name": "y",'
            b' "timestamp": "2025-03-09T15:03:17Z"}]}',
            "events.event_name",
        ),
    ],
    ids=["top-level", "amount", "in-a-list"],
)
def test_a_key_written_twice_in_one_json_object_is_400_malformed_naming_it(  # type: ignore[no-untyped-def]
    stack, path, raw, field
):
    # Envoy's transcoder would keep the last silently (it refuses a repeated key only under a
    # google.protobuf.Struct, as a map key); which one the sender meant is unknown.
    resp = stack.request("POST", path, raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "twice" in resp.json()["message"]


def test_the_same_key_in_sibling_objects_is_no_duplicate(stack):  # type: ignore[no-untyped-def]
    body = (
        b'{"events": [{"unique_id": "dup-sib-1", "account": "nobody", "event_name": "x",'
        b' "timestamp": "2025-03-09T15:03:17Z"}, {"unique_id": "dup-sib-2", "account": "nobody",'
        b' "event_name": "x", "timestamp": "2025-03-09T15:03:17Z"}]}'
    )
    resp = stack.request("POST", "/mgt/v1/events:batch", body, SERVICE)
    assert resp.status == 200, resp.body
    assert [r["reason"] for r in resp.json()["results"]] == ["ACCOUNT_UNKNOWN"] * 2


def test_a_duplicate_key_changes_nothing(stack):  # type: ignore[no-untyped-def]
    raw = b'{"principal_id": "p-dup-never", "principal_id": "p-dup-never"}'
    assert stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE).reason == "MALFORMED_REQUEST"
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-dup-never"}, SERVICE)
    assert again.json()["account_created"] is True
