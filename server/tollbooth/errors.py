"""Domain errors: a kind, a stable reason and metadata. Domain code never imports grpc."""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    """An error with a stable reason (an ErrorReason name without its prefix).

    `retry_after_sec`, when set, becomes a google.rpc.RetryInfo detail; `headers` are sent
    as trailing metadata (Envoy turns them into HTTP response headers)."""

    retry_after_sec: int | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, kind: Kind, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items() if v is not None}


def invalid(message: str, reason: str = "INVALID_ARGUMENT", **metadata: object) -> DomainError:
    return DomainError(Kind.INVALID_ARGUMENT, reason, message, **metadata)


def required(field_name: str) -> DomainError:
    return DomainError(
        Kind.INVALID_ARGUMENT, "FIELD_REQUIRED", f"{field_name} is required", field=field_name
    )


def unknown_mask_path(path: str, field: str = "update_mask") -> DomainError:
    """A field mask path naming no field the update may change: FIELD_INVALID naming the mask
    (`field`) and the path (`path`, bounded as an echo must be)."""
    return DomainError(
        Kind.INVALID_ARGUMENT,
        "FIELD_INVALID",
        f"{field} names unknown field {shown(path)}",
        field=field,
        path=path[:64],
    )


def shown(value: str, limit: int = 64) -> str:
    """A caller's value as an error may echo it: bounded, so errors never echo unbounded input."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"


def not_found(what: str, ident: str) -> DomainError:
    return DomainError(
        Kind.NOT_FOUND, "NOT_FOUND", f"{what} {shown(ident)} not found", resource=what
    )


def unauthenticated(reason: str, message: str) -> DomainError:
    return DomainError(Kind.UNAUTHENTICATED, reason, message)


def permission_denied(reason: str, message: str, **metadata: object) -> DomainError:
    return DomainError(Kind.PERMISSION_DENIED, reason, message, **metadata)


def failed_precondition(reason: str, message: str, **metadata: object) -> DomainError:
    return DomainError(Kind.FAILED_PRECONDITION, reason, message, **metadata)


def not_implemented(method: str) -> DomainError:
    return DomainError(
        Kind.UNIMPLEMENTED, "NOT_IMPLEMENTED", f"{method} is not built yet", method=method
    )
