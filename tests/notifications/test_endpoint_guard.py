"""NotificationService's guards through real stubs on a real server (SQLite, then PostgreSQL):
URLs whose authority is ambiguous, the opt-in private-address guard
(BILLING_NOTIFY_DENY_PRIVATE), `failing_since` of a disabled endpoint, and resends that
respect the endpoint's event types."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import func, select

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_KEY, SERVICE_MD
from tests.helpers import error_reason, keyed
from tests.limits.support import server
from tests.notifications.support import enqueue
from tollbooth.db.models import NotificationDelivery, NotificationEndpoint
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.notifications.delivery import Deliverer, Policy

SERVICE = {"x-api-key": SERVICE_KEY}


@pytest.fixture(scope="module")
def stub(shared_channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(shared_channel)


def create(stub, url: str, types=()):  # type: ignore[no-untyped-def]
    return stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(url=url, event_types=types)
            )
        ),
        metadata=SERVICE_MD,
    )


def count_endpoints(deps: Deps) -> int:
    with deps.db.transaction(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(NotificationEndpoint)) or 0)


def refused(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


@pytest.mark.parametrize(
    "url",
    [
        # WHATWG parsers (browsers, many receivers' proxies) read '\' as '/': the host is
        # 127.0.0.1 to them and evil.com to Python's parsers.
        "http://127.0.0.1\\@evil.com/",
        "http://evil.com\\@127.0.0.1/hooks",
        "https://user:pa\\ss@example.com/hooks",
        # A second '@' in the authority: which one ends the userinfo depends on the parser.
        "http://a@127.0.0.1@evil.com/",
        "https://user@:443/hooks",  # userinfo but no host
        "javascript://example.com/%0aalert(1)",
        "file:///etc/passwd",
    ],
)
def test_a_url_with_an_ambiguous_authority_is_refused_and_nothing_stored(
    stub, shared_deps, url
) -> None:  # type: ignore[no-untyped-def]
    before = count_endpoints(shared_deps)
    err = refused(lambda: create(stub, url))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err) == "URL_INVALID"
    assert count_endpoints(shared_deps) == before


def test_an_over_long_url_is_refused(stub, shared_deps) -> None:  # type: ignore[no-untyped-def]
    before = count_endpoints(shared_deps)
    err = refused(lambda: create(stub, "https://example.com/" + "a" * 2000))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err) == "FIELD_INVALID"
    assert count_endpoints(shared_deps) == before


def test_an_update_to_an_ambiguous_url_is_refused_and_changes_nothing(stub) -> None:  # type: ignore[no-untyped-def]
    made = create(stub, "http://127.0.0.1:9/hooks").endpoint
    err = refused(
        lambda: stub.UpdateNotificationEndpoint(
            keyed(
                pb.UpdateNotificationEndpointRequest(
                    endpoint=pb.NotificationEndpoint(
                        endpoint_id=made.endpoint_id, url="http://127.0.0.1\\@evil.com/"
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["url"]),
                )
            ),
            metadata=SERVICE_MD,
        )
    )
    assert error_reason(err) == "URL_INVALID"
    got = stub.GetNotificationEndpoint(
        pb.GetNotificationEndpointRequest(endpoint_id=made.endpoint_id), metadata=SERVICE_MD
    )
    assert got.url == "http://127.0.0.1:9/hooks"


def test_a_rest_client_gets_400_url_invalid_for_a_backslash_before_the_at(stack) -> None:  # type: ignore[no-untyped-def]
    reply = stack.request(
        "POST",
        "/mgt/v1/notifications/endpoints",
        {"endpoint": {"url": "http://127.0.0.1\\@evil.com/"}, "requestId": uuid.uuid4().hex},
        SERVICE,
    )
    assert reply.status == 400, reply.body
    assert reply.reason == "URL_INVALID"


# -- the private-address guard ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks",
        "http://localhost:8080/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://0.0.0.0/hooks",
        "http://100.64.0.1/hooks",
    ],
)
def test_with_the_guard_on_a_private_address_is_refused_at_create(database_url, url) -> None:  # type: ignore[no-untyped-def]
    with server(database_url, BILLING_NOTIFY_DENY_PRIVATE="1") as (channel, deps, _):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        err = refused(lambda: create(stub, url))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err) == "URL_ADDRESS_DENIED"
        assert count_endpoints(deps) == 0


def test_with_the_guard_on_a_public_address_is_taken_and_an_update_to_a_private_one_is_not(  # type: ignore[no-untyped-def]
    database_url,
) -> None:
    with server(database_url, BILLING_NOTIFY_DENY_PRIVATE="1") as (channel, _deps, _):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        made = create(stub, "https://93.184.215.14/hooks").endpoint
        err = refused(
            lambda: stub.UpdateNotificationEndpoint(
                keyed(
                    pb.UpdateNotificationEndpointRequest(
                        endpoint=pb.NotificationEndpoint(
                            endpoint_id=made.endpoint_id, url="http://169.254.169.254/x"
                        ),
                        update_mask=field_mask_pb2.FieldMask(paths=["url"]),
                    )
                ),
                metadata=SERVICE_MD,
            )
        )
        assert error_reason(err) == "URL_ADDRESS_DENIED"
        got = stub.GetNotificationEndpoint(
            pb.GetNotificationEndpointRequest(endpoint_id=made.endpoint_id), metadata=SERVICE_MD
        )
        assert got.url == "https://93.184.215.14/hooks"
        # an update that leaves the url alone does not look it up again
        desc = stub.UpdateNotificationEndpoint(
            keyed(
                pb.UpdateNotificationEndpointRequest(
                    endpoint=pb.NotificationEndpoint(endpoint_id=made.endpoint_id, description="x"),
                    update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                )
            ),
            metadata=SERVICE_MD,
        )
        assert desc.description == "x"


def test_with_the_guard_on_a_host_that_does_not_resolve_is_refused(database_url) -> None:  # type: ignore[no-untyped-def]
    env = {"BILLING_NOTIFY_DENY_PRIVATE": "1", "BILLING_NOTIFY_TIMEOUT_SEC": "1"}
    with server(database_url, **env) as (channel, deps, _):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        err = refused(lambda: create(stub, "https://no-such-host.invalid/hooks"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err) == "URL_HOST_UNRESOLVED"
        assert count_endpoints(deps) == 0


def test_with_the_guard_on_a_resolver_that_does_not_answer_is_a_503_not_a_bad_url(  # type: ignore[no-untyped-def]
    database_url, monkeypatch
) -> None:
    """The resolver hangs past the timeout, or answers "try again" (EAI_AGAIN): the name may
    well be right, so the answer is 503 SERVICE_UNAVAILABLE (retry), not 400
    URL_HOST_UNRESOLVED, and nothing is stored."""
    import socket
    import threading

    release = threading.Event()
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "hangs.example":
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "released by the test")
        if host == "again.example":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    env = {"BILLING_NOTIFY_DENY_PRIVATE": "1", "BILLING_NOTIFY_TIMEOUT_SEC": "1"}
    try:
        with server(database_url, **env) as (channel, deps, _):
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            for host in ("hangs.example", "again.example"):
                err = refused(lambda h=host: create(stub, f"https://{h}/hooks"))  # type: ignore[misc]
                assert err.code() == grpc.StatusCode.UNAVAILABLE, host
                assert error_reason(err) == "SERVICE_UNAVAILABLE", host
            assert count_endpoints(deps) == 0
    finally:
        release.set()


# -- failing_since of a disabled endpoint -----------------------------------------------------


def test_an_operator_disable_clears_failing_since(stub, shared_deps) -> None:  # type: ignore[no-untyped-def]
    made = create(stub, "http://127.0.0.1:9/hooks").endpoint
    with shared_deps.db.transaction() as s:
        s.get(NotificationEndpoint, made.endpoint_id).failing_since = utcnow()
    disabled = stub.DisableNotificationEndpoint(
        keyed(pb.DisableNotificationEndpointRequest(endpoint_id=made.endpoint_id)),
        metadata=SERVICE_MD,
    )
    assert not disabled.enabled
    assert not disabled.HasField("failing_since")


# -- resends and the endpoint's event types ---------------------------------------------------


def test_resends_respect_the_endpoints_event_types(database_url) -> None:  # type: ignore[no-untyped-def]
    with server(database_url) as (channel, deps, _):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        eid = create(
            stub, "http://127.0.0.1:9/hooks", ["account.credits.balance_depleted"]
        ).endpoint.endpoint_id
        unwanted = enqueue(deps.db, "invoice.paid", "acct_rt", {})
        wanted = enqueue(deps.db, "credits.balance_depleted", "acct_rt", {"balance": "0"})
        deliverer = Deliverer(deps.db, Policy())
        try:
            deliverer.fan_out()  # positions (and the wanted message's delivery)
        finally:
            deliverer.close()
        err = refused(
            lambda: stub.ResendNotification(
                keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id=unwanted)),
                metadata=SERVICE_MD,
            )
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err) == "NOTIFICATION_TYPE_NOT_WANTED"
        again = stub.ResendNotification(
            keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id=wanted)),
            metadata=SERVICE_MD,
        )
        assert again.notification.notification_id == wanted
        since = timestamp_pb2.Timestamp()
        since.FromDatetime(start)
        queued = stub.ResendNotificationsSince(
            keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=since)),
            metadata=SERVICE_MD,
        )
        assert queued.queued == 1
        with deps.db.transaction(readonly=True) as s:
            ids = s.scalars(
                select(NotificationDelivery.notification_id).where(
                    NotificationDelivery.endpoint_id == eid
                )
            ).all()
        assert list(ids) == [wanted]
