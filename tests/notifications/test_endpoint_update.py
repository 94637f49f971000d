"""UpdateNotificationEndpoint takes back what a read returned (AIP-134's read-modify-write):
the output-only fields of the resource (`enabled`, `disabled_reason`, `failing_since`,
`previous_secret_expire_time`, `create_time`, `update_time`) are accepted and ignored
(AIP-203), as UpdateAccount, UpdateProduct and UpdateMetric take them; they change only
through :disable, :enable and the delivery process."""

from __future__ import annotations

import uuid

import grpc
import pytest

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_KEY, SERVICE_MD
from tests.helpers import keyed

SERVICE = {"x-api-key": SERVICE_KEY}


@pytest.fixture(scope="module")
def stub(shared_channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(shared_channel)


def made(stub) -> pb.NotificationEndpoint:  # type: ignore[no-untyped-def]
    created = stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(url="http://127.0.0.1:9/hooks", description="d")
            )
        ),
        metadata=SERVICE_MD,
    )
    # a rotation, so that the read carries previous_secret_expire_time too
    rotated = stub.RotateNotificationEndpointSecret(
        keyed(pb.RotateNotificationEndpointSecretRequest(endpoint_id=created.endpoint.endpoint_id)),
        metadata=SERVICE_MD,
    )
    return rotated.endpoint  # type: ignore[no-any-return]


def test_the_endpoint_as_read_is_taken_back_without_a_mask(stub) -> None:  # type: ignore[no-untyped-def]
    read = made(stub)
    sent = pb.NotificationEndpoint()
    sent.CopyFrom(read)
    sent.description = "changed"
    updated = stub.UpdateNotificationEndpoint(
        keyed(pb.UpdateNotificationEndpointRequest(endpoint=sent)), metadata=SERVICE_MD
    )
    assert updated.description == "changed"
    assert (updated.url, updated.enabled) == (read.url, read.enabled)
    assert updated.previous_secret_expire_time == read.previous_secret_expire_time


def test_output_only_paths_in_the_mask_change_nothing(stub) -> None:  # type: ignore[no-untyped-def]
    read = made(stub)
    request = pb.UpdateNotificationEndpointRequest(
        endpoint=pb.NotificationEndpoint(
            endpoint_id=read.endpoint_id, description="named", enabled=False
        )
    )
    request.update_mask.paths.extend(["description", "enabled", "disabled_reason"])
    updated = stub.UpdateNotificationEndpoint(keyed(request), metadata=SERVICE_MD)
    assert updated.description == "named"
    assert updated.enabled and updated.disabled_reason == ""


def test_an_unknown_path_is_still_refused(stub) -> None:  # type: ignore[no-untyped-def]
    read = made(stub)
    request = pb.UpdateNotificationEndpointRequest(
        endpoint=pb.NotificationEndpoint(endpoint_id=read.endpoint_id, description="x")
    )
    request.update_mask.paths.extend(["description", "secret"])
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateNotificationEndpoint(keyed(request), metadata=SERVICE_MD)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = stub.GetNotificationEndpoint(
        pb.GetNotificationEndpointRequest(endpoint_id=read.endpoint_id), metadata=SERVICE_MD
    )
    assert got.description == "d"


@pytest.mark.envoy
def test_a_rest_client_patches_back_the_json_it_got(stack) -> None:  # type: ignore[no-untyped-def]
    created = stack.request(
        "POST",
        "/mgt/v1/notifications/endpoints",
        {"endpoint": {"url": "http://127.0.0.1:9/hooks"}, "requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert created.status == 200, created.body
    endpoint_id = created.json()["endpoint"]["endpoint_id"]
    read = stack.request("GET", f"/mgt/v1/notifications/endpoints/{endpoint_id}", None, SERVICE)
    body = read.json()
    body.pop("endpoint_id")
    body["description"] = "from the browser"
    patched = stack.request(
        "PATCH",
        f"/mgt/v1/notifications/endpoints/{endpoint_id}?request_id={uuid.uuid4().hex}",
        body,
        SERVICE,
    )
    assert patched.status == 200, patched.body
    assert patched.json()["description"] == "from the browser"
    assert patched.json()["enabled"] is True
