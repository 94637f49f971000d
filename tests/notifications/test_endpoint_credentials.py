"""A notification endpoint URL may carry `user:password@` (HTTP Basic for the receiver, as
Stripe's own webhook endpoints allow): reads show the password as `***` (RPCs and the console's
deliveries page), an update sending the URL as read keeps the password, and delivery still
sends it. Real stubs on a real server; delivery to a real HTTP receiver."""

from __future__ import annotations

import base64
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason, keyed
from tests.notifications.support import Receiver, enqueue
from tollbooth.console import inbox
from tollbooth.db import Database
from tollbooth.db.models import NotificationEndpoint
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer, Policy

SECRET_URL = "https://hook-user:s3cr%40t@hooks.example/in?x=1"
SHOWN_URL = "https://hook-user:***@hooks.example/in?x=1"


@pytest.fixture(scope="module")
def stub(shared_channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(shared_channel)


def stored_url(deps: Any, endpoint_id: str) -> str:
    with deps.db.transaction(readonly=True) as session:
        row = session.get(NotificationEndpoint, endpoint_id)
        assert row is not None
        return str(row.url)


def update(stub, endpoint_id: str, **fields: str):  # type: ignore[no-untyped-def]
    return stub.UpdateNotificationEndpoint(
        keyed(
            pb.UpdateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(endpoint_id=endpoint_id, **fields),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            )
        ),
        metadata=SERVICE_MD,
    )


def test_reads_mask_the_password_of_an_endpoint_url(stub, shared_deps) -> None:  # type: ignore[no-untyped-def]
    made = stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(endpoint=pb.NotificationEndpoint(url=SECRET_URL))
        ),
        metadata=SERVICE_MD,
    )
    eid = made.endpoint.endpoint_id
    assert made.endpoint.url == SHOWN_URL
    got = stub.GetNotificationEndpoint(
        pb.GetNotificationEndpointRequest(endpoint_id=eid), metadata=SERVICE_MD
    )
    assert got.url == SHOWN_URL
    listed, token = [], ""
    while True:
        page = stub.ListNotificationEndpoints(
            pb.ListNotificationEndpointsRequest(page_size=100, page_token=token),
            metadata=SERVICE_MD,
        )
        listed += [e.url for e in page.endpoints if e.endpoint_id == eid]
        token = page.next_page_token
        if not token:
            break
    assert listed == [SHOWN_URL]
    assert stored_url(shared_deps, eid) == SECRET_URL  # what delivery sends
    with shared_deps.db.transaction(readonly=True) as session:
        shown = [ep.url for ep in inbox.deliveries(session).items if ep.id == eid]
    assert shown == [SHOWN_URL]  # the console's deliveries page

    # The URL as read, sent back with another field: the password stays.
    after = update(stub, eid, url=SHOWN_URL, description="renamed")
    assert (after.url, after.description) == (SHOWN_URL, "renamed")
    assert stored_url(shared_deps, eid) == SECRET_URL
    # The mask on another URL is not a password anyone gave: refused, nothing changes.
    with pytest.raises(grpc.RpcError) as err:
        update(stub, eid, url="https://hook-user:***@elsewhere.example/in")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "URL_INVALID"
    assert stored_url(shared_deps, eid) == SECRET_URL
    # A new password replaces it; a URL without userinfo is shown as it is.
    update(stub, eid, url="https://hook-user:other@hooks.example/in?x=1")
    assert stored_url(shared_deps, eid) == "https://hook-user:other@hooks.example/in?x=1"
    assert update(stub, eid, url="https://hooks.example/in").url == "https://hooks.example/in"


def test_delivery_sends_the_password_the_reads_mask(pg_url: str, receiver: Receiver) -> None:
    seen: list[str] = []
    handle = receiver.handle

    def recording(headers: dict[str, str], body: bytes) -> int:
        seen.append(headers.get("authorization", ""))
        return handle(headers, body)

    receiver.handle = recording  # type: ignore[method-assign]
    db = Database(pg_url)
    try:
        url = receiver.url.replace("http://", "http://hook-user:s3cr%40t@", 1)
        with db.transaction() as session:
            endpoint, receiver.secret = endpoints.create(
                session, endpoints.Fields(url=url), utcnow()
            )
        enqueue(db, "credits.granted", None, {"amount": "1"})
        deliverer = Deliverer(db, Policy(retry_first_sec=0.05, retry_max_sec=0.1, poll_sec=0.05))
        try:
            for _ in range(50):
                deliverer.run_once()
                if receiver.accepted:
                    break
        finally:
            deliverer.close()
        assert len(receiver.accepted) == 1
        assert seen == ["Basic " + base64.b64encode(b"hook-user:s3cr@t").decode()]
        assert endpoint.url == url
    finally:
        db.dispose()
