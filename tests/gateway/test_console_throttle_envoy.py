"""Failed console sign-ins through a real Envoy: the address they are counted under is the
connection's own, whatever forwarding headers the client sends."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.conftest import OPERATOR_KEY, make_env
from tests.devstack import Stack, migrated_sqlite, start_stack

WRONG = OPERATOR_KEY + "-wrong"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("throttle")
    url = migrated_sqlite(tmp / "billing.db")
    env = make_env(
        url,
        BILLING_RATE_LIMIT_CONSOLE_SIGNIN="2/minute",
        BILLING_RATE_LIMIT_CONSOLE_SIGNIN_ALL="off",
    )
    s = start_stack(url, env, tmp)
    yield s
    s.close()


def _send(
    stack: Stack, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    port = int(stack.rest_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()
    finally:
        conn.close()


def _sign_in(stack: Stack, key: str, headers: dict[str, str]) -> int:
    """One sign-in with a fresh session; the status of the POST."""
    _, got, page = _send(stack, "GET", "/console/signin", headers)
    cookie = got["set-cookie"].split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    form = urlencode({"csrf_token": token[1], "operator_key": key}).encode()
    status, _, _ = _send(
        stack,
        "POST",
        "/console/signin",
        {**headers, "cookie": cookie, "content-type": "application/x-www-form-urlencoded"},
        form,
    )
    return status


def test_a_forwarded_for_header_does_not_give_a_client_another_address(stack: Stack) -> None:
    statuses = [_sign_in(stack, WRONG, {"x-forwarded-for": f"198.51.100.{n}"}) for n in range(3)]
    assert statuses == [401, 401, 429]
    # The right key from that connection is refused too while its window is used up.
    assert _sign_in(stack, OPERATOR_KEY, {"x-forwarded-for": "203.0.113.99"}) == 429
