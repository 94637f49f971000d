"""PaymentService through Envoy (PostgreSQL when configured): seed 003's body as written, the
400s and 403s, and the hosted SANDBOX card page completed in headless Chromium (Playwright)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import stripe

from tests.checkout.support import Shop, wait_for
from tests.conftest import PG_ENV, WEBHOOK_SECRET, make_env
from tests.payments.support import SEED_BODY
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import SandboxConfig

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def pay_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The stack behind a real Envoy, on its own PostgreSQL database when one is configured
    (else a SQLite file), with the sandbox delivering its signed events through Envoy."""
    from tests.devstack import free_port, migrated_sqlite, start_stack, throwaway_postgres

    tmp = tmp_path_factory.mktemp("pay")
    with ExitStack() as stack:
        admin = os.environ.get(PG_ENV, "").strip()
        if admin:
            url = stack.enter_context(throwaway_postgres(admin, "tollbooth_pay"))
        else:
            url = migrated_sqlite(tmp / "billing.db")
        sandbox_port = free_port()
        running = start_stack(url, make_env(url, BILLING_SANDBOX_PORT=str(sandbox_port)), tmp)
        stack.callback(running.close)
        sandbox = start_sandbox(
            SandboxConfig(
                webhook_secret=WEBHOOK_SECRET,
                port=sandbox_port,
                db_path=tmp / "sandbox.db",
                webhook_url=f"{running.rest_url}/v1/billing/webhooks",
                retry_base_sec=0.05,
                retry_max_sec=0.5,
            )
        )
        stack.callback(sandbox.stop)
        client = stripe.StripeClient(
            "sk_test_pay", base_addresses={"api": sandbox.url}, max_network_retries=0
        )
        yield Shop(running, sandbox, client)


def payer(shop: Shop, scopes: list[str] | None = None) -> str:
    resp = shop.request(
        "POST",
        "/mgt/v1/token/issue",
        {
            "principal_id": f"rest-payer-{uuid.uuid4().hex[:8]}",
            "scopes": scopes or ["payments", "billing:read", "credits:read"],
        },
    )
    assert resp.status == 200, resp.body
    return str(resp.json()["access_token"])


def intent_of(shop: Shop, token: str, ident: str) -> dict[str, Any]:
    resp = shop.request("GET", f"/api/v1/payment/intents/{ident}", token=token)
    assert resp.status == 200, resp.body
    return resp.json()  # type: ignore[no-any-return]


def test_seed_003s_body_through_envoy_returns_a_client_secret_and_pays_once(pay_shop: Shop):
    token = payer(pay_shop)
    resp = pay_shop.request("POST", "/api/v1/payment/intents", SEED_BODY, token=token)
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["client_secret"].startswith(body["stripe_payment_intent_id"] + "_secret_")
    assert body["payment_intent_id"].startswith("pay_")
    assert body["status"] == "PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD"
    assert (body["amount"], body["currency"]) == ("2999", "usd")
    # Seed 003's "current payment status", in the provider's words: what Stripe says.
    at_provider = pay_shop.stripe.v1.payment_intents.retrieve(body["stripe_payment_intent_id"])
    assert body["intent_status"] == at_provider.status
    pay_shop.stripe.v1.payment_intents.confirm(
        body["stripe_payment_intent_id"], params={"payment_method": "pm_card_visa"}
    )
    done = wait_for(
        lambda: (
            (b := intent_of(pay_shop, token, body["payment_intent_id"]))["status"]
            == "PAYMENT_INTENT_STATUS_SUCCEEDED"
            and b
        ),
        what="payment_intent.succeeded to be recorded",
    )
    paid = pay_shop.stripe.v1.payment_intents.retrieve(body["stripe_payment_intent_id"])
    assert done["intent_status"] == paid.status != at_provider.status
    listed = pay_shop.request("GET", "/api/v1/billing/purchases", token=token).json()
    assert [(p["purchase_id"], p["payment_intent_id"]) for p in listed["purchases"]] == [
        (done["purchase_id"], body["payment_intent_id"])
    ]


def test_bad_input_and_missing_scope_through_envoy(pay_shop: Shop):
    token = payer(pay_shop)
    for fields, reason in [
        ({"amount": 0}, "PAYMENT_AMOUNT_INVALID"),
        ({"currency": "XYZ"}, "CURRENCY_INVALID"),
        ({"receipt_email": "nobody"}, "EMAIL_INVALID"),
    ]:
        resp = pay_shop.request(
            "POST", "/api/v1/payment/intents", {**SEED_BODY, **fields}, token=token
        )
        assert (resp.status, resp.reason) == (400, reason), resp.body
    listed = pay_shop.stripe.v1.payment_intents.list(params={"limit": 100}).data
    assert all(pi.receipt_email != "nobody" for pi in listed)
    reader = payer(pay_shop, ["billing:read"])
    resp = pay_shop.request("POST", "/api/v1/payment/intents", SEED_BODY, token=reader)
    assert (resp.status, resp.reason) == (403, "SCOPE_MISSING")
    resp = pay_shop.request("GET", "/api/v1/payment/intents/pay_nothing_here", token=token)
    assert resp.status == 404


def test_an_upper_case_currency_through_envoy_is_lower_cased(pay_shop: Shop):
    """Seed 001 writes `USD`; CreatePrice takes it, so an intent does too: 200, `usd`."""
    token = payer(pay_shop)
    resp = pay_shop.request(
        "POST", "/api/v1/payment/intents", {**SEED_BODY, "currency": "USD"}, token=token
    )
    assert resp.status == 200, resp.body
    body = resp.json()
    assert (body["amount"], body["currency"]) == ("2999", "usd")
    remote = pay_shop.stripe.v1.payment_intents.retrieve(body["stripe_payment_intent_id"])
    assert remote.currency == "usd"


def test_the_hosted_sandbox_card_page_completes_in_a_browser(pay_shop: Shop, browser: Any):  # noqa: F811
    token = payer(pay_shop)
    body = pay_shop.request("POST", "/api/v1/payment/intents", SEED_BODY, token=token).json()
    page_url = (
        f"{pay_shop.sandbox.url}/sandbox/pay/{body['stripe_payment_intent_id']}"
        f"?client_secret={body['client_secret']}"
    )
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        # Without the intent's own client secret the page is not there.
        wrong = page.goto(page_url.rsplit("=", 1)[0] + "=pi_x_secret_wrong")
        assert wrong is not None and wrong.status == 404
        page.goto(page_url)
        assert "SANDBOX" in page.inner_text("#sandbox-banner")
        assert "29.99" in page.inner_text("#total")  # 2999 minor units
        assert page.input_value("#email") == "customer@example.com"
        page.fill("#card", "4000 0000 0000 0002")
        page.fill("#name", "Ada Payer")
        page.click("#pay")
        page.wait_for_selector("#error")
        assert "declined" in page.inner_text("#error").lower()
        assert page.input_value("#card") == ""  # never the card number again
        assert page.input_value("#name") == "Ada Payer"
        failed = wait_for(
            lambda: (
                (b := intent_of(pay_shop, token, body["payment_intent_id"]))["failure_code"] and b
            ),
            what="payment_intent.payment_failed to be recorded",
        )
        assert failed["failure_code"] == "card_declined"
        page.fill("#card", "4242 4242 4242 4242")
        page.click("#pay")
        page.wait_for_selector("#status")
        assert "succeeded" in page.inner_text("#status")
        # Back goes to the page as it was after the decline, a GET (Post/Redirect/Get), which
        # now says it is paid: no "confirm form resubmission", nothing sent again.
        page.go_back()
        assert "succeeded" in page.inner_text("#status")
    finally:
        context.close()
    done = wait_for(
        lambda: (
            (b := intent_of(pay_shop, token, body["payment_intent_id"]))["status"]
            == "PAYMENT_INTENT_STATUS_SUCCEEDED"
            and b
        ),
        what="payment_intent.succeeded to be recorded",
    )
    assert done["purchase_id"]


def test_a_non_ascii_receipt_email_is_paid_with_on_the_card_page(pay_shop: Shop, browser: Any):  # noqa: F811
    """The service takes `zoë@exämple.com` as a receipt e-mail and the page prefills it; a
    browser's `<input type=email>` refused to send it, so nobody could pay."""
    token = payer(pay_shop)
    body = pay_shop.request(
        "POST", "/api/v1/payment/intents", {**SEED_BODY, "receipt_email": "zoë@exämple.com"}, token
    ).json()
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(
            f"{pay_shop.sandbox.url}/sandbox/pay/{body['stripe_payment_intent_id']}"
            f"?client_secret={body['client_secret']}"
        )
        assert page.input_value("#email") == "zoë@exämple.com"
        page.fill("#card", "4242 4242 4242 4242")
        page.click("#pay")
        page.wait_for_selector("#status")
        assert "succeeded" in page.inner_text("#status")
    finally:
        context.close()


def test_seed_003s_environment_parameter_on_payment_intents_and_the_portal(pay_shop: Shop):
    """Seed 003: "All billing endpoints accept an environment query parameter". The payment
    intent and portal calls take it like checkout and customers do: `test` (any case) on a test
    deployment, `live` 403 ENVIRONMENT_MISMATCH (seed 003's 403) with nothing created,
    anything else 400."""
    token = payer(pay_shop, ["payments", "portal"])
    made = pay_shop.request(
        "POST", "/api/v1/payment/intents?environment=test", SEED_BODY, token=token
    )
    assert made.status == 200, made.body
    ident = made.json()["payment_intent_id"]
    got = pay_shop.request("GET", f"/api/v1/payment/intents/{ident}?environment=test", token=token)
    assert got.status == 200, got.body
    assert got.json()["payment_intent_id"] == ident
    before = len(pay_shop.stripe.v1.payment_intents.list(params={"limit": 100}).data)
    for env, status, reason in (
        ("live", 403, "ENVIRONMENT_MISMATCH"),
        ("staging", 400, "INVALID_ARGUMENT"),
    ):
        resp = pay_shop.request(
            "POST", f"/api/v1/payment/intents?environment={env}", SEED_BODY, token=token
        )
        assert (resp.status, resp.reason) == (status, reason), resp.body
        resp = pay_shop.request(
            "GET", f"/api/v1/payment/intents/{ident}?environment={env}", token=token
        )
        assert (resp.status, resp.reason) == (status, reason), resp.body
    assert len(pay_shop.stripe.v1.payment_intents.list(params={"limit": 100}).data) == before

    # Paid: the portal opens only for an account with something billed.
    stripe_id = made.json()["stripe_payment_intent_id"]
    pay_shop.stripe.raw_request(
        "post", f"/v1/payment_intents/{stripe_id}/confirm", payment_method="pm_card_visa"
    )
    pay_shop.wait_billed(made.json()["billing_account_id"])
    portal = {"return_url": "https://app.example/account"}
    resp = pay_shop.request("POST", "/api/v1/portal/sessions?environment=test", portal, token)
    assert resp.status == 200, resp.body
    assert "/sandbox/portal/" in resp.json()["url"]
    resp = pay_shop.request("POST", "/api/v1/portal/sessions?environment=live", portal, token)
    assert (resp.status, resp.reason) == (403, "ENVIRONMENT_MISMATCH"), resp.body


def test_a_padded_currency_is_trimmed_by_payment_intents_as_by_checkout(pay_shop: Shop):
    """`"usd "` was refused by a payment intent as too long (at most 3 characters) while
    checkout trims it and takes it. Both now trim surrounding white space, as every field the
    server cleans does, within the same 10 characters; past them both refuse it alike."""
    token = payer(pay_shop, ["payments", "checkout"])
    pay_shop.price("rest-padded-usd", group="rest-padded-usd", amount=2999)

    def intent(currency: str) -> Any:
        body = {**SEED_BODY, "currency": currency}
        return pay_shop.request("POST", "/api/v1/payment/intents", body, token=token)

    def checkout(currency: str) -> Any:
        body = {
            "items": [{"lookup_key": "rest-padded-usd"}],
            "success_url": "https://app.example/ok",
            "currency": currency,
            "request_id": uuid.uuid4().hex,
        }
        return pay_shop.request("POST", "/api/v1/checkout/sessions", body, token=token)

    for currency in ("usd ", " USD", "  usd    "):
        made = intent(currency)
        assert made.status == 200, (currency, made.body)
        assert made.json()["currency"] == "usd"
        opened = checkout(currency)
        assert opened.status == 200, (currency, opened.body)
        assert opened.json()["session"]["currency"] == "usd"
    too_long = "    usd    "
    refusals = [(r.status, r.reason) for r in (intent(too_long), checkout(too_long))]
    assert refusals == [(400, "FIELD_INVALID")] * 2


@pytest.mark.parametrize("literal", ["2999.9999999999999", "2999.00000000000001"])
def test_seed_003s_amount_not_a_whole_number_is_400_and_never_rounded(pay_shop: Shop, literal):  # type: ignore[no-untyped-def]
    """Envoy's transcoder read `2999.9999999999999` as the double 3000.0 and made an intent
    of 3000: an amount is minor units, exact, so it is refused and nothing is created."""
    token = payer(pay_shop)
    before = len(pay_shop.stripe.v1.payment_intents.list(params={"limit": 100}).data)
    raw = (
        f'{{"amount": {literal}, "currency": "usd", "description": "Purchase from YourApp",'
        ' "receipt_email": "customer@example.com"}'
    ).encode()
    resp = pay_shop.request("POST", "/api/v1/payment/intents", raw, token=token)
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "amount"
    after = len(pay_shop.stripe.v1.payment_intents.list(params={"limit": 100}).data)
    assert after == before
