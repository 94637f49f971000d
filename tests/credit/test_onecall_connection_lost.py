"""DebitCredits in one call (`tollbooth.credit.onecall`, the `tollbooth_debit` function) when
PostgreSQL drops the server's connection: while the call waits at the balance lock, while it
waits at a grant's row lock (its writes), and after its statement committed, before the
server reads the answer.

As for the two flushes (test_onetrip_connection_lost.py; both use
tests/credit/lost_connection.py): the caller gets UNAVAILABLE SERVICE_UNAVAILABLE, a killed
call leaves nothing (balance, grants, ledger, idempotency key: the statement was its own
transaction), and the retry with the same request_id debits exactly once, or answers the
stored response of the debit that committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.credit.lost_connection import (
    BALANCE_LOCK,
    GRANTS_LOCK,
    CutAfter,
    Served,
    check_killed_then_once,
    check_lost_then_replayed,
    funded_debit,
    kill_at_lock,
    served_through_cut,
    served_with_pids,
)
from tollbooth.credit import onetrip
from tollbooth.deps import Deps

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def served(pg_shared_url: str) -> Iterator[Served]:
    with served_with_pids(pg_shared_url) as it:
        yield it


@pytest.fixture(autouse=True)
def one_call_only() -> Iterator[list[int]]:
    """Counts the debits the one call handed to the two flushes (none here)."""
    handed: list[int] = []
    debit = onetrip.debit

    def counted(*args: Any, **kwargs: Any) -> Any:
        handed.append(1)
        return debit(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onetrip, "debit", counted)
        yield handed


@pytest.mark.parametrize("lock", [BALANCE_LOCK, GRANTS_LOCK], ids=["balance", "grants"])
def test_a_connection_killed_in_the_call_is_unavailable_and_the_retry_debits_once(
    served: Served, lock: str, one_call_only: list[int]
) -> None:
    channel, deps, _pids, _url = served
    _acct, request = funded_debit(channel)
    check_killed_then_once(channel, deps, request, lambda: kill_at_lock(served, request, lock))
    assert one_call_only == []  # every attempt was the one call


def _debit_answered(message: bytes) -> bool:
    """The DataRow of a `tollbooth_debit` call that debited (its transaction commits with the
    statement)."""
    return message[:1] == b"D" and b"debited" in message


@pytest.fixture(scope="module")
def proxied(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Deps, CutAfter]]:
    with served_through_cut(pg_shared_url, _debit_answered) as it:
        yield it


def test_an_answer_lost_after_the_call_committed_is_unavailable_and_the_retry_replays(
    proxied: tuple[grpc.Channel, Deps, CutAfter], one_call_only: list[int]
) -> None:
    channel, deps, proxy = proxied
    _acct, request = funded_debit(channel)
    check_lost_then_replayed(channel, deps, proxy, request)
    assert one_call_only == []
