"""OpenAPI 3.1 for the REST surface, generated from the contract's descriptor set.

`python -m tollbooth.openapi DESCRIPTOR_SET OUT.json` (run by `make proto`; `make proto-check`
fails when the committed gateway/openapi.json is stale). Every `google.api.http` binding of the
services Envoy transcodes becomes an operation: path parameters, query parameters for the
fields the URL does not bind (GET), the JSON body (`body: "*"` or one field), the response
message, the error shape (google.rpc.Status with ErrorInfo) and the auth scheme of the surface
(`/mgt`: the `x-api-key` service key; `/api`: a bearer token, and a service key where the
method's `(billing.v1.auth)` accepts one).

JSON is what Envoy's transcoder prints: proto field names, 64-bit integers as strings, enums as
their names, Timestamps as RFC 3339 strings, Durations as "1.5s". `google.api.field_behavior`
REQUIRED and OUTPUT_ONLY, when the contract carries them, become `required` and `readOnly`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from billing.v1 import options_pb2
from tollbooth import openapirules as rules

# The services Envoy transcodes (gateway/envoy.yaml); the webhook service is the sidecar's.
SERVICES = (
    "billing.v1.TokenService",
    "billing.v1.CatalogService",
    "billing.v1.CheckoutService",
    "billing.v1.PaymentService",
    "billing.v1.CreditService",
    "billing.v1.UsageService",
    "billing.v1.AccountService",
    "billing.v1.CustomerService",
    "billing.v1.StripeEventService",
    "billing.v1.EntitlementService",
    "billing.v1.NotificationService",
)
JSON = "application/json"
F = FieldDescriptor

# At most 18 digits: a value of that many fits the type (one past its range is refused).
INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,18}$"}
UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,19}$"}
SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_INT64: INT64,
    F.TYPE_SINT64: INT64,
    F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT64: UINT64,
    F.TYPE_FIXED64: UINT64,
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 time in UTC, e.g. 2030-01-01T00:00:00Z.",
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
        "description": 'Seconds with an "s" suffix, e.g. "3600s".',
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated paths."},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.Int64Value": INT64,
    "google.protobuf.UInt64Value": UINT64,
    "google.protobuf.DoubleValue": {"type": "number"},
}

ERROR_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status as JSON. Every error, from the server or the gateway, "
    "has this shape; details holds one google.rpc.ErrorInfo whose reason is a stable "
    "billing.v1.ErrorReason name (without the ERROR_REASON_ prefix), and, when waiting may "
    "help (429 RATE_LIMITED), a google.rpc.RetryInfo after it.",
    "properties": {
        "code": {"type": "integer", "description": "The gRPC status code."},
        "message": {"type": "string", "description": "For people; may change."},
        "details": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"$ref": "#/components/schemas/ErrorInfo"},
                    {"$ref": "#/components/schemas/RetryInfo"},
                ]
            },
        },
    },
    "required": ["code", "message"],
}
ERROR_INFO_SCHEMA = {
    "type": "object",
    "properties": {
        "@type": {"type": "string", "const": "type.googleapis.com/google.rpc.ErrorInfo"},
        "reason": {"type": "string", "description": "A billing.v1.ErrorReason name."},
        "domain": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["@type"],
}
RETRY_INFO_SCHEMA = {
    "type": "object",
    "properties": {
        "@type": {"type": "string", "const": "type.googleapis.com/google.rpc.RetryInfo"},
        "retry_delay": {
            "type": "string",
            "description": 'How long to wait before retrying, as a JSON Duration ("41s").',
        },
    },
    "required": ["@type"],
}

DESCRIPTION = """REST/JSON surface of Tollbooth's billing API, transcoded by Envoy to gRPC.

* `/api/v1/...` is for browsers: a bearer token from `POST /mgt/v1/token/issue`.
* `/mgt/v1/...` is for backends: a service key in the `x-api-key` header.

JSON uses proto field names (snake_case). 64-bit integers (amounts, quantities) are JSON
**strings** ("1500"), enums are their names, times are RFC 3339 strings. A body field the request
does not have is refused with 400 `FIELD_UNKNOWN` naming it, and so is a query parameter the
operation does not list. Every error is a google.rpc.Status
with an ErrorInfo whose `reason` is stable."""

_PARAM = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


class _Comments:
    """Leading comments of a file's elements by source path."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.by_file: dict[str, dict[tuple[int, ...], str]] = {}
        for f in files:
            self.by_file[f.name] = {
                tuple(loc.path): _clean(loc.leading_comments)
                for loc in f.source_code_info.location
                if loc.leading_comments.strip()
            }

    def get(self, file: str, path: tuple[int, ...]) -> str:
        return self.by_file.get(file, {}).get(path, "")


def _clean(comment: str) -> str:
    return "\n".join(line.strip() for line in comment.strip().splitlines())


def _paths(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, tuple[str, tuple]]:
    """Full name of every message, field, enum, service and method -> (file, source path)."""
    out: dict[str, tuple[str, tuple]] = {}

    def messages(prefix: str, msgs: Any, file: str, base: tuple) -> None:
        for i, m in enumerate(msgs):
            name, path = f"{prefix}.{m.name}", (*base, i)
            out[name] = (file, path)
            for j, fld in enumerate(m.field):
                out[f"{name}.{fld.name}"] = (file, (*path, 2, j))
            for j, e in enumerate(m.enum_type):
                out[f"{name}.{e.name}"] = (file, (*path, 4, j))
            messages(name, m.nested_type, file, (*path, 3))

    for f in files:
        messages(f.package, f.message_type, f.name, (4,))
        for i, e in enumerate(f.enum_type):
            out[f"{f.package}.{e.name}"] = (f.name, (5, i))
        for i, s in enumerate(f.service):
            out[f"{f.package}.{s.name}"] = (f.name, (6, i))
            for j, m in enumerate(s.method):
                out[f"{f.package}.{s.name}.{m.name}"] = (f.name, (6, i, 2, j))
    return out


class Builder:
    def __init__(self, data: bytes) -> None:
        fds = descriptor_pb2.FileDescriptorSet.FromString(data)
        self.pool = descriptor_pool.DescriptorPool()
        for f in fds.file:
            self.pool.Add(f)
        self.comments = _Comments(list(fds.file))
        self.where = _paths(list(fds.file))
        self.schemas: dict[str, Any] = {}
        # Messages a request holds: only their fields carry the server's input rules (a
        # response's text is what was stored or echoed, rules or not).
        self.inputs = rules.request_messages(
            [m.input_type for name in SERVICES for m in self.pool.FindServiceByName(name).methods]
        )

    def doc(self, full_name: str) -> str:
        file, path = self.where.get(full_name, ("", ()))
        return self.comments.get(file, path)

    # -- schemas ---------------------------------------------------------------------------

    def enum_ref(self, enum: EnumDescriptor) -> dict[str, Any]:
        name = enum.full_name.removeprefix("billing.v1.")
        if name not in self.schemas:
            schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.values]}
            if desc := self.doc(enum.full_name):
                schema["description"] = desc
            self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def message_ref(self, msg: Descriptor) -> dict[str, Any]:
        if msg.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[msg.full_name])
        name = msg.full_name.removeprefix("billing.v1.")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursion
            self.schemas[name] = self.message_schema(msg)
        return {"$ref": f"#/components/schemas/{name}"}

    def message_schema(
        self, msg: Descriptor, skip: frozenset[str] = frozenset(), partial: bool = False
    ) -> dict:
        """`partial`: an update's resource (AIP-134), whose REQUIRED fields are not required."""
        props: dict[str, Any] = {}
        required: list[str] = []
        for field in msg.fields:
            if field.name in skip:
                continue
            schema = self.field_schema(field, partial)
            behaviors = _behaviors(field)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors and not partial:
                required.append(field.name)
            props[field.name] = schema
        # A key the message does not have is refused (FIELD_UNKNOWN), and never printed.
        out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            out["required"] = required
        if msg.full_name in self.inputs and (exclusive := rules.one_of_pairs(msg, skip)):
            out["not"] = exclusive
        if desc := self.doc(msg.full_name):
            out["description"] = desc
        return out

    def value_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == F.TYPE_MESSAGE:
            assert field.message_type is not None
            return self.message_ref(field.message_type)
        if field.type == F.TYPE_ENUM:
            assert field.enum_type is not None
            return self.enum_ref(field.enum_type)
        return dict(SCALARS[field.type])

    def field_schema(self, field: FieldDescriptor, partial: bool = False) -> dict[str, Any]:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value = self.value_schema(entry.fields_by_name["value"])
            schema: dict[str, Any] = {"type": "object", "additionalProperties": value}
            rules.map_constrain(field, schema)
        elif field.is_repeated:
            schema = {"type": "array", "items": self.value_schema(field)}
        else:
            schema = self.value_schema(field)
        if rules.owner_of(field) in self.inputs:
            schema = rules.request_field(field, schema, partial)
        if field.GetOptions().Extensions[options_pb2.json_null]:  # printed as null when unset
            if "$ref" in schema:
                schema = {"anyOf": [schema, {"type": "null"}]}
            else:
                schema["type"] = [schema["type"], "null"]
        if desc := self.doc(field.full_name):
            if "$ref" in schema or "anyOf" in schema:
                schema = {"allOf": [schema], "description": desc}
            else:
                schema["description"] = desc
        return schema

    # -- operations ------------------------------------------------------------------------

    def query_params(self, msg: Descriptor, bound: set[str], prefix: str = "", depth: int = 0):  # type: ignore[no-untyped-def]
        for field in msg.fields:
            name = f"{prefix}{field.name}"
            if name in bound or _behaviors(field) & {field_behavior_pb2.OUTPUT_ONLY}:
                continue
            sub = field.message_type
            if sub is not None and sub.full_name not in WELL_KNOWN:
                if sub.GetOptions().map_entry or field.is_repeated or depth >= 2:
                    continue
                yield from self.query_params(sub, bound, f"{name}.", depth + 1)
                continue
            if sub is not None and WELL_KNOWN[sub.full_name].get("type") not in (
                "string",
                "boolean",
                "integer",
                "number",
            ):
                continue
            schema = self.field_schema(field)
            if sub is not None and sub.full_name == "google.protobuf.Timestamp":
                schema = {**WELL_KNOWN[sub.full_name], "description": self.doc(field.full_name)}
            if sub is not None and sub.full_name == "google.protobuf.FieldMask":
                if (resource := rules.resource_of(msg)) is not None:
                    schema["pattern"] = rules.mask_pattern(resource)
            param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
            if rules.required(field) and not prefix:
                param["required"] = True
            if field.is_repeated:
                param["style"], param["explode"] = "form", True
            if "description" in schema:
                param["description"] = schema["description"]
            yield param

    def operation(self, service: str, method: Any, verb: str, path: str, body: str, n: int):  # type: ignore[no-untyped-def]
        request: Descriptor = method.input_type
        bound = [m.group(1) for m in _PARAM.finditer(path)]
        doc = self.doc(method.full_name)
        op: dict[str, Any] = {
            "operationId": f"{service.rsplit('.', 1)[-1]}_{method.name}" + (f"_{n}" if n else ""),
            "tags": [service.rsplit(".", 1)[-1]],
            "summary": doc.split("\n")[0] if doc else method.name,
        }
        if doc:
            op["description"] = doc + f"\n\ngRPC: `{method.full_name}`"
        params = []
        for name in bound:
            field = _resolve(request, name)
            schema = self.field_schema(field) if field is not None else {"type": "string"}
            schema.pop("readOnly", None)
            param = {"name": _path_name(name), "in": "path", "required": True, "schema": schema}
            if "." in name:
                param["description"] = f"The request's `{name}`."
            params.append(param)
        if not body:
            params.extend(self.query_params(request, set(bound)))
        elif body != "*":
            params.extend(self.query_params(request, {*bound, body}))
        if params:
            op["parameters"] = params
        if body == "*":
            top = frozenset(b.split(".")[0] for b in bound)
            whole: dict[str, Any] = self.message_schema(request, skip=top)
            # No body is the empty request (Envoy's transcoder): required only when `{}` is
            # refused, because the request has a REQUIRED field the URL does not bind.
            needed = bool(whole.get("required"))
            op["requestBody"] = {"required": needed, "content": {JSON: {"schema": whole}}}
        elif body:
            field = request.fields_by_name[body]
            # The URL decides: a field of the body the path binds (`{product.product_id}`) is
            # left out of its schema (a body naming it is refused), so it is inlined without it.
            inner = frozenset(
                b[len(body) + 1 :].split(".")[0] for b in bound if b.startswith(body + ".")
            )
            # An update's resource is partial (AIP-134): what it populates, or its mask names.
            partial = rules.is_update(request)
            schema = (
                self.message_schema(field.message_type, skip=inner, partial=partial)
                if (inner or partial) and field.message_type is not None
                else self.value_schema(field)
            )
            needed = not partial and rules.required(field)
            op["requestBody"] = {"required": needed, "content": {JSON: {"schema": schema}}}
        op["responses"] = {
            "200": {
                "description": "OK",
                "content": {JSON: {"schema": self.message_ref(method.output_type)}},
            },
            "default": {"$ref": "#/components/responses/Error"},
        }
        op["security"] = _security(method, path)
        return op

    def build(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for service_name in SERVICES:
            service = self.pool.FindServiceByName(service_name)
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for n, binding in enumerate([rule, *rule.additional_bindings]):
                    verb = binding.WhichOneof("pattern")
                    if verb is None or verb == "custom":
                        continue
                    template = getattr(binding, verb)
                    path = _PARAM.sub(lambda m: "{" + _path_name(m.group(1)) + "}", template)
                    paths.setdefault(path, {})[verb] = self.operation(
                        service_name, method, verb, template, binding.body, n
                    )
        return {
            "openapi": "3.1.0",
            "info": {"title": "Tollbooth billing API", "version": "v1", "description": DESCRIPTION},
            "servers": [{"url": "/"}],
            "tags": [{"name": s.rsplit(".", 1)[-1], "description": self.doc(s)} for s in SERVICES],
            "paths": dict(sorted(paths.items())),
            "components": {
                "schemas": {
                    **dict(sorted(self.schemas.items())),
                    **rules.FREE_FORM,
                    "Status": ERROR_SCHEMA,
                    "ErrorInfo": ERROR_INFO_SCHEMA,
                    "RetryInfo": RETRY_INFO_SCHEMA,
                },
                "responses": {
                    "Error": {
                        "description": "An error: google.rpc.Status with an ErrorInfo.",
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Status"}}},
                    }
                },
                "securitySchemes": {
                    "serviceKey": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "x-api-key",
                        "description": "A backend service key (BILLING_SERVICE_KEYS).",
                    },
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "access_token from POST /mgt/v1/token/issue.",
                    },
                },
            },
        }


def _behaviors(field: FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _path_name(field_path: str) -> str:
    """A path parameter's name: the bound field path with `_` for `.` (tools that read
    OpenAPI refuse dotted parameter names)."""
    return field_path.replace(".", "_")


def _resolve(msg: Descriptor, dotted: str) -> FieldDescriptor | None:
    field = None
    current: Descriptor | None = msg
    for part in dotted.split("."):
        if current is None or part not in current.fields_by_name:
            return None
        field = current.fields_by_name[part]
        current = field.message_type
    return field


def _security(method: Any, path: str) -> list[dict[str, list[str]]]:
    rule = options_pb2.AuthRule()
    options = method.GetOptions()
    if options.HasExtension(options_pb2.auth):
        rule = options.Extensions[options_pb2.auth]
    if path.startswith("/mgt/"):
        return [{"serviceKey": []}]
    found: list[dict[str, list[str]]] = []
    if rule.bearer:
        found.append({"bearer": [rule.bearer_scope] if rule.bearer_scope else []})
    if rule.service_key:
        found.append({"serviceKey": []})
    return found


def build(data: bytes) -> dict[str, Any]:
    return Builder(data).build()


def render(data: bytes) -> str:
    return json.dumps(build(data), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tollbooth.openapi DESCRIPTOR_SET OUT.json", file=sys.stderr)
        return 2
    Path(args[1]).write_text(render(Path(args[0]).read_bytes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
