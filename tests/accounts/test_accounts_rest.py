"""Accounts and customers through Envoy on PostgreSQL, with seed 001's and seed 003's bodies
copied as written (only the path and auth translated), against the Stripe sandbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.accounts.support import start_pg_shop, unique
from tests.checkout.support import Shop, wait_for


@pytest.fixture(scope="module")
def shop(pg_shared_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    s = start_pg_shop(pg_shared_url, tmp_path_factory.mktemp("accounts-rest"))
    yield s
    s.close()


def ok(resp: Any) -> Any:
    assert resp.status == 200, resp.body
    return resp.json()


def error_info(resp: Any) -> dict[str, Any]:
    for detail in resp.json().get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return dict(detail)
    raise AssertionError(resp.body)


# -- seed 001, step 1 ---------------------------------------------------------------------------


def test_seed_001_body_creates_an_account_and_its_alias_answers_409_again(shop: Shop) -> None:
    alias = unique("your-internal-id")
    body = {"name": "Acme Corp", "email": "billing@acme.com", "alias": alias}
    made = ok(shop.request("POST", "/mgt/v1/accounts", body))
    assert made["id"].startswith("acct_")
    assert {k: made[k] for k in ("name", "email", "alias")} == body
    again = shop.request("POST", "/mgt/v1/accounts", body)
    assert again.status == 409
    info = error_info(again)
    assert info["reason"] == "ACCOUNT_ALIAS_TAKEN"
    assert info["metadata"]["account_id"] == made["id"]
    for ref in (made["id"], alias):
        assert ok(shop.request("GET", f"/mgt/v1/accounts/{ref}"))["id"] == made["id"]


def test_id_and_alias_work_for_grants_balance_and_usage(shop: Shop) -> None:
    alias = unique("org")
    made = ok(shop.request("POST", "/mgt/v1/accounts", {"name": "Org", "alias": alias}))
    for n, ref in enumerate((made["id"], alias)):
        grant = shop.request(
            "POST",
            f"/mgt/v1/accounts/{ref}/credits/grants",
            {
                "creditType": "units",
                "amount": "50",
                "reason": "Welcome credits",
                "requestId": f"welcome-{alias}-{n}",
            },
        )
        assert grant.status == 200, grant.body
    for ref in (made["id"], alias):
        balance = ok(shop.request("GET", f"/mgt/v1/accounts/{ref}/credits/balance?type=units"))
        assert balance["balance"] == "100"
    metric = unique("calls")
    ok(
        shop.request(
            "POST",
            f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
            {
                "code": metric,
                "name": "Calls",
                "event_name": metric,
                "aggregation": "AGGREGATION_COUNT",
            },
        )
    )
    for n, ref in enumerate((made["id"], alias)):
        event = {
            "uniqueId": f"evt-{alias}-{n}",
            "account": ref,
            "eventName": metric,
            "timestamp": "2026-12-01T10:00:00Z",
            "properties": {"endpoint": "/v1/analyze"},
        }
        assert shop.request("POST", "/mgt/v1/events", event).status == 200
    for ref in (made["id"], alias):
        usage = ok(
            shop.request(
                "GET",
                f"/mgt/v1/accounts/{ref}/usage?metric_code={metric}"
                "&start_time=2026-12-01T00:00:00Z&end_time=2026-12-02T00:00:00Z",
            )
        )
        assert usage["value"] == "2", usage


def test_list_update_and_archive_through_envoy(shop: Shop) -> None:
    prefix = unique("rest")
    ids = [
        ok(shop.request("POST", "/mgt/v1/accounts", {"alias": f"{prefix}-{n}", "name": f"N{n}"}))[
            "id"
        ]
        for n in range(3)
    ]
    first = ok(shop.request("GET", f"/mgt/v1/accounts?alias_prefix={prefix}&page_size=2"))
    assert [a["id"] for a in first["accounts"]] == ids[:2] and first["next_page_token"]
    rest = ok(
        shop.request(
            "GET",
            f"/mgt/v1/accounts?alias_prefix={prefix}&page_size=2"
            f"&page_token={first['next_page_token']}",
        )
    )
    assert [a["id"] for a in rest["accounts"]] == ids[2:] and rest["next_page_token"] == ""
    patched = ok(
        shop.request(
            "PATCH",
            f"/mgt/v1/accounts/{prefix}-0?update_mask=email&request_id={uuid.uuid4().hex}",
            {"email": "new@example.com", "name": "not this"},
        )
    )
    assert (patched["email"], patched["name"]) == ("new@example.com", "N0")
    archived = ok(
        shop.request("POST", f"/mgt/v1/accounts/{ids[1]}:archive", {"request_id": uuid.uuid4().hex})
    )
    assert archived["archived"] is True
    refused = shop.request("POST", "/mgt/v1/token/issue", {"principal_id": f"{prefix}-1"})
    assert refused.status == 400 and refused.reason == "ACCOUNT_ARCHIVED"
    missing = shop.request("GET", "/mgt/v1/accounts/acct_000000000000000000000000")
    assert missing.status == 404 and missing.reason == "NOT_FOUND"


# -- seed 003, customer management ----------------------------------------------------------------


def test_seed_003_customer_management(shop: Shop) -> None:
    created = ok(
        shop.request(
            "POST",
            "/mgt/v1/customers",
            {
                "email": "customer@example.com",
                "name": "John Doe",
                "description": "Premium customer",
                "phone": "+1234567890",
                "metadata": {"user_id": "user_123"},
            },
        )
    )
    cus = created["id"]
    assert cus.startswith("cus_") and created["account_id"].startswith("acct_")
    remote = shop.stripe.v1.customers.retrieve(cus)
    assert (remote.email, remote.name, remote.description, remote.phone) == (
        "customer@example.com",
        "John Doe",
        "Premium customer",
        "+1234567890",
    )
    assert remote.metadata.to_dict() == {
        "user_id": "user_123",
        "billing_account_id": created["account_id"],
    }
    account = ok(shop.request("GET", f"/mgt/v1/accounts/{created['account_id']}"))
    assert account["stripe_customer_id"] == cus

    listed = ok(shop.request("GET", "/mgt/v1/customers?limit=10&environment=test"))
    assert len(listed["data"]) <= 10
    got = ok(shop.request("GET", f"/mgt/v1/customers/{cus}?environment=test"))
    assert got == created

    updated = ok(
        shop.request(
            "PUT",
            f"/mgt/v1/customers/{cus}",
            {"name": "Jane Doe", "description": "Updated description"},
        )
    )
    assert (updated["name"], updated["description"], updated["email"]) == (
        "Jane Doe",
        "Updated description",
        "customer@example.com",
    )
    remote = shop.stripe.v1.customers.retrieve(cus)
    assert (remote.name, remote.description) == ("Jane Doe", "Updated description")

    deleted = ok(shop.request("DELETE", f"/mgt/v1/customers/{cus}?environment=test"))
    assert deleted == {"id": cus, "deleted": True}
    assert shop.request("GET", f"/mgt/v1/customers/{cus}?environment=test").status == 404
    assert shop.request("DELETE", f"/mgt/v1/customers/{cus}?environment=test").status == 404
    assert ok(shop.request("GET", f"/mgt/v1/accounts/{created['account_id']}"))["archived"]
    gone = shop.stripe.raw_request("get", f"/v1/customers/{cus}")
    assert json.loads(gone.body)["deleted"] is True  # type: ignore[attr-defined]


def test_customers_list_pages_with_limit(shop: Shop) -> None:
    seen: list[str] = []
    made = [
        ok(shop.request("POST", "/mgt/v1/customers", {"email": f"l{n}@example.com"}))["id"]
        for n in range(3)
    ]
    token = ""
    while True:
        page = ok(shop.request("GET", f"/mgt/v1/customers?limit=2&page_token={token}"))
        assert len(page["data"]) <= 2
        assert page["has_more"] == bool(page["next_page_token"])
        seen += [c["id"] for c in page["data"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen[-3:] == made


def test_live_environment_is_refused_on_a_test_deployment(shop: Shop) -> None:
    resp = shop.request("GET", "/mgt/v1/customers?limit=10&environment=live")
    assert resp.status == 403 and resp.reason == "ENVIRONMENT_MISMATCH"


def test_unknown_customer_is_404(shop: Shop) -> None:
    resp = shop.request("GET", "/mgt/v1/customers/cus_1234567890?environment=test")
    assert resp.status == 404 and resp.reason == "NOT_FOUND"
    resp = shop.request("PUT", "/mgt/v1/customers/cus_1234567890", {"name": "Jane Doe"})
    assert resp.status == 404


# -- seed 003, check subscription status ----------------------------------------------------------


def test_subscription_status_by_email_after_a_sandbox_purchase(shop: Shop) -> None:
    """E-mail lookups ignore case (the address is kept as given): the account stored with
    `User_…@Example.COM` is found by the lowercase address, here and in ListAccounts."""
    email = f"{unique('user')}@example.com"
    given = email.capitalize().replace("example.com", "Example.COM")
    missing = shop.request(
        "GET", f"/mgt/v1/customer/subscription?customerEmail={email}&environment=test"
    )
    assert missing.status == 404 and missing.reason == "NOT_FOUND"

    lookup = unique("premium")
    price = shop.price(lookup)
    alias = unique("buyer")
    made = ok(
        shop.request("POST", "/mgt/v1/accounts", {"name": "Buyer", "email": given, "alias": alias})
    )
    assert made["email"] == given
    for asked in (email, email.upper()):
        listed = ok(shop.request("GET", f"/mgt/v1/accounts?email={asked}"))["accounts"]
        assert [(a["id"], a["email"]) for a in listed] == [(made["id"], given)]
    token = shop.token(alias)
    session = ok(
        shop.request(
            "POST",
            "/api/v1/checkout/sessions",
            {
                "items": [{"lookup_key": lookup}],
                "success_url": "https://app.example/ok?cs={CHECKOUT_SESSION_ID}",
                "cancel_url": "https://app.example/pricing",
            },
            token=token,
        )
    )
    shop.stripe.raw_request(
        "post",
        "/v1/test_helpers/checkout/sessions/"
        f"{session['session']['stripe_checkout_session_id']}/complete",
    )

    def status() -> Any:
        resp = shop.request(
            "GET", f"/mgt/v1/customer/subscription?customerEmail={email}&environment=test"
        )
        # {"subscription": null} until the purchase is recorded
        return resp.json()["subscription"] if resp.status == 200 else None

    found = wait_for(status, 60, "the subscription to be recorded")
    assert found["id"].startswith("sub_")
    assert found["planId"] == price["price_id"]
    assert found["status"] == "active"
    assert found["cancelAtPeriodEnd"] is False
    assert found["currentPeriodEnd"].endswith("Z")
    assert found["stripeSubscriptionId"]
    assert found["plan"] == {"name": f"Plan {lookup}"}
    upper = shop.request(
        "GET", f"/mgt/v1/customer/subscription?customerEmail={given.upper()}&environment=test"
    )
    assert upper.status == 200 and upper.json()["subscription"]["id"] == found["id"]


# -- seed 003, customer portal ---------------------------------------------------------------


def test_seed_003_portal_body_names_the_accounts_own_customer(shop: Shop) -> None:
    """Seed 003's portal body `{"customer": "cus_...", "return_url": ...}`: a bearer may name its
    own account's customer only; a service key may name the account by its customer alone; any
    other customer answers 404 like an unknown one."""
    key = unique("portal-tier")
    shop.price(key, group=key)
    mine, other = unique("portal-me"), unique("portal-other")
    customers = {}
    tokens = {}
    for alias in (mine, other):
        tokens[alias] = shop.token(alias)
        opened = shop.request(
            "POST",
            "/api/v1/checkout/sessions",
            {"items": [{"lookup_key": key}], "success_url": "https://app.example/ok"},
            tokens[alias],
        )
        assert opened.status == 200, opened.body  # the checkout makes the provider customer
        account = ok(shop.request("GET", f"/mgt/v1/accounts/{alias}"))
        customers[alias] = account["stripe_customer_id"]
        assert customers[alias].startswith("cus_")
        # Paid: the portal opens only for an account with something billed.
        stripe_session = opened.json()["session"]["stripe_checkout_session_id"]
        shop.stripe.raw_request(
            "post", f"/v1/test_helpers/checkout/sessions/{stripe_session}/complete"
        )
        shop.wait_billed(account["id"])
    # No plan switch: the portal configuration would list every synced product of the shared
    # database, some made against other modules' sandboxes.
    body = {
        "customer": customers[mine],
        "return_url": "https://app.example/account",
        "options": {"allow_plan_change": False},
    }
    portal = ok(shop.request("POST", "/api/v1/portal/sessions", body, tokens[mine]))
    assert "/sandbox/portal/" in portal["url"]
    store = shop.sandbox.engine.store  # Stripe has no portal session retrieve
    assert store.get(portal["portal_session_id"])["customer"] == customers[mine]
    by_service = ok(shop.request("POST", "/api/v1/portal/sessions", body))
    assert store.get(by_service["portal_session_id"])["customer"] == customers[mine]
    for token, customer in (
        (tokens[mine], customers[other]),
        (tokens[other], customers[mine]),
        (None, "cus_unknown0000"),
    ):
        refused = shop.request(
            "POST",
            "/api/v1/portal/sessions",
            {**body, "customer": customer},
            token,
        )
        assert (refused.status, refused.reason) == (404, "NOT_FOUND"), refused.body


# -- seed 003, customers: retries without request_id, deletes ---------------------------------


def test_seed_003_create_customer_retried_without_request_id_is_one_customer(shop: Shop) -> None:
    """Seed 003's body sends no request_id: a retry (the first answer lost) is keyed on the
    e-mail and answers the first customer; another body with that e-mail is 409."""
    email = f"{unique('rest-retry')}@example.com"
    body = {"email": email, "name": "Retry", "metadata": {"a": "1", "b": "2"}}
    first = ok(shop.request("POST", "/mgt/v1/customers", body))
    again = ok(
        shop.request(
            "POST", "/mgt/v1/customers", {**body, "metadata": {"b": "2", "a": "1"}, "phone": ""}
        )
    )
    assert again["id"] == first["id"] and again["account_id"] == first["account_id"]
    other = shop.request("POST", "/mgt/v1/customers", {**body, "name": "Someone else"})
    assert (other.status, other.reason) == (409, "CUSTOMER_EMAIL_TAKEN"), other.body
    listed = ok(shop.request("GET", f"/mgt/v1/accounts?email={email}"))
    assert [a["id"] for a in listed["accounts"]] == [first["account_id"]]


def test_a_customer_whose_stripe_delete_failed_is_404_for_reads_and_updates(shop: Shop) -> None:
    email = f"{unique('rest-gone')}@example.com"
    made = ok(shop.request("POST", "/mgt/v1/customers", {"email": email, "name": "Gone"}))
    customer = made["id"]
    stall = shop.sandbox.stalls.add(
        "DELETE", f"/v1/customers/{customer}", seconds=0, status=500, times=10
    )
    try:
        deleted = shop.request("DELETE", f"/mgt/v1/customers/{customer}")
        assert deleted.status >= 500, deleted.body  # Stripe refused: the delete is pending
        got = shop.request("GET", f"/mgt/v1/customers/{customer}")
        assert (got.status, got.reason) == (404, "NOT_FOUND"), got.body
        put = shop.request("PUT", f"/mgt/v1/customers/{customer}", {"name": "Stale"})
        assert (put.status, put.reason) == (404, "NOT_FOUND"), put.body
        sub = shop.request("GET", f"/mgt/v1/customer/subscription?customerEmail={email}")
        assert sub.status == 404, sub.body
    finally:
        shop.sandbox.stalls.clear()
    del stall


def test_an_archived_account_records_no_usage_and_takes_no_reservation(shop: Shop) -> None:
    alias = unique("archived-rest")
    made = ok(shop.request("POST", "/mgt/v1/accounts", {"name": "Gone", "alias": alias}))
    live = ok(shop.request("POST", "/mgt/v1/accounts", {"alias": unique("live-rest")}))
    grant = {"creditType": "units", "amount": "10", "requestId": uuid.uuid4().hex}
    ok(shop.request("POST", f"/mgt/v1/accounts/{alias}/credits/grants", grant))
    ok(shop.request("POST", f"/mgt/v1/accounts/{alias}:archive", {"request_id": uuid.uuid4().hex}))

    def event(uid: str, ref: str) -> dict[str, Any]:
        return {
            "uniqueId": uid,
            "account": ref,
            "eventName": "api_call",
            "timestamp": "2026-12-01T10:00:00Z",
        }

    one = shop.request("POST", "/mgt/v1/events", event(unique("e"), alias))
    assert one.status == 400 and one.reason == "ACCOUNT_ARCHIVED"
    ids = [unique("b"), unique("b")]
    batch = shop.request(
        "POST",
        "/mgt/v1/events:batch",
        {"events": [event(ids[0], made["id"]), event(ids[1], live["id"])]},
    )
    got = [(x["unique_id"], x["status"], x["reason"]) for x in ok(batch)["results"]]
    assert got == [
        (ids[0], "EVENT_STATUS_REJECTED", "ACCOUNT_ARCHIVED"),
        (ids[1], "EVENT_STATUS_ACCEPTED", ""),
    ]
    held = shop.request(
        "POST",
        f"/mgt/v1/accounts/{alias}/credits/reservations",
        {"creditType": "units", "amount": "2", "requestId": uuid.uuid4().hex},
    )
    assert held.status == 400 and held.reason == "ACCOUNT_ARCHIVED"
    balance = ok(shop.request("GET", f"/mgt/v1/accounts/{alias}/credits/balance?type=units"))
    assert (balance["balance"], balance["reserved"]) == ("10", "0")
