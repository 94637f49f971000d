"""FIELD_UNKNOWN: a JSON body key the request message does not have.

Envoy's transcoder drops unknown JSON fields silently, so a misspelt field ("expiresAt" for
"expire_time") would be ignored. The gateway's Lua filter (gateway/json_fields.lua) names every
key of the JSON body in the `x-billing-json-fields` header: dotted paths, arrays adding no
segment, each segment percent-encoded, each key as the transcoder reads it (JSON escapes
decoded: `"n\\u0061me"` is `name`, for both checks below). Here each path is resolved against
the message the REST binding's body maps to (the whole request for `body: "*"`, and for a
GET or DELETE binding without `body`, whose JSON body the transcoder reads whole all the same;
else that field's message); the first one that names no field is refused. A path after "!" (the Lua
filter puts it first) is a key written twice in one JSON object, which the transcoder would
keep the last of silently: it is refused as MALFORMED_REQUEST naming it. Both the proto name
and the JSON (lowerCamel) name of a field are accepted, as the transcoder accepts both; one
object naming a field in both (`{"creditType": "units", "credit_type": "bonus"}`) is a key
written twice too: the Lua filter names the second key's path after a "^" (after the "!" key,
before the "~" lists), and it is refused as MALFORMED_REQUEST naming the field when the path
resolves to a field of the request (two keys of a map or a Struct may be spelt so). Below a
map, a google.protobuf type (Struct, Value, Timestamp...) or a scalar, any key is left to the
transcoder.

MALFORMED_REQUEST: a list field (a repeated field, not a map) given anything but a JSON array of
values: a lone value (`"scopes": "checkout"`), an object (`"events": {...}`), or an array of
arrays (`"events": [[...]]`), which the transcoder takes as a one-item list or flattens,
silently. The Lua filter names every key whose value is an array or null after a "[" (after
the "~" lists) and every array holding an array after a "[["; a key that resolves to a list
field and is not among the former, or a list field among the latter, is refused. A free-form
value (Struct, Value, ListValue) may hold any shape.

FIELD_INVALID: a JSON null as a map's value (`"metadata": {"tier": null}`), which the
transcoder would store as "": the Lua filter names that key after a "[" (as a key whose value
is an array or null), and a map of strings given an array never gets here.

FIELD_INVALID: a null item in a JSON array that is one of the request's lists
(`"entitlements": [null]`), which the transcoder drops silently. The Lua filter names every
array holding a null, each once after a "~" (after the "!" key, if any); a null inside a
free-form value (`properties`, a google.protobuf.Struct) is a value and passes, and does not
hide a null item of a list named after it.

MALFORMED_REQUEST: a JSON body key that names a field the binding's URL template already binds
(`PATCH /mgt/v1/catalog/products/{product.product_id}` with `{"productId": ...}`): the URL
decides. The transcoder itself refuses the proto spelling (`product_id`) with that reason but
lets the lowerCamel one through (the URL's value wins); here both are refused the same way.
Every binding with a body is the primary one of its RPC, so the check needs no route.

MALFORMED_REQUEST: a query parameter given twice (`?required=1&required=1000`), which the
transcoder would keep the last of silently. The Lua filter names every parameter given more
than once in the `x-billing-query-repeats` header; a name that resolves to a repeated field of
the request message (a list, which a query gives one value at a time) may repeat, any other is
refused naming it. A name that resolves to nothing is refused below (FIELD_UNKNOWN).

FIELD_UNKNOWN: a query parameter that names no field of the request (`?bogus=1`), as a JSON
body key that names none is: the transcoder does not refuse it (its own refusal was
MALFORMED_REQUEST without the field's name, so the two surfaces disagreed).

MALFORMED_REQUEST: a query parameter naming a field the route's URL template binds
(`POST /mgt/v1/accounts/A/credits/grants?account=B`), or the field a `body: "field"` binding
fills from the JSON body. The transcoder binds query parameters after the path, so the query
would decide (the grant went to B). The Lua filter names every query parameter in the
`x-billing-query-fields` header; the route is the binding of the method on the surface Envoy's
route names (`x-billing-surface`: each RPC has at most one binding per surface), or every
binding when no surface is named. A `body: "*"` binding's body fields are the transcoder's: it
refuses a query parameter that collides with a body field itself
(`reject_binding_body_field_collisions`).

FIELD_INVALID: a boolean in the query written other than `true` or `false` (`?active=yes`,
`t`, `1`, `TRUE`), which the transcoder reads as true or false: the Lua filter marks a query
name whose value is such a spelling with a "?", and the server refuses it when its field is a
boolean (a number field takes `1` and `0` as numbers).

FIELD_INVALID: a field mask in the query with a blank item (`?update_mask=,name`,
`?update_mask=`): the transcoder drops empty items and sends an empty value as an empty mask
(no mask: every populated field), so the Lua filter marks a query name whose value has a blank
comma-separated item with a "~" and the server refuses it when the field is a FieldMask.
Likewise a "^" marks one with an item in neither snake_case nor lowerCamelCase
(`?update_mask=NAME`): the transcoder folds its case into a field name (`name`), where gRPC
refuses the same path, so the server refuses it as the domain refuses a path naming no field
(FIELD_INVALID, field `update_mask`; `metadata.path` is not known here: the query's item never
reaches the server as it was spelt).

MALFORMED_REQUEST: a query parameter with no name (`?=1`; the Lua filter names it "@") or a name
written without `=` (`?include_inactive`; marked "="), both of which the transcoder ignores
silently; the latter names the parameter, and a boolean is told to write `=true`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from tollbooth import errors

HEADER = "x-billing-json-fields"
QUERY_REPEATS = "x-billing-query-repeats"
QUERY_FIELDS = "x-billing-query-fields"
SURFACE = "x-billing-surface"  # set by Envoy's route (api, mgt), overwriting any sent
# `metadata.field` of a key the request does not have names it by at most this many
# characters: errors never echo an unbounded input (README "Input rules").
FIELD_ECHO = 64
# What json_fields.lua puts before a query name: a blank item, a miscased item, a loose boolean,
# no `=` at all; a parameter with no name is "@" whole.
QUERY_MARKS = ("~", "^", "?", "=")
NAMELESS = "@"


Binding = tuple[Descriptor, frozenset[tuple[str, ...]]]

_VARIABLE = re.compile(r"\{([^}=]+)")


@cache
def bindings(method: MethodDescriptor) -> tuple[Binding, ...]:
    """Per distinct REST binding body of `method`: the message a JSON body may hold, and the
    field paths inside it (proto names) that the binding's URL template binds."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return ()
    rule = options.Extensions[annotations_pb2.http]
    every = [rule, *rule.additional_bindings]
    if not any(binding.body for binding in every):
        # No `body` (GET, DELETE): the transcoder still reads a JSON body sent anyway into the
        # whole request, so it is checked as `body: "*"`; the route is unknown here, so only
        # what every binding's URL binds counts as bound.
        bound_by_all = frozenset.intersection(
            *(frozenset(tuple(v.split(".")) for v in _variables(b)) for b in every)
        )
        return ((method.input_type, bound_by_all),)
    found: list[Binding] = []
    for binding in every:
        if not binding.body:
            continue
        variables = _variables(binding)
        if binding.body == "*":
            desc = method.input_type
            bound = variables
        else:
            field = method.input_type.fields_by_name.get(binding.body)
            if field is None or field.message_type is None:
                continue
            desc = field.message_type
            prefix = binding.body + "."
            bound = [v[len(prefix) :] for v in variables if v.startswith(prefix)]
        entry = (desc, frozenset(tuple(v.split(".")) for v in bound))
        if entry not in found:
            found.append(entry)
    return tuple(found)


def _variables(binding: http_pb2.HttpRule) -> list[str]:
    """The field paths a binding's URL template binds (`{product.product_id}`)."""
    pattern = binding.WhichOneof("pattern")
    template = binding.custom.path if pattern == "custom" else getattr(binding, pattern or "get")
    return list(_VARIABLE.findall(template))


def _field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    field = desc.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in desc.fields if f.json_name == name), None)


# Well-known types the transcoder also reads as their message (`{"seconds": 5, "nanos": 0}`
# for a Timestamp or a Duration): their keys are checked like any message's.
OBJECTS = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def _resolve(desc: Descriptor, path: str) -> tuple[str, ...] | str:
    """The proto names along `path`, or the prefix of it that names no field of `desc`.

    Below a map, a google.protobuf type (but a Timestamp or a Duration, OBJECTS) or a scalar
    the rest is not resolved (any key goes)."""
    parts = [unquote(p) for p in path.split(".")]
    names: list[str] = []
    current: Descriptor | None = desc
    for i, part in enumerate(parts):
        if current is None:
            return tuple(names)
        field = _field(current, part)
        if field is None:
            return ".".join(parts[: i + 1])
        names.append(field.name)
        sub = field.message_type
        if (
            sub is None
            or sub.GetOptions().map_entry
            or (sub.full_name.startswith("google.protobuf.") and sub.full_name not in OBJECTS)
        ):
            current = None
        else:
            current = sub
    return tuple(names)


def check(method: MethodDescriptor, header: str | None) -> None:
    """Refuse the first JSON key no binding body has (INVALID_ARGUMENT FIELD_UNKNOWN) or one
    that names what the binding's URL binds (INVALID_ARGUMENT MALFORMED_REQUEST)."""
    if not header:
        return
    if header.startswith("!"):
        name = ".".join(unquote(p) for p in header[1:].split(",", 1)[0].split("."))
        raise errors.invalid(
            f"the JSON body names {errors.shown(name)} twice in one object",
            reason="MALFORMED_REQUEST",
            field=name[:FIELD_ECHO],
        )
    bodies = bindings(method)
    if not bodies:
        return
    while header.startswith("^"):
        first, _, header = header.partition(",")
        _refuse_twice_spelt(bodies, first[1:])
    while header.startswith("~"):
        first, _, header = header.partition(",")
        _refuse_null_item(bodies, first[1:])
    arrays: set[str] = set()
    while header.startswith("["):
        first, _, header = header.partition(",")
        if first.startswith("[["):
            _refuse_not_a_list(bodies, first[2:], "a list of lists")
        else:
            arrays.add(first[1:])
    for path in arrays:
        _refuse_null_map_value(bodies, path)
    for path in header.split(","):
        if not path:
            continue
        if path not in arrays:
            _refuse_not_a_list(bodies, path, "no JSON array")
        resolved = [_resolve(desc, path) for desc, _ in bodies]
        if all(isinstance(r, str) for r in resolved):
            name = str(resolved[0]) or path
            known = ", ".join(f.name for f in bodies[0][0].fields)
            raise errors.invalid(
                f"unknown field {errors.shown(name)} in the JSON body of "
                f"{method.name} (fields: {known})",
                reason="FIELD_UNKNOWN",
                field=name[:FIELD_ECHO],
            )
        for (_, bound), names in zip(bodies, resolved, strict=True):
            if isinstance(names, tuple) and names in bound:
                sent = ".".join(unquote(p) for p in path.split("."))
                raise errors.invalid(
                    f"the JSON body of {method.name} names {errors.shown(sent)} "
                    f"({'.'.join(names)}), which the URL already binds: the URL decides, "
                    "leave it out of the body",
                    reason="MALFORMED_REQUEST",
                    field=sent,
                )


def _walk(desc: Descriptor, path: str, *, opaque_wkt: bool) -> FieldDescriptor | None:
    """The field at `path` (dotted, each segment percent-encoded), or None when a segment names
    no field; with `opaque_wkt`, nothing inside a `google.protobuf` value (free-form) is one."""
    current: Descriptor | None = desc
    field: FieldDescriptor | None = None
    for part in path.split("."):
        field = None if current is None else _field(current, unquote(part))
        if field is None:
            return None
        sub = field.message_type
        wkt = sub is not None and sub.full_name.startswith("google.protobuf.")
        current = None if opaque_wkt and wkt else sub
    return field


def _list_field(desc: Descriptor, path: str) -> FieldDescriptor | None:
    """The field at `path` when it is a list of the request (a repeated field, not a map),
    outside any free-form value; else None."""
    field = _walk(desc, path, opaque_wkt=True)
    if field is None or not field.is_repeated:
        return None
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return None
    return field


def _refuse_not_a_list(bodies: tuple[Binding, ...], path: str, given: str) -> None:
    """Refuse a list field of the request given `given` instead of a JSON array of values
    (MALFORMED_REQUEST naming it): the transcoder would take a lone value as a one-item list
    and flatten a list of lists, silently."""
    for desc, _ in bodies:
        if _list_field(desc, path) is not None:
            name = ".".join(unquote(p) for p in path.split("."))
            raise errors.invalid(
                f"{errors.shown(name)} is a list: send a JSON array of its values, not {given}",
                reason="MALFORMED_REQUEST",
                field=name[:FIELD_ECHO],
            )


def _refuse_null_map_value(bodies: tuple[Binding, ...], path: str) -> None:
    """Refuse a JSON null as a map's value (`"metadata": {"tier": null}`; FIELD_INVALID naming
    it): the transcoder would store it as "" silently. `path` is a key whose value was an
    array or null; a map of strings that got an array never reaches the server (the transcoder
    refuses the type), so here it was null. A free-form value (Struct) keeps its nulls."""
    head, _, key = path.rpartition(".")
    if not head:
        return
    for desc, _ in bodies:
        field = _walk(desc, head, opaque_wkt=True)
        entry = field.message_type if field is not None else None
        if entry is None or not entry.GetOptions().map_entry:
            continue
        value = entry.fields_by_name["value"]
        if value.message_type is not None and value.message_type.full_name.startswith(
            "google.protobuf."
        ):
            continue
        name = f"{'.'.join(unquote(p) for p in head.split('.'))}[{unquote(key)[:40]!r}]"
        raise errors.invalid(
            f"{errors.shown(name)} is null; a map's value is a string, never null",
            reason="FIELD_INVALID",
            field=name[:FIELD_ECHO],
        )


def _refuse_twice_spelt(bodies: tuple[Binding, ...], path: str) -> None:
    """Refuse a field written twice in one JSON object in its two spellings (proto name and
    JSON name) when `path` (the second key's) names a field of the request: the transcoder
    would keep the last silently. Keys of a map or a free-form Struct pass."""
    depth = len(path.split("."))
    for desc, _ in bodies:
        names = _resolve(desc, path)
        if isinstance(names, tuple) and len(names) == depth:
            name = ".".join(names)
            raise errors.invalid(
                f"the JSON body names {errors.shown(name)} twice in one object "
                "(by its proto name and its JSON name)",
                reason="MALFORMED_REQUEST",
                field=name[:FIELD_ECHO],
            )


def _refuse_null_item(bodies: tuple[Binding, ...], path: str) -> None:
    """Refuse a null item in the JSON array at `path` when that array is a repeated field of
    the request (FIELD_INVALID naming it): the transcoder would drop it silently. An array
    below a free-form value (Struct, Value, ListValue) keeps its nulls."""
    for desc, _ in bodies:
        current: Descriptor | None = desc
        field: FieldDescriptor | None = None
        for part in path.split("."):
            if current is None:
                field = None
                break
            field = _field(current, unquote(part))
            if field is None:
                break
            sub = field.message_type
            current = None if sub is None or sub.full_name.startswith("google.protobuf.") else sub
        if (
            field is not None
            and field.is_repeated
            and not (field.message_type and field.message_type.GetOptions().map_entry)
            and not (field.message_type and field.message_type.full_name == "google.protobuf.Value")
        ):
            name = ".".join(unquote(p) for p in path.split("."))
            raise errors.invalid(
                f"{errors.shown(name)} holds a null item; a list takes values, never null",
                reason="FIELD_INVALID",
                field=name[:FIELD_ECHO],
            )


def _repeatable(desc: Descriptor, path: str) -> bool:
    """Whether the query parameter `path` (dotted, each segment percent-encoded) names a
    repeated field, or nothing of `desc` at all (left to the transcoder)."""
    field = _walk(desc, path, opaque_wkt=False)
    return field is None or field.is_repeated


def check_query(method: MethodDescriptor, header: str | None) -> None:
    """Refuse the first query parameter given more than once whose field is not repeated
    (INVALID_ARGUMENT MALFORMED_REQUEST naming it)."""
    if not header:
        return
    for path in header.split(","):
        if path and not _repeatable(method.input_type, path):
            name = ".".join(unquote(p) for p in path.split("."))
            raise errors.invalid(
                f"the query gives {errors.shown(name)} more than once; it takes one value",
                reason="MALFORMED_REQUEST",
                field=name,
            )


@cache
def _query_bound(method: MethodDescriptor, surface: str | None) -> tuple[tuple[str, ...], ...]:
    """The field paths (proto names) no query parameter may name on the binding of `method`
    that serves `surface` (`api`, `mgt`; every binding's when None): what its URL template
    binds, and the field a `body: "field"` binding fills from the JSON body."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return ()
    rule = options.Extensions[annotations_pb2.http]
    found: dict[tuple[str, ...], None] = {}
    for binding in [rule, *rule.additional_bindings]:
        pattern = binding.WhichOneof("pattern")
        template = (
            binding.custom.path if pattern == "custom" else getattr(binding, pattern or "get")
        )
        if surface is not None and not template.startswith(f"/{surface}/"):
            continue
        for variable in _variables(binding):
            found[tuple(variable.split("."))] = None
        if binding.body and binding.body != "*":
            found[(binding.body,)] = None
    return tuple(found)


def check_query_fields(method: MethodDescriptor, header: str | None, surface: str | None) -> None:
    """Refuse the first query parameter naming no field of the request (FIELD_UNKNOWN, as an
    unknown JSON body key is) or (a part of) a field the route's URL or body binds
    (INVALID_ARGUMENT MALFORMED_REQUEST naming it)."""
    if not header:
        return
    _refuse_twice_named(method, header)
    bound = _query_bound(method, surface)
    for path in header.split(","):
        if path == NAMELESS:
            raise errors.invalid(
                f"the query of {method.name} holds a parameter with no name (`=value`): "
                "write name=value, or leave it out",
                reason="MALFORMED_REQUEST",
            )
        mark = path[:1] if path[:1] in QUERY_MARKS else ""
        path = path.removeprefix(mark)
        if not path:
            continue
        names = _resolve(method.input_type, path)
        if isinstance(names, str) or not _query_path(method.input_type, path):
            # As an unknown JSON body key is refused (the transcoder would ignore neither,
            # but its own refusal said MALFORMED_REQUEST and named no field).
            sent = ".".join(unquote(p) for p in path.split("."))
            raise errors.invalid(
                f"unknown query parameter {errors.shown(sent)} of {method.name}",
                reason="FIELD_UNKNOWN",
                field=sent[:FIELD_ECHO],
            )
        if mark in ("~", "=") and _is_mask(method.input_type, names):  # `?update_mask` too
            name = ".".join(names)
            raise errors.invalid(
                f"{name} holds a blank path; name each field to update, comma-separated",
                reason="FIELD_INVALID",
                field=name,
            )
        if mark == "=":
            # The transcoder ignores a name without `=`: it would mean nothing, silently.
            name = ".".join(names)
            value = "true" if _is_boolean(method.input_type, names) else "<value>"
            raise errors.invalid(
                f"the query parameter {name} has no value: write {name}={value}",
                reason="MALFORMED_REQUEST",
                field=name,
            )
        if mark == "^" and _is_mask(method.input_type, names):
            # As gRPC refuses the same path (the domain's "names unknown field"): the
            # transcoder would have folded `NAME` into `name`.
            name = ".".join(names)
            raise errors.invalid(
                f"{name} names a field not as the contract spells it: paths are case-sensitive,"
                " in snake_case (credit_grants) or lowerCamelCase (creditGrants)",
                reason="FIELD_INVALID",
                field=name,
            )
        if mark == "?" and _is_boolean(method.input_type, names):
            # The transcoder reads `yes`, `t`, `1` as true: the contract's JSON says true.
            name = ".".join(names)
            raise errors.invalid(
                f"{name} is a boolean: write true or false", reason="FIELD_INVALID", field=name
            )
        for fixed in bound:
            common = min(len(names), len(fixed))
            if names[:common] == fixed[:common]:
                sent = ".".join(unquote(p) for p in path.split("."))
                raise errors.invalid(
                    f"the query of {method.name} names {errors.shown(sent)} "
                    f"({'.'.join(fixed)}), which this route's URL or body already binds: "
                    "leave it out of the query",
                    reason="MALFORMED_REQUEST",
                    field=sent[:FIELD_ECHO],
                )


def _query_path(desc: Descriptor, path: str) -> bool:
    """Whether every segment of the query parameter `path` names a field, below a message
    (google.protobuf ones too: `update_mask.paths`, `start_time.seconds`), never below a scalar
    or a map (`limit.x`, `update_mask.bogus`): the transcoder passes those on unbound."""
    current: Descriptor | None = desc
    for part in path.split("."):
        field = None if current is None else _field(current, unquote(part))
        if field is None:
            return False
        sub = field.message_type
        current = None if sub is None or sub.GetOptions().map_entry else sub
    return True


def _refuse_twice_named(method: MethodDescriptor, header: str) -> None:
    """Refuse a field the query names under two names (`metric_code` and `metricCode`, or
    `start_time` and `start_time.seconds`), each given once (MALFORMED_REQUEST naming it): the
    transcoder binds both and the last one decides, silently, as for a parameter given twice."""
    seen: list[tuple[tuple[str, ...], str]] = []
    for path in header.split(","):
        path = path[1:] if path[:1] in QUERY_MARKS else path
        if not path or _repeatable(method.input_type, path):
            continue  # names no field (refused in check_query_fields), or a list
        resolved = _resolve(method.input_type, path)
        if isinstance(resolved, str):
            continue
        # Below a google.protobuf type (`start_time.seconds`) the rest is kept as sent.
        parts = [unquote(p) for p in path.split(".")]
        names = resolved + tuple(parts[len(resolved) :])
        for other, first in seen:
            common = min(len(names), len(other))
            if names[:common] == other[:common]:
                raise errors.invalid(
                    f"the query gives {errors.shown('.'.join(names[:common]))} twice (as "
                    f"{errors.shown(first)} and {errors.shown('.'.join(parts))}); it takes"
                    " one value",
                    reason="MALFORMED_REQUEST",
                    field=".".join(names[:common])[:FIELD_ECHO],
                )
        seen.append((names, ".".join(parts)))


def check_query_body(method: MethodDescriptor, query: str, body: str | None) -> None:
    """Refuse a query parameter naming (a part of) a field the JSON body also names, in
    another spelling (`?credit_type=bonus` beside `{"creditType": "units"}`), on a `body: "*"`
    binding (MALFORMED_REQUEST naming it): the transcoder's own collision check compares the
    names as written, so the query's value would win, silently."""
    if not body or all(desc is not method.input_type for desc, _ in bindings(method)):
        return
    named: list[tuple[str, ...]] = []
    for path in body.split(","):
        if path and path[0] not in "!^~[":
            resolved = _resolve(method.input_type, path)
            if isinstance(resolved, tuple):
                named.append(resolved)
    for path in query.split(","):
        resolved = _resolve(method.input_type, path[1:] if path[:1] in QUERY_MARKS else path)
        if isinstance(resolved, str) or not resolved:
            continue
        for other in named:
            common = min(len(resolved), len(other))
            if resolved[:common] == other[:common]:
                name = ".".join(resolved[:common])
                raise errors.invalid(
                    f"the query and the JSON body both give {errors.shown(name)}; give it once",
                    reason="MALFORMED_REQUEST",
                    field=name[:FIELD_ECHO],
                )


def _is_boolean(desc: Descriptor, names: tuple[str, ...]) -> bool:
    field = _walk(desc, ".".join(names), opaque_wkt=False)
    return field is not None and field.type == FieldDescriptor.TYPE_BOOL


def _is_mask(desc: Descriptor, names: tuple[str, ...]) -> bool:
    """Whether the field at `names` (proto names, resolved) is a google.protobuf.FieldMask."""
    current: Descriptor | None = desc
    field: FieldDescriptor | None = None
    for name in names:
        if current is None:
            return False
        field = current.fields_by_name[name]
        current = field.message_type
    return current is not None and current.full_name == "google.protobuf.FieldMask"


def body_keys(desc: Descriptor, metadata: Iterable[tuple[str, Any]] | None) -> frozenset[str]:
    """The request fields (proto names) the REST JSON body named at its top level, whatever
    their value (`"accountId": ""` names `account_id`), from the Lua filter's header; empty for
    a gRPC call. Lets an error name the field the caller sent where proto3 cannot tell an
    empty value from an absent one."""
    header = next((str(v) for k, v in metadata or () if k == HEADER), "")
    names = {unquote(path.lstrip("!^~[").split(".", 1)[0]) for path in header.split(",")}
    return frozenset(f.name for n in names if (f := _field(desc, n)) is not None)
