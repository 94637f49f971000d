"""The security headers of every sandbox page: a strict Content-Security-Policy and its
companions.

The pages are plain server-rendered HTML with one stylesheet (`/sandbox/static/sandbox.css`)
and no script, inline style or image of their own, so the policy allows exactly that:
nothing by default, styles and images from the sandbox itself, forms sent to the sandbox
itself, never framed (`frame-ancestors 'none'` and `X-Frame-Options: DENY`), no `<base>`.
A browser applies `form-action` to the redirect that answers a form too, so the Checkout page,
whose Pay is answered with a redirect to the session's `success_url`, also names that URL's
origin. `HeadersMiddleware` gives the same headers to what is not a rendered page (the
stylesheet, redirects, errors) unless it set its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A CSP host-source takes ASCII letters, digits, `-` and `.` only (no IPv6 literal, no IDN
# in Unicode): another host is allowed by its scheme alone.
_CSP_HOST = re.compile(r"[A-Za-z0-9.-]+")

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Sandbox": "true",
}


def form_source(url: str | None) -> str | None:
    """The CSP source of the origin of `url` (an http(s) URL the sandbox accepted), or None."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    if not _CSP_HOST.fullmatch(host):
        return f"{parts.scheme}:"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def content_security_policy(form_targets: Iterable[str | None] = ()) -> str:
    forms = ["'self'"]
    for target in form_targets:
        source = form_source(target)
        if source and source not in forms:
            forms.append(source)
    return "; ".join(
        [
            "default-src 'none'",
            "style-src 'self'",
            "img-src 'self'",
            f"form-action {' '.join(forms)}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def page_headers(form_targets: Iterable[str | None] = ()) -> dict[str, str]:
    return {**SECURITY_HEADERS, "Content-Security-Policy": content_security_policy(form_targets)}


class HeadersMiddleware:
    """Adds the page headers to every `/sandbox/` response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.defaults = [
            (name.lower().encode(), value.encode()) for name, value in page_headers().items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/sandbox"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in self.defaults if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
