"""CreditService over gRPC. Not built yet: every RPC answers UNIMPLEMENTED after auth."""

from billing.v1 import credit_pb2, credit_pb2_grpc
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import contract


@contract(credit_pb2.DESCRIPTOR.services_by_name["CreditService"])
class CreditServicer(credit_pb2_grpc.CreditServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
