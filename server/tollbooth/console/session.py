"""Signing in to the console: the operator key, the session cookie, the CSRF token.

- The operator key (BILLING_OPERATOR_KEY, generated per data directory when unset) is typed
  into the sign-in form; it is compared in constant time and never stored in the cookie.
- The session is Starlette's SessionMiddleware: a cookie signed with itsdangerous (key derived
  from the operator key, so changing the key signs everyone out), HttpOnly, SameSite=Lax,
  path /console, eight hours at most. Lax, not Strict: a Strict cookie is not sent when the
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
import secrets
from urllib.parse import parse_qsl, urlsplit

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

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


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def signed_in(request: Request) -> bool:
    return request.session.get("operator") is True


def sign_in(request: Request) -> None:
    """A new signed-in session with a new token; an already signed-in one stays as it is."""
    if signed_in(request):
        return
    request.session.clear()
    request.session["operator"] = True
    request.session["csrf"] = secrets.token_urlsafe(32)


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


def sign_out(request: Request) -> None:
    request.session.clear()


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
