"""The operator console under /console/: server-rendered pages (Jinja2), a little CSS.

Served by the webhook sidecar's Starlette app (the assembly mounts it) and routed by Envoy.
Pages: sign-in, accounts (search by id, principal alias or email), one account (plan,
subscriptions, purchases, balances with their overage and ledger, usage per metric as a
chart), Stripe events by status (attempts, last error) with replay of failed ones through the
inbox, notification deliveries per endpoint (attempts, resend), the catalog.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Match, Mount, Route

from tollbooth import amounts, currencies, errors, paging
from tollbooth.console import chart, data, inbox, session
from tollbooth.console.throttle import SigninThrottle, ThrottleDown, client_address
from tollbooth.db import Database
from tollbooth.db.types import utcnow

log = logging.getLogger("tollbooth.console")

PREFIX = "/console"
_HERE = Path(__file__).parent
MAX_QUERY = 200
PAGE_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # what paging.encode makes (urlsafe base64)
TEMPLATES = Environment(
    loader=FileSystemLoader(str(_HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: dt.datetime | None) -> str:
    """A time, its date and clock kept on one line (a no-break space) in cells that wrap."""
    return value.strftime("%Y-%m-%d\u00a0%H:%M:%S") if value else "-"


def _credits(value: Decimal | None) -> str:
    return "-" if value is None else amounts.fmt(value)


def _money(minor: int | None, currency: str | None) -> str:
    """Minor units in the currency's major units as Stripe counts them (tollbooth.currencies:
    1000 JPY is "1,000 JPY", 1500 KWD "1.500 KWD"), exactly, with thousands separators."""
    code = currency or ""
    places = currencies.exponent(code)
    return f"{currencies.major(int(minor or 0), code):,.{places}f} {code.upper()}"


TEMPLATES.filters["when"] = _when
TEMPLATES.filters["credits"] = _credits
TEMPLATES.filters["money"] = _money

HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    # A token is made only for a page with a form: a refusal shown to a browser without a
    # session (a cross-site POST arrives without the cookie) must not answer with a new session
    # cookie, which would replace the operator's.
    signed_in = session.signed_in(request)
    html = TEMPLATES.get_template(name).render(
        prefix=PREFIX,
        csrf=session.csrf_token(request) if signed_in or name == "signin.html" else "",
        signed_in=signed_in,
        flash=request.session.pop("flash", None),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def refuse(
    request: Request, status: int, reason: str, message: str, *, signin_again: bool = False
) -> HTMLResponse:
    """The console's refusal page; `signin_again` adds a link to a fresh sign-in form."""
    return render(
        request, "message.html", status, reason=reason, message=message, signin_again=signin_again
    )


def _go(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303, headers={"Cache-Control": "no-store"})


STATUS_OF_KIND = {
    errors.Kind.INVALID_ARGUMENT: 400,
    errors.Kind.NOT_FOUND: 404,
    errors.Kind.FAILED_PRECONDITION: 409,
}


Handler = Callable[[Request], Any]

# Replay and Resend act only on what the operator saw: the page's forms carry its version
# (`seen`), checked under the row lock; a POST without one is refused, not let through unchecked.
NO_VERSION = (
    "the form carries no version of the {what} (the `seen` field of the page's form): "
    "reload the page and use its button"
)


def _same_page(fields: dict[str, str]) -> str:
    """The query of the page a Resend or Replay came from (its form carries the page's token
    and, on the events page, its status filter), so the operator stays on that page; a value
    that is no token or no status is left out."""
    kept = {
        name: value
        for name in ("status", "page_token", "before_token")
        if (value := fields.get(name, ""))
        and (
            value in inbox.STATUSES
            if name == "status"
            else len(value) <= paging.MAX_TOKEN_LENGTH and PAGE_TOKEN.fullmatch(value)
        )
    }
    return "?" + urlencode(kept) if kept else ""


def _tokens(request: Request) -> tuple[str, str]:
    """A paged page's `page_token` (the page after) and `before_token` (the page before)."""
    query = request.query_params
    return query.get("page_token", ""), query.get("before_token", "")


def _pager(
    path: str,
    shown: inbox.Paged[Any],
    after: str,
    before: str,
    anchor: str = "",
    kept: dict[str, str] | None = None,
) -> dict[str, str]:
    """The links of a paged list (`pager.html`): first page (when not on it), previous and
    next page (when there is one); `kept` (a filter) stays in each, `anchor` ends each."""
    base = PREFIX + path
    end = f"#{anchor}" if anchor else ""

    def link(**query: str) -> str:
        full = {**(kept or {}), **query}
        return base + ("?" + urlencode(full) if full else "") + end

    links: dict[str, str] = {}
    if after or before:
        links["first"] = link()
    if shown.previous_token:
        links["previous"] = link(before_token=shown.previous_token)
    if shown.next_token:
        links["next"] = link(page_token=shown.next_token)
    return links


def operator_only(handler: Handler) -> Handler:
    """No signed session: to the sign-in page (303), nothing else is answered."""

    async def guarded(request: Request) -> Response:
        if not session.signed_in(request):
            return _go("/signin")
        result: Response = await handler(request)
        return result

    return guarded


def create(
    operator_key: str,
    db: Database,
    replayer: inbox.Replayer,
    *,
    https_only: bool = False,
    signin_throttle: SigninThrottle | None = None,
    sign_outs: session.SignOuts | None = None,
    today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
) -> Mount:
    """The console as a Starlette mount at /console (its own session middleware); failed
    sign-ins are throttled by `signin_throttle` (none: not throttled); sign-outs are kept in
    `sign_outs` (none: in this process's memory, which only a single process may use)."""
    ended = sign_outs if sign_outs is not None else session.SignOuts()

    def unavailable(request: Request) -> Response:
        page = refuse(
            request,
            503,
            "SERVICE_UNAVAILABLE",
            "The console cannot check its sessions (their storage does not answer): nothing"
            " was done. Retry shortly.",
        )
        page.headers["Retry-After"] = "5"
        return page

    def read(work: Callable[[Any], Any]) -> Any:
        with db.transaction(readonly=True) as s:
            return work(s)

    async def signin_page(request: Request) -> Response:
        if session.signed_in(request):
            return _go("/accounts")
        return render(request, "signin.html")

    async def signin(request: Request) -> Response:
        try:
            fields = await session.form(request)
        except session.FormError as exc:
            return refuse(request, 400, "FORM_INVALID", str(exc))
        # Signed in already (in another tab): a sign-in form from before has the old token.
        # Only the console's own page: another port of the same site gets the cookie too.
        stale_tab = session.signed_in(request) and session.same_origin(request)
        if not session.csrf_ok(request, fields) and not stale_tab:
            return refuse(
                request,
                403,
                "CSRF_INVALID",
                "This sign-in form has expired (the session it came with ended, or it"
                " came from another site): sign in again from a fresh form.",
                signin_again=True,
            )
        right = session.key_matches(fields.get("operator_key", "").strip(), operator_key)
        if signin_throttle is not None:
            address = client_address(request)
            try:
                refusal = await run_in_threadpool(signin_throttle.attempt, address, right)
            except ThrottleDown:
                page = refuse(
                    request,
                    503,
                    "SERVICE_UNAVAILABLE",
                    "Sign-in is unavailable: the failed sign-in counters cannot be reached"
                    " (nothing was checked). Retry shortly.",
                )
                page.headers["Retry-After"] = "5"
                return page
            if refusal is not None:
                log.warning(
                    "console sign-in refused: throttled",
                    extra={"event": "signin", "scope": refusal.scope, "client": address},
                )
                page = refuse(request, 429, "RATE_LIMITED", refusal.message)
                page.headers["Retry-After"] = str(refusal.retry_after_sec)
                return page
        if not right:
            log.warning("console sign-in refused: wrong operator key", extra={"event": "signin"})
            return render(request, "signin.html", 401, error="That is not the operator key.")
        session.sign_in(request)
        log.info("console sign-in", extra={"event": "signin"})
        return _go("/accounts")

    @operator_only
    async def signout(request: Request) -> Response:
        try:
            fields = await session.form(request)
        except session.FormError as exc:
            return refuse(request, 400, "FORM_INVALID", str(exc))
        if not session.csrf_ok(request, fields):
            return refuse(request, 403, "CSRF_INVALID", "the form's CSRF token is missing or wrong")
        sid, left = session.session_id(request), session.remaining_sec(request)
        try:  # recorded first: a copy of the cookie must not outlive the sign-out
            await run_in_threadpool(ended.end, sid, left)
        except Exception:  # any storage's failure (the limits library wraps none)
            log.warning("console sign-out could not be recorded", exc_info=True)
            return unavailable(request)
        session.sign_out(request)
        log.info("console sign-out", extra={"event": "signout"})
        return _go("/signin")

    @operator_only
    async def home(request: Request) -> Response:
        return _go("/accounts")

    @operator_only
    async def accounts(request: Request) -> Response:
        query = request.query_params.get("q", "")
        if len(query) > MAX_QUERY:
            return refuse(request, 400, "QUERY_TOO_LONG", f"search at most {MAX_QUERY} characters")
        found = await run_in_threadpool(read, lambda s: data.search_accounts(s, query))
        return render(request, "accounts.html", query=query, accounts=found)

    @operator_only
    async def account(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        day = today()
        view = await run_in_threadpool(read, lambda s: data.account_view(s, account_id, day))
        if view is None:
            return refuse(request, 404, "NOT_FOUND", "no such account")
        charts = [(series, chart.bars(series.days)) for series in view.usage]
        after, before = _tokens(request)
        try:
            notes = await run_in_threadpool(
                read, lambda s: inbox.notifications(s, view.account.id, after, before)
            )
        except errors.DomainError as exc:
            return refuse(request, STATUS_OF_KIND.get(exc.kind, 400), exc.reason, exc.message)
        return render(
            request,
            "account.html",
            view=view,
            charts=charts,
            notifications=notes.items,
            pager=_pager(f"/accounts/{view.account.id}", notes, after, before, "notifications"),
            page_size=inbox.NOTIFICATIONS,
        )

    @operator_only
    async def events(request: Request) -> Response:
        status = request.query_params.get("status", "")
        if status and status not in inbox.STATUSES:
            return refuse(
                request, 400, "STATUS_INVALID", f"status is one of {', '.join(inbox.STATUSES)}"
            )
        after, before = _tokens(request)
        try:
            shown = await run_in_threadpool(read, lambda s: inbox.events(s, status, after, before))
        except errors.DomainError as exc:
            return refuse(request, STATUS_OF_KIND.get(exc.kind, 400), exc.reason, exc.message)
        kept = {"status": status} if status else {}
        return render(
            request,
            "events.html",
            selected=status,
            statuses=inbox.STATUSES,
            replayable=inbox.REPLAYABLE,
            events=shown.items,
            pager=_pager("/events", shown, after, before, kept=kept),
            page_token=after,
            before_token=before,
            page_size=inbox.EVENTS,
        )

    @operator_only
    async def replay(request: Request) -> Response:
        event_id = request.path_params["event_id"]
        try:
            fields = await session.form(request)
        except session.FormError as exc:
            return refuse(request, 400, "FORM_INVALID", str(exc))
        if not session.csrf_ok(request, fields):
            return refuse(request, 403, "CSRF_INVALID", "the form's CSRF token is missing or wrong")
        seen = fields.get("seen", "")  # the event's version on the page the operator clicked
        if not seen:
            return refuse(request, 400, "FORM_INVALID", NO_VERSION.format(what="event"))
        status = await run_in_threadpool(read, lambda s: inbox.event_status(s, event_id))
        if status is None:
            return refuse(request, 404, "NOT_FOUND", "no such event")
        if not inbox.replayable(status):
            return refuse(request, 409, "EVENT_NOT_REPLAYABLE", f"the event is {status}")
        # No transaction is open here: the inbox opens its own (none across the provider).
        try:
            outcome = await run_in_threadpool(replayer, event_id, seen)
        except errors.DomainError as exc:
            return refuse(request, STATUS_OF_KIND.get(exc.kind, 400), exc.reason, exc.message)
        log.info(
            "console replay",
            extra={"event": "replay", "stripe_event": event_id, "status": outcome.status},
        )
        if outcome.status == "failed":
            session.flash(request, f"Replay of {event_id} failed: {outcome.error}")
        else:
            done = "; ".join(outcome.changed) or "no change needed"
            session.flash(request, f"Replayed {event_id}: {outcome.status}: {done}")
        return _go("/events" + _same_page(fields))

    @operator_only
    async def notifications(request: Request) -> Response:
        after, before = _tokens(request)
        try:
            shown = await run_in_threadpool(read, lambda s: inbox.deliveries(s, after, before))
        except errors.DomainError as exc:
            return refuse(request, STATUS_OF_KIND.get(exc.kind, 400), exc.reason, exc.message)
        return render(
            request,
            "notifications.html",
            endpoints=shown.items,
            pager=_pager("/notifications", shown, after, before),
            paged=bool(after or before),
            page_token=after,
            before_token=before,
            page_size=inbox.ENDPOINTS,
        )

    @operator_only
    async def resend(request: Request) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        notification_id = request.path_params["notification_id"]
        try:
            fields = await session.form(request)
        except session.FormError as exc:
            return refuse(request, 400, "FORM_INVALID", str(exc))
        if not session.csrf_ok(request, fields):
            return refuse(request, 403, "CSRF_INVALID", "the form's CSRF token is missing or wrong")
        seen = fields.get("seen", "")  # the delivery's version on the page the operator clicked
        if not seen:
            return refuse(request, 400, "FORM_INVALID", NO_VERSION.format(what="message"))

        def write() -> str:
            with db.transaction() as s:
                return inbox.resend(s, endpoint_id, notification_id, utcnow(), seen)

        try:
            state = await run_in_threadpool(write)
        except errors.DomainError as exc:
            return refuse(request, STATUS_OF_KIND.get(exc.kind, 400), exc.reason, exc.message)
        log.info(
            "console resend",
            extra={"event": "resend", "endpoint_id": endpoint_id, "notification": notification_id},
        )
        session.flash(request, f"Resending {notification_id} to {endpoint_id}: {state}")
        return _go("/notifications" + _same_page(fields))

    @operator_only
    async def catalog(request: Request) -> Response:
        view = await run_in_threadpool(read, data.catalog_view)
        return render(request, "catalog.html", catalog=view)

    async def stylesheet(request: Request) -> Response:
        return FileResponse(
            _HERE / "static" / "console.css",
            media_type="text/css",
            headers={"Cache-Control": "max-age=300"},
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return refuse(request, 404, "NOT_FOUND", "no such page")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        # RFC 9110: a 405 names the methods the path takes, every route serving it (the
        # sign-in form and the sign-in are two routes of one path), as the sidecar's others do.
        methods = {
            method
            for route in app.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
            for method in route.methods or ()
        }
        page = refuse(request, 405, "METHOD_NOT_ALLOWED", "method not allowed")
        page.headers["Allow"] = ", ".join(sorted(methods))
        return page

    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/signin", signin_page, methods=["GET"]),
            Route("/signin", signin, methods=["POST"]),
            Route("/signout", signout, methods=["POST"]),
            Route("/accounts", accounts, methods=["GET"]),
            Route("/accounts/{account_id}", account, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
            Route("/events/{event_id}/replay", replay, methods=["POST"]),
            Route("/notifications", notifications, methods=["GET"]),
            Route(
                "/notifications/{endpoint_id}/{notification_id}/resend", resend, methods=["POST"]
            ),
            Route("/catalog", catalog, methods=["GET"]),
            Route("/static/console.css", stylesheet, methods=["GET"]),
        ],
        middleware=[
            session.middleware(operator_key, https_only=https_only),
            Middleware(session.SessionCheck, sign_outs=ended, unavailable=unavailable),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )
    return Mount(PREFIX, app=app)
