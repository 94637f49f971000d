"""Seed 001 step 4 "Option B: Server-Side Session" through Envoy with the sandbox: the body
names no items, so the checkout sells the configured default offer
(BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY); step 5's checkout.session.completed carries the
passThroughToken. Without a default offer the body is refused naming `items`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from tests.checkout.support import Shop, start_shop, wait_for
from tollbooth.db.models import NotificationOutbox
from tollbooth.notifications import envelope

pytestmark = pytest.mark.envoy

DEFAULT_KEY = "seed1-default-pro"


@pytest.fixture(scope="module")
def default_shop(tmp_path_factory, shared_database_url: str) -> Iterator[Shop]:  # type: ignore[no-untyped-def]
    """The shop selling DEFAULT_KEY ($49.00 a month) to a checkout without items, on SQLite
    and PostgreSQL."""
    s = start_shop(
        tmp_path_factory.mktemp("seed1-shop"),
        shared_database_url,
        BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY=DEFAULT_KEY,
    )
    s.price(DEFAULT_KEY, group="seed1", amount=4900)
    yield s
    s.close()


def seed_body(account_id: str) -> dict[str, Any]:
    """Step 4's body as the seed writes it; only the account id and the URL are the test's."""
    return {
        "accountId": account_id,
        "accountEmail": "billing@acme.com",
        "currency": "USD",
        "successUrl": "https://app.example/welcome",
        "passThroughToken": "your-internal-reference",
    }


def new_account(shop: Shop) -> str:
    """Seed 001 step 1, without the e-mail (step 4's accountEmail supplies it)."""
    made = shop.request(
        "POST", "/mgt/v1/accounts", {"name": "Acme Corp", "alias": f"acme-{uuid.uuid4().hex[:8]}"}
    )
    assert made.status == 200, made.body
    return str(made.json()["id"])


def sent(shop: Shop, account: str, type_: str) -> list[dict[str, Any]]:
    with shop.stack.deps.db.transaction(readonly=True) as session:
        rows = session.scalars(
            select(NotificationOutbox).where(NotificationOutbox.billing_account_id == account)
        ).all()
        bodies = [json.loads(envelope.body(row)) for row in rows]
    return [b for b in bodies if b["type"] == type_]


def test_seed_001s_checkout_body_works_as_written(default_shop: Shop):
    shop = default_shop
    account = new_account(shop)
    answer = shop.request("POST", "/api/v1/checkout/sessions", seed_body(account))
    assert answer.status == 200, answer.body
    got = answer.json()
    session = got["session"]
    assert got["checkout_session_id"] == session["checkout_session_id"]
    assert got["checkout_session_id"].startswith("chk_")
    assert got["url"] == session["url"] != ""
    assert [i["catalog_price_id"] for i in session["items"]] != []
    assert session["mode"] == "CHECKOUT_MODE_SUBSCRIPTION"
    assert session["currency"] == "usd"
    assert session["client_reference"] == "your-internal-reference"
    # accountEmail filled the account's (and so its Stripe customer's) e-mail.
    assert shop.request("GET", f"/mgt/v1/accounts/{account}").json()["email"] == (
        "billing@acme.com"
    )
    customers = shop.stripe.v1.customers.list(params={"limit": 100}).data
    assert [
        c.email for c in customers if c.to_dict()["metadata"].get("billing_account_id") == account
    ] == ["billing@acme.com"]
    # Step 5: the checkout completes and checkout.session.completed carries the token.
    shop.stripe.raw_request(
        "post",
        f"/v1/test_helpers/checkout/sessions/{session['stripe_checkout_session_id']}/complete",
    )
    (completed,) = wait_for(
        lambda: sent(shop, account, "checkout.session.completed"), what="the webhook"
    )
    data = completed["data"]
    assert data["id"] == got["checkout_session_id"]
    assert data["accountId"] == account
    assert (data["status"], data["amount"], data["currency"]) == ("completed", "49.00", "USD")
    assert data["passThroughToken"] == "your-internal-reference"


def test_a_seed_001_checkout_in_another_currency_is_field_invalid(default_shop: Shop):
    account = new_account(default_shop)
    for currency, reason in (("EUR", "FIELD_INVALID"), ("XYZ", "CURRENCY_INVALID")):
        answer = default_shop.request(
            "POST", "/api/v1/checkout/sessions", {**seed_body(account), "currency": currency}
        )
        assert (answer.status, answer.reason) == (400, reason), answer.body
        assert "currency" in json.dumps(answer.json())
    # Nothing was created: the account has no checkout.
    with default_shop.stack.deps.db.transaction(readonly=True) as session:
        from tollbooth.db.models import CheckoutSession

        assert (
            session.scalars(
                select(CheckoutSession).where(CheckoutSession.billing_account_id == account)
            ).all()
            == []
        )


def test_a_setup_checkout_with_a_currency_that_is_not_iso_4217_is_currency_invalid(
    default_shop: Shop,
):
    """A setup checkout has no prices to compare `currency` with, but a code that is not ISO
    4217 is still CURRENCY_INVALID, with nothing created (it was taken and ignored); a real
    code stays accepted."""
    account = new_account(default_shop)
    body = {"accountId": account, "mode": "setup", "successUrl": "https://app.example/welcome"}
    refused = default_shop.request("POST", "/api/v1/checkout/sessions", {**body, "currency": "XYZ"})
    assert (refused.status, refused.reason) == (400, "CURRENCY_INVALID"), refused.body
    with default_shop.stack.deps.db.transaction(readonly=True) as session:
        from tollbooth.db.models import CheckoutSession

        made = session.scalars(
            select(CheckoutSession).where(CheckoutSession.billing_account_id == account)
        ).all()
        assert made == []
    taken = default_shop.request("POST", "/api/v1/checkout/sessions", {**body, "currency": "EUR"})
    assert taken.status == 200, taken.body


def test_a_bad_account_email_is_refused_naming_account_email(default_shop: Shop):
    """Step 4's `accountEmail` that is no address is EMAIL_INVALID naming the field the body
    sent (`account_email`), not its twin `customer_email`, which the body never had."""
    account = new_account(default_shop)
    answer = default_shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {**seed_body(account), "accountEmail": "not-an-email"},
    )
    assert (answer.status, answer.reason) == (400, "EMAIL_INVALID"), answer.body
    [info] = [d for d in answer.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["metadata"]["field"] == "account_email"


def test_two_names_for_one_field_that_disagree_are_field_invalid(default_shop: Shop):
    account = new_account(default_shop)
    for extra, field in (
        ({"account": "someone-else"}, "account_id"),
        ({"client_reference": "other"}, "pass_through_token"),
        ({"customer_email": "other@acme.com"}, "account_email"),
    ):
        answer = default_shop.request(
            "POST", "/api/v1/checkout/sessions", {**seed_body(account), **extra}
        )
        assert (answer.status, answer.reason) == (400, "FIELD_INVALID"), (extra, answer.body)
        assert field in json.dumps(answer.json()), (field, answer.body)


def test_an_id_and_its_alias_name_one_account_in_a_checkout(default_shop: Shop):
    """`account` and seed 001's `accountId` naming one account (its id and its alias) are one
    account, for a backend and for the buyer's own token, as the portal takes them; two
    accounts, or a name of no account, are still FIELD_INVALID naming account_id, and nothing
    is created for them."""
    shop = default_shop
    account = new_account(shop)
    alias = shop.request("GET", f"/mgt/v1/accounts/{account}").json()["alias"]
    token = shop.token(alias)
    for caller in (None, token):
        for names in ({"account": account, "accountId": alias}, {"account": alias}):
            body = {**seed_body(account), **names}
            answer = shop.request("POST", "/api/v1/checkout/sessions", body, caller)
            assert answer.status == 200, (names, answer.body)
            assert answer.json()["session"]["billing_account_id"] == account
    other = new_account(shop)
    for caller in (None, token):
        for names in ({"account": other}, {"account": "nobody-" + uuid.uuid4().hex[:6]}):
            body = {**seed_body(account), **names}
            answer = shop.request("POST", "/api/v1/checkout/sessions", body, caller)
            assert (answer.status, answer.reason) == (400, "FIELD_INVALID"), answer.body
            assert "account_id" in json.dumps(answer.json())
    with shop.stack.deps.db.transaction(readonly=True) as session:
        from tollbooth.db.models import CheckoutSession

        owners = session.scalars(
            select(CheckoutSession.billing_account_id).where(
                CheckoutSession.billing_account_id.in_([account, other])
            )
        ).all()
    assert other not in owners


def test_without_a_default_offer_a_checkout_without_items_is_field_required(shop: Shop):
    account = new_account(shop)
    answer = shop.request("POST", "/api/v1/checkout/sessions", seed_body(account))
    assert (answer.status, answer.reason) == (400, "FIELD_REQUIRED"), answer.body
    text = json.dumps(answer.json())
    assert '"field": "items"' in text or "items" in answer.json().get("message", "")
    assert "BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY" in text


def test_a_default_offer_naming_no_active_price_is_price_not_found(tmp_path):
    shop = start_shop(tmp_path, BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY="no-such-offer")
    try:
        account = new_account(shop)
        answer = shop.request("POST", "/api/v1/checkout/sessions", seed_body(account))
        assert (answer.status, answer.reason) == (400, "PRICE_NOT_FOUND"), answer.body
        assert "BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY" in answer.json()["message"]
        # Items named explicitly are sold as always.
        shop.price("seed1-explicit", group="seed1-explicit")
        named = {**seed_body(account), "items": [{"lookup_key": "seed1-explicit"}]}
        answer = shop.request("POST", "/api/v1/checkout/sessions", named)
        assert answer.status == 200, answer.body
        assert (
            answer.json()["checkout_session_id"] == answer.json()["session"]["checkout_session_id"]
        )
    finally:
        shop.close()
