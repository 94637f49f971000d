"""PaymentService over gRPC: proto in, proto out."""

from __future__ import annotations

import grpc

from billing.v1 import payment_pb2, payment_pb2_grpc
from tollbooth.accounts.customers import check_environment
from tollbooth.auth.caller import current_caller
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.deps import Deps
from tollbooth.payments import intents, service
from tollbooth.provider.client import StripeProvider
from tollbooth.rpc.convert import ts
from tollbooth.rpc.servicer import Servicer, canonical_currency, contract, idempotency_scope

STATUS = {
    "pending": payment_pb2.PAYMENT_INTENT_STATUS_PENDING,
    "requires_payment_method": payment_pb2.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD,
    "requires_confirmation": payment_pb2.PAYMENT_INTENT_STATUS_REQUIRES_CONFIRMATION,
    "requires_action": payment_pb2.PAYMENT_INTENT_STATUS_REQUIRES_ACTION,
    "processing": payment_pb2.PAYMENT_INTENT_STATUS_PROCESSING,
    "succeeded": payment_pb2.PAYMENT_INTENT_STATUS_SUCCEEDED,
    "canceled": payment_pb2.PAYMENT_INTENT_STATUS_CANCELED,
}


def intent_out(row: PaymentIntent) -> payment_pb2.PaymentIntent:
    return payment_pb2.PaymentIntent(
        payment_intent_id=row.id,
        billing_account_id=row.billing_account_id,
        stripe_payment_intent_id=row.stripe_payment_intent_id or "",
        client_secret=row.client_secret or "",
        status=STATUS.get(row.status, payment_pb2.PAYMENT_INTENT_STATUS_UNSPECIFIED),
        amount=row.amount,
        currency=row.currency,
        description=row.description,
        receipt_email=row.receipt_email,
        catalog_price_id=row.price_id or "",
        purchase_id=row.purchase_id or "",
        failure_code=row.failure_code or "",
        decline_code=row.decline_code or "",
        failure_message=row.failure_message or "",
        create_time=ts(row.created_at),
        succeed_time=ts(row.succeeded_at) if row.succeeded_at else None,
        failure_time=ts(row.failed_at) if row.failed_at else None,
        duplicate_of_purchase_id=row.duplicate_of or "",
        refund_id=row.refund_id or "",
        refund_time=ts(row.refunded_at) if row.refunded_at else None,
        intent_status=row.status if row.status in STATUS else "",
    )


@contract(payment_pb2.DESCRIPTOR.services_by_name["PaymentService"])
class PaymentServicer(Servicer, payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, deps: Deps, provider: StripeProvider) -> None:
        super().__init__(deps)
        self.provider = provider
        # Seed 003's `?environment=` names the caller's environment (this servicer's).
        self.live = deps.environment == "live"

    def CreatePaymentIntent(
        self, request: payment_pb2.CreatePaymentIntentRequest, context: grpc.ServicerContext
    ) -> payment_pb2.PaymentIntent:
        caller = current_caller.get()
        check_environment(request.environment, self.live)

        asked = service.PaymentRequest(
            account_ref=request.account,
            amount=request.amount,
            currency=request.currency,
            description=request.description,
            receipt_email=request.receipt_email,
            catalog_price_id=request.catalog_price_id,
            request_scope=idempotency_scope(caller, request),
            request_id=request.request_id,
        )

        def effect() -> payment_pb2.PaymentIntent:
            return intent_out(
                intents.create_payment_intent(self.deps.db, self.provider, caller, asked)
            )

        return self.staged(
            request,
            payment_pb2.PaymentIntent,
            effect,
            same_as=canonical_currency(request),
            equivalent=lambda stored: intents.same_intent(
                self.deps.db,
                caller,
                asked,
                payment_pb2.PaymentIntent.FromString(stored).payment_intent_id,
            ),
        )

    def GetPaymentIntent(
        self, request: payment_pb2.GetPaymentIntentRequest, context: grpc.ServicerContext
    ) -> payment_pb2.PaymentIntent:
        check_environment(request.environment, self.live)
        with self.read() as session:
            return intent_out(
                service.get_payment_intent(session, current_caller.get(), request.payment_intent_id)
            )
