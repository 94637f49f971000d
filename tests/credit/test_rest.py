"""Credits through the real Envoy gateway: seed 001's steps 2 and 3 as a customer writes them."""

from __future__ import annotations

import uuid

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def new_account(stack, scopes=("credits:read",)) -> tuple[str, str, dict[str, str]]:  # type: ignore[no-untyped-def]
    principal = f"your-internal-id-{uuid.uuid4().hex[:8]}"
    issued = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": principal, "scopes": list(scopes)}, SERVICE
    ).json()
    return (
        principal,
        issued["billing_account_id"],
        {"authorization": f"Bearer {issued['access_token']}"},
    )


def grant(stack, acct: str, amount: str, **extra):  # type: ignore[no-untyped-def]
    body = {
        "creditType": "units",
        "amount": amount,
        "reason": "Welcome credits",
        "requestId": uuid.uuid4().hex,
        **extra,
    }
    return stack.request("POST", f"/mgt/v1/accounts/{acct}/credits/grants", body, SERVICE)


def debit(stack, acct: str, amount: str, key: str):  # type: ignore[no-untyped-def]
    body = {"creditType": "units", "amount": amount, "requestId": key}
    return stack.request("POST", f"/mgt/v1/accounts/{acct}/credits/debits", body, SERVICE)


def test_seed_001_steps_2_and_3_through_envoy(stack) -> None:  # type: ignore[no-untyped-def]
    principal, acct, _ = new_account(stack)
    granted = grant(stack, acct, "50")
    assert granted.status == 200, granted.body
    assert (granted.json()["amount"], granted.json()["state"]) == ("50", "GRANT_STATE_ACTIVE")
    # {account} is the account id or the principal id (the alias).
    for ref in (acct, principal):
        resp = stack.request(
            "GET", f"/mgt/v1/accounts/{ref}/credits/balance?type=units", headers=SERVICE
        )
        assert resp.status == 200, resp.body
        body = resp.json()
        assert (body["billing_account_id"], body["credit_type"], body["balance"]) == (
            acct,
            "units",
            "50",
        )
    ok = stack.request(
        "GET",
        f"/mgt/v1/accounts/{acct}/credits/availability?type=units&required=10",
        headers=SERVICE,
    ).json()
    assert ok == {"available": True, "balance": "50", "required": "10", "shortfall": "0"}
    short = stack.request(
        "GET",
        f"/mgt/v1/accounts/{principal}/credits/availability?type=units&required=60",
        headers=SERVICE,
    ).json()
    assert short == {"available": False, "balance": "50", "required": "60", "shortfall": "10"}


def test_a_browser_reads_its_own_balance_under_api(stack) -> None:  # type: ignore[no-untyped-def]
    _, acct, bearer = new_account(stack)
    grant(stack, acct, "5")
    resp = stack.request("GET", "/api/v1/credits/balance?type=units", headers=bearer)
    assert resp.status == 200 and resp.json()["balance"] == "5"
    avail = stack.request(
        "GET", "/api/v1/credits/availability?type=units&required=6", headers=bearer
    )
    assert avail.json()["shortfall"] == "1"
    # A bearer token cannot use the operator surface.
    assert (
        stack.request(
            "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=units", headers=bearer
        ).status
        == 403
    )


def test_a_debit_beyond_the_balance_is_400_insufficient_credits(stack) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = new_account(stack)
    grant(stack, acct, "5")
    resp = debit(stack, acct, "7", uuid.uuid4().hex)
    assert resp.status == 400
    assert resp.reason == "INSUFFICIENT_CREDITS"
    assert (
        stack.request(
            "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=units", headers=SERVICE
        ).json()["balance"]
        == "5"
    )


def test_a_replay_after_the_balance_ran_out_returns_the_same_debit(stack) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = new_account(stack)
    grant(stack, acct, "5")
    key = uuid.uuid4().hex
    first = debit(stack, acct, "5", key)
    assert first.status == 200 and first.json()["balance_after"] == "0"
    again = debit(stack, acct, "5", key)
    assert again.status == 200 and again.json() == first.json()
    reused = debit(stack, acct, "4", key)
    assert (reused.status, reused.reason) == (400, "IDEMPOTENCY_KEY_REUSED")


def test_ledger_grants_void_and_reservations_over_rest(stack) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = new_account(stack)
    g = grant(stack, acct, "10").json()
    held = stack.request(
        "POST",
        f"/mgt/v1/accounts/{acct}/credits/reservations",
        {"creditType": "units", "amount": "4", "ttlSeconds": 60, "requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert held.status == 200, held.body
    rid = held.json()["reservation_id"]
    done = stack.request(
        "POST",
        f"/mgt/v1/accounts/{acct}/credits/reservations/{rid}:commit",
        {"amount": "1.5", "requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert done.status == 200 and done.json()["committed_amount"] == "1.5"
    again = stack.request(
        "POST",
        f"/mgt/v1/accounts/{acct}/credits/reservations/{rid}:release",
        {"requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert (again.status, again.reason) == (400, "RESERVATION_CLOSED")
    voided = stack.request(
        "POST",
        f"/mgt/v1/accounts/{acct}/credits/grants/{g['grant_id']}:void",
        {"requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert voided.status == 200 and voided.json()["state"] == "GRANT_STATE_VOIDED"
    grants = stack.request(
        "GET", f"/mgt/v1/accounts/{acct}/credits/grants?include_inactive=true", headers=SERVICE
    ).json()["grants"]
    assert [x["grant_id"] for x in grants] == [g["grant_id"]]
    entries = stack.request(
        "GET", f"/mgt/v1/accounts/{acct}/credits/ledger?page_size=10", headers=SERVICE
    ).json()["entries"]
    assert [e["kind"] for e in entries] == [
        "LEDGER_ENTRY_KIND_VOID",
        "LEDGER_ENTRY_KIND_DEBIT",
        "LEDGER_ENTRY_KIND_RELEASE",
        "LEDGER_ENTRY_KIND_RESERVATION",
        "LEDGER_ENTRY_KIND_GRANT",
    ]
    missing = stack.request(
        "POST",
        f"/mgt/v1/accounts/{acct}/credits/grants/cgr_nope:void",
        {"requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert (missing.status, missing.reason) == (404, "NOT_FOUND")


def test_an_amount_finer_than_18_places_is_400_amount_invalid(stack) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = new_account(stack)
    resp = grant(stack, acct, "0.0000000000000000001")
    assert (resp.status, resp.reason) == (400, "AMOUNT_INVALID")


def test_seed_001s_grant_body_without_request_id_grants_each_time(stack) -> None:  # type: ignore[no-untyped-def]
    """Seed 001's grant, copied as written (no requestId): it grants. Without a key nothing
    can tell a retry from a second grant, so each call is a grant of its own."""
    _, acct, _ = new_account(stack)
    body = {"creditType": "units", "amount": "50", "reason": "Welcome credits"}
    path = f"/mgt/v1/accounts/{acct}/credits/grants"
    first = stack.request("POST", path, body, SERVICE)
    assert first.status == 200, first.body
    assert (first.json()["amount"], first.json()["reason"]) == ("50", "Welcome credits")
    assert first.json()["request_id"] == ""
    second = stack.request("POST", path, body, SERVICE)
    assert second.status == 200, second.body
    assert second.json()["grant_id"] != first.json()["grant_id"]
    balance = stack.request(
        "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=units", headers=SERVICE
    ).json()["balance"]
    assert balance == "100"
