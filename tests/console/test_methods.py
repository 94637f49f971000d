"""A method a console path does not take is 405 with `Allow` naming the methods it does take
(RFC 9110 requires it), as every other route of the sidecar answers (`/healthz`, `/api/docs`,
the webhook path) and Envoy answers for the REST paths. The console's 405 page carried no
`Allow` at all; and a path served by two routes (`/console/signin`: the form by GET, the
sign-in by POST) must name both, not only the first route's methods."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.conftest import OPERATOR_KEY
from tollbooth.console import inbox, pages
from tollbooth.db import Database


def _no_replay(event_id: str, seen: str | None) -> inbox.Outcome:
    raise AssertionError("no replay here")


@pytest.mark.parametrize(
    ("path", "method", "allowed"),
    [
        ("/console/", "PUT", "GET, HEAD"),
        ("/console/signin", "PUT", "GET, HEAD, POST"),
        ("/console/signin", "OPTIONS", "GET, HEAD, POST"),
        ("/console/signout", "GET", "POST"),
        ("/console/accounts", "POST", "GET, HEAD"),
        ("/console/accounts/acct_x", "DELETE", "GET, HEAD"),
        ("/console/events/evt_x/replay", "GET", "POST"),
        ("/console/notifications/nep_x/ntf_x/resend", "PATCH", "POST"),
        ("/console/static/console.css", "POST", "GET, HEAD"),
    ],
)
def test_a_method_a_console_path_does_not_take_is_405_naming_those_it_takes(
    db: Database, path: str, method: str, allowed: str
) -> None:
    app = Starlette(routes=[pages.create(OPERATOR_KEY, db, _no_replay)])
    with TestClient(app) as client:
        answer = client.request(method, path, follow_redirects=False)
    assert answer.status_code == 405, answer.text
    assert "METHOD_NOT_ALLOWED" in answer.text
    assert answer.headers.get("allow") == allowed
    assert "set-cookie" not in answer.headers  # a refusal makes no session
