"""Hosted pages: Checkout, the customer portal and invoices, all under `/sandbox/`."""

from __future__ import annotations

import copy
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tollbooth.sandbox import API_VERSION
from tollbooth.sandbox.engine import Engine, strip_private
from tollbooth.sandbox.headers import page_headers
from tollbooth.sandbox.objects import fmt_amount, fmt_date
from tollbooth.sandbox.wire import StripeError

_HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(str(_HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["amount"] = lambda v, c: fmt_amount(int(v or 0), str(c or "usd"))
TEMPLATES.filters["date"] = fmt_date

TEST_CARD_HINTS = [
    ("4242 4242 4242 4242", "pays"),
    ("4000 0000 0000 0002", "is declined"),
    ("4000 0000 0000 9995", "is declined (insufficient funds)"),
    ("4000 0000 0000 0341", "attaches and pays now, then fails at renewal"),
]


def render(
    name: str, status: int = 200, form_targets: tuple[str, ...] = (), **context: Any
) -> HTMLResponse:
    """A page with its security headers (`headers.page_headers`); `form_targets`: URLs a form
    of the page is answered with a redirect to, besides the sandbox itself."""
    html = TEMPLATES.get_template(name).render(api_version=API_VERSION, **context)
    return HTMLResponse(html, status_code=status, headers=page_headers(form_targets))


class FormTooLarge(Exception):
    """A hosted page's form over its limit: the app answers the 413 page (`form_too_large`)."""


async def form_too_large(request: Request, exc: Exception) -> HTMLResponse:
    return render("message.html", status=413, title="Form too large", message="Form too large.")


class FormNotUtf8(Exception):
    """A hosted page's form in another encoding (a Latin-1 `zo\\xeb@...`): read as nothing,
    it came back as a wrong card number; the app answers the 400 page (`form_not_utf8`)."""


async def form_not_utf8(request: Request, exc: Exception) -> HTMLResponse:
    return render(
        "message.html",
        status=400,
        title="Form not readable",
        message="The form was not sent as UTF-8; nothing was done. Reload the page and try again.",
    )


async def _form(request: Request, limit: int = 64 * 1024) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormTooLarge()
    try:
        text = body.decode("utf-8")
        return dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError as exc:
        raise FormNotUtf8() from exc


# Stripe's longest customer e-mail.
MAX_EMAIL = 512


def email_problem(email: str | None) -> str | None:
    """What is wrong with an e-mail address typed on a hosted page (None: nothing). Letters of
    any script are fine (RFC 6531: `zoë@exämple.com`, `用户@例子.广告`): the billing service
    keeps such an address as an account's e-mail and the page prefills it, so the page checks
    the address itself instead of leaving it to `<input type=email>`, which refuses a
    non-ASCII local part."""
    if email is None:
        return None
    local, at, domain = email.rpartition("@")
    if (
        len(email) > MAX_EMAIL
        or not at
        or not local
        or "@" in local
        or "." not in domain.strip(".")
        or not email.isprintable()
        or any(c.isspace() for c in email)
    ):
        return "That is not an e-mail address: it looks like name@example.com (any script)."
    return None


# What the portal page says after an action: the redirect carries one of these codes in
# `?notice=` or `?error=` and the page shows the sandbox's own text for it. Any other value is
# shown as nothing, so a link to our page cannot make it say attacker-chosen words.
PORTAL_NOTICES = {
    "canceled": "Subscription canceled.",
    "cancel_scheduled": "Subscription will be canceled at the end of the period.",
    "renewed": "Subscription renewed: it will no longer be canceled.",
    "plan_changed": "Plan changed.",
    "plan_unchanged": "That is your current plan already: nothing changed.",
    "payment_method_updated": "Payment method updated.",
}
PORTAL_ERRORS = {
    "no_such_subscription": "No such subscription.",
    "cancel_not_enabled": "Cancelling is not enabled in this portal.",
    "price_not_offered": "That price is not offered in this portal.",
    "subscription_canceled": "This subscription is canceled: its plan cannot change.",
    "payment_method_update_not_enabled": (
        "Updating the payment method is not enabled in this portal."
    ),
    "card_declined": "Your card was declined.",
    "incorrect_number": "Your card number is incorrect.",
    "unknown_action": "Unknown action.",
    "action_failed": "That could not be done: nothing changed.",
}


def _portal_refusal(status: int, code: str) -> StripeError:
    return StripeError(status, PORTAL_ERRORS[code], code=code)


def _not_found(what: str) -> HTMLResponse:
    return render("message.html", status=404, title="Not found", message=f"No such {what}.")


GROUP_KEY = "tollbooth_subscription_group"


def price_group(price: dict[str, Any]) -> str:
    """The group a plan switch stays in: the price's `tollbooth_subscription_group` metadata
    (the catalog's subscription group), else its product (Stripe's own grouping)."""
    group = (price.get("metadata") or {}).get(GROUP_KEY)
    return f"group:{group}" if group else f"product:{price.get('product')}"


def price_label(price: dict[str, Any]) -> str:
    """What a person calls a price: its nickname or lookup key."""
    meta = price.get("metadata") or {}
    return str(
        price.get("nickname") or price.get("lookup_key") or meta.get("tollbooth_lookup_key") or ""
    )


def success_redirect(session: dict[str, Any], base_url: str) -> str:
    url = session.get("success_url")
    if not url:
        return f"{base_url}/sandbox/checkout/{session['id']}"
    return str(url).replace("{CHECKOUT_SESSION_ID}", session["id"])


class Attempts:
    """What a refused page form showed (the error, the e-mail and name typed; never the card),
    kept under a random token for the page it redirects to: each POST answers with a redirect
    to a GET page (Post/Redirect/Get), so Back and reload never resubmit a form. Newest
    `size` only, in memory (after a restart the page shows a fresh form)."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._kept: OrderedDict[str, dict[str, str]] = OrderedDict()

    def keep(self, page: str, **shown: str) -> str:
        token = secrets.token_urlsafe(12)
        self._kept[token] = {**shown, "_page": page}
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return token

    def get(self, page: str, token: str | None) -> dict[str, str]:
        """What `keep` kept for this page (a token of another page shows nothing)."""
        shown = dict(self._kept.get(token or "", {}))
        return shown if shown.pop("_page", None) == page else {}


class Pages:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.attempts = Attempts()

    def _tx(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.engine.store.tx():
            return fn(*args, **kwargs)

    # -- index ----------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        def load() -> dict[str, Any]:
            events = [self.engine.render(e) for _, e in self.engine.store.all("event")[:25]]
            clock = self.engine.clock("clock_default")
            return {"events": events, "clock": clock}

        data = await run_in_threadpool(self._tx, load)
        return render("index.html", base_url=self.engine.config.base_url, **data)

    # -- checkout -------------------------------------------------------------------------------

    def _checkout_context(self, session_id: str) -> dict[str, Any] | None:
        session = self.engine.store.get(session_id)
        if session is None or session.get("object") != "checkout.session":
            return None
        customer = self.engine.store.get(session["customer"]) if session["customer"] else None
        return {
            "session": session,
            "lines": session.get("_line_items", []),
            "email": (customer or {}).get("email") or session.get("customer_email") or "",
            "cards": TEST_CARD_HINTS,
        }

    async def checkout(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        ctx = await run_in_threadpool(self._tx, self._checkout_context, session_id)
        if ctx is None:
            return _not_found("Checkout Session")
        # After a refused Pay: its error, and what the buyer typed except the card number.
        shown = self.attempts.get(session_id, request.query_params.get("attempt"))
        ctx["email"] = shown.get("email") or ctx["email"]
        return render(
            "checkout.html",
            # Pay is answered with a redirect to the success URL (`success_redirect`).
            form_targets=(ctx["session"].get("success_url") or "",),
            error=shown.get("error"),
            card_name=shown.get("name", ""),
            **ctx,
        )

    async def checkout_pay(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        form = await _form(request)
        card = form.get("card", "")
        email = form.get("email", "").strip() or None
        name = form.get("name", "").strip() or None

        def pay() -> tuple[dict[str, Any] | None, str | None]:
            if problem := email_problem(email):
                return None, problem
            try:
                with self.engine.store.tx():
                    current = self.engine.store.get(session_id)
                    if (
                        current is not None
                        and current.get("object") == "checkout.session"
                        and current.get("status") == "complete"
                    ):
                        # A second tab or a second click on a stale form: it is paid already
                        # (once), so this buyer goes where the first Pay went. Nothing is done.
                        return copy.deepcopy(current), None
                    session = self.engine.complete_checkout_session(
                        session_id, card, email=email, name=name
                    )
                    return copy.deepcopy(session), None
            except StripeError as err:
                if err.status == 404:
                    return None, "missing"
                return None, err.message

        session, error = await run_in_threadpool(pay)
        if error == "missing":
            return _not_found("Checkout Session")
        if session is not None:
            return RedirectResponse(
                success_redirect(session, self.engine.config.base_url), status_code=303
            )
        # What the buyer typed stays, except the card number (never echoed back); the answer
        # is a redirect to the page, so Back and reload never send the form again.
        token = self.attempts.keep(
            session_id, error=error or "", email=email or "", name=name or ""
        )
        return RedirectResponse(
            f"/sandbox/checkout/{quote(session_id)}?attempt={token}", status_code=303
        )

    # -- portal ---------------------------------------------------------------------------------

    def _portal_context(self, portal_id: str) -> dict[str, Any] | None:
        engine = self.engine
        portal = engine.store.get(portal_id)
        if portal is None or portal.get("object") != "billing_portal.session":
            return None
        config = engine.store.get(portal["configuration"]) or {}
        customer = engine.store.get(portal["customer"]) or {}
        features = config.get("features", {})
        subs = [
            strip_private(s)
            for _, s in engine.store.all("subscription")
            if s["customer"] == portal["customer"] and s["status"] != "canceled"
        ]
        invoices = [
            strip_private(i)
            for _, i in engine.store.all("invoice")
            if i["customer"] == portal["customer"] and i["status"] != "draft"
        ]
        update = features.get("subscription_update", {})
        choices: list[dict[str, Any]] = []
        if update.get("enabled"):
            for entry in update.get("products", []):
                product = engine.store.get(entry["product"]) or {}
                for price_id in entry.get("prices", []):
                    price = engine.store.get(price_id)
                    if price and price["active"] and price["recurring"]:
                        choices.append({"price": price, "product": product})
        names = {}
        switches: dict[str, list[dict[str, Any]]] = {}
        for sub in subs:
            for item in sub["items"]["data"]:
                product = engine.store.get(item["price"]["product"]) or {}
                names[item["price"]["id"]] = product.get("name") or item["price"]["id"]
            # The switch offers the prices of the subscription's own group only.
            group = price_group(sub["items"]["data"][0]["price"])
            switches[sub["id"]] = [c for c in choices if price_group(c["price"]) == group]
        pm_id = customer.get("invoice_settings", {}).get("default_payment_method")
        pm = engine.store.get(pm_id) if pm_id else None
        return {
            "portal": portal,
            "config": config,
            "features": features,
            "customer": customer,
            "subscriptions": subs,
            "invoices": invoices,
            "choices": choices,
            "switches": switches,
            "names": names,
            "payment_method": strip_private(pm) if pm else None,
            "cards": TEST_CARD_HINTS,
        }

    async def portal(self, request: Request) -> Response:
        portal_id = request.path_params["portal_id"]
        ctx = await run_in_threadpool(self._tx, self._portal_context, portal_id)
        if ctx is None:
            return _not_found("portal session")
        return render(
            "portal.html",
            notice=PORTAL_NOTICES.get(request.query_params.get("notice", "")),
            error=PORTAL_ERRORS.get(request.query_params.get("error", "")),
            **ctx,
        )

    def _portal_action(
        self, portal_id: str, sub_id: str | None, action: str, form: dict[str, str]
    ) -> str:
        """Apply one portal action; returns the code of the notice to show (PORTAL_NOTICES)."""
        engine = self.engine
        portal = engine.store.get(portal_id)
        if portal is None or portal.get("object") != "billing_portal.session":
            raise StripeError(404, "No such portal session.")
        config = engine.load(portal["configuration"], "billing_portal.configuration")
        features = config["features"]
        customer = engine.customer(portal["customer"], "customer")
        sub = None
        if sub_id is not None:
            sub = engine.store.get(sub_id)
            if (
                sub is None
                or sub.get("object") != "subscription"
                or sub["customer"] != customer["id"]
            ):
                raise _portal_refusal(404, "no_such_subscription")
        if action == "cancel" and sub is not None:
            cancel = features["subscription_cancel"]
            if not cancel["enabled"]:
                raise _portal_refusal(403, "cancel_not_enabled")
            if cancel["mode"] == "immediately":
                engine.cancel_subscription(sub["id"], {})
                return "canceled"
            engine.update_subscription(sub["id"], {"cancel_at_period_end": "true"})
            return "cancel_scheduled"
        if action == "renew" and sub is not None:
            if not features["subscription_cancel"]["enabled"]:
                raise _portal_refusal(403, "cancel_not_enabled")
            engine.update_subscription(sub["id"], {"cancel_at_period_end": "false"})
            return "renewed"
        if action == "switch" and sub is not None:
            update = features["subscription_update"]
            allowed = {pid for entry in update["products"] for pid in entry["prices"]}
            price_id = form.get("price", "")
            item = sub["items"]["data"][0]
            target = engine.store.get(price_id) if price_id in allowed else None
            if (
                not update["enabled"]
                or target is None
                or price_group(target) != price_group(item["price"])
            ):
                raise _portal_refusal(403, "price_not_offered")
            if price_id == item["price"]["id"]:
                return "plan_unchanged"
            engine.update_subscription(
                sub["id"],
                {"items": [{"id": item["id"], "price": price_id}], "proration_behavior": "none"},
            )
            return "plan_changed"
        if action == "payment_method":
            if not features["payment_method_update"]["enabled"]:
                raise _portal_refusal(403, "payment_method_update_not_enabled")
            pm = engine.card_payment_method(
                form.get("card", ""), email=customer.get("email"), name=customer.get("name")
            )
            if pm.get("_behaviour") == "decline":
                raise _portal_refusal(402, "card_declined")
            engine._attach(pm, customer)
            engine._set_default_pm(customer, pm)
            for _, other in engine.store.all("subscription"):
                if other["customer"] == customer["id"] and other["status"] != "canceled":
                    if other.get("default_payment_method") != pm["id"]:
                        engine.update_subscription(
                            other["id"], {"default_payment_method": pm["id"]}
                        )
            engine.retry_open_invoices(engine.customer(customer["id"], "customer"), pm)
            return "payment_method_updated"
        raise _portal_refusal(404, "unknown_action")

    async def portal_post(self, request: Request) -> Response:
        portal_id = request.path_params["portal_id"]
        sub_id = request.path_params.get("sub_id")
        action = request.path_params["action"]
        form = await _form(request)
        if action == "switch" and sub_id is not None and form.get("confirm") != "yes":
            confirm = await run_in_threadpool(
                self._tx, self._switch_context, portal_id, sub_id, form.get("price", "")
            )
            if confirm is not None:
                return render("portal_confirm.html", **confirm)

        def act() -> tuple[str | None, str | None, int]:
            try:
                with self.engine.store.tx():
                    return self._portal_action(portal_id, sub_id, action, form), None, 200
            except StripeError as err:
                if err.status == 404 and err.message == "No such portal session.":
                    return None, None, 404
                # The engine's own refusals (a declined card, ...) by their code when the
                # portal has a text for it; anything else as a plain failure.
                code = err.code if err.code in PORTAL_ERRORS else "action_failed"
                return None, code, err.status

        notice, error, status = await run_in_threadpool(act)
        if status == 404 and error is None:
            return _not_found("portal session")
        query = urlencode({"notice": notice} if notice else {"error": error or "action_failed"})
        return RedirectResponse(f"/sandbox/portal/{portal_id}?{query}", status_code=303)

    async def switch_page(self, request: Request) -> Response:
        """The confirmation of a plan switch, a GET page (the select's form): Back after
        confirming shows it again, which then redirects to the portal saying why there is
        nothing to confirm."""
        portal_id = request.path_params["portal_id"]
        sub_id = request.path_params["sub_id"]
        price_id = request.query_params.get("price", "")
        confirm = await run_in_threadpool(
            self._tx, self._switch_context, portal_id, sub_id, price_id
        )
        if confirm is not None:
            return render("portal_confirm.html", **confirm)

        def why() -> tuple[bool, dict[str, str]]:
            store = self.engine.store
            portal, sub = store.get(portal_id), store.get(sub_id)
            if portal is None or portal.get("object") != "billing_portal.session":
                return False, {}
            ours = (
                sub is not None
                and sub.get("object") == "subscription"
                and sub["customer"] == portal["customer"]
            )
            if ours and sub is not None and sub.get("status") == "canceled":
                return True, {"error": "subscription_canceled"}
            if ours and sub is not None and sub["items"]["data"][0]["price"]["id"] == price_id:
                return True, {"notice": "plan_unchanged"}
            return True, {"error": "price_not_offered"}

        found, query = await run_in_threadpool(self._tx, why)
        if not found:
            return _not_found("portal session")
        return RedirectResponse(
            f"/sandbox/portal/{quote(portal_id)}?{urlencode(query)}", status_code=303
        )

    def _switch_context(self, portal_id: str, sub_id: str, price_id: str) -> dict[str, Any] | None:
        """The confirmation page of a plan switch; None when there is nothing to confirm (the
        action itself then answers why)."""
        store = self.engine.store
        portal, sub, price = store.get(portal_id), store.get(sub_id), store.get(price_id)
        if portal is None or portal.get("object") != "billing_portal.session":
            return None
        if sub is None or sub.get("object") != "subscription" or price is None:
            return None
        if sub["customer"] != portal["customer"] or price.get("object") != "price":
            return None
        if sub.get("status") == "canceled":  # canceled in another tab: nothing to switch
            return None
        current = sub["items"]["data"][0]["price"]
        config = store.get(portal["configuration"]) or {}
        update = config.get("features", {}).get("subscription_update", {})
        offered = {pid for entry in update.get("products", []) for pid in entry.get("prices", [])}
        if current["id"] == price["id"] or price["id"] not in offered or not update.get("enabled"):
            return None
        if price_group(price) != price_group(current):
            return None

        def describe(p: dict[str, Any]) -> dict[str, Any]:
            product = store.get(p["product"]) or {}
            return {"price": p, "name": product.get("name") or p["id"], "label": price_label(p)}

        return {
            "portal": portal,
            "subscription": strip_private(sub),
            "current": describe(current),
            "target": describe(price),
        }

    # -- invoices -------------------------------------------------------------------------------

    async def invoice(self, request: Request) -> Response:
        invoice_id = request.path_params["invoice_id"]

        def load() -> dict[str, Any] | None:
            inv = self.engine.store.get(invoice_id)
            if inv is None or inv.get("object") != "invoice" or inv["status"] == "draft":
                return None
            return strip_private(inv)

        inv = await run_in_threadpool(self._tx, load)
        if inv is None:
            return _not_found("invoice")
        return render("invoice.html", invoice=inv)


async def back(request: Request) -> HTMLResponse:
    """`/sandbox/back`: a "back in your app" page for the examples' success and cancel URLs
    (it shows the query, e.g. the `{CHECKOUT_SESSION_ID}` Checkout filled in)."""
    params = [(k[:100], v[:200]) for k, v in list(request.query_params.multi_items())[:20]]
    return render("back.html", params=params)
