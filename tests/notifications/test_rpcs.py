"""NotificationService through real stubs on a real server (SQLite, then PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import func, select, text

from billing.v1 import notification_pb2 as pb
from billing.v1 import notification_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason, keyed
from tests.limits.support import server
from tests.notifications.support import enqueue
from tollbooth.db import Database
from tollbooth.db.models import NotificationDelivery, NotificationEndpoint
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer, Policy


@pytest.fixture(scope="module")
def stub(shared_channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(shared_channel)


def create(stub, url: str = "http://127.0.0.1:9/hooks", types=()):  # type: ignore[no-untyped-def]
    return stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(url=url, description="d", event_types=types)
            )
        ),
        metadata=SERVICE_MD,
    )


def count_endpoints(deps: Deps) -> int:
    with deps.db.transaction(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(NotificationEndpoint)) or 0)


def test_create_shows_the_secret_once_and_get_never(stub) -> None:  # type: ignore[no-untyped-def]
    made = create(stub, types=["account.credits.balance_depleted"])
    assert made.secret.startswith("whsec_") and len(made.secret) > 30
    assert made.endpoint.enabled and list(made.endpoint.event_types) == [
        "account.credits.balance_depleted"
    ]
    got = stub.GetNotificationEndpoint(
        pb.GetNotificationEndpointRequest(endpoint_id=made.endpoint.endpoint_id),
        metadata=SERVICE_MD,
    )
    assert got == made.endpoint
    assert made.secret not in str(got)


def test_create_is_idempotent_by_request_id(stub) -> None:  # type: ignore[no-untyped-def]
    req = keyed(
        pb.CreateNotificationEndpointRequest(
            endpoint=pb.NotificationEndpoint(url="http://127.0.0.1:9/a")
        )
    )
    first = stub.CreateNotificationEndpoint(req, metadata=SERVICE_MD)
    again = stub.CreateNotificationEndpoint(req, metadata=SERVICE_MD)
    assert first == again


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        (pb.NotificationEndpoint(url=""), "FIELD_REQUIRED"),
        (pb.NotificationEndpoint(url="ftp://example.com/x"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="not a url"), "URL_INVALID"),
        # URLs that urlsplit takes but no HTTP client can send to (httpx refuses them)
        (pb.NotificationEndpoint(url="http://example.com:99999/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="http://example.com:0/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="http://example.com:port/hooks"), "URL_INVALID"),
        # A control character is refused at the edge, as in every field.
        (pb.NotificationEndpoint(url="http://exa\tmple.com/hooks"), "FIELD_INVALID"),
        (pb.NotificationEndpoint(url="https://\u2603.example/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://exa..mple.com/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url=f"https://{'a' * 64}.example/hooks"), "URL_INVALID"),
        # A host with a space or a '%' names no host a resolver takes (urlsplit and httpx
        # both let them through; the delivery would fail on every attempt).
        (pb.NotificationEndpoint(url="https://exa mple.com/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://a b/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://ex%20ample.com/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://exa%mple.com/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://ex%41mple.com/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://user@exa mple.com:8443/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="http://[fe80::1%25eth0]/hooks"), "URL_INVALID"),
        # Host names no resolver takes (RFC 1123), a space past the host, a fragment (never
        # sent): each delivery would fail, or reach what the URL does not name.
        (pb.NotificationEndpoint(url="https://-x.example/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://x-.example/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url=f"https://{'a.' * 127}com/hooks"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://hooks.example/in box"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://hooks.example/in?x=a b"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://hooks.example/in#part"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://hooks.example/in#"), "URL_INVALID"),
        (pb.NotificationEndpoint(url="https://e.com", event_types=["nope"]), "EVENT_TYPE_UNKNOWN"),
    ],
)
def test_bad_endpoint_is_refused_and_nothing_is_created(
    stub, shared_deps, endpoint, reason
) -> None:  # type: ignore[no-untyped-def]
    before = count_endpoints(shared_deps)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateNotificationEndpoint(
            keyed(pb.CreateNotificationEndpointRequest(endpoint=endpoint)), metadata=SERVICE_MD
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == reason
    assert count_endpoints(shared_deps) == before


@pytest.mark.parametrize(
    "event_type",
    ["credits.voided", "checkout.conflict_canceled", "payment_intent.succeeded"],
)
def test_an_endpoint_can_subscribe_to_every_type_it_can_receive(stub, event_type) -> None:  # type: ignore[no-untyped-def]
    """README "Notifications": a full refund's `credits.voided` and a fulfilment's
    `checkout.conflict_canceled` reach every endpoint that takes all types, so an endpoint
    must be able to ask for them alone (they once got EVENT_TYPE_UNKNOWN)."""
    made = stub.CreateNotificationEndpoint(
        keyed(
            pb.CreateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(url="https://e.com", event_types=[event_type])
            )
        ),
        metadata=SERVICE_MD,
    )
    assert list(made.endpoint.event_types) == [event_type]


def test_without_a_service_key_nothing_is_answered(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        stub.ListNotificationEndpoints(pb.ListNotificationEndpointsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_list_pages_through_every_endpoint(stub) -> None:  # type: ignore[no-untyped-def]
    made = {create(stub).endpoint.endpoint_id for _ in range(3)}
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListNotificationEndpoints(
            pb.ListNotificationEndpointsRequest(page_size=2, page_token=token), metadata=SERVICE_MD
        )
        seen += [e.endpoint_id for e in page.endpoints]
        token = page.next_page_token
        if not token:
            break
    assert made <= set(seen) and len(seen) == len(set(seen))


def test_update_disable_enable_delete(stub) -> None:  # type: ignore[no-untyped-def]
    eid = create(stub).endpoint.endpoint_id
    updated = stub.UpdateNotificationEndpoint(
        keyed(
            pb.UpdateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(
                    endpoint_id=eid, url="http://127.0.0.1:9/new", event_types=["invoice.paid"]
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["url", "event_types"]),
            )
        ),
        metadata=SERVICE_MD,
    )
    assert (updated.url, list(updated.event_types), updated.description) == (
        "http://127.0.0.1:9/new",
        ["invoice.paid"],
        "d",
    )
    off = stub.DisableNotificationEndpoint(
        keyed(pb.DisableNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
    )
    assert not off.enabled and off.disabled_reason
    on = stub.EnableNotificationEndpoint(
        keyed(pb.EnableNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
    )
    assert on.enabled and not on.disabled_reason
    stub.DeleteNotificationEndpoint(
        keyed(pb.DeleteNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.GetNotificationEndpoint(
            pb.GetNotificationEndpointRequest(endpoint_id=eid), metadata=SERVICE_MD
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example./in",  # the root's dot
        "https://my_host.example/in",  # an underscore: not a DNS host name, yet resolvable
        "https://xn--bcher-kva.example/in",
        f"https://{'a' * 63}.example/in",
        "https://a-b.example/in%20box?x=a%20b",
        "http://127.0.0.1:8080/in",
        "http://[::1]:8080/in",
    ],
)
def test_a_url_a_client_can_send_to_is_taken_as_given(stub, url: str) -> None:  # type: ignore[no-untyped-def]
    assert create(stub, url=url).endpoint.url == url


def test_a_url_no_client_can_send_to_is_refused_by_update_and_changes_nothing(stub) -> None:  # type: ignore[no-untyped-def]
    made = create(stub, url="https://b\u00fccher.example/hooks")  # an IDN host is fine
    eid = made.endpoint.endpoint_id
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateNotificationEndpoint(
            keyed(
                pb.UpdateNotificationEndpointRequest(
                    endpoint=pb.NotificationEndpoint(endpoint_id=eid, url="http://a:b/hooks"),
                    update_mask=field_mask_pb2.FieldMask(paths=["url"]),
                )
            ),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "URL_INVALID"
    got = stub.GetNotificationEndpoint(
        pb.GetNotificationEndpointRequest(endpoint_id=eid), metadata=SERVICE_MD
    )
    assert got == made.endpoint


def test_an_update_mask_of_star_replaces_every_updatable_field(stub) -> None:  # type: ignore[no-untyped-def]
    eid = create(stub, types=["invoice.paid"]).endpoint.endpoint_id  # description "d"
    updated = stub.UpdateNotificationEndpoint(
        keyed(
            pb.UpdateNotificationEndpointRequest(
                endpoint=pb.NotificationEndpoint(endpoint_id=eid, url="http://127.0.0.1:9/all"),
                update_mask=field_mask_pb2.FieldMask(paths=["*"]),
            )
        ),
        metadata=SERVICE_MD,
    )
    assert (updated.url, updated.description, list(updated.event_types)) == (
        "http://127.0.0.1:9/all",
        "",
        [],
    )


def test_rotate_gives_a_new_secret_and_keeps_the_old_one_for_24_hours(stub) -> None:  # type: ignore[no-untyped-def]
    made = create(stub)
    rotated = stub.RotateNotificationEndpointSecret(
        keyed(pb.RotateNotificationEndpointSecretRequest(endpoint_id=made.endpoint.endpoint_id)),
        metadata=SERVICE_MD,
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != made.secret
    kept = rotated.endpoint.previous_secret_expire_time.ToDatetime(tzinfo=dt.UTC)
    changed = rotated.endpoint.update_time.ToDatetime(tzinfo=dt.UTC)
    assert kept - changed == dt.timedelta(hours=24)


def test_messages_attempts_and_resends(database_url) -> None:  # type: ignore[no-untyped-def]
    # Its own server on an empty database, not the module's shared one: there every message
    # also went to each endpoint earlier tests left, hundreds of failing deliveries.
    with server(database_url) as (channel, deps, _health):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        # The endpoint is unreachable (port 9): attempts fail fast, refused.
        deliverer = Deliverer(deps.db, Policy(timeout_sec=1, retry_first_sec=3600))
        eid = create(stub).endpoint.endpoint_id
        acct = f"acct_{uuid.uuid4().hex[:8]}"
        ids = [enqueue(deps.db, "invoice.paid", acct, {"n": n}) for n in range(3)]
        try:
            # Pass until nothing is due (every failure waits an hour, so this ends).
            while deliverer.run_once():
                pass
        finally:
            deliverer.close()
        pending = stub.ListNotificationMessages(
            pb.ListNotificationMessagesRequest(
                endpoint_id=eid, state=pb.NOTIFICATION_MESSAGE_STATE_PENDING, page_size=2
            ),
            metadata=SERVICE_MD,
        )
        rest = stub.ListNotificationMessages(
            pb.ListNotificationMessagesRequest(
                endpoint_id=eid,
                state=pb.NOTIFICATION_MESSAGE_STATE_PENDING,
                page_size=2,
                page_token=pending.next_page_token,
            ),
            metadata=SERVICE_MD,
        )
        listed = [m.notification.notification_id for m in [*pending.messages, *rest.messages]]
        assert listed == list(reversed(ids))  # newest first
        first = rest.messages[-1]
        assert (first.attempts, first.notification.type) == (1, "invoice.paid")
        assert first.last_error.startswith("ConnectError")
        delivered = stub.ListNotificationMessages(
            pb.ListNotificationMessagesRequest(
                endpoint_id=eid, state=pb.NOTIFICATION_MESSAGE_STATE_DELIVERED
            ),
            metadata=SERVICE_MD,
        )
        assert list(delivered.messages) == []
        attempts = stub.ListNotificationAttempts(
            pb.ListNotificationAttemptsRequest(endpoint_id=eid, notification_id=ids[0]),
            metadata=SERVICE_MD,
        )
        assert [(a.number, a.status_code) for a in attempts.attempts] == [(1, 0)]
        # resend one: due now again
        again = stub.ResendNotification(
            keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id=ids[0])),
            metadata=SERVICE_MD,
        )
        assert again.state == pb.NOTIFICATION_MESSAGE_STATE_PENDING
        assert again.next_attempt_time.ToDatetime(tzinfo=dt.UTC) <= dt.datetime.now(dt.UTC)
        since = timestamp_pb2.Timestamp()
        since.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
        queued = stub.ResendNotificationsSince(
            keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=since)),
            metadata=SERVICE_MD,
        )
        assert queued.queued >= 3
        with deps.db.transaction(readonly=True) as s:
            states = s.scalars(
                select(NotificationDelivery.state).where(NotificationDelivery.endpoint_id == eid)
            ).all()
        assert set(states) == {"pending"}


def test_messages_by_an_unknown_state_value_are_refused_not_all_listed(stub) -> None:  # type: ignore[no-untyped-def]
    eid = create(stub).endpoint.endpoint_id
    with pytest.raises(grpc.RpcError) as err:
        stub.ListNotificationMessages(
            pb.ListNotificationMessagesRequest(endpoint_id=eid, state=99),  # type: ignore[arg-type]
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "FIELD_INVALID"  # as every unknown enum number
    assert "state" in (err.value.details() or "")


def test_resend_of_an_unknown_notification_is_not_found(stub) -> None:  # type: ignore[no-untyped-def]
    eid = create(stub).endpoint.endpoint_id
    with pytest.raises(grpc.RpcError) as err:
        stub.ResendNotification(
            keyed(pb.ResendNotificationRequest(endpoint_id=eid, notification_id="ntf_nope")),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- WatchNotifications ----------------------------------------------------------------------


def positioned(deps: Deps) -> None:
    deliverer = Deliverer(deps.db, Policy())
    try:
        deliverer.fan_out()
    finally:
        deliverer.close()


def test_watch_resumes_from_the_last_cursor_without_gaps_or_repeats(stub, shared_deps) -> None:  # type: ignore[no-untyped-def]
    acct = f"acct_{uuid.uuid4().hex[:8]}"
    first = [enqueue(shared_deps.db, "credits.granted", acct, {"amount": "1"}) for _ in range(3)]
    positioned(shared_deps)
    # from the start, up to our three
    seen, cursor = [], ""
    stream = stub.WatchNotifications(pb.WatchNotificationsRequest(), metadata=SERVICE_MD)
    for item in stream:
        if item.notification.billing_account_id == acct:
            seen.append(item.notification.notification_id)
        cursor = item.cursor
        if len(seen) == 3:
            stream.cancel()
            break
    assert seen == first
    later = [enqueue(shared_deps.db, "invoice.paid", acct, {}) for _ in range(2)]
    positioned(shared_deps)
    resumed = stub.WatchNotifications(
        pb.WatchNotificationsRequest(cursor=cursor, event_types=["invoice.paid"]),
        metadata=SERVICE_MD,
    )
    got = []
    for item in resumed:
        assert item.notification.type == "invoice.paid"
        if item.notification.billing_account_id == acct:
            got.append(item.notification.notification_id)
        if len(got) == 2:
            resumed.cancel()
            break
    assert got == later


def test_watch_refuses_a_bad_cursor(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.WatchNotifications(
                pb.WatchNotificationsRequest(cursor="abc"), metadata=SERVICE_MD, timeout=10
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "CURSOR_INVALID"


def test_watch_ends_on_cancel_and_frees_its_thread(stub, shared_deps) -> None:  # type: ignore[no-untyped-def]
    """A cancelled watch at the head of the log ends: a later call on the server still runs."""
    top = stub.WatchNotifications(pb.WatchNotificationsRequest(), metadata=SERVICE_MD)
    done = threading.Event()

    def consume() -> None:
        try:
            for _ in top:
                pass
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.CANCELLED
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    top.cancel()
    t.join(timeout=30)
    assert done.is_set()
    assert stub.ListNotificationEndpoints(
        pb.ListNotificationEndpointsRequest(page_size=1), metadata=SERVICE_MD, timeout=10
    )


def test_concurrent_failed_attempts_on_one_endpoint_do_not_deadlock(database_url) -> None:  # type: ignore[no-untyped-def]
    """Eight senders record failed attempts for one endpoint at once: each inserts an attempt
    (a key-share lock on the endpoint through the foreign key) and then locks the endpoint to
    mark it failing. Done in one transaction with a plain FOR UPDATE, two senders waited on
    each other (PostgreSQL aborted one: deadlock detected). The endpoint is now marked in a
    transaction of its own, after the attempt's (`Deliverer` in notifications/delivery.py),
    so this test guards that split and the key-share lock together: putting both back into
    one transaction with a plain FOR UPDATE fails it; either change alone does not.

    On its own empty database, not the module's shared one: there every message also went to
    each endpoint earlier tests left (hundreds of deliveries to other endpoints per pass)."""
    db = Database(database_url)
    try:
        with db.transaction() as session:
            endpoint, _ = endpoints.create(
                session, endpoints.Fields(url="http://127.0.0.1:9/hooks"), utcnow()
            )
            eid = endpoint.id
        for n in range(64):  # one account each: per-account order does not serialize them
            enqueue(db, "invoice.paid", f"acct_{uuid.uuid4().hex[:8]}", {"n": n})

        def attempted() -> int:
            with db.transaction(readonly=True) as session:
                total = session.scalars(
                    select(func.sum(NotificationDelivery.attempts)).where(
                        NotificationDelivery.endpoint_id == eid
                    )
                ).one()
            return int(total or 0)

        # Pass until every message was tried; a deadlock would raise out of run_once.
        deliverer = Deliverer(db, Policy(timeout_sec=1, retry_first_sec=3600))
        try:
            for _pass in range(40):
                deliverer.run_once()
                if attempted() >= 64:
                    break
        finally:
            deliverer.close()
        assert attempted() == 64  # each message tried once (the next try is an hour away)
    finally:
        db.dispose()


def test_a_since_out_of_protobufs_range_is_400_field_invalid(stub) -> None:  # type: ignore[no-untyped-def]
    eid = create(stub).endpoint.endpoint_id
    far = timestamp_pb2.Timestamp(seconds=-208524704479477)  # found by the gRPC fuzz test
    with pytest.raises(grpc.RpcError) as err:
        stub.ResendNotificationsSince(
            keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=far)),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "FIELD_INVALID"


def test_a_since_in_the_future_is_400_field_invalid_and_queues_nothing(stub) -> None:  # type: ignore[no-untyped-def]
    # Before: answered {"queued": 0}, as if there were simply nothing to resend.
    eid = create(stub).endpoint.endpoint_id
    tomorrow = timestamp_pb2.Timestamp()
    tomorrow.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    with pytest.raises(grpc.RpcError) as err:
        stub.ResendNotificationsSince(
            keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=tomorrow)),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "FIELD_INVALID"
    assert "future" in (err.value.details() or "")


def test_an_idle_watch_ends_cleanly_before_the_replicas_idle_stream_cut(database_url) -> None:  # type: ignore[no-untyped-def]
    # The replica cancels any stream idle for BILLING_GRPC_STREAM_IDLE_SEC; the watch ends by
    # itself first (OK, resume from the cursor), however long BILLING_NOTIFY_WATCH_IDLE_SEC.
    env = {"BILLING_GRPC_STREAM_IDLE_SEC": "2", "BILLING_NOTIFY_WATCH_IDLE_SEC": "300"}
    with server(database_url, **env) as (channel, _deps, _health):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        stream = stub.WatchNotifications(
            pb.WatchNotificationsRequest(), metadata=SERVICE_MD, timeout=30
        )
        assert list(stream) == []
        assert stream.code() == grpc.StatusCode.OK


def _wait_until_blocked_on_a_lock(db) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with db.transaction(readonly=True) as s:
            waiting = s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the call never waited for the delete's lock")


@pytest.mark.parametrize("which", ["one", "since"])
def test_a_resend_racing_a_delete_of_its_endpoint_is_not_found_never_internal(
    pg_url, which
) -> None:  # type: ignore[no-untyped-def]
    with server(pg_url) as (channel, deps, _health):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        eid = create(stub).endpoint.endpoint_id
        ntf = enqueue(deps.db, "invoice.paid", "acct_race", {})
        positioned(deps)
        if which == "one":
            request = pb.ResendNotificationRequest(endpoint_id=eid, notification_id=ntf)
            call = stub.ResendNotification
        else:
            since = timestamp_pb2.Timestamp(seconds=0)
            request = pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=since)
            call = stub.ResendNotificationsSince
        codes: list[grpc.StatusCode] = []

        def resend() -> None:
            try:
                call(keyed(request), metadata=SERVICE_MD, timeout=30)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())

        with deps.db.transaction() as s:  # the delete, not committed yet
            endpoints.delete(s, eid)
            racer = threading.Thread(target=resend)
            racer.start()
            _wait_until_blocked_on_a_lock(deps.db)
        racer.join(timeout=30)
        assert codes == [grpc.StatusCode.NOT_FOUND]
        with deps.db.transaction(readonly=True) as s:
            assert s.get(NotificationEndpoint, eid) is None
            left = s.scalar(
                select(func.count())
                .select_from(NotificationDelivery)
                .where(NotificationDelivery.endpoint_id == eid)
            )
            assert left == 0
