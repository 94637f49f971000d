"""What a Stripe test-mode account does: the resources, their transitions and their events.

Every public method runs inside one store transaction (the caller opens it). Objects are kept
in Stripe's shape; keys starting with `_` are private state and never leave the sandbox.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tollbooth.sandbox.config import SandboxConfig
from tollbooth.sandbox.objects import (
    DECLINE_MESSAGES,
    DEFAULT_CARD,
    TEST_CARDS,
    TEST_PM_TOKENS,
    add_interval,
    list_envelope,
    luhn_ok,
    new_id,
    normalise_card,
    plan_from_price,
)
from tollbooth.sandbox.store import Store
from tollbooth.sandbox.wire import (
    StripeError,
    as_bool,
    as_enum,
    as_int,
    as_str,
    bad_request,
    merge_metadata,
    missing,
    required,
)

DEFAULT_CLOCK = "clock_default"
LIVE_STATUSES = ("active", "past_due", "trialing")

KIND_NAMES = {
    "customer": "customer",
    "product": "product",
    "price": "price",
    "checkout.session": "checkout.session",
    "subscription": "subscription",
    "invoice": "invoice",
    "payment_intent": "payment_intent",
    "setup_intent": "setup_intent",
    "payment_method": "PaymentMethod",
    "event": "event",
    "test_helpers.test_clock": "test_clock",
    "billing_portal.configuration": "billing portal configuration",
    "billing_portal.session": "billing portal session",
    "charge": "charge",
}

_LIST_URLS = {
    "customer": "/v1/customers",
    "product": "/v1/products",
    "price": "/v1/prices",
    "checkout.session": "/v1/checkout/sessions",
    "subscription": "/v1/subscriptions",
    "invoice": "/v1/invoices",
    "payment_intent": "/v1/payment_intents",
    "setup_intent": "/v1/setup_intents",
    "event": "/v1/events",
    "test_helpers.test_clock": "/v1/test_helpers/test_clocks",
    "billing_portal.configuration": "/v1/billing_portal/configurations",
}


# Fields that hold an id the API can expand into the object (None stays None).
EXPANDABLE = {
    "customer",
    "product",
    "price",
    "default_price",
    "subscription",
    "latest_invoice",
    "invoice",
    "payment_intent",
    "setup_intent",
    "payment_method",
    "default_payment_method",
    "latest_charge",
    "charge",
    "configuration",
    "test_clock",
    "latest_attempt",
    "pending_setup_intent",
}


def _created_filter(spec: Any) -> Callable[[dict[str, Any]], bool]:
    """`created=T` or `created[gt|gte|lt|lte]=T`, as Stripe's list endpoints take it."""
    if spec is None:
        return lambda _: True
    if not isinstance(spec, dict):
        exact = as_int(spec, "created")
        return lambda obj: obj.get("created") == exact
    ops = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    bounds = []
    for op, value in spec.items():
        if op not in ops:
            raise bad_request(
                f"Received unknown parameter: created[{op[:20]}]", f"created[{op[:20]}]"
            )
        bounds.append((ops[op], as_int(value, f"created[{op}]")))
    return lambda obj: all(fn(int(obj.get("created") or 0), v) for fn, v in bounds)


# Parameters the pinned API knows but the sandbox does not model: refused rather than ignored,
# so that a test never passes on behaviour the sandbox did not implement.
CHECKOUT_UNSUPPORTED = (
    ("discounts",),
    ("subscription_data", "trial_period_days"),
    ("subscription_data", "trial_end"),
    ("subscription_data", "billing_cycle_anchor"),
    ("automatic_tax", "enabled"),
    ("shipping_options",),
    ("optional_items",),
)


def _refuse_unsupported(params: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> None:
    for path in paths:
        node: Any = params
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node not in (None, "", "false", [], {}):
            name = path[0] + "".join(f"[{k}]" for k in path[1:])
            raise bad_request(f"The Stripe sandbox does not support `{name}`.", name)


def check_url(value: str, param: str) -> str:
    if not (value.startswith("https://") or value.startswith("http://")) or len(value) > 5000:
        raise bad_request("Not a valid URL", param, code="url_invalid")
    return value


def strip_private(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_private(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [strip_private(v) for v in value]
    return value


class Engine:
    def __init__(self, store: Store, config: SandboxConfig, wake: Callable[[], None]) -> None:
        self.store = store
        self.config = config
        self.wake = wake
        self.rng = random.Random(config.faults.seed)
        self.request = threading.local()

    # -- time -----------------------------------------------------------------------------------

    @staticmethod
    def wall() -> int:
        return int(time.time())

    def clock(self, clock_id: str) -> dict[str, Any]:
        clock = self.store.get(clock_id)
        if clock is None and clock_id == DEFAULT_CLOCK:
            now = self.wall()
            clock = {
                "id": DEFAULT_CLOCK,
                "object": "test_helpers.test_clock",
                "created": now,
                "deletes_after": now + 100 * 365 * 86400,
                "frozen_time": now,
                "livemode": False,
                "name": "Sandbox default clock (customers created without test_clock)",
                "status": "ready",
                "status_details": {},
            }
            self.store.put(clock)
        if clock is None or clock.get("deleted"):
            raise missing("test_clock", clock_id)
        if clock_id == DEFAULT_CLOCK:
            # The default clock never falls behind the wall clock; advancing moves it ahead.
            clock["frozen_time"] = max(int(clock["frozen_time"]), self.wall())
        return clock

    def now_for(self, customer: dict[str, Any] | None) -> int:
        clock_id = (customer or {}).get("test_clock") or DEFAULT_CLOCK
        return int(self.clock(clock_id)["frozen_time"])

    # -- events ---------------------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = self._event(event_type, obj, previous)
        if self.rng.random() < self.config.faults.twin:
            self._event(event_type, obj, previous)  # a second, distinct event for one change
        return event

    def _event(
        self, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        now = time.time()
        data: dict[str, Any] = {"object": strip_private(copy.deepcopy(obj))}
        if previous is not None:
            data["previous_attributes"] = strip_private(copy.deepcopy(previous))
        from tollbooth.sandbox import API_VERSION

        event: dict[str, Any] = {
            "id": new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(now),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1 if self.config.webhook_url else 0,
            "request": {
                "id": getattr(self.request, "id", None),
                "idempotency_key": getattr(self.request, "idempotency_key", None),
            },
            "type": event_type,
        }
        self.store.put(event)
        if self.config.webhook_url:
            self.store.enqueue(event["id"], now)
            self.wake()
        return event

    # -- generic access -------------------------------------------------------------------------

    def load(self, object_id: str, kind: str, param: str = "id") -> dict[str, Any]:
        obj = self.store.get(object_id) if isinstance(object_id, str) else None
        if obj is None or obj.get("object") != kind:
            raise missing(KIND_NAMES.get(kind, kind), str(object_id), param)
        return obj

    def render(self, obj: dict[str, Any], expand: list[str] | None = None) -> dict[str, Any]:
        out = strip_private(copy.deepcopy(obj))
        if out.get("object") == "event":
            out["pending_webhooks"] = self.store.pending_for(out["id"])
        for path in expand or []:
            self._expand(out, path.split("."), path)
        return out

    def _expand(self, node: Any, parts: list[str], full: str) -> None:
        if not parts:
            return
        key, rest = parts[0], parts[1:]
        if isinstance(node, list):
            for item in node:
                self._expand(item, parts, full)
            return
        if not isinstance(node, dict):
            raise bad_request(f"This property cannot be expanded ({full}).", "expand")
        if key == "line_items" and node.get("object") == "checkout.session":
            node[key] = self._session_line_items(node["id"], limit=100)
            self._expand(node[key], rest, full)
            return
        if key not in node:
            raise bad_request(f"This property cannot be expanded ({full}).", "expand")
        value = node[key]
        if isinstance(value, str):
            target = self.store.get(value)
            if target is None:
                raise bad_request(f"This property cannot be expanded ({full}).", "expand")
            node[key] = self.render(target)
            self._expand(node[key], rest, full)
        elif value is None and key in EXPANDABLE:
            return
        elif isinstance(value, dict | list) and rest:
            self._expand(value, rest, full)
        elif isinstance(value, dict) and "id" in value:
            return  # already expanded
        else:
            raise bad_request(f"This property cannot be expanded ({full}).", "expand")

    def list(
        self,
        kind: str,
        params: dict[str, Any],
        keep: Callable[[dict[str, Any]], bool] = lambda _: True,
        url: str | None = None,
    ) -> dict[str, Any]:
        limit = as_int(params.get("limit", "10"), "limit", minimum=1, maximum=100)
        in_range = _created_filter(params.get("created"))
        rows = [(seq, obj) for seq, obj in self.store.all(kind) if keep(obj) and in_range(obj)]
        after, before = params.get("starting_after"), params.get("ending_before")
        if after:
            seq = self.store.seq_of(as_str(after, "starting_after"))
            if seq is None:
                raise missing(KIND_NAMES.get(kind, kind), after, "starting_after")
            rows = [r for r in rows if r[0] < seq]
            page, more = rows[:limit], len(rows) > limit
        elif before:
            seq = self.store.seq_of(as_str(before, "ending_before"))
            if seq is None:
                raise missing(KIND_NAMES.get(kind, kind), before, "ending_before")
            rows = [r for r in rows if r[0] > seq]
            page, more = rows[-limit:], len(rows) > limit
        else:
            page, more = rows[:limit], len(rows) > limit
        expand = [
            p.removeprefix("data.") for p in params.get("expand", []) if p.startswith("data.")
        ]
        data = [self.render(obj, expand) for _, obj in page]
        return list_envelope(data, url or _LIST_URLS.get(kind, "/v1"), more)

    # -- customers ------------------------------------------------------------------------------

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        clock_id = params.get("test_clock")
        if clock_id is not None:
            self.clock(as_str(clock_id, "test_clock"))
            if clock_id == DEFAULT_CLOCK:
                clock_id = None  # the default clock is implied
        customer: dict[str, Any] = {
            "id": new_id("cus_", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": 0,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": new_id("", 8).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": clock_id,
        }
        customer["created"] = self.now_for(customer)
        self._apply_customer_fields(customer, params)
        self.store.put(customer)
        self.emit("customer.created", customer)
        pm_id = params.get("payment_method")
        if pm_id:
            pm = self._payment_method_from(as_str(pm_id, "payment_method"), "payment_method")
            self._attach(pm, customer)
        return customer

    def _apply_customer_fields(self, customer: dict[str, Any], params: dict[str, Any]) -> None:
        for field in ("email", "name", "description", "phone"):
            if field in params:
                value = as_str(params[field], field, max_len=512)
                customer[field] = value or None
        if "preferred_locales" in params:
            customer["preferred_locales"] = list(params["preferred_locales"] or [])
        if "metadata" in params:
            customer["metadata"] = merge_metadata(customer["metadata"], params["metadata"])
        settings = params.get("invoice_settings")
        if isinstance(settings, dict) and "default_payment_method" in settings:
            pm_id = settings["default_payment_method"]
            if pm_id:
                pm = self.load(pm_id, "payment_method", "invoice_settings[default_payment_method]")
                if pm.get("customer") != customer["id"]:
                    raise bad_request(
                        "The customer does not have a payment method with the ID "
                        f"{pm_id}. The payment method must be attached to the customer.",
                        "invoice_settings[default_payment_method]",
                        code="resource_missing",
                    )
                customer["invoice_settings"]["default_payment_method"] = pm_id
            else:
                customer["invoice_settings"]["default_payment_method"] = None

    def update_customer(self, customer_id: str, params: dict[str, Any]) -> dict[str, Any]:
        customer = self.customer(customer_id)
        before = copy.deepcopy(customer)
        self._apply_customer_fields(customer, params)
        self.store.put(customer)
        self._emit_updated("customer.updated", before, customer)
        return customer

    def customer(self, customer_id: str, param: str = "id") -> dict[str, Any]:
        customer = self.load(customer_id, "customer", param)
        if customer.get("deleted") and param != "id":
            raise missing("customer", customer_id, param)
        return customer

    def delete_customer(self, customer_id: str) -> dict[str, Any]:
        customer = self.customer(customer_id)
        if customer.get("deleted"):
            raise missing("customer", customer_id)
        for _, sub in self.store.all("subscription"):
            if sub["customer"] == customer_id and sub["status"] not in ("canceled",):
                self._cancel_now(sub, self.now_for(customer), why="cancellation_requested")
        self.emit("customer.deleted", customer)
        tombstone = {"id": customer_id, "object": "customer", "deleted": True}
        self.store.put(tombstone)
        return tombstone

    def list_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        email = params.get("email")
        clock = params.get("test_clock")

        def keep(c: dict[str, Any]) -> bool:
            if c.get("deleted"):
                return False
            if email is not None and c.get("email") != email:
                return False
            return clock is None or (c.get("test_clock") or DEFAULT_CLOCK) == clock

        return self.list("customer", params, keep)

    # -- products and prices --------------------------------------------------------------------

    def create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        if "name" not in params:
            raise required("name")
        now = self.wall()
        product_id = params.get("id")
        if product_id is not None:
            product_id = as_str(product_id, "id", max_len=200)
            if self.store.get(product_id) is not None:
                raise bad_request("Product already exists.", "id", code="resource_already_exists")
        product = {
            "id": product_id or new_id("prod_", 14),
            "object": "product",
            "active": True,
            "created": now,
            "default_price": None,
            "description": None,
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": {},
            "name": "",
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "type": "service",
            "unit_label": None,
            "updated": now,
            "url": None,
        }
        self._apply_product_fields(product, params)
        self.store.put(product)
        self.emit("product.created", product)
        default_price = params.get("default_price_data")
        if isinstance(default_price, dict):
            price = self.create_price({**default_price, "product": product["id"]})
            before = copy.deepcopy(product)
            product["default_price"] = price["id"]
            self.store.put(product)
            self._emit_updated("product.updated", before, product)
        return product

    def _apply_product_fields(self, product: dict[str, Any], params: dict[str, Any]) -> None:
        if "name" in params:
            name = as_str(params["name"], "name", max_len=250)
            if not name:
                raise bad_request("You must provide a non-empty name.", "name")
            product["name"] = name
        if "description" in params:
            product["description"] = as_str(params["description"], "description") or None
        if "active" in params:
            product["active"] = as_bool(params["active"], "active")
        if "metadata" in params:
            product["metadata"] = merge_metadata(product["metadata"], params["metadata"])
        if "default_price" in params:
            price_id = params["default_price"]
            if price_id:
                price = self.load(price_id, "price", "default_price")
                if price["product"] != product["id"]:
                    raise bad_request("The price must belong to this product.", "default_price")
            product["default_price"] = price_id or None
        for field in ("unit_label", "statement_descriptor", "url", "tax_code"):
            if field in params:
                product[field] = as_str(params[field], field) or None
        if "images" in params:
            product["images"] = list(params["images"] or [])

    def update_product(self, product_id: str, params: dict[str, Any]) -> dict[str, Any]:
        product = self.load(product_id, "product")
        before = copy.deepcopy(product)
        self._apply_product_fields(product, params)
        product["updated"] = max(self.wall(), product["updated"])
        self.store.put(product)
        self._emit_updated("product.updated", before, product)
        return product

    def list_products(self, params: dict[str, Any]) -> dict[str, Any]:
        active = params.get("active")
        ids = params.get("ids")
        want_active = as_bool(active, "active") if active is not None else None

        def keep(p: dict[str, Any]) -> bool:
            if want_active is not None and p["active"] != want_active:
                return False
            return ids is None or p["id"] in ids

        return self.list("product", params, keep)

    def create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        if "currency" not in params:
            raise required("currency")
        currency = as_str(params["currency"], "currency").lower()
        if len(currency) != 3 or not currency.isalpha():
            raise bad_request(f"Invalid currency: {currency[:10]}", "currency")
        if "unit_amount" in params:
            amount = as_int(params["unit_amount"], "unit_amount", minimum=0, maximum=99999999)
        elif "unit_amount_decimal" in params:
            text = as_str(params["unit_amount_decimal"], "unit_amount_decimal")
            if not text.isdigit():
                raise bad_request(
                    "The sandbox supports whole unit_amount_decimal values only.",
                    "unit_amount_decimal",
                )
            amount = int(text)
        else:
            raise required("unit_amount")
        if "product" in params:
            product = self.load(as_str(params["product"], "product"), "product", "product")
        elif isinstance(params.get("product_data"), dict):
            data = params["product_data"]
            product = self.create_product(
                {k: v for k, v in data.items() if k in ("name", "metadata", "active", "id")}
            )
        else:
            raise required("product")
        recurring = None
        if isinstance(params.get("recurring"), dict):
            rec = params["recurring"]
            if "interval" not in rec:
                raise required("recurring[interval]")
            recurring = {
                "interval": as_enum(
                    rec["interval"], "recurring[interval]", ("day", "week", "month", "year")
                ),
                "interval_count": as_int(
                    rec.get("interval_count", "1"),
                    "recurring[interval_count]",
                    minimum=1,
                    maximum=36,
                ),
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            }
        price = {
            "id": new_id("price_"),
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": self.wall(),
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": product["id"],
            "recurring": recurring,
            "tax_behavior": params.get("tax_behavior", "unspecified"),
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": amount,
            "unit_amount_decimal": str(amount),
        }
        self._apply_price_fields(price, params)
        self.store.put(price)
        self.emit("price.created", price)
        return price

    def _apply_price_fields(self, price: dict[str, Any], params: dict[str, Any]) -> None:
        if "active" in params:
            price["active"] = as_bool(params["active"], "active")
        if "nickname" in params:
            price["nickname"] = as_str(params["nickname"], "nickname") or None
        if "metadata" in params:
            price["metadata"] = merge_metadata(price["metadata"], params["metadata"])
        if "lookup_key" in params:
            key = as_str(params["lookup_key"], "lookup_key", max_len=200) or None
            transfer = as_bool(params.get("transfer_lookup_key", "false"), "transfer_lookup_key")
            if key:
                for _, other in self.store.all("price"):
                    if other["id"] != price["id"] and other.get("lookup_key") == key:
                        if not transfer:
                            raise bad_request(
                                f"A price (`{other['id']}`) already uses that lookup key.",
                                "lookup_key",
                            )
                        before = copy.deepcopy(other)
                        other["lookup_key"] = None
                        self.store.put(other)
                        self._emit_updated("price.updated", before, other)
            price["lookup_key"] = key

    def update_price(self, price_id: str, params: dict[str, Any]) -> dict[str, Any]:
        price = self.load(price_id, "price")
        before = copy.deepcopy(price)
        self._apply_price_fields(price, params)
        self.store.put(price)
        self._emit_updated("price.updated", before, price)
        return price

    def list_prices(self, params: dict[str, Any]) -> dict[str, Any]:
        keys = params.get("lookup_keys")
        if keys is not None and not isinstance(keys, list):
            raise bad_request("Invalid array", "lookup_keys")
        product = params.get("product")
        active = params.get("active")
        want_active = as_bool(active, "active") if active is not None else None
        kind = params.get("type")
        currency = params.get("currency")

        def keep(p: dict[str, Any]) -> bool:
            if keys is not None and p.get("lookup_key") not in keys:
                return False
            if product is not None and p["product"] != product:
                return False
            if want_active is not None and p["active"] != want_active:
                return False
            if kind is not None and p["type"] != kind:
                return False
            return currency is None or p["currency"] == currency

        return self.list("price", params, keep)

    # -- payment methods and charges ------------------------------------------------------------

    def card_payment_method(
        self, raw_number: str, *, email: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        number = normalise_card(raw_number)
        if not 12 <= len(number) <= 19 or not luhn_ok(number):
            raise StripeError(
                402,
                "Your card number is incorrect.",
                type="card_error",
                code="incorrect_number",
                param="number",
            )
        card = TEST_CARDS.get(number)
        if card is None:
            raise StripeError(
                402,
                "Your card was declined. Your request was in test mode, but used a non test "
                "(live) card. For a list of valid test cards, visit: "
                "https://stripe.com/docs/testing.",
                type="card_error",
                code="card_declined",
                extra={"decline_code": "live_mode_test_card"},
            )
        pm = {
            "id": new_id("pm_"),
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": email,
                "name": name,
                "phone": None,
                "tax_id": None,
            },
            "card": {
                "brand": card.brand,
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "US",
                "display_brand": card.brand,
                "exp_month": 12,
                "exp_year": 2034,
                "fingerprint": new_id("", 16),
                "funding": "credit",
                "last4": number[-4:],
                "networks": {"available": [card.brand], "preferred": None},
                "wallet": None,
            },
            "created": self.wall(),
            "customer": None,
            "livemode": False,
            "metadata": {},
            "type": "card",
            "_behaviour": card.behaviour,
            "_decline_code": card.decline_code,
        }
        self.store.put(pm)
        return pm

    def _payment_method_from(self, value: str, param: str) -> dict[str, Any]:
        if value in TEST_PM_TOKENS:
            return self.card_payment_method(TEST_PM_TOKENS[value])
        return self.load(value, "payment_method", param)

    def _attach(self, pm: dict[str, Any], customer: dict[str, Any]) -> None:
        if pm.get("customer") == customer["id"]:
            return
        if pm.get("customer"):
            raise bad_request(
                "The payment method you provided has already been attached to a customer.",
                "payment_method",
            )
        pm["customer"] = customer["id"]
        self.store.put(pm)
        self.emit("payment_method.attached", pm)

    def _set_default_pm(self, customer: dict[str, Any], pm: dict[str, Any]) -> None:
        if customer["invoice_settings"]["default_payment_method"] == pm["id"]:
            return
        before = copy.deepcopy(customer)
        customer["invoice_settings"]["default_payment_method"] = pm["id"]
        self.store.put(customer)
        self._emit_updated("customer.updated", before, customer)

    def _charge_outcome(self, pm: dict[str, Any] | None, off_session: bool) -> str | None:
        """None when the charge succeeds, else the decline code."""
        if pm is None:
            return "generic_decline"
        behaviour = pm.get("_behaviour", "ok")
        if behaviour == "decline" or (behaviour == "fail_later" and off_session):
            return pm.get("_decline_code") or "generic_decline"
        return None

    def _card_error(self, decline: str, **extra: Any) -> StripeError:
        return StripeError(
            402,
            DECLINE_MESSAGES.get(decline, "Your card was declined."),
            type="card_error",
            code="card_declined",
            extra={"decline_code": decline, **extra},
            commit=True,
        )

    def _new_payment_intent(
        self,
        amount: int,
        currency: str,
        customer: dict[str, Any] | None,
        now: int,
        *,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        pi_id = new_id("pi_")
        return {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{new_id('', 24)}",
            "confirmation_method": "automatic",
            "created": now,
            "currency": currency,
            "customer": customer["id"] if customer else None,
            "description": description,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata or {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": None,
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "source": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "requires_payment_method",
            "transfer_data": None,
            "transfer_group": None,
        }

    def _confirm_payment(
        self, pi: dict[str, Any], pm: dict[str, Any], now: int, off_session: bool
    ) -> str | None:
        """Charge `pm` for the intent; returns the decline code or None. Emits the events."""
        decline = self._charge_outcome(pm, off_session)
        charge = {
            "id": new_id("ch_"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0 if decline else pi["amount"],
            "amount_refunded": 0,
            "captured": not decline,
            "created": now,
            "currency": pi["currency"],
            "customer": pi["customer"],
            "description": pi["description"],
            "failure_code": "card_declined" if decline else None,
            "failure_message": DECLINE_MESSAGES.get(decline or "", None) if decline else None,
            "livemode": False,
            "metadata": pi["metadata"],
            "outcome": {
                "network_status": "declined_by_network" if decline else "approved_by_network",
                "reason": decline,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline."
                if decline
                else "Payment complete.",
                "type": "issuer_declined" if decline else "authorized",
            },
            "paid": not decline,
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "refunded": False,
            "status": "failed" if decline else "succeeded",
        }
        self.store.put(charge)
        pi["payment_method"] = pm["id"]
        pi["latest_charge"] = charge["id"]
        if decline:
            pi["status"] = "requires_payment_method"
            pi["last_payment_error"] = {
                "charge": charge["id"],
                "code": "card_declined",
                "decline_code": decline,
                "message": DECLINE_MESSAGES.get(decline, "Your card was declined."),
                "payment_method": strip_private(copy.deepcopy(pm)),
                "type": "card_error",
            }
            self.store.put(pi)
            self.emit("charge.failed", charge)
            self.emit("payment_intent.payment_failed", pi)
        else:
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            pi["last_payment_error"] = None
            self.store.put(pi)
            self.emit("charge.succeeded", charge)
            self.emit("payment_intent.succeeded", pi)
        return decline

    # -- payment intents ------------------------------------------------------------------------

    def create_payment_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        if "amount" not in params:
            raise required("amount")
        if "currency" not in params:
            raise required("currency")
        amount = as_int(params["amount"], "amount", minimum=1, maximum=99999999)
        currency = as_str(params["currency"], "currency").lower()
        customer = self.customer(params["customer"], "customer") if params.get("customer") else None
        pi = self._new_payment_intent(
            amount,
            currency,
            customer,
            self.now_for(customer),
            description=as_str(params.get("description", ""), "description") or None,
            metadata=merge_metadata({}, params.get("metadata", {})),
        )
        if params.get("receipt_email"):
            pi["receipt_email"] = as_str(params["receipt_email"], "receipt_email")
        if params.get("setup_future_usage"):
            pi["setup_future_usage"] = as_enum(
                params["setup_future_usage"], "setup_future_usage", ("on_session", "off_session")
            )
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
            pi["payment_method"] = pm["id"]
            pi["status"] = "requires_confirmation"
        self.store.put(pi)
        self.emit("payment_intent.created", pi)
        if as_bool(params.get("confirm", "false"), "confirm"):
            off = as_bool(params.get("off_session", "false"), "off_session")
            return self.confirm_payment_intent(pi["id"], {}, off_session=off)
        return pi

    def confirm_payment_intent(
        self, pi_id: str, params: dict[str, Any], off_session: bool | None = None
    ) -> dict[str, Any]:
        pi = self.load(pi_id, "payment_intent")
        if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise bad_request(
                f"You cannot confirm this PaymentIntent because it has a status of {pi['status']}.",
                code="payment_intent_unexpected_state",
            )
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
        elif pi.get("payment_method"):
            pm = self.load(pi["payment_method"], "payment_method")
        else:
            raise bad_request(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_method",
                code="payment_intent_unexpected_state",
            )
        if off_session is None:
            off_session = as_bool(params.get("off_session", "false"), "off_session")
        customer = self.store.get(pi["customer"]) if pi.get("customer") else None
        decline = self._confirm_payment(pi, pm, self.now_for(customer), off_session)
        if decline:
            raise self._card_error(
                decline, payment_intent=self.render(pi), charge=pi["latest_charge"]
            )
        if customer and pi.get("setup_future_usage"):
            self._attach(pm, customer)
        return pi

    # -- setup intents --------------------------------------------------------------------------

    def _new_setup_intent(self, customer: dict[str, Any] | None, now: int) -> dict[str, Any]:
        seti_id = new_id("seti_")
        return {
            "id": seti_id,
            "object": "setup_intent",
            "application": None,
            "automatic_payment_methods": None,
            "cancellation_reason": None,
            "client_secret": f"{seti_id}_secret_{new_id('', 24)}",
            "created": now,
            "customer": customer["id"] if customer else None,
            "description": None,
            "flow_directions": None,
            "last_setup_error": None,
            "latest_attempt": None,
            "livemode": False,
            "mandate": None,
            "metadata": {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "single_use_mandate": None,
            "status": "requires_payment_method",
            "usage": "off_session",
        }

    def create_setup_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = self.customer(params["customer"], "customer") if params.get("customer") else None
        seti = self._new_setup_intent(customer, self.now_for(customer))
        if "metadata" in params:
            seti["metadata"] = merge_metadata({}, params["metadata"])
        if "description" in params:
            seti["description"] = as_str(params["description"], "description") or None
        if "usage" in params:
            seti["usage"] = as_enum(params["usage"], "usage", ("on_session", "off_session"))
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
            seti["payment_method"] = pm["id"]
            seti["status"] = "requires_confirmation"
        self.store.put(seti)
        self.emit("setup_intent.created", seti)
        if as_bool(params.get("confirm", "false"), "confirm"):
            return self.confirm_setup_intent(seti["id"], {})
        return seti

    def confirm_setup_intent(self, seti_id: str, params: dict[str, Any]) -> dict[str, Any]:
        seti = self.load(seti_id, "setup_intent")
        if seti["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise bad_request(
                f"You cannot confirm this SetupIntent because it has a status of {seti['status']}.",
                code="setup_intent_unexpected_state",
            )
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
        elif seti.get("payment_method"):
            pm = self.load(seti["payment_method"], "payment_method")
        else:
            raise bad_request(
                "You cannot confirm this SetupIntent because it's missing a payment method.",
                "payment_method",
                code="setup_intent_unexpected_state",
            )
        seti["payment_method"] = pm["id"]
        if pm.get("_behaviour") == "decline":
            seti["status"] = "requires_payment_method"
            seti["last_setup_error"] = {
                "code": "card_declined",
                "decline_code": pm.get("_decline_code"),
                "message": "Your card was declined.",
                "type": "card_error",
            }
            self.store.put(seti)
            self.emit("setup_intent.setup_failed", seti)
            raise self._card_error(
                pm.get("_decline_code") or "generic_decline", setup_intent=self.render(seti)
            )
        seti["status"] = "succeeded"
        seti["last_setup_error"] = None
        self.store.put(seti)
        if seti.get("customer"):
            self._attach(pm, self.customer(seti["customer"], "customer"))
        self.emit("setup_intent.succeeded", seti)
        return seti

    # -- checkout sessions ----------------------------------------------------------------------

    def create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if "mode" not in params:
            raise required("mode")
        mode = as_enum(params["mode"], "mode", ("payment", "subscription", "setup"))
        _refuse_unsupported(params, CHECKOUT_UNSUPPORTED)
        ui_mode = params.get("ui_mode", "hosted")
        if ui_mode != "hosted":
            raise bad_request(
                "The sandbox serves hosted Checkout only (ui_mode=hosted).", "ui_mode"
            )
        customer = None
        if params.get("customer"):
            customer = self.customer(as_str(params["customer"], "customer"), "customer")
            if params.get("customer_email"):
                raise bad_request(
                    "You may only specify one of these parameters: customer, customer_email.",
                    "customer_email",
                )
        items = params.get("line_items")
        lines: list[dict[str, Any]] = []
        if mode == "setup":
            if items:
                raise bad_request("You cannot pass `line_items` in `setup` mode.", "line_items")
        else:
            if not isinstance(items, list) or not items:
                raise required("line_items")
            for i, item in enumerate(items):
                lines.append(self._checkout_line(item, i, mode))
            currencies = {line["currency"] for line in lines}
            if len(currencies) > 1:
                raise bad_request("All line items must use the same currency.", "line_items")
            if mode == "subscription":
                recurring = [ln["price"]["recurring"] for ln in lines if ln["price"]["recurring"]]
                if not recurring:
                    raise bad_request(
                        "You must provide at least one recurring price in `subscription` mode "
                        "when using prices.",
                        "line_items",
                    )
                cadence = {(r["interval"], r["interval_count"]) for r in recurring}
                if len(cadence) > 1:
                    raise bad_request(
                        "Checkout does not support multiple prices with different billing "
                        "intervals.",
                        "line_items",
                    )
            elif any(ln["price"]["recurring"] for ln in lines):
                raise bad_request(
                    "You specified `payment` mode but passed a recurring price. Either switch to "
                    "`subscription` mode or use only one-time prices.",
                    "line_items",
                )
        currency = lines[0]["currency"] if lines else params.get("currency")
        total = sum(ln["amount_total"] for ln in lines)
        now = self.now_for(customer)
        session_id = new_id("cs_test_", 58)
        metadata = merge_metadata({}, params.get("metadata", {}))
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": {"enabled": False},
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total if lines else None,
            "amount_total": total if lines else None,
            "automatic_tax": {
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "billing_address_collection": params.get("billing_address_collection"),
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "client_secret": None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": customer["id"] if customer else None,
            "customer_creation": None
            if customer
            else (
                "always" if mode != "payment" else params.get("customer_creation", "if_required")
            ),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "discounts": [],
            "expires_at": now + 24 * 3600,
            "invoice": None,
            "invoice_creation": {"enabled": False, "invoice_data": None}
            if mode == "payment"
            else None,
            "livemode": False,
            "locale": params.get("locale"),
            "metadata": metadata,
            "mode": mode,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": params.get("payment_method_collection", "always"),
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": params.get("submit_type"),
            "subscription": None,
            "success_url": params.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"{self.config.base_url}/sandbox/checkout/{session_id}",
            "_line_items": lines,
            "_subscription_data": params.get("subscription_data") or {},
            "_payment_intent_data": params.get("payment_intent_data") or {},
            "_setup_intent_data": params.get("setup_intent_data") or {},
        }
        for field in ("success_url", "cancel_url", "client_reference_id", "customer_email"):
            if session[field] is not None:
                session[field] = as_str(session[field], field, max_len=5000)
        for field in ("success_url", "cancel_url"):
            if session[field] is not None:
                check_url(session[field], field)
        if params.get("expires_at"):
            expires = as_int(params["expires_at"], "expires_at")
            if not now + 1800 <= expires <= now + 24 * 3600:
                raise bad_request(
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                    "Checkout Session creation.",
                    "expires_at",
                )
            session["expires_at"] = expires
        self.store.put(session)
        return session

    def _checkout_line(self, item: Any, i: int, mode: str) -> dict[str, Any]:
        param = f"line_items[{i}]"
        if not isinstance(item, dict):
            raise bad_request("Invalid line item", param)
        if item.get("price"):
            price = self.load(as_str(item["price"], f"{param}[price]"), "price", f"{param}[price]")
            if not price["active"]:
                raise bad_request(
                    f"The price specified ({price['id']}) is inactive. This field only accepts "
                    "active prices.",
                    f"{param}[price]",
                )
        elif isinstance(item.get("price_data"), dict):
            data = item["price_data"]
            spec = {k: v for k, v in data.items() if k != "product_data"}
            if "product_data" in data:
                spec["product_data"] = data["product_data"]
            price = self.create_price(spec)
        else:
            raise required(f"{param}[price]")
        if "quantity" not in item:
            raise required(f"{param}[quantity]")
        quantity = as_int(item["quantity"], f"{param}[quantity]", minimum=1, maximum=999999)
        product = self.load(price["product"], "product")
        amount = price["unit_amount"] * quantity
        return {
            "id": new_id("li_"),
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": amount,
            "amount_tax": 0,
            "amount_total": amount,
            "currency": price["currency"],
            "description": product["name"],
            "metadata": {},
            "price": strip_private(price),
            "quantity": quantity,
        }

    def _session_line_items(self, session_id: str, limit: int = 10) -> dict[str, Any]:
        session = self.load(session_id, "checkout.session")
        lines = session.get("_line_items", [])
        return list_envelope(
            copy.deepcopy(lines[:limit]),
            f"/v1/checkout/sessions/{session_id}/line_items",
            len(lines) > limit,
        )

    def list_line_items(self, session_id: str, params: dict[str, Any]) -> dict[str, Any]:
        limit = as_int(params.get("limit", "10"), "limit", minimum=1, maximum=100)
        session = self.load(session_id, "checkout.session")
        lines = session.get("_line_items", [])
        after = params.get("starting_after")
        if after:
            ids = [ln["id"] for ln in lines]
            if after not in ids:
                raise missing("line item", after, "starting_after")
            lines = lines[ids.index(after) + 1 :]
        envelope = list_envelope(
            copy.deepcopy(lines[:limit]),
            f"/v1/checkout/sessions/{session_id}/line_items",
            len(lines) > limit,
        )
        for path in params.get("expand", []):
            if path.startswith("data."):
                for line in envelope["data"]:
                    self._expand(line, path.removeprefix("data.").split("."), path)
        return envelope

    def list_checkout_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        filters = {
            k: params[k]
            for k in ("customer", "payment_intent", "subscription", "status")
            if k in params
        }

        def keep(s: dict[str, Any]) -> bool:
            return all(s.get(k) == v for k, v in filters.items())

        return self.list("checkout.session", params, keep)

    def expire_checkout_session(self, session_id: str) -> dict[str, Any]:
        session = self.load(session_id, "checkout.session")
        if session["status"] != "open":
            raise StripeError(
                400, 'Only Checkout Sessions with a status in ["open"] can be expired.'
            )
        session["status"] = "expired"
        session["url"] = None
        self.store.put(session)
        self.emit("checkout.session.expired", session)
        return session

    def complete_checkout_session(
        self,
        session_id: str,
        card_number: str = DEFAULT_CARD,
        *,
        email: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Pay (or save the card) as the hosted page does. A decline raises a 402 and commits."""
        session = self.load(session_id, "checkout.session")
        if session["status"] != "open":
            raise bad_request(
                f"This Checkout Session is no longer open (status: {session['status']}).",
                code="checkout_session_not_open",
            )
        customer = self.store.get(session["customer"]) if session["customer"] else None
        email = email or (customer or {}).get("email") or session.get("customer_email")
        email = email or "sandbox@example.com"
        mode = session["mode"]
        pm = self.card_payment_method(card_number, email=email, name=name)
        decline = self._charge_outcome(pm, off_session=False)
        if decline and mode == "payment":
            # The failed attempt is recorded (a PaymentIntent and its events); nothing else is.
            self._complete_payment(session, customer, pm, self.now_for(customer))
        if decline:
            # No customer, subscription or saved card comes out of a declined attempt.
            raise self._card_error(
                decline, payment_method=strip_private(copy.deepcopy(pm))
            ).rolled_back()
        if customer is None and (mode != "payment" or session["customer_creation"] == "always"):
            customer = self.create_customer({"email": email, **({"name": name} if name else {})})
            session["customer"] = customer["id"]
        now = self.now_for(customer)
        if mode == "payment":
            self._complete_payment(session, customer, pm, now)
        elif mode == "subscription":
            self._complete_subscription(session, customer, pm, now)  # type: ignore[arg-type]
        else:
            self._complete_setup(session, customer, pm, now)  # type: ignore[arg-type]
        session["status"] = "complete"
        session["url"] = None
        session["customer_details"] = {
            "address": None,
            "business_name": None,
            "email": email,
            "individual_name": None,
            "name": name,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }
        if mode != "setup":
            session["payment_status"] = "paid"
        self.store.put(session)
        self.emit("checkout.session.completed", session)
        return session

    def _decline_on_page(
        self, session: dict[str, Any], pm: dict[str, Any], decline: str, pi: dict[str, Any] | None
    ) -> StripeError:
        extra: dict[str, Any] = {"payment_method": strip_private(copy.deepcopy(pm))}
        if pi is not None:
            extra["payment_intent"] = self.render(pi)
        return self._card_error(decline, **extra)

    def _complete_payment(
        self,
        session: dict[str, Any],
        customer: dict[str, Any] | None,
        pm: dict[str, Any],
        now: int,
    ) -> None:
        data = session["_payment_intent_data"]
        earlier = self.store.get(session["payment_intent"]) if session["payment_intent"] else None
        if earlier is not None and earlier["status"] == "requires_payment_method":
            pi = earlier  # a retry after a decline reuses the session's PaymentIntent
            pi["customer"] = customer["id"] if customer else pi["customer"]
        else:
            pi = self._new_payment_intent(
                session["amount_total"],
                session["currency"],
                customer,
                now,
                description=data.get("description"),
                metadata=merge_metadata({}, data.get("metadata", {})),
            )
            if data.get("setup_future_usage"):
                pi["setup_future_usage"] = data["setup_future_usage"]
            self.store.put(pi)
            self.emit("payment_intent.created", pi)
        decline = self._confirm_payment(pi, pm, now, off_session=False)
        session["payment_intent"] = pi["id"]
        if decline:
            self.store.put(session)
            raise self._decline_on_page(session, pm, decline, pi)
        if customer is not None:
            self._attach(pm, customer)

    def _complete_setup(
        self, session: dict[str, Any], customer: dict[str, Any], pm: dict[str, Any], now: int
    ) -> None:
        seti = self._new_setup_intent(customer, now)
        seti["metadata"] = merge_metadata({}, session["_setup_intent_data"].get("metadata", {}))
        seti["payment_method"] = pm["id"]
        self.store.put(seti)
        self.emit("setup_intent.created", seti)
        seti["status"] = "succeeded"
        self.store.put(seti)
        self._attach(pm, customer)
        self.emit("setup_intent.succeeded", seti)
        session["setup_intent"] = seti["id"]

    def _complete_subscription(
        self, session: dict[str, Any], customer: dict[str, Any], pm: dict[str, Any], now: int
    ) -> None:
        self._attach(pm, customer)
        self._set_default_pm(customer, pm)
        lines = session["_line_items"]
        recurring = [ln for ln in lines if ln["price"]["recurring"]]
        one_time = [ln for ln in lines if not ln["price"]["recurring"]]
        data = session["_subscription_data"]
        sub_id = new_id("sub_")
        rec = recurring[0]["price"]["recurring"]
        period_end = add_interval(now, rec["interval"], rec["interval_count"], now)
        items = [
            self._sub_item(sub_id, ln["price"], ln["quantity"], now, period_end) for ln in recurring
        ]
        sub: dict[str, Any] = {
            "id": sub_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": now,
            "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
            "billing_thresholds": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": now,
            "currency": session["currency"],
            "customer": customer["id"],
            "days_until_due": None,
            "default_payment_method": pm["id"],
            "default_source": None,
            "default_tax_rates": [],
            "description": data.get("description"),
            "discounts": [],
            "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": list_envelope(items, f"/v1/subscription_items?subscription={sub_id}"),
            "latest_invoice": None,
            "livemode": False,
            "metadata": merge_metadata({}, data.get("metadata", {})),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": now,
            "status": "incomplete",
            "test_clock": customer.get("test_clock"),
            "transfer_data": None,
            "trial_end": None,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None,
        }
        sub["items"]["total_count"] = len(items)
        invoice = self._draft_invoice(sub, customer, now, now, period_end, "subscription_create")
        for line in one_time:
            self._invoice_line(invoice, line["price"], line["quantity"], now, now, None, None)
        sub["latest_invoice"] = invoice["id"]
        self.store.put(sub)
        self.emit("customer.subscription.created", sub)
        self._finalize_invoice(invoice, now)
        paid = self._pay_invoice(invoice, customer, pm, now, off_session=False)
        before = copy.deepcopy(sub)
        sub["status"] = "active" if paid else "incomplete"
        self.store.put(sub)
        self._emit_updated("customer.subscription.updated", before, sub)
        session["subscription"] = sub_id
        session["invoice"] = invoice["id"]

    def _sub_item(
        self, sub_id: str, price: dict[str, Any], quantity: int, start: int, end: int
    ) -> dict[str, Any]:
        return {
            "id": new_id("si_", 14),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": start,
            "current_period_end": end,
            "current_period_start": start,
            "discounts": [],
            "metadata": {},
            "plan": plan_from_price(price),
            "price": strip_private(copy.deepcopy(price)),
            "quantity": quantity,
            "subscription": sub_id,
            "tax_rates": [],
        }

    # -- invoices -------------------------------------------------------------------------------

    def _draft_invoice(
        self,
        sub: dict[str, Any],
        customer: dict[str, Any],
        now: int,
        period_start: int,
        period_end: int,
        reason: str,
        invoice_period: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        # The invoice's own period is the one that just ended (empty for a first invoice);
        # its lines carry the period being paid for.
        invoice_period = invoice_period or (now, now)
        inv_id = new_id("in_")
        invoice: dict[str, Any] = {
            "id": inv_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "Tollbooth Sandbox",
            "account_tax_ids": None,
            "amount_due": 0,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": None,
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "confirmation_secret": None,
            "created": now,
            "currency": sub["currency"],
            "custom_fields": None,
            "customer": customer["id"],
            "customer_address": None,
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "customer_phone": None,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": None,
            "ending_balance": None,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": list_envelope([], f"/v1/invoices/{inv_id}/lines"),
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": {
                "quote_details": None,
                "subscription_details": {
                    "metadata": copy.deepcopy(sub["metadata"]),
                    "subscription": sub["id"],
                    "subscription_proration_date": None,
                },
                "type": "subscription_details",
            },
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "payments": list_envelope([], f"/v1/invoice_payments?invoice={inv_id}"),
            "period_end": invoice_period[1],
            "period_start": invoice_period[0],
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "test_clock": customer.get("test_clock"),
            "threshold_reason": None,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": None,
        }
        for item in sub["items"]["data"]:
            self._invoice_line(
                invoice, item["price"], item["quantity"], period_start, period_end, sub, item
            )
        self.store.put(invoice)
        self.emit("invoice.created", invoice)
        return invoice

    def _invoice_line(
        self,
        invoice: dict[str, Any],
        price: dict[str, Any],
        quantity: int,
        start: int,
        end: int,
        sub: dict[str, Any] | None,
        item: dict[str, Any] | None,
    ) -> None:
        amount = price["unit_amount"] * quantity
        product = self.store.get(price["product"]) or {"name": price["product"]}
        line = {
            "id": new_id("il_"),
            "object": "line_item",
            "amount": amount,
            "currency": price["currency"],
            "description": f"{quantity} × {product['name']}",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice["id"],
            "livemode": False,
            "metadata": {},
            "parent": {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                }
                if sub and item
                else None,
                "type": "subscription_item_details" if sub and item else "invoice_item_details",
            },
            "period": {"end": end, "start": start},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            "quantity": quantity,
            "quantity_decimal": str(quantity),
            "subtotal": amount,
            "taxes": [],
        }
        invoice["lines"]["data"].append(line)
        invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
        total = sum(ln["amount"] for ln in invoice["lines"]["data"])
        for field in ("subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax"):
            invoice[field] = total
        invoice["amount_due"] = total
        invoice["amount_remaining"] = total

    def _finalize_invoice(self, invoice: dict[str, Any], now: int) -> None:
        customer = self.store.get(invoice["customer"]) or {}
        if customer and not customer.get("deleted"):
            seq = int(customer.get("next_invoice_sequence", 1))
            invoice["number"] = f"{customer['invoice_prefix']}-{seq:04d}"
            customer["next_invoice_sequence"] = seq + 1
            self.store.put(customer)
        invoice["status"] = "open"
        invoice["effective_at"] = now
        invoice["status_transitions"]["finalized_at"] = now
        invoice["ending_balance"] = 0
        invoice["hosted_invoice_url"] = f"{self.config.base_url}/sandbox/invoices/{invoice['id']}"
        self.store.put(invoice)
        self.emit("invoice.finalized", invoice)

    def _pay_invoice(
        self,
        invoice: dict[str, Any],
        customer: dict[str, Any],
        pm: dict[str, Any] | None,
        now: int,
        off_session: bool,
    ) -> bool:
        pi = self._new_payment_intent(
            invoice["amount_due"],
            invoice["currency"],
            customer,
            now,
            description="Subscription creation"
            if invoice["billing_reason"] == "subscription_create"
            else "Subscription update",
        )
        self.store.put(pi)
        self.emit("payment_intent.created", pi)
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if pm is None:
            decline: str | None = "generic_decline"
            pi["last_payment_error"] = {
                "code": "payment_method_missing",
                "message": "The customer has no default payment method.",
                "type": "invalid_request_error",
            }
            self.store.put(pi)
            self.emit("payment_intent.payment_failed", pi)
        else:
            decline = self._confirm_payment(pi, pm, now, off_session)
        payment = {
            "id": new_id("inpay_"),
            "object": "invoice_payment",
            "amount_paid": 0 if decline else invoice["amount_due"],
            "amount_requested": invoice["amount_due"],
            "created": now,
            "currency": invoice["currency"],
            "invoice": invoice["id"],
            "is_default": True,
            "livemode": False,
            "payment": {"payment_intent": pi["id"], "type": "payment_intent"},
            "status": "open" if decline else "paid",
            "status_transitions": {"canceled_at": None, "paid_at": None if decline else now},
        }
        for existing in invoice["payments"]["data"]:
            existing["is_default"] = False
        invoice["payments"]["data"].insert(0, payment)
        invoice["payments"]["total_count"] = len(invoice["payments"]["data"])
        if decline:
            invoice["next_payment_attempt"] = None
            self.store.put(invoice)
            self.emit("invoice.payment_failed", invoice)
            return False
        invoice["status"] = "paid"
        invoice["amount_paid"] = invoice["amount_due"]
        invoice["amount_remaining"] = 0
        invoice["status_transitions"]["paid_at"] = now
        invoice["next_payment_attempt"] = None
        invoice["default_payment_method"] = None
        self.store.put(invoice)
        self.emit("invoice.paid", invoice)
        self.emit("invoice.payment_succeeded", invoice)
        return True

    def list_invoices(self, params: dict[str, Any]) -> dict[str, Any]:
        customer, status, sub = (
            params.get("customer"),
            params.get("status"),
            params.get("subscription"),
        )

        def keep(inv: dict[str, Any]) -> bool:
            if customer is not None and inv["customer"] != customer:
                return False
            if status is not None and inv["status"] != status:
                return False
            if sub is not None:
                details = (inv.get("parent") or {}).get("subscription_details") or {}
                return bool(details.get("subscription") == sub)
            return True

        return self.list("invoice", params, keep)

    def invoice_lines(self, invoice_id: str, params: dict[str, Any]) -> dict[str, Any]:
        invoice = self.load(invoice_id, "invoice")
        limit = as_int(params.get("limit", "10"), "limit", minimum=1, maximum=100)
        lines = invoice["lines"]["data"]
        after = params.get("starting_after")
        if after:
            ids = [ln["id"] for ln in lines]
            if after not in ids:
                raise missing("line item", after, "starting_after")
            lines = lines[ids.index(after) + 1 :]
        return list_envelope(lines[:limit], f"/v1/invoices/{invoice_id}/lines", len(lines) > limit)

    # -- subscriptions --------------------------------------------------------------------------

    def list_subscriptions(self, params: dict[str, Any]) -> dict[str, Any]:
        customer, price = params.get("customer"), params.get("price")
        status = params.get("status")
        clock = params.get("test_clock")

        def keep(s: dict[str, Any]) -> bool:
            if customer is not None and s["customer"] != customer:
                return False
            if status is None and s["status"] == "canceled":
                return False  # Stripe leaves canceled subscriptions out unless asked
            if status not in (None, "all") and s["status"] != status:
                return False
            if clock is not None and (s.get("test_clock") or DEFAULT_CLOCK) != clock:
                return False
            return price is None or any(i["price"]["id"] == price for i in s["items"]["data"])

        return self.list("subscription", params, keep)

    def update_subscription(self, sub_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self.load(sub_id, "subscription")
        if sub["status"] == "canceled":
            allowed = {"metadata", "cancellation_details", "expand"}
            if set(params) - allowed:
                raise bad_request(
                    "A canceled subscription can only update its cancellation_details and "
                    "metadata.",
                )
        customer = self.customer(sub["customer"], "customer")
        now = self.now_for(customer)
        before = copy.deepcopy(sub)
        if "metadata" in params:
            sub["metadata"] = merge_metadata(sub["metadata"], params["metadata"])
        if "description" in params:
            sub["description"] = as_str(params["description"], "description") or None
        if "cancel_at_period_end" in params:
            flag = as_bool(params["cancel_at_period_end"], "cancel_at_period_end")
            self._set_cancel_at_period_end(sub, flag, now)
        details = params.get("cancellation_details")
        if isinstance(details, dict):
            for key in ("comment", "feedback"):
                if key in details:
                    sub["cancellation_details"][key] = details[key] or None
        if params.get("default_payment_method"):
            pm = self.load(
                params["default_payment_method"], "payment_method", "default_payment_method"
            )
            if pm.get("customer") != customer["id"]:
                raise bad_request(
                    "The payment method must be attached to the subscription's customer.",
                    "default_payment_method",
                )
            sub["default_payment_method"] = pm["id"]
        if "items" in params:
            self._update_items(sub, params["items"], now)
        if "proration_behavior" in params:
            as_enum(
                params["proration_behavior"],
                "proration_behavior",
                ("always_invoice", "create_prorations", "none"),
            )
        self.store.put(sub)
        self._emit_updated("customer.subscription.updated", before, sub)
        return sub

    def _set_cancel_at_period_end(self, sub: dict[str, Any], flag: bool, now: int) -> None:
        sub["cancel_at_period_end"] = flag
        if flag:
            sub["cancel_at"] = self._period_end(sub)
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancellation_details"]["reason"] = None

    def _update_items(self, sub: dict[str, Any], items: Any, now: int) -> None:
        if not isinstance(items, list):
            raise bad_request("Invalid array", "items")
        current = {i["id"]: i for i in sub["items"]["data"]}
        result = list(sub["items"]["data"])
        cadence = None
        for i, spec in enumerate(items):
            param = f"items[{i}]"
            if not isinstance(spec, dict):
                raise bad_request("Invalid hash", param)
            item_id = spec.get("id")
            if item_id is not None and item_id not in current:
                raise bad_request(
                    f"The subscription item {item_id} does not belong to this subscription.",
                    f"{param}[id]",
                )
            if item_id and as_bool(spec.get("deleted", "false"), f"{param}[deleted]"):
                result = [r for r in result if r["id"] != item_id]
                continue
            price = None
            if spec.get("price") or spec.get("plan"):
                pid = as_str(spec.get("price") or spec.get("plan"), f"{param}[price]")
                price = self.load(pid, "price", f"{param}[price]")
                if not price["active"]:
                    raise bad_request(
                        f"The price specified ({pid}) is inactive.", f"{param}[price]"
                    )
                if not price["recurring"]:
                    raise bad_request(
                        "The price specified is set to `type=one_time` but this field only "
                        "accepts prices with `type=recurring`.",
                        f"{param}[price]",
                    )
            quantity = (
                as_int(spec["quantity"], f"{param}[quantity]", minimum=0)
                if "quantity" in spec
                else None
            )
            if item_id:
                item = next(r for r in result if r["id"] == item_id)
                if price is not None:
                    item["price"] = strip_private(copy.deepcopy(price))
                    item["plan"] = plan_from_price(price)
                if quantity is not None:
                    item["quantity"] = quantity
            else:
                if price is None:
                    raise required(f"{param}[price]")
                start = self._period_start(sub)
                end = self._period_end(sub)
                result.append(self._sub_item(sub["id"], price, quantity or 1, start, end))
        for item in result:
            rec = item["price"]["recurring"]
            key = (rec["interval"], rec["interval_count"])
            if cadence is None:
                cadence = key
            elif cadence != key:
                raise bad_request(
                    "The sandbox requires every item of a subscription to share one billing "
                    "interval.",
                    "items",
                )
        if not result:
            raise bad_request("A subscription must have at least one active plan.", "items")
        if cadence is not None and sub["items"]["data"]:
            old = sub["items"]["data"][0]["price"]["recurring"]
            if (old["interval"], old["interval_count"]) != cadence:
                raise bad_request(
                    "The sandbox does not change a subscription's billing interval; create a "
                    "new subscription instead.",
                    "items",
                )
        sub["items"]["data"] = result
        sub["items"]["total_count"] = len(result)

    def _period_end(self, sub: dict[str, Any]) -> int:
        return min(int(i["current_period_end"]) for i in sub["items"]["data"])

    def _period_start(self, sub: dict[str, Any]) -> int:
        return min(int(i["current_period_start"]) for i in sub["items"]["data"])

    def cancel_subscription(self, sub_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self.load(sub_id, "subscription")
        if sub["status"] == "canceled":
            raise StripeError(
                400,
                f"A canceled subscription can only update its cancellation_details and metadata."
                f" This subscription ({sub_id}) is already canceled.",
            )
        details = params.get("cancellation_details")
        if isinstance(details, dict):
            for key in ("comment", "feedback"):
                if key in details:
                    sub["cancellation_details"][key] = details[key] or None
        customer = self.store.get(sub["customer"])
        self._cancel_now(sub, self.now_for(customer), why="cancellation_requested")
        return sub

    def _cancel_now(self, sub: dict[str, Any], now: int, why: str) -> None:
        sub["status"] = "canceled"
        sub["canceled_at"] = sub.get("canceled_at") or now
        sub["ended_at"] = now
        sub["cancellation_details"]["reason"] = why
        self.store.put(sub)
        self.emit("customer.subscription.deleted", sub)

    # -- renewals -------------------------------------------------------------------------------

    def advance_clock(self, clock_id: str, frozen_time: int) -> dict[str, Any]:
        clock = self.clock(clock_id)
        if frozen_time <= int(clock["frozen_time"]):
            raise bad_request(
                "The test clock's frozen time must be later than its current frozen time "
                f"({clock['frozen_time']}).",
                "frozen_time",
            )
        clock["status"] = "advancing"
        clock["status_details"] = {"advancing": {"target_frozen_time": frozen_time}}
        self.store.put(clock)
        self.emit("test_helpers.test_clock.advancing", clock)
        self._run_until(clock_id, frozen_time)
        clock = self.clock(clock_id)
        clock["frozen_time"] = frozen_time
        self.store.put(clock)
        self.expire_due_sessions()
        clock["status"] = "ready"
        clock["status_details"] = {}
        self.store.put(clock)
        self.emit("test_helpers.test_clock.ready", clock)
        return clock

    def tick_default_clock(self) -> None:
        """Renew default-clock subscriptions whose period ended in wall-clock time."""
        self._run_until(DEFAULT_CLOCK, int(self.clock(DEFAULT_CLOCK)["frozen_time"]))

    def expire_due_sessions(self) -> None:
        """Open Checkout Sessions past `expires_at` expire, as Stripe expires them."""
        for _, session in self.store.all("checkout.session"):
            if session["status"] != "open":
                continue
            customer = self.store.get(session["customer"]) if session["customer"] else None
            if int(session["expires_at"]) <= self.now_for(customer):
                self.expire_checkout_session(session["id"])

    def _run_until(self, clock_id: str, target: int) -> None:
        while True:
            due: list[tuple[int, str]] = []
            for _, sub in self.store.all("subscription"):
                if (sub.get("test_clock") or DEFAULT_CLOCK) != clock_id:
                    continue
                if sub["status"] not in LIVE_STATUSES:
                    continue
                end = self._period_end(sub)
                if end <= target:
                    due.append((end, sub["id"]))
            if not due:
                return
            end, sub_id = min(due)
            clock = self.clock(clock_id)
            clock["frozen_time"] = max(int(clock["frozen_time"]), end)
            self.store.put(clock)
            self._period_ended(self.load(sub_id, "subscription"), end)

    def _period_ended(self, sub: dict[str, Any], end: int) -> None:
        if sub["cancel_at_period_end"] or (sub.get("cancel_at") and sub["cancel_at"] <= end):
            sub["status"] = "canceled"
            sub["ended_at"] = end
            sub["canceled_at"] = sub.get("canceled_at") or end
            self.store.put(sub)
            self.emit("customer.subscription.deleted", sub)
            return
        customer = self.customer(sub["customer"], "customer")
        before = copy.deepcopy(sub)
        anchor = int(sub["billing_cycle_anchor"])
        new_end = end
        for item in sub["items"]["data"]:
            rec = item["price"]["recurring"]
            item["current_period_start"] = end
            item["current_period_end"] = add_interval(
                end, rec["interval"], rec["interval_count"], anchor
            )
            new_end = item["current_period_end"]
        invoice = self._draft_invoice(
            sub,
            customer,
            end,
            end,
            new_end,
            "subscription_cycle",
            (int(before["items"]["data"][0]["current_period_start"]), end),
        )
        sub["latest_invoice"] = invoice["id"]
        self.store.put(sub)
        self._emit_updated("customer.subscription.updated", before, sub)
        self._finalize_invoice(invoice, end)
        pm_id = (
            sub.get("default_payment_method")
            or customer["invoice_settings"]["default_payment_method"]
        )
        pm = self.store.get(pm_id) if pm_id else None
        paid = self._pay_invoice(invoice, customer, pm, end, off_session=True)
        before = copy.deepcopy(sub)
        if paid and sub["status"] != "active":
            sub["status"] = "active"
        elif not paid:
            sub["status"] = "past_due"
        if sub["status"] != before["status"]:
            self.store.put(sub)
            self._emit_updated("customer.subscription.updated", before, sub)

    def retry_open_invoices(self, customer: dict[str, Any], pm: dict[str, Any]) -> None:
        """After a new payment method: pay what is open, as Stripe's retry would."""
        for _, invoice in sorted(self.store.all("invoice")):
            if invoice["customer"] != customer["id"] or invoice["status"] != "open":
                continue
            now = self.now_for(customer)
            if not self._pay_invoice(invoice, customer, pm, now, off_session=True):
                continue
            sub_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get(
                "subscription"
            )
            sub = self.store.get(sub_id) if sub_id else None
            if sub and sub["status"] in ("past_due", "incomplete"):
                before = copy.deepcopy(sub)
                sub["status"] = "active"
                self.store.put(sub)
                self._emit_updated("customer.subscription.updated", before, sub)

    # -- test clocks ----------------------------------------------------------------------------

    def create_clock(self, params: dict[str, Any]) -> dict[str, Any]:
        if "frozen_time" not in params:
            raise required("frozen_time")
        frozen = as_int(params["frozen_time"], "frozen_time", minimum=0)
        now = self.wall()
        clock = {
            "id": new_id("clock_"),
            "object": "test_helpers.test_clock",
            "created": now,
            "deletes_after": now + 30 * 86400,
            "frozen_time": frozen,
            "livemode": False,
            "name": as_str(params.get("name", ""), "name", max_len=300) or None,
            "status": "ready",
            "status_details": {},
        }
        self.store.put(clock)
        self.emit("test_helpers.test_clock.created", clock)
        return clock

    def delete_clock(self, clock_id: str) -> dict[str, Any]:
        if clock_id == DEFAULT_CLOCK:
            raise bad_request("The sandbox's default clock cannot be deleted.", "id")
        clock = self.clock(clock_id)
        for _, sub in self.store.all("subscription"):
            if sub.get("test_clock") == clock_id and sub["status"] != "canceled":
                self._cancel_now(sub, int(clock["frozen_time"]), "cancellation_requested")
        tombstone = {"id": clock_id, "object": "test_helpers.test_clock", "deleted": True}
        self.store.put(tombstone)
        self.emit("test_helpers.test_clock.deleted", clock)
        return tombstone

    def list_clocks(self, params: dict[str, Any]) -> dict[str, Any]:
        self.clock(DEFAULT_CLOCK)
        page = self.list("test_helpers.test_clock", params, lambda c: not c.get("deleted"))
        for clock in page["data"]:
            if clock["id"] == DEFAULT_CLOCK:
                clock["frozen_time"] = self.clock(DEFAULT_CLOCK)["frozen_time"]
        return page

    # -- billing portal -------------------------------------------------------------------------

    def create_portal_configuration(
        self, params: dict[str, Any], default: bool = False
    ) -> dict[str, Any]:
        if "features" not in params and not default:
            raise required("features")
        now = self.wall()
        config: dict[str, Any] = {
            "id": new_id("bpc_"),
            "object": "billing_portal.configuration",
            "active": True,
            "application": None,
            "business_profile": {
                "headline": None,
                "privacy_policy_url": None,
                "terms_of_service_url": None,
            },
            "created": now,
            "default_return_url": None,
            "features": {
                "customer_update": {"allowed_updates": [], "enabled": False},
                "invoice_history": {"enabled": False},
                "payment_method_update": {"enabled": False, "payment_method_configuration": None},
                "subscription_cancel": {
                    "cancellation_reason": {"enabled": False, "options": []},
                    "enabled": False,
                    "mode": "at_period_end",
                    "proration_behavior": "none",
                },
                "subscription_update": {
                    "billing_cycle_anchor": None,
                    "default_allowed_updates": [],
                    "enabled": False,
                    "products": [],
                    "proration_behavior": "none",
                    "schedule_at_period_end": {"conditions": []},
                    "trial_update_behavior": "end_trial",
                },
            },
            "is_default": default,
            "livemode": False,
            "login_page": {"enabled": False, "url": None},
            "metadata": {},
            "name": None,
            "updated": now,
        }
        if default:
            feats = config["features"]
            feats["invoice_history"]["enabled"] = True
            feats["payment_method_update"]["enabled"] = True
            feats["subscription_cancel"]["enabled"] = True
        self._apply_portal_config(config, params)
        self.store.put(config)
        self.emit("billing_portal.configuration.created", config)
        return config

    def _apply_portal_config(self, config: dict[str, Any], params: dict[str, Any]) -> None:
        if "active" in params:
            config["active"] = as_bool(params["active"], "active")
        if "name" in params:
            config["name"] = as_str(params["name"], "name") or None
        if "default_return_url" in params:
            config["default_return_url"] = (
                as_str(params["default_return_url"], "default_return_url") or None
            )
        if "metadata" in params:
            config["metadata"] = merge_metadata(config["metadata"], params["metadata"])
        profile = params.get("business_profile")
        if isinstance(profile, dict):
            for key in ("headline", "privacy_policy_url", "terms_of_service_url"):
                if key in profile:
                    config["business_profile"][key] = profile[key] or None
        features = params.get("features")
        if not isinstance(features, dict):
            return
        feats = config["features"]
        for name in ("invoice_history", "payment_method_update", "customer_update"):
            if isinstance(features.get(name), dict) and "enabled" in features[name]:
                feats[name]["enabled"] = as_bool(
                    features[name]["enabled"], f"features[{name}][enabled]"
                )
        if isinstance(features.get("customer_update"), dict):
            allowed = features["customer_update"].get("allowed_updates")
            if isinstance(allowed, list):
                feats["customer_update"]["allowed_updates"] = allowed
        cancel = features.get("subscription_cancel")
        if isinstance(cancel, dict):
            if "enabled" in cancel:
                feats["subscription_cancel"]["enabled"] = as_bool(
                    cancel["enabled"], "features[subscription_cancel][enabled]"
                )
            if "mode" in cancel:
                feats["subscription_cancel"]["mode"] = as_enum(
                    cancel["mode"],
                    "features[subscription_cancel][mode]",
                    ("at_period_end", "immediately"),
                )
            if "proration_behavior" in cancel:
                feats["subscription_cancel"]["proration_behavior"] = cancel["proration_behavior"]
        update = features.get("subscription_update")
        if isinstance(update, dict):
            target = feats["subscription_update"]
            if "enabled" in update:
                target["enabled"] = as_bool(
                    update["enabled"], "features[subscription_update][enabled]"
                )
            if isinstance(update.get("default_allowed_updates"), list):
                target["default_allowed_updates"] = update["default_allowed_updates"]
            elif update.get("default_allowed_updates") == "":
                target["default_allowed_updates"] = []
            if "proration_behavior" in update:
                target["proration_behavior"] = update["proration_behavior"]
            products = update.get("products")
            if isinstance(products, list):
                resolved = []
                for i, entry in enumerate(products):
                    param = f"features[subscription_update][products][{i}]"
                    if not isinstance(entry, dict) or "product" not in entry:
                        raise required(f"{param}[product]")
                    self.load(entry["product"], "product", f"{param}[product]")
                    prices = entry.get("prices") or []
                    for price_id in prices:
                        price = self.load(price_id, "price", f"{param}[prices]")
                        if price["product"] != entry["product"]:
                            raise bad_request(
                                f"The price {price_id} does not belong to product "
                                f"{entry['product']}.",
                                f"{param}[prices]",
                            )
                    resolved.append(
                        {
                            "adjustable_quantity": {
                                "enabled": False,
                                "maximum": None,
                                "minimum": 1,
                            },
                            "prices": list(prices),
                            "product": entry["product"],
                        }
                    )
                target["products"] = resolved
            elif products == "":
                target["products"] = []

    def update_portal_configuration(self, config_id: str, params: dict[str, Any]) -> dict[str, Any]:
        config = self.load(config_id, "billing_portal.configuration")
        before = copy.deepcopy(config)
        self._apply_portal_config(config, params)
        config["updated"] = max(self.wall(), config["updated"])
        self.store.put(config)
        self._emit_updated("billing_portal.configuration.updated", before, config)
        return config

    def default_portal_configuration(self) -> dict[str, Any]:
        for _, config in self.store.all("billing_portal.configuration"):
            if config["is_default"]:
                return config
        return self.create_portal_configuration({}, default=True)

    def create_portal_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if "customer" not in params:
            raise required("customer")
        customer = self.customer(as_str(params["customer"], "customer"), "customer")
        if params.get("configuration"):
            config = self.load(
                as_str(params["configuration"], "configuration"),
                "billing_portal.configuration",
                "configuration",
            )
            if not config["active"]:
                raise bad_request("The configuration is not active.", "configuration")
        else:
            config = self.default_portal_configuration()
        return_url = params.get("return_url") or config["default_return_url"]
        if params.get("flow_data"):
            raise bad_request("The sandbox does not support portal flows (flow_data).", "flow_data")
        if not return_url:
            raise bad_request(
                "You must provide a return_url or set a default_return_url on the portal "
                "configuration.",
                "return_url",
            )
        session_id = new_id("bps_")
        session = {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": config["id"],
            "created": self.now_for(customer),
            "customer": customer["id"],
            "flow": None,
            "livemode": False,
            "locale": params.get("locale"),
            "on_behalf_of": None,
            "return_url": check_url(as_str(return_url, "return_url"), "return_url"),
            "url": f"{self.config.base_url}/sandbox/portal/{session_id}",
        }
        self.store.put(session)
        return session

    # -- helpers --------------------------------------------------------------------------------

    def _emit_updated(self, event_type: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        previous = {
            k: before.get(k) for k in after if not k.startswith("_") and before.get(k) != after[k]
        }
        if previous:
            self.emit(event_type, after, previous)
