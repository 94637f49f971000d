"""CreditService over gRPC: proto in, proto out, one transaction, the real clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2, credit_pb2_grpc
from tollbooth import metrics
from tollbooth.amounts import fmt, neg
from tollbooth.auth.caller import current_caller
from tollbooth.credit import (
    debits,
    grants,
    lookups,
    onecall,
    onetrip,
    pipelined,
    queries,
    reservations,
    rules,
)
from tollbooth.db.models import CreditGrant, CreditLedgerEntry, CreditReservation
from tollbooth.db.types import utcnow
from tollbooth.rpc.servicer import Servicer, contract, idempotency_scope, request_fingerprint

GRANT_STATES = {
    "active": credit_pb2.GRANT_STATE_ACTIVE,
    "depleted": credit_pb2.GRANT_STATE_DEPLETED,
    "expired": credit_pb2.GRANT_STATE_EXPIRED,
    "voided": credit_pb2.GRANT_STATE_VOIDED,
}
RESERVATION_STATES = {
    "held": credit_pb2.RESERVATION_STATE_HELD,
    "committed": credit_pb2.RESERVATION_STATE_COMMITTED,
    "released": credit_pb2.RESERVATION_STATE_RELEASED,
    "expired": credit_pb2.RESERVATION_STATE_EXPIRED,
}
LEDGER_KINDS = {
    "grant": credit_pb2.LEDGER_ENTRY_KIND_GRANT,
    "debit": credit_pb2.LEDGER_ENTRY_KIND_DEBIT,
    "expiration": credit_pb2.LEDGER_ENTRY_KIND_EXPIRATION,
    "void": credit_pb2.LEDGER_ENTRY_KIND_VOID,
    "reservation": credit_pb2.LEDGER_ENTRY_KIND_RESERVATION,
    "release": credit_pb2.LEDGER_ENTRY_KIND_RELEASE,
    "overage": credit_pb2.LEDGER_ENTRY_KIND_OVERAGE,
    "overage_paid": credit_pb2.LEDGER_ENTRY_KIND_OVERAGE_PAID,
}

# The clock every RPC reads; tests of the service layer pass their own `now` instead.
Clock = Callable[[], dt.datetime]
R = TypeVar("R", bound=Message)


def ts(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def amount(value: Decimal | None) -> str:
    return "" if value is None else fmt(value)


def grant_out(row: CreditGrant, now: dt.datetime) -> credit_pb2.CreditGrant:
    state = row.state
    if state in ("active", "depleted") and row.expire_at is not None and row.expire_at <= now:
        state = "expired"  # due, recorded by the next write to this balance
    return credit_pb2.CreditGrant(
        grant_id=row.id,
        billing_account_id=row.billing_account_id,
        credit_type=row.credit_type,
        amount=fmt(row.amount),
        remaining="0" if state == "expired" else fmt(row.remaining),
        held=fmt(row.held),
        reason=row.reason,
        priority=row.priority,
        expire_time=ts(row.expire_at),
        state=GRANT_STATES[state],
        request_id=row.request_id,
        create_time=ts(row.created_at),
        metadata=row.attributes or {},
    )


def reservation_out(
    row: CreditReservation, now: dt.datetime | None = None
) -> credit_pb2.CreditReservation:
    state = row.state
    if state == "held" and now is not None and row.expire_at <= now:
        state = "expired"  # lapsed, recorded by the next write to this balance (as grant_out)
    return credit_pb2.CreditReservation(
        reservation_id=row.id,
        billing_account_id=row.billing_account_id,
        credit_type=row.credit_type,
        amount=fmt(row.amount),
        committed_amount=amount(row.committed_amount),
        state=RESERVATION_STATES[state],
        expire_time=ts(row.expire_at),
        request_id=row.request_id,
        create_time=ts(row.created_at),
        reason=row.reason,
        debit_id=row.debit_id or "",
    )


def debit_out(entry: CreditLedgerEntry) -> credit_pb2.CreditDebit:
    return credit_pb2.CreditDebit(
        debit_id=entry.debit_id or "",
        billing_account_id=entry.billing_account_id,
        credit_type=entry.credit_type,
        amount=fmt(neg(entry.amount)),
        balance_after=fmt(entry.balance_after),
        reason=entry.reason,
        request_id=entry.request_id,
        allocations=[
            credit_pb2.GrantAllocation(grant_id=a["grant_id"], amount=a["amount"])
            for a in entry.allocations or []
        ],
        create_time=ts(entry.created_at),
    )


def entry_out(entry: CreditLedgerEntry) -> credit_pb2.LedgerEntry:
    return credit_pb2.LedgerEntry(
        entry_id=entry.id,
        billing_account_id=entry.billing_account_id,
        credit_type=entry.credit_type,
        kind=LEDGER_KINDS[entry.kind],
        amount=fmt(entry.amount),
        balance_after=fmt(entry.balance_after),
        grant_id=entry.grant_id or "",
        debit_id=entry.debit_id or "",
        reason=entry.reason,
        create_time=ts(entry.created_at),
        reservation_id=entry.reservation_id or "",
        request_id=entry.request_id,
        metadata=entry.attributes or {},
        overage=fmt(entry.overage),
    )


@contract(credit_pb2.DESCRIPTOR.services_by_name["CreditService"])
class CreditServicer(Servicer, credit_pb2_grpc.CreditServiceServicer):
    clock: Clock = staticmethod(utcnow)

    def GrantCredits(
        self, request: credit_pb2.GrantCreditsRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditGrant:
        expire_at = (
            rules.timestamp(request.expire_time.seconds, request.expire_time.nanos, "expire_time")
            if request.HasField("expire_time")
            else None
        )
        fast = self._in_two_round_trips(
            request,
            lambda session, r: pipelined.grant(
                session,
                r,
                credit_type=request.credit_type,
                amount=request.amount,
                reason=request.reason,
                priority=request.priority,
                expire_at=expire_at,
                metadata=dict(request.metadata),
                out=lambda row: grant_out(row, self.clock()),
                response_type=credit_pb2.CreditGrant,
            ),
        )
        if fast is not None:
            return fast
        return self.write(
            request,
            credit_pb2.CreditGrant,
            lambda session: grant_out(
                grants.grant(
                    session,
                    current_caller.get(),
                    request.account,
                    credit_type=request.credit_type,
                    amount=request.amount,
                    reason=request.reason,
                    priority=request.priority,
                    expire_at=expire_at,
                    request_id=request.request_id,
                    metadata=dict(request.metadata),
                    clock=self.clock,
                    announce=True,
                ),
                self.clock(),
            ),
        )

    def _in_two_round_trips(
        self,
        request: credit_pb2.GrantCreditsRequest
        | credit_pb2.ReserveCreditsRequest
        | credit_pb2.CommitReservationRequest,
        fast: Callable[[Session, pipelined.Request], R | None],
    ) -> R | None:
        """PostgreSQL: `fast` (a `pipelined` RPC) in one transaction; None: the general path
        answers (nothing was done)."""
        if self.deps.db.dialect != "postgresql":
            return None
        caller = current_caller.get()
        r = pipelined.Request(
            caller,
            request.account,
            request.request_id,
            idempotency_scope(caller, request),
            request_fingerprint(request),
            self.clock,
        )
        with self.deps.db.transaction() as session:
            return fast(session, r)

    def GetBalance(
        self, request: credit_pb2.GetBalanceRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditBalance:
        now, caller, db = self.clock(), current_caller.get(), self.deps.db
        # No expiry due and nothing refused: one plain statement (no session, no BEGIN).
        view = None
        if db.dialect == "postgresql":
            view = queries.plain_balance(db, caller, request.account, request.type, now)
        if view is None:
            with self.read() as session:
                view = queries.balance(session, caller, request.account, request.type, now)
        return credit_pb2.CreditBalance(
            billing_account_id=view.billing_account_id,
            account_id=view.billing_account_id,
            credit_type=view.credit_type,
            balance=fmt(view.balance),
            reserved=fmt(view.reserved),
            as_of_time=ts(view.as_of),
            overage=fmt(view.overage),
        )

    def CheckAvailability(
        self, request: credit_pb2.CheckAvailabilityRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CheckAvailabilityResponse:
        now = self.clock()
        with self.read() as session:
            got = queries.availability(
                session, current_caller.get(), request.account, request.type, request.required, now
            )
        return credit_pb2.CheckAvailabilityResponse(
            available=got.available,
            balance=fmt(got.balance),
            required=fmt(got.required),
            shortfall=fmt(got.shortfall),
        )

    def DebitCredits(
        self, request: credit_pb2.DebitCreditsRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditDebit:
        reply = self._debit_on_postgres(request)
        if reply is None:
            reply = self._debit(request)
        metrics.DEBITS.inc()
        return reply

    def _debit_on_postgres(
        self, request: credit_pb2.DebitCreditsRequest
    ) -> credit_pb2.CreditDebit | None:
        """PostgreSQL, a valid request: `onecall.debit` (one round trip), else `onetrip.debit`
        (None: the general path answers)."""
        if self.deps.db.dialect != "postgresql":
            return None
        args = onetrip.args_of(
            request.account,
            request.credit_type,
            request.amount,
            request.reason,
            request.request_id,
            dict(request.metadata),
        )
        if args is None:
            return None
        caller = current_caller.get()
        scope = idempotency_scope(caller, request)
        digest = request_fingerprint(request)
        reply = onecall.debit(
            self.deps.db,
            caller,
            args,
            scope=scope,
            digest=digest,
            clock=self.clock,
            parse=credit_pb2.CreditDebit.FromString,
        )
        if reply is not None:
            return cast(credit_pb2.CreditDebit, reply)
        # Not written: the two round trips' path (and, within it, the general one).
        with self.deps.db.transaction() as session:
            return onetrip.debit(
                session,
                caller,
                args,
                scope=scope,
                digest=digest,
                clock=self.clock,
                out=debit_out,
                response_type=credit_pb2.CreditDebit,
            )

    def _debit(self, request: credit_pb2.DebitCreditsRequest) -> credit_pb2.CreditDebit:
        return self.write(
            request,
            credit_pb2.CreditDebit,
            lambda session: debit_out(
                debits.debit(
                    session,
                    current_caller.get(),
                    request.account,
                    credit_type=request.credit_type,
                    amount=request.amount,
                    reason=request.reason,
                    request_id=request.request_id,
                    metadata=dict(request.metadata),
                    clock=self.clock,
                )
            ),
            require_request_id=True,
        )

    def ListLedgerEntries(
        self, request: credit_pb2.ListLedgerEntriesRequest, context: grpc.ServicerContext
    ) -> credit_pb2.ListLedgerEntriesResponse:
        # A write transaction: expiries that came due are recorded first, so the ledger
        # shows them.
        now = self.clock()

        def effect(session: Session) -> credit_pb2.ListLedgerEntriesResponse:
            page = queries.list_ledger(
                session,
                current_caller.get(),
                request.account,
                credit_type=request.credit_type,
                page_size=request.page_size,
                page_token=request.page_token,
                now=now,
            )
            return credit_pb2.ListLedgerEntriesResponse(
                entries=[entry_out(e) for e in page.items], next_page_token=page.next_page_token
            )

        return self.write(request, credit_pb2.ListLedgerEntriesResponse, effect)

    def ListGrants(
        self, request: credit_pb2.ListGrantsRequest, context: grpc.ServicerContext
    ) -> credit_pb2.ListGrantsResponse:
        now = self.clock()

        def effect(session: Session) -> credit_pb2.ListGrantsResponse:
            page = queries.list_grants(
                session,
                current_caller.get(),
                request.account,
                credit_type=request.credit_type,
                include_inactive=request.include_inactive,
                page_size=request.page_size,
                page_token=request.page_token,
                now=now,
            )
            return credit_pb2.ListGrantsResponse(
                grants=[grant_out(g, now) for g in page.items],
                next_page_token=page.next_page_token,
            )

        return self.write(request, credit_pb2.ListGrantsResponse, effect)

    def GetGrant(
        self, request: credit_pb2.GetGrantRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditGrant:
        # A write transaction, as ListGrants: due events of the grant's balance (a lapsed
        # hold, an expiry) are recorded first, so the grant reads as its listing does.
        now = self.clock()
        return self.write(
            request,
            credit_pb2.CreditGrant,
            lambda session: grant_out(
                queries.get_grant(
                    session, current_caller.get(), request.account, request.grant_id, now
                ),
                now,
            ),
        )

    def GetDebit(
        self, request: credit_pb2.GetDebitRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditDebit:
        with self.read() as session:
            entry = lookups.get_debit(
                session, current_caller.get(), request.account, request.debit_id
            )
            return debit_out(entry)

    def GetReservation(
        self, request: credit_pb2.GetReservationRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditReservation:
        with self.read() as session:
            row = lookups.get_reservation(
                session, current_caller.get(), request.account, request.reservation_id
            )
            return reservation_out(row, self.clock())

    def VoidGrant(
        self, request: credit_pb2.VoidGrantRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditGrant:
        return self.write(
            request,
            credit_pb2.CreditGrant,
            lambda session: grant_out(
                grants.void_grant(
                    session,
                    current_caller.get(),
                    request.account,
                    grant_id=request.grant_id,
                    reason=request.reason,
                    request_id=request.request_id,
                    clock=self.clock,
                ),
                self.clock(),
            ),
        )

    def ReserveCredits(
        self, request: credit_pb2.ReserveCreditsRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditReservation:
        fast = self._in_two_round_trips(
            request,
            lambda session, r: pipelined.reserve(
                session,
                r,
                credit_type=request.credit_type,
                amount=request.amount,
                ttl_sec=request.ttl_seconds,
                reason=request.reason,
                out=reservation_out,
                response_type=credit_pb2.CreditReservation,
            ),
        )
        if fast is not None:
            return fast
        return self.write(
            request,
            credit_pb2.CreditReservation,
            lambda session: reservation_out(
                reservations.reserve(
                    session,
                    current_caller.get(),
                    request.account,
                    credit_type=request.credit_type,
                    amount=request.amount,
                    ttl_sec=request.ttl_seconds,
                    reason=request.reason,
                    request_id=request.request_id,
                    clock=self.clock,
                )
            ),
            require_request_id=True,
        )

    def CommitReservation(
        self, request: credit_pb2.CommitReservationRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditReservation:
        fast = self._in_two_round_trips(
            request,
            lambda session, r: pipelined.commit(
                session,
                r,
                reservation_id=request.reservation_id,
                amount=request.amount,
                out=reservation_out,
                response_type=credit_pb2.CreditReservation,
            ),
        )
        if fast is not None:
            return fast
        return self.write(
            request,
            credit_pb2.CreditReservation,
            lambda session: reservation_out(
                reservations.commit(
                    session,
                    current_caller.get(),
                    request.account,
                    reservation_id=request.reservation_id,
                    amount=request.amount,
                    request_id=request.request_id,
                    clock=self.clock,
                )
            ),
            require_request_id=True,
        )

    def ReleaseReservation(
        self, request: credit_pb2.ReleaseReservationRequest, context: grpc.ServicerContext
    ) -> credit_pb2.CreditReservation:
        return self.write(
            request,
            credit_pb2.CreditReservation,
            lambda session: reservation_out(
                reservations.release(
                    session,
                    current_caller.get(),
                    request.account,
                    reservation_id=request.reservation_id,
                    request_id=request.request_id,
                    clock=self.clock,
                )
            ),
        )
