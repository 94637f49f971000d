"""A console session ends when the operator signs out, everywhere: a copy of its cookie taken
before (a shared machine, a proxy log, a request still in flight whose answer sets the cookie
again) no longer opens the console, on every sidecar replica (the sign-out is kept where the
sign-in throttle keeps its counts: the service's database). And it ends eight hours after
signing in however busy it was (an answer that changes the session, a Replay's or a Resend's
carrying its outcome to the next page, sends the cookie again, which gave it eight more
hours each time). Through the console's Starlette app on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.conftest import OPERATOR_KEY
from tollbooth.console import inbox, pages, session
from tollbooth.console.throttle import SigninThrottle
from tollbooth.db import Database
from tollbooth.db.models import StripeEvent
from tollbooth.rpc.ratestore import DatabaseStorage

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _no_replay(event_id: str, seen: str | None) -> inbox.Outcome:
    raise AssertionError("no replay here")


class Replays:
    """The replays done (the inbox's own is tested elsewhere): each event id replayed."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def __call__(self, event_id: str, seen: str | None) -> inbox.Outcome:
        self.done.append(event_id)
        return inbox.Outcome("failed", [], "RuntimeError: still down")


def _failed_event(db: Database) -> str:
    ident = f"evt_{uuid.uuid4().hex[:12]}"
    body = {"id": ident, "type": "test.down", "data": {"object": {"id": "x"}}}
    with db.transaction() as s:
        s.add(
            StripeEvent(
                event_id=ident,
                type="test.down",
                payload=json.dumps(body).encode(),
                status="failed",
                attempts=3,
                last_error="RuntimeError: down",
                next_attempt_at=None,
            )
        )
    return ident


def _replay(client: TestClient, event_id: str, token: str) -> int:
    r = client.post(
        f"/console/events/{event_id}/replay",
        data={"csrf_token": token, "seen": "as shown"},
        follow_redirects=False,
    )
    return r.status_code


def _console(db: Database, replayer: inbox.Replayer = _no_replay) -> Starlette:
    """One sidecar replica's console, its sign-outs and throttle in the service's database."""
    storage = DatabaseStorage(database=db)
    throttle = SigninThrottle.from_rates(storage, "off", "off")
    mount = pages.create(
        OPERATOR_KEY,
        db,
        replayer,
        signin_throttle=throttle,
        sign_outs=session.SignOuts(storage),
    )
    return Starlette(routes=[mount])


def _sign_in(client: TestClient) -> str:
    """Signed in; the session's CSRF token."""
    found = TOKEN.search(client.get("/console/signin").text)
    assert found
    r = client.post(
        "/console/signin",
        data={"csrf_token": found[1], "operator_key": OPERATOR_KEY},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    found = TOKEN.search(client.get("/console/accounts").text)
    assert found
    return found[1]


def _opens(client: TestClient) -> bool:
    return client.get("/console/accounts", follow_redirects=False).status_code == 200


def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(db: Database) -> None:
    operator = TestClient(_console(db))
    token = _sign_in(operator)
    copied = dict(operator.cookies)
    r = operator.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/signin")
    assert not _opens(operator)

    # The copy, on another replica of the sidecar (its own app, the same database).
    thief = TestClient(_console(db), cookies=copied)
    page = thief.get("/console/accounts", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/console/signin")
    # The copy is told to forget the session, and a form with its token does nothing.
    assert "tollbooth_console=null" in page.headers.get("set-cookie", "")
    thief = TestClient(_console(db), cookies=copied)
    r = thief.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/signin")
    assert not _opens(TestClient(_console(db), cookies=copied))


def test_a_replay_in_flight_at_sign_out_does_not_sign_the_browser_back_in(
    db: Database,
) -> None:
    """Two tabs: one signs out while the other's Replay is on its way. The Replay's answer
    sets the session's cookie again (it carries the outcome to the next page), after the
    sign-out's: that cookie must not be a session any more, and the late Replay does
    nothing."""
    replays = Replays()
    app = _console(db, replays)
    event_id = _failed_event(db)
    browser = TestClient(app)
    token = _sign_in(browser)
    before = dict(browser.cookies)  # what the Replay tab's request carries
    browser.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    late = TestClient(app, cookies=before)
    assert _replay(late, event_id, token) == 303
    browser.cookies.update(late.cookies)  # the late answer's Set-Cookie, if any
    assert not _opens(browser)
    assert replays.done == []


def test_signing_out_does_not_end_another_browsers_session(db: Database) -> None:
    app = _console(db)
    one, two = TestClient(app), TestClient(app)
    token = _sign_in(one)
    _sign_in(two)
    one.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert not _opens(one)
    assert _opens(two)


def test_a_session_ends_eight_hours_after_sign_in_however_busy(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = time.time()
    now = [start]
    monkeypatch.setattr(time, "time", lambda: now[0])
    replays = Replays()
    browser = TestClient(_console(db, replays))
    event_id = _failed_event(db)
    token = _sign_in(browser)
    for hours in (2, 4, 6, 7.9):
        now[0] = start + hours * 3600
        assert _replay(browser, event_id, token) == 303, hours  # the cookie is sent again
        assert _opens(browser), hours
    now[0] = start + session.MAX_AGE_SEC + 60
    assert not _opens(browser)
    assert _replay(browser, event_id, token) == 303
    assert len(replays.done) == 4
    # Signing in again starts a new eight hours.
    _sign_in(browser)
    assert _opens(browser)


class _Down:
    """The sign-outs' storage failing: to read and write (`reads`), or to write only."""

    def __init__(self, storage: DatabaseStorage, reads: bool) -> None:
        self.storage, self.reads = storage, reads

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise OSError("storage down")

    def get(self, key: str) -> int:
        if self.reads:
            raise OSError("storage down")
        return self.storage.get(key)


@pytest.mark.parametrize("reads", [True, False], ids=["down", "read-only"])
def test_a_sign_out_that_cannot_be_kept_says_so_and_changes_nothing(
    db: Database, reads: bool
) -> None:
    """Fail closed: a session whose sign-out cannot be checked or recorded is refused a page
    (503, the cookie kept as it is), never let in unchecked nor told it is signed out."""
    storage = DatabaseStorage(database=db)
    sign_outs = session.SignOuts(storage)
    app = Starlette(routes=[pages.create(OPERATOR_KEY, db, _no_replay, sign_outs=sign_outs)])
    browser = TestClient(app)
    token = _sign_in(browser)
    sign_outs.storage = _Down(storage, reads)  # type: ignore[assignment]
    r = browser.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 503, r.text
    assert 'id="reason">SERVICE_UNAVAILABLE<' in r.text
    assert r.headers["retry-after"] == "5"
    assert "tollbooth_console=null" not in r.headers.get("set-cookie", "")
    if reads:
        assert browser.get("/console/accounts", follow_redirects=False).status_code == 503
    sign_outs.storage = storage
    assert _opens(browser)
    r = browser.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert not _opens(browser)


def test_the_account_page_says_an_account_is_archived(db: Database) -> None:
    """An archived account's page says so (and when), a live one's does not."""
    from tollbooth.accounts import repository as accounts
    from tollbooth.db.models import BillingAccount
    from tollbooth.db.types import utcnow

    ids = {}
    for name in ("page-live", "page-gone"):
        principal = f"{name}-{uuid.uuid4().hex[:6]}"
        with db.transaction() as s:
            accounts.insert_if_absent(s, principal, None, None)
            found = accounts.by_principal(s, principal)
            assert found is not None
            ids[name] = found.id
    with db.transaction() as s:
        gone = s.get(BillingAccount, ids["page-gone"])
        assert gone is not None
        gone.archived_at = utcnow()
    browser = TestClient(_console(db))
    _sign_in(browser)
    live = browser.get(f"/console/accounts/{ids['page-live']}")
    archived = browser.get(f"/console/accounts/{ids['page-gone']}")
    assert live.status_code == archived.status_code == 200
    assert 'id="archived"' not in live.text and 'id="archived-at"' not in live.text
    assert 'id="archived">archived<' in archived.text and 'id="archived-at"' in archived.text


def test_a_sign_out_removes_the_sign_outs_whose_sessions_have_ended(db: Database) -> None:
    """Each sign-out is a row of `rate_limit_counters` kept until its session would have
    ended; nothing else removed it, so the table grew by one row per sign-out for ever. A
    sign-out now removes those whose sessions have ended (and only those)."""
    import time

    from sqlalchemy import select, update

    from tollbooth.db.models import RateLimitCounter

    app = _console(db)
    prefix = session.SignOuts.PREFIX

    def sign_out() -> None:
        browser = TestClient(app)
        token = _sign_in(browser)
        r = browser.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303

    def keys() -> set[str]:
        with db.transaction(readonly=True) as s:
            return set(s.scalars(select(RateLimitCounter.key)))

    def backdate(which: set[str]) -> None:
        """Their windows ended a second ago (the sessions they ended would have ended)."""
        with db.transaction() as s:
            s.execute(
                update(RateLimitCounter)
                .where(RateLimitCounter.key.in_(which))
                .values(expires_ms=time.time_ns() // 1_000_000 - 1000)
            )

    sign_out()
    sign_out()
    ended = {k for k in keys() if k.startswith(prefix)}
    assert len(ended) == 2
    backdate(ended)
    # Another kind of counter whose window ended: the limits library's, not the console's.
    other = "LIMITER/key/sk_test/1/1/minute"
    DatabaseStorage(database=db).incr(other, 60)
    backdate({other})

    sign_out()
    left = keys()
    live = {k for k in left if k.startswith(prefix)}
    assert len(live) == 1 and not live & ended  # the new sign-out, kept until its end
    assert other in left
    # The sign-out kept still refuses its session's cookie (its other tests), and nothing of
    # an ended one is needed: its session's eight hours are over.
    assert session.SignOuts(DatabaseStorage(database=db)).ended(live.pop()[len(prefix) :])
