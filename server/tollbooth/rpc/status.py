"""Domain errors -> google.rpc.Status with ErrorInfo (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tollbooth.errors import DomainError, Kind

DOMAIN = "billing.v1"


def to_grpc_status(err: DomainError) -> grpc.Status:
    code: grpc.StatusCode = grpc.StatusCode[err.kind.value]
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=err.message, details=[detail])
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    return to_grpc_status(DomainError(Kind.INTERNAL, "INTERNAL", "internal error"))
