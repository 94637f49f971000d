"""Rich errors: one exception type carrying the server's stable reason.

Callers branch on `reason` (a stable string such as ``"NOT_FOUND"`` or
``"INSUFFICIENT_CREDITS"``, the `ErrorReason` enum name without its prefix) rather than on
message text, which is for humans and may change.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class BillingError(Exception):
    """A failed billing RPC.

    `code` is the gRPC status; `reason`, `domain` and `metadata` come from the
    `google.rpc.ErrorInfo` the server attaches (AIP-193). `reason` is None when the failure
    never reached the billing server (connection refused, deadline exceeded in transit), so
    there was no ErrorInfo to read.

    `request_id` is the idempotency key the call carried, when it had one. After an ambiguous
    failure (DEADLINE_EXCEEDED, or UNAVAILABLE once retries are spent) the effect may or may
    not have happened: resending the same request with this `request_id` is safe, whereas
    a fresh key could apply it twice.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str | None,
        message: str,
        metadata: dict[str, str] | None = None,
        *,
        domain: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(code, reason, message, metadata)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.domain = domain
        self.request_id = request_id

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the keyword-only fields when the error crosses a process boundary.
        return (type(self), self.args, {"domain": self.domain, "request_id": self.request_id})

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason or '-'}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"BillingError(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, metadata={self.metadata!r})"
        )

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError, *, request_id: str | None = None) -> BillingError:
        """Decode the google.rpc.Status a server sent in the trailers, when there is one."""
        code = err.code() if hasattr(err, "code") else None  # type: ignore[attr-defined]
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        message = (err.details() if hasattr(err, "details") else None) or ""  # type: ignore[attr-defined]
        try:
            status = rpc_status.from_call(err)  # type: ignore[arg-type]
        except ValueError:
            # Trailers disagree with the call's own status: trust the call, drop the details.
            status = None
        if status is None:
            return cls(code, None, message, request_id=request_id)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return cls(
                    code,
                    info.reason or None,
                    status.message or message,
                    dict(info.metadata),
                    domain=info.domain or None,
                    request_id=request_id,
                )
        return cls(code, None, status.message or message, request_id=request_id)
