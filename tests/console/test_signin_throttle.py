"""Failed console sign-ins are throttled per client address and for all addresses together,
through the console's Starlette app (the sidecar mounts the same) on SQLite and PostgreSQL,
with the counters in the service's database as the sidecar keeps them."""

from __future__ import annotations

import re
import threading
import time

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.conftest import OPERATOR_KEY
from tollbooth.console import inbox, pages
from tollbooth.console.throttle import CLIENT_HEADER, SigninThrottle
from tollbooth.db import Database
from tollbooth.rpc.ratestore import DatabaseStorage

WRONG = OPERATOR_KEY + "-wrong"


def _no_replay(event_id: str, seen: str | None) -> inbox.Outcome:
    raise AssertionError("no replay here")


def _console(db: Database, per_address: str, all_: str) -> Starlette:
    throttle = SigninThrottle.from_rates(DatabaseStorage(database=db), per_address, all_)
    mount = pages.create(OPERATOR_KEY, db, _no_replay, signin_throttle=throttle)
    return Starlette(routes=[mount])


class Browser:
    """One browser at one client address (its own cookie jar)."""

    def __init__(self, app: Starlette, address: str) -> None:
        self.client = TestClient(app, headers={CLIENT_HEADER: address})

    def sign_in(self, key: str):  # type: ignore[no-untyped-def]
        page = self.client.get("/console/signin")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, page.text
        return self.client.post(
            "/console/signin",
            data={"csrf_token": found[1], "operator_key": key},
            follow_redirects=False,
        )

    def signed_in(self) -> bool:
        return self.client.get("/console/accounts", follow_redirects=False).status_code == 200


def _throttled(answer, window_sec: int) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == 429, answer.text
    assert 'id="reason">RATE_LIMITED<' in answer.text
    assert "too many failed sign-ins" in answer.text
    assert 1 <= int(answer.headers["retry-after"]) <= window_sec


def test_failed_sign_ins_from_one_address_are_refused_once_its_window_is_used_up(
    db: Database,
) -> None:
    app = _console(db, "3/minute", "off")
    attacker = Browser(app, "203.0.113.7")
    for _ in range(3):
        assert attacker.sign_in(WRONG).status_code == 401
    _throttled(attacker.sign_in(WRONG), 60)
    # While the window is used up even the right key is refused from that address...
    _throttled(attacker.sign_in(OPERATOR_KEY), 60)
    assert not attacker.signed_in()
    # ...but not from another one.
    operator = Browser(app, "198.51.100.20")
    answer = operator.sign_in(OPERATOR_KEY)
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/accounts")
    assert operator.signed_in()


def test_a_correct_sign_in_is_not_counted(db: Database) -> None:
    app = _console(db, "2/minute", "off")
    operator = Browser(app, "198.51.100.21")
    for _ in range(5):
        assert operator.sign_in(OPERATOR_KEY).status_code == 303
    assert operator.sign_in(WRONG).status_code == 401
    assert operator.sign_in(WRONG).status_code == 401
    _throttled(operator.sign_in(WRONG), 60)


def test_the_ceiling_for_all_addresses_refuses_every_address_until_its_window_ends(
    db: Database,
) -> None:
    app = _console(db, "off", "3 per 2 seconds")
    for n in range(3):
        assert Browser(app, f"203.0.113.{n}").sign_in(WRONG).status_code == 401
    operator = Browser(app, "198.51.100.22")
    refused = operator.sign_in(OPERATOR_KEY)
    _throttled(refused, 2)
    assert not operator.signed_in()
    # Not forever: once the window has ended, the right key signs in.
    time.sleep(int(refused.headers["retry-after"]))
    assert operator.sign_in(OPERATOR_KEY).status_code == 303
    assert operator.signed_in()


@pytest.mark.parametrize("rate", ["10/minute", "off"])
def test_the_throttle_rates_are_settings(rate: str) -> None:
    from tollbooth.config import ConfigError, Settings

    settings = Settings.from_env(
        {
            "BILLING_RATE_LIMIT_CONSOLE_SIGNIN": rate,
            "BILLING_RATE_LIMIT_CONSOLE_SIGNIN_ALL": rate,
        }
    )
    assert settings.rate_limit_console_signin == rate
    with pytest.raises(ConfigError, match="BILLING_RATE_LIMIT_CONSOLE_SIGNIN"):
        Settings.from_env({"BILLING_RATE_LIMIT_CONSOLE_SIGNIN": "often"})


@pytest.mark.parametrize(
    "addresses",
    [
        # One IPv6 client holds a whole /64: a new address per guess is the same client.
        ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"],
        # One address written three ways.
        ["2001:db8::7", "2001:DB8:0:0:0:0:0:7", "[2001:db8::7]"],
        # An IPv4 client seen through an IPv6 listener is the same IPv4 address.
        ["203.0.113.9", "::ffff:203.0.113.9", "::FFFF:cb00:7109"],
    ],
)
def test_one_client_under_other_forms_of_its_address_shares_one_window(
    db: Database, addresses: list[str]
) -> None:
    app = _console(db, "2/minute", "off")
    first, second, third = (Browser(app, a) for a in addresses)
    assert first.sign_in(WRONG).status_code == 401
    assert second.sign_in(WRONG).status_code == 401
    _throttled(third.sign_in(WRONG), 60)
    # Another network is not refused.
    assert Browser(app, "2001:db8:1:3::1").sign_in(WRONG).status_code == 401


def test_a_counter_outage_refuses_every_sign_in_until_the_counters_answer(db: Database) -> None:
    """The counters' database does not answer: every sign-in, the right key too, is refused
    with 503 (a throttle letting sign-ins through then could be opened by overloading its
    storage), nothing signs in; once the counters answer, the key decides again."""
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        throttle = SigninThrottle.from_rates(DatabaseStorage(database=down), "1/minute", "1/minute")
        app = Starlette(
            routes=[pages.create(OPERATOR_KEY, db, _no_replay, signin_throttle=throttle)]
        )
        browser = Browser(app, "203.0.113.50")
        answers = [browser.sign_in(key) for key in (WRONG, OPERATOR_KEY)]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert 'id="reason">SERVICE_UNAVAILABLE<' in answer.text
            assert int(answer.headers["retry-after"]) >= 1
        assert not browser.signed_in()
    finally:
        down.dispose()
    up = Browser(_console(db, "1/minute", "off"), "203.0.113.50")
    assert up.sign_in(WRONG).status_code == 401
    assert up.sign_in(OPERATOR_KEY).status_code == 429  # the window of one is used up


def test_two_replicas_share_one_window_per_address(db: Database) -> None:
    """Two sidecars (each its own throttle) over one database: guesses spread over
    both use up one window."""
    first, second = _console(db, "2/minute", "off"), _console(db, "2/minute", "off")
    assert Browser(first, "203.0.113.60").sign_in(WRONG).status_code == 401
    assert Browser(second, "203.0.113.60").sign_in(WRONG).status_code == 401
    _throttled(Browser(first, "203.0.113.60").sign_in(WRONG), 60)
    _throttled(Browser(second, "203.0.113.60").sign_in(OPERATOR_KEY), 60)


def _guess_at_once(throttles: list[SigninThrottle], address: str, count: int) -> list[bool]:
    """`count` wrong keys from `address` released together, round-robin over `throttles`;
    for each, whether it was let through to the key check."""
    checked: list[bool] = []
    start = threading.Barrier(count)

    def guess(n: int) -> None:
        start.wait()
        checked.append(throttles[n % len(throttles)].attempt(address, False) is None)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return checked


def test_concurrent_guesses_over_four_replicas_get_the_window_and_no_more(pg_url: str) -> None:
    """Forty wrong keys at once, spread over four replicas on PostgreSQL, then all forty on
    one replica (its threads share no lock): five (the window) are checked and answered 401;
    every other one is refused. Each replica checking the window and counting afterwards let
    a guess through per replica that had checked before another counted."""
    databases = [Database(pg_url) for _ in range(4)]
    try:
        throttles = [
            SigninThrottle.from_rates(DatabaseStorage(database=d), "5/minute", "off")
            for d in databases
        ]
        for address in (f"198.51.100.{n}" for n in range(70, 75)):  # five rounds
            checked = _guess_at_once(throttles, address, 40)
            assert (checked.count(True), checked.count(False)) == (5, 35), address
        for address in (f"198.51.100.{n}" for n in range(80, 83)):  # one replica's threads
            checked = _guess_at_once(throttles[:1], address, 40)
            assert (checked.count(True), checked.count(False)) == (5, 35), address
    finally:
        for d in databases:
            d.dispose()


def test_a_same_site_page_cannot_spend_a_signed_in_operators_sign_in_attempts(
    db: Database,
) -> None:
    """A signed-in session's sign-in form skips the CSRF check (the second tab's form carries
    the token of before), but only for a form of the console's own origin: the cookie is
    SameSite=Lax, so a page of the same site on another port (the company's app on
    127.0.0.1:3000, the sandbox) can make the operator's browser post wrong keys with it. Those
    are refused 403 before the key is checked, and never count against the operator's address."""
    app = _console(db, "3/minute", "off")
    operator = Browser(app, "198.51.100.30")
    assert operator.sign_in(OPERATOR_KEY).status_code == 303
    for origin, site in [
        ("http://127.0.0.1:3000", "same-site"),
        ("http://127.0.0.1:3000", None),
        ("null", None),
        (None, "cross-site"),
    ] * 2:
        headers = {k: v for k, v in (("origin", origin), ("sec-fetch-site", site)) if v}
        answer = operator.client.post(
            "/console/signin",
            data={"operator_key": WRONG},
            headers=headers,
            follow_redirects=False,
        )
        assert answer.status_code == 403, (origin, site, answer.status_code)
        assert 'id="reason">CSRF_INVALID<' in answer.text
    assert operator.signed_in()
    # Nothing was counted: the operator signs in from a fresh tab jar at that address.
    again = Browser(app, "198.51.100.30")
    assert again.sign_in(OPERATOR_KEY).status_code == 303
    # The console's own second tab (same origin, the token of before) still signs in.
    stale = operator.client.post(
        "/console/signin",
        data={"csrf_token": "token-of-before", "operator_key": OPERATOR_KEY},
        headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"},
        follow_redirects=False,
    )
    assert (stale.status_code, stale.headers["location"]) == (303, "/console/accounts")


def test_a_right_sign_in_removes_the_ended_counters_of_other_addresses(db: Database) -> None:
    """Each address that ever failed a sign-in was a row of `rate_limit_counters` kept for
    ever (guesses from many addresses grew it without end). A right sign-in now removes the
    per-address counters whose windows have ended, and only those."""
    from sqlalchemy import select, update

    from tollbooth.db.models import RateLimitCounter

    app = _console(db, "3/minute", "off")

    def keys() -> set[str]:
        with db.transaction(readonly=True) as s:
            return set(s.scalars(select(RateLimitCounter.key)))

    for n in range(3):
        assert Browser(app, f"203.0.113.{n}").sign_in(WRONG).status_code == 401
    ended = {k for k in keys() if "/console_signin/" in k}
    assert len(ended) == 3
    with db.transaction() as s:  # their windows ended a second ago
        s.execute(
            update(RateLimitCounter)
            .where(RateLimitCounter.key.in_(ended))
            .values(expires_ms=time.time_ns() // 1_000_000 - 1000)
        )
    live = Browser(app, "203.0.113.99")
    assert live.sign_in(WRONG).status_code == 401  # a window still open: kept
    [kept] = {k for k in keys() if "/console_signin/" in k} - ended
    assert Browser(app, "198.51.100.30").sign_in(OPERATOR_KEY).status_code == 303
    left = {k for k in keys() if "/console_signin/" in k}
    assert left == {kept}
    # The kept window still counts: two more guesses use it up.
    assert live.sign_in(WRONG).status_code == 401
    assert live.sign_in(WRONG).status_code == 401
    _throttled(live.sign_in(WRONG), 60)
