"""CatalogService over gRPC."""

from billing.v1 import catalog_pb2, catalog_pb2_grpc
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import contract


@contract(catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"])
class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
