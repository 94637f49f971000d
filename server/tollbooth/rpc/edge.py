"""The edge: every request is parsed and validated here, once, before any handler or SQL runs.

grpcio's own deserialisation fails with INTERNAL ("Exception deserializing request!") before any
interceptor sees the call, so handlers are registered with a pass-through deserialiser and the
request bytes are parsed inside the call: undecodable bytes (invalid UTF-8 in a string, a
truncated message) become INVALID_ARGUMENT MALFORMED_REQUEST, after authentication.

Then one walk over the parsed message refuses, anywhere in it (nested messages, maps, lists,
google.protobuf.Struct values), a string longer than its field's limit (the
`(billing.v1.max_length)` option, or DEFAULT_MAX_LENGTH) or holding a control character
(`tollbooth.text`): any, in a single-line field; tab, LF and CR pass a field marked
`(billing.v1.multiline)` (on a map field: its values); inside a Struct (free-form JSON) only
NUL is refused. A new field is covered without new code. Each field's rule is computed once
(cached per descriptor), so the walk of a small request costs about 2 µs.

A few checks of the request's own fields follow, each a cached lookup on a request type that
lacks the field (so DebitCredits, ingest and the reads pay no walk): a request_id past 200
characters, a field mask (update_mask) with a blank path, an enum number the contract does not
define; all FIELD_INVALID naming the field.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import grpc
from google.api import field_behavior_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import DecodeError, Message

from billing.v1 import options_pb2
from tollbooth import errors, text
from tollbooth.idempotency import MAX_KEY_LENGTH
from tollbooth.rpc import idempotency_header, json_fields, json_numbers

DEFAULT_MAX_LENGTH = 1000
# Strings inside google.protobuf.Struct (usage properties) may be longer; the message size
# limit still bounds them.
STRUCT_MAX_LENGTH = 8192
STRUCT_TYPES = frozenset({"google.protobuf.Value", "google.protobuf.Struct.FieldsEntry"})
MAX_DEPTH = 64
FIELD_MASK = "google.protobuf.FieldMask"

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_ENUM = FieldDescriptor.TYPE_ENUM


def _message_type(field: FieldDescriptor) -> Descriptor:
    desc = field.message_type
    assert desc is not None, field.full_name
    return desc


def _max_length(field: FieldDescriptor) -> int:
    options = field.GetOptions()
    if options.HasExtension(options_pb2.max_length):
        return int(options.Extensions[options_pb2.max_length])
    if _free_form(field):
        return STRUCT_MAX_LENGTH
    return DEFAULT_MAX_LENGTH


def _free_form(field: FieldDescriptor) -> bool:
    """A string of google.protobuf.Struct (usage properties): free-form JSON."""
    container = field.containing_type
    return container is not None and container.full_name in STRUCT_TYPES


def _option(field: FieldDescriptor, extension: Any) -> bool:
    options = field.GetOptions()
    return options.HasExtension(extension) and bool(options.Extensions[extension])


def _per_item(field: FieldDescriptor) -> bool:
    return _option(field, options_pb2.validated_per_item)


# A string field's rule: its length limit, the characters it may not hold (any control
# character; tab, LF and CR pass a `multiline` field; free-form JSON refuses NUL only), and
# whether it is multi-line (for the error's wording).
Rule = tuple[int, re.Pattern[str], bool]
_NUL = re.compile("\x00")


@cache
def _rule(field: FieldDescriptor, multiline: bool | None = None) -> Rule:
    """`multiline` given: a map's key or value, which take the map field's option."""
    if _free_form(field):
        return _max_length(field), _NUL, False
    if multiline is None:
        multiline = _option(field, options_pb2.multiline)
    return _max_length(field), text.MULTILINE if multiline else text.SINGLE_LINE, multiline


@cache
def _map_rules(field: FieldDescriptor) -> tuple[Rule, FieldDescriptor, Rule]:
    """A map field's key rule, value field and value rule: keys are single-line, values
    follow the map field's `multiline` option."""
    entry = _message_type(field)
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    multiline = _option(field, options_pb2.multiline)
    return (
        _rule(key_field, None if _free_form(key_field) else False),
        value_field,
        _rule(value_field, None if _free_form(value_field) else multiline),
    )


def _bad(path: str, problem: str) -> errors.DomainError:
    return errors.invalid(f"{path} {problem}", reason="FIELD_INVALID", field=path)


def _check_string(value: str, path: str, rule: Rule, unmasked: bool = False) -> None:
    limit, refused, multiline = rule
    if unmasked and refused is not _NUL:  # outside the update's mask: ignored, never stored
        refused = text.STORED_MULTILINE if multiline else text.STORED_SINGLE_LINE
    if len(value) > limit:
        raise _bad(path, f"is longer than {limit} characters")
    if refused.search(value) is not None:
        raise _bad(path, text.control_problem(value, multiline=multiline) or "is invalid")


def _walk(msg: Message, prefix: str, depth: int, unmasked: bool = False) -> None:
    """`unmasked`: a part of an update's resource its mask does not name (`_walk_resource`)."""
    if depth > MAX_DEPTH:
        raise _bad(prefix or "request", f"nests deeper than {MAX_DEPTH} levels")
    for field, value in msg.ListFields():
        _check_field(
            field, value, f"{prefix}.{field.name}" if prefix else field.name, depth, unmasked
        )


def _check_field(field: FieldDescriptor, value: Any, path: str, depth: int, unmasked: bool) -> None:
    if field.type == _STRING:
        rule = _rule(field)
        if field.is_repeated:
            for i, item in enumerate(value):
                _check_string(item, f"{path}[{i}]", rule, unmasked)
        else:
            _check_string(value, path, rule, unmasked)
    elif field.type == _MESSAGE:
        if _per_item(field):
            return
        entry = _message_type(field)
        if entry.GetOptions().map_entry:
            key_rule, value_field, value_rule = _map_rules(field)
            for key, item in value.items():
                if isinstance(key, str):
                    _check_string(key, f"{path} key", key_rule, unmasked)
                where = f"{path}[{str(key)[:40]!r}]"
                if value_field.type == _STRING:
                    _check_string(item, where, value_rule, unmasked)
                elif value_field.type == _MESSAGE:
                    _walk(item, where, depth + 1, unmasked)
        elif field.is_repeated:
            for i, item in enumerate(value):
                _walk(item, f"{path}[{i}]", depth + 1, unmasked)
        else:
            _walk(value, path, depth + 1, unmasked)


def _walk_resource(resource: Message, prefix: str, depth: int, named: frozenset[str]) -> None:
    """An update's resource: the fields its mask names under the full rule; the others (which
    the update ignores, AIP-134) may hold what stored text could before C1 and bidirectional
    controls were refused, so that a resource sent back as read still updates one field.
    Lengths and C0 controls are refused everywhere, and the full rule holds for the
    resource's IDENTIFIER and IMMUTABLE fields, which the update reads whatever its mask."""
    if depth > MAX_DEPTH:
        raise _bad(prefix, f"nests deeper than {MAX_DEPTH} levels")
    for field, value in resource.ListFields():
        path = f"{prefix}.{field.name}"
        unmasked = field.name not in named and not _names_the_row(field)
        _check_field(field, value, path, depth, unmasked)


@cache
def _names_the_row(field: FieldDescriptor) -> bool:
    """An IDENTIFIER (or IMMUTABLE code, as a metric's): the update reads it to find the row
    or to compare, whatever its mask says."""
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.IDENTIFIER in behaviors or field_behavior_pb2.IMMUTABLE in behaviors


def _masked(msg: Message) -> dict[str, frozenset[str]] | None:
    """An update with a mask naming paths ("*" aside): its resource fields (the request's other
    singular message fields) and the top-level field names its paths give."""
    masks = [f for f in mask_fields(msg.DESCRIPTOR) if msg.HasField(f.name)]
    if len(masks) != 1:
        return None
    paths = getattr(msg, masks[0].name).paths
    if not paths:
        return None
    named = frozenset(p.split(".")[0].strip() for p in paths)
    if "*" in named:  # every field (AIP-134)
        return None
    resources = {
        f.name: named
        for f in msg.DESCRIPTOR.fields
        if f.type == _MESSAGE
        and not f.is_repeated
        and f.name != masks[0].name
        and msg.HasField(f.name)
    }
    return resources or None


def validate(msg: Message) -> None:
    """Refuse, anywhere in `msg`, a string longer than its field's limit or holding a control
    character it may not (`tollbooth.text`): FIELD_INVALID naming the field. Every request is
    walked: a control character is no rarer in a short request, and its bytes cannot be told
    from the message's own framing bytes without parsing."""
    masked = _masked(msg)
    if masked is None:
        _walk(msg, "", 0)
        return
    for field, value in msg.ListFields():
        if field.name in masked:
            _walk_resource(value, field.name, 1, masked[field.name])
        else:
            _check_field(field, value, field.name, 0, False)


@cache
def mask_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The request's own google.protobuf.FieldMask fields (update_mask); none on most RPCs,
    so the check below costs one cached lookup there."""
    return tuple(
        f
        for f in descriptor.fields
        if f.message_type is not None and f.message_type.full_name == FIELD_MASK
    )


@cache
def _has_request_id(descriptor: Descriptor) -> bool:
    field = descriptor.fields_by_name.get("request_id")
    return field is not None and field.type == _STRING and not field.is_repeated


@cache
def _reaches_enum(descriptor: Descriptor) -> bool:
    """Whether an enum field is reachable from this message type (the well-known types, whose
    only enum is Value's NullValue, aside): a few request types, none of the hot ones."""
    seen: set[str] = set()
    stack = [descriptor]
    while stack:
        desc = stack.pop()
        if desc.full_name in seen or desc.full_name.startswith("google.protobuf."):
            continue
        seen.add(desc.full_name)
        for field in desc.fields:
            if field.type == _ENUM:
                return True
            if field.type == _MESSAGE:
                stack.append(_message_type(field))
    return False


def _check_enum(field: FieldDescriptor, value: int, path: str) -> None:
    enum = field.enum_type
    assert enum is not None, field.full_name
    if value not in enum.values_by_number:
        raise _bad(path, f"is not a known {enum.name} ({value})")


def _check_enums(msg: Message, prefix: str) -> None:
    for field, value in msg.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.type == _ENUM:
            for item in value if field.is_repeated else (value,):
                _check_enum(field, item, path)
        elif field.type == _MESSAGE and _reaches_enum(_message_type(field)):
            entry = _message_type(field)
            if entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                for key, item in value.items():
                    where = f"{path}[{str(key)[:40]!r}]"
                    if value_field.type == _ENUM:
                        _check_enum(value_field, item, where)
                    else:
                        _check_enums(item, where)
            elif field.is_repeated:
                for i, item in enumerate(value):
                    _check_enums(item, f"{path}[{i}]")
            else:
                _check_enums(value, path)


def check_fields(msg: Message) -> None:
    """The checks of the request's own fields that no length walk makes, each one cached
    lookup on a request type without the field: a request_id past MAX_KEY_LENGTH, a blank path
    in a field mask or one with spaces around it (neither names a field, and ignoring or
    trimming it would apply the mask's other paths as if it were not there), an enum number the
    contract does not define (grpc keeps it as a bare number). All FIELD_INVALID naming the
    field."""
    desc = msg.DESCRIPTOR
    if _has_request_id(desc) and len(getattr(msg, "request_id")) > MAX_KEY_LENGTH:  # noqa: B009
        raise _bad("request_id", f"is longer than {MAX_KEY_LENGTH} characters")
    for field in mask_fields(desc):
        if msg.HasField(field.name):
            for path in getattr(msg, field.name).paths:
                if not path.strip():
                    raise blank_mask_path(field.name)
                if path != path.strip():  # " name" is no field name: paths are exact
                    raise _bad(
                        field.name, "holds a path with spaces around it; name each field exactly"
                    )
    if _reaches_enum(desc):
        _check_enums(msg, "")


def blank_mask_path(name: str) -> errors.DomainError:
    return _bad(name, "holds a blank path; name each field to update, comma-separated")


def parse(cls: type[Message], raw: bytes) -> Message:
    """Parse and validate request bytes; refusals are INVALID_ARGUMENT, never INTERNAL."""
    try:
        msg = cls.FromString(raw)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise errors.invalid(
            f"request does not parse as {cls.DESCRIPTOR.full_name}", reason="MALFORMED_REQUEST"
        ) from exc
    validate(msg)
    check_fields(msg)
    return msg


# The unary request this call parsed (None before, or when it did not parse): read by the
# error interceptor, which sees only its bytes, to word an outage's retry advice for it.
parsed_request: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "parsed_request", default=None
)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _unary_request(
    cls: type[Message], behavior: Callable[..., Any], method: MethodDescriptor
) -> Callable[..., Any]:
    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        request = parse(cls, raw)
        metadata = context.invocation_metadata() or ()
        if idempotency_header.apply(request, metadata, _has_request_id(cls.DESCRIPTOR)):
            validate(request)  # the key as if the request had named it: the same checks
            check_fields(request)
        parsed_request.set(request)
        query_fields = surface = body_fields = None
        for key, value in metadata:
            if key == json_fields.HEADER:
                body_fields = str(value)
                json_fields.check(method, body_fields)
            elif key == json_numbers.HEADER:
                json_numbers.check(method, str(value))
            elif key == json_fields.QUERY_REPEATS:
                json_fields.check_query(method, str(value))
            elif key == json_fields.QUERY_FIELDS:
                query_fields = str(value)
            elif key == json_fields.SURFACE:
                surface = str(value)
        if query_fields:
            json_fields.check_query_fields(method, query_fields, surface)
            json_fields.check_query_body(method, query_fields, body_fields)
        return behavior(request, context)

    return handle


def _stream_request(cls: type[Message], behavior: Callable[..., Any]) -> Callable[..., Any]:
    def handle(raw_iter: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        return behavior((parse(cls, raw) for raw in raw_iter), context)

    return handle


def method_handlers(
    service: ServiceDescriptor, servicer: object
) -> dict[str, grpc.RpcMethodHandler]:
    """Handlers for every method of `service`, parsing requests at the edge."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = message_class(method.input_type)
        serialize = message_class(method.output_type).SerializeToString
        behavior = getattr(servicer, method.name)
        if method.client_streaming:
            fn = _stream_request(request_cls, behavior)
            factory = (
                grpc.stream_stream_rpc_method_handler
                if method.server_streaming
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            fn = _unary_request(request_cls, behavior, method)
            factory = (
                grpc.unary_stream_rpc_method_handler
                if method.server_streaming
                else grpc.unary_unary_rpc_method_handler
            )
        handlers[method.name] = factory(
            fn, request_deserializer=None, response_serializer=serialize
        )
    return handlers


def register(server: grpc.Server, service: ServiceDescriptor, servicer: object) -> None:
    handlers = method_handlers(service, servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
