"""WatchNotifications resumed from a cursor that no response can have carried: one past the
newest position handed out. Positions only grow (the next is the largest + 1), so such a
cursor is tampered with or belongs to another database; followed, it would silently skip
every notification up to it as they come. It is refused like a malformed one."""

from __future__ import annotations

import uuid

import grpc
import pytest
from sqlalchemy import func, select

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason
from tests.notifications.support import enqueue
from tollbooth.db.models import NotificationOutbox
from tollbooth.deps import Deps
from tollbooth.notifications.delivery import Deliverer, Policy


@pytest.fixture(scope="module")
def stub(shared_channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(shared_channel)


def positioned(deps: Deps) -> int:
    """Positions for every committed row; the newest position."""
    deliverer = Deliverer(deps.db, Policy())
    try:
        deliverer.fan_out()
    finally:
        deliverer.close()
    with deps.db.transaction(readonly=True) as s:
        return int(s.scalar(select(func.max(NotificationOutbox.position))) or 0)


def refused(stub, cursor: str) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.WatchNotifications(
                pb.WatchNotificationsRequest(cursor=cursor), metadata=SERVICE_MD, timeout=10
            )
        )
    return err.value


@pytest.mark.parametrize("ahead", [1, 10**6, 10**18])
def test_a_cursor_past_the_newest_notification_is_refused(stub, shared_deps, ahead: int) -> None:  # type: ignore[no-untyped-def]
    enqueue(shared_deps.db, "credits.granted", f"acct_{uuid.uuid4().hex[:8]}", {"amount": "1"})
    newest = positioned(shared_deps)
    err = refused(stub, str(newest + ahead))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err) == "CURSOR_INVALID"


def test_the_newest_cursor_resumes_with_what_comes_next(stub, shared_deps) -> None:  # type: ignore[no-untyped-def]
    acct = f"acct_{uuid.uuid4().hex[:8]}"
    enqueue(shared_deps.db, "credits.granted", acct, {"amount": "1"})
    newest = positioned(shared_deps)
    later = enqueue(shared_deps.db, "invoice.paid", acct, {})
    positioned(shared_deps)
    stream = stub.WatchNotifications(
        pb.WatchNotificationsRequest(cursor=str(newest)), metadata=SERVICE_MD, timeout=30
    )
    first = next(iter(stream))
    stream.cancel()
    assert first.notification.notification_id == later
    assert int(first.cursor) == newest + 1
