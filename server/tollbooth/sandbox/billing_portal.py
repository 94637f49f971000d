"""Billing portal configurations and sessions (the page itself is in pages.py)."""

from __future__ import annotations

import copy
from typing import Any

from tollbooth.sandbox.checkout import Checkout
from tollbooth.sandbox.core import check_url
from tollbooth.sandbox.objects import (
    new_id,
)
from tollbooth.sandbox.wire import (
    as_bool,
    as_enum,
    as_str,
    bad_request,
    merge_metadata,
    required,
)

# Products a portal configuration's plan switch may list (`features.subscription_update.products`).
MAX_SWITCH_PRODUCTS = 10


class BillingPortal(Checkout):
    """Portal configurations and sessions."""

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
            url = as_str(params["default_return_url"], "default_return_url")
            config["default_return_url"] = check_url(url, "default_return_url") if url else None
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
                if len(products) > MAX_SWITCH_PRODUCTS:  # Stripe's API reference: "up to 10"
                    raise bad_request(
                        f"You can only specify up to {MAX_SWITCH_PRODUCTS} products.",
                        "features[subscription_update][products]",
                    )
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
