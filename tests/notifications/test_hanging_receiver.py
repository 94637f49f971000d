"""A receiver that hangs does not hold up the others (`Deliverer.run`, what
`serve-notifications` runs): the delivery process claims more whenever a sender is idle
instead of waiting for its whole batch, and one endpoint never has more than half the senders
in flight. On PostgreSQL, with real HTTP receivers that verify every signature."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer, Policy

pytestmark = pytest.mark.postgres

# A POST may take a minute: the hanging receiver is never cut off by the deadline here, so
# only the senders' sharing can let the healthy receiver's messages through.
POLICY = Policy(
    timeout_sec=60,
    deadline_sec=60,
    retry_first_sec=0.05,
    retry_max_sec=0.2,
    senders=4,
    poll_sec=0.02,
)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def _serve(receiver: Receiver, db: Database) -> ReceiverServer:
    server = ReceiverServer(receiver)
    with db.transaction() as session:
        _, receiver.secret = endpoints.create(session, endpoints.Fields(url=receiver.url), utcnow())
    return server


def _until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        time.sleep(0.05)  # poll (bounded)
    assert done(), what


def test_a_hanging_receiver_delays_only_its_own_messages(db: Database) -> None:
    hanging = Receiver(hang=threading.Event())
    healthy = Receiver()
    servers = [_serve(hanging, db), _serve(healthy, db)]
    # Six accounts: nothing orders their messages, so the hanging receiver could take them all.
    first = [enqueue(db, "invoice.paid", f"acct_hang{i}", {"n": i}) for i in range(6)]
    deliverer = Deliverer(db, POLICY)
    stop = threading.Event()
    runner = threading.Thread(target=deliverer.run, args=(stop,))
    runner.start()
    try:
        _until(lambda: sorted(healthy.ids()) == sorted(first), "the healthy receiver waited")
        assert hanging.hanging >= 1  # still holding its senders
        later = enqueue(db, "invoice.paid", "acct_hang_later", {})
        _until(lambda: later in healthy.ids(), "a later message waited for the hanging ones")
        assert hanging.hanging >= 1
        assert hanging.most_hanging <= 2
        assert hanging.accepted == []
        hanging.hang.set()  # type: ignore[union-attr]
        _until(lambda: len(hanging.accepted) == 7, "the hanging receiver's messages were lost")
    finally:
        stop.set()
        runner.join(timeout=120)
        deliverer.close()
        for server in servers:
            server.close()
    assert not runner.is_alive()
    assert sorted(hanging.ids()) == sorted([*first, later])
    for receiver in (hanging, healthy):  # each message POSTed once: nothing sent twice
        assert sorted(receiver.posts.elements()) == sorted([*first, later])


def test_two_hanging_receivers_do_not_starve_a_healthy_one(db: Database) -> None:
    """Two hanging endpoints may each hold half the senders: all of them. A sender that comes
    free then goes to the endpoint with the fewest in flight (the healthy one), never to
    a hanging endpoint's next message while the healthy one waits."""
    hanging = [Receiver(hang=threading.Event()), Receiver(hang=threading.Event())]
    healthy = Receiver()
    servers = [_serve(hanging[0], db), _serve(hanging[1], db), _serve(healthy, db)]
    sent = [enqueue(db, "invoice.paid", f"acct_two{i}", {"n": i}) for i in range(12)]
    deliverer = Deliverer(db, POLICY)
    stop = threading.Event()
    runner = threading.Thread(target=deliverer.run, args=(stop,))
    runner.start()
    try:
        _until(lambda: sorted(healthy.ids()) == sorted(sent), "the healthy receiver starved")
        assert all(h.accepted == [] for h in hanging)  # they still hang
    finally:
        for h in hanging:
            h.hang.set()  # type: ignore[union-attr]
        stop.set()
        runner.join(timeout=120)
        deliverer.close()
        for server in servers:
            server.close()
    assert not runner.is_alive()
    assert sorted(healthy.posts.elements()) == sorted(sent)  # each sent to it once
