"""The message shown after a Replay or Resend lives in the console's session cookie (Starlette's
SessionMiddleware: JSON, base64, signed). A long outcome (a replay's list of changes, a provider's
error text in any script) must not push that cookie past the 4096 bytes a browser keeps: a browser
drops a larger cookie silently, and the operator would be signed out by their own click."""

from __future__ import annotations

import base64
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tollbooth.console import session

BROWSER_COOKIE_LIMIT = 4096


def _app(text: str) -> Starlette:
    async def sign_in_and_flash(request: Request) -> PlainTextResponse:
        request.session["operator"] = True
        request.session["csrf"] = "c" * 43
        request.session["sid"] = "s" * 22
        request.session["since"] = 1_800_000_000
        session.flash(request, text)
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/console/x", sign_in_and_flash)],
        middleware=[session.middleware("operator-key-for-the-test")],
    )


def _cookie_size(text: str) -> int:
    with TestClient(_app(text), base_url="https://testserver") as client:
        answer = client.get("/console/x")
    assert answer.status_code == 200
    cookies = [v for k, v in answer.headers.multi_items() if k.lower() == "set-cookie"]
    assert len(cookies) == 1
    return len(cookies[0].encode())


def test_a_long_non_ascii_outcome_keeps_the_session_cookie_under_the_browser_limit() -> None:
    worst = "Replay of evt_1 failed: " + "\U0001f4a5é\u0000\ud7ff" * 5000
    assert _cookie_size(worst) < BROWSER_COOKIE_LIMIT


def test_a_short_message_is_kept_whole() -> None:
    text = "Replayed evt_1: processed: checkout cs_1 complete"
    with TestClient(_app(text), base_url="https://testserver") as client:
        client.get("/console/x")
        raw = client.cookies.get(session.COOKIE)
    assert raw is not None
    payload = json.loads(base64.b64decode(raw.split(".")[0]))
    assert payload["flash"] == text
