"""Test helpers: decoding rich errors the way clients do."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_reason(err: grpc.RpcError) -> str | None:
    """The ErrorInfo.reason carried by a failed call, if any."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def keyed(request: Any) -> Any:
    """The request with a fresh request_id when it has that field and none: every mutating RPC
    but three requires one since the contract was re-settled (2026-12-01)."""
    if "request_id" in request.DESCRIPTOR.fields_by_name and not request.request_id:
        request.request_id = f"req-{uuid.uuid4().hex}"
    return request
