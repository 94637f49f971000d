"""The notifications page in pages of endpoints: an operator with 120 endpoints reaches every
one of them through Next and Previous (the page showed the first 50 and nothing more). In
headless Chromium through Envoy, in a world of its own (the endpoints would push the other
console tests' endpoints off the first page)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, OPERATOR_KEY
from tests.console.conftest import ConsoleWorld
from tollbooth.console import inbox
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints

ENDPOINTS = 120


def _url(world: ConsoleWorld, path: str) -> str:
    return f"{world.stack.rest_url}/console{path}"


def _shown(page: Any) -> list[str]:
    """The endpoint ids the page shows, in its order."""
    ids = page.locator("section.endpoint").evaluate_all("els => els.map(e => e.id)")
    return [i.removeprefix("endpoint-") for i in ids]


def _links(page: Any) -> set[str]:
    return {
        name
        for name in ("previous-page", "next-page", "first-page")
        if page.locator(f"#{name}").count()
    }


@pytest.fixture(scope="module")
def made(world: ConsoleWorld) -> list[str]:
    """ENDPOINTS endpoints, oldest first (a second apart): their ids."""
    db = world.stack.deps.db
    start = utcnow() - dt.timedelta(hours=1)
    ids: list[str] = []
    with db.transaction() as s:
        for i in range(ENDPOINTS):
            endpoint, _ = endpoints.create(
                s,
                endpoints.Fields(url=f"https://receiver{i}.example/hook"),
                start + dt.timedelta(seconds=i),
            )
            ids.append(endpoint.id)
    return ids


def test_an_operator_with_120_endpoints_pages_through_every_one(
    world: ConsoleWorld, made: list[str], page: Any, context: Any
) -> None:
    size = inbox.ENDPOINTS
    assert size < ENDPOINTS  # more than one page, or this proves nothing

    page.goto(_url(world, "/signin"))
    page.fill("#operator_key", OPERATOR_KEY)
    page.click("#signin")
    page.wait_for_url(_url(world, "/accounts"))
    page.goto(_url(world, "/notifications"))

    seen: list[str] = []
    pages: list[list[str]] = []
    while True:
        shown = _shown(page)
        assert shown, "an empty page"
        pages.append(shown)
        seen.extend(shown)
        links = _links(page)
        assert ("previous-page" in links) == (len(pages) > 1)
        if "next-page" not in links:
            break
        page.click("#next-page")
        page.wait_for_load_state()
    page.screenshot(path=str(ARTIFACTS / "console-notifications-last-page.png"), full_page=True)
    # Every endpoint once, oldest first, pages of `size`.
    assert seen == made
    assert [len(p) for p in pages] == [size, size, ENDPOINTS - 2 * size]
    assert page.locator(f"#endpoint-{made[-1]}").count() == 1

    # Back again: each page as it was going forward, down to the first (no Previous).
    for expected in reversed(pages[:-1]):
        page.click("#previous-page")
        page.wait_for_load_state()
        assert _shown(page) == expected
        assert "next-page" in _links(page)
    assert "previous-page" not in _links(page)

    # A token altered, or one for the other direction: refused, a clear 400.
    cookie = next(c for c in context.cookies() if c["name"] == "tollbooth_console")
    jar = {"tollbooth_console": cookie["value"]}
    page.goto(_url(world, "/notifications"))
    href = page.locator("#next-page").get_attribute("href")
    token = httpx.URL(href).params["page_token"]
    for query in (
        {"page_token": token[:-2] + ("AA" if not token.endswith("AA") else "BB")},
        {"before_token": token},
        {"page_token": token, "before_token": token},
    ):
        r = httpx.get(_url(world, "/notifications"), params=query, cookies=jar, timeout=10)
        assert r.status_code == 400 and "PAGE_TOKEN_INVALID" in r.text, query
    r = httpx.get(
        _url(world, "/notifications"), params={"page_token": token}, cookies=jar, timeout=10
    )
    assert r.status_code == 200 and f'id="endpoint-{made[size]}"' in r.text


def test_a_resend_on_a_later_page_comes_back_to_that_page(
    world: ConsoleWorld, made: list[str], page: Any
) -> None:
    """Resend on the second page: the message is pending again, and the operator is back on
    the second page (the form carries its token), not on the first."""
    from tests.notifications.support import enqueue
    from tollbooth.notifications import repository as notifications

    db = world.stack.deps.db
    ep = made[inbox.ENDPOINTS]  # the first of the second page
    nid = enqueue(db, "credits.granted", None, {"amount": "1"})
    with db.transaction() as s:
        rows = [r for r in notifications.assign_positions(s, 100) if r.id == nid]
        assert notifications.insert_deliveries(s, ep, rows, utcnow()) == 1
        delivery = notifications.get_delivery(s, ep, nid)
        assert delivery is not None
        delivery.state, delivery.attempts = "delivered", 1

    page.goto(_url(world, "/signin"))
    page.fill("#operator_key", OPERATOR_KEY)
    page.click("#signin")
    page.wait_for_url(_url(world, "/accounts"))
    page.goto(_url(world, "/notifications"))
    assert page.locator(f"#endpoint-{ep}").count() == 0
    page.click("#next-page")
    page.wait_for_load_state()
    second = page.url
    assert "page_token=" in second
    row = page.locator(f"#delivery-{ep}-{nid}")
    assert row.locator(".status").inner_text() == "delivered"
    row.locator("button.resend").click()
    page.wait_for_url(second)
    assert page.inner_text("#flash") == f"Resending {nid} to {ep}: pending"
    assert page.locator(f"#delivery-{ep}-{nid} .status").inner_text() == "pending"
