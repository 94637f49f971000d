"""The REST surface through a real Envoy process: transcoding, auth, errors, routing."""

from __future__ import annotations

import pytest

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def test_issue_token_without_service_key_is_401_with_reason(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "acct-42"})
    assert resp.status == 401
    assert resp.reason == "CREDENTIALS_MISSING"


def test_issue_token_with_service_key_returns_snake_case_json(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "acct-42"}, SERVICE)
    assert resp.status == 200
    body = resp.json()
    assert body["billing_account_id"].startswith("acct_")
    assert body["principal_id"] == "acct-42"
    assert body["access_token"].count(".") == 2
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "acct-42"}, SERVICE)
    assert again.json()["billing_account_id"] == body["billing_account_id"]


def test_wrong_service_key_is_401(stack):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "p"}, {"x-api-key": "not-a-key"}
    )
    assert resp.status == 401
    assert resp.reason == "SERVICE_KEY_INVALID"


def test_a_bearer_rpc_checks_auth_before_parsing(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("GET", "/api/v1/usage?metric_code=api")
    assert resp.status == 401


@pytest.mark.parametrize(
    "method,path", [("GET", "/api/v1/billing"), ("POST", "/api/v1/checkout/sessions")]
)
def test_built_checkout_rpcs_answer_past_auth(stack, method, path):  # type: ignore[no-untyped-def]
    """Built now: a service key that names no account is a 400 from the handler, not a 501."""
    body = {} if method == "POST" else None
    resp = stack.request(method, path, body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "FIELD_REQUIRED"
    assert stack.request(method, path, body).status == 401


def test_bearer_token_on_mgt_path_is_403(stack):  # type: ignore[no-untyped-def]
    token = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-mgt"}, SERVICE).json()[
        "access_token"
    ]
    resp = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "p-mgt"},
        {"authorization": f"Bearer {token}"},
    )
    assert resp.status == 403
    assert resp.reason == "SERVICE_KEY_REQUIRED"


def test_surface_header_cannot_be_forged_to_unlock_mgt(stack):  # type: ignore[no-untyped-def]
    """Envoy overwrites x-billing-surface, so a bearer cannot pass as an /api call on /mgt."""
    token = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "p-forge"}, SERVICE
    ).json()["access_token"]
    resp = stack.request(
        "GET",
        "/mgt/v1/accounts/p-forge/credits/balance?type=x",
        headers={"authorization": f"Bearer {token}", "x-billing-surface": "api"},
    )
    assert resp.status == 403


def test_unknown_api_path_is_404(stack):  # type: ignore[no-untyped-def]
    assert stack.request("GET", "/api/v1/nothing-here", None, SERVICE).status == 404


def test_raw_grpc_paths_are_not_exposed(stack):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST",
        "/billing.v1.WebhookService/RecordStripeEvent",
        b"",
        {"content-type": "application/grpc", **SERVICE},
    )
    # Envoy answers itself (404, or gRPC UNIMPLEMENTED); nothing reaches an upstream.
    headers = {k.lower(): v for k, v in resp.headers.items()}
    assert "x-envoy-upstream-service-time" not in headers
    assert resp.status == 404 or headers.get("grpc-status") == "12"


def test_wrong_json_type_is_400(stack):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "p", "session_ttl_sec": "many"}, SERVICE
    )
    assert resp.status == 400


def test_body_over_limit_is_413(stack):  # type: ignore[no-untyped-def]
    big = {"principal_id": "p", "name": "x" * (stack.settings.max_body_bytes + 10)}
    resp = stack.request("POST", "/mgt/v1/token/issue", big, SERVICE)
    assert resp.status == 413


def test_cors_preflight_allows_configured_origin_only(stack):  # type: ignore[no-untyped-def]
    allowed = stack.settings.cors_origins[0]
    ok = stack.request(
        "OPTIONS",
        "/api/v1/catalog/products",
        None,
        {"origin": allowed, "access-control-request-method": "GET"},
    )
    assert ok.headers.get("access-control-allow-origin") == allowed
    denied = stack.request(
        "OPTIONS",
        "/api/v1/catalog/products",
        None,
        {"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in {k.lower() for k in denied.headers}


def test_responses_carry_the_request_id_the_server_logged(stack, caplog):  # type: ignore[no-untyped-def]
    import json as _json
    import logging

    with caplog.at_level(logging.INFO, logger="tollbooth.rpc"):
        resp = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "rid-1"}, SERVICE)
    rid = {k.lower(): v for k, v in resp.headers.items()}.get("x-request-id")
    assert rid
    from tollbooth.logs import formatter

    # Each record as the process writes it: one JSON object.
    line = formatter("serve-grpc").format
    logged = [_json.loads(line(r)) for r in caplog.records if r.name == "tollbooth.rpc"]
    mine = [entry for entry in logged if entry["request_id"] == rid]
    assert len(mine) == 1
    assert mine[0]["code"] == "OK" and mine[0]["caller"] == "service"
    assert mine[0]["method"] == "/billing.v1.TokenService/IssueToken"


def test_credentials_never_reach_the_logs(stack, caplog):  # type: ignore[no-untyped-def]
    import logging

    with caplog.at_level(logging.DEBUG):
        token = stack.request(
            "POST", "/mgt/v1/token/issue", {"principal_id": "log-1"}, SERVICE
        ).json()["access_token"]
        stack.request(
            "POST", "/mgt/v1/token/issue", {"principal_id": "x"}, {"x-api-key": "wrong-key-value"}
        )
        stack.request("GET", "/api/v1/billing", headers={"authorization": f"Bearer {token}"})
    from tollbooth.logs import formatter

    # The records as the processes write them (JSON, with every field), and as pytest shows them.
    text = caplog.text + "\n".join(formatter("test").format(r) for r in caplog.records)
    assert "tollbooth.rpc" in text  # the calls were logged
    for secret in (SERVICE_KEY, "wrong-key-value", token):
        assert secret not in text


def test_a_service_key_beside_a_bearer_token_acts_as_the_token(stack):  # type: ignore[no-untyped-def]
    """Seed 003 sends both (`Authorization: Bearer` for the buyer, `x-api-key` for the
    tenant): the call is the token's, confined to its account and its scopes, never the
    backend's; a bad key beside a good token is still refused."""
    issued = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "both-creds", "scopes": ["credits:read"]},
        SERVICE,
    ).json()
    stack.request(
        "POST",
        "/mgt/v1/accounts/both-creds/credits/grants",
        {"creditType": "units", "amount": "7", "requestId": "both-creds-7"},
        SERVICE,
    )
    both = {**SERVICE, "authorization": f"Bearer {issued['access_token']}"}
    balance = stack.request("GET", "/api/v1/credits/balance?type=units", headers=both)
    assert balance.status == 200, balance.body
    assert (balance.json()["billing_account_id"], balance.json()["balance"]) == (
        issued["billing_account_id"],
        "7",
    )
    # The token lacks `checkout`: refused, though the key alone could create a checkout.
    made = stack.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"account": "both-creds", "success_url": "https://app.example/ok"},
        both,
    )
    assert (made.status, made.reason) == (403, "SCOPE_MISSING")
    # The operator surface takes a service key alone: a token beside it is named as the
    # problem (not "service key required": one was sent), and the key is not taken instead.
    mgt = stack.request(
        "GET", "/mgt/v1/accounts/both-creds/credits/balance?type=units", headers=both
    )
    assert (mgt.status, mgt.reason) == (403, "AMBIGUOUS_CREDENTIALS")
    bad = {"x-api-key": "not-a-key", "authorization": both["authorization"]}
    refused = stack.request("GET", "/api/v1/credits/balance?type=units", headers=bad)
    assert (refused.status, refused.reason) == (401, "SERVICE_KEY_INVALID")


def test_a_service_key_beside_a_bearer_token_on_mgt_is_ambiguous_and_changes_nothing(stack):  # type: ignore[no-untyped-def]
    """Every /mgt/v1/* route takes a service key alone. With a bearer token beside a valid key
    the answer names that (403 AMBIGUOUS_CREDENTIALS), whatever the token, and nothing is
    done; the key alone then works, and a bad key is still refused as a bad key first."""
    token = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "amb-holder"}, SERVICE
    ).json()["access_token"]
    for authorization in (f"Bearer {token}", "Bearer not-a-token"):
        both = {**SERVICE, "authorization": authorization}
        issued = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "amb-new"}, both)
        assert (issued.status, issued.reason) == (403, "AMBIGUOUS_CREDENTIALS"), issued.body
        granted = stack.request(
            "POST",
            "/mgt/v1/accounts/amb-holder/credits/grants",
            {"creditType": "units", "amount": "5", "requestId": "amb-5"},
            both,
        )
        assert (granted.status, granted.reason) == (403, "AMBIGUOUS_CREDENTIALS")
    # Nothing was created or granted.
    missing = stack.request("GET", "/mgt/v1/accounts/amb-new", None, SERVICE)
    assert missing.status == 404, missing.body
    balance = stack.request(
        "GET", "/mgt/v1/accounts/amb-holder/credits/balance?type=units", None, SERVICE
    )
    assert balance.status == 200 and balance.json()["balance"] == "0", balance.body
    bad_key = {"x-api-key": "not-a-key", "authorization": f"Bearer {token}"}
    refused = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "amb-new"}, bad_key)
    assert (refused.status, refused.reason) == (401, "SERVICE_KEY_INVALID")
    alone = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "amb-new"}, SERVICE)
    assert alone.status == 200, alone.body
