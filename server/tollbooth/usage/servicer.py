"""UsageService over gRPC. Not built yet: every RPC answers UNIMPLEMENTED after auth."""

from billing.v1 import usage_pb2
from tollbooth.rpc.servicer import Servicer, contract


@contract(usage_pb2.DESCRIPTOR.services_by_name["UsageService"])
class UsageServicer(Servicer):
    pass
