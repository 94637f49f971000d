"""A hypothesis state machine drives grants, debits, holds, voids, replays and clock jumps
through the real gRPC server against a simple model, checking the invariants after every step.

The server's clock is the machine's (CreditServicer.clock is the one seam for time). The
model is deliberately naive: per-grant free credit, holds as per-grant portions, and "a grant
that is voided or past its expiry holds nothing" applied before every step. Default size is
modest; BILLING_SOAK=1 runs many more and longer examples.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from billing.v1 import credit_pb2 as c
from tests.credit.support import account, call, check_invariants
from tests.helpers import error_reason
from tollbooth.credit.servicer import CreditServicer

SOAK = os.environ.get("BILLING_SOAK") == "1"
T0 = dt.datetime(2032, 3, 1, tzinfo=dt.UTC)
AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("12"), places=2)


@dataclass
class MGrant:
    seq: int
    priority: int
    expire_at: dt.datetime | None
    free: Decimal
    voided: bool = False

    def live(self, now: dt.datetime) -> bool:
        return not self.voided and (self.expire_at is None or self.expire_at > now)

    def key(self) -> tuple[int, dt.datetime, int]:
        return (self.priority, self.expire_at or dt.datetime.max.replace(tzinfo=dt.UTC), self.seq)


@dataclass
class MHold:
    amount: Decimal
    expire_at: dt.datetime
    portions: dict[str, Decimal]
    state: str = "held"


@dataclass
class Model:
    grants: dict[str, MGrant] = field(default_factory=dict)
    holds: dict[str, MHold] = field(default_factory=dict)

    def advance(self, now: dt.datetime) -> None:
        for h in self.holds.values():
            if h.state == "held" and h.expire_at <= now:
                h.state = "expired"
                for gid, amt in h.portions.items():
                    self.grants[gid].free += amt
        for g in self.grants.values():
            if not g.live(now):
                g.free = Decimal(0)

    def balance(self, now: dt.datetime) -> Decimal:
        self.advance(now)
        return sum((g.free for g in self.grants.values()), Decimal(0))

    def reserved(self, now: dt.datetime) -> Decimal:
        self.advance(now)
        return sum((h.amount for h in self.holds.values() if h.state == "held"), Decimal(0))

    def take(self, amount: Decimal, now: dt.datetime) -> list[tuple[str, Decimal]] | None:
        if self.balance(now) < amount:
            return None
        out = []
        for gid, g in sorted(self.grants.items(), key=lambda kv: kv[1].key()):
            if amount == 0:
                break
            part = min(g.free, amount)
            if part > 0:
                g.free -= part
                amount -= part
                out.append((gid, part))
        return out

    def settle_hold(self, hid: str, actual: Decimal, now: dt.datetime) -> None:
        h = self.holds[hid]
        left = actual
        for gid in sorted(h.portions, key=lambda g: self.grants[g].key()):
            part = min(h.portions[gid], left)
            left -= part
            self.grants[gid].free += h.portions[gid] - part
        h.state = "committed" if actual or h.state == "committing" else "released"
        self.advance(now)


def ts(moment: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def refused(fn) -> str | None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except grpc.RpcError as err:
        return error_reason(err)
    return None


def machine_for(channel: grpc.Channel, db, clock: list[dt.datetime]):  # type: ignore[no-untyped-def]
    class CreditMachine(RuleBasedStateMachine):
        grants = Bundle("grants")
        holds = Bundle("holds")
        debits = Bundle("debits")

        def __init__(self) -> None:
            super().__init__()
            clock[0] = clock[0] + dt.timedelta(days=1)  # each example starts later than the last
            self.principal, self.acct, _ = account(channel, f"sm-{uuid.uuid4().hex[:12]}")
            self.model = Model()

        @property
        def now(self) -> dt.datetime:
            return clock[0]

        def rpc(self, method: str, request):  # type: ignore[no-untyped-def]
            return call(channel, method, request)

        @rule(
            target=grants,
            amount=AMOUNTS,
            priority=st.integers(0, 2),
            expires=st.one_of(st.none(), st.integers(1, 900)),
        )
        def grant(self, amount, priority, expires):  # type: ignore[no-untyped-def]
            expire_at = None if expires is None else self.now + dt.timedelta(seconds=expires)
            g = self.rpc(
                "GrantCredits",
                c.GrantCreditsRequest(
                    account=self.principal,
                    credit_type="units",
                    amount=str(amount),
                    priority=priority,
                    expire_time=ts(expire_at) if expire_at else None,
                    request_id=uuid.uuid4().hex,
                ),
            )
            self.model.advance(self.now)
            self.model.grants[g.grant_id] = MGrant(
                len(self.model.grants), priority, expire_at, amount
            )
            return g.grant_id

        @rule(target=debits, amount=AMOUNTS)
        def debit(self, amount):  # type: ignore[no-untyped-def]
            request = c.DebitCreditsRequest(
                account=self.principal,
                credit_type="units",
                amount=str(amount),
                request_id=uuid.uuid4().hex,
            )
            expected = self.model.take(amount, self.now)
            if expected is None:
                assert refused(lambda: self.rpc("DebitCredits", request)) == "INSUFFICIENT_CREDITS"
                return (request, None)
            d = self.rpc("DebitCredits", request)
            assert [(a.grant_id, Decimal(a.amount)) for a in d.allocations] == expected
            return (request, d)

        @rule(debit=debits)
        def replay(self, debit):  # type: ignore[no-untyped-def]
            request, original = debit
            if original is None:
                # Refused before: nothing was stored, so the replay is a fresh attempt; skip it
                # unless the model says it would fail again.
                return
            assert self.rpc("DebitCredits", request) == original

        @rule(target=holds, amount=AMOUNTS, ttl=st.integers(1, 600))
        def reserve(self, amount, ttl):  # type: ignore[no-untyped-def]
            request = c.ReserveCreditsRequest(
                account=self.principal,
                credit_type="units",
                amount=str(amount),
                ttl_seconds=ttl,
                request_id=uuid.uuid4().hex,
            )
            taken = self.model.take(amount, self.now)
            if taken is None:
                assert (
                    refused(lambda: self.rpc("ReserveCredits", request)) == "INSUFFICIENT_CREDITS"
                )
                return None
            r = self.rpc("ReserveCredits", request)
            self.model.holds[r.reservation_id] = MHold(
                amount, self.now + dt.timedelta(seconds=ttl), dict(taken)
            )
            return r.reservation_id

        @rule(hold=holds, share=st.sampled_from(["0", "0.5", "1", "all"]))
        def commit(self, hold, share):  # type: ignore[no-untyped-def]
            if hold is None:
                return
            self.model.advance(self.now)
            h = self.model.holds[hold]
            actual = (
                h.amount
                if share == "all"
                else (h.amount * Decimal(share)).quantize(Decimal("0.01"))
            )
            request = c.CommitReservationRequest(
                account=self.principal,
                reservation_id=hold,
                amount="" if share == "all" else str(actual),
                request_id=uuid.uuid4().hex,
            )
            if h.state != "held":
                assert (
                    refused(lambda: self.rpc("CommitReservation", request)) == "RESERVATION_CLOSED"
                )
                return
            r = self.rpc("CommitReservation", request)
            assert Decimal(r.committed_amount) == actual
            h.state = "committing"
            self.model.settle_hold(hold, actual, self.now)

        @rule(hold=holds)
        def release(self, hold):  # type: ignore[no-untyped-def]
            if hold is None:
                return
            self.model.advance(self.now)
            h = self.model.holds[hold]
            request = c.ReleaseReservationRequest(account=self.principal, reservation_id=hold)
            if h.state == "committed":
                assert (
                    refused(lambda: self.rpc("ReleaseReservation", request)) == "RESERVATION_CLOSED"
                )
                return
            self.rpc("ReleaseReservation", request)
            if h.state == "held":
                self.model.settle_hold(hold, Decimal(0), self.now)

        @rule(g=consumes(grants))
        def void(self, g):  # type: ignore[no-untyped-def]
            self.model.advance(self.now)
            self.rpc("VoidGrant", c.VoidGrantRequest(account=self.principal, grant_id=g))
            self.model.grants[g].voided = True
            self.model.advance(self.now)

        @rule(seconds=st.sampled_from([1, 30, 120, 400, 1000]))
        def tick(self, seconds):  # type: ignore[no-untyped-def]
            clock[0] = clock[0] + dt.timedelta(seconds=seconds)

        @rule()
        def list_ledger(self):  # type: ignore[no-untyped-def]
            # A read-for-write: records due expiries; must not change any figure.
            self.rpc("ListLedgerEntries", c.ListLedgerEntriesRequest(account=self.principal))

        @invariant()
        def figures_match_the_model_and_sql_invariants_hold(self):  # type: ignore[no-untyped-def]
            b = self.rpc("GetBalance", c.GetBalanceRequest(account=self.principal, type="units"))
            assert Decimal(b.balance) == self.model.balance(self.now)
            assert Decimal(b.reserved) == self.model.reserved(self.now)
            assert Decimal(b.balance) >= 0
            with db.transaction() as s:
                check_invariants(s, self.acct)

    return CreditMachine


@pytest.mark.soak
@pytest.mark.timeout(900)  # room for hypothesis to shrink a failure to a short story
def test_the_ledger_matches_a_simple_model_under_random_operations(
    channel, db, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    clock = [T0]
    monkeypatch.setattr(CreditServicer, "clock", staticmethod(lambda: clock[0]))
    machine = machine_for(channel, db, clock)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=150 if SOAK else 12,
            stateful_step_count=50 if SOAK else 20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
