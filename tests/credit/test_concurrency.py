"""Proofs on PostgreSQL with two server processes against one database.

64 concurrent debits of 1 against a balance of 10, spread over two `serve-grpc` processes,
succeed exactly 10 times every round and the SQL invariants hold after each round (5 rounds;
100 with BILLING_SOAK=1). Replays and concurrent copies of one request apply once.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from billing.v1 import account_pb2, account_pb2_grpc, credit_pb2_grpc
from billing.v1 import credit_pb2 as c
from tests.checkout.support import wait_for
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import account, balance, call, check_invariants, grant, reserve
from tests.devstack import grpc_replicas
from tests.helpers import all_at_once as all_at_once_calls
from tests.helpers import error_reason, outcome
from tests.webhooks.test_refund_lock_order import waiting_on_a_lock
from tollbooth.db import normalize_url
from tollbooth.db.models import CreditLedgerEntry, NotificationOutbox

pytestmark = pytest.mark.postgres

ROUNDS = 100 if os.environ.get("BILLING_SOAK") == "1" else 5
CLIENTS = 64
BALANCE = 10


@pytest.fixture
def pg_url(pg_shared_url: str) -> str:
    """The database the module's two servers share; each test makes its own accounts."""
    return pg_shared_url


@pytest.fixture(scope="module")
def servers(pg_shared_url: str) -> Iterator[list[int]]:
    """Two billing server processes on free loopback ports, one PostgreSQL database, started
    once for the module."""
    with grpc_replicas(make_env(pg_shared_url)) as ports:
        yield ports


@pytest.fixture(scope="module")
def channels(servers: list[int]) -> Iterator[list[grpc.Channel]]:
    """One channel per client, alternating between the two servers."""
    chans = [grpc.insecure_channel(f"127.0.0.1:{servers[i % 2]}") for i in range(CLIENTS)]
    for ch in chans:
        grpc.channel_ready_future(ch).result(timeout=30)
    yield chans
    for ch in chans:
        ch.close()


def debit_request(
    principal: str, amount: str = "1", key: str | None = None
) -> c.DebitCreditsRequest:
    return c.DebitCreditsRequest(
        account=principal, credit_type="units", amount=amount, request_id=key or uuid.uuid4().hex
    )


def all_at_once(channels: list[grpc.Channel], requests: list[c.DebitCreditsRequest]) -> list:  # type: ignore[type-arg]
    """Request i on channel i mod len(channels), every client released at the same moment."""
    stubs = [credit_pb2_grpc.CreditServiceStub(ch) for ch in channels]

    def send(i: int) -> Callable[[], c.CreditDebit]:
        stub, request = stubs[i % len(stubs)], requests[i]
        return lambda: stub.DebitCredits(request, metadata=SERVICE_MD, timeout=60)

    return all_at_once_calls([send(i) for i in range(len(requests))])


@pytest.mark.soak
def test_concurrent_debits_over_two_servers_never_overspend(pg_url, channels) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(normalize_url(pg_url))
    try:
        for round_no in range(ROUNDS):
            principal, acct_id, _ = account(channels[0])
            grant(channels[1], principal, str(BALANCE))
            requests = [debit_request(principal) for _ in range(CLIENTS)]
            results = all_at_once(channels, requests)
            ok = [
                (req, r)
                for req, r in zip(requests, results, strict=True)
                if isinstance(r, c.CreditDebit)
            ]
            refused = Counter(
                (r.code(), error_reason(r)) for r in results if isinstance(r, grpc.RpcError)
            )
            assert len(ok) == BALANCE, f"round {round_no}: {len(ok)} succeeded"
            assert refused == {
                (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS"): CLIENTS - BALANCE
            }
            assert sorted(r.balance_after for _, r in ok) == [str(n) for n in range(BALANCE)]
            with Session(engine) as s:
                balances = check_invariants(s, acct_id)
                assert balances[(acct_id, "units")] == 0
                debits = s.execute(
                    select(CreditLedgerEntry.request_id).where(
                        CreditLedgerEntry.billing_account_id == acct_id,
                        CreditLedgerEntry.kind == "debit",
                    )
                ).scalars()
                assert sorted(debits) == sorted(req.request_id for req, _ in ok)
                notified = s.execute(
                    select(func.count())
                    .select_from(NotificationOutbox)
                    .where(NotificationOutbox.billing_account_id == acct_id)
                    .where(NotificationOutbox.type == "credits.balance_depleted")
                ).scalar()
                assert notified == 1
            # A replay after the balance drained, on the other server, returns the original.
            req, first = ok[0]
            sent_on = requests.index(req)
            other = credit_pb2_grpc.CreditServiceStub(channels[(sent_on + 1) % CLIENTS])
            assert other.DebitCredits(req, metadata=SERVICE_MD, timeout=30) == first
    finally:
        engine.dispose()


def test_a_replay_after_drain_returns_the_original_and_another_amount_is_refused(channels) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channels[0])
    grant(channels[0], principal, "3")
    key = uuid.uuid4().hex
    one, two = (credit_pb2_grpc.CreditServiceStub(ch) for ch in channels[:2])
    first = one.DebitCredits(debit_request(principal, "3", key), metadata=SERVICE_MD, timeout=30)
    assert first.balance_after == "0"
    assert (
        two.DebitCredits(debit_request(principal, "3", key), metadata=SERVICE_MD, timeout=30)
        == first
    )
    with pytest.raises(grpc.RpcError) as exc:
        two.DebitCredits(debit_request(principal, "2", key), metadata=SERVICE_MD, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "IDEMPOTENCY_KEY_REUSED"


def test_concurrent_copies_of_one_debit_apply_once(pg_url, channels) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channels[0])
    grant(channels[0], principal, "10")
    request = debit_request(principal, "4")
    results = all_at_once(channels[:16], [request] * 16)
    assert all(isinstance(r, c.CreditDebit) for r in results), results
    assert len({r.SerializeToString() for r in results}) == 1
    engine = create_engine(normalize_url(pg_url))
    try:
        with Session(engine) as s:
            assert check_invariants(s, acct_id)[(acct_id, "units")] == 6
    finally:
        engine.dispose()


SETTLE_ROUNDS = 6


def settle(channel: grpc.Channel, kind: str, principal: str, reservation_id: str):  # type: ignore[no-untyped-def]
    if kind == "commit":
        return call(
            channel,
            "CommitReservation",
            c.CommitReservationRequest(
                account=principal, reservation_id=reservation_id, amount="4"
            ),
        )
    if kind == "release":
        return call(
            channel,
            "ReleaseReservation",
            c.ReleaseReservationRequest(account=principal, reservation_id=reservation_id),
        )
    raise AssertionError(kind)


def test_commit_and_release_of_one_hold_at_once_settle_it_once(pg_url, channels) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(normalize_url(pg_url))
    try:
        for _ in range(SETTLE_ROUNDS):
            principal, acct_id, _ = account(channels[0])
            grant(channels[0], principal, "10")
            hold = reserve(channels[1], principal, "6")
            committed, released = all_at_once_calls(
                [
                    lambda p=principal, h=hold: settle(channels[0], "commit", p, h.reservation_id),
                    lambda p=principal, h=hold: settle(channels[1], "release", p, h.reservation_id),
                ]
            )
            outcomes = [outcome(committed), outcome(released)]
            assert sorted(outcomes) == ["FAILED_PRECONDITION/RESERVATION_CLOSED", "OK"], outcomes
            now = balance(channels[0], principal)
            assert (now.balance, now.reserved) == (
                ("6", "0") if outcomes[0] == "OK" else ("10", "0")
            )
            with Session(engine) as s:
                check_invariants(s, acct_id)
    finally:
        engine.dispose()


def test_concurrent_voids_of_one_grant_void_it_once(pg_url, channels) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channels[0])
    made = grant(channels[0], principal, "10")
    results = all_at_once_calls(
        [
            lambda i=i: call(
                channels[i],
                "VoidGrant",
                c.VoidGrantRequest(account=principal, grant_id=made.grant_id),
            )
            for i in range(8)
        ]
    )
    assert sorted(outcome(r) for r in results) == ["FAILED_PRECONDITION/GRANT_VOIDED"] * 7 + ["OK"]
    assert balance(channels[1], principal).balance == "0"
    engine = create_engine(normalize_url(pg_url))
    try:
        with Session(engine) as s:
            check_invariants(s, acct_id)
            voids = s.scalar(
                select(func.count())
                .select_from(CreditLedgerEntry)
                .where(CreditLedgerEntry.billing_account_id == acct_id)
                .where(CreditLedgerEntry.kind == "void")
            )
            assert voids == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["commit", "release"])
def test_a_void_racing_a_settlement_of_its_hold_leaves_nothing_of_the_grant(  # type: ignore[no-untyped-def]
    pg_url, channels, kind
) -> None:
    """Parts of a voided grant under a hold are voided when the hold gives them back, whichever
    of the two runs first: nothing of the grant is left free or reserved."""
    engine = create_engine(normalize_url(pg_url))
    try:
        for _ in range(SETTLE_ROUNDS):
            principal, acct_id, _ = account(channels[0])
            made = grant(channels[0], principal, "10")
            hold = reserve(channels[1], principal, "6")
            results = all_at_once_calls(
                [
                    lambda p=principal, g=made: call(
                        channels[0],
                        "VoidGrant",
                        c.VoidGrantRequest(account=p, grant_id=g.grant_id),
                    ),
                    lambda p=principal, h=hold: settle(channels[1], kind, p, h.reservation_id),
                ]
            )
            assert [outcome(r) for r in results] == ["OK", "OK"]
            now = balance(channels[0], principal)
            assert (now.balance, now.reserved) == ("0", "0")
            with Session(engine) as s:
                check_invariants(s, acct_id)
    finally:
        engine.dispose()


def test_a_grant_racing_an_archive_is_refused_or_seen_by_it(pg_url, channels) -> None:  # type: ignore[no-untyped-def]
    """An archived account takes no new grant. A grant that passed the check while the archive
    was on its way either is refused or commits before the archive does: once ArchiveAccount
    has answered, no grant can still appear. The balance row is held (as a concurrent debit
    holds it) so that the grant waits between its check and its commit, every time."""
    principal, acct_id, _ = account(channels[0])
    grant(channels[0], principal, "1")  # the balance row exists
    url = normalize_url(pg_url)
    engine = create_engine(url)
    granted: list[object] = []
    seen_after_archive: list[str] = []

    def archive() -> None:
        account_pb2_grpc.AccountServiceStub(channels[1]).ArchiveAccount(
            account_pb2.ArchiveAccountRequest(account=principal, request_id=uuid.uuid4().hex),
            metadata=SERVICE_MD,
            timeout=60,
        )
        seen_after_archive.append(balance(channels[1], principal).balance)

    try:
        with engine.connect() as holder:
            holder.execute(
                text(
                    "SELECT 1 FROM credit_balances WHERE billing_account_id = :a"
                    " AND credit_type = 'units' FOR UPDATE"
                ),
                {"a": acct_id},
            )
            granting = threading.Thread(
                target=lambda: granted.append(
                    all_at_once_calls([lambda: grant(channels[0], principal, "10")])[0]
                )
            )
            granting.start()
            wait_for(lambda: waiting_on_a_lock(url) >= 1, what="the grant to wait")
            archiving = threading.Thread(target=archive)
            archiving.start()
            wait_for(
                lambda: seen_after_archive or waiting_on_a_lock(url) >= 2,
                what="the archive to answer or wait",
            )
            holder.rollback()
        granting.join(60)
        archiving.join(60)
    finally:
        engine.dispose()
    (result,) = granted
    if outcome(result) == "OK":
        assert seen_after_archive == ["11"]  # the archive answered after the grant committed
    else:
        assert outcome(result) == "FAILED_PRECONDITION/ACCOUNT_ARCHIVED"
        assert seen_after_archive == ["1"]
    assert balance(channels[0], principal).balance == seen_after_archive[0]
