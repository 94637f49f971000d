"""Signing in to the console: the operator key, the session cookie, the CSRF token.

- The operator key (BILLING_OPERATOR_KEY, generated per data directory when unset) is typed
  into the sign-in form; it is compared in constant time and never stored in the cookie.
- The session is Starlette's SessionMiddleware: a cookie signed with itsdangerous (key derived
  from the operator key, so changing the key signs everyone out), HttpOnly, SameSite=Lax,
  path /console, eight hours at most from signing in (`since`, checked here: the middleware
  sends the cookie again with every answer, which alone would give it eight more hours).
- Signing out ends the session everywhere, not only in the browser that did: each signed-in
  session has an id (`sid`), and a sign-out is recorded (`SignOuts`) where the sign-in
  throttle keeps its counts (the service's database unless BILLING_RATE_LIMIT_STORAGE names
  another), until the session would have ended anyway. A copy of the cookie taken before
  (or set again by the answer to a request in flight at that moment) is then no session, on
  every sidecar replica. A session whose sign-out cannot be checked is refused (503), never
  let in unchecked. Lax, not Strict: a Strict cookie is not sent when the
  operator follows a link from another site, so the sign-in page answered with a fresh session
  that replaced the signed-in one (any site could sign the operator out). A cross-site POST
  still comes without the cookie, and every POST needs the CSRF token anyway.
- Every POST carries the session's CSRF token in a hidden `csrf_token` field; a missing or
  wrong token is refused (403 CSRF_INVALID) before anything is done. Signing in replaces the
  session (and its token), so a token seen before signing in is worthless after.
- Two tabs share the cookie. A sign-in form opened in one tab before the other signed in
  carries the token of the session before: the session is signed in already, so that form
  still signs in (the key is checked as always) instead of failing the token check, and
  signing in again keeps the session and its token, so the other tab's forms keep working. A
  form left from a session that has ended (signed out in another tab, or expired) is refused
  with a link to a fresh sign-in page. Skipping the token is for the console's own pages
  only (`same_origin`): a page of the same site on another port gets the Lax cookie sent too,
  and must not make a signed-in operator's browser spend the address's sign-in attempts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from limits.storage import MemoryStorage, Storage
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("tollbooth.console")

COOKIE = "tollbooth_console"
MAX_AGE_SEC = 8 * 3600
FORM_LIMIT = 16 * 1024
CSRF_FIELD = "csrf_token"


def middleware(operator_key: str, *, https_only: bool = False) -> Middleware:
    secret = hmac.new(operator_key.encode(), b"tollbooth console session", hashlib.sha256)
    return Middleware(
        SessionMiddleware,
        secret_key=secret.hexdigest(),
        session_cookie=COOKIE,
        max_age=MAX_AGE_SEC,
        path="/console",
        same_site="lax",
        https_only=https_only,
    )


# The flash message's share of the session cookie, as the cookie stores it (JSON with every
# non-ASCII character escaped, before base64): the whole cookie stays well under the 4096 bytes
# a browser keeps, which would otherwise drop it silently and sign the operator out.
FLASH_JSON_LIMIT = 1200


def flash(request: Request, text: str) -> None:
    """Show `text` once on the next page, cut to fit the session cookie."""
    if len(json.dumps(text)) > FLASH_JSON_LIMIT:
        suffix = f"... ({len(text)} chars)"
        low, high = 0, len(text)
        while low < high:  # the longest prefix that fits with the suffix
            mid = (low + high + 1) // 2
            if len(json.dumps(text[:mid] + suffix)) <= FLASH_JSON_LIMIT:
                low = mid
            else:
                high = mid - 1
        text = text[:low] + suffix
    request.session["flash"] = text


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


class SignOuts:
    """Sessions signed out before their end, by id, in a `limits` storage (the one the sign-in
    throttle counts in, so every sidecar replica sees them): a counter that expires when the
    session would have. Its failures are the caller's to handle (fail closed)."""

    PREFIX = "console_signout/"

    def __init__(self, storage: Storage | None = None) -> None:
        self.storage = storage if storage is not None else MemoryStorage()

    def end(self, sid: str, remaining_sec: int) -> None:
        self.storage.incr(self.PREFIX + sid, max(int(remaining_sec), 1))
        self.purge()

    def purge(self) -> None:
        """Remove the sign-outs whose sessions have ended anyway, where the storage keeps
        them until asked (the database's `purge_ended`; memory and Redis expire keys on
        their own). Each sign-out adds one row, so purging at each sign-out keeps the rows to
        the sign-outs of the last eight hours. A failure here is logged, never the sign-out's:
        that is already recorded."""
        purge = getattr(self.storage, "purge_ended", None)
        if purge is None:
            return
        try:
            purge(self.PREFIX)
        except Exception:  # any storage's failure (the limits library wraps none)
            log.warning("ended console sign-outs could not be purged", exc_info=True)

    def ended(self, sid: str) -> bool:
        return self.storage.get(self.PREFIX + sid) > 0


def claimed(session: dict[str, Any], now: float) -> str | None:
    """The id of the signed-in session the cookie holds, when it is one and its eight hours
    since signing in have not passed (whether it was signed out is `SignOuts`')."""
    sid, since = session.get("sid"), session.get("since")
    if session.get("operator") is not True or not isinstance(sid, str) or not sid:
        return None
    if not isinstance(since, int) or isinstance(since, bool) or not 0 <= now - since < MAX_AGE_SEC:
        return None
    return sid


class SessionCheck:
    """After SessionMiddleware: whether the request's session is signed in (`signed_in`), in
    the request's state. A session past its eight hours or signed out is cleared (the answer
    tells the browser to forget it); when the sign-outs cannot be read, the request is
    answered by `unavailable` and nothing else is done."""

    def __init__(
        self, app: ASGIApp, sign_outs: SignOuts, unavailable: Callable[[Request], Response]
    ) -> None:
        self.app, self.sign_outs, self.unavailable = app, sign_outs, unavailable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        current: dict[str, Any] = scope["session"]
        sid = claimed(current, time.time())
        operator = False
        if sid is not None:
            try:
                operator = not await run_in_threadpool(self.sign_outs.ended, sid)
            except Exception:  # any storage's failure (the limits library wraps none)
                log.warning("console sign-outs cannot be read; page refused", exc_info=True)
                await self.unavailable(Request(scope))(scope, receive, send)
                return
        if not operator and current.get("operator") is True:
            current.clear()  # ended: signed out elsewhere, or its eight hours are over
        state["operator"] = operator
        await self.app(scope, receive, send)


def signed_in(request: Request) -> bool:
    """What SessionCheck found (False on a request it did not see)."""
    return getattr(request.state, "operator", False) is True


def sign_in(request: Request) -> None:
    """A new signed-in session with a new id and token; an already signed-in one stays as it
    is (its eight hours are not extended)."""
    if signed_in(request):
        return
    request.session.clear()
    request.session["operator"] = True
    request.session["csrf"] = secrets.token_urlsafe(32)
    request.session["sid"] = secrets.token_urlsafe(16)
    request.session["since"] = int(time.time())
    request.state.operator = True


def remaining_sec(request: Request) -> int:
    """How long the session would still have lived: how long its sign-out is kept."""
    since = request.session.get("since")
    left = MAX_AGE_SEC - (time.time() - since) if isinstance(since, int) else MAX_AGE_SEC
    return max(int(left) + 60, 1)


def same_origin(request: Request) -> bool:
    """Whether the browser says this request comes from the console's own origin. The cookie
    is SameSite=Lax, which a page of the same site on another port (127.0.0.1:3000, the
    sandbox) satisfies: only Sec-Fetch-Site (or, without it, Origin) tells them apart. A
    request that carries neither comes from no browser page."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.headers.get("host", "") != ""
    return True


def session_id(request: Request) -> str:
    sid = request.session.get("sid")
    return sid if isinstance(sid, str) else ""


def sign_out(request: Request) -> None:
    """This browser's part of signing out (the caller records it in `SignOuts` first)."""
    request.session.clear()
    request.state.operator = False


def key_matches(given: str, operator_key: str) -> bool:
    return hmac.compare_digest(given.encode(), operator_key.encode())


class FormError(Exception):
    """A form that cannot be read (too large or not UTF-8)."""


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body, bounded (the console's forms are a few fields)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise FormError("form too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise FormError("form is not UTF-8") from exc


def csrf_ok(request: Request, fields: dict[str, str]) -> bool:
    expected = request.session.get("csrf")
    given = fields.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
