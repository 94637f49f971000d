"""MALFORMED_REQUEST: a JSON number that is not a whole number in an integer field.

Envoy's transcoder reads a JSON number as a binary double before it takes an integer field's
value, so a literal that is not whole but rounds to a whole double (`2999.9999999999999` is
3000.0) was taken rounded, silently: seed 003's `amount` became 3000, a checkout `quantity`
of `2.9999999999999999` bought three. The gateway's Lua filter (gateway/json_fields.lua)
names the path of every number literal that is not a whole number as written (dotted, arrays
adding no segment, each segment percent-encoded, as `x-billing-json-fields`) in the
`x-billing-json-fractions` header; here one that resolves to an integer field of the request
is refused, naming it. A whole number written with a fraction or an exponent (`2999.0`,
`29.99e2`) is the same number and is never named; a number inside a free-form value
(`properties`, a google.protobuf.Struct) is a value like any other."""

from __future__ import annotations

from urllib.parse import unquote

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from tollbooth import errors
from tollbooth.rpc import json_fields

HEADER = "x-billing-json-fractions"

INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _integer_field(desc: Descriptor, path: str) -> bool:
    """Whether `path` names an integer field of `desc` (through messages, never inside a map
    or a google.protobuf value, whose keys and numbers are free-form)."""
    current: Descriptor | None = desc
    field: FieldDescriptor | None = None
    for part in path.split("."):
        if current is None:
            return False
        field = current.fields_by_name.get(unquote(part)) or next(
            (f for f in current.fields if f.json_name == unquote(part)), None
        )
        if field is None:
            return False
        sub = field.message_type
        if sub is not None and (
            sub.GetOptions().map_entry or sub.full_name.startswith("google.protobuf.")
        ):
            return False
        current = sub
    return field is not None and field.type in INTEGERS


def check(method: MethodDescriptor, header: str | None) -> None:
    """Refuse the first number that is not whole in an integer field of the request."""
    if not header:
        return
    bodies = json_fields.bindings(method)
    for path in header.split(","):
        if path and any(_integer_field(desc, path) for desc, _ in bodies):
            name = ".".join(unquote(p) for p in path.split("."))
            raise errors.invalid(
                f"{errors.shown(name)} is a whole number: the JSON number given is not one"
                " (it would have been rounded)",
                reason="MALFORMED_REQUEST",
                field=name[: json_fields.FIELD_ECHO],
            )
