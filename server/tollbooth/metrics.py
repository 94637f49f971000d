"""Prometheus metrics (prometheus-client), served by every process on its own loopback port.

`run` gives each child its port (BILLING_METRICS_PORT upwards, `tollbooth.stack`); 0 turns
the endpoint off. The counters live here so any room can count without importing another;
counts read from the database at scrape time (the webhook inbox) are registered by the
assembly with `register_counts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("tollbooth.metrics")

RPCS = Counter(
    "tollbooth_rpc", "gRPC calls answered, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "tollbooth_rpc_duration_seconds",
    "gRPC call latency, by method and status code",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEBITS = Counter("tollbooth_credit_debits", "credit debits answered (request_id replays included)")
USAGE_EVENTS = Counter("tollbooth_usage_events", "usage events ingested, by outcome", ["outcome"])
NOTIFY_ATTEMPTS = Counter(
    "tollbooth_notification_attempts",
    "notification delivery attempts (POSTs to endpoints), by outcome: delivered (2xx), "
    "rejected (another HTTP status) or unreachable (no answer)",
    ["outcome"],
)
NOTIFY_SECONDS = Histogram(
    "tollbooth_notification_attempt_duration_seconds",
    "notification delivery attempt latency, by outcome",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_REQUESTS = Counter(
    "tollbooth_webhook_requests",
    "webhook deliveries answered by the sidecar, by HTTP status",
    ["status"],
)


# (method, code) -> the count's and the latency's child: `labels()` looks the child up under a
# lock on every call; the children live as long as their family, so they are kept here. The
# methods are the served ones and the codes gRPC's, so this stays small.
_RPC_CHILDREN: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def observe_rpc(method: str, code: str, seconds: float) -> None:
    children = _RPC_CHILDREN.get((method, code))
    if children is None:
        children = _RPC_CHILDREN[(method, code)] = (
            RPCS.labels(method, code),
            RPC_SECONDS.labels(method, code),
        )
    children[0].inc()
    children[1].observe(seconds)


def observe_notification_attempt(status_code: int, latency_ms: int) -> None:
    """One POST of a notification: 2xx delivered, another status rejected, 0 unreachable."""
    if 200 <= status_code < 300:
        outcome = "delivered"
    elif status_code:
        outcome = "rejected"
    else:
        outcome = "unreachable"
    NOTIFY_ATTEMPTS.labels(outcome).inc()
    NOTIFY_SECONDS.labels(outcome).observe(latency_ms / 1000)


class _Counts(Collector):
    """A gauge family read when scraped (a failed read is logged and shows nothing)."""

    def __init__(self, name: str, doc: str, label: str, read: Callable[[], Mapping[str, int]]):
        self._name, self._doc, self._label, self._read = name, doc, label, read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=[self._label])
        try:
            for value, count in sorted(self._read().items()):
                family.add_metric([value], count)
        except Exception:  # noqa: BLE001 - a scrape never fails because the database did
            log.warning("could not read %s", self._name, exc_info=True)
        yield family


def register_counts(name: str, doc: str, label: str, read: Callable[[], Mapping[str, int]]) -> None:
    REGISTRY.register(_Counts(name, doc, label, read))


def serve(port: int, variable: str = "BILLING_METRICS_PORT") -> None:
    """Serve /metrics on 127.0.0.1:`port` in a background thread (nothing when 0)."""
    if not port:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        raise RuntimeError(
            f"port {port} ({variable}) cannot serve metrics: {exc.strerror}"
        ) from exc
    log.info(
        f"metrics on http://127.0.0.1:{port}/metrics",
        extra={"event": "metrics_listening", "port": port},
    )
