"""The events page and an account's notifications in pages, newest first: an operator with
more events or notifications than a page reaches every one through Older and Newer (the pages
showed the newest 200 and nothing more). Rows sharing a timestamp are ordered by id, and a page
boundary falls among them. In headless Chromium through Envoy, in a world of its own; altered
or foreign tokens are refused (400 PAGE_TOKEN_INVALID) over plain HTTP."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, OPERATOR_KEY
from tests.console.conftest import ConsoleWorld
from tollbooth.accounts import repository as accounts
from tollbooth.console import inbox
from tollbooth.db.models import NotificationOutbox, StripeEvent

ROWS = 120  # more than two pages of 50
START = dt.datetime(2026, 1, 5, 12, 0, 0, tzinfo=dt.UTC)


def _url(world: ConsoleWorld, path: str) -> str:
    return f"{world.stack.rest_url}/console{path}"


def _at(i: int) -> dt.datetime:
    """Three rows a second: rows 3k, 3k+1 and 3k+2 share a timestamp."""
    return START + dt.timedelta(seconds=i // 3)


def _newest_first(rows: list[tuple[dt.datetime, str]]) -> list[str]:
    return [ident for _, ident in sorted(rows, reverse=True)]


@pytest.fixture(scope="module")
def failed_events(world: ConsoleWorld) -> list[str]:
    """ROWS failed events (their ids not in the order of their times) and a few applied ones,
    newer, that the failed filter leaves out: the failed ids, newest first."""
    made: list[tuple[dt.datetime, str]] = []
    with world.stack.deps.db.transaction() as s:
        for i in range(ROWS):
            ident = f"evt_page_{(i * 37) % ROWS:03d}"
            body = {"id": ident, "type": "test.paging", "data": {"object": {"id": "x"}}}
            s.add(
                StripeEvent(
                    event_id=ident,
                    type="test.paging",
                    payload=json.dumps(body).encode(),
                    received_at=_at(i),
                    status="failed",
                    attempts=3,
                    last_error="RuntimeError: down",
                    next_attempt_at=None,
                )
            )
            made.append((_at(i), ident))
        for i in range(5):
            s.add(
                StripeEvent(
                    event_id=f"evt_applied_{i}",
                    type="test.paging",
                    payload=b"{}",
                    received_at=_at(ROWS + 10 + i),
                    status="applied",
                )
            )
    return _newest_first(made)


@pytest.fixture(scope="module")
def account_notes(world: ConsoleWorld) -> tuple[str, str, list[str]]:
    """Two accounts; ROWS notifications of the first (ids not in the order of their times),
    one of the second: (first, second, the first's notification ids newest first)."""
    with world.stack.deps.db.transaction() as s:
        ids = []
        for principal in ("pager-ann", "pager-bea"):
            accounts.insert_if_absent(s, principal, None, None)
            found = accounts.by_principal(s, principal)
            assert found is not None
            ids.append(found.id)
        made: list[tuple[dt.datetime, str]] = []
        for i in range(ROWS):
            nid = f"ntf_page_{(i * 53) % ROWS:03d}"
            s.add(
                NotificationOutbox(
                    id=nid, type="credits.granted", billing_account_id=ids[0], created_at=_at(i)
                )
            )
            made.append((_at(i), nid))
        s.add(
            NotificationOutbox(
                id="ntf_other", type="credits.granted", billing_account_id=ids[1], created_at=START
            )
        )
    return ids[0], ids[1], _newest_first(made)


def _sign_in(world: ConsoleWorld, page: Any) -> dict[str, str]:
    """Signed in in the browser: the session cookie, for plain HTTP requests."""
    page.goto(_url(world, "/signin"))
    page.fill("#operator_key", OPERATOR_KEY)
    page.click("#signin")
    page.wait_for_url(_url(world, "/accounts"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "tollbooth_console")
    return {"tollbooth_console": cookie["value"]}


def _links(page: Any) -> set[str]:
    return {
        name
        for name in ("previous-page", "next-page", "first-page")
        if page.locator(f"#{name}").count()
    }


def _walk(page: Any, shown: Any) -> list[list[str]]:
    """Every page from the one open, through Older to the last, then back through Newer to
    the first, each page as it was going forward: the pages, in order."""
    pages: list[list[str]] = []
    while True:
        ids = shown()
        assert ids, "an empty page"
        pages.append(ids)
        links = _links(page)
        assert ("previous-page" in links) == (len(pages) > 1)
        assert ("first-page" in links) == (len(pages) > 1)
        if "next-page" not in links:
            break
        page.click("#next-page")
        page.wait_for_load_state()
    for expected in reversed(pages[:-1]):
        page.click("#previous-page")
        page.wait_for_load_state()
        assert shown() == expected
        assert "next-page" in _links(page)
    assert "previous-page" not in _links(page)
    return pages


def _token(page: Any) -> str:
    href = page.locator("#next-page").get_attribute("href")
    return str(httpx.URL(href).params["page_token"])


def _altered(token: str) -> str:
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


def _refused(world: ConsoleWorld, jar: dict[str, str], path: str, query: dict[str, str]) -> None:
    r = httpx.get(_url(world, path), params=query, cookies=jar, timeout=10)
    assert r.status_code == 400, (path, query, r.status_code)
    assert "PAGE_TOKEN_INVALID" in r.text, (path, query)


def test_an_operator_pages_through_every_failed_event_newest_first(
    world: ConsoleWorld, failed_events: list[str], page: Any
) -> None:
    size = inbox.EVENTS
    assert size < ROWS and size % 3 != 0  # more than a page; a boundary among equal times
    jar = _sign_in(world, page)
    page.goto(_url(world, "/events?status=failed"))

    def shown() -> list[str]:
        ids = page.locator("#events tbody tr[id]").evaluate_all("els => els.map(e => e.id)")
        return [i.removeprefix("event-") for i in ids]

    pages = _walk(page, shown)
    assert [ident for p in pages for ident in p] == failed_events
    assert [len(p) for p in pages] == [size, size, ROWS - 2 * size]
    page.screenshot(path=str(ARTIFACTS / "console-events-paged.png"), full_page=True)

    # The filter stays in the links; the unfiltered list has the applied events too.
    assert "status=failed" in (page.locator("#next-page").get_attribute("href") or "")
    page.goto(_url(world, "/events"))
    assert shown()[:5] == [f"evt_applied_{i}" for i in reversed(range(5))]

    # Altered, the other direction's, both at once, or another filter's: refused.
    page.goto(_url(world, "/events?status=failed"))
    token = _token(page)
    for path, query in (
        ("/events", {"status": "failed", "page_token": _altered(token)}),
        ("/events", {"status": "failed", "before_token": token}),
        ("/events", {"status": "failed", "page_token": token, "before_token": token}),
        ("/events", {"page_token": token}),
        ("/events", {"status": "pending", "page_token": token}),
        ("/notifications", {"page_token": token}),
    ):
        _refused(world, jar, path, query)
    r = httpx.get(
        _url(world, "/events"),
        params={"status": "failed", "page_token": token},
        cookies=jar,
        timeout=10,
    )
    assert r.status_code == 200 and f'id="event-{failed_events[size]}"' in r.text
    assert f'id="event-{failed_events[size - 1]}"' not in r.text


def test_a_replay_on_a_later_page_comes_back_to_that_page(
    world: ConsoleWorld, failed_events: list[str], page: Any
) -> None:
    _sign_in(world, page)
    page.goto(_url(world, "/events?status=failed"))
    page.click("#next-page")
    page.wait_for_load_state()
    second = page.url
    assert "page_token=" in second and "status=failed" in second
    ident = failed_events[inbox.EVENTS + 1]
    page.locator(f"#event-{ident} button.replay").click()
    page.wait_for_url(second)
    assert page.inner_text("#flash").startswith(f"Replayed {ident}: ignored:")
    assert page.locator(f"#event-{ident}").count() == 0  # no longer failed


def test_an_operator_pages_through_every_notification_of_an_account(
    world: ConsoleWorld, account_notes: tuple[str, str, list[str]], page: Any
) -> None:
    ann, bea, notes = account_notes
    size = inbox.NOTIFICATIONS
    assert size < ROWS and size % 3 != 0
    jar = _sign_in(world, page)
    page.goto(_url(world, f"/accounts/{ann}"))

    def shown() -> list[str]:
        return list(page.locator("#notifications tbody tr td:first-child code").all_inner_texts())

    pages = _walk(page, shown)
    assert [nid for p in pages for nid in p] == notes  # never the other account's
    assert [len(p) for p in pages] == [size, size, ROWS - 2 * size]
    page.screenshot(path=str(ARTIFACTS / "console-account-notifications-paged.png"), full_page=True)

    page.goto(_url(world, f"/accounts/{ann}"))
    token = _token(page)
    assert httpx.URL(page.locator("#next-page").get_attribute("href")).fragment == "notifications"
    for path, query in (
        (f"/accounts/{ann}", {"page_token": _altered(token)}),
        (f"/accounts/{ann}", {"before_token": token}),
        (f"/accounts/{ann}", {"page_token": token, "before_token": token}),
        (f"/accounts/{bea}", {"page_token": token}),  # another account's list
        ("/events", {"page_token": token}),
    ):
        _refused(world, jar, path, query)
    r = httpx.get(
        _url(world, f"/accounts/{ann}"), params={"page_token": token}, cookies=jar, timeout=10
    )
    assert r.status_code == 200 and f"<code>{notes[size]}</code>" in r.text
    assert f"<code>{notes[size - 1]}</code>" not in r.text
