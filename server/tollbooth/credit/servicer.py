"""CreditService over gRPC. Not built yet: every RPC answers UNIMPLEMENTED after auth."""

from billing.v1 import credit_pb2
from tollbooth.rpc.servicer import Servicer, contract


@contract(credit_pb2.DESCRIPTOR.services_by_name["CreditService"])
class CreditServicer(Servicer):
    pass
