"""The subscription RPCs of CheckoutService: proto in, proto out, one transaction.

CheckoutService spans two rooms: `tollbooth.checkout.servicer.CheckoutServicer` serves the
checkout and portal RPCs and takes these from this mixin.
"""

from __future__ import annotations

import grpc

from billing.v1 import checkout_pb2
from tollbooth.auth.caller import current_caller
from tollbooth.rpc.servicer import Servicer
from tollbooth.subscriptions import convert, service


class SubscriptionRpcs(Servicer):
    def GetBillingStatus(
        self, request: checkout_pb2.GetBillingStatusRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.BillingStatus:
        with self.read() as session:
            view = service.billing_status(session, current_caller.get(), request.account)
            return convert.billing_status_out(view)

    def ListSubscriptions(
        self, request: checkout_pb2.ListSubscriptionsRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListSubscriptionsResponse:
        with self.read() as session:
            rows, token = service.list_subscriptions(
                session,
                current_caller.get(),
                request.account,
                request.page_size,
                request.page_token,
            )
            items = service.items_of(session, rows)
            return checkout_pb2.ListSubscriptionsResponse(
                subscriptions=[convert.subscription_out(r, items[r.id]) for r in rows],
                next_page_token=token,
            )

    def ListPurchases(
        self, request: checkout_pb2.ListPurchasesRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListPurchasesResponse:
        with self.read() as session:
            rows, token = service.list_purchases(
                session,
                current_caller.get(),
                request.account,
                request.page_size,
                request.page_token,
            )
            return checkout_pb2.ListPurchasesResponse(
                purchases=[convert.purchase_out(r) for r in rows], next_page_token=token
            )
