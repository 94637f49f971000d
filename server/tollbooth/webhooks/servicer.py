"""WebhookService over gRPC (internal, called by the sidecar) and StripeEventService (operators)."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tollbooth import errors
from tollbooth.db.models import StripeEvent
from tollbooth.deps import Deps
from tollbooth.paging import Keyset, Micros, Text
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.webhooks import repository, service
from tollbooth.webhooks.service import Inbox

STATUS_OUT = {
    "pending": webhook_pb2.STRIPE_EVENT_STATUS_PENDING,
    "applied": webhook_pb2.STRIPE_EVENT_STATUS_APPLIED,
    "ignored": webhook_pb2.STRIPE_EVENT_STATUS_IGNORED,
    "failed": webhook_pb2.STRIPE_EVENT_STATUS_FAILED,
}
STATUS_IN = {v: k for k, v in STATUS_OUT.items()}


def _ts(at: dt.datetime | None) -> Timestamp | None:
    if at is None:
        return None
    out = Timestamp()
    out.FromDatetime(at)
    return out


def event_out(row: StripeEvent) -> webhook_pb2.StripeEvent:
    return webhook_pb2.StripeEvent(
        event_id=row.event_id,
        type=row.type,
        status=STATUS_OUT.get(row.status, webhook_pb2.STRIPE_EVENT_STATUS_UNSPECIFIED),
        livemode=bool(row.livemode),
        attempts=int(row.attempts or 0),
        last_error=row.last_error or "",
        received_at=_ts(row.received_at),
        processed_at=_ts(row.processed_at),
        next_attempt_at=_ts(row.next_attempt_at),
    )


@contract(webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"])
class WebhookServicer(Servicer, webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(self, deps: Deps, inbox: Inbox) -> None:
        super().__init__(deps)
        self.inbox = inbox

    def RecordStripeEvent(
        self, request: webhook_pb2.RecordStripeEventRequest, context: grpc.ServicerContext
    ) -> webhook_pb2.RecordStripeEventResponse:
        settings = self.deps.settings
        service.verify_signature(
            request.payload,
            request.stripe_signature,
            settings.webhook_secrets,
            settings.webhook_tolerance_sec,
        )
        event, duplicate, outcome = self.inbox.record(request.payload)
        return webhook_pb2.RecordStripeEventResponse(
            event_id=event.event_id,
            duplicate=duplicate,
            status=STATUS_OUT.get(outcome.status, webhook_pb2.STRIPE_EVENT_STATUS_UNSPECIFIED),
        )


@contract(webhook_pb2.DESCRIPTOR.services_by_name["StripeEventService"])
class StripeEventServicer(Servicer, webhook_pb2_grpc.StripeEventServiceServicer):
    def __init__(self, deps: Deps, inbox: Inbox) -> None:
        super().__init__(deps)
        self.inbox = inbox

    def ListStripeEvents(
        self, request: webhook_pb2.ListStripeEventsRequest, context: grpc.ServicerContext
    ) -> webhook_pb2.ListStripeEventsResponse:
        status = None
        if request.status != webhook_pb2.STRIPE_EVENT_STATUS_UNSPECIFIED:
            status = STATUS_IN.get(request.status)
            if status is None:
                raise errors.invalid("status is not a known event status", field="status")
        keyset: Keyset[StripeEvent] = Keyset.of(
            f"stripe-events:{status or 'all'}",
            (Micros(), Text()),
            lambda e: (e.received_at, e.event_id),
            request.page_size,
        )
        after = keyset.after(request.page_token)
        with self.read() as session:
            rows = repository.list_events(
                session,
                status=status,
                after=(after[0], after[1]) if after else None,
                limit=keyset.limit,
            )
            page = keyset.page(rows)
            return webhook_pb2.ListStripeEventsResponse(
                events=[event_out(r) for r in page.items], next_page_token=page.next_page_token
            )

    def ReplayStripeEvents(
        self, request: webhook_pb2.ReplayStripeEventsRequest, context: grpc.ServicerContext
    ) -> webhook_pb2.ReplayStripeEventsResponse:
        event_id = request.event_id.strip()  # a blank one names no event
        if bool(event_id) == bool(request.all_failed):
            raise errors.invalid(
                "name one event_id, or set all_failed", reason="REPLAY_TARGET_REQUIRED"
            )
        if event_id:
            outcome = self.inbox.replay(event_id)
            if outcome.status == "missing":
                raise errors.not_found("stripe event", event_id)
            ids = [event_id]
        else:
            ids = [ident for ident, _ in self.inbox.replay_failed()]
        with self.read() as session:
            rows = [repository.read_event(session, ident) for ident in ids]
            return webhook_pb2.ReplayStripeEventsResponse(
                events=[event_out(r) for r in rows if r is not None]
            )
