"""A resend that cannot be done is a clear 4xx with a stable reason and changes nothing, on
gRPC, the command line and the console alike (SQLite, then PostgreSQL).

A resend to a disabled endpoint was accepted: the message read PENDING, due now, and was not
sent (the delivery process sends nothing to a disabled endpoint), so every read told the
operator it was on its way. It is refused now: enable the endpoint, then resend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason, keyed
from tests.limits.support import server
from tests.notifications.support import enqueue
from tollbooth import errors
from tollbooth.console import inbox
from tollbooth.db.models import NotificationDelivery
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.notifications import messages, operator
from tollbooth.notifications.delivery import Deliverer, Policy

Stub = notification_pb2_grpc.NotificationServiceStub


@pytest.fixture
def world(database_url: str) -> Iterator[tuple[Stub, Deps, str, str]]:
    """A server, an endpoint, and a message it had delivered: (stub, deps, endpoint, message)."""
    with server(database_url) as (channel, deps, _):
        stub = Stub(channel)
        made = stub.CreateNotificationEndpoint(
            keyed(
                pb.CreateNotificationEndpointRequest(
                    endpoint=pb.NotificationEndpoint(url="http://127.0.0.1:9/hooks")
                )
            ),
            metadata=SERVICE_MD,
        )
        eid = made.endpoint.endpoint_id
        nid = enqueue(deps.db, "invoice.paid", "acct_rr", {})
        deliverer = Deliverer(deps.db, Policy())
        try:
            deliverer.fan_out()
        finally:
            deliverer.close()
        with deps.db.transaction() as s:
            d = s.scalars(select(NotificationDelivery)).one()
            d.state, d.attempts, d.delivered_at = "delivered", 1, utcnow()
        yield stub, deps, eid, nid


def deliveries(deps: Deps) -> list[tuple[Any, ...]]:
    with deps.db.transaction(readonly=True) as s:
        rows = s.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)).all()
        return [
            (r.endpoint_id, r.notification_id, r.state, r.attempts, r.next_attempt_at,
             r.created_at, r.updated_at)
            for r in rows
        ]  # fmt: skip


def since(at: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def disable(stub: Stub, eid: str) -> None:
    stub.DisableNotificationEndpoint(
        keyed(pb.DisableNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
    )


def grpc_refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), error_reason(err.value)


def test_a_resend_to_a_disabled_endpoint_is_refused_and_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    stub, deps, eid, nid = world
    disable(stub, eid)
    before = deliveries(deps)
    refusal = (grpc.StatusCode.FAILED_PRECONDITION, "NOTIFICATION_ENDPOINT_DISABLED")
    assert (
        grpc_refusal(
            lambda: stub.ResendNotification(
                keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id=nid)),
                metadata=SERVICE_MD,
            )
        )
        == refusal
    )
    start = since(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert (
        grpc_refusal(
            lambda: stub.ResendNotificationsSince(
                keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=start)),
                metadata=SERVICE_MD,
            )
        )
        == refusal
    )
    # The command line and the console go through the same functions.
    settings = deps.settings
    for resend in (
        lambda: operator.resend(settings, eid, nid, None),
        lambda: operator.resend(settings, eid, None, utcnow() - dt.timedelta(hours=1)),
    ):
        with pytest.raises(errors.DomainError) as refused:
            resend()
        assert refused.value.reason == "NOTIFICATION_ENDPOINT_DISABLED"
    with deps.db.transaction(readonly=True) as s:
        shown = next(d for ep in inbox.deliveries(s).items if ep.id == eid for d in ep.deliveries)
    with pytest.raises(errors.DomainError) as refused, deps.db.transaction() as s:
        inbox.resend(s, eid, nid, utcnow(), shown.version)
    assert refused.value.reason == "NOTIFICATION_ENDPOINT_DISABLED"
    assert refused.value.kind is errors.Kind.FAILED_PRECONDITION
    assert deliveries(deps) == before
    # Enabled again, the same resend goes through.
    stub.EnableNotificationEndpoint(
        keyed(pb.EnableNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
    )
    again = stub.ResendNotification(
        keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id=nid)),
        metadata=SERVICE_MD,
    )
    assert again.state == pb.NOTIFICATION_MESSAGE_STATE_PENDING


def test_other_impossible_resends_are_refused_and_change_nothing(world) -> None:  # type: ignore[no-untyped-def]
    stub, deps, eid, nid = world
    before = deliveries(deps)
    future = since(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    cases: list[tuple[Callable[[], Any], grpc.StatusCode, str]] = [
        (
            lambda: stub.ResendNotification(
                keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id="ntf_none")),
                metadata=SERVICE_MD,
            ),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            lambda: stub.ResendNotification(
                keyed(pb.ResendNotificationRequest(endpoint_id="nep_none", notification_id=nid)),
                metadata=SERVICE_MD,
            ),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            lambda: stub.ResendNotificationsSince(
                keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=future)),
                metadata=SERVICE_MD,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ),
        (
            lambda: stub.ResendNotificationsSince(
                keyed(
                    pb.ResendNotificationsSinceRequest(
                        endpoint_id=eid, since=timestamp_pb2.Timestamp(seconds=-62135596801)
                    )
                ),
                metadata=SERVICE_MD,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ),
    ]
    for call, code, reason in cases:
        assert grpc_refusal(call) == (code, reason)
    assert deliveries(deps) == before
    # A deleted endpoint: NOT_FOUND, and its deliveries went with it.
    stub.DeleteNotificationEndpoint(
        keyed(pb.DeleteNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
    )
    assert grpc_refusal(
        lambda: stub.ResendNotification(
            keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id=nid)),
            metadata=SERVICE_MD,
        )
    ) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    with pytest.raises(errors.DomainError) as refused, deps.db.transaction() as s:
        messages.resend_since(s, eid, utcnow() - dt.timedelta(hours=1), utcnow())
    assert refused.value.kind is errors.Kind.NOT_FOUND
    assert deliveries(deps) == []
