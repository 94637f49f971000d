"""Long values in the console and on the sandbox's pages, in headless Chromium: the longest
name, alias, e-mail, product name, lookup key, group, credit type and reason the API takes, with
no space to break at, wrap inside the page instead of pushing it sideways (no horizontal
scrolling at a 1200 px window, nothing drawn outside its table cell or card)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, OPERATOR_KEY
from tests.console.conftest import ConsoleWorld

pytestmark = pytest.mark.envoy

# The elements that overflow their box: none may, and the page may not scroll sideways.
OVERFLOW = """() => {
  const doc = document.documentElement;
  const out = [];
  if (doc.scrollWidth > doc.clientWidth) out.push(`page ${doc.scrollWidth}`);
  const boxes = 'main td, main th, main dd, main h1, main h2, main h3, main p, .card,'
    + ' main table, .checkout, .summary, .pay';
  for (const el of document.querySelectorAll(boxes)) {
    const what = `${el.tagName}.${el.className}`;
    if (el.scrollWidth > el.clientWidth + 1) out.push(`${what} ${el.scrollWidth}`);
    const r = el.getBoundingClientRect();
    if (r.right > doc.clientWidth + 1) out.push(`${what} right ${r.right}`);
  }
  return out;
}"""


def _long(prefix: str, n: int) -> str:
    return (prefix + "x" * n)[:n]


@pytest.fixture(scope="module")
def longest(world: ConsoleWorld) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    product = world.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": _long(f"Product{suffix}", 200), "description": _long("Described", 900)},
    )
    assert product.status == 200, product.body
    lookup = _long(f"lk{suffix}", 200)
    price = world.request(
        "POST",
        f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
        {
            "product_id": product.json()["product_id"],
            "currency": "usd",
            "unit_amount": 2900,
            "type": "PRICE_TYPE_RECURRING",
            "recurring": {"interval": "RECURRING_INTERVAL_MONTH"},
            "lookup_key": lookup,
            "subscription_group": _long(f"group{suffix}", 200),
            "credit_grants": [
                {"credit_type": _long(f"type{suffix}", 100), "amount": "1000", "on_purchase": True}
            ],
        },
    )
    assert price.status == 200, price.body
    alias = _long(f"alias{suffix}", 200)
    made = world.request(
        "POST",
        "/mgt/v1/accounts",
        {
            "alias": alias,
            "name": _long(f"Name{suffix}", 200),
            "email": _long(f"e{suffix}", 300) + "@example.com",
            "metadata": {"crm": _long("m", 500)},
        },
    )
    assert made.status == 200, made.body
    account = made.json()["id"]
    issued = world.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": alias, "user_id": "u1", "scopes": ["checkout", "portal"]},
    )
    assert issued.status == 200, issued.body
    created = world.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "items": [{"lookup_key": lookup}],
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/pricing",
            "request_id": f"long-{suffix}",
        },
        issued.json()["access_token"],
    )
    assert created.status == 200, created.body
    session = created.json()["session"]["stripe_checkout_session_id"]
    granted = world.request(
        "POST",
        f"/mgt/v1/accounts/{account}/credits/grants",
        {
            "credit_type": _long(f"type{suffix}", 100),
            "amount": "5",
            "reason": _long("reason", 500),
            "request_id": f"grant-{suffix}",
        },
    )
    assert granted.status == 200, granted.body
    return {
        "account": account,
        "alias": alias,
        "session": session,
        "url": created.json()["url"],
        "token": issued.json()["access_token"],
    }


def _console(world: ConsoleWorld, path: str) -> str:
    return f"{world.stack.rest_url}/console{path}"


def test_console_pages_with_the_longest_values_do_not_overflow(
    world: ConsoleWorld, longest: dict[str, str], page: Any
) -> None:
    page.goto(_console(world, "/signin"))
    page.fill("#operator_key", OPERATOR_KEY)
    page.click("#signin")
    page.wait_for_url(_console(world, "/accounts"))
    for name, path in (
        ("accounts", f"/accounts?q={longest['alias']}"),
        ("account", f"/accounts/{longest['account']}"),
        ("catalog", "/catalog"),
        ("events", "/events"),
        ("notifications", "/notifications"),
    ):
        page.goto(_console(world, path))
        assert page.is_visible("main"), name
        page.screenshot(path=str(ARTIFACTS / f"console-long-{name}.png"), full_page=True)
        assert page.evaluate(OVERFLOW) == [], name


def test_the_sandbox_pages_of_a_very_long_product_name_render(
    world: ConsoleWorld, longest: dict[str, str], page: Any
) -> None:
    """The checkout page (the item's line, the card form beside it) and, once paid, the portal
    (the plan's card) of a product whose name is 200 characters without a space."""
    answer = page.goto(longest["url"])
    assert answer is not None and answer.status == 200
    assert "SANDBOX" in page.inner_text("#sandbox-banner")
    assert "Product" in page.inner_text("#line-items")
    page.screenshot(path=str(ARTIFACTS / "sandbox-long-checkout.png"), full_page=True)
    assert page.evaluate(OVERFLOW) == []
    form = page.locator("#pay-form").bounding_box()
    assert form is not None and form["x"] + form["width"] <= 1200
    world.stripe.raw_request(
        "post", f"/v1/test_helpers/checkout/sessions/{longest['session']}/complete"
    )
    world.settled()
    portal = world.request(
        "POST",
        "/api/v1/portal/sessions",
        {"return_url": "https://app.example/account"},
        longest["token"],
    )
    assert portal.status == 200, portal.body
    answer = page.goto(json.loads(portal.body)["url"])
    assert answer is not None and answer.status == 200
    assert "Product" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "sandbox-long-portal.png"), full_page=True)
    assert page.evaluate(OVERFLOW) == []
