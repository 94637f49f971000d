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
- a currency is a code the provider holds, in any case, with the white space the server
  trims around it (a pattern, not an enum: an enum of `usd` and `USD` called `Usd` and
  ` usd ` invalid though the server takes them);
- an update mask names fields of the resource it updates, comma-separated, or is `*`.
"""

from __future__ import annotations

import re
from typing import Any

import iso4217
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from billing.v1 import options_pb2
from tollbooth import currencies
from tollbooth.auth.tokens import SCOPES
from tollbooth.eventtypes import KNOWN_TYPES
from tollbooth.idempotency import MAX_KEY_LENGTH
from tollbooth.metadata import PROVIDER_PRODUCT_KEY

DEFAULT_MAX_LENGTH = 1000  # tollbooth.rpc.edge.DEFAULT_MAX_LENGTH
_BIDI = "\\u202a-\\u202e\\u2066-\\u2069"
# The characters a string may not hold (tollbooth.text), as a JSON Schema (ECMA-262) class.
_SINGLE = f"\\u0000-\\u001f\\u007f-\\u009f{_BIDI}"
_MULTI = f"\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f{_BIDI}"
# What does not make a required value: white space and the invisible characters that
# `str.strip()` leaves (zero-width space, joiners, word joiner, byte order mark).
_BLANK = "\\s\\u200b-\\u200d\\u2060\\ufeff"
# tollbooth.catalog.fields.clean_currency: an ISO 4217 code with minor units (the maintained
# `iso4217` package) that the provider holds (tollbooth.currencies), in any case (`Usd` too);
# JSON Schema has no case-insensitive pattern, so each letter is a class (`[uU][sS][dD]`).
_HELD = sorted(c.name.lower() for c in iso4217.Currency if currencies.known(c.name.lower()))
CURRENCY_CODES = "|".join("".join(f"[{ch}{ch.upper()}]" for ch in code) for code in _HELD)
# Values a field takes where the proto says so only in words.
EVENT_TYPES = list(KNOWN_TYPES)
CHOICES: dict[str, list[str]] = {
    "environment": ["", "test", "live"],
    "scopes": list(SCOPES),
    "event_types": EVENT_TYPES,
}
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
# tollbooth.accounts.manage.clean_email, in ASCII: one `@`, dot-separated parts that are not
# empty, a dot in the domain, nothing blank or unprintable (trimmed first).
_EMAIL = (
    f"{_WS}[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+)*"
    f"@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+{_WS}"
)
# tollbooth.notifications.endpoints.clean_url, in ASCII: http or https, a host name, an
# optional port and path.
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP = "[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_PCHARS = "[A-Za-z0-9._~!$&'()*+,;=:@/-]*"
_URL = (
    f"{_WS}https?://({_LABEL}\\.)*{_TOP}{_PORT}(/{_PCHARS})?(\\?{_PCHARS.replace('/', '/?')})?{_WS}"
)
# tollbooth.accounts.customers.clean_phone: digits, spaces and +()-. only, at most 20.
_PHONE = "[ ]*[+0-9()\\-.][+0-9 ()\\-.]{0,19}[ ]*"
_METRIC_CODE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
# Something visible on one line (an optional field given blank is refused, not read as absent).
_VISIBLE = f"[^{_SINGLE}]*[^{_SINGLE}{_BLANK}][^{_SINGLE}]*"
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
    "billing.v1.ListGrantsRequest.credit_type": _CREDIT_TYPE,
    "billing.v1.ListLedgerEntriesRequest.credit_type": _CREDIT_TYPE,
    "billing.v1.Entitlement.credit_type": _CREDIT_TYPE,
    **{
        f"billing.v1.{name}": _EMAIL
        for name in (
            "Account.email",
            "CreateAccountRequest.email",
            "CreateCheckoutSessionRequest.customer_email",
            "CreateCheckoutSessionRequest.account_email",
            "CreateCustomerRequest.email",
            "UpdateCustomerRequest.email",
            "GetCustomerSubscriptionRequest.customerEmail",
            "IssueTokenRequest.email",
            "CreatePaymentIntentRequest.receipt_email",
        )
    },
    "billing.v1.NotificationEndpoint.url": _URL,
    # tollbooth.checkout.servicer._items: a tier given blank names no price (FIELD_INVALID)
    "billing.v1.CreateCheckoutSessionRequest.tier": _VISIBLE,
    # tollbooth.catalog.fields.PRODUCT_KEY_RE
    "billing.v1.Product.key": f"{_WS}[A-Za-z0-9][A-Za-z0-9_.:-]{{0,39}}{_WS}",
    # tollbooth.usage.service.CODE
    "billing.v1.Metric.code": _METRIC_CODE,
    # tollbooth.catalog.fields: a metered entitlement's metric (METRIC_CODE_RE) and limit, a
    # credit-backed one's amount
    "billing.v1.Entitlement.metric": f"{_WS}[A-Za-z0-9_.-]{{1,100}}{_WS}",
    "billing.v1.Entitlement.limit": f"{_WS}({_POSITIVE_DECIMAL}){_WS}",
    "billing.v1.Entitlement.amount": f"{_WS}({_POSITIVE_DECIMAL}){_WS}",
    "billing.v1.CreateCustomerRequest.phone": _PHONE,
    "billing.v1.UpdateCustomerRequest.phone": _PHONE,
}
# Integer fields with a range of their own (a string of digits is in range only by value).
INTEGERS: dict[str, tuple[int, int]] = {
    # tollbooth.payments: a whole number of minor units from 1 to 99999999.
    "billing.v1.CreatePaymentIntentRequest.amount": (1, 99_999_999),
    # tollbooth.credit.rules.clean_hold_ttl: 0 (the default) to 7 days.
    "billing.v1.ReserveCreditsRequest.ttl_seconds": (0, 7 * 86_400),
    # tollbooth.catalog.fields.MAX_UNIT_AMOUNT: what the provider charges at most, in minor units.
    "billing.v1.Price.unit_amount": (0, 99_999_999),
    # tollbooth.checkout.service.MAX_QUANTITY (0: one).
    "billing.v1.CheckoutItem.quantity": (0, 999_999),
    "billing.v1.CheckoutLineItem.quantity": (0, 999_999),
    # tollbooth.catalog.fields.MAX_GRANT_EXPIRY_SEC: 0 (never expires) to 100 years.
    "billing.v1.CreditGrantSpec.expires_after_seconds": (0, 36_525 * 86_400),
}
# Fields the domain holds shorter than the proto's `max_length` (or the default) says.
MAX_LENGTHS: dict[str, int] = {
    # tollbooth.catalog.fields: a price names its product by id (`prod_...`), at most 40.
    "billing.v1.Price.product_id": 40,
    # tollbooth.usage.service.PROPERTY_LIMIT: a property name, at most 200.
    "billing.v1.GetUsageRequest.group_by": 200,
}
# Repeated fields with a count of their own (tollbooth.catalog.fields MAX_CREDIT_GRANTS,
# MAX_ENTITLEMENTS).
MAX_ITEMS: dict[str, int] = {
    "billing.v1.Price.credit_grants": 20,
    "billing.v1.Price.entitlements": 100,
    "billing.v1.Product.entitlements": 100,
}
PAGE_SIZES = frozenset({"page_size", "limit"})
# The key a provider copy of the metadata adds (tollbooth.metadata.PROVIDER_PRODUCT_KEY,
# tollbooth.accounts.manage.ACCOUNT_KEY): refused in the metadata itself.
RESERVED_KEYS = {
    "billing.v1.Product": PROVIDER_PRODUCT_KEY,
    "billing.v1.Account": "billing_account_id",
    "billing.v1.CreateAccountRequest": "billing_account_id",
    "billing.v1.CreateCustomerRequest": "billing_account_id",
    "billing.v1.UpdateCustomerRequest": "billing_account_id",
}
# Messages whose metadata Stripe copies (tollbooth.metadata.clean_provider_metadata).
PROVIDER_COPIED = frozenset(
    {
        "billing.v1.Product",
        "billing.v1.Price",
        "billing.v1.Account",
        "billing.v1.CreateAccountRequest",
        "billing.v1.CreateCustomerRequest",
        "billing.v1.UpdateCustomerRequest",
    }
)


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
    if field.full_name in MAX_LENGTHS:
        return MAX_LENGTHS[field.full_name]
    options = field.GetOptions()
    if options.HasExtension(options_pb2.max_length):
        return int(options.Extensions[options_pb2.max_length])
    if field.name == "request_id":
        return MAX_KEY_LENGTH
    return DEFAULT_MAX_LENGTH


def request_messages(inputs: list[Descriptor]) -> frozenset[str]:
    """Full names of the messages the request types hold (themselves included)."""
    seen: set[str] = set()
    stack = list(inputs)
    while stack:
        msg = stack.pop()
        if msg.full_name in seen or msg.full_name.startswith("google."):
            continue
        seen.add(msg.full_name)
        stack.extend(f.message_type for f in msg.fields if f.message_type is not None)
    return frozenset(seen)


# Fields of a request given one at a time where the proto has no oneof (the seeds' twin
# shapes; the server refuses two given with a value): message -> pairs.
EXCLUSIVE: dict[str, list[tuple[str, str]]] = {
    "billing.v1.CreateCheckoutSessionRequest": [
        ("items", "line_items"),
        ("tier", "items"),
        ("tier", "line_items"),
    ],
}


def _given(field: FieldDescriptor) -> dict[str, Any]:
    """A value the server reads as given: a list with an item, a string with a character."""
    if field.is_repeated:
        return {"type": "array", "minItems": 1}
    return {"type": "string", "minLength": 1}


def one_of_pairs(msg: Descriptor, skip: frozenset[str]) -> dict[str, Any] | None:
    """At most one field of each oneof (the transcoder refuses two: "oneof field is already
    set"), and of each `EXCLUSIVE` pair given with values: no two of them together."""
    pairs: list[dict[str, Any]] = []
    for oneof in msg.oneofs:
        names = [f.name for f in oneof.fields if f.name not in skip]
        if len(names) < 2:  # a proto3 `optional` is a oneof of one
            continue
        pairs += [{"required": [a, b]} for i, a in enumerate(names) for b in names[i + 1 :]]
    fields = msg.fields_by_name
    for a, b in EXCLUSIVE.get(msg.full_name, []):
        if a not in skip and b not in skip:
            given = {a: _given(fields[a]), b: _given(fields[b])}
            pairs.append({"required": [a, b], "properties": given})
    return {"anyOf": pairs} if pairs else None


def request_field(field: FieldDescriptor, schema: dict[str, Any], partial: bool) -> dict[str, Any]:
    """A request field's schema with what the server refuses, and what proto3 JSON takes
    besides (Envoy's transcoder reads `null` as the default, and numbers as JSON numbers or
    strings)."""
    must = required(field) and not partial
    if field.message_type is not None and field.message_type.full_name == _STRUCT:
        free = {"$ref": "#/components/schemas/JsonObject"}
        return free if must else {"anyOf": [free, {"type": "null"}]}
    if field.message_type is not None and field.message_type.full_name == _TIMESTAMP:
        schema = {"anyOf": [schema, TIMESTAMP_OBJECT]}
        return schema if must else {"anyOf": [*schema["anyOf"], {"type": "null"}]}
    if "$ref" in schema:
        if field.type == FieldDescriptor.TYPE_ENUM and must:
            return required_enum(field, schema)
        return schema if must else {"anyOf": [schema, {"type": "null"}]}
    constrain(field, schema, partial)
    if must and field.is_repeated and schema.get("type") == "array":
        schema["minItems"] = 1
    if field.full_name in MAX_ITEMS and schema.get("type") == "array":
        schema["maxItems"] = MAX_ITEMS[field.full_name]
    if "enum" in schema:
        return schema
    if not field.is_repeated:
        _numbers(field, schema)
    if not must and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    elif not must and isinstance(schema.get("type"), list):
        schema["type"] = [*schema["type"], "null"]
    return schema


_TIMESTAMP = "google.protobuf.Timestamp"
_STRUCT = "google.protobuf.Struct"
# Free-form JSON in a request (usage `properties`): any shape, but no NUL in a key or a string
# (PostgreSQL text cannot hold one) and strings of at most 8192 characters
# (tollbooth.rpc.edge.STRUCT_MAX_LENGTH).
_FREE_TEXT = {"type": "string", "maxLength": 8192, "pattern": "^[^\\u0000]*$"}
FREE_FORM: dict[str, Any] = {
    "JsonObject": {
        "type": "object",
        "propertyNames": {"maxLength": 8192, "pattern": "^[^\\u0000]*$"},
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        "description": "Free-form JSON: any shape, no NUL character in a key or a string.",
    },
    "JsonValue": {
        "anyOf": [
            {"type": ["null", "boolean", "number"]},
            _FREE_TEXT,
            {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
            {"$ref": "#/components/schemas/JsonObject"},
        ]
    },
}
# Envoy's transcoder also reads a Timestamp written as its message ({"seconds", "nanos"}); the
# edge takes 0001-01-01 to 9999-12-31 (FIELD_INVALID outside).
TIMESTAMP_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "seconds": {
            "type": ["integer", "null"],
            "minimum": -62_135_596_800,
            "maximum": 253_402_300_799,
        },
        "nanos": {"type": ["integer", "null"], "minimum": 0, "maximum": 999_999_999},
    },
    "additionalProperties": False,
}
_INT32 = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32)
_INT64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64)


def _non_negative(field: FieldDescriptor) -> bool:
    """Page sizes, durations and a catalog position are refused below 0."""
    return (
        field.name in PAGE_SIZES
        or field.name.endswith(("_seconds", "_sec"))
        or (field.name in ("position", "unit_amount"))
    )


def _numbers(field: FieldDescriptor, schema: dict[str, Any]) -> None:
    """An integer field takes a JSON number or a string of digits (proto3 JSON)."""
    sign = "" if _non_negative(field) else "-?"
    if field.type in _INT32 and field.full_name not in INTEGERS:
        schema["type"] = ["integer", "string"]
        schema["pattern"] = f"^{sign}[0-9]{{1,9}}$"
        schema.setdefault("minimum", 0 if sign == "" else -2147483648)
        schema.setdefault("maximum", 2147483647)
    elif field.type in _INT64 and field.full_name not in INTEGERS:
        schema["type"] = ["string", "integer"]
        schema["pattern"] = f"^{sign}[0-9]{{1,18}}$"
        schema["minimum"] = 0 if sign == "" else -(2**63)
        schema["maximum"] = 2**63 - 1


def constrain(field: FieldDescriptor, schema: dict[str, Any], partial: bool = False) -> None:
    """Add to a request field's own schema (not a `$ref`) what the edge refuses. `partial`:
    the field of an update's resource, where REQUIRED does not make a value required."""
    if field_behavior_pb2.OUTPUT_ONLY in behaviors(field):
        return
    must = required(field) and not partial
    if field.full_name in INTEGERS:
        low, high = INTEGERS[field.full_name]
        schema["type"] = ["string", "integer"]
        digits = f"[1-9][0-9]{{0,{len(str(high)) - 1}}}"
        schema["pattern"] = f"^(0|{digits})$" if low == 0 else f"^{digits}$"
        schema["minimum"], schema["maximum"] = low, high
        return
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name in CHOICES:
            (schema["items"] if field.is_repeated else schema)["enum"] = CHOICES[field.name]
            return
        if field.name == "currency" and not field.is_repeated:
            # Trimmed as every cleaned field is (an optional one blank is none given).
            code = f"(?:{CURRENCY_CODES}){_WS}"
            schema["pattern"] = f"^{_WS}{code}$" if must else f"^{_WS}(?:{code})?$"
            schema["maxLength"] = max_length(field)
            return
        if field.full_name in FORMATS:
            syntax = FORMATS[field.full_name]
            schema["maxLength"] = max_length(field)
            schema["pattern"] = f"^({syntax})$" if must else f"^({syntax})?$"
            return
        target = schema["items"] if field.is_repeated else schema
        if must and field.is_repeated:
            schema["minItems"] = 1
        target["maxLength"] = max_length(field)
        target["pattern"] = string_pattern(_multiline(field), must and not field.is_repeated)
        if must and not field.is_repeated:
            target["minLength"] = 1
    elif field.type == FieldDescriptor.TYPE_INT32 and field.name in PAGE_SIZES:
        schema["minimum"] = 0


def map_constrain(field: FieldDescriptor, schema: dict[str, Any]) -> None:
    """A map<string, string>'s keys (single-line) and values (the field's `multiline`); a
    `metadata` map's keys are 1-40 characters, its values at most 500, at most 50 of them
    (tollbooth.metadata); a catalog object's (which Stripe copies) hold no square bracket."""
    entry = field.message_type
    assert entry is not None
    key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
    metadata = field.name == "metadata"
    owner = owner_of(field)
    if key.type == FieldDescriptor.TYPE_STRING:
        names: dict[str, Any] = {
            "maxLength": 40 if metadata else DEFAULT_MAX_LENGTH,
            "pattern": string_pattern(False, False),
        }
        if metadata:
            names["minLength"] = 1
            if owner in PROVIDER_COPIED:
                names["pattern"] = f"^[^{_SINGLE}\\[\\]]*$"
            if owner in RESERVED_KEYS:
                names["not"] = {"const": RESERVED_KEYS[owner]}
        schema["propertyNames"] = names
    if value.type == FieldDescriptor.TYPE_STRING:
        schema["additionalProperties"] = {
            "type": "string",
            "maxLength": 500 if metadata else max_length(field),
            "pattern": string_pattern(_multiline(field), False),
        }
    if metadata:
        schema["maxProperties"] = 49 if owner in RESERVED_KEYS else 50


def owner_of(field: FieldDescriptor) -> str:
    """The full name of the message the field belongs to."""
    return field.containing_type.full_name if field.containing_type is not None else ""


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
