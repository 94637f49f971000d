"""UsageService over gRPC. Not built yet: every RPC answers UNIMPLEMENTED after auth."""

from billing.v1 import usage_pb2, usage_pb2_grpc
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import contract


@contract(usage_pb2.DESCRIPTOR.services_by_name["UsageService"])
class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
