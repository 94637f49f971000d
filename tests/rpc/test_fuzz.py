"""Fuzz every RPC with generated malformed requests, over gRPC and over REST through Envoy.

Nothing may answer a 5xx except a deliberate one (an RPC not built yet: UNIMPLEMENTED / 501
NOT_IMPLEMENTED; a dependency down: UNAVAILABLE / 503 with its reason), every REST error carries
the JSON shape with a stable reason, and the server still serves afterwards. Runs on PostgreSQL
when it is configured (NUL characters and lengths matter there), else on SQLite.

`make test` runs a modest number of examples; `make soak` (BILLING_SOAK=1) runs many more.
"""

from __future__ import annotations

import json
import os
import string
import urllib.parse
from typing import Any

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SERVICE_KEY, make_env
from tests.helpers import error_reason
from tollbooth.app import unbuilt_methods
from tollbooth.rpc.edge import message_class
from tollbooth.rpc.rules import contract_services

pytestmark = [pytest.mark.soak, pytest.mark.envoy]

SOAK = os.environ.get("BILLING_SOAK") == "1"
EXAMPLES = 3000 if SOAK else 400
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not SOAK,
)

METHODS: list[MethodDescriptor] = [m for s in contract_services() for m in s.methods]
UNBUILT = set(unbuilt_methods())
DELIBERATE_UNAVAILABLE = {"SERVICE_UNAVAILABLE", "PROVIDER_UNAVAILABLE"}

HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "prod_\x00",
            "acct_\x00x",
            "\x00" * 3,
            "x" * 1001,
            "y" * 20000,
            "acct_",
            "acct_" + "0" * 24,
            "prod_' OR 1=1 --",
            "%ff",
            "../../etc/passwd",
            "\u202e\u0000\ufeff",
            "\U0001f600" * 600,
            "*",
            "name,description",
            "-1",
            "9" * 40,
            "1e999999",
            "NaN",
        ]
    ),
    st.text(max_size=40),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return HOSTILE_TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return st.integers(-(2**63), 2**63 - 1)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 40)  # open enums: unknown numbers included
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    return None


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if depth >= 4:
            return None
        return message_strategy(field.message_type, depth + 1)
    return _scalar(field)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def message_strategy(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_class(desc)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key = _scalar(field.message_type.fields_by_name["key"])
            value = _value(field.message_type.fields_by_name["value"], depth)
            if key is not None and value is not None:
                optional[field.name] = st.dictionaries(key, value, max_size=3)
            continue
        value = _value(field, depth)
        if value is None:
            continue
        optional[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=optional).map(lambda d: _build(cls, d))


def request_bytes(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    structured = message_strategy(method.input_type).map(lambda m: m.SerializeToString())
    return st.one_of(structured, st.binary(max_size=400))


# -- the stack under fuzz --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):  # type: ignore[no-untyped-def]
    from tests.devstack import start_stack, throwaway_postgres

    tmp = tmp_path_factory.mktemp("fuzz")
    admin = os.environ.get("BILLING_TEST_POSTGRES_URL", "").strip()
    if admin:
        with throwaway_postgres(admin, "tollbooth_fuzz") as url:
            stack = start_stack(url, make_env(url, BILLING_DATA_DIR=str(tmp)), tmp)
            try:
                yield stack
            finally:
                stack.close()
    else:
        url = f"sqlite:///{tmp / 'billing.db'}"
        stack = start_stack(url, make_env(url, BILLING_DATA_DIR=str(tmp)), tmp)
        try:
            yield stack
        finally:
            stack.close()


@pytest.fixture(scope="module")
def credentials(fuzz_stack):  # type: ignore[no-untyped-def]
    """No credential, the service key, and a bearer token with every scope."""
    token = fuzz_stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "fuzz", "scopes": ["checkout", "portal", "billing:read", "credits:read"]},
        {"x-api-key": SERVICE_KEY},
    ).json()["access_token"]
    service = {"x-api-key": SERVICE_KEY}
    # Weighted towards the service key: most RPCs refuse anything else before parsing.
    return [{}, service, service, service, {"authorization": f"Bearer {token}"}]


def _acceptable_grpc(method: MethodDescriptor, err: grpc.RpcError) -> bool:
    code = err.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return method.full_name in UNBUILT and error_reason(err) == "NOT_IMPLEMENTED"
    if code == grpc.StatusCode.UNAVAILABLE:
        return error_reason(err) in DELIBERATE_UNAVAILABLE
    return code not in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def test_grpc_fuzz_never_answers_an_undeliberate_5xx(fuzz_stack, credentials):  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(f"127.0.0.1:{fuzz_stack.grpc_port}")
    failures: list[str] = []

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS))
        creds = data.draw(st.sampled_from(credentials))
        metadata = tuple(creds.items())
        path = f"/{method.containing_service.full_name}/{method.name}"
        try:
            if method.client_streaming:
                items = data.draw(st.lists(request_bytes(method), max_size=3))
                call = channel.stream_stream(path)
                list(call(iter(items), metadata=metadata, timeout=20))
            elif method.server_streaming:
                # A watch runs until the client stops: a valid request meets the deadline.
                raw = data.draw(request_bytes(method))
                try:
                    for _ in channel.unary_stream(path)(raw, metadata=metadata, timeout=2):
                        pass
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
            else:
                raw = data.draw(request_bytes(method))
                channel.unary_unary(path)(raw, metadata=metadata, timeout=20)
        except grpc.RpcError as err:
            if not _acceptable_grpc(method, err):
                failures.append(f"{path}: {err.code().name} {error_reason(err)} {err.details()}")

    try:
        run()
    finally:
        channel.close()
    assert failures == [], failures[:5]
    _still_serves(fuzz_stack)


# -- REST ------------------------------------------------------------------------------------


def _rules(method: MethodDescriptor) -> list[tuple[str, str, str]]:
    """(HTTP method, path template, body) of every binding of an RPC."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    out = []
    for rule in [
        options.Extensions[annotations_pb2.http],
        *options.Extensions[annotations_pb2.http].additional_bindings,
    ]:
        verb = rule.WhichOneof("pattern")
        out.append((verb.upper(), getattr(rule, verb), rule.body))
    return out


ROUTES = [(m, *rule) for m in METHODS for rule in _rules(m)]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=10,
)
PATH_SEGMENT = st.one_of(
    HOSTILE_TEXT.map(lambda s: urllib.parse.quote(s, safe="")),
    st.sampled_from(["%ff", "%00", "%2F", "..", "a" * 3000]),
)
BODY_BYTES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"a":' * 50, b"\xff\xfe"]),
)


def _fill(template: str, data: st.DataObject) -> str:
    out, rest = "", template
    while "{" in rest:
        before, _, after = rest.partition("{")
        _, _, rest = after.partition("}")
        out += before + data.draw(PATH_SEGMENT)
    return out + rest


def _has_reason(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("error"), dict):
        return bool(doc["error"].get("reason"))
    return any(
        isinstance(d, dict) and d.get("@type", "").endswith("ErrorInfo") and d.get("reason")
        for d in doc.get("details", [])
    )


def test_rest_fuzz_never_answers_an_undeliberate_5xx(fuzz_stack, credentials):  # type: ignore[no-untyped-def]
    failures: list[str] = []
    field_names = {m.full_name: [f.json_name for f in m.input_type.fields] for m in METHODS}

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        method, verb, template, body_rule = data.draw(st.sampled_from(ROUTES))
        names = field_names[method.full_name] + ["zz_unknown"]
        query = data.draw(st.dictionaries(st.sampled_from(names), HOSTILE_TEXT, max_size=3))
        path = _fill(template, data)
        if query:
            path += "?" + urllib.parse.urlencode(query)
        body: bytes | None = None
        if body_rule:
            body = data.draw(
                st.one_of(
                    st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=4).map(
                        lambda d: json.dumps(d).encode()
                    ),
                    BODY_BYTES,
                )
            )
        resp = fuzz_stack.request(verb, path, body, data.draw(st.sampled_from(credentials)))
        deliberate = (resp.status == 501 and method.full_name in UNBUILT) or (
            resp.status == 503 and resp.reason in DELIBERATE_UNAVAILABLE
        )
        if resp.status >= 500 and not deliberate:
            failures.append(f"{verb} {path[:200]} -> {resp.status} {resp.body[:300]!r}")
        elif resp.status >= 400 and not _has_reason(resp.body):
            failures.append(
                f"{verb} {path[:200]} -> {resp.status} without a reason: {resp.body[:200]!r}"
            )

    run()
    assert failures == [], failures[:5]
    _still_serves(fuzz_stack)


def test_webhook_fuzz_is_always_a_400_with_a_reason(fuzz_stack):  # type: ignore[no-untyped-def]
    failures: list[str] = []

    @settings(max_examples=EXAMPLES // 2, deadline=None, derandomize=not SOAK)
    @given(
        body=BODY_BYTES,
        signature=st.one_of(
            st.none(),
            st.text(alphabet=string.printable.strip() + " ", max_size=600),
            st.sampled_from(["t=" + "9" * 400 + ",v1=00", "t=1,v1=" + "0" * 64, "v1=,t="]),
        ),
    )
    def run(body: bytes, signature: str | None) -> None:
        headers = {} if signature is None else {"Stripe-Signature": signature}
        resp = fuzz_stack.request("POST", "/v1/billing/webhooks", body, headers)
        if resp.status != 400 or not _has_reason(resp.body):
            failures.append(f"{signature!r:.80} -> {resp.status} {resp.body[:200]!r}")

    run()
    assert failures == [], failures[:5]


def _still_serves(stack) -> None:  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "after-fuzz"}, {"x-api-key": SERVICE_KEY}
    )
    assert resp.status == 200, resp.body
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
