"""Products and prices."""

from __future__ import annotations

import copy
from typing import Any

from tollbooth.sandbox.customers import Customers
from tollbooth.sandbox.objects import (
    new_id,
)
from tollbooth.sandbox.wire import (
    as_bool,
    as_enum,
    as_int,
    as_str,
    bad_request,
    check_currency,
    check_currency_amount,
    merge_metadata,
    refuse_unsupported,
    required,
)


class Catalog(Customers):
    """Products and prices, with Stripe's lookup-key rules."""

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
        refuse_unsupported(params, (("recurring", "trial_period_days"),))
        if "currency" not in params:
            raise required("currency")
        currency = check_currency(as_str(params["currency"], "currency"), "currency")
        if "unit_amount" in params:
            amount = as_int(params["unit_amount"], "unit_amount", minimum=0, maximum=99999999)
            check_currency_amount(amount, currency, "unit_amount")
        elif "unit_amount_decimal" in params:
            text = as_str(params["unit_amount_decimal"], "unit_amount_decimal")
            if not (text.isascii() and text.isdigit()):  # as every integer parameter
                raise bad_request(
                    "The sandbox supports whole unit_amount_decimal values only.",
                    "unit_amount_decimal",
                )
            amount = int(text)
            check_currency_amount(amount, currency, "unit_amount_decimal")
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
