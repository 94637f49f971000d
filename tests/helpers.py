"""Test helpers: decoding rich errors the way clients do."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

T = TypeVar("T")


def _error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_reason(err: grpc.RpcError) -> str | None:
    """The ErrorInfo.reason carried by a failed call, if any."""
    info = _error_info(err)
    return None if info is None else info.reason


def error_field(err: grpc.RpcError) -> str | None:
    """The ErrorInfo's `metadata.field` of a failed call, if any."""
    info = _error_info(err)
    return None if info is None else info.metadata.get("field")


def error_path(err: grpc.RpcError) -> str | None:
    """The ErrorInfo's `metadata.path` of a failed call (the mask path refused), if any."""
    info = _error_info(err)
    return None if info is None else info.metadata.get("path")


def keyed(request: Any) -> Any:
    """The request with a fresh request_id when it has that field and none: every mutating RPC
    but three requires one since the contract was re-settled (2026-12-01)."""
    if "request_id" in request.DESCRIPTOR.fields_by_name and not request.request_id:
        request.request_id = f"req-{uuid.uuid4().hex}"
    return request


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T | grpc.RpcError]:
    """Run every call in its own thread, all released together by one barrier: each call's
    result, or the RpcError it raised, in the order given."""
    results: list[T | grpc.RpcError | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait(timeout=60)
        try:
            results[i] = calls[i]()
        except grpc.RpcError as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


def outcome(result: object) -> str:
    """ "OK", or a failed call's code and reason ("NOT_FOUND/NOT_FOUND")."""
    if isinstance(result, grpc.RpcError):
        return f"{result.code().name}/{error_reason(result)}"
    return "OK"
