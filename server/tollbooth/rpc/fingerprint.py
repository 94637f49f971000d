"""A request's fingerprint under its request_id: what the request means, not its bytes.

Two calls are "the same request" when they ask for the same thing, however the client wrote
it. The canonical form is a copy of the request without its request_id and with:

- the fields this server does not know dropped (a newer client's field has no effect here);
- every OUTPUT_ONLY field cleared (the server ignores them in a request, AIP-203: a retry
  sending the resource as it was read asks for the same thing);
- every update mask a set of paths (AIP-161: order and repeats do not count), and so every
  repeated field the server reads as a set (`SETS`: a notification endpoint's event types);
- every decimal amount of the contract (`DECIMALS`) in its plain form: "10", "10.0", "010"
  and "10.00" are one amount, as `amounts.parse_amount` reads them (a value that is not a
  plain decimal is kept as sent: the request is refused anyway);

then serialised deterministically (map entries by key, fields by number, fields left at their
default value not written, so a default written out is the same as one omitted, and JSON
transcoded by Envoy is the same as a gRPC client's bytes).

Keys stored before the fingerprint was taken this way hold `legacy` (the request's own bytes
less its request_id): `Fingerprint` carries both, and `idempotency` accepts either.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tollbooth import idempotency
from tollbooth.amounts import PLAIN_DECIMAL_RE
from tollbooth.idempotency import Fingerprint

# The decimal strings of the contract's requests (and of the messages they carry), by full
# field name. tests/rpc/test_fingerprint.py checks every one names a string field.
DECIMALS = frozenset(
    {
        "billing.v1.GrantCreditsRequest.amount",
        "billing.v1.DebitCreditsRequest.amount",
        "billing.v1.ReserveCreditsRequest.amount",
        "billing.v1.CommitReservationRequest.amount",
        "billing.v1.CreditBurn.rate",
        "billing.v1.CreditGrantSpec.amount",
        "billing.v1.Entitlement.limit",
        "billing.v1.Entitlement.amount",
    }
)

_MASK = "google.protobuf.FieldMask"

# Repeated strings the server reads as sets (order and repeats change nothing it does).
SETS = frozenset(
    {
        "billing.v1.NotificationEndpoint.event_types",
        "billing.v1.WatchNotificationsRequest.event_types",
    }
)


def plain_decimal(raw: str) -> str:
    """`raw` in its plain form ("010.50" -> "10.5", "0.0" -> "0"); as sent if not plain."""
    match = PLAIN_DECIMAL_RE.fullmatch(raw)
    if match is None:
        return raw
    whole = match.group(1).lstrip("0") or "0"
    fraction = (match.group(2) or "").rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


@cache
def _needs_walk(descriptor: Descriptor) -> bool:
    """Whether a message of this type can hold a mask or a decimal (else nothing to rewrite)."""
    return _walk_fields(descriptor, frozenset()) is True


def _walk_fields(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    seen = seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.full_name in DECIMALS or field.full_name in SETS or _output_only(field):
            return True
        inner = _message_type(field)
        if inner is not None and (inner.full_name == _MASK or _walk_fields(inner, seen)):
            return True
    return False


def _output_only(field: Any) -> bool:
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.OUTPUT_ONLY in behaviors


def _message_type(field: Any) -> Any:
    """The field's message type; None for a scalar."""
    return field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None


def _canonicalise(message: Message) -> None:
    """Rewrite `message` in place into its canonical form (masks, decimals, output-only)."""
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == _MASK:
        paths = sorted({path.strip() for path in message.paths})  # type: ignore[attr-defined]
        del message.paths[:]  # type: ignore[attr-defined]
        message.paths.extend(paths)  # type: ignore[attr-defined]
        return
    if not _needs_walk(descriptor):
        return
    for field, value in message.ListFields():
        if _output_only(field):
            message.ClearField(field.name)
        elif field.full_name in SETS:
            value[:] = sorted(set(value))
        elif field.full_name in DECIMALS and field.type == FieldDescriptor.TYPE_STRING:
            if _is_repeated(field):
                value[:] = [plain_decimal(v) for v in value]
            else:
                setattr(message, field.name, plain_decimal(value))
        elif (inner := _message_type(field)) is not None:
            if inner.GetOptions().map_entry:
                if _message_type(inner.fields_by_name["value"]) is not None:
                    for item in value.values():
                        _canonicalise(item)
            elif _is_repeated(field):
                for item in value:
                    _canonicalise(item)
            else:
                _canonicalise(value)


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def legacy_fingerprint(request: Message) -> str:
    """The fingerprint keys were stored under before this module: the request's deterministic
    bytes less its request_id, update masks as sets."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")  # type: ignore[arg-type]
    for field in copy.DESCRIPTOR.fields:
        inner = _message_type(field)
        if inner is not None and inner.full_name == _MASK and not _is_repeated(field):
            mask = getattr(copy, field.name)
            paths = sorted({path.strip() for path in mask.paths})
            del mask.paths[:]
            mask.paths.extend(paths)
    return idempotency.digest(copy.SerializeToString(deterministic=True))


def fingerprint(request: Message) -> Fingerprint:
    """The request's fingerprint by meaning, carrying the legacy one it may be stored under."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")  # type: ignore[arg-type]
    copy.DiscardUnknownFields()
    _canonicalise(copy)
    return Fingerprint(
        idempotency.digest(copy.SerializeToString(deterministic=True)),
        legacy=lambda: legacy_fingerprint(request),
    )
