"""Signing in to the console from two tabs of one browser (one cookie jar), in Chromium
through Envoy: a sign-in form opened before the other tab signed in still signs in (the
session is already signed in: nothing to refuse), and signing in again leaves the session's
CSRF token as it was, so the first tab's forms keep working. A sign-in form left from a session
that has ended since is answered with a clear way to sign in again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import OPERATOR_KEY
from tests.console.conftest import ConsoleWorld

pytestmark = pytest.mark.envoy


def _url(world: ConsoleWorld, path: str) -> str:
    return f"{world.stack.rest_url}/console{path}"


def _submit(page: Any, key: str = OPERATOR_KEY) -> int:
    page.fill("#operator_key", key)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#signin")
    page.wait_for_load_state()
    return int(answer.value.status)


def test_signing_in_from_a_second_tab_keeps_both_tabs_working(
    world: ConsoleWorld, context: Any
) -> None:
    first, second = context.new_page(), context.new_page()
    first.goto(_url(world, "/signin"))
    second.goto(_url(world, "/signin"))  # both show the form, before either signs in
    assert _submit(first) == 303
    first.wait_for_url(_url(world, "/accounts"))
    # The second tab's form carries the token of the session before signing in.
    assert _submit(second) == 303
    second.wait_for_url(_url(world, "/accounts"))
    # The first tab's page (loaded before the second signed in) still posts: sign out works.
    first.click("#signout")
    first.wait_for_url(_url(world, "/signin"))
    second.goto(_url(world, "/events"))
    assert second.url == _url(world, "/signin")  # one session, ended for both


def test_a_wrong_key_from_a_stale_tab_while_signed_in_is_still_refused(
    world: ConsoleWorld, context: Any
) -> None:
    first, second = context.new_page(), context.new_page()
    first.goto(_url(world, "/signin"))
    second.goto(_url(world, "/signin"))
    assert _submit(first) == 303
    assert _submit(second, OPERATOR_KEY + "-wrong") == 401
    assert "not the operator key" in second.inner_text("#error")
    first.goto(_url(world, "/accounts"))
    assert first.url == _url(world, "/accounts")  # the session stays signed in
    first.click("#signout")
    first.wait_for_url(_url(world, "/signin"))


def test_a_sign_in_form_from_an_ended_session_offers_a_fresh_sign_in(
    world: ConsoleWorld, context: Any
) -> None:
    first, second = context.new_page(), context.new_page()
    first.goto(_url(world, "/signin"))
    second.goto(_url(world, "/signin"))
    assert _submit(first) == 303
    first.wait_for_url(_url(world, "/accounts"))
    first.click("#signout")
    first.wait_for_url(_url(world, "/signin"))
    # The second tab's form belongs to no session now: refused, saying what to do.
    assert _submit(second) == 403
    assert "sign in again" in second.inner_text("main").lower()
    second.click("#signin-again")
    second.wait_for_url(_url(world, "/signin"))
    assert _submit(second) == 303
    second.wait_for_url(_url(world, "/accounts"))
