"""DebitCredits' two flushes (`tollbooth.credit.onetrip`) when PostgreSQL drops the server's
connection: during the first flush, between the flushes, during the second.

The one-call path (`tollbooth.credit.onecall`) is turned off here (autouse fixture), so every
debit takes the two flushes, as one that the function hands back does; the one call's own
cases are in test_onecall_connection_lost.py.

The connection is killed for real (`pg_terminate_backend` from another session) at the named
moment, through a real gRPC channel: the caller gets UNAVAILABLE SERVICE_UNAVAILABLE (retry
with the same request_id), nothing of the debit is left (balance, grants, ledger, idempotency
key), the next calls get a live connection, and the retry with the same request_id debits
exactly once.

Moments: "during" a flush is the server's backend waiting on a row lock that another session
holds (the balance row for the first flush's SELECT ... FOR UPDATE, a grant row for the second
flush's UPDATE), found by its lock wait (`pg_blocking_pids`, `wait_event_type`), never by the
text of its statement, and checked to be the server's connection; whether the engine has
planned the debit yet tells which flush it waits in. "Between" is the engine's planning in
Python, while the first flush's balance lock is held.

And the ambiguous case: the second flush's COMMIT done, the connection cut before the server
reads its answer (a TCP proxy that drops the stream at COMMIT's CommandComplete). The caller
cannot know the debit was made; the retry with the same request_id answers the stored
response, and the account is debited once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from tests.credit.lost_connection import (
    BALANCE_LOCK,
    GRANTS_LOCK,
    CutAfter,
    Served,
    check_killed_then_once,
    check_lost_then_replayed,
    debit_in_thread,
    funded_debit,
    kill_at_lock,
    served_through_cut,
    served_with_pids,
    terminate,
)
from tollbooth.credit import debits, onecall
from tollbooth.deps import Deps

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def two_flushes_only() -> Iterator[None]:
    """Every debit through the two flushes: the one call hands each one back (a patch of its
    own, which the tests' `monkeypatch.undo()` leaves in place)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onecall, "debit", lambda *args, **kwargs: None)
        yield


@pytest.fixture(scope="module")
def served(pg_shared_url: str) -> Iterator[Served]:
    with served_with_pids(pg_shared_url) as it:
        yield it


def _planned(monkeypatch: Any) -> list[int]:
    """A list that grows by one each time the engine plans a debit (after the first flush)."""
    planned: list[int] = []
    plan = debits.plan_debit

    def counted(*args: Any, **kwargs: Any) -> Any:
        planned.append(1)
        return plan(*args, **kwargs)

    monkeypatch.setattr(debits, "plan_debit", counted)
    return planned


def _kill_in_flush(lock: str, planned_before: list[int]) -> Any:
    """Kill the server's backend while it waits on the rows `lock` selects; by then the engine
    has planned the debit `planned_before` times (which flush it is in)."""

    def kill(served: Served, request: Any, monkeypatch: Any) -> Any:
        planned = _planned(monkeypatch)

        def in_the_named_flush() -> None:
            assert planned == planned_before

        return kill_at_lock(served, request, lock, in_the_named_flush)

    return kill


# The first flush waits at the balance lock (after BEGIN and the key's claim), before the
# engine plans; the second (the debit's writes, the grants' UPDATE first) at a grant's lock.
_kill_during_first_flush = _kill_in_flush(BALANCE_LOCK, [])
_kill_during_second_flush = _kill_in_flush(GRANTS_LOCK, [1])


def _kill_between_flushes(served: Served, request: Any, monkeypatch: Any) -> Any:
    channel, _deps, pids, url = served
    planned = debits.plan_debit
    killed: list[int] = []

    def plan_after_the_kill(*args: Any, **kwargs: Any) -> Any:
        # The server thread, after the first flush: its connection holds the balance lock.
        with psycopg.connect(url, autocommit=True) as admin:
            pid = pids[threading.get_ident()]
            terminate(admin, pid)
        killed.append(pid)
        return planned(*args, **kwargs)

    monkeypatch.setattr(debits, "plan_debit", plan_after_the_kill)
    try:
        return debit_in_thread(channel, request)()
    finally:
        monkeypatch.undo()
        assert len(killed) == 1  # the two-flush path ran, and was cut there


@pytest.mark.parametrize(
    "kill",
    [_kill_during_first_flush, _kill_between_flushes, _kill_during_second_flush],
    ids=["during-first-flush", "between-flushes", "during-second-flush"],
)
def test_a_connection_killed_in_the_two_flushes_is_unavailable_and_the_retry_debits_once(
    served: Served, kill: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, deps, _pids, _url = served
    _acct, request = funded_debit(channel)
    check_killed_then_once(channel, deps, request, lambda: kill(served, request, monkeypatch))


def _commit_answered(message: bytes) -> bool:
    """COMMIT's CommandComplete: the transaction is committed; the client cannot know."""
    return message[:1] == b"C" and message[5:12] == b"COMMIT\0"


@pytest.fixture(scope="module")
def proxied(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Deps, CutAfter]]:
    """A server whose database connections are cut, when armed, at a COMMIT's answer."""
    with served_through_cut(pg_shared_url, _commit_answered) as it:
        yield it


def test_an_answer_lost_after_commit_is_unavailable_and_the_retry_replays_the_one_debit(
    proxied: tuple[grpc.Channel, Deps, CutAfter],
) -> None:
    channel, deps, proxy = proxied
    _acct, request = funded_debit(channel)
    check_lost_then_replayed(channel, deps, proxy, request)
