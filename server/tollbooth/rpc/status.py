"""Domain errors -> google.rpc.Status with ErrorInfo (AIP-193)."""

from __future__ import annotations

import collections

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tollbooth.errors import DomainError, Kind

DOMAIN = "billing.v1"


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status
):
    """A status with extra trailing metadata (grpc_status builds one with the details only)."""


def to_grpc_status(err: DomainError) -> grpc.Status:
    code: grpc.StatusCode = grpc.StatusCode[err.kind.value]
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if err.retry_after_sec is not None:
        retry = any_pb2.Any()
        retry.Pack(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=err.retry_after_sec)
            )
        )
        details.append(retry)
    status = status_pb2.Status(code=code.value[0], message=err.message, details=details)
    converted = rpc_status.to_status(status)
    if not err.headers:
        return converted
    return _Status(converted.code, converted.details, (*converted.trailing_metadata, *err.headers))


def internal_status() -> grpc.Status:
    return to_grpc_status(DomainError(Kind.INTERNAL, "INTERNAL", "internal error"))
