"""UsageService over gRPC: proto in, proto out, one transaction per answer.

Acknowledged means committed: IngestEvent and IngestEvents answer after their transaction
committed; StreamEvents commits in groups (usage.batcher) and acknowledges each event only
after the commit of its group.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence

import grpc
from sqlalchemy.orm import Session

from billing.v1 import usage_pb2, usage_pb2_grpc
from tollbooth import errors, metrics
from tollbooth.auth.caller import current_caller
from tollbooth.deps import Deps
from tollbooth.rpc.convert import ts
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.usage import convert, service
from tollbooth.usage.batcher import Grouper, SharedCommit
from tollbooth.usage.events import REJECTED, Outcome
from tollbooth.usage.limits import Limits

_STATUS = convert.STATUS


def _events_of(msg: usage_pb2.StreamEventsRequest) -> list[usage_pb2.UsageEvent]:
    events = list(msg.events)
    if msg.HasField("event"):
        events.insert(0, msg.event)
    return events


def _weight(msg: usage_pb2.StreamEventsRequest) -> int:
    return len(msg.events) + msg.HasField("event")


@contract(usage_pb2.DESCRIPTOR.services_by_name["UsageService"])
class UsageServicer(Servicer, usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self.limits = Limits.from_settings(deps.settings)
        self.accounts = service.AccountCache()
        # The groups of every open stream of this process, committed together when they
        # arrive during another stream's commit (usage.batcher.SharedCommit).
        self._shared = SharedCommit(self._commit_groups)

    def _ingest(self, batch: Sequence[usage_pb2.UsageEvent]) -> list[Outcome]:
        # Checked (and converted to domain values) before the transaction: no database needed.
        checked = convert.check_batch(batch, self.limits, int(time.time()))
        with self.deps.db.transaction() as session:
            outcomes = service.ingest(session, checked, self.accounts)
        # One increment per status, not per event (a label lookup costs about a microsecond).
        for status, count in Counter(o.status for o in outcomes).items():
            metrics.USAGE_EVENTS.labels(status).inc(count)
        return outcomes

    # Ingest ------------------------------------------------------------------------------

    def IngestEvent(
        self, request: usage_pb2.IngestEventRequest, context: grpc.ServicerContext
    ) -> usage_pb2.EventResult:
        (outcome,) = self._ingest([request.event])
        if outcome.status == REJECTED:
            raise service.rejection(outcome)
        return convert.result(outcome)

    def IngestEvents(
        self, request: usage_pb2.IngestEventsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.IngestEventsResponse:
        batch = request.events
        if len(batch) > self.limits.max_batch:
            raise errors.invalid(
                f"a batch holds at most {self.limits.max_batch} events",
                reason="BATCH_TOO_LARGE",
                field="events",
            )
        outcomes = self._ingest(batch) if batch else []
        response = usage_pb2.IngestEventsResponse()
        add = response.results.add
        for o in outcomes:
            add(unique_id=o.unique_id, status=_STATUS[o.status], reason=o.reason, message=o.message)
        return response

    def StreamEvents(
        self,
        request_iterator: Iterator[usage_pb2.StreamEventsRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[usage_pb2.StreamEventsResponse]:
        return self._stream(request_iterator)

    def _stream(
        self, requests: Iterator[usage_pb2.StreamEventsRequest]
    ) -> Iterator[usage_pb2.StreamEventsResponse]:
        limits = self.limits
        grouper = Grouper(
            requests, limits.stream_group_max, limits.stream_group_ms / 1e3, weight=_weight
        )
        try:
            for group in grouper.groups():
                outcomes = self._shared.submit(group)  # committed when this returns
                # One response per commit: a message per event would cost a send each.
                response = usage_pb2.StreamEventsResponse()
                add = response.results.add
                for o in outcomes:
                    add(
                        unique_id=o.unique_id,
                        status=_STATUS[o.status],
                        reason=o.reason,
                        message=o.message,
                    )
                yield response
        finally:
            grouper.close()

    def _commit_groups(
        self, groups: list[list[usage_pb2.StreamEventsRequest]]
    ) -> list[list[Outcome]]:
        """The groups of several streams through one transaction; each group's outcomes."""
        if len(groups) == 1:
            return [self._ingest_messages(groups[0])]
        outcomes = self._ingest_messages([msg for group in groups for msg in group])
        answers: list[list[Outcome]] = []
        start = 0
        for group in groups:
            end = start + sum(_weight(msg) for msg in group)
            answers.append(outcomes[start:end])
            start = end
        return answers

    def _ingest_messages(self, group: list[usage_pb2.StreamEventsRequest]) -> list[Outcome]:
        """The events of a group of stream messages, in order, through one transaction."""
        batch: list[usage_pb2.UsageEvent] = []
        slots: list[Outcome | None] = []  # None: the next outcome of the batch
        too_large = f"a stream message holds at most {self.limits.max_batch} events"
        for msg in group:
            events = _events_of(msg)
            if len(events) > self.limits.max_batch:
                # Each answer names its event, as every other answer does.
                slots.extend(
                    Outcome(convert.echo(e.unique_id), REJECTED, "BATCH_TOO_LARGE", too_large)
                    for e in events
                )
                continue
            batch.extend(events)
            slots.extend(None for _ in events)
        done = iter(self._ingest(batch) if batch else [])
        return [slot or next(done) for slot in slots]

    # Metrics -----------------------------------------------------------------------------

    def CreateMetric(
        self, request: usage_pb2.CreateMetricRequest, context: grpc.ServicerContext
    ) -> usage_pb2.Metric:
        return self.write(
            request,
            usage_pb2.Metric,
            lambda session: convert.metric_out(
                service.create_metric(session, convert.metric_fields(request.metric))
            ),
        )

    def GetMetric(
        self, request: usage_pb2.GetMetricRequest, context: grpc.ServicerContext
    ) -> usage_pb2.Metric:
        with self.read() as session:
            return convert.metric_out(service.get_metric(session, request.code))

    def ListMetrics(
        self, request: usage_pb2.ListMetricsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListMetricsResponse:
        with self.read() as session:
            page = service.list_metrics(session, request.page_size, request.page_token)
            return usage_pb2.ListMetricsResponse(
                metrics=[convert.metric_out(m) for m in page.items],
                next_page_token=page.next_page_token,
            )

    def UpdateMetric(
        self, request: usage_pb2.UpdateMetricRequest, context: grpc.ServicerContext
    ) -> usage_pb2.Metric:
        paths = list(request.update_mask.paths)
        if not paths:  # AIP-134: the implied mask is what the request populated
            paths = [p for p in convert.populated_paths(request.metric) if p != "code"]
        return self.write(
            request,
            usage_pb2.Metric,
            lambda session: convert.metric_out(
                service.update_metric(
                    session, request.metric.code, convert.metric_fields(request.metric), paths
                )
            ),
        )

    def DeleteMetric(
        self, request: usage_pb2.DeleteMetricRequest, context: grpc.ServicerContext
    ) -> usage_pb2.DeleteMetricResponse:
        def effect(session: Session) -> usage_pb2.DeleteMetricResponse:
            service.delete_metric(session, request.code)
            return usage_pb2.DeleteMetricResponse()

        return self.write(request, usage_pb2.DeleteMetricResponse, effect)

    # GetUsage ----------------------------------------------------------------------------

    def GetUsage(
        self, request: usage_pb2.GetUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetUsageResponse:
        with self.read() as session:
            answer = service.get_usage(
                session,
                current_caller.get(),
                request.account,
                request.metric_code,
                convert.period_bound(request, "start_time"),
                convert.period_bound(request, "end_time"),
                group_by=request.group_by,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return usage_pb2.GetUsageResponse(
                billing_account_id=answer.account_id,
                metric_code=answer.metric_code,
                start_time=ts(answer.start),
                end_time=ts(answer.end),
                value=answer.value,
                groups=[usage_pb2.UsageGroup(key=k, value=v) for k, v in answer.groups],
                next_page_token=answer.next_page_token,
            )
