"""kill -9 of a delivery process mid-batch loses nothing and records nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from tests.conftest import make_env
from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tollbooth.db import Database
from tollbooth.db.models import NotificationAttempt, NotificationDelivery
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def start(url: str, tmp_path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        **make_env(
            url,
            BILLING_DATA_DIR=str(tmp_path),
            BILLING_NOTIFY_SENDERS="2",
            BILLING_NOTIFY_TIMEOUT_SEC="1",
            # The killed process's leases (2 x deadline + 10 s) run out after 14 s, not 30.
            BILLING_NOTIFY_DEADLINE_SEC="2",
            BILLING_NOTIFY_RETRY_FIRST_MS="100",
            BILLING_NOTIFY_POLL_MS="50",
        ),
    }
    with open(tmp_path / "notifications.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tollbooth.cli", "serve-notifications"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(400)
def test_kill_9_mid_batch_loses_nothing_and_doubles_nothing(db, pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(delay_sec=0.1)  # slow enough that a batch is in flight when killed
    server = ReceiverServer(receiver)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with db.transaction() as s:
            _, receiver.secret = endpoints.create(s, endpoints.Fields(url=receiver.url), utcnow())
        sent: dict[str, list[str]] = {f"acct_{i}": [] for i in range(12)}
        for n in range(3):
            for acct in sent:
                sent[acct].append(enqueue(db, "credits.granted", acct, {"amount": str(n)}))
        total = sum(len(v) for v in sent.values())
        procs.append(start(pg_url, tmp_path))
        receiver.wait_for(5, timeout=150)  # a loaded machine starts Python slowly
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=10)
        killed_after = len(receiver.accepted)
        assert killed_after < total  # it was mid-way
        procs.append(start(pg_url, tmp_path))
        receiver.wait_for(total, timeout=150)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
        server.close()
    # nothing lost, in order per account
    for acct, ids in sent.items():
        assert [m["id"] for m in receiver.accepted if m["data"]["accountId"] == acct] == ids
    with db.transaction(readonly=True) as s:
        states = s.execute(
            select(NotificationDelivery.state, func.count()).group_by(NotificationDelivery.state)
        ).all()
        ok_attempts = s.execute(
            select(NotificationAttempt.notification_id, func.count())
            .where(NotificationAttempt.status_code == 204)
            .group_by(NotificationAttempt.notification_id)
        ).all()
    assert states == [("delivered", total)]
    # nothing recorded twice: one accepted attempt per message
    assert len(ok_attempts) == total and {n for _, n in ok_attempts} == {1}
    # a message POSTed again was only one whose answer the killed process never recorded:
    # at most what it had in flight (its senders)
    doubled = [i for i, n in receiver.ok_posts.items() if n > 1]
    assert len(doubled) <= 2
