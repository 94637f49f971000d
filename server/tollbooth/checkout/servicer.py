"""CheckoutService over gRPC: proto in, proto out, one transaction.

The checkout and portal RPCs are here; the subscription RPCs of the same contract service
(GetBillingStatus, ListSubscriptions, ListPurchases) come from `tollbooth.subscriptions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from billing.v1 import checkout_pb2, checkout_pb2_grpc
from tollbooth import errors
from tollbooth.accounts.customers import check_environment
from tollbooth.accounts.manage import clean_email
from tollbooth.auth.caller import current_caller
from tollbooth.checkout import intents, portal, service
from tollbooth.checkout.asked import same_intent
from tollbooth.db.models import CheckoutSession
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.provider.client import StripeProvider
from tollbooth.rpc import json_fields
from tollbooth.rpc.convert import ts
from tollbooth.rpc.servicer import (
    canonical_currency,
    contract,
    idempotency_scope,
    request_fingerprint,
)
from tollbooth.subscriptions.servicer import SubscriptionRpcs

STATUS = {
    "pending": checkout_pb2.CHECKOUT_SESSION_STATUS_OPEN,
    "open": checkout_pb2.CHECKOUT_SESSION_STATUS_OPEN,
    "complete": checkout_pb2.CHECKOUT_SESSION_STATUS_COMPLETE,
    "expired": checkout_pb2.CHECKOUT_SESSION_STATUS_EXPIRED,
}
PAYMENT = {
    "unpaid": checkout_pb2.PAYMENT_STATUS_UNPAID,
    "paid": checkout_pb2.PAYMENT_STATUS_PAID,
    "no_payment_required": checkout_pb2.PAYMENT_STATUS_NO_PAYMENT_REQUIRED,
}
MODE = {
    "payment": checkout_pb2.CHECKOUT_MODE_PAYMENT,
    "subscription": checkout_pb2.CHECKOUT_MODE_SUBSCRIPTION,
    "setup": checkout_pb2.CHECKOUT_MODE_SETUP,
}


def session_out(row: CheckoutSession) -> checkout_pb2.CheckoutSession:
    status = service.effective_status(row, utcnow())
    items = []
    for item in row.items:
        line = checkout_pb2.CheckoutItem(quantity=int(item.get("quantity") or 1))
        line.catalog_price_id = item["price_id"]
        items.append(line)
    return checkout_pb2.CheckoutSession(
        checkout_session_id=row.id,
        billing_account_id=row.billing_account_id,
        status=STATUS.get(status, checkout_pb2.CHECKOUT_SESSION_STATUS_UNSPECIFIED),
        payment_status=PAYMENT.get(row.payment_status, checkout_pb2.PAYMENT_STATUS_UNSPECIFIED),
        mode=MODE.get(row.mode, checkout_pb2.CHECKOUT_MODE_UNSPECIFIED),
        url=(row.url or "") if status == "open" else "",
        items=items,
        amount_total=row.amount_total,
        currency=row.currency,
        client_reference=row.client_reference,
        stripe_checkout_session_id=row.stripe_checkout_session_id or "",
        create_time=ts(row.created_at),
        expire_time=ts(row.expires_at) if row.expires_at else None,
        session_status="open" if status == "pending" else status,
        session_payment_status=row.payment_status,
    )


def _items(request: checkout_pb2.CreateCheckoutSessionRequest) -> list[service.ItemRequest]:
    if request.items and request.line_items:
        raise errors.invalid("give items or line_items, not both", field="line_items")
    if request.tier and not request.tier.strip():  # names no price: not read as absent
        raise errors.invalid("tier is blank", reason="FIELD_INVALID", field="tier")
    if request.tier.strip():  # seed 002's `{"tier": "pro"}`: one of the price of that lookup_key
        if request.items or request.line_items:
            raise errors.invalid(
                "give tier, items or line_items, not two of them",
                reason="FIELD_INVALID",
                field="tier",
            )
        return [
            service.ItemRequest(
                lookup_key=request.tier.strip(), quantity=1, which="lookup_key", label="tier"
            )
        ]
    if request.line_items:
        return [
            service.ItemRequest(price=item.price, quantity=item.quantity, which="price")
            for item in request.line_items
        ]
    return [
        service.ItemRequest(
            catalog_price_id=item.catalog_price_id,
            lookup_key=item.lookup_key,
            quantity=item.quantity,
            which=item.WhichOneof("price"),
        )
        for item in request.items
    ]


def _home(origins: tuple[str, ...]) -> str:
    """The first allowed redirect origin, the configured home of the app ("" with none)."""
    return f"{origins[0]}/" if origins else ""


def _options(request: checkout_pb2.CreatePortalSessionRequest) -> service.PortalOptions:
    """Each option is on unless `options` or seed 001's settings turn it off."""

    def on(message: Any, name: str) -> bool:
        return bool(getattr(message, name)) if message.HasField(name) else True

    o, plan = request.options, request.plan_overview_settings
    shown = on(plan, "show_section")
    return service.PortalOptions(
        allow_cancel=on(o, "allow_cancel") and shown and on(plan, "allow_subscription_cancel"),
        show_invoices=on(o, "show_invoices") and on(request.invoice_list_settings, "show_section"),
        allow_payment_method_update=on(o, "allow_payment_method_update")
        and on(request.billing_details_settings, "show_section"),
        allow_plan_change=on(o, "allow_plan_change") and shown,
    )


def _either(request: Any, name: str, seed_name: str) -> str:
    """A field or its seed 001 twin (`account`/`accountId`, ...); two that disagree are
    refused naming the seed's."""
    given, seed = getattr(request, name), getattr(request, seed_name)
    if given.strip() and seed.strip() and given.strip() != seed.strip():
        raise errors.invalid(
            f"{name} and {seed_name} differ; send one",
            reason="FIELD_INVALID",
            field=seed_name,
        )
    return str(given or seed)


def _account_names(
    request: checkout_pb2.CreatePortalSessionRequest | checkout_pb2.CreateCheckoutSessionRequest,
) -> tuple[str, str]:
    """`account`, or seed 001's `accountId` for it, and the other name when both are given and
    written differently (portal and checkout check that both name one account: an id and its
    alias do)."""
    named, seed = request.account.strip(), request.account_id.strip()
    if named and seed and named != seed:
        return named, seed
    return named or seed, ""


@contextmanager
def _account_named_as_sent(request: Any, context: grpc.ServicerContext) -> Iterator[None]:
    """A REST body whose only name of the account is seed 001's `accountId`, left blank
    (`"accountId": ""`), is refused naming `account_id`, the field it sent, not `account`
    (proto3 cannot tell a blank field from an absent one: the body's keys tell)."""
    try:
        yield
    except errors.DomainError as exc:
        if exc.reason != "FIELD_REQUIRED" or exc.metadata.get("field") != "account":
            raise
        sent = json_fields.body_keys(request.DESCRIPTOR, context.invocation_metadata())
        if "account_id" not in sent or "account" in sent:
            raise
        raise errors.required("account_id") from None


@contract(checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"])
class CheckoutServicer(SubscriptionRpcs, checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(self, deps: Deps, provider: StripeProvider) -> None:
        super().__init__(deps)
        self.provider = provider
        # Seed 003's `?environment=` names the caller's environment (this servicer's), as
        # CustomerService answers it; not the mode of the Stripe key it happens to run on.
        self.live = deps.environment == "live"

    def CreateCheckoutSession(
        self, request: checkout_pb2.CreateCheckoutSessionRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.CreateCheckoutSessionResponse:
        caller = current_caller.get()
        check_environment(request.environment, self.live)
        items = _items(request)
        account_ref, also_named = _account_names(request)
        if not request.customer_email.strip():  # seed 001's twin alone: its error names it
            clean_email(request.account_email, "account_email")

        asked = intents.CheckoutRequest(
            account_ref=account_ref,
            also_named=also_named,
            items=items,
            # Seed 002's body names none: the app's home, as the portal's return_url.
            success_url=request.success_url or _home(self.deps.settings.redirect_origins),
            cancel_url=request.cancel_url,
            client_reference=_either(request, "client_reference", "pass_through_token"),
            request_scope=idempotency_scope(caller, request),
            request_id=request.request_id,
            request_digest=(
                request_fingerprint(canonical_currency(request)) if request.request_id else ""
            ),
            mode=request.mode,
            customer_email=_either(request, "customer_email", "account_email"),
            currency=request.currency,
            default_lookup_key=self.deps.settings.checkout_default_lookup_key,
        )
        origins = self.deps.settings.redirect_origins

        def effect() -> checkout_pb2.CreateCheckoutSessionResponse:
            result = intents.create_checkout(self.deps.db, self.provider, caller, asked, origins)
            if result.next_action == service.NEXT_PORTAL:
                return checkout_pb2.CreateCheckoutSessionResponse(
                    url=result.url,
                    checkout_url=result.url,
                    portal=checkout_pb2.PortalRedirect(
                        url=result.url,
                        conflicting_subscription_id=result.conflicting_subscription_id,
                    ),
                )
            assert result.session is not None
            return checkout_pb2.CreateCheckoutSessionResponse(
                url=result.url,
                checkout_url=result.url,
                session=session_out(result.session),
                checkout_session_id=result.session.id,
            )

        with _account_named_as_sent(request, context):
            return self.staged(
                request,
                checkout_pb2.CreateCheckoutSessionResponse,
                effect,
                same_as=canonical_currency(request),
                equivalent=lambda stored: same_intent(
                    self.deps.db,
                    caller,
                    asked,
                    origins,
                    checkout_pb2.CreateCheckoutSessionResponse.FromString(
                        stored
                    ).session.checkout_session_id,
                ),
            )

    def GetCheckoutSession(
        self, request: checkout_pb2.GetCheckoutSessionRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.CheckoutSession:
        check_environment(request.environment, self.live)
        with self.read() as session:
            return session_out(
                service.get_checkout_session(
                    session, current_caller.get(), request.checkout_session_id
                )
            )

    def CreatePortalSession(
        self, request: checkout_pb2.CreatePortalSessionRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.PortalSession:
        caller = current_caller.get()
        check_environment(request.environment, self.live)

        account_ref, also_named = _account_names(request)

        def effect() -> checkout_pb2.PortalSession:
            result = portal.create_portal(
                self.deps.db,
                self.provider,
                caller,
                account_ref=account_ref,
                also_named=also_named,
                customer=request.customer,
                return_url=request.return_url,
                options=_options(request),
                request_scope=idempotency_scope(caller, request),
                request_id=request.request_id,
                origins=self.deps.settings.redirect_origins,
                require_billed=True,
            )
            return checkout_pb2.PortalSession(
                portal_session_id=result.portal_session_id,
                url=result.url,
                portal_url=result.url,
                session_url=result.url,
                return_url=result.return_url,
                create_time=ts(result.created),
            )

        with _account_named_as_sent(request, context):
            return self.staged(request, checkout_pb2.PortalSession, effect)
