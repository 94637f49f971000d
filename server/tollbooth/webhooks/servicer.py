"""WebhookService over gRPC (internal, called by the sidecar)."""

from __future__ import annotations

import grpc

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.webhooks import service
from tollbooth.webhooks.dispatch import Registry


@contract(webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"])
class WebhookServicer(Servicer, webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(self, deps: Deps, registry: Registry) -> None:
        super().__init__(deps)
        self.registry = registry

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
        with self.deps.db.transaction() as session:
            event, duplicate = service.record_event(session, request.payload, self.registry)
        return webhook_pb2.RecordStripeEventResponse(event_id=event.event_id, duplicate=duplicate)
