"""Notification endpoint writes raced from real concurrent clients over two server replicas
on PostgreSQL: update, disable, rotate against delete; two masks; one request_id."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import all_at_once, keyed, outcome

pytestmark = pytest.mark.postgres

CLIENTS = 8
ROUNDS = 6


def stub(channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(channel)


def create(channel: grpc.Channel, request_id: str = "", **fields: str) -> pb.NotificationEndpoint:
    fields.setdefault("url", f"https://hooks.example/{uuid.uuid4().hex[:8]}")
    return stub(channel).CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(**fields),  # type: ignore[arg-type]
                request_id=request_id,
            )
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )


def call(channel: grpc.Channel, method: str, request):  # type: ignore[no-untyped-def]
    return getattr(stub(channel), method)(keyed(request), metadata=SERVICE_MD, timeout=30)


def update(channel: grpc.Channel, endpoint_id: str, **fields: str) -> pb.NotificationEndpoint:
    return call(
        channel,
        "UpdateNotificationEndpoint",
        pb.UpdateNotificationEndpointRequest(
            endpoint=pb.NotificationEndpoint(endpoint_id=endpoint_id, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        ),
    )


def test_writes_racing_a_delete_are_applied_first_or_not_found(replica_channels) -> None:  # type: ignore[no-untyped-def]
    one, two = replica_channels
    for _ in range(ROUNDS):
        eid = create(one).endpoint.endpoint_id
        results = all_at_once(
            [
                lambda eid=eid: update(one, eid, description="after"),
                lambda eid=eid: call(
                    two,
                    "RotateNotificationEndpointSecret",
                    pb.RotateNotificationEndpointSecretRequest(endpoint_id=eid),
                ),
                lambda eid=eid: call(
                    one,
                    "DisableNotificationEndpoint",
                    pb.DisableNotificationEndpointRequest(endpoint_id=eid),
                ),
                lambda eid=eid: call(
                    two,
                    "DeleteNotificationEndpoint",
                    pb.DeleteNotificationEndpointRequest(endpoint_id=eid),
                ),
            ]
        )
        *writes, deleted = (outcome(r) for r in results)
        assert deleted == "OK"
        assert set(writes) <= {"OK", "NOT_FOUND/NOT_FOUND"}, writes
        with pytest.raises(grpc.RpcError) as gone:
            call(one, "GetNotificationEndpoint", pb.GetNotificationEndpointRequest(endpoint_id=eid))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrent_deletes_delete_once(replica_channels) -> None:  # type: ignore[no-untyped-def]
    eid = create(replica_channels[0]).endpoint.endpoint_id
    results = all_at_once(
        [
            lambda i=i: call(
                replica_channels[i % 2],
                "DeleteNotificationEndpoint",
                pb.DeleteNotificationEndpointRequest(endpoint_id=eid),
            )
            for i in range(CLIENTS)
        ]
    )
    assert sorted(outcome(r) for r in results) == ["NOT_FOUND/NOT_FOUND"] * (CLIENTS - 1) + ["OK"]


def test_two_updates_naming_different_fields_keep_both(replica_channels) -> None:  # type: ignore[no-untyped-def]
    one, two = replica_channels
    for _ in range(ROUNDS):
        eid = create(one, description="before").endpoint.endpoint_id
        url = f"https://hooks.example/after-{uuid.uuid4().hex[:8]}"
        results = all_at_once(
            [
                lambda eid=eid, url=url: update(one, eid, url=url),
                lambda eid=eid: update(two, eid, description="after"),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        got = call(
            one, "GetNotificationEndpoint", pb.GetNotificationEndpointRequest(endpoint_id=eid)
        )
        assert (got.url, got.description) == (url, "after")


def test_copies_of_one_create_under_one_request_id_make_one_endpoint(replica_channels) -> None:  # type: ignore[no-untyped-def]
    key, url = uuid.uuid4().hex, f"https://hooks.example/{uuid.uuid4().hex[:8]}"
    same = all_at_once(
        [lambda i=i: create(replica_channels[i % 2], key, url=url) for i in range(CLIENTS)]
    )
    assert {outcome(r) for r in same} == {"OK"}
    assert len({r.SerializeToString(deterministic=True) for r in same}) == 1  # type: ignore[union-attr]
    other = all_at_once(
        [lambda i=i: create(replica_channels[i % 2], key, url=f"{url}/{i}") for i in range(CLIENTS)]
    )
    assert {outcome(r) for r in other} == {"INVALID_ARGUMENT/IDEMPOTENCY_KEY_REUSED"}
