"""The subscription RPCs of CheckoutService: proto in, proto out, one transaction.

CheckoutService spans two rooms: `tollbooth.checkout.servicer.CheckoutServicer` serves the
checkout and portal RPCs and takes these from this mixin.
"""

from __future__ import annotations

import grpc

from billing.v1 import checkout_pb2
from tollbooth.accounts.refs import AccountRefs
from tollbooth.auth.caller import current_caller
from tollbooth.rpc.convert import print_unset_as_null
from tollbooth.rpc.servicer import Servicer
from tollbooth.subscriptions import convert, holdings, service


class SubscriptionRpcs(Servicer):
    _account_refs: AccountRefs | None = None

    @property
    def account_refs(self) -> AccountRefs:
        """The account refs this servicer resolved (one per servicer, so per database)."""
        if self._account_refs is None:
            self._account_refs = AccountRefs()
        return self._account_refs

    def GetBillingStatus(
        self, request: checkout_pb2.GetBillingStatusRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.BillingStatus:
        """From memory when the account and its holdings are kept; else one read."""
        caller, kept = current_caller.get(), holdings.of(self.deps.db)
        view = service.billing_status_from_memory(self.account_refs, kept, caller, request.account)
        if view is None:
            with self.read() as session:
                view = service.billing_status(
                    session, self.account_refs, kept, caller, request.account
                )
        answer = convert.billing_status_out(view)
        # Seed 002's free plan: `status`, `current_period_end` and `cancel_at_period_end`
        # are null, not left out (or false).
        free = ("cancel_at_period_end",) if view.subscription is None else ()
        print_unset_as_null(context, answer, absent=free)
        return answer

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
