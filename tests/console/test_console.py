"""The operator console through Envoy, in headless Chromium: sign-in with the operator key, an
account that bought `pro` in the sandbox with its ledger and a usage chart, a balance with
overage and the ledger entries changing it, a Stripe event whose
handler failed (provider unreachable) listed as failed and replayed from the console,
notification deliveries with their attempts and a resend, and the refusals (wrong key, missing
CSRF token, no cookie)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.checkout.support import wait_for
from tests.conftest import ARTIFACTS, OPERATOR_KEY
from tests.console.conftest import ConsoleWorld
from tests.devstack import free_port
from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tollbooth.app import build_provider, live_key, webhook_handlers
from tollbooth.db.models import NotificationAttempt, NotificationDelivery, StripeEvent
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer, Policy
from tollbooth.webhooks.service import Inbox

pytestmark = pytest.mark.envoy

GRANTS = [{"credit_type": "api_calls", "amount": "1000", "on_purchase": True}]
# Usage of the buyer: (days ago, events); each event has tokens=7.
USAGE = [(3, 3), (1, 2)]


def _buy(world: ConsoleWorld, principal: str, email: str) -> tuple[str, str, str]:
    """A `pro` checkout paid in the sandbox: (token, account id, Stripe session id)."""
    issued = world.request(
        "POST",
        "/mgt/v1/token/issue",
        {
            "principal_id": principal,
            "user_id": "u1",
            "email": email,
            "scopes": ["checkout", "credits:read", "billing:read"],
        },
    )
    assert issued.status == 200, issued.body
    token, account = issued.json()["access_token"], issued.json()["billing_account_id"]
    created = world.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "items": [{"lookup_key": "pro"}],
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/pricing",
            "request_id": f"buy-{principal}",
        },
        token,
    )
    assert created.status == 200, created.body
    stripe_id = created.json()["session"]["stripe_checkout_session_id"]
    paid = world.stripe.raw_request(
        "post", f"/v1/test_helpers/checkout/sessions/{stripe_id}/complete"
    )
    assert json.loads(paid.body)["status"] == "complete"  # type: ignore[attr-defined]
    return token, account, stripe_id


def _balance(world: ConsoleWorld, token: str) -> str:
    r = world.request("GET", "/api/v1/credits/balance?type=api_calls", token=token)
    return str(r.json().get("balance", "")) if r.status == 200 else ""


def _completed_event(world: ConsoleWorld, stripe_id: str) -> dict[str, Any]:
    listed = world.stripe.raw_request(
        "get", "/v1/events", type="checkout.session.completed", limit=100
    )
    for event in json.loads(listed.body)["data"]:  # type: ignore[attr-defined]
        if event["data"]["object"]["id"] == stripe_id:
            return dict(event)
    raise AssertionError(f"no checkout.session.completed for {stripe_id}")


def _event(world: ConsoleWorld, event_id: str) -> tuple[str, int, str] | None:
    """(status, attempts, last error) of a stored event."""
    with world.stack.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event_id)
        return None if row is None else (row.status, row.attempts, row.last_error or "")


def _failed_event(world: ConsoleWorld, kind: str) -> str:
    """A `test.{kind}` event in the inbox, failed after 3 attempts, not retried again: its id."""
    ident = f"evt_{kind}_{uuid.uuid4().hex[:8]}"
    body = {"id": ident, "type": f"test.{kind}", "data": {"object": {"id": "x"}}}
    with world.stack.deps.db.transaction() as s:
        s.add(
            StripeEvent(
                event_id=ident,
                type=f"test.{kind}",
                payload=json.dumps(body).encode(),
                status="failed",
                attempts=3,
                last_error="RuntimeError: down",
                next_attempt_at=None,
            )
        )
    return ident


def _status(world: ConsoleWorld, event_id: str) -> str | None:
    found = _event(world, event_id)
    return None if found is None else found[0]


def _record_with_provider_down(world: ConsoleWorld, event: dict[str, Any]) -> None:
    """The inbox stores the event and its handler fails: the provider it reads is unreachable
    (a closed port), as when Stripe cannot be reached while an event is applied."""
    settings = world.stack.settings.model_copy(
        update={"stripe_api_base": f"http://127.0.0.1:{free_port()}"}
    )
    db = world.stack.deps.db
    down = Inbox(db, webhook_handlers(build_provider(settings), db), livemode=live_key(settings))
    _, _, outcome = down.record(json.dumps(event).encode())
    assert outcome.status == "failed", outcome


@pytest.fixture(scope="module")
def bought(world: ConsoleWorld) -> dict[str, str]:
    """Alice bought `pro` (delivered and applied) and used the API; Bob bought `pro` while the
    webhook path was closed, and his checkout.session.completed was stored while the provider
    was unreachable: its handler failed and it sits in the inbox as `failed`."""
    world.price("pro", credit_grants=GRANTS)
    alias = f"alice-{uuid.uuid4().hex[:6]}"
    token, account, _ = _buy(world, alias, "Alice@Example.com")
    wait_for(lambda: _balance(world, token) == "1000", 60, "alice's grant")
    metric = world.request(
        "POST",
        f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
        {
            "code": "api_calls_made",
            "name": "API calls",
            "event_name": "api_call",
            "aggregation": "AGGREGATION_COUNT",
        },
    )
    assert metric.status == 200, metric.body
    today = dt.datetime.now(dt.UTC).date()
    events = []
    for ago, n in USAGE:
        noon = dt.datetime.combine(today - dt.timedelta(days=ago), dt.time(12), dt.UTC)
        for i in range(n):
            events.append(
                {
                    "unique_id": f"{alias}-{ago}-{i}",
                    "account": alias,
                    "event_name": "api_call",
                    "timestamp": (noon + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": {"tokens": 7},
                }
            )
    batch = world.request("POST", "/mgt/v1/events:batch", {"events": events})
    assert batch.status == 200, batch.body
    assert {r["status"] for r in batch.json()["results"]} == {"EVENT_STATUS_ACCEPTED"}

    world.gate.open.clear()  # the sandbox's deliveries get 503 and wait
    bob_token, bob, stripe_id = _buy(world, f"bob-{uuid.uuid4().hex[:6]}", "bob@example.com")
    event = _completed_event(world, stripe_id)
    _record_with_provider_down(world, event)
    status, attempts, error = _event(world, event["id"]) or ("", 0, "")
    assert (status, attempts) == ("failed", 1) and error, error
    assert _balance(world, bob_token) in ("", "0")
    return {
        "alias": alias,
        "account": account,
        "token": token,
        "bob": bob,
        "bob_token": bob_token,
        "event": event["id"],
    }


def _url(world: ConsoleWorld, path: str) -> str:
    return f"{world.stack.rest_url}/console{path}"


def _sign_in(world: ConsoleWorld, page: Any, key: str = OPERATOR_KEY) -> None:
    page.goto(_url(world, "/signin"))
    page.fill("#operator_key", key)
    page.click("#signin")


def test_no_cookie_redirects_to_sign_in(world: ConsoleWorld, page: Any) -> None:
    for path in ("/", "/accounts", "/events", "/catalog", "/notifications", "/accounts/x"):
        r = httpx.get(_url(world, path), follow_redirects=False, timeout=10)
        assert (r.status_code, r.headers["location"]) == (303, "/console/signin"), path
    page.goto(_url(world, "/accounts"))
    assert page.url == _url(world, "/signin")
    assert page.is_visible("#operator_key")
    page.screenshot(path=str(ARTIFACTS / "console-signin.png"), full_page=True)


def test_wrong_key_is_refused(world: ConsoleWorld, page: Any, context: Any) -> None:
    page.goto(_url(world, "/signin"))
    page.fill("#operator_key", OPERATOR_KEY + "-wrong")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#signin")
    assert answer.value.status == 401
    assert "not the operator key" in page.inner_text("#error")
    page.screenshot(path=str(ARTIFACTS / "console-wrong-key.png"), full_page=True)
    page.goto(_url(world, "/accounts"))
    assert page.url == _url(world, "/signin")


def test_session_cookie_is_signed_httponly_samesite(world: ConsoleWorld, page: Any, context: Any):  # type: ignore[no-untyped-def]
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    cookies = [c for c in context.cookies() if c["name"] == "tollbooth_console"]
    assert len(cookies) == 1
    cookie = cookies[0]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/console")
    assert OPERATOR_KEY not in cookie["value"]
    # A tampered cookie is no session.
    forged = cookie["value"][:-4] + ("AAAA" if not cookie["value"].endswith("AAAA") else "BBBB")
    r = httpx.get(
        _url(world, "/accounts"),
        cookies={"tollbooth_console": forged},
        follow_redirects=False,
        timeout=10,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/console/signin")


def test_account_that_bought_pro_with_ledger_and_usage_chart(
    world: ConsoleWorld, bought: dict[str, str], page: Any
) -> None:
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    # Search by email (any case, part of it), by alias and by id: the one account each time.
    for query in ("alice@example", bought["alias"], bought["account"]):
        page.fill("#q", query)
        page.click("#search")
        page.wait_for_load_state()
        rows = page.locator("#accounts tbody tr")
        assert rows.count() == 1, query
        assert bought["account"] in rows.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-accounts.png"), full_page=True)
    page.click(f"a[href='/console/accounts/{bought['account']}']")
    page.wait_for_url(_url(world, f"/accounts/{bought['account']}"))
    assert page.inner_text("#account-id") == bought["account"]
    assert page.inner_text("#plan").strip() == "pro"
    subscription = page.inner_text("#subscriptions tbody tr")
    assert "pro" in subscription and "active" in subscription
    assert page.inner_text("#purchases tbody") == "No purchase."  # one-time prices only
    assert page.inner_text("#balance-api_calls .figure") == "1000"
    ledger = page.locator("#balance-api_calls .ledger tbody tr")
    assert ledger.count() == 1
    assert "grant" in ledger.first.inner_text() and "1000" in ledger.first.inner_text()
    today = dt.datetime.now(dt.UTC).date()
    bars = page.locator("#usage-api_calls_made rect.bar")
    assert bars.count() == 30
    values = {
        bars.nth(i).get_attribute("data-day"): bars.nth(i).get_attribute("data-value")
        for i in range(bars.count())
    }
    expected = {(today - dt.timedelta(days=ago)).isoformat(): str(n) for ago, n in USAGE}
    assert {d: v for d, v in values.items() if v != "-"} == expected
    # The busier day draws the taller bar.
    heights = {
        bars.nth(i).get_attribute("data-day"): int(bars.nth(i).get_attribute("height") or 0)
        for i in range(bars.count())
    }
    days = sorted(expected)
    assert heights[days[0]] > heights[days[1]] > 0
    page.screenshot(path=str(ARTIFACTS / "console-account.png"), full_page=True)


def test_account_page_shows_overage_and_the_ledger_changes_to_it(
    world: ConsoleWorld, page: Any
) -> None:
    """A metric burning 0.25 `od_units` per event burns 10 events of an account that holds
    none: 2.5 of overage (an OVERAGE entry, amount 0); a grant of 1 pays 1 of it back (an
    OVERAGE_PAID entry). The page shows the balance's overage and each entry's change to it
    exactly as the API gives them; a balance without overage shows none."""
    alias = f"carl-{uuid.uuid4().hex[:6]}"
    issued = world.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": alias, "user_id": "u1", "scopes": ["credits:read"]},
    )
    assert issued.status == 200, issued.body
    account = issued.json()["billing_account_id"]
    code = f"od_{uuid.uuid4().hex[:6]}"
    metric = world.request(
        "POST",
        f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
        {
            "code": code,
            "name": "Overage calls",
            "event_name": code,
            "aggregation": "AGGREGATION_COUNT",
            "credit_burn": {"credit_type": "od_units", "rate": "0.25"},
        },
    )
    assert metric.status == 200, metric.body
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    events = [
        {"unique_id": f"{alias}-{i}", "account": alias, "event_name": code, "timestamp": now}
        for i in range(10)
    ]
    batch = world.request("POST", "/mgt/v1/events:batch", {"events": events})
    assert batch.status == 200, batch.body
    for ctype, amount in (("od_units", "1"), ("plain_units", "5")):
        granted = world.request(
            "POST",
            f"/mgt/v1/accounts/{account}/credits/grants",
            {"credit_type": ctype, "amount": amount, "request_id": uuid.uuid4().hex},
        )
        assert granted.status == 200, granted.body
    balance = world.request("GET", f"/mgt/v1/accounts/{account}/credits/balance?type=od_units")
    assert balance.status == 200, balance.body
    overage = balance.json()["overage"]
    assert Decimal(overage) == Decimal("10") * Decimal("0.25") - Decimal("1")
    listed = world.request(
        "GET", f"/mgt/v1/accounts/{account}/credits/ledger?credit_type=od_units&page_size=100"
    )
    assert listed.status == 200, listed.body
    entries = listed.json()["entries"]
    changes = {e["entry_id"]: e["overage"] for e in entries if Decimal(e["overage"]) != 0}
    assert sorted(Decimal(v) for v in changes.values()) == [Decimal("-1"), Decimal("2.5")]

    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    page.goto(_url(world, f"/accounts/{account}"))
    assert page.inner_text("#balance-od_units .overage-figure") == overage
    for e in entries:
        cell = page.locator(f"#balance-od_units tr[data-entry-id='{e['entry_id']}'] td.overage")
        assert cell.inner_text() == changes.get(e["entry_id"], ""), e
        amount = page.locator(f"#balance-od_units tr[data-entry-id='{e['entry_id']}'] td.amount")
        assert amount.inner_text() == e["amount"], e
    assert page.locator("#balance-plain_units .figure").inner_text() == "5"
    assert page.locator("#balance-plain_units .overage-figure").count() == 0
    page.screenshot(path=str(ARTIFACTS / "console-overage.png"), full_page=True)


def test_missing_or_wrong_csrf_token_is_refused(
    world: ConsoleWorld, bought: dict[str, str], page: Any, context: Any
) -> None:
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    cookie = next(c for c in context.cookies() if c["name"] == "tollbooth_console")
    jar = {"tollbooth_console": cookie["value"]}
    before = _status(world, bought["event"])
    for body in ({}, {"csrf_token": "not-the-token"}):
        r = httpx.post(
            _url(world, f"/events/{bought['event']}/replay"),
            data=body,
            cookies=jar,
            follow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 403, r.text
        assert "CSRF_INVALID" in r.text
        assert _status(world, bought["event"]) == before
    # Signing out needs the token too.
    r = httpx.post(_url(world, "/signout"), data={}, cookies=jar, timeout=10)
    assert r.status_code == 403
    assert httpx.get(_url(world, "/accounts"), cookies=jar, timeout=10).status_code == 200


def test_a_failed_stripe_event_is_listed_and_replayed_from_the_console(
    world: ConsoleWorld, bought: dict[str, str], page: Any, context: Any
) -> None:
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    _, _, error = _event(world, bought["event"]) or ("", 0, "")
    page.goto(_url(world, "/events?status=failed"))
    row = page.locator(f"#event-{bought['event']}")
    assert row.locator(".status").inner_text() == "failed"
    assert row.locator("td.attempts").inner_text() == "1"
    assert row.locator("td.last-error").inner_text() == error
    assert "checkout.session.completed" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-events-failed.png"), full_page=True)
    # The other tabs list by the stored status: alice's applied event is not a failed one.
    page.goto(_url(world, "/events?status=applied"))
    assert page.locator(f"#event-{bought['event']}").count() == 0
    assert page.locator("#events tbody .status.applied").count() >= 1
    page.goto(_url(world, "/events?status=failed"))
    page.locator(f"#event-{bought['event']} button.replay").click()
    page.wait_for_url(_url(world, "/events?status=failed"))  # back on the page it was on
    flash = page.inner_text("#flash")
    assert flash.startswith(f"Replayed {bought['event']}: applied:") and "fulfilled" in flash, flash
    assert page.locator(f"#event-{bought['event']}").count() == 0  # failed no more
    page.goto(_url(world, "/events"))
    row = page.locator(f"#event-{bought['event']}")
    assert row.locator(".status").inner_text() == "applied"
    assert row.locator("button.replay").count() == 0
    assert _status(world, bought["event"]) == "applied"
    assert _balance(world, bought["bob_token"]) == "1000"
    page.screenshot(path=str(ARTIFACTS / "console-events-replayed.png"), full_page=True)
    # No longer failed: gone from the failed tab, and a replay by hand is refused.
    page.goto(_url(world, "/events?status=failed"))
    assert page.locator(f"#event-{bought['event']}").count() == 0
    cookie = next(c for c in context.cookies() if c["name"] == "tollbooth_console")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = httpx.post(
        _url(world, f"/events/{bought['event']}/replay"),
        data={"csrf_token": csrf, "seen": "a-version"},
        cookies={"tollbooth_console": cookie["value"]},
        timeout=10,
    )
    assert (r.status_code, "EVENT_NOT_REPLAYABLE" in r.text) == (409, True)
    # The delivery the sandbox kept retrying arrives now, and grants nothing twice.
    world.gate.open.set()
    world.settled()
    assert _balance(world, bought["bob_token"]) == "1000"


def test_catalog_page_and_an_accounts_notifications(
    world: ConsoleWorld, bought: dict[str, str], page: Any
) -> None:
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    page.goto(_url(world, "/catalog"))
    text = page.inner_text("main")
    assert "pro" in text and "29.00 USD" in text and "1000 api_calls" in text
    page.screenshot(path=str(ARTIFACTS / "console-catalog.png"), full_page=True)
    # An account's page lists its outbox notifications (the purchase wrote some).
    page.goto(_url(world, f"/accounts/{bought['account']}"))
    rows = page.locator("#notifications tbody tr")
    assert rows.count() >= 1
    assert bought["account"] in page.inner_text("#notifications")


def test_bad_input_is_a_clear_4xx(world: ConsoleWorld, page: Any, context: Any) -> None:
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    cookie = next(c for c in context.cookies() if c["name"] == "tollbooth_console")
    jar = {"tollbooth_console": cookie["value"]}
    cases = [
        ("/events?status=bogus", 400, "STATUS_INVALID"),
        ("/accounts/acct_nobody", 404, "NOT_FOUND"),
        ("/accounts?q=" + "x" * 201, 400, "QUERY_TOO_LONG"),
        ("/nowhere", 404, "NOT_FOUND"),
    ]
    for path, status, reason in cases:
        r = httpx.get(_url(world, path), cookies=jar, timeout=10)
        assert (r.status_code, reason in r.text) == (status, True), path
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = httpx.post(
        _url(world, "/events/evt_nobody/replay"),
        data={"csrf_token": csrf, "seen": "a-version"},
        cookies=jar,
        timeout=10,
    )
    assert (r.status_code, "NOT_FOUND" in r.text) == (404, True)


def test_sign_out_ends_the_session(world: ConsoleWorld, page: Any, browser: Any) -> None:
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    copied = [c for c in page.context.cookies() if c["name"] == "tollbooth_console"]
    page.click("#signout")
    page.wait_for_url(_url(world, "/signin"))
    page.goto(_url(world, "/events"))
    assert page.url == _url(world, "/signin")
    # Everywhere: a copy of the cookie taken before the sign-out is no session either.
    other = browser.new_context()
    try:
        other.add_cookies(copied)
        tab = other.new_page()
        tab.goto(_url(world, "/events"))
        assert tab.url == _url(world, "/signin")
    finally:
        other.close()


def test_another_site_can_neither_sign_the_operator_out_nor_post(
    world: ConsoleWorld, page: Any, context: Any
) -> None:
    """A link to the console from another site (a chat, a ticket) keeps the session, and a
    cross-site form posting to the console does nothing, the operator's session included."""
    _sign_in(world, page)
    page.wait_for_url(_url(world, "/accounts"))
    elsewhere = context.new_page()
    link = f'<a id="go" href="{_url(world, "/events")}">console</a>'
    elsewhere.goto("data:text/html," + link)
    with elsewhere.expect_navigation():
        elsewhere.click("#go")
    assert elsewhere.url == _url(world, "/events")  # signed in, not sent to sign in
    for action in ("/signout", "/signin", "/events/evt_x/replay"):
        form = (
            f'<form id="f" method="post" action="{_url(world, action)}">'
            '<input name="csrf_token" value="forged"><input name="operator_key" value="x"></form>'
        )
        elsewhere.goto("data:text/html," + form)
        with elsewhere.expect_navigation():
            elsewhere.evaluate("document.getElementById('f').submit()")
        page.goto(_url(world, "/accounts"))
        assert page.url == _url(world, "/accounts"), action  # still signed in
    elsewhere.close()


def _attempts(world: ConsoleWorld, endpoint_id: str, notification_id: str) -> list[int]:
    with world.stack.deps.db.transaction(readonly=True) as session:
        rows = session.query(NotificationAttempt).filter_by(
            endpoint_id=endpoint_id, notification_id=notification_id
        )
        return [a.status_code for a in sorted(rows, key=lambda a: a.number)]


def _state(world: ConsoleWorld, endpoint_id: str, notification_id: str) -> str:
    with world.stack.deps.db.transaction(readonly=True) as session:
        row = (
            session.query(NotificationDelivery)
            .filter_by(endpoint_id=endpoint_id, notification_id=notification_id)
            .one()
        )
        return row.state


def test_notification_deliveries_with_attempts_and_resend(
    world: ConsoleWorld, bought: dict[str, str], page: Any, context: Any
) -> None:
    """An endpoint that answers 500 to each message's first POST: the page shows the failed
    attempt (status, latency, error), then the delivery; Resend makes it pending again and
    the next pass sends it once more."""
    receiver = Receiver(fail_first=1)
    server = ReceiverServer(receiver)
    db = world.stack.deps.db
    deliverer = Deliverer(db, Policy(retry_first_sec=0.05, retry_max_sec=0.1, poll_sec=0.05))
    try:
        with db.transaction() as s:
            endpoint, receiver.secret = endpoints.create(
                s, endpoints.Fields(url=receiver.url), utcnow()
            )
            ep = endpoint.id

        def settled() -> bool:
            deliverer.run_once()
            total, pending = _counts(world, ep)
            return total > 0 and pending == 0

        wait_for(settled, 60, "every message delivered to the endpoint")
        delivered = receiver.ids()
        mine = delivered[0]
        assert _attempts(world, ep, mine) == [500, 204]

        _sign_in(world, page)
        page.wait_for_url(_url(world, "/accounts"))
        page.goto(_url(world, "/notifications"))
        section = page.locator(f"#endpoint-{ep}")
        assert receiver.url in section.locator("h2").inner_text()
        row = section.locator(f"#delivery-{ep}-{mine}")
        assert row.locator(".status").inner_text() == "delivered"
        tries = row.locator(".attempt").all_inner_texts()
        assert len(tries) == 2, tries
        assert tries[0].startswith("#1 · 500 · ") and "HTTP 500" in tries[0], tries
        assert tries[1].startswith("#2 · 204 · ") and "ms" in tries[1], tries
        assert section.locator("tbody tr").count() == len(delivered)
        page.screenshot(path=str(ARTIFACTS / "console-notifications.png"), full_page=True)

        # Resend without the CSRF token: refused, nothing changes.
        cookie = next(c for c in context.cookies() if c["name"] == "tollbooth_console")
        jar = {"tollbooth_console": cookie["value"]}
        r = httpx.post(_url(world, f"/notifications/{ep}/{mine}/resend"), cookies=jar, timeout=10)
        assert r.status_code == 403 and "CSRF_INVALID" in r.text
        assert _state(world, ep, mine) == "delivered"
        csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
        r = httpx.post(
            _url(world, f"/notifications/{ep}/ntf_nobody/resend"),
            data={"csrf_token": csrf, "seen": "a-version"},
            cookies=jar,
            timeout=10,
        )
        assert r.status_code == 404 and "NOT_FOUND" in r.text
        # A message the delivery process has not queued yet (no position): 409, nothing made.
        fresh = enqueue(db, "credits.granted", bought["account"], {"amount": "1"})
        r = httpx.post(
            _url(world, f"/notifications/{ep}/{fresh}/resend"),
            data={"csrf_token": csrf, "seen": "a-version"},
            cookies=jar,
            timeout=10,
        )
        assert r.status_code == 409 and "NOTIFICATION_NOT_QUEUED" in r.text
        assert _counts(world, ep)[1] == 0

        row.locator("button.resend").click()
        page.wait_for_url(_url(world, "/notifications"))
        assert page.inner_text("#flash") == f"Resending {mine} to {ep}: pending"
        row = page.locator(f"#delivery-{ep}-{mine}")
        assert row.locator(".status").inner_text() == "pending"
        assert _state(world, ep, mine) == "pending"
        page.screenshot(path=str(ARTIFACTS / "console-notifications-resend.png"), full_page=True)

        wait_for(settled, 60, "the message sent again")
        assert _state(world, ep, mine) == "delivered"
        assert _attempts(world, ep, mine) == [500, 204, 204]
        assert receiver.ok_posts[mine] == 2
        page.reload()
        row = page.locator(f"#delivery-{ep}-{mine}")
        assert row.locator(".status").inner_text() == "delivered"
        assert len(row.locator(".attempt").all_inner_texts()) == 3
    finally:
        deliverer.close()
        server.close()


def _counts(world: ConsoleWorld, endpoint_id: str) -> tuple[int, int]:
    """(deliveries, pending deliveries) of the endpoint."""
    with world.stack.deps.db.transaction(readonly=True) as session:
        rows = session.query(NotificationDelivery).filter_by(endpoint_id=endpoint_id).all()
        return len(rows), sum(1 for d in rows if d.state == "pending")


def test_resend_from_two_tabs_sends_the_message_again_once(
    world: ConsoleWorld, bought: dict[str, str], context: Any
) -> None:
    """The notifications page open in two tabs: Resend in the first makes the message pending
    and it is delivered again; Resend in the second (its page shows the message as it was
    before) is refused with 409 NOTIFICATION_CHANGED and sends nothing a third time."""
    receiver = Receiver()
    server = ReceiverServer(receiver)
    db = world.stack.deps.db
    deliverer = Deliverer(db, Policy(retry_first_sec=0.05, retry_max_sec=0.1, poll_sec=0.05))
    try:
        ep, mine = _one_delivered(world, receiver, deliverer, bought["account"])
        assert receiver.ok_posts[mine] == 1

        first, second = context.new_page(), context.new_page()
        _sign_in(world, first)
        first.wait_for_url(_url(world, "/accounts"))
        for tab in (first, second):
            tab.goto(_url(world, "/notifications"))
            assert tab.locator(f"#delivery-{ep}-{mine} .status").inner_text() == "delivered"

        first.locator(f"#delivery-{ep}-{mine} button.resend").click()
        first.wait_for_url(_url(world, "/notifications"))
        assert first.inner_text("#flash") == f"Resending {mine} to {ep}: pending"

        def settled() -> bool:
            deliverer.run_once()
            return _counts(world, ep)[1] == 0

        wait_for(settled, 60, "the message sent again")
        assert receiver.ok_posts[mine] == 2

        with second.expect_navigation() as nav:
            second.locator(f"#delivery-{ep}-{mine} button.resend").click()
        assert nav.value is not None and nav.value.status == 409
        assert "NOTIFICATION_CHANGED" in second.inner_text("body")
        assert _state(world, ep, mine) == "delivered"
        deliverer.run_once()
        assert receiver.ok_posts[mine] == 2
        assert _attempts(world, ep, mine) == [204, 204]
        second.screenshot(path=str(ARTIFACTS / "console-notifications-stale.png"), full_page=True)
    finally:
        deliverer.close()
        server.close()


def test_replay_from_a_stale_tab_is_refused_and_replays_nothing(
    world: ConsoleWorld, page: Any, context: Any
) -> None:
    """The events page open in two tabs on a failed event; the inbox tries it once more
    meanwhile (it stays failed, one more attempt). Replay in the second tab (its page shows the
    event as it was) is refused with 409 EVENT_CHANGED and does nothing: no replay, no attempt
    counted. Reloaded, the tab replays it once."""
    from tollbooth.webhooks import repository as inbox_events

    db = world.stack.deps.db
    ident = _failed_event(world, "two_tabs")
    try:
        _sign_in(world, page)
        page.wait_for_url(_url(world, "/accounts"))
        other = context.new_page()
        for tab in (page, other):
            tab.goto(_url(world, "/events?status=failed"))
            assert tab.locator(f"#event-{ident} td.attempts").inner_text() == "3"
        with db.transaction() as s:  # the inbox's retry, as its worker records one
            inbox_events.mark_failed(s, ident, "RuntimeError: still down", None)
        assert _event(world, ident) == ("failed", 4, "RuntimeError: still down")

        with other.expect_navigation() as nav:
            other.locator(f"#event-{ident} button.replay").click()
        assert nav.value is not None and nav.value.status == 409
        assert "EVENT_CHANGED" in other.inner_text("body")
        assert _event(world, ident) == ("failed", 4, "RuntimeError: still down")
        other.screenshot(path=str(ARTIFACTS / "console-events-stale.png"), full_page=True)

        other.goto(_url(world, "/events?status=failed"))
        assert other.locator(f"#event-{ident} td.attempts").inner_text() == "4"
        other.locator(f"#event-{ident} button.replay").click()
        other.wait_for_url(_url(world, "/events?status=failed"))  # back to the page it was on
        assert other.inner_text("#flash").startswith(f"Replayed {ident}: ignored:")
        assert _status(world, ident) == "ignored"
    finally:
        with db.transaction() as s:
            s.query(StripeEvent).filter_by(event_id=ident).delete()


def test_sign_ins_through_envoy_are_counted_under_the_address_envoy_saw(
    world: ConsoleWorld,
) -> None:
    """A client naming another address in the header the throttle reads gets no fresh count:
    Envoy overwrites it with the connection's address, so wrong keys from loopback under ten
    different claimed addresses use up loopback's window (10/minute), and the next attempt,
    claiming yet another, is refused with 429 RATE_LIMITED."""
    from tollbooth.console.throttle import CLIENT_HEADER
    from tollbooth.rpc.ratestore import DatabaseStorage

    counters = DatabaseStorage(database=world.stack.deps.db)
    counters.reset()  # the wrong keys other tests of this module typed
    try:
        with httpx.Client(base_url=world.stack.rest_url, timeout=10) as client:
            token = re.search(
                r'name="csrf_token" value="([^"]+)"', client.get("/console/signin").text
            )
            assert token

            def attempt(n: int) -> httpx.Response:
                return client.post(
                    "/console/signin",
                    data={"csrf_token": token[1], "operator_key": OPERATOR_KEY + "-wrong"},
                    headers={CLIENT_HEADER: f"203.0.113.{n}"},
                )

            assert [attempt(n).status_code for n in range(10)] == [401] * 10
            refused = attempt(10)
            assert refused.status_code == 429, refused.text
            assert "RATE_LIMITED" in refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 60
    finally:  # the other tests of this module sign in from loopback too
        counters.reset()


def _one_delivered(
    world: ConsoleWorld, receiver: Receiver, deliverer: Deliverer, account: str
) -> tuple[str, str]:
    """An endpoint for `receiver` and one message for it, delivered: (endpoint id, message id)."""
    db = world.stack.deps.db
    with db.transaction() as s:
        endpoint, receiver.secret = endpoints.create(
            s, endpoints.Fields(url=receiver.url), utcnow()
        )
        ep = endpoint.id
    enqueue(db, "credits.granted", account, {"amount": "1"})

    def settled() -> bool:
        deliverer.run_once()
        total, pending = _counts(world, ep)
        return total > 0 and pending == 0

    wait_for(settled, 60, "every message delivered to the endpoint")
    return ep, receiver.ids()[0]


def _signed_in_client(world: ConsoleWorld) -> tuple[httpx.Client, str]:
    """A browser-less operator session through Envoy, and its CSRF token."""
    client = httpx.Client(base_url=world.stack.rest_url, timeout=10)
    pattern = r'name="csrf_token" value="([^"]+)"'
    token = re.search(pattern, client.get("/console/signin").text)
    assert token
    r = client.post("/console/signin", data={"csrf_token": token[1], "operator_key": OPERATOR_KEY})
    assert r.status_code == 303, r.text
    token = re.search(pattern, client.get("/console/accounts").text)
    assert token
    return client, token[1]


def test_replay_and_resend_without_the_pages_version_are_refused_and_change_nothing(
    world: ConsoleWorld, bought: dict[str, str]
) -> None:
    """A hand-made POST with the CSRF token but no `seen` (the version every Replay and
    Resend form carries) is refused with 400 FORM_INVALID: the failed event is not replayed
    (status and attempts as they were), the delivered message is not made pending again."""
    db = world.stack.deps.db
    ident = _failed_event(world, "no_version")
    receiver = Receiver()
    server = ReceiverServer(receiver)
    deliverer = Deliverer(db, Policy(retry_first_sec=0.05, retry_max_sec=0.1, poll_sec=0.05))
    client, csrf = _signed_in_client(world)
    try:
        ep, mine = _one_delivered(world, receiver, deliverer, bought["account"])

        for form in ({"csrf_token": csrf}, {"csrf_token": csrf, "seen": ""}):
            r = client.post(f"/console/events/{ident}/replay", data=form)
            assert r.status_code == 400, r.text
            assert 'id="reason">FORM_INVALID<' in r.text and "no version of the event" in r.text
            assert _event(world, ident) == ("failed", 3, "RuntimeError: down")

            r = client.post(f"/console/notifications/{ep}/{mine}/resend", data=form)
            assert r.status_code == 400, r.text
            assert 'id="reason">FORM_INVALID<' in r.text and "no version of the message" in r.text
            assert _state(world, ep, mine) == "delivered"
        deliverer.run_once()
        assert receiver.ok_posts[mine] == 1
        assert _attempts(world, ep, mine) == [204]
    finally:
        client.close()
        deliverer.close()
        server.close()
        with db.transaction() as s:
            s.query(StripeEvent).filter_by(event_id=ident).delete()
