"""Entitlements through a real Envoy on PostgreSQL: the issue's done-when scenario.

Buy `pro` in the sandbox over REST (token, checkout, the hosted payment, the signed webhook
through Envoy to the sidecar), then CheckEntitlement says the feature `pro` grants is allowed,
and a metered feature's `used` counts the events ingested through `POST /mgt/v1/events`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import stripe

from tests.checkout.support import SCOPES, wait_for
from tests.conftest import PG_ENV, SERVICE_KEY, WEBHOOK_SECRET, make_env
from tests.devstack import Response, Stack, free_port, start_stack, throwaway_postgres
from tollbooth.sandbox.app import SandboxHandle, start_sandbox
from tollbooth.sandbox.config import SandboxConfig

pytestmark = pytest.mark.envoy


class Rest:
    def __init__(self, stack: Stack, sandbox: SandboxHandle) -> None:
        self.stack, self.sandbox = stack, sandbox
        self.stripe = stripe.StripeClient(
            "sk_test_entitle", base_addresses={"api": sandbox.url}, max_network_retries=0
        )

    def request(
        self, method: str, path: str, body: object = None, token: str | None = None
    ) -> Response:
        headers = {"authorization": f"Bearer {token}"} if token else {"x-api-key": SERVICE_KEY}
        return self.stack.request(method, path, body, headers)

    def ok(self, method: str, path: str, body: object = None, token: str | None = None) -> dict:  # type: ignore[type-arg]
        resp = self.request(method, path, body, token)
        assert resp.status == 200, resp.body
        return resp.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    admin = os.environ.get(PG_ENV, "").strip()
    if not admin:
        pytest.skip(f"needs {PG_ENV}")
    tmp = tmp_path_factory.mktemp("entitle-rest")
    with throwaway_postgres(admin, "tollbooth_entitle") as url:
        sandbox_port = free_port()
        stack = start_stack(url, make_env(url, BILLING_SANDBOX_PORT=str(sandbox_port)), tmp)
        sandbox = start_sandbox(
            SandboxConfig(
                webhook_secret=WEBHOOK_SECRET,
                port=sandbox_port,
                db_path=tmp / "sandbox.db",
                webhook_url=f"{stack.rest_url}/v1/billing/webhooks",
                retry_base_sec=0.05,
                retry_max_sec=0.5,
            )
        )
        try:
            yield Rest(stack, sandbox)
        finally:
            sandbox.stop()
            stack.close()


@pytest.fixture(scope="module")
def pro(rest: Rest) -> dict:  # type: ignore[type-arg]
    """The `pro` plan, its metered feature's metric, created through the operator's REST."""
    rest.ok(
        "POST",
        f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
        {"code": "api_calls", "event_name": "api.call", "aggregation": "AGGREGATION_COUNT"},
    )
    product = rest.ok(
        "POST", f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}", {"name": "Pro"}
    )
    return rest.ok(
        "POST",
        f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
        {
            "product_id": product["product_id"],
            "currency": "usd",
            "unit_amount": 2900,
            "type": "PRICE_TYPE_RECURRING",
            "recurring": {"interval": "RECURRING_INTERVAL_MONTH"},
            "lookup_key": "pro",
            "subscription_group": "plan",
            "entitlements": [
                {"feature": "pro"},
                {"feature": "api", "metric": "api_calls", "limit": "1000"},
            ],
        },
    )


def token_of(rest: Rest, principal: str) -> tuple[str, str]:
    body = rest.ok(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": principal, "user_id": "u1", "scopes": SCOPES},
    )
    return body["access_token"], body["billing_account_id"]


def buy_pro(rest: Rest, token: str) -> None:
    answer = rest.ok(
        "POST",
        "/api/v1/checkout/sessions",
        {"items": [{"lookup_key": "pro"}], "success_url": "https://app.example/ok"},
        token,
    )
    session_id = answer["session"]["stripe_checkout_session_id"]
    rest.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{session_id}/complete")


def test_after_buying_pro_its_feature_is_allowed_and_metered_usage_is_counted(rest: Rest, pro):  # type: ignore[no-untyped-def]
    token, account = token_of(rest, f"done-when-{uuid.uuid4().hex[:6]}")
    before = rest.ok("GET", "/api/v1/entitlements/pro", token=token)
    assert (before["allowed"], before["kind"]) == (False, "ENTITLEMENT_KIND_UNSPECIFIED")

    buy_pro(rest, token)
    # Redirect success is not the truth: wait for the webhook through Envoy and the sidecar.
    got = wait_for(
        lambda: (b := rest.ok("GET", "/api/v1/entitlements/pro", token=token))["allowed"] and b,
        what="the purchase's webhook to be applied",
    )
    assert got["kind"] == "ENTITLEMENT_KIND_BOOLEAN"
    assert got["price_ids"] == [pro["price_id"]]
    assert got["as_of_time"].endswith("Z")
    operator = rest.ok("GET", f"/mgt/v1/accounts/{account}/entitlements/pro")
    assert operator["allowed"] and operator["billing_account_id"] == account

    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    for i in range(3):
        rest.ok(
            "POST",
            "/mgt/v1/events",
            {
                "uniqueId": f"{account}-{i}",
                "account": account,
                "eventName": "api.call",
                "timestamp": now,
            },
        )
    metered = rest.ok("GET", f"/mgt/v1/accounts/{account}/entitlements/api")
    assert metered["kind"] == "ENTITLEMENT_KIND_METERED"
    assert (metered["limit"], metered["used"], metered["remaining"]) == ("1000", "3", "997")
    assert metered["allowed"] is True
    listed = rest.ok("GET", "/api/v1/entitlements", token=token)
    assert [e["feature"] for e in listed["entitlements"]] == ["api", "pro"]


def test_seed_001_unique_id_counts_once_in_each_buyer_s_metered_entitlement(rest: Rest, pro):  # type: ignore[no-untyped-def]
    # Seed 001's body (`"uniqueId": "evt_123456"`) copied for two fresh accounts: a unique id is
    # unique per account, so each account's `used` counts its own copy once.
    buyers = [token_of(rest, f"seed-{k}-{uuid.uuid4().hex[:6]}") for k in "ab"]
    for token, _ in buyers:
        buy_pro(rest, token)
    for token, _ in buyers:
        wait_for(
            lambda token=token: rest.ok("GET", "/api/v1/entitlements/pro", token=token)["allowed"],
            what="the purchase's webhook to be applied",
        )
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    body = {"uniqueId": "evt_123456", "eventName": "api.call", "timestamp": now}
    # The second round is every account's retry: a duplicate of its own event.
    for expected in ("EVENT_STATUS_ACCEPTED", "EVENT_STATUS_DUPLICATE"):
        statuses = [
            rest.ok("POST", "/mgt/v1/events", {**body, "account": account})["status"]
            for _, account in buyers
        ]
        assert statuses == [expected, expected]
    for _, account in buyers:
        metered = rest.ok("GET", f"/mgt/v1/accounts/{account}/entitlements/api")
        assert (metered["used"], metered["remaining"]) == ("1", "999")


def test_rest_errors_are_4xx_with_stable_reasons(rest: Rest, pro):  # type: ignore[no-untyped-def]
    token, _ = token_of(rest, f"rest-errors-{uuid.uuid4().hex[:6]}")
    _, other = token_of(rest, f"rest-other-{uuid.uuid4().hex[:6]}")
    too_long = rest.request("GET", "/api/v1/entitlements/" + "x" * 101, token=token)
    assert too_long.status == 400
    missing = rest.request("GET", "/mgt/v1/accounts/acct_000000000000000000000000/entitlements/pro")
    assert (missing.status, missing.reason) == (404, "NOT_FOUND")
    no_auth = rest.stack.request("GET", "/api/v1/entitlements/pro")
    assert no_auth.status == 401
    # The operator path is for service keys; a bearer naming another account finds nothing.
    theirs = rest.request("GET", f"/mgt/v1/accounts/{other}/entitlements/pro", token=token)
    assert (theirs.status, theirs.reason) == (403, "SERVICE_KEY_REQUIRED")
    named = rest.request("GET", f"/api/v1/entitlements/pro?account={other}", token=token)
    assert named.status == 404


def test_a_plan_set_to_cancel_grants_nothing_once_its_period_ended_before_its_deletion(  # type: ignore[no-untyped-def]
    rest: Rest, pro
):
    """Through Envoy: CheckEntitlement, ListEntitlements, the catalog's hints and the billing
    status agree that a plan set to cancel at its period's end ends then, whether or not
    Stripe's `customer.subscription.deleted` has arrived."""
    token, _ = token_of(rest, f"ending-{uuid.uuid4().hex[:6]}")
    buy_pro(rest, token)
    wait_for(
        lambda: rest.ok("GET", "/api/v1/entitlements/pro", token=token)["allowed"],
        what="the purchase's webhook to be applied",
    )
    (sub,) = rest.ok("GET", "/api/v1/billing/subscriptions", token=token)["subscriptions"]
    sub_id = sub["stripe_subscription_id"]
    rest.stripe.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    wait_for(
        lambda: rest.ok("GET", "/api/v1/billing", token=token)["cancel_at_period_end"] is True,
        what="the cancellation's webhook to be applied",
    )
    assert rest.ok("GET", "/api/v1/entitlements/pro", token=token)["allowed"] is True

    # The provider's period ends; only an update (no deletion) reaches us.
    ended = int(time.time()) - 60
    # Stripe has not acted on that end yet: the sandbox's subscription on a test clock before
    # it (on the default clock, the sandbox's tick would delete it any moment).
    clock = rest.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": ended - 86_400})
    with rest.sandbox.app.state.store.tx() as store:
        held = store.get(sub_id)
        held["test_clock"] = clock.id
        for item in held["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = ended - 30 * 86_400, ended
        store.put(held)
    rest.stripe.v1.subscriptions.update(sub_id, params={"metadata": {"touch": "1"}})
    wait_for(
        lambda: rest.ok("GET", "/api/v1/billing/subscriptions", token=token)["subscriptions"][0][
            "current_period_end_time"
        ].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ended))),
        what="the update's webhook to be applied",
    )
    got = rest.ok("GET", "/api/v1/entitlements/pro", token=token)
    assert (got["allowed"], got["kind"]) == (False, "ENTITLEMENT_KIND_UNSPECIFIED")
    assert rest.ok("GET", "/api/v1/entitlements", token=token)["entitlements"] == []
    prices = rest.ok("GET", f"/api/v1/catalog/prices?product_id={pro['product_id']}", token=token)[
        "prices"
    ]
    assert [p["hint"] for p in prices] == ["PURCHASE_HINT_BUY"]
    assert rest.ok("GET", "/api/v1/billing", token=token)["plan"] == "free"
