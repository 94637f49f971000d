"""Proto conversions of the notifications room."""

from __future__ import annotations

from google.protobuf import struct_pb2

from billing.v1 import notification_pb2
from tollbooth.db.models import NotificationAttempt, NotificationEndpoint, NotificationOutbox
from tollbooth.notifications import envelope
from tollbooth.notifications.endpoints import Fields, shown_url
from tollbooth.notifications.messages import Message
from tollbooth.rpc.convert import ts

pb = notification_pb2
STATE_OUT = {
    "pending": pb.NOTIFICATION_MESSAGE_STATE_PENDING,
    "delivered": pb.NOTIFICATION_MESSAGE_STATE_DELIVERED,
    "failed": pb.NOTIFICATION_MESSAGE_STATE_FAILED,
}
STATE_IN = {v: k for k, v in STATE_OUT.items()}


def fields(msg: pb.NotificationEndpoint) -> Fields:
    return Fields(url=msg.url, description=msg.description, event_types=tuple(msg.event_types))


def endpoint_out(e: NotificationEndpoint) -> pb.NotificationEndpoint:
    return pb.NotificationEndpoint(
        endpoint_id=e.id,
        url=shown_url(e.url),
        description=e.description,
        event_types=list(e.event_types or []),
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        failing_since=ts(e.failing_since),
        previous_secret_expire_time=ts(e.previous_secret_expires_at),
        create_time=ts(e.created_at),
        update_time=ts(e.updated_at),
    )


def notification_out(row: NotificationOutbox) -> pb.Notification:
    data = struct_pb2.Struct()
    data.update(envelope.data(row))
    return pb.Notification(
        notification_id=row.id,
        type=envelope.public_type(row.type),
        billing_account_id=row.billing_account_id or "",
        data=data,
        create_time=ts(row.created_at),
    )


def message_out(m: Message) -> pb.NotificationMessage:
    d, row = m
    return pb.NotificationMessage(
        notification=notification_out(row),
        endpoint_id=d.endpoint_id,
        state=STATE_OUT.get(d.state, pb.NOTIFICATION_MESSAGE_STATE_UNSPECIFIED),
        attempts=d.attempts,
        last_error=d.last_error,
        next_attempt_time=ts(d.next_attempt_at) if d.state == "pending" else None,
        deliver_time=ts(d.delivered_at),
    )


def attempt_out(a: NotificationAttempt) -> pb.NotificationAttempt:
    return pb.NotificationAttempt(
        attempt_id=a.id,
        endpoint_id=a.endpoint_id,
        notification_id=a.notification_id,
        number=a.number,
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        error=a.error,
        create_time=ts(a.created_at),
    )
