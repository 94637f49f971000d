"""FIELD_UNKNOWN: a JSON body key the request message does not have.

Envoy's transcoder drops unknown JSON fields silently, so a misspelt field ("expiresAt" for
"expire_time") would be ignored. The gateway's Lua filter (gateway/json_fields.lua) names every
key of the JSON body in the `x-billing-json-fields` header: dotted paths, arrays adding no
segment, each segment percent-encoded. Here each path is resolved against the message the
REST binding's body maps to (the whole request for `body: "*"`, else that field's message); the
first one that names no field is refused. A path after "!" (the Lua filter puts it first) is a
key written twice in one JSON object, which the transcoder would keep the last of silently: it
is refused as MALFORMED_REQUEST naming it. Both the proto name and the JSON (lowerCamel) name of
a field are accepted, as the transcoder accepts both. Below a map, a google.protobuf type
(Struct, Value, Timestamp...) or a scalar, any key is left to the transcoder.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import unquote

from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from tollbooth import errors

HEADER = "x-billing-json-fields"


@cache
def body_messages(method: MethodDescriptor) -> tuple[Descriptor, ...]:
    """The messages a JSON body of `method` may hold, one per distinct REST binding body."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return ()
    rule = options.Extensions[annotations_pb2.http]
    found: list[Descriptor] = []
    for binding in [rule, *rule.additional_bindings]:
        if not binding.body:
            continue
        if binding.body == "*":
            desc = method.input_type
        else:
            field = method.input_type.fields_by_name.get(binding.body)
            if field is None or field.message_type is None:
                continue
            desc = field.message_type
        if desc not in found:
            found.append(desc)
    return tuple(found)


def _field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    field = desc.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in desc.fields if f.json_name == name), None)


def _unknown_in(desc: Descriptor, path: str) -> str | None:
    """The prefix of `path` that names no field of `desc`, or None when it resolves."""
    parts = [unquote(p) for p in path.split(".")]
    current: Descriptor | None = desc
    for i, part in enumerate(parts):
        if current is None:
            return None
        field = _field(current, part)
        if field is None:
            return ".".join(parts[: i + 1])
        sub = field.message_type
        if (
            sub is None
            or sub.GetOptions().map_entry
            or sub.full_name.startswith("google.protobuf.")
        ):
            return None
        current = sub
    return None


def check(method: MethodDescriptor, header: str | None) -> None:
    """Refuse (INVALID_ARGUMENT FIELD_UNKNOWN) the first JSON key no binding body has."""
    if not header:
        return
    if header.startswith("!"):
        name = ".".join(unquote(p) for p in header[1:].split(",", 1)[0].split("."))
        raise errors.invalid(
            f"the JSON body names {errors.shown(name)} twice in one object",
            reason="MALFORMED_REQUEST",
            field=name,
        )
    bodies = body_messages(method)
    if not bodies:
        return
    for path in header.split(","):
        if not path:
            continue
        misses = [_unknown_in(desc, path) for desc in bodies]
        if all(miss is not None for miss in misses):
            name = misses[0] or path
            known = ", ".join(f.name for f in bodies[0].fields)
            raise errors.invalid(
                f"unknown field {errors.shown(name)} in the JSON body of "
                f"{method.name} (fields: {known})",
                reason="FIELD_UNKNOWN",
                field=name,
            )
