"""EntitlementService over gRPC: proto in, proto out, one read-only transaction (none for a
warm CheckEntitlement: memory, and at most one statement on a plain connection; see
`service.check_warm`)."""

from __future__ import annotations

import grpc

from billing.v1 import entitlement_pb2, entitlement_pb2_grpc
from tollbooth.amounts import fmt
from tollbooth.auth.caller import current_caller
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.entitlements import service
from tollbooth.entitlements.cache import AnswerCache
from tollbooth.entitlements.grants import Kind
from tollbooth.entitlements.service import AccountRefs, Answer
from tollbooth.rpc.convert import ts
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.subscriptions import holdings
from tollbooth.usage import known_metrics

KINDS = {
    Kind.BOOLEAN: entitlement_pb2.ENTITLEMENT_KIND_BOOLEAN,
    Kind.METERED: entitlement_pb2.ENTITLEMENT_KIND_METERED,
    Kind.CREDIT: entitlement_pb2.ENTITLEMENT_KIND_CREDIT,
}


def answer_out(answer: Answer) -> entitlement_pb2.EntitlementCheck:
    out = entitlement_pb2.EntitlementCheck(
        billing_account_id=answer.account_id,
        feature=answer.feature,
        kind=KINDS[answer.kind] if answer.kind else entitlement_pb2.ENTITLEMENT_KIND_UNSPECIFIED,
        allowed=answer.allowed,
        as_of_time=ts(answer.as_of),
    )
    grant = answer.grant
    if grant is None:
        return out
    out.value = grant.value
    out.price_ids.extend(grant.price_ids)
    if grant.kind is Kind.METERED and grant.period is not None:
        out.metric = grant.metric
        out.limit = fmt(grant.limit)
        out.used = answer.used
        out.remaining = answer.remaining
        out.period_start_time.FromDatetime(grant.period[0])
        out.period_end_time.FromDatetime(grant.period[1])
    elif grant.kind is Kind.CREDIT:
        out.credit_type = grant.credit_type
        out.amount = fmt(grant.amount)
        out.balance = answer.balance
    return out


@contract(entitlement_pb2.DESCRIPTOR.services_by_name["EntitlementService"])
class EntitlementServicer(Servicer, entitlement_pb2_grpc.EntitlementServiceServicer):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self.accounts = AccountRefs()
        self.holdings = holdings.of(deps.db)
        self.metrics = known_metrics.of(deps.db)
        # SQLite: nothing is kept, every non-boolean check reads in a transaction.
        self.warm = service.Warm(deps.db, self.metrics) if deps.db.dialect == "postgresql" else None
        self.answers: AnswerCache[entitlement_pb2.EntitlementCheck] = AnswerCache(
            deps.settings.entitlement_cache_ms / 1000
        )

    def CheckEntitlement(
        self, request: entitlement_pb2.CheckEntitlementRequest, context: grpc.ServicerContext
    ) -> entitlement_pb2.EntitlementCheck:
        caller = current_caller.get()

        def compute() -> entitlement_pb2.EntitlementCheck:
            now = utcnow()
            quick = service.check_warm(
                self.warm,
                self.accounts,
                self.holdings,
                caller,
                request.account,
                request.feature,
                now,
            )
            if quick is not None:  # no session: memory, and at most one statement
                return answer_out(quick)
            with self.read() as session:
                answer = service.check(
                    session,
                    self.metrics,
                    self.accounts,
                    self.holdings,
                    caller,
                    request.account,
                    request.feature,
                    now,
                )
                return answer_out(answer)

        key = (service.caller_key(caller), request.account.strip(), request.feature)
        return self.answers.get(key, compute)

    def ListEntitlements(
        self, request: entitlement_pb2.ListEntitlementsRequest, context: grpc.ServicerContext
    ) -> entitlement_pb2.ListEntitlementsResponse:
        now = utcnow()
        with self.read() as session:
            answers, token, as_of = service.list_all(
                session,
                self.metrics,
                self.accounts,
                self.holdings,
                current_caller.get(),
                request.account,
                now,
                request.page_size,
                request.page_token,
            )
            return entitlement_pb2.ListEntitlementsResponse(
                entitlements=[answer_out(a) for a in answers],
                next_page_token=token,
                as_of_time=ts(as_of),
            )
