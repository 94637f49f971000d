"""The version reads of a process are coalesced (`tollbooth.db.versions.read`): one in flight at
a time; a call that begins while one is in flight waits for the next one (sent after it began,
so it holds every change committed before the call), shared by every call that waited with it;
an error of the shared read reaches each of them, and nobody waits on after it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.catalog.support import poll
from tollbooth.db import Database, versions

pytestmark = pytest.mark.postgres

CALLS = 16
WAIT_SEC = 10.0


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


class HeldReads:
    """`db.read_one` wrapped: every statement counted; the first one, once answered, held
    until `release()` (an in-flight read whose answer predates what happens meanwhile);
    `fail` makes every later one raise as a lost database does, `fail_held` the held one
    once released."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements = 0
        self.held = threading.Event()  # the first read has its answer and is held
        self._gate = threading.Event()
        self.fail = False
        self.fail_held = False
        read_one = db.read_one

        def wrapped(sql: str, params: Any, **kw: Any) -> Any:
            self.statements += 1
            first = self.statements == 1
            if not first and self.fail:
                raise OperationalError(sql, dict(params), Exception("connection refused"))
            row = read_one(sql, params, **kw)
            if first:
                self.held.set()
                self._gate.wait(WAIT_SEC)
                if self.fail_held:
                    raise OperationalError(sql, dict(params), Exception("connection lost"))
            return row

        monkeypatch.setattr(db, "read_one", wrapped)

    def release(self) -> None:
        self._gate.set()


def _threads(n: int, work: Callable[[int], Any]) -> tuple[list[threading.Thread], dict[int, Any]]:
    """`work(i)` on n started threads; what each returned or raised, by i."""
    got: dict[int, Any] = {}

    def run(i: int) -> None:
        try:
            got[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            got[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, got


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(WAIT_SEC)
    assert not any(t.is_alive() for t in threads), "a caller still waits"


def _bump_catalog(db: Database) -> None:
    """A catalog change committed straight on the database (as another replica's)."""
    with db.transaction() as session:
        session.execute(text("UPDATE catalog_version SET version = version + 1 WHERE id = 1"))


def _set_holdings(db: Database, versions_of: dict[str, int]) -> None:
    with db.transaction() as session:
        for account, version in versions_of.items():
            session.execute(
                text(
                    "INSERT INTO holdings_version (billing_account_id, version) VALUES (:a, :v) "
                    "ON CONFLICT (billing_account_id) DO UPDATE SET version = :v"
                ),
                {"a": account, "v": version},
            )


def test_calls_that_wait_together_share_one_statement_each_with_its_own_account(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = {f"acct_co{i}": 100 + i for i in range(CALLS)}
    _set_holdings(db, accounts)
    reads = HeldReads(db, monkeypatch)
    first, first_got = _threads(1, lambda _: versions.read(db))
    assert reads.held.wait(WAIT_SEC)
    names = sorted(accounts)
    waiting, got = _threads(CALLS, lambda i: versions.read(db, names[i]))
    coalescer = versions._coalescers.of(db)
    assert poll(lambda: coalescer.waiting() >= CALLS, WAIT_SEC)
    reads.release()
    _join(first + waiting)
    assert reads.statements == 2  # the held one, then one for every call that waited
    assert not isinstance(first_got[0], BaseException)
    for i, name in enumerate(names):
        assert got[i].account_id == name
        assert got[i].account == accounts[name]
        assert got[i].catalog == first_got[0].catalog
    assert versions.read(db, "acct_none").account is None  # no row yet


def test_a_call_begun_while_a_read_is_in_flight_sees_a_change_committed_before_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = HeldReads(db, monkeypatch)
    first, first_got = _threads(1, lambda _: versions.read(db))
    assert reads.held.wait(WAIT_SEC)  # answered before the change, not handed back yet
    _bump_catalog(db)
    waiting, got = _threads(CALLS, lambda _: versions.read(db))
    coalescer = versions._coalescers.of(db)
    assert poll(lambda: coalescer.waiting() >= CALLS, WAIT_SEC)
    reads.release()
    _join(first + waiting)
    old = first_got[0].catalog
    assert old is not None
    assert all(got[i].catalog == old + 1 for i in range(CALLS)), got


def test_many_threads_each_see_every_change_committed_before_it_began(db: Database) -> None:
    """No hold: many threads read in a loop while changes commit; a read begun after a
    change's commit answers with it (or a later one)."""
    committed = [versions.read(db).catalog or 0]  # the versions committed, in order
    stop = threading.Event()

    def reader(_: int) -> int:
        n = 0
        while not stop.is_set():
            floor = committed[-1]
            seen = versions.read(db).catalog
            assert seen is not None and seen >= floor, (seen, floor)
            n += 1
        return n

    threads, got = _threads(8, reader)
    for _ in range(30):
        _bump_catalog(db)
        committed.append(committed[-1] + 1)
    stop.set()
    _join(threads)
    for i in range(8):
        assert not isinstance(got[i], BaseException), got[i]


def test_an_error_in_the_shared_read_reaches_every_caller_and_the_next_read_runs(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = HeldReads(db, monkeypatch)
    first, first_got = _threads(1, lambda _: versions.read(db))
    assert reads.held.wait(WAIT_SEC)
    reads.fail = True
    waiting, got = _threads(CALLS, lambda i: versions.read(db, f"acct_err{i}"))
    coalescer = versions._coalescers.of(db)
    assert poll(lambda: coalescer.waiting() >= CALLS, WAIT_SEC)
    reads.release()
    _join(first + waiting)
    assert not isinstance(first_got[0], BaseException)
    assert all(isinstance(got[i], OperationalError) for i in range(CALLS)), got
    assert reads.statements == 2
    reads.fail = False
    assert versions.read(db).catalog == first_got[0].catalog  # nobody holds the turn


def test_the_calls_waiting_behind_a_failed_read_fail_with_it_unsent(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failed while they waited: they answer as their own read would, at once,
    not after another attempt; the call after them reads afresh."""
    reads = HeldReads(db, monkeypatch)
    reads.fail_held = True
    first, first_got = _threads(1, lambda _: versions.read(db))
    assert reads.held.wait(WAIT_SEC)
    waiting, got = _threads(CALLS, lambda i: versions.read(db, f"acct_behind{i}"))
    coalescer = versions._coalescers.of(db)
    assert poll(lambda: coalescer.waiting() >= CALLS, WAIT_SEC)
    reads.release()
    _join(first + waiting)
    assert isinstance(first_got[0], OperationalError)
    assert all(got[i] is first_got[0] for i in range(CALLS)), got
    assert reads.statements == 1
    assert versions.read(db).catalog is not None  # nobody holds the turn
    assert reads.statements == 2


def test_listings_on_a_dead_database_answer_unavailable_each(pg_shared_url: str) -> None:
    """The database gone while listings answer from memory: each of many concurrent
    ListProducts and ListPrices, whose version reads are shared, answers UNAVAILABLE
    SERVICE_UNAVAILABLE (as one read of its own did), none waits on."""
    import grpc

    from billing.v1 import catalog_pb2
    from tests.catalog.support import call, product
    from tests.conftest import make_env
    from tests.devstack import serving
    from tests.helpers import error_reason
    from tests.tcpproxy import Proxy
    from tollbooth.app import Deps
    from tollbooth.config import Settings

    proxy = Proxy.to(pg_shared_url)
    deps = Deps.build(Settings.from_env(make_env(proxy.through(pg_shared_url))))
    try:
        with serving(deps) as channel:
            owner = product(channel, "Dead").product_id
            listings = [
                ("ListProducts", catalog_pb2.ListProductsRequest()),
                ("ListPrices", catalog_pb2.ListPricesRequest(product_id=owner)),
            ]
            for method, request in listings:
                call(channel, method, request)  # warm: the catalog kept
            proxy.play_dead()
            threads, got = _threads(CALLS, lambda i: call(channel, *listings[i % 2]) and None)
            _join(threads)
        for i in range(CALLS):
            assert isinstance(got[i], grpc.RpcError), got[i]
            assert got[i].code() == grpc.StatusCode.UNAVAILABLE, got[i]
            assert error_reason(got[i]) == "SERVICE_UNAVAILABLE"
    finally:
        proxy.close()
        deps.db.dispose()
