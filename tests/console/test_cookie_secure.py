"""The console's session cookie carries `Secure` when BILLING_CONSOLE_COOKIE_SECURE says so
(behind TLS), and not by default (`make run` serves plain HTTP on loopback, where a browser
would not send a Secure cookie back). Through the assembly's console (`app.console`), as the
sidecar mounts it, so the setting is proven to reach the cookie."""

from __future__ import annotations

import re

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.conftest import OPERATOR_KEY, make_env
from tollbooth import app
from tollbooth.config import ConfigError, Settings
from tollbooth.console import session

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _signin_cookie(settings: Settings) -> str:
    """The Set-Cookie header of a successful sign-in (over https, so a Secure cookie the
    sign-in page set is sent back with the form)."""
    mount, close = app.console(settings)
    try:
        client = TestClient(Starlette(routes=[mount]), base_url="https://testserver")
        found = TOKEN.search(client.get("/console/signin").text)
        assert found
        r = client.post(
            "/console/signin",
            data={"csrf_token": found[1], "operator_key": OPERATOR_KEY},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        cookies = r.headers.get_list("set-cookie")
        [ours] = [c for c in cookies if c.startswith(session.COOKIE + "=")]
        return ours
    finally:
        close()


def _attributes(cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


def test_the_session_cookie_is_secure_when_configured(database_url: str) -> None:
    settings = Settings.from_env(make_env(database_url, BILLING_CONSOLE_COOKIE_SECURE="1"))
    assert settings.console_cookie_secure is True
    attributes = _attributes(_signin_cookie(settings))
    assert "secure" in attributes
    assert {"httponly", "path", "samesite"} <= attributes


def test_the_session_cookie_is_not_secure_by_default(database_url: str) -> None:
    settings = Settings.from_env(make_env(database_url))
    assert settings.console_cookie_secure is False
    attributes = _attributes(_signin_cookie(settings))
    assert "secure" not in attributes
    assert {"httponly", "path", "samesite"} <= attributes


def test_an_unusable_cookie_secure_value_stops_the_process(database_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(make_env(database_url, BILLING_CONSOLE_COOKIE_SECURE="maybe"))
    assert "BILLING_CONSOLE_COOKIE_SECURE" in str(refused.value)
