"""CatalogService over gRPC: proto in, proto out, one transaction."""

from __future__ import annotations

from billing.v1 import catalog_pb2, catalog_pb2_grpc
from tollbooth.auth.caller import current_caller
from tollbooth.catalog import convert, service
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import contract


@contract(catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"])
class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def ListProducts(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction(readonly=True) as session:
            page = service.list_products(
                session,
                current_caller.get(),
                page_size=request.page_size,
                page_token=request.page_token,
                include_inactive=request.include_inactive,
            )
            return catalog_pb2.ListProductsResponse(
                products=[convert.product_out(p) for p in page.items],
                next_page_token=page.next_page_token,
            )

    def ListPrices(self, request, context):  # type: ignore[no-untyped-def]
        caller = current_caller.get()
        with self.deps.db.transaction(readonly=True) as session:
            page = service.list_prices(
                session,
                caller,
                request.product_id,
                page_size=request.page_size,
                page_token=request.page_token,
                include_inactive=request.include_inactive,
            )
            hints = service.purchase_hints(caller, page.items)
            return catalog_pb2.ListPricesResponse(
                prices=[convert.price_out(p, h) for p, h in zip(page.items, hints, strict=True)],
                next_page_token=page.next_page_token,
            )

    def GetProduct(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction(readonly=True) as session:
            return convert.product_out(service.get_product(session, request.product_id))

    def CreateProduct(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction() as session:
            product = service.create_product(
                session, convert.product_fields(request.product), request.request_id
            )
            return convert.product_out(product)

    def UpdateProduct(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction() as session:
            product = service.update_product(
                session,
                request.product.product_id,
                convert.product_fields(request.product),
                list(request.update_mask.paths),
                request.request_id,
            )
            return convert.product_out(product)

    def ArchiveProduct(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction() as session:
            product = service.archive_product(session, request.product_id, request.request_id)
            return convert.product_out(product)

    def GetPrice(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction(readonly=True) as session:
            return convert.price_out(service.get_price(session, request.price_id))

    def CreatePrice(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction() as session:
            price = service.create_price(
                session, convert.price_fields(request.price), request.request_id
            )
            return convert.price_out(price)

    def UpdatePrice(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction() as session:
            price = service.update_price(
                session,
                request.price.price_id,
                convert.price_fields(request.price),
                list(request.update_mask.paths),
                request.request_id,
            )
            return convert.price_out(price)

    def ArchivePrice(self, request, context):  # type: ignore[no-untyped-def]
        with self.deps.db.transaction() as session:
            price = service.archive_price(session, request.price_id, request.request_id)
            return convert.price_out(price)
