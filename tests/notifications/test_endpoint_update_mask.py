"""UpdateNotificationEndpoint's update mask follows AIP-134/203 as every other resource's does:
output-only paths (and the identifier) are accepted and change nothing, unknown paths are
refused, and a client may send back the endpoint it read (the implied mask then names the
output-only fields it carries) to change one field."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_field, error_path, error_reason, keyed


@pytest.fixture(scope="module")
def stub(shared_channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(shared_channel)


def made(stub: notification_pb2_grpc.NotificationServiceStub) -> pb.NotificationEndpoint:
    return stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(
                    url="http://127.0.0.1:9/hooks",
                    description="before",
                    event_types=["invoice.paid"],
                )
            )
        ),
        metadata=SERVICE_MD,
    ).endpoint


def update(
    stub: notification_pb2_grpc.NotificationServiceStub,
    endpoint: pb.NotificationEndpoint,
    paths: list[str],
) -> pb.NotificationEndpoint:
    return stub.UpdateNotificationEndpoint(
        keyed(
            pb.UpdateNotificationEndpointRequest(
                endpoint=endpoint, update_mask=field_mask_pb2.FieldMask(paths=paths)
            )
        ),
        metadata=SERVICE_MD,
    )


def get(
    stub: notification_pb2_grpc.NotificationServiceStub, endpoint_id: str
) -> pb.NotificationEndpoint:
    return stub.GetNotificationEndpoint(
        pb.GetNotificationEndpointRequest(endpoint_id=endpoint_id), metadata=SERVICE_MD
    )


def test_output_only_paths_in_the_mask_are_ignored_beside_the_ones_applied(stub) -> None:  # type: ignore[no-untyped-def]
    before = made(stub)
    sent = pb.NotificationEndpoint(endpoint_id=before.endpoint_id, description="after")
    sent.enabled = False  # output-only: changes only through DisableNotificationEndpoint
    sent.disabled_reason = "not by an update"
    after = update(
        stub,
        sent,
        ["description", "enabled", "disabled_reason", "create_time", "update_time", "endpoint_id"],
    )
    assert after.description == "after"
    assert (after.enabled, after.disabled_reason) == (before.enabled, before.disabled_reason)
    assert (after.url, list(after.event_types)) == (before.url, list(before.event_types))
    assert after.create_time == before.create_time
    assert get(stub, before.endpoint_id) == after


def test_an_unknown_path_is_still_refused_and_changes_nothing(stub) -> None:  # type: ignore[no-untyped-def]
    before = made(stub)
    sent = pb.NotificationEndpoint(endpoint_id=before.endpoint_id, description="after")
    with pytest.raises(grpc.RpcError) as err:
        update(stub, sent, ["description", "secret"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "FIELD_INVALID"
    assert (error_field(err.value), error_path(err.value)) == ("update_mask", "secret")
    assert get(stub, before.endpoint_id) == before


def test_the_endpoint_read_and_sent_back_changes_only_what_was_edited(stub) -> None:  # type: ignore[no-untyped-def]
    """No mask: the implied mask is every populated field, output-only ones included."""
    before = made(stub)
    edited = pb.NotificationEndpoint()
    edited.CopyFrom(get(stub, before.endpoint_id))
    assert edited.enabled and edited.HasField("create_time")  # what the implied mask will name
    edited.description = "edited"
    after = update(stub, edited, [])
    assert after.description == "edited"
    assert (after.url, list(after.event_types), after.enabled) == (
        before.url,
        list(before.event_types),
        before.enabled,
    )
