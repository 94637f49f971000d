"""The payment provider: with `tollbooth.provider.answers` (the HTTP client and how Stripe's
answers and errors are read), the only module that imports `stripe`.

Everything else sees plain dicts in Stripe's wire format (the API version the installed
library pins) and domain errors with stable reasons:

- Stripe unreachable, timing out, rate limiting or answering 5xx: UNAVAILABLE
  `PROVIDER_UNAVAILABLE` (never INTERNAL), so callers and Stripe's webhook retries try again;
- an answer that is not Stripe's (no Stripe error object in an error, whatever its status: a
  bare 429 or an HTML 502 from a proxy; a 2xx that is not a JSON object naming its `object`):
  UNAVAILABLE `PROVIDER_UNAVAILABLE` as well, the answer itself never shown;
- a request Stripe refuses (400/404): INVALID_ARGUMENT `PROVIDER_REQUEST_INVALID`;
- an idempotency key reused with other parameters: INVALID_ARGUMENT `IDEMPOTENCY_KEY_REUSED`;
- our credentials refused (401/403): UNAVAILABLE `PROVIDER_UNAVAILABLE`, logged loudly.
Without `STRIPE_API_KEY` the client talks to the local sandbox, with a key to Stripe (or to
`STRIPE_API_BASE`). Every request has a timeout; only network failures are retried, and every
mutating request carries an idempotency key derived from the caller's `request_id` and the
account, so a retry, ours or the library's, never creates a second object. Stripe saves a 5xx
of a request it began under its key and replays it for 24 h: a create it answers so moves to
the next key (`_created`), the failed attempt's object never handed out.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import stripe

from tollbooth.config import Settings, dial_url
from tollbooth.metadata import PROVIDER_PRODUCT_KEY
from tollbooth.provider import invoices
from tollbooth.provider.answers import (
    REFUSED,  # callers that tell a refusal from an outage read it here
    NetworkRetriesOnly,
    checked,
    failure_replayed,
    map_error,
    stripe_answer,
)
from tollbooth.provider.keys import KEY_STEPS, idempotency_key, options_digest, stepped_key
from tollbooth.provider.payment_intents import PaymentIntentCalls

SANDBOX_KEY = "sk_test_tollbooth_sandbox"
API_VERSION = stripe.api_version
T = TypeVar("T")
# What Stripe accepts as a refund's `reason` (or none).
RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer"]
DUPLICATE: RefundReason = "duplicate"
__all__ = [
    "API_VERSION",
    "DUPLICATE",
    "REFUSED",
    "SANDBOX_KEY",
    "RefundReason",
    "RefundRefused",
    "StripeProvider",
    "refund_or_refusal",
]
# Stripe's codes for a refund it refuses for good, whatever is retried: a disputed charge's
# money goes where the dispute decides (back to the customer when the bank sides with them).
FINAL_REFUSALS = frozenset({"charge_disputed"})
log = logging.getLogger("tollbooth.provider")


class RefundRefused(Exception):
    """Stripe refuses the refund for good (`code` one of `FINAL_REFUSALS`)."""

    def __init__(self, payment_intent: str, code: str) -> None:
        super().__init__(f"Stripe refuses to refund {payment_intent}: {code}")
        self.payment_intent, self.code = payment_intent, code


def refund_or_refusal(refund: Callable[[], str | None]) -> tuple[str | None, str | None]:
    """(refund id, None) from `refund()`; (None, Stripe's code) when Stripe refuses it for good,
    so the event asking completes (nothing granted) instead of failing on every attempt."""
    try:
        return refund(), None
    except RefundRefused as exc:
        log.warning("%s; the event completes without a refund", exc)
        return None, exc.code


class StripeProvider(PaymentIntentCalls):
    """A thin, typed-by-dict facade over `stripe.StripeClient` (payment intents: its
    `PaymentIntentCalls`)."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        *,
        timeout_sec: float = 10.0,
        max_network_retries: int = 2,
        sandbox: bool = False,
    ) -> None:
        self.sandbox = sandbox
        self.base_url = base_url
        http = NetworkRetriesOnly(timeout=timeout_sec)
        kwargs: dict[str, Any] = {"max_network_retries": max_network_retries, "http_client": http}
        if base_url:
            kwargs["base_addresses"] = {"api": base_url}
        self.client = stripe.StripeClient(api_key, **kwargs)
        self._portal_configs: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeProvider:
        if settings.stripe_api_key:
            return cls(
                settings.stripe_api_key,
                settings.stripe_api_base or None,
                timeout_sec=settings.stripe_timeout_sec,
                max_network_retries=settings.stripe_max_network_retries,
            )
        base = settings.stripe_api_base or dial_url(settings.sandbox_host, settings.sandbox_port)
        return cls(
            SANDBOX_KEY,
            base,
            timeout_sec=settings.stripe_timeout_sec,
            max_network_retries=settings.stripe_max_network_retries,
            sandbox=True,
        )

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return checked(fn(), what)
        except stripe.StripeError as exc:
            raise map_error(exc, what) from exc

    def _created(self, what: str, key: str | None, create: Callable[[dict[str, Any]], T]) -> T:
        """`create(options)` under `key`. Stripe saves the 500 of a request it began under its
        key and replays it to every retry for 24 h; a create whose key it answers so moves on
        to the next key (`stepped_key`). The failed attempt's object, if Stripe made it, was
        never answered to us, so never handed to a buyer: nobody can pay it through us (a
        product or price it made is found by its metadata before the next create: `sync`)."""
        for step in range(KEY_STEPS):
            try:
                return checked(create(self._options(key and stepped_key(key, step))), what)
            except stripe.StripeError as exc:
                if key is None or step + 1 == KEY_STEPS or not failure_replayed(exc):
                    raise map_error(exc, what) from exc
                log.warning("%s: Stripe replays a saved failure for key %s; next key", what, key)
        raise AssertionError("unreachable")

    @staticmethod
    def _plain(obj: Any) -> dict[str, Any]:
        result: dict[str, Any] = obj.to_dict()
        return result

    @staticmethod
    def _options(key: str | None) -> dict[str, Any]:
        return {"idempotency_key": key or f"tollbooth-adhoc-{uuid.uuid4().hex}"}

    # -- customers ------------------------------------------------------------------------

    def create_customer(
        self, account_id: str, *, email: str | None, name: str | None
    ) -> dict[str, Any]:
        """One customer per account: the key is the account id, so concurrent first
        purchases of one account get the same customer back."""
        params: dict[str, Any] = {"metadata": {"billing_account_id": account_id}}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        key = idempotency_key("customer", account_id)
        return self._plain(
            self._created(
                "create customer",
                key,
                lambda options: self.client.v1.customers.create(
                    params=params,  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
        )

    def update_customer(
        self, customer_id: str, params: Mapping[str, Any], *, idempotency: str
    ) -> dict[str, Any]:
        """Set the fields `params` names (Stripe merges metadata; "" removes a key); past a
        failure Stripe saved under the key, as a create (setting the same fields is harmless)."""
        return self._plain(
            self._created(
                "update customer",
                idempotency,
                lambda options: self.client.v1.customers.update(
                    customer_id,
                    params=dict(params),  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
        )

    def set_default_payment_method(self, customer_id: str, payment_method: str) -> dict[str, Any]:
        """The customer's default payment method for invoices (setup mode's effect); the same
        request, under the same key, every time it is repeated."""
        return self.update_customer(
            customer_id,
            {"invoice_settings": {"default_payment_method": payment_method}},
            idempotency=idempotency_key("default-payment-method", customer_id, payment_method),
        )

    def retrieve_setup_intent(self, setup_intent_id: str) -> dict[str, Any]:
        return self._plain(
            self._call(
                "retrieve setup intent",
                lambda: self.client.v1.setup_intents.retrieve(setup_intent_id),
            )
        )

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        return self._plain(
            self._call("retrieve customer", lambda: self.client.v1.customers.retrieve(customer_id))
        )

    def delete_customer(self, customer_id: str) -> bool:
        """Delete the customer; False when the provider no longer knows it (deleted already)."""
        try:
            checked(self.client.v1.customers.delete(customer_id), "delete customer")
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "code", None) == "resource_missing":
                return False
            raise map_error(exc, "delete customer") from exc
        except stripe.StripeError as exc:
            raise map_error(exc, "delete customer") from exc
        return True

    # -- catalog --------------------------------------------------------------------------

    def create_product(
        self, product_id: str, *, name: str, description: str, metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "name": name,
            "metadata": {**metadata, PROVIDER_PRODUCT_KEY: product_id},
        }
        if description:
            params["description"] = description
        key = idempotency_key("product", product_id)
        return self._plain(
            self._created(
                "create product",
                key,
                lambda options: self.client.v1.products.create(
                    params=params,  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
        )

    def create_price(
        self,
        price_id: str,
        *,
        stripe_product_id: str,
        currency: str,
        unit_amount: int,
        interval: str | None,
        interval_count: int | None,
        nickname: str,
        lookup_key: str | None,
        group: str = "",
    ) -> dict[str, Any]:
        """The provider price of a catalog price; its metadata names the catalog price, its
        lookup key and its subscription group (the sandbox portal offers switches within it)."""
        params: dict[str, Any] = {
            "product": stripe_product_id,
            "currency": currency,
            "unit_amount": unit_amount,
            "metadata": {
                "tollbooth_price_id": price_id,
                "tollbooth_lookup_key": lookup_key or "",
                "tollbooth_subscription_group": group,
            },
        }
        if interval:
            params["recurring"] = {"interval": interval, "interval_count": interval_count or 1}
        if nickname:
            params["nickname"] = nickname
        key = idempotency_key("price", price_id)
        return self._plain(
            self._created(
                "create price",
                key,
                lambda options: self.client.v1.prices.create(
                    params=params,  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
        )

    def find_product(self, product_id: str) -> dict[str, Any] | None:
        """The provider product a create for catalog product `product_id` already made (its
        metadata names it), e.g. one whose answer was lost: found by listing (consistent, unlike
        Stripe's search), so a sync links it instead of creating a second one."""
        return self._find("list products", self.client.v1.products.list, {}, "product", product_id)

    def find_price(self, price_id: str, stripe_product_id: str) -> dict[str, Any] | None:
        """The provider price of `stripe_product_id` a create for catalog price `price_id`
        already made (its metadata names it), active or not."""
        params = {"product": stripe_product_id}
        return self._find("list prices", self.client.v1.prices.list, params, "price", price_id)

    def _find(
        self, what: str, lister: Callable[..., Any], params: dict[str, Any], kind: str, ident: str
    ) -> dict[str, Any] | None:
        params = {**params, "limit": 100}
        while True:
            page = self._call(what, lambda: lister(params=params))  # noqa: B023
            for item in page.data:
                found = self._plain(checked(item, what))
                if (found.get("metadata") or {}).get(f"tollbooth_{kind}_id") == ident:
                    return found
            if not page.has_more or not page.data:
                return None
            params = {**params, "starting_after": page.data[-1].id}

    def find_price_by_lookup_key(self, lookup_key: str) -> dict[str, Any] | None:
        """An active provider price carrying `lookup_key` (catalog as code links to it)."""
        page = self._call(
            "list prices",
            lambda: self.client.v1.prices.list(
                params={"lookup_keys": [lookup_key], "active": True, "limit": 1}
            ),
        )
        return self._plain(page.data[0]) if page.data else None

    def linkable(self, kind: str, ident: str) -> dict[str, Any] | None:
        """What Stripe holds as `ident`, a `kind` ("product"/"price"); None on Stripe's 404."""
        what, service = f"retrieve {kind}", getattr(self.client.v1, f"{kind}s")
        try:
            found = self._plain(checked(service.retrieve(ident), what))
        except stripe.StripeError as exc:
            if stripe_answer(exc) and getattr(exc, "http_status", None) == 404:
                return None
            raise map_error(exc, what) from exc
        return found if found["object"] == kind else None

    def retrieve_price(self, stripe_price_id: str) -> dict[str, Any]:
        got = self._call("retrieve price", lambda: self.client.v1.prices.retrieve(stripe_price_id))
        return self._plain(got)

    # -- checkout -------------------------------------------------------------------------

    def create_checkout_session(
        self, params: dict[str, Any], *, idempotency: str | None
    ) -> dict[str, Any]:
        return self._plain(
            self._created(
                "create checkout session",
                idempotency,
                lambda options: self.client.v1.checkout.sessions.create(
                    params=params,  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
        )

    def retrieve_checkout_session(self, session_id: str) -> dict[str, Any]:
        return self._plain(
            self._call(
                "retrieve checkout session",
                lambda: self.client.v1.checkout.sessions.retrieve(session_id),
            )
        )

    def expire_checkout_session(self, session_id: str) -> dict[str, Any]:
        """Expire an open session; the session as the provider then has it. One that is no
        longer open (already expired, or complete) is returned unchanged, not an error. A
        failure Stripe saved under the key (replayed to it for 24 h) moves on to the next key:
        expiring twice is harmless, and the session's status is read either way."""
        key = idempotency_key("expire", session_id)
        for step in range(KEY_STEPS):
            try:
                expired = self.client.v1.checkout.sessions.expire(
                    session_id,
                    options=self._options(stepped_key(key, step)),  # type: ignore[arg-type]
                )
            except stripe.InvalidRequestError as exc:
                if getattr(exc, "http_status", None) != 400:
                    raise map_error(exc, "expire checkout session") from exc
                return self.retrieve_checkout_session(session_id)
            except stripe.StripeError as exc:
                if step + 1 == KEY_STEPS or not failure_replayed(exc):
                    raise map_error(exc, "expire checkout session") from exc
                log.warning("expire: Stripe replays a saved failure for key %s; next key", key)
                continue
            return self._plain(checked(expired, "expire checkout session"))
        raise AssertionError("unreachable")

    # -- billing portal -------------------------------------------------------------------

    def portal_configuration(self, features: dict[str, Any]) -> str:
        """A portal configuration with exactly these features, made once (found by its digest)."""
        digest = options_digest(features)
        with self._lock:
            known = self._portal_configs.get(digest)
        if known:
            return known
        listing = self._call(
            "list portal configurations",
            lambda: self.client.v1.billing_portal.configurations.list(
                params={"active": True, "limit": 100}
            ),
        )
        found: str | None = None
        try:  # every page: past the first 100 (other integrations' too) it would be made again
            for config in listing.auto_paging_iter():
                if (self._plain(config).get("metadata") or {}).get("tollbooth_options") == digest:
                    found = str(config.id)
                    break
        except stripe.StripeError as exc:
            raise map_error(exc, "list portal configurations") from exc
        if found is None:
            meta = {"tollbooth_options": digest}
            params = {"features": features, "metadata": meta, "name": "tollbooth"}
            created = self._created(  # past a saved failure too: one key for every account
                "create portal configuration",
                idempotency_key("portal-config", digest),
                lambda options: self.client.v1.billing_portal.configurations.create(
                    params=params,  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
            found = created.id
        with self._lock:
            self._portal_configs[digest] = found
        return found

    def create_portal_session(
        self, customer: str, return_url: str, configuration: str, *, idempotency: str | None
    ) -> dict[str, Any]:
        params = {"customer": customer, "return_url": return_url, "configuration": configuration}
        return self._plain(
            self._created(
                "create portal session",
                idempotency,
                lambda options: self.client.v1.billing_portal.sessions.create(
                    params=params,  # type: ignore[arg-type]
                    options=options,  # type: ignore[arg-type]
                ),
            )
        )

    # -- subscriptions --------------------------------------------------------------------

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """Stripe's current object; None when the provider does not know the id."""
        try:
            sub = self.client.v1.subscriptions.retrieve(subscription_id)
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "http_status", None) == 404:
                return None
            raise map_error(exc, "retrieve subscription") from exc
        except stripe.StripeError as exc:
            raise map_error(exc, "retrieve subscription") from exc
        return self._plain(checked(sub, "retrieve subscription"))

    def list_subscriptions(self, customer: str) -> list[dict[str, Any]]:
        """Every subscription of a customer, canceled ones included."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"customer": customer, "status": "all", "limit": 100}
        while True:
            page = self._call(
                "list subscriptions",
                lambda: self.client.v1.subscriptions.list(params=params),  # type: ignore[arg-type]  # noqa: B023
            )
            out.extend(self._plain(s) for s in page.data)
            if not page.has_more or not page.data:
                return out
            params = {**params, "starting_after": page.data[-1].id}

    # -- the fulfilment guards: cancel and refund what slipped through ---------------------
    def cancel_subscription(self, subscription_id: str, *, idempotency: str) -> dict[str, Any]:
        """Cancel at once; a subscription already canceled is returned as it is."""
        current = self.retrieve_subscription(subscription_id)
        if current is not None and current.get("status") in ("canceled", "incomplete_expired"):
            return current
        return self._plain(
            self._call(
                "cancel subscription",
                lambda: self.client.v1.subscriptions.cancel(
                    subscription_id,
                    options=self._options(idempotency),  # type: ignore[arg-type]
                ),
            )
        )

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Stripe's invoice (`tollbooth.provider.invoices` reads it)."""
        return self._plain(
            self._call("retrieve invoice", lambda: self.client.v1.invoices.retrieve(invoice_id))
        )

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        """The PaymentIntent that paid an invoice (None when nothing paid it)."""
        return invoices.paid_intent(self.retrieve_invoice(invoice_id))

    def retrieve_charge(self, charge_id: str) -> dict[str, Any] | None:
        """Stripe's current charge; None when the provider does not know the id."""
        return self._known("charge", lambda: self.client.v1.charges.retrieve(charge_id))

    def retrieve_dispute(self, dispute_id: str) -> dict[str, Any] | None:
        """Stripe's current dispute; None when the provider does not know the id."""
        return self._known("dispute", lambda: self.client.v1.disputes.retrieve(dispute_id))

    def _known(self, kind: str, call: Callable[[], Any]) -> dict[str, Any] | None:
        what = f"retrieve {kind}"
        try:
            found = call()
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "http_status", None) == 404:
                return None
            raise map_error(exc, what) from exc
        except stripe.StripeError as exc:
            raise map_error(exc, what) from exc
        return self._plain(checked(found, what))

    def refund_invoice(self, invoice_id: str, *, idempotency: str) -> str | None:
        """Refund what the invoice's payment charged, as a duplicate (a second plan of a group);
        None when unpaid."""
        intent = self.invoice_payment_intent(invoice_id)
        if not intent:
            return None
        return self.refund_payment(intent, idempotency=idempotency, reason=DUPLICATE)

    def _refund_made(self, payment_intent: str) -> str | None:
        """The refund that already returned `payment_intent`'s money (a first attempt whose
        answer was lost, or that Stripe saved as a failure after making it), so a notice can
        name it; None when it cannot be read (the refund stands either way)."""
        try:
            listed = self.client.v1.refunds.list(
                params={"payment_intent": payment_intent, "limit": 1}
            )
        except stripe.StripeError as exc:
            log.warning("refund of %s made already; not listed: %s", payment_intent, exc)
            return None
        data = getattr(listed, "data", None) or []
        return str(data[0].id) if data else None

    def refund_payment(
        self, payment_intent: str, *, idempotency: str, reason: RefundReason | None
    ) -> str | None:
        """Refund a PaymentIntent in full; its id (None: refunded already; `RefundRefused`
        when Stripe refuses it for good, see `refund_or_refusal`). `reason` is
        Stripe's: `duplicate` for a second payment of what was bought once, None for any other
        refund of ours (a grant that cannot be stored is no duplicate, and not the customer's
        request). A failure Stripe saved under the key (replayed to it for 24 h) moves on to
        the next key: a full refund is made once whatever the key (`charge_already_refunded`)."""
        params = {"payment_intent": payment_intent, **({"reason": reason} if reason else {})}
        for step in range(KEY_STEPS):
            try:
                refund = self.client.v1.refunds.create(
                    params=params,  # type: ignore[arg-type]
                    options=self._options(stepped_key(idempotency, step)),  # type: ignore[arg-type]
                )
            except stripe.InvalidRequestError as exc:
                if getattr(exc, "code", None) == "charge_already_refunded":
                    return self._refund_made(payment_intent)
                if getattr(exc, "code", None) in FINAL_REFUSALS:
                    raise RefundRefused(payment_intent, str(exc.code)) from exc
                raise map_error(exc, "refund") from exc
            except stripe.StripeError as exc:
                if step + 1 == KEY_STEPS or not failure_replayed(exc):
                    raise map_error(exc, "refund") from exc
                log.warning(
                    "refund: Stripe replays a saved failure for key %s; next key", idempotency
                )
                continue
            return str(checked(refund, "refund").id)
        raise AssertionError("unreachable")
