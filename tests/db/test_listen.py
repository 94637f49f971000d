"""One LISTEN connection per database and process (tollbooth.db.listen) carries the channels
of every in-memory view (the catalog snapshot, the holdings, the metric definitions); a lost
connection reconnects and every view drops what it kept."""

from __future__ import annotations

import os
import struct
import time

import pytest
from sqlalchemy import text

from tests.catalog.test_snapshot import SLACK_SEC, nicknames, poll, replica_process
from tests.entitlements.test_warm import _check, _seed
from tests.tcpproxy import Proxy
from tollbooth.catalog.snapshot import Snapshot
from tollbooth.db import Database
from tollbooth.db.listen import APPLICATION, BOUND_SEC, DEAD_AFTER_SEC, listener_of
from tollbooth.db.types import utcnow
from tollbooth.subscriptions import holdings
from tollbooth.usage import known_metrics

DEADLINE = BOUND_SEC + SLACK_SEC


def _listeners(db: Database, pid: int) -> list[int]:
    """The backends of process `pid`'s listening connections (their application_name)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"{APPLICATION}:{pid}"},
        )
        return [row[0] for row in rows]


@pytest.mark.postgres
def test_a_server_process_holds_one_listening_connection_for_every_view(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        account, _, _ = _seed(db)
        with replica_process(pg_url) as (channel, pid):
            # Every view in use: the catalog (ListPrices), the holdings (a boolean feature)
            # and the metric definitions (a metered one).
            product = account.replace("acct_", "prod_", 1)
            assert nicknames(channel, product) != []
            assert _check(channel, account, "pro").allowed
            assert _check(channel, account, "calls").allowed
            assert poll(lambda: _listeners(db, pid) != [], DEADLINE)
            assert len(_listeners(db, pid)) == 1
    finally:
        db.dispose()


@pytest.mark.postgres
def test_the_views_share_one_listener_and_each_reloads_after_it_reconnects(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_url)
    try:
        account, code, _ = _seed(db)
        snapshot, kept, metrics = Snapshot(db), holdings.of(db), known_metrics.of(db)
        listener = listener_of(db)
        assert {id(v._subscription.listener) for v in (snapshot, kept, metrics)} == {id(listener)}
        loads: list[object] = []
        load = metrics._load
        monkeypatch.setattr(metrics, "_load", lambda: loads.append(1) or load())

        def warm() -> bool:
            with db.transaction(readonly=True) as session:
                kept.get(session, account, utcnow())
            return (
                snapshot.get() is not None
                and metrics.get() is not None
                and kept.cached(account) is not None
            )

        assert poll(warm, DEADLINE)
        catalog, held, loaded = snapshot.get(), kept.cached(account), len(loads)
        assert metrics.get() is not None and len(loads) == loaded  # kept: no reload
        assert snapshot.get() is catalog and kept.cached(account) is held

        # The connection is lost: the listener reconnects and every view drops what it kept.
        with db.engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) pid"),
                {"pids": _listeners(db, os.getpid())},
            )
        assert poll(lambda: (c := snapshot.get()) is not None and c is not catalog, DEADLINE)
        # Back (the snapshot answers again): the holdings joined with it and dropped theirs.
        assert kept._subscription.alive() and kept.cached(account) is None
        assert poll(lambda: metrics.get() is not None and len(loads) > loaded, DEADLINE)
        known = metrics.get()
        assert known is not None and code in known.specs
        assert poll(warm, DEADLINE)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_silently_dead_connection_is_given_up_and_a_later_change_is_heard(
    pg_url: str,
) -> None:
    """The listener's connection goes silent (a black hole: no answer, no RST): the listener
    gives it up within its stated multiple of the bound, reconnects through a working path,
    and a catalog change committed afterwards is served."""
    proxy = Proxy.to(pg_url)
    db, direct = Database(proxy.through(pg_url)), Database(pg_url)
    try:
        account, _, _ = _seed(direct)
        snapshot, listener = Snapshot(db), listener_of(db)
        assert poll(lambda: snapshot.get() is not None, DEADLINE)
        connection = listener.generation
        (before,) = _listeners(direct, os.getpid())
        db.engine.dispose()  # the pool's connections are made anew: only the listener's is open
        proxy.black_hole()

        noticed = poll(lambda: listener.generation > connection, DEAD_AFTER_SEC + DEADLINE)
        assert noticed, "the listener still waits on its silent connection"
        assert poll(listener.alive, DEADLINE)
        assert set(_listeners(direct, os.getpid())) - {before}  # a new backend (the proxy's)
        product = account.replace("acct_", "prod_", 1)
        with direct.transaction() as session:
            session.execute(
                text("UPDATE products SET name = 'renamed' WHERE id = :p"), {"p": product}
            )
        assert poll(
            lambda: (c := snapshot.get()) is not None and c.by_id[product].name == "renamed",
            DEADLINE,
        )
    finally:
        db.dispose()
        direct.dispose()
        proxy.close()


def _ends(stream: bytes) -> list[tuple[bytes, int]]:
    """The whole server messages at the start of `stream`: (type byte, offset of its end)."""
    ends, at = [], 0
    while len(stream) >= at + 5:
        end = at + 1 + struct.unpack("!I", stream[at + 1 : at + 5])[0]
        if len(stream) < end:
            break
        ends.append((stream[at : at + 1], end))
        at = end
    return ends


@pytest.mark.postgres
def test_a_slow_heartbeat_answer_vouches_only_from_when_the_heartbeat_was_sent(
    pg_url: str,
) -> None:
    """A heartbeat answered late (the path back held): a change committed after PostgreSQL
    answered, its notification behind the answer, is more than the bound old when the answer
    arrives. The catalog kept from before it must not be served then (the heartbeat vouches
    from when it was sent, not from when its answer came)."""
    proxy = Proxy.to(pg_url)
    db, direct = Database(proxy.through(pg_url)), Database(pg_url)
    try:
        account, _, _ = _seed(direct)
        product = account.replace("acct_", "prod_", 1)
        snapshot, listener = Snapshot(db), listener_of(db)
        assert poll(lambda: snapshot.get() is not None, DEADLINE)
        db.engine.dispose()  # the pool's connections are made anew: only the listener's is open
        assert poll(lambda: proxy.connections() == 1, DEADLINE)
        proxy.hold()

        def answered() -> int | None:
            """Where the held stream's first heartbeat answer (its ReadyForQuery) ends."""
            (stream,) = proxy.held()
            return next((end for kind, end in _ends(stream) if kind == b"Z"), None)

        assert poll(lambda: answered() is not None, DEADLINE)
        answer = answered()
        with direct.transaction() as session:
            session.execute(
                text("UPDATE products SET name = 'renamed' WHERE id = :p"), {"p": product}
            )
        committed = time.monotonic()
        # The notification is held behind the answer.
        assert poll(lambda: b"A" in [k for k, e in _ends(proxy.held()[0]) if e > answer], DEADLINE)
        time.sleep(max(0.0, committed + BOUND_SEC * 1.5 - time.monotonic()))  # past the bound
        vouched = listener.vouched
        proxy.release(answer)  # the answer arrives, the notification not yet
        assert poll(lambda: listener.vouched != vouched, DEADLINE)
        served = snapshot.get()
        assert served is None or served.by_id[product].name == "renamed"
        proxy.release()
        assert poll(
            lambda: (c := snapshot.get()) is not None and c.by_id[product].name == "renamed",
            DEADLINE,
        )
    finally:
        db.dispose()
        direct.dispose()
        proxy.close()
