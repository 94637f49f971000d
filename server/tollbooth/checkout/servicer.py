"""CheckoutService over gRPC. Not built yet: every RPC answers UNIMPLEMENTED after auth."""

from billing.v1 import checkout_pb2
from tollbooth.rpc.servicer import Servicer, contract


@contract(checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"])
class CheckoutServicer(Servicer):
    pass
