"""WebhookService over gRPC (internal, called by the sidecar)."""

from __future__ import annotations

from billing.v1 import webhook_pb2
from tollbooth.rpc.convert import from_ts
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.webhooks import service


@contract(webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"])
class WebhookServicer(Servicer):
    def RecordStripeEvent(self, request, context):  # type: ignore[no-untyped-def]
        created = from_ts(request.created) if request.HasField("created") else None
        with self.deps.db.transaction() as session:
            duplicate = service.record_event(
                session,
                event_id=request.event_id,
                type_=request.type,
                api_version=request.api_version,
                livemode=request.livemode,
                created=created,
                payload=request.payload,
            )
        return webhook_pb2.RecordStripeEventResponse(event_id=request.event_id, duplicate=duplicate)
