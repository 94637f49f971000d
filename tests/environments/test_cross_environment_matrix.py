"""The cross-environment matrix: one deployment serves a test and a live environment, each on
its own PostgreSQL database, and a key or token of one never reaches the other's objects.

For every RPC that takes the id of a stored object (an account by id or alias, a grant, debit,
reservation, product, price, lookup key, checkout session, metric, customer, Stripe event or
notification endpoint), an id made in the other environment answers exactly as an id that does
not exist, with a service key and (where the RPC takes one) a bearer token, through gRPC and
through Envoy's REST; the caller's own object answers otherwise (the control: the request is
one the RPC would act on). Both directions, test->live and live->test.

Not in the matrix: `notification_id` (a message needs an endpoint that received it; so
ResendNotification is left out, ListNotificationAttempts is in through its `endpoint_id`),
the customer e-mail of GetCustomerSubscription (an address, not an id), and creates naming
the object they make (LEFT_OUT says why for each); RecordStripeEvent is routed by its
signature (tests/environments/test_environments.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import json_format, text_format
from google.protobuf.descriptor import MethodDescriptor

from tests.environments.objects import REQUESTS, make
from tests.environments.support import Environment, Pair, two_environments
from tests.helpers import error_reason, keyed
from tollbooth.rpc.rules import contract_services, load_requirements

# Request fields holding ids of stored objects (top level or in the request's message).
ID_FIELD = re.compile(r"^(account|id|code|metric_code|lookup_key|[a-z_]+_id)$")
NOT_IDS = {"request_id", "principal_id", "user_id", "catalog_price_id", "unique_id"}
# Id-taking RPCs the matrix leaves out, and why (the module's comment says more).
LEFT_OUT = {
    "TokenService.IssueToken": "principal_id names the account to make, not a stored object",
    "WebhookService.RecordStripeEvent": "routed by its signature (test_environments.py)",
    "UsageService.IngestEvents": "the same per-event check as IngestEvent, in a batch",
    "NotificationService.ResendNotification": "needs a notification_id the endpoint received",
    # Creates name the object to make; the same code in both environments is two objects
    # (test_environments.py).
    "UsageService.CreateMetric": "the code of a new metric",
    "CatalogService.CreateProduct": "the id of a new product",
    "NotificationService.CreateNotificationEndpoint": "the id of a new endpoint",
}


class Reads(dict):  # type: ignore[type-arg]
    """A dict that remembers which keys were read (which ids a request uses)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.read.append(key)
        return super().__getitem__(key)


def methods() -> dict[str, MethodDescriptor]:
    return {
        f"{s.name}.{m.name}": m
        for s in contract_services()
        for m in s.methods
        if not (m.client_streaming or m.server_streaming)
    }


def id_fields(method: MethodDescriptor) -> set[str]:
    found = set()
    for field in method.input_type.fields:
        if field.message_type is not None and field.message_type.name != "Timestamp":
            found |= {
                f"{field.name}.{inner.name}"
                for inner in field.message_type.fields
                if ID_FIELD.match(inner.name) and inner.name not in NOT_IDS
            }
        elif ID_FIELD.match(field.name) and field.name not in NOT_IDS:
            found.add(field.name)
    return found


SAMPLE = {
    k: f"{k}_sample"
    for k in (
        "account alias token grant debit reservation product price lookup_key checkout "
        "metric endpoint customer event credit_type payment"
    ).split()
}


def ids_read(name: str) -> list[str]:
    o = Reads(SAMPLE)
    REQUESTS[name](o)
    return sorted({k for k in o.read if k not in ("credit_type", "token")})


@dataclass(frozen=True)
class Row:
    method: str
    key: str  # which id of the caller's objects is replaced
    credential: str  # "service" or "bearer"

    @property
    def id(self) -> str:
        return f"{self.method.split('.')[1]}.{self.key}.{self.credential}"


def rows() -> list[Row]:
    rules = load_requirements()
    found = []
    for name, method in methods().items():
        if name not in REQUESTS:
            continue
        rule = rules[f"/{method.containing_service.full_name}/{method.name}"]
        for key in ids_read(name):
            found.append(Row(name, key, "service"))
            if rule.bearer and key in ("account", "checkout", "payment"):
                found.append(Row(name, key, "bearer"))
    return found


ROWS = rows()


def test_the_matrix_covers_every_rpc_that_takes_an_id() -> None:
    taking = {name for name, m in methods().items() if id_fields(m)}
    assert taking - set(LEFT_OUT) - {"CustomerService.GetCustomerSubscription"} == set(REQUESTS)
    assert {r.method for r in ROWS} == set(REQUESTS)
    assert len(ROWS) > 60


# -- calling, through gRPC and through Envoy -----------------------------------------------------


def missing_like(value: str) -> str:
    """An id of the same shape that names nothing."""
    return value[:-6] + "000000"


def normalised(text: str, value: str) -> str:
    return text.replace(value, "<ID>")


def via_grpc(pair: Pair, method: MethodDescriptor, request: Any, md: Any, value: str) -> tuple:
    from google.protobuf import message_factory

    response_cls = message_factory.GetMessageClass(method.output_type)
    call = pair.channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )
    try:
        reply = call(request, metadata=md, timeout=30)
    except grpc.RpcError as err:
        return (err.code().name, error_reason(err))
    return ("OK", normalised(text_format.MessageToString(reply), value))


def rest_call(method: MethodDescriptor, request: Any) -> tuple[str, str, Any]:
    """The REST request Envoy transcodes to `request`: verb, path and query, body."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    data = json_format.MessageToDict(request, preserving_proto_field_name=True)
    bound: list[list[str]] = []

    def bind(match: re.Match[str]) -> str:
        path = match.group(1).split("=")[0].split(".")
        bound.append(path)
        value: Any = data
        for part in path:
            value = value[part]
        return quote(str(value), safe="")

    path = re.sub(r"\{([^}]+)\}", bind, getattr(rule, verb))
    for fields in bound:  # a field bound in the path is not sent again
        holder = data
        for part in fields[:-1]:
            holder = holder[part]
        holder.pop(fields[-1], None)
    if rule.body == "*":
        return verb.upper(), path, data
    body = data.pop(rule.body, {}) if rule.body else None
    query = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    return verb.upper(), path + (f"?{urlencode(query)}" if query else ""), body


def via_rest(pair: Pair, method: MethodDescriptor, request: Any, md: Any, value: str) -> tuple:
    verb, path, body = rest_call(method, request)
    response = pair.rest(verb, path, body, dict(md))
    if response.status >= 400:
        return (response.status, response.reason)
    return (response.status, normalised(json.dumps(response.json(), sort_keys=True), value))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with two_environments(tmp_path_factory.mktemp("environments")) as running:
        yield running


def credentials(row: Row, env: Environment, own: dict[str, str]) -> tuple[tuple[str, str], ...]:
    if row.credential == "bearer":
        return (("authorization", f"Bearer {own['token']}"),)
    return env.md


@pytest.mark.parametrize("transport", ["grpc", "rest"])
@pytest.mark.parametrize("direction", [("test", "live"), ("live", "test")], ids=["t2l", "l2t"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_an_id_of_the_other_environment_answers_like_a_missing_one(
    pair: Pair, row: Row, direction: tuple[str, str], transport: str
) -> None:
    mine, theirs = pair.env(direction[0]), pair.env(direction[1])
    build = REQUESTS[row.method]
    needs = set(ids_read(row.method)) | ({"token"} if row.credential == "bearer" else set())
    own = make(pair, mine, needs)
    foreign = make(pair, theirs, {row.key})[row.key]
    missing = missing_like(own[row.key])
    method = methods()[row.method]
    md = credentials(row, mine, own)
    via = via_grpc if transport == "grpc" else via_rest
    fixed = {"unique_id": f"u-{missing}"}  # the same usage event id for both calls

    def outcome(value: str) -> tuple:
        return via(pair, method, keyed(build({**own, **fixed, row.key: value})), md, value)

    got_foreign = outcome(foreign)
    got_missing = outcome(missing)
    assert got_foreign == got_missing, f"{row.id}: {got_foreign} != {got_missing}"
    got_own = via(pair, method, keyed(build(own)), md, own[row.key])
    assert got_own != got_missing, f"{row.id}: own object answers {got_own}"
