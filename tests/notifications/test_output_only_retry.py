"""A retry that sends the resource as it was read (its output-only fields filled in, which the
server ignores, AIP-203) means the same request: it gets the stored answer under its request_id,
not IDEMPOTENCY_KEY_REUSED; a field that counts still makes another request."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason


def create(channel: grpc.Channel, key: str, endpoint: pb.NotificationEndpoint):  # type: ignore[no-untyped-def]
    return notification_pb2_grpc.NotificationServiceStub(channel).CreateNotificationEndpoint(
        pb.CreateNotificationEndpointRequest(endpoint=endpoint, request_id=key),
        metadata=SERVICE_MD,
        timeout=30,
    )


def test_a_create_retried_with_output_only_fields_filled_in_is_replayed(
    channel: grpc.Channel,
) -> None:
    url = f"https://hooks.example/{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    first = create(channel, key, pb.NotificationEndpoint(url=url, description="d"))
    as_read = pb.NotificationEndpoint(
        url=url,
        description="d",
        enabled=False,
        disabled_reason="zz",
        create_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
    )
    again = create(channel, key, as_read)
    assert again == first
    with pytest.raises(grpc.RpcError) as err:
        create(channel, key, pb.NotificationEndpoint(url=url, description="other"))
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
