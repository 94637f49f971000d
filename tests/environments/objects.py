"""Objects of one environment for the cross-environment matrix, made through the real RPCs with
that environment's service key: each `make` returns the ids the matrix's requests use."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from billing.v1 import (
    account_pb2,
    catalog_pb2,
    checkout_pb2,
    credit_pb2,
    customer_pb2,
    entitlement_pb2,
    notification_pb2,
    payment_pb2,
    token_pb2,
    usage_pb2,
    webhook_pb2,
)
from tests.environments.support import Environment, Pair
from tests.helpers import keyed

SCOPES = ["checkout", "portal", "billing:read", "credits:read", "usage:read", "payments"]
SUCCESS = "https://app.example/ok?cs={CHECKOUT_SESSION_ID}"
BACK = "https://app.example/account"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ts(delta_sec: int = 0) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_sec))
    return out


def call(pair: Pair, env: Environment, full: str, request: Any, response: type) -> Any:
    stub = pair.channel.unary_unary(
        full,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )
    return stub(keyed(request), metadata=env.md, timeout=30)


# What each kind of object needs made first.
DEPENDS = {
    "grant": {"account"},
    "debit": {"grant"},
    "reservation": {"grant"},
    "price": {"product"},
    "lookup_key": {"price"},
    "checkout": {"account", "price"},
    "payment": {"account"},
}


def make(pair: Pair, env: Environment, needs: set[str]) -> dict[str, str]:
    """Fresh objects of every kind in `needs` (and what they depend on) in `env`."""
    wanted = set(needs)
    while True:
        more = set().union(*(DEPENDS.get(kind, set()) for kind in wanted)) - wanted
        if not more:
            break
        wanted |= more
    o: dict[str, str] = {"credit_type": "units"}
    if wanted & {"account", "alias", "token"}:
        principal = unique("p")
        issued = call(
            pair,
            env,
            "/billing.v1.TokenService/IssueToken",
            token_pb2.IssueTokenRequest(principal_id=principal, user_id="u1", scopes=SCOPES),
            token_pb2.IssueTokenResponse,
        )
        o.update(account=issued.billing_account_id, alias=principal, token=issued.access_token)
    if "grant" in wanted:
        o["grant"] = call(
            pair,
            env,
            "/billing.v1.CreditService/GrantCredits",
            credit_pb2.GrantCreditsRequest(account=o["account"], credit_type="units", amount="100"),
            credit_pb2.CreditGrant,
        ).grant_id
    if "debit" in wanted:
        o["debit"] = call(
            pair,
            env,
            "/billing.v1.CreditService/DebitCredits",
            credit_pb2.DebitCreditsRequest(account=o["account"], credit_type="units", amount="1"),
            credit_pb2.CreditDebit,
        ).debit_id
    if "reservation" in wanted:
        o["reservation"] = call(
            pair,
            env,
            "/billing.v1.CreditService/ReserveCredits",
            credit_pb2.ReserveCreditsRequest(
                account=o["account"], credit_type="units", amount="1", ttl_seconds=600
            ),
            credit_pb2.CreditReservation,
        ).reservation_id
    if "product" in wanted:
        o["product"] = call(
            pair,
            env,
            "/billing.v1.CatalogService/CreateProduct",
            catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(name=unique("Product"))),
            catalog_pb2.Product,
        ).product_id
    if "price" in wanted:
        o["lookup_key"] = unique("price")
        o["price"] = call(
            pair,
            env,
            "/billing.v1.CatalogService/CreatePrice",
            catalog_pb2.CreatePriceRequest(
                price=catalog_pb2.Price(
                    product_id=o["product"],
                    currency="usd",
                    unit_amount=500,
                    type=catalog_pb2.PRICE_TYPE_ONE_TIME,
                    lookup_key=o["lookup_key"],
                )
            ),
            catalog_pb2.Price,
        ).price_id
    if "checkout" in wanted:
        o["checkout"] = call(
            pair,
            env,
            "/billing.v1.CheckoutService/CreateCheckoutSession",
            checkout_pb2.CreateCheckoutSessionRequest(
                account=o["account"],
                items=[checkout_pb2.CheckoutItem(lookup_key=o["lookup_key"], quantity=1)],
                success_url=SUCCESS,
                cancel_url=BACK,
            ),
            checkout_pb2.CreateCheckoutSessionResponse,
        ).session.checkout_session_id
    if "payment" in wanted:
        o["payment"] = call(
            pair,
            env,
            "/billing.v1.PaymentService/CreatePaymentIntent",
            payment_pb2.CreatePaymentIntentRequest(
                account=o["account"], amount=500, currency="usd"
            ),
            payment_pb2.PaymentIntent,
        ).payment_intent_id
    if "metric" in wanted:
        o["metric"] = call(
            pair,
            env,
            "/billing.v1.UsageService/CreateMetric",
            usage_pb2.CreateMetricRequest(
                metric=usage_pb2.Metric(
                    code=unique("m").replace("-", "_"),
                    event_name="api_call",
                    aggregation=usage_pb2.AGGREGATION_COUNT,
                )
            ),
            usage_pb2.Metric,
        ).code
    if "endpoint" in wanted:
        o["endpoint"] = call(
            pair,
            env,
            "/billing.v1.NotificationService/CreateNotificationEndpoint",
            notification_pb2.CreateNotificationEndpointRequest(
                endpoint=notification_pb2.NotificationEndpoint(url="http://127.0.0.1:9/hooks")
            ),
            notification_pb2.NotificationEndpointWithSecret,
        ).endpoint.endpoint_id
    if "customer" in wanted:
        o["customer"] = call(
            pair,
            env,
            "/billing.v1.CustomerService/CreateCustomer",
            customer_pb2.CreateCustomerRequest(email=f"{unique('c')}@example.com", name="C"),
            customer_pb2.Customer,
        ).id
    if "event" in wanted:
        status, _, o["event"] = pair.send_event(env.webhook_secret)
        assert status == 200
    return o


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# (service, method) -> the request, from the ids of one environment's objects.
REQUESTS: dict[str, Any] = {
    "CatalogService.ListPrices": lambda o: catalog_pb2.ListPricesRequest(product_id=o["product"]),
    "CatalogService.GetProduct": lambda o: catalog_pb2.GetProductRequest(product_id=o["product"]),
    "CatalogService.UpdateProduct": lambda o: catalog_pb2.UpdateProductRequest(
        product=catalog_pb2.Product(product_id=o["product"], name="Renamed"),
        update_mask=mask("name"),
    ),
    "CatalogService.ArchiveProduct": lambda o: catalog_pb2.ArchiveProductRequest(
        product_id=o["product"]
    ),
    "CatalogService.CreatePrice": lambda o: catalog_pb2.CreatePriceRequest(
        price=catalog_pb2.Price(
            product_id=o["product"],
            currency="usd",
            unit_amount=700,
            type=catalog_pb2.PRICE_TYPE_ONE_TIME,
            lookup_key=unique("another"),
        )
    ),
    "CatalogService.GetPrice": lambda o: catalog_pb2.GetPriceRequest(price_id=o["price"]),
    "CatalogService.UpdatePrice": lambda o: catalog_pb2.UpdatePriceRequest(
        price=catalog_pb2.Price(price_id=o["price"], nickname="renamed"),
        update_mask=mask("nickname"),
    ),
    "CatalogService.ArchivePrice": lambda o: catalog_pb2.ArchivePriceRequest(price_id=o["price"]),
    "CheckoutService.CreateCheckoutSession": lambda o: checkout_pb2.CreateCheckoutSessionRequest(
        account=o["account"],
        items=[checkout_pb2.CheckoutItem(lookup_key=o["lookup_key"], quantity=1)],
        success_url=SUCCESS,
        cancel_url=BACK,
    ),
    "PaymentService.CreatePaymentIntent": lambda o: payment_pb2.CreatePaymentIntentRequest(
        account=o["account"], amount=500, currency="usd"
    ),
    "PaymentService.GetPaymentIntent": lambda o: payment_pb2.GetPaymentIntentRequest(
        payment_intent_id=o["payment"]
    ),
    "CheckoutService.GetCheckoutSession": lambda o: checkout_pb2.GetCheckoutSessionRequest(
        checkout_session_id=o["checkout"]
    ),
    "CheckoutService.CreatePortalSession": lambda o: checkout_pb2.CreatePortalSessionRequest(
        account=o["account"], return_url=BACK
    ),
    "CheckoutService.GetBillingStatus": lambda o: checkout_pb2.GetBillingStatusRequest(
        account=o["account"]
    ),
    "CheckoutService.ListSubscriptions": lambda o: checkout_pb2.ListSubscriptionsRequest(
        account=o["account"]
    ),
    "CheckoutService.ListPurchases": lambda o: checkout_pb2.ListPurchasesRequest(
        account=o["account"]
    ),
    "CreditService.GrantCredits": lambda o: credit_pb2.GrantCreditsRequest(
        account=o["account"], credit_type="units", amount="5"
    ),
    "CreditService.GetBalance": lambda o: credit_pb2.GetBalanceRequest(
        account=o["account"], type="units"
    ),
    "CreditService.CheckAvailability": lambda o: credit_pb2.CheckAvailabilityRequest(
        account=o["account"], type="units", required="1"
    ),
    "CreditService.DebitCredits": lambda o: credit_pb2.DebitCreditsRequest(
        account=o["account"], credit_type="units", amount="1"
    ),
    "CreditService.ListLedgerEntries": lambda o: credit_pb2.ListLedgerEntriesRequest(
        account=o["account"]
    ),
    "CreditService.ListGrants": lambda o: credit_pb2.ListGrantsRequest(account=o["account"]),
    "CreditService.GetGrant": lambda o: credit_pb2.GetGrantRequest(
        account=o["account"], grant_id=o["grant"]
    ),
    "CreditService.GetDebit": lambda o: credit_pb2.GetDebitRequest(
        account=o["account"], debit_id=o["debit"]
    ),
    "CreditService.VoidGrant": lambda o: credit_pb2.VoidGrantRequest(
        account=o["account"], grant_id=o["grant"], reason="matrix"
    ),
    "CreditService.ReserveCredits": lambda o: credit_pb2.ReserveCreditsRequest(
        account=o["account"], credit_type="units", amount="1", ttl_seconds=600
    ),
    "CreditService.GetReservation": lambda o: credit_pb2.GetReservationRequest(
        account=o["account"], reservation_id=o["reservation"]
    ),
    "CreditService.CommitReservation": lambda o: credit_pb2.CommitReservationRequest(
        account=o["account"], reservation_id=o["reservation"], amount="1"
    ),
    "CreditService.ReleaseReservation": lambda o: credit_pb2.ReleaseReservationRequest(
        account=o["account"], reservation_id=o["reservation"]
    ),
    "UsageService.IngestEvent": lambda o: usage_pb2.IngestEventRequest(
        event=usage_pb2.UsageEvent(
            unique_id=o.get("unique_id", unique("u")),
            account=o["account"],
            event_name="api_call",
            event_time=now_ts(-5),
        )
    ),
    "UsageService.GetMetric": lambda o: usage_pb2.GetMetricRequest(code=o["metric"]),
    "UsageService.UpdateMetric": lambda o: usage_pb2.UpdateMetricRequest(
        metric=usage_pb2.Metric(code=o["metric"], name="renamed"), update_mask=mask("name")
    ),
    "UsageService.DeleteMetric": lambda o: usage_pb2.DeleteMetricRequest(code=o["metric"]),
    "UsageService.GetUsage": lambda o: usage_pb2.GetUsageRequest(
        account=o["account"],
        metric_code=o["metric"],
        start_time=now_ts(-86400),
        end_time=now_ts(60),
    ),
    "StripeEventService.ReplayStripeEvents": lambda o: webhook_pb2.ReplayStripeEventsRequest(
        event_id=o["event"]
    ),
    "AccountService.GetAccount": lambda o: account_pb2.GetAccountRequest(account=o["account"]),
    "AccountService.UpdateAccount": lambda o: account_pb2.UpdateAccountRequest(
        account=account_pb2.Account(id=o["account"], name="Renamed"), update_mask=mask("name")
    ),
    "AccountService.ArchiveAccount": lambda o: account_pb2.ArchiveAccountRequest(
        account=o["account"]
    ),
    "CustomerService.GetCustomer": lambda o: customer_pb2.GetCustomerRequest(
        customer_id=o["customer"]
    ),
    "CustomerService.UpdateCustomer": lambda o: customer_pb2.UpdateCustomerRequest(
        customer_id=o["customer"], name="Renamed"
    ),
    "CustomerService.DeleteCustomer": lambda o: customer_pb2.DeleteCustomerRequest(
        customer_id=o["customer"]
    ),
    "EntitlementService.CheckEntitlement": lambda o: entitlement_pb2.CheckEntitlementRequest(
        account=o["account"], feature="seats"
    ),
    "EntitlementService.ListEntitlements": lambda o: entitlement_pb2.ListEntitlementsRequest(
        account=o["account"]
    ),
    "NotificationService.GetNotificationEndpoint": lambda o: (
        notification_pb2.GetNotificationEndpointRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.UpdateNotificationEndpoint": lambda o: (
        notification_pb2.UpdateNotificationEndpointRequest(
            endpoint=notification_pb2.NotificationEndpoint(
                endpoint_id=o["endpoint"], description="renamed"
            ),
            update_mask=mask("description"),
        )
    ),
    "NotificationService.DisableNotificationEndpoint": lambda o: (
        notification_pb2.DisableNotificationEndpointRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.EnableNotificationEndpoint": lambda o: (
        notification_pb2.EnableNotificationEndpointRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.DeleteNotificationEndpoint": lambda o: (
        notification_pb2.DeleteNotificationEndpointRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.RotateNotificationEndpointSecret": lambda o: (
        notification_pb2.RotateNotificationEndpointSecretRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.ListNotificationMessages": lambda o: (
        notification_pb2.ListNotificationMessagesRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.ListNotificationAttempts": lambda o: (
        notification_pb2.ListNotificationAttemptsRequest(endpoint_id=o["endpoint"])
    ),
    "NotificationService.ResendNotificationsSince": lambda o: (
        notification_pb2.ResendNotificationsSinceRequest(
            endpoint_id=o["endpoint"], since=now_ts(-3600)
        )
    ),
}
