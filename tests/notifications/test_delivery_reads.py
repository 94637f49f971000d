"""What the delivery reads show about an endpoint whose URL carries a credential (user and
password, a token in the path or the query: what hosted receivers hand out): status, never
the credential. The `notification.endpoint.disabled` notice goes to every other endpoint,
into WatchNotifications and into ListNotificationMessages, so it names the endpoint by id
and origin only; the attempts and messages of the failing endpoint carry status and errors
without its URL."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator

import pytest

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.devstack import serving
from tests.helpers import keyed
from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tests.notifications.test_delivery import FAST, drain
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db.models import NotificationEndpoint
from tollbooth.db.types import utcnow
from tollbooth.notifications.delivery import Deliverer

SECRETS = ("hook-user", "s3cret-pass", "tok-path-secret", "q-secret")


@pytest.fixture
def served(pg_url: str) -> Iterator[tuple[Deps, notification_pb2_grpc.NotificationServiceStub]]:
    deps = Deps.build(Settings.from_env(make_env(pg_url)))
    try:
        with serving(deps) as channel:
            yield deps, notification_pb2_grpc.NotificationServiceStub(channel)
    finally:
        deps.db.dispose()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create(stub: notification_pb2_grpc.NotificationServiceStub, url: str, types=()):  # type: ignore[no-untyped-def]
    return stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(url=url, event_types=types)
            )
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_delivery_reads_and_the_disabled_notice_carry_no_endpoint_credential(served) -> None:  # type: ignore[no-untyped-def]
    deps, stub = served
    port = closed_port()
    url = f"http://hook-user:s3cret-pass@127.0.0.1:{port}/hooks/tok-path-secret?token=q-secret"
    failing = create(stub, url).endpoint.endpoint_id
    healthy = Receiver()
    server = ReceiverServer(healthy)
    try:
        made = create(stub, healthy.url, ["notification.endpoint.disabled"])
        healthy.secret = made.secret
        with deps.db.transaction() as s:
            s.get(NotificationEndpoint, failing).failing_since = utcnow() - dt.timedelta(days=4)
        enqueue(deps.db, "invoice.paid", "acct_leak", {})
        drain([Deliverer(deps.db, FAST)], lambda: len(healthy.accepted) == 1)
    finally:
        server.close()

    notice = healthy.accepted[0]
    assert notice["type"] == "notification.endpoint.disabled"
    assert notice["data"]["endpointId"] == failing
    assert notice["data"]["origin"] == f"http://127.0.0.1:{port}"
    assert leaked(str(notice)) == []

    messages = stub.ListNotificationMessages(
        pb.ListNotificationMessagesRequest(endpoint_id=made.endpoint.endpoint_id),
        metadata=SERVICE_MD,
        timeout=10,
    )
    assert [m.notification.type for m in messages.messages] == ["notification.endpoint.disabled"]
    assert leaked(str(messages)) == []

    attempts = stub.ListNotificationAttempts(
        pb.ListNotificationAttemptsRequest(endpoint_id=failing), metadata=SERVICE_MD, timeout=10
    )
    assert attempts.attempts and all(a.status_code == 0 and a.error for a in attempts.attempts)
    assert leaked(str(attempts)) == []
    failed = stub.ListNotificationMessages(
        pb.ListNotificationMessagesRequest(endpoint_id=failing), metadata=SERVICE_MD, timeout=10
    )
    assert leaked(str(failed)) == []

    stream = stub.WatchNotifications(
        pb.WatchNotificationsRequest(event_types=["notification.endpoint.disabled"]),
        metadata=SERVICE_MD,
        timeout=10,
    )
    try:
        watched = next(iter(stream))
    finally:
        stream.cancel()
    assert watched.notification.data["endpointId"] == failing
    assert leaked(str(watched)) == []


def test_an_endpoint_url_without_credentials_is_named_by_its_origin_too() -> None:
    from tollbooth.notifications.delivery import origin_of

    assert origin_of("https://Hooks.Example.com:8443/a/b?c=d#e") == "https://hooks.example.com:8443"
    assert origin_of("http://u:p@[::1]:9/x") == "http://[::1]:9"
    assert origin_of("https://example.com/") == "https://example.com"
    assert origin_of("not a url") == ""
