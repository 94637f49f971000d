"""Helpers for credit tests: stub calls, accounts, and the ledger invariants checked in SQL."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2, credit_pb2_grpc, token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason, keyed
from tollbooth import amounts
from tollbooth.db import Database, normalize_url
from tollbooth.db.models import (
    CreditBalance,
    CreditGrant,
    CreditLedgerEntry,
    CreditReservation,
)

ZERO = Decimal(0)


def stub(channel: grpc.Channel) -> credit_pb2_grpc.CreditServiceStub:
    return credit_pb2_grpc.CreditServiceStub(channel)


def account(channel: grpc.Channel, principal: str | None = None) -> tuple[str, str, str]:
    """A new account: (principal_id, billing_account_id, bearer token with credits:read)."""
    principal = principal or f"p-{uuid.uuid4().hex[:10]}"
    issued = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=principal, scopes=["credits:read"]),
        metadata=SERVICE_MD,
        timeout=10,
    )
    return principal, issued.billing_account_id, issued.access_token


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def grant(channel: grpc.Channel, acct: str, amount: str, credit_type: str = "units", **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("request_id", rid())
    return stub(channel).GrantCredits(
        credit_pb2.GrantCreditsRequest(account=acct, credit_type=credit_type, amount=amount, **kw),
        metadata=SERVICE_MD,
        timeout=10,
    )


def make_due(db: Database, acct: str, grant_id: str) -> None:
    """The grant's expiry moved to a moment ago, not yet recorded (as if the clock had passed
    it): the stored balance is no longer exact, and a read must apply the expiry."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    with db.transaction() as session:
        session.execute(
            update(CreditBalance)
            .where(CreditBalance.billing_account_id == acct)
            .values(next_event_at=past)
        )
        session.execute(
            update(CreditGrant).where(CreditGrant.id == grant_id).values(expire_at=past)
        )


def debit(channel: grpc.Channel, acct: str, amount: str, credit_type: str = "units", **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("request_id", rid())
    return stub(channel).DebitCredits(
        credit_pb2.DebitCreditsRequest(account=acct, credit_type=credit_type, amount=amount, **kw),
        metadata=SERVICE_MD,
        timeout=10,
    )


def reserve(channel: grpc.Channel, acct: str, amount: str, credit_type: str = "units", **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("request_id", rid())
    return stub(channel).ReserveCredits(
        credit_pb2.ReserveCreditsRequest(
            account=acct, credit_type=credit_type, amount=amount, **kw
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def balance(channel: grpc.Channel, acct: str, credit_type: str = "units", metadata=SERVICE_MD):  # type: ignore[no-untyped-def]
    return stub(channel).GetBalance(
        credit_pb2.GetBalanceRequest(account=acct, type=credit_type),
        metadata=metadata,
        timeout=10,
    )


def call(channel: grpc.Channel, method: str, request, metadata=SERVICE_MD):  # type: ignore[no-untyped-def]
    return getattr(stub(channel), method)(keyed(request), metadata=metadata, timeout=10)


def fails(code: grpc.StatusCode, reason: str, fn, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code() == code, exc.value.details()
    assert error_reason(exc.value) == reason, exc.value.details()
    return exc.value


def error_metadata(err: grpc.RpcError) -> dict[str, str]:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return dict(info.metadata)
    return {}


__all__ = ["SERVICE_MD", "bearer_md"]


# -- invariants -----------------------------------------------------------------------------


def check_invariants(session: Session, *accounts: str) -> dict[tuple[str, str], Decimal]:
    """Assert the ledger invariants of every balance (of the accounts named, when some are: a
    test on a database shared by its module checks its own); returns the balances.

    Per (account, credit type):
    - balance = grants - debits - expirations - voids - overage paid back - open holds = the
      sum of the ledger, and it is never negative; reserved = open holds = what grants hold;
    - overage = the sum of the ledger's overage column (OVERAGE entries less OVERAGE_PAID),
      never negative; an OVERAGE_PAID entry is a grant paying back, right after its GRANT;
    - every sum is exact (`amounts.CONTEXT`, never Python's 28-digit default);
    - entries are numbered 1..seq without gaps, each balance_after is the running total;
    - the free credit of the grants is the balance, no grant holds more than it was given;
    - no request_id ever produced two debits; no usage event burned twice for one metric.
    """
    balances = {
        (b.billing_account_id, b.credit_type): b
        for b in session.execute(select(CreditBalance)).scalars()
        if not accounts or b.billing_account_id in accounts
    }
    entries: dict[tuple[str, str], list[CreditLedgerEntry]] = defaultdict(list)
    for e in session.execute(select(CreditLedgerEntry).order_by(CreditLedgerEntry.seq)).scalars():
        entries[(e.billing_account_id, e.credit_type)].append(e)
    grants: dict[tuple[str, str], list[CreditGrant]] = defaultdict(list)
    for g in session.execute(select(CreditGrant)).scalars():
        grants[(g.billing_account_id, g.credit_type)].append(g)
    holds: dict[tuple[str, str], list[CreditReservation]] = defaultdict(list)
    for r in session.execute(select(CreditReservation)).scalars():
        holds[(r.billing_account_id, r.credit_type)].append(r)
    if accounts:
        entries = defaultdict(list, {k: v for k, v in entries.items() if k[0] in accounts})
    assert set(entries) <= set(balances)
    out = {}
    for key, b in balances.items():
        rows = entries[key]
        assert [e.seq for e in rows] == list(range(1, b.seq + 1)), key
        by_kind: dict[str, Decimal] = defaultdict(Decimal)
        running = owed = ZERO
        previous: CreditLedgerEntry | None = None
        for e in rows:
            running = amounts.add(running, e.amount)
            owed = amounts.add(owed, e.overage)
            by_kind[e.kind] = amounts.add(by_kind[e.kind], e.amount)
            assert e.balance_after == running, (key, e.seq)
            assert running >= 0 and owed >= 0, (key, e.seq)
            if e.kind == "overage":
                assert e.amount == 0 and e.overage > 0, (key, e.seq)
            elif e.kind == "overage_paid":
                assert e.amount == e.overage < 0, (key, e.seq)
                assert previous is not None and previous.kind == "grant", (key, e.seq)
                assert previous.grant_id == e.grant_id, (key, e.seq)
            else:
                assert e.overage == 0, (key, e.seq)
            previous = e
        open_holds = amounts.neg(amounts.add(by_kind["reservation"], by_kind["release"]))
        assert b.balance == running, key
        assert b.overage == owed, key
        assert b.balance == amounts.sub(
            amounts.add(
                by_kind["grant"],
                by_kind["debit"],
                by_kind["expiration"],
                by_kind["void"],
                by_kind["overage_paid"],
            ),
            open_holds,
        ), key
        assert b.balance >= 0 and b.reserved >= 0, key
        held = [r for r in holds[key] if r.state == "held"]
        assert b.reserved == open_holds == amounts.total(r.amount for r in held), key
        assert amounts.total(g.held for g in grants[key]) == b.reserved, key
        assert amounts.total(g.remaining for g in grants[key]) == b.balance, key
        assert by_kind["grant"] == amounts.total(g.amount for g in grants[key]), key
        for g in grants[key]:
            assert ZERO <= g.remaining and ZERO <= g.held, g.id
            assert amounts.add(g.remaining, g.held) <= g.amount, g.id
        debit_keys = [
            (e.request_id, e.reservation_id) for e in rows if e.kind == "debit" and not _is_burn(e)
        ]
        assert len(debit_keys) == len(set(debit_keys)), key
        # Usage burns have no request id: each names its events, and an event burns once
        # per metric.
        for kind in ("debit", "overage"):
            burned = [
                (e.reason, uid)
                for e in rows
                if _is_burn(e, kind)
                for uid in json.loads((e.attributes or {})["event_ids"])
            ]
            assert len(burned) == len(set(burned)), key
        out[key] = b.balance
    return out


def _is_burn(e: CreditLedgerEntry, kind: str = "debit") -> bool:
    return e.kind == kind and e.request_id == "" and e.reason.startswith("usage:")


def check_invariants_at(url: str) -> dict[tuple[str, str], Decimal]:
    engine = create_engine(normalize_url(url))
    try:
        with Session(engine) as session:
            return check_invariants(session)
    finally:
        engine.dispose()
