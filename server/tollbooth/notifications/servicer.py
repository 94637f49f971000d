"""NotificationService over gRPC: endpoints, messages and attempts, resends, the watch stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from billing.v1 import notification_pb2, notification_pb2_grpc
from tollbooth import errors
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.notifications import addresses, convert, endpoints, messages, watch
from tollbooth.rpc.convert import from_ts
from tollbooth.rpc.servicer import Servicer, contract

pb = notification_pb2


@contract(pb.DESCRIPTOR.services_by_name["NotificationService"])
class NotificationServicer(Servicer, notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)

    def _guard(self, url: str) -> None:
        """With BILLING_NOTIFY_DENY_PRIVATE, the url's host is looked up and refused when it
        leads to a non-global address: here, before the transaction opens (a lookup is a
        network call, bounded by the delivery timeout)."""
        settings = self.deps.settings
        if settings.notify_deny_private:
            addresses.refuse_private(url, settings.notify_timeout_sec)

    def CreateNotificationEndpoint(
        self, request: pb.CreateNotificationEndpointRequest, context: grpc.ServicerContext
    ) -> pb.NotificationEndpointWithSecret:
        self._guard(request.endpoint.url)

        def effect(session):  # type: ignore[no-untyped-def]
            endpoint, secret = endpoints.create(session, convert.fields(request.endpoint), utcnow())
            return pb.NotificationEndpointWithSecret(
                endpoint=convert.endpoint_out(endpoint), secret=secret
            )

        return self.write(request, pb.NotificationEndpointWithSecret, effect)

    def ListNotificationEndpoints(
        self, request: pb.ListNotificationEndpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListNotificationEndpointsResponse:
        with self.read() as session:
            page = endpoints.list_page(session, request.page_size, request.page_token)
            return pb.ListNotificationEndpointsResponse(
                endpoints=[convert.endpoint_out(e) for e in page.items],
                next_page_token=page.next_page_token,
            )

    def GetNotificationEndpoint(
        self, request: pb.GetNotificationEndpointRequest, context: grpc.ServicerContext
    ) -> pb.NotificationEndpoint:
        with self.read() as session:
            return convert.endpoint_out(endpoints.get(session, request.endpoint_id))

    def UpdateNotificationEndpoint(
        self, request: pb.UpdateNotificationEndpointRequest, context: grpc.ServicerContext
    ) -> pb.NotificationEndpoint:
        paths = list(request.update_mask.paths) or [
            f.name for f, _ in request.endpoint.ListFields() if f.name != "endpoint_id"
        ]
        if {p.strip() for p in paths} & {"url", "*"}:
            self._guard(request.endpoint.url)
        return self.write(
            request,
            pb.NotificationEndpoint,
            lambda session: convert.endpoint_out(
                endpoints.update(
                    session,
                    request.endpoint.endpoint_id,
                    convert.fields(request.endpoint),
                    paths,
                    utcnow(),
                )
            ),
        )

    def DisableNotificationEndpoint(
        self, request: pb.DisableNotificationEndpointRequest, context: grpc.ServicerContext
    ) -> pb.NotificationEndpoint:
        return self.write(
            request,
            pb.NotificationEndpoint,
            lambda session: convert.endpoint_out(
                endpoints.set_enabled(
                    session, request.endpoint_id, False, "disabled by an operator", utcnow()
                )
            ),
        )

    def EnableNotificationEndpoint(
        self, request: pb.EnableNotificationEndpointRequest, context: grpc.ServicerContext
    ) -> pb.NotificationEndpoint:
        return self.write(
            request,
            pb.NotificationEndpoint,
            lambda session: convert.endpoint_out(
                endpoints.set_enabled(session, request.endpoint_id, True, "", utcnow())
            ),
        )

    def DeleteNotificationEndpoint(
        self, request: pb.DeleteNotificationEndpointRequest, context: grpc.ServicerContext
    ) -> pb.DeleteNotificationEndpointResponse:
        def effect(session):  # type: ignore[no-untyped-def]
            endpoints.delete(session, request.endpoint_id)
            return pb.DeleteNotificationEndpointResponse(endpoint_id=request.endpoint_id)

        return self.write(request, pb.DeleteNotificationEndpointResponse, effect)

    def RotateNotificationEndpointSecret(
        self, request: pb.RotateNotificationEndpointSecretRequest, context: grpc.ServicerContext
    ) -> pb.NotificationEndpointWithSecret:
        def effect(session):  # type: ignore[no-untyped-def]
            endpoint, secret = endpoints.rotate(session, request.endpoint_id, utcnow())
            return pb.NotificationEndpointWithSecret(
                endpoint=convert.endpoint_out(endpoint), secret=secret
            )

        return self.write(request, pb.NotificationEndpointWithSecret, effect)

    def ListNotificationMessages(
        self, request: pb.ListNotificationMessagesRequest, context: grpc.ServicerContext
    ) -> pb.ListNotificationMessagesResponse:
        state = convert.STATE_IN.get(request.state) if request.state else None
        if request.state and state is None:
            raise errors.invalid("state is not a known message state", field="state")
        with self.read() as session:
            page = messages.list_messages(
                session, request.endpoint_id, state, request.page_size, request.page_token
            )
            return pb.ListNotificationMessagesResponse(
                messages=[convert.message_out(m) for m in page.items],
                next_page_token=page.next_page_token,
            )

    def ListNotificationAttempts(
        self, request: pb.ListNotificationAttemptsRequest, context: grpc.ServicerContext
    ) -> pb.ListNotificationAttemptsResponse:
        with self.read() as session:
            page = messages.list_attempts(
                session,
                request.endpoint_id,
                request.notification_id,
                request.page_size,
                request.page_token,
            )
            return pb.ListNotificationAttemptsResponse(
                attempts=[convert.attempt_out(a) for a in page.items],
                next_page_token=page.next_page_token,
            )

    def ResendNotification(
        self, request: pb.ResendNotificationRequest, context: grpc.ServicerContext
    ) -> pb.NotificationMessage:
        return self.write(
            request,
            pb.NotificationMessage,
            lambda session: convert.message_out(
                messages.resend(session, request.endpoint_id, request.notification_id, utcnow())
            ),
        )

    def ResendNotificationsSince(
        self, request: pb.ResendNotificationsSinceRequest, context: grpc.ServicerContext
    ) -> pb.ResendNotificationsSinceResponse:
        if not request.HasField("since"):
            raise errors.required("since")
        since = from_ts(request.since, "since")
        return self.write(
            request,
            pb.ResendNotificationsSinceResponse,
            lambda session: pb.ResendNotificationsSinceResponse(
                queued=messages.resend_since(session, request.endpoint_id, since, utcnow())
            ),
        )

    def WatchNotifications(
        self, request: pb.WatchNotificationsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchNotificationsResponse]:
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        settings = self.deps.settings
        # The replica cancels a stream idle for grpc_stream_idle_sec (rpc/streams.py): end
        # cleanly before that, so the client sees the documented end, not CANCELLED.
        cut = settings.grpc_stream_idle_sec
        for row in watch.watch(
            self.deps.db,
            request.cursor,
            list(request.event_types),
            cancelled,
            poll_sec=settings.notify_poll_ms / 1000,
            idle_sec=min(settings.notify_watch_idle_sec, max(cut - 2, cut / 2)),
        ):
            yield pb.WatchNotificationsResponse(
                notification=convert.notification_out(row), cursor=str(row.position)
            )
