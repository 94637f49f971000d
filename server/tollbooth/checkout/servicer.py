"""CheckoutService over gRPC. Not built yet: every RPC answers UNIMPLEMENTED after auth."""

from billing.v1 import checkout_pb2, checkout_pb2_grpc
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import contract


@contract(checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"])
class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
