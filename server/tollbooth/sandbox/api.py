"""The `/v1` REST surface: authentication, parsing, idempotency, routing, errors."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import stripe.params as p
import stripe.params.billing_portal as bp
import stripe.params.checkout as co
import stripe.params.test_helpers as th
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tollbooth.sandbox import API_VERSION
from tollbooth.sandbox.engine import Engine
from tollbooth.sandbox.keys import KeysInProgress
from tollbooth.sandbox.objects import DEFAULT_CARD, new_id
from tollbooth.sandbox.stalls import ApiStalls
from tollbooth.sandbox.wire import StripeError, as_str, bad_request, check_params, parse_form

IDEMPOTENCY_TTL_SEC = 24 * 3600

log = logging.getLogger("tollbooth.sandbox.api")

Handler = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    params: type | None


class _Complete:
    """Params of the sandbox's own checkout completion helper."""

    __annotations__ = {"card": str, "email": str, "name": str, "expand": list}


class _OpenDispute:
    """Params of the sandbox's own helper that opens a dispute on a charge."""

    __annotations__ = {"reason": str, "expand": list}


class _CloseDispute:
    """Params of the sandbox's own helper that settles a dispute (`won` or `lost`)."""

    __annotations__ = {"status": str, "expand": list}


class _Expand:
    __annotations__ = {"expand": list}


def _expand(params: dict[str, Any]) -> list[str]:
    value = params.get("expand", [])
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("Invalid array", "expand")
    return value


def _routes() -> list[Route]:
    def r(method: str, path: str, params: type | None, handler: Handler) -> Route:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        return Route(method, re.compile(f"^{regex}$"), handler, params)

    def one(kind: str) -> Handler:
        return lambda e, q, id: e.render(e.load(id, kind), _expand(q))

    def done(fn: Callable[..., dict[str, Any]]) -> Handler:
        return lambda e, q, **kw: e.render(fn(e, q, **kw), _expand(q))

    return [
        # customers
        r("POST", "/v1/customers", p.CustomerCreateParams, done(lambda e, q: e.create_customer(q))),
        r("GET", "/v1/customers", p.CustomerListParams, lambda e, q: e.list_customers(q)),
        r("GET", "/v1/customers/{id}", p.CustomerRetrieveParams, one("customer")),
        r(
            "POST",
            "/v1/customers/{id}",
            p.CustomerUpdateParams,
            done(lambda e, q, id: e.update_customer(id, q)),
        ),
        r(
            "DELETE",
            "/v1/customers/{id}",
            p.CustomerDeleteParams,
            lambda e, q, id: e.delete_customer(id),
        ),
        # products
        r("POST", "/v1/products", p.ProductCreateParams, done(lambda e, q: e.create_product(q))),
        r("GET", "/v1/products", p.ProductListParams, lambda e, q: e.list_products(q)),
        r("GET", "/v1/products/{id}", p.ProductRetrieveParams, one("product")),
        r(
            "POST",
            "/v1/products/{id}",
            p.ProductUpdateParams,
            done(lambda e, q, id: e.update_product(id, q)),
        ),
        # prices
        r("POST", "/v1/prices", p.PriceCreateParams, done(lambda e, q: e.create_price(q))),
        r("GET", "/v1/prices", p.PriceListParams, lambda e, q: e.list_prices(q)),
        r("GET", "/v1/prices/{id}", p.PriceRetrieveParams, one("price")),
        r(
            "POST",
            "/v1/prices/{id}",
            p.PriceUpdateParams,
            done(lambda e, q, id: e.update_price(id, q)),
        ),
        # checkout
        r(
            "POST",
            "/v1/checkout/sessions",
            co.SessionCreateParams,
            done(lambda e, q: e.create_checkout_session(q)),
        ),
        r(
            "GET",
            "/v1/checkout/sessions",
            co.SessionListParams,
            lambda e, q: e.list_checkout_sessions(q),
        ),
        r("GET", "/v1/checkout/sessions/{id}", co.SessionRetrieveParams, one("checkout.session")),
        r(
            "GET",
            "/v1/checkout/sessions/{id}/line_items",
            co.SessionListLineItemsParams,
            lambda e, q, id: e.list_line_items(id, q),
        ),
        r(
            "POST",
            "/v1/checkout/sessions/{id}/expire",
            co.SessionExpireParams,
            done(lambda e, q, id: e.expire_checkout_session(id)),
        ),
        r(
            "POST",
            "/v1/test_helpers/checkout/sessions/{id}/complete",
            _Complete,
            done(
                lambda e, q, id: e.complete_checkout_session(
                    id,
                    as_str(q.get("card", DEFAULT_CARD), "card"),
                    email=q.get("email"),
                    name=q.get("name"),
                )
            ),
        ),
        # billing portal
        r(
            "POST",
            "/v1/billing_portal/configurations",
            bp.ConfigurationCreateParams,
            done(lambda e, q: e.create_portal_configuration(q)),
        ),
        r(
            "GET",
            "/v1/billing_portal/configurations",
            bp.ConfigurationListParams,
            lambda e, q: e.list("billing_portal.configuration", q, _portal_filter(q)),
        ),
        r(
            "GET",
            "/v1/billing_portal/configurations/{id}",
            bp.ConfigurationRetrieveParams,
            one("billing_portal.configuration"),
        ),
        r(
            "POST",
            "/v1/billing_portal/configurations/{id}",
            bp.ConfigurationUpdateParams,
            done(lambda e, q, id: e.update_portal_configuration(id, q)),
        ),
        r(
            "POST",
            "/v1/billing_portal/sessions",
            bp.SessionCreateParams,
            done(lambda e, q: e.create_portal_session(q)),
        ),
        # subscriptions
        r(
            "GET",
            "/v1/subscriptions",
            p.SubscriptionListParams,
            lambda e, q: e.list_subscriptions(q),
        ),
        r("GET", "/v1/subscriptions/{id}", p.SubscriptionRetrieveParams, one("subscription")),
        r(
            "POST",
            "/v1/subscriptions/{id}",
            p.SubscriptionUpdateParams,
            done(lambda e, q, id: e.update_subscription(id, q)),
        ),
        r(
            "DELETE",
            "/v1/subscriptions/{id}",
            p.SubscriptionCancelParams,
            done(lambda e, q, id: e.cancel_subscription(id, q)),
        ),
        # invoices
        r("GET", "/v1/invoices", p.InvoiceListParams, lambda e, q: e.list_invoices(q)),
        r("GET", "/v1/invoices/{id}", p.InvoiceRetrieveParams, one("invoice")),
        r(
            "GET",
            "/v1/invoices/{id}/lines",
            p.InvoiceLineItemListParams,
            lambda e, q, id: e.invoice_lines(id, q),
        ),
        # refunds
        r("POST", "/v1/refunds", p.RefundCreateParams, done(lambda e, q: e.create_refund(q))),
        r(
            "GET",
            "/v1/refunds",
            p.RefundListParams,
            lambda e, q: e.list("refund", q, _refund_filter(q)),
        ),
        r("GET", "/v1/refunds/{id}", p.RefundRetrieveParams, one("refund")),
        r("GET", "/v1/charges/{id}", p.ChargeRetrieveParams, one("charge")),
        # disputes: Stripe's retrieve and close (accept: lost); the sandbox's own helpers open
        # one on a charge and settle it as the bank would (won or lost)
        r("GET", "/v1/disputes/{id}", p.DisputeRetrieveParams, one("dispute")),
        r(
            "POST",
            "/v1/disputes/{id}/close",
            p.DisputeCloseParams,
            done(lambda e, q, id: e.close_dispute(id)),
        ),
        r(
            "POST",
            "/v1/test_helpers/charges/{id}/dispute",
            _OpenDispute,
            done(lambda e, q, id: e.open_dispute(id, q)),
        ),
        r(
            "POST",
            "/v1/test_helpers/disputes/{id}/close",
            _CloseDispute,
            done(lambda e, q, id: e.close_dispute(id, q.get("status", "lost"))),
        ),
        # payment intents
        r(
            "POST",
            "/v1/payment_intents",
            p.PaymentIntentCreateParams,
            done(lambda e, q: e.create_payment_intent(q)),
        ),
        r(
            "GET",
            "/v1/payment_intents",
            p.PaymentIntentListParams,
            lambda e, q: e.list("payment_intent", q, _field_filter(q, "customer")),
        ),
        r("GET", "/v1/payment_intents/{id}", p.PaymentIntentRetrieveParams, one("payment_intent")),
        r(
            "POST",
            "/v1/payment_intents/{id}/confirm",
            p.PaymentIntentConfirmParams,
            done(lambda e, q, id: e.confirm_payment_intent(id, q)),
        ),
        r(
            "POST",
            "/v1/payment_intents/{id}/cancel",
            p.PaymentIntentCancelParams,
            done(lambda e, q, id: e.cancel_payment_intent(id, q)),
        ),
        # setup intents
        r(
            "POST",
            "/v1/setup_intents",
            p.SetupIntentCreateParams,
            done(lambda e, q: e.create_setup_intent(q)),
        ),
        r(
            "GET",
            "/v1/setup_intents",
            p.SetupIntentListParams,
            lambda e, q: e.list("setup_intent", q, _field_filter(q, "customer")),
        ),
        r("GET", "/v1/setup_intents/{id}", p.SetupIntentRetrieveParams, one("setup_intent")),
        r(
            "POST",
            "/v1/setup_intents/{id}/confirm",
            p.SetupIntentConfirmParams,
            done(lambda e, q, id: e.confirm_setup_intent(id, q)),
        ),
        # payment methods (read only: they are created by Checkout, intents and the portal)
        r("GET", "/v1/payment_methods/{id}", p.PaymentMethodRetrieveParams, one("payment_method")),
        # events
        r(
            "GET",
            "/v1/events",
            p.EventListParams,
            lambda e, q: e.list("event", q, _event_filter(q)),
        ),
        r("GET", "/v1/events/{id}", p.EventRetrieveParams, one("event")),
        # test clocks
        r(
            "POST",
            "/v1/test_helpers/test_clocks",
            th.TestClockCreateParams,
            done(lambda e, q: e.create_clock(q)),
        ),
        r(
            "GET",
            "/v1/test_helpers/test_clocks",
            th.TestClockListParams,
            lambda e, q: e.list_clocks(q),
        ),
        r(
            "GET",
            "/v1/test_helpers/test_clocks/{id}",
            th.TestClockRetrieveParams,
            lambda e, q, id: e.render(e.clock(id), _expand(q)),
        ),
        r(
            "DELETE",
            "/v1/test_helpers/test_clocks/{id}",
            th.TestClockDeleteParams,
            lambda e, q, id: e.delete_clock(id),
        ),
        r(
            "POST",
            "/v1/test_helpers/test_clocks/{id}/advance",
            th.TestClockAdvanceParams,
            done(lambda e, q, id: _advance(e, q, id)),
        ),
    ]


def _advance(engine: Engine, params: dict[str, Any], clock_id: str) -> dict[str, Any]:
    from tollbooth.sandbox.wire import as_int, required

    if "frozen_time" not in params:
        raise required("frozen_time")
    return engine.advance_clock(clock_id, as_int(params["frozen_time"], "frozen_time"))


def _field_filter(params: dict[str, Any], field: str) -> Callable[[dict[str, Any]], bool]:
    want = params.get(field)
    return lambda obj: want is None or obj.get(field) == want


def _portal_filter(params: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    active, default = params.get("active"), params.get("is_default")

    def keep(c: dict[str, Any]) -> bool:
        if active is not None and str(c["active"]).lower() != active:
            return False
        return default is None or str(c["is_default"]).lower() == default

    return keep


def _refund_filter(params: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    wanted = {k: params[k] for k in ("payment_intent", "charge") if k in params}  # Stripe's
    return lambda refund: all(refund.get(k) == v for k, v in wanted.items())


def _event_filter(params: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    single = params.get("type")
    several = params.get("types")

    def matches(pattern: str, value: str) -> bool:
        if pattern.endswith(".*"):
            return value.startswith(pattern[:-1])
        return pattern == value

    def keep(ev: dict[str, Any]) -> bool:
        if single is not None and not matches(single, ev["type"]):
            return False
        return several is None or any(matches(t, ev["type"]) for t in several)

    return keep


ROUTES = _routes()


def _unknown_error() -> StripeError:
    return StripeError(500, "An unknown error occurred in the sandbox.", type="api_error")


def _error_response(err: StripeError, request_id: str) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=_headers(request_id))


def _headers(request_id: str) -> dict[str, str]:
    return {"Request-Id": request_id, "Stripe-Version": API_VERSION}


def _authenticate(request: Request) -> None:
    auth = request.headers.get("authorization", "")
    scheme, _, credential = auth.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = credential.strip()
    elif scheme.lower() == "basic":
        import base64
        import binascii

        try:
            key = base64.b64decode(credential.strip()).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    if not key:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    if not (key.startswith("sk_test_") or key.startswith("rk_test_")) or len(key) > 255:
        shown = key[:8] + "*" * 4 + key[-4:] if len(key) > 12 else "****"
        raise StripeError(
            401,
            f"Invalid API Key provided: {shown}. The sandbox accepts test keys (sk_test_...).",
        )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise StripeError(413, "Request body too large.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise StripeError(413, "Request body too large.")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The request could not be decoded as UTF-8 form data.") from None
    return parse_form(pairs)


class Api:
    def __init__(self, engine: Engine, max_body_bytes: int) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.stalls = ApiStalls()
        self.keys_in_progress = KeysInProgress()

    async def __call__(self, request: Request) -> Response:
        request_id = new_id("req_", 14)
        try:
            _authenticate(request)
            method = request.method.upper()
            path = request.url.path.rstrip("/") or "/"
            body = await _read_body(request, self.max_body_bytes)
            params = _parse(request.url.query)
            if method == "POST" and body:
                ctype = request.headers.get("content-type", "")
                if "json" in ctype:
                    raise bad_request(
                        "Invalid request: the v1 API takes application/x-www-form-urlencoded "
                        "bodies."
                    )
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    raise bad_request("The request body is not valid UTF-8.") from None
                params.update(_parse(text))
            route, args = self._match(method, path)
            check_params(params, route.params)
            key = request.headers.get("idempotency-key") if method == "POST" else None
            if key is not None and (not key or len(key) > 255):
                raise bad_request("Idempotency-Key must be 1 to 255 characters.", "idempotency_key")
            with self.keys_in_progress.using(key):
                stall = self.stalls.take(method, path, after=False)
                if stall is not None:
                    await run_in_threadpool(stall.hold)
                    if stall.body is not None:
                        return Response(
                            stall.body, status_code=stall.status, media_type=stall.content_type
                        )
                    if stall.status:
                        raise StripeError(
                            stall.status,
                            "The sandbox was told to fail this request.",
                            type="api_error",
                        )
                status, payload, replayed = await run_in_threadpool(
                    self._run, route, params, args, method, path, key, request_id
                )
            stall = self.stalls.take(method, path, after=True)
            if stall is not None:
                await run_in_threadpool(stall.hold)
        except StripeError as err:
            return _error_response(err, request_id)
        except Exception:
            log.exception("sandbox request %s failed", request_id)
            return _error_response(_unknown_error(), request_id)
        headers = _headers(request_id)
        if key:
            headers["Idempotency-Key"] = key
            if replayed:
                headers["Idempotent-Replayed"] = "true"
        return Response(payload, status_code=status, media_type="application/json", headers=headers)

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        path_known = False
        for route in ROUTES:
            match = route.pattern.match(path)
            if match:
                path_known = True
                if route.method == method:
                    return route, match.groupdict()
        if path_known:
            raise StripeError(
                404, f"Unrecognized request URL ({method}: {path}). This method is not allowed."
            )
        raise StripeError(
            404,
            f"Unrecognized request URL ({method}: {path[:200]}). Please see "
            "https://stripe.com/docs or the sandbox section of the README.",
        )

    def _run(
        self,
        route: Route,
        params: dict[str, Any],
        args: dict[str, str],
        method: str,
        path: str,
        key: str | None,
        request_id: str,
    ) -> tuple[int, bytes, bool]:
        engine = self.engine
        engine.request.id = request_id
        engine.request.idempotency_key = key
        fingerprint = hashlib.sha256(
            json.dumps([method, path, params], sort_keys=True).encode()
        ).hexdigest()
        try:
            with engine.store.tx() as store:
                if key is not None:
                    now = time.time()
                    store.forget_idempotency_before(now - IDEMPOTENCY_TTL_SEC)
                    saved = store.idempotent_result(key)
                    if saved is not None:
                        if saved[0] != fingerprint:
                            raise StripeError(
                                400,
                                "Keys for idempotent requests can only be used with the same "
                                "parameters they were first used with. Try using a key other "
                                f"than '{key[:64]}' if you meant to execute a different request.",
                                type="idempotency_error",
                            )
                        return saved[1], saved[2].encode(), True
                try:
                    result = route.handler(engine, params, **args)
                except StripeError as err:
                    if err.commit and key is not None:
                        store.save_idempotent(
                            key, fingerprint, err.status, json.dumps(err.body()), time.time()
                        )
                    raise
                status, payload = 200, json.dumps(result)
                failed = self.stalls.take(method, path, after=True, failing=True)
                if failed is not None:  # handled and stored, then failed: Stripe saves that
                    status, payload = failed.status, json.dumps(_unknown_error().body())
                if key is not None:
                    store.save_idempotent(key, fingerprint, status, payload, time.time())
                return status, payload.encode(), False
        except StripeError:
            raise
        except Exception:
            if key is None:
                raise
            # Stripe saves the answer of a request it began executing, a 500 included: a retry
            # with this key gets the 500 back, not a second execution.
            log.exception("sandbox request %s failed", request_id)
            payload = json.dumps(_unknown_error().body())
            with engine.store.tx() as store:
                if store.idempotent_result(key) is None:
                    store.save_idempotent(key, fingerprint, 500, payload, time.time())
            return 500, payload.encode(), False
        finally:
            engine.request.id = None
            engine.request.idempotency_key = None
