"""What the server refuses, said in the OpenAPI document (`tollbooth.openapi`).

A document that calls a request valid when the server refuses it (or the reverse) misleads
every client generated from it and every tester that fuzzes it (schemathesis' positive and
negative modes). The edge's rules (`tollbooth.rpc.edge`, `tollbooth.text`) become JSON Schema
here, from the same descriptors, so a new field is described without new code:

- a string holds no control character (tab, LF and CR pass a `multiline` field) and is at
  most its `(billing.v1.max_length)` (1000 when it declares none);
- a REQUIRED string holds something visible (blanks and zero-width characters are no value:
  FIELD_REQUIRED), a REQUIRED enum is not its `_UNSPECIFIED` zero, and a REQUIRED query
  parameter is `required`;
- a page size is not negative;
- a credit type, a credit amount and a principal id have the syntax the server checks;
- an update mask names fields of the resource it updates, comma-separated, or is `*`.
"""

from __future__ import annotations

import re
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from billing.v1 import options_pb2
from tollbooth.idempotency import MAX_KEY_LENGTH

DEFAULT_MAX_LENGTH = 1000  # tollbooth.rpc.edge.DEFAULT_MAX_LENGTH
_BIDI = "\\u202a-\\u202e\\u2066-\\u2069"
# The characters a string may not hold (tollbooth.text), as a JSON Schema (ECMA-262) class.
_SINGLE = f"\\u0000-\\u001f\\u007f-\\u009f{_BIDI}"
_MULTI = f"\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f{_BIDI}"
# What does not make a required value: white space and the invisible characters that
# `str.strip()` leaves (zero-width space, joiners, word joiner, byte order mark).
_BLANK = "\\s\\u200b-\\u200d\\u2060\\ufeff"
# Values a field takes where the proto says so only in words.
CHOICES: dict[str, list[str]] = {"environment": ["", "test", "live"]}
# White space the server trims from around a value (str.strip), less the control characters
# the edge refuses anyway.
_WS = "[ \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*"
# tollbooth.amounts.CREDIT_TYPE_RE, trimmed first (tollbooth.credit.rules.clean_type).
_CREDIT_TYPE = f"{_WS}[A-Za-z0-9][A-Za-z0-9_.:-]{{0,99}}{_WS}"
# tollbooth.amounts.clean_credit_amount: plain notation, greater than zero, at most 20
# integer and 18 fractional digits that count (leading and trailing zeros do not).
_POSITIVE_DECIMAL = "0*[1-9][0-9]{0,19}(\\.[0-9]{1,18}0*)?|0+\\.[0-9]{0,17}[1-9]0*"
# tollbooth.accounts.service.PRINCIPAL_RE, trimmed first, never `acct_...`.
_PRINCIPAL = f"{_WS}(?!acct_)[A-Za-z0-9][A-Za-z0-9._:@-]{{0,199}}{_WS}"
# The fields whose syntax the server checks past the edge's rules (domain code), by full name.
FORMATS: dict[str, str] = {
    **{
        f"billing.v1.{name}": _CREDIT_TYPE
        for name in (
            "CreditGrantSpec.credit_type",
            "GrantCreditsRequest.credit_type",
            "GetBalanceRequest.type",
            "CheckAvailabilityRequest.type",
            "DebitCreditsRequest.credit_type",
            "ReserveCreditsRequest.credit_type",
            "CreditBurn.credit_type",
        )
    },
    **{
        f"billing.v1.{name}": _POSITIVE_DECIMAL
        for name in (
            "CreditGrantSpec.amount",
            "GrantCreditsRequest.amount",
            "CheckAvailabilityRequest.required",
            "DebitCreditsRequest.amount",
            "ReserveCreditsRequest.amount",
            "CommitReservationRequest.amount",
            "CreditBurn.rate",
        )
    },
    "billing.v1.IssueTokenRequest.principal_id": _PRINCIPAL,
}
PAGE_SIZES = frozenset({"page_size", "limit"})


def behaviors(field: FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def required(field: FieldDescriptor) -> bool:
    return field_behavior_pb2.REQUIRED in behaviors(field)


def _multiline(field: FieldDescriptor) -> bool:
    options = field.GetOptions()
    return options.HasExtension(options_pb2.multiline) and bool(
        options.Extensions[options_pb2.multiline]
    )


def string_pattern(multiline: bool, visible: bool) -> str:
    """A full-match pattern: no refused character; with `visible`, one that is not blank."""
    refused = _MULTI if multiline else _SINGLE
    if not visible:
        return f"^[^{refused}]*$"
    return f"^[^{refused}]*[^{refused}{_BLANK}][^{refused}]*$"


def max_length(field: FieldDescriptor) -> int:
    options = field.GetOptions()
    if options.HasExtension(options_pb2.max_length):
        return int(options.Extensions[options_pb2.max_length])
    if field.name == "request_id":
        return MAX_KEY_LENGTH
    return DEFAULT_MAX_LENGTH


def constrain(field: FieldDescriptor, schema: dict[str, Any], partial: bool = False) -> None:
    """Add to a request field's own schema (not a `$ref`) what the edge refuses. `partial`:
    the field of an update's resource, where REQUIRED does not make a value required."""
    if field_behavior_pb2.OUTPUT_ONLY in behaviors(field):
        return
    must = required(field) and not partial
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name in CHOICES and not field.is_repeated:
            schema["enum"] = CHOICES[field.name]
            return
        if field.full_name in FORMATS:
            syntax = FORMATS[field.full_name]
            schema["maxLength"] = max_length(field)
            schema["pattern"] = f"^({syntax})$" if must else f"^({syntax})?$"
            return
        target = schema["items"] if field.is_repeated else schema
        target["maxLength"] = max_length(field)
        target["pattern"] = string_pattern(_multiline(field), must and not field.is_repeated)
        if must and not field.is_repeated:
            target["minLength"] = 1
    elif field.type == FieldDescriptor.TYPE_INT32 and field.name in PAGE_SIZES:
        schema["minimum"] = 0


def map_constrain(field: FieldDescriptor, schema: dict[str, Any]) -> None:
    """A map<string, string>'s keys (single-line) and values (the field's `multiline`)."""
    entry = field.message_type
    assert entry is not None
    key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
    if key.type == FieldDescriptor.TYPE_STRING:
        schema["propertyNames"] = {
            "maxLength": DEFAULT_MAX_LENGTH,
            "pattern": string_pattern(False, False),
        }
    if value.type == FieldDescriptor.TYPE_STRING:
        schema["additionalProperties"] = {
            "type": "string",
            "maxLength": max_length(field),
            "pattern": string_pattern(_multiline(field), False),
        }


def required_enum(field: FieldDescriptor, schema: dict[str, Any]) -> dict[str, Any]:
    """A REQUIRED enum: any of its values but the `_UNSPECIFIED` zero."""
    enum = field.enum_type
    assert enum is not None
    return {"type": "string", "enum": [v.name for v in enum.values if v.number != 0]}


def resource_of(request: Descriptor) -> Descriptor | None:
    """An update request's resource: its one singular message field besides the mask."""
    for field in request.fields:
        sub = field.message_type
        if sub is not None and not field.is_repeated and not sub.full_name.startswith("google."):
            return sub
    return None


def is_update(request: Descriptor) -> bool:
    return any(
        f.message_type is not None and f.message_type.full_name == "google.protobuf.FieldMask"
        for f in request.fields
    )


def mask_pattern(resource: Descriptor) -> str:
    """`*`, or comma-separated field names of the resource (snake_case or lowerCamelCase), as
    the update RPCs take them (AIP-134; output-only names change nothing and are taken)."""
    names = sorted({n for f in resource.fields for n in (f.name, f.json_name)})
    one = "(" + "|".join(re.escape(n) for n in names) + ")"
    return f"^(\\*|{one}(,{one})*)$"
