"""CatalogService over gRPC: proto in, proto out, one transaction."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import grpc
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from billing.v1 import catalog_pb2, catalog_pb2_grpc
from tollbooth import errors, idempotency
from tollbooth.auth.caller import Caller, current_caller
from tollbooth.catalog import convert, links, service
from tollbooth.catalog.fields import PRICE_IMMUTABLE, is_full_mask
from tollbooth.catalog.snapshot import Catalog, Snapshot
from tollbooth.db import Database, versions
from tollbooth.db.models import Price
from tollbooth.db.versions import Versions
from tollbooth.deps import Deps
from tollbooth.provider.client import StripeProvider
from tollbooth.rpc.servicer import R, Servicer, contract, idempotency_scope, request_fingerprint

# What a bearer caller should do with each price ("BUY", "MANAGE", "CURRENT" or ""): decided
# by the room that owns subscriptions and handed to this servicer at assembly (`tollbooth.app`);
# it reads the database only when it must. The versions are those the listing read at its
# start (with the caller's account), None where nothing is kept (SQLite).
PurchaseHints = Callable[[Database, Caller, Sequence[Price], Versions | None], list[str]]


def no_hints(
    db: Database, caller: Caller, prices: Sequence[Price], seen: Versions | None = None
) -> list[str]:
    return ["" for _ in prices]


# The request field a price's Stripe link is named by in errors.
LINK_FIELD = "price.stripe_price_id"


@contract(catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"])
class CatalogServicer(Servicer, catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(
        self, deps: Deps, hints: PurchaseHints = no_hints, lookup: links.Lookup | None = None
    ) -> None:
        super().__init__(deps)
        self.hints = hints
        # Where a new Stripe link is looked up (`links`): the environment's provider.
        self.lookup = lookup or StripeProvider.from_settings(deps.settings).linkable
        # Reads answer from memory where the snapshot can vouch for itself (PostgreSQL).
        self.snapshot = Snapshot(deps.db)

    def ListProducts(
        self, request: catalog_pb2.ListProductsRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.ListProductsResponse:
        catalog = self.snapshot.fresh()
        with self._reading(catalog) as session:
            page = service.list_products(
                session,
                current_caller.get(),
                page_size=request.page_size,
                page_token=request.page_token,
                include_inactive=request.include_inactive,
                catalog=catalog,
            )
            memo = catalog.converted if catalog is not None else None
            return convert.list_products_out(page.items, page.next_page_token, memo)

    def ListPrices(
        self, request: catalog_pb2.ListPricesRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.ListPricesResponse:
        caller = current_caller.get()
        # One statement: the catalog's version and, for a bearer caller's hints, its account's.
        seen = None
        if self.snapshot.enabled:
            seen = versions.read(self.deps.db, (caller.is_bearer and caller.account_id) or "")
        catalog = self.snapshot.fresh(seen.catalog) if seen is not None else None
        with self._reading(catalog) as session:
            page = service.list_prices(
                session,
                caller,
                request.product_id,
                page_size=request.page_size,
                page_token=request.page_token,
                include_inactive=request.include_inactive,
                catalog=catalog,
            )
        if caller.is_bearer and page.items:  # the hints need the account's holdings
            hints = self.hints(self.deps.db, caller, page.items, seen)
        else:
            hints = ["" for _ in page.items]
        memo = catalog.converted if catalog is not None else None
        return convert.list_prices_out(page.items, hints, page.next_page_token, memo)

    def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Product:
        # From the database, as GetPrice: one row by its key, fresh on every replica at once
        # (a product is no listing: nothing would say how old a kept copy is).
        with self.read() as session:
            return convert.product_out(service.get_product(session, request.product_id))

    def write(
        self,
        request: Message,
        response_type: type[R],
        effect: Callable[[Session], R],
        *,
        require_request_id: bool = False,
    ) -> R:
        """The base's write; then this process's snapshot is stale at once (read your own
        writes; the other processes hear PostgreSQL's notification)."""
        try:
            return super().write(
                request, response_type, effect, require_request_id=require_request_id
            )
        finally:
            self.snapshot.changed()

    def _check_link(
        self, request: Message, kind: str, given: str, stored: Callable[[Session], str | None]
    ) -> dict[str, Any] | None:
        """Look a new link up at the provider before the write's transaction opens (`links`);
        `stored(session)` reads the link the write would replace. A replay asks nothing.
        What the provider holds under the new link (None: no new link)."""
        if not given.strip() or self._replay(request):
            return None
        with self.read() as session:
            link = links.new_link(given, stored(session))
        field = f"{request.DESCRIPTOR.fields_by_name[kind].name}.stripe_{kind}_id"
        return links.check(self.lookup, kind, field, link)

    def _replay(self, request: Message) -> bool:
        key = getattr(request, "request_id", "")
        if not key:
            return False
        scope = idempotency_scope(current_caller.get(), request)
        with self.read() as session:
            return idempotency.stored(session, scope, key, request_fingerprint(request)) is not None

    def _reading(self, catalog: Catalog | None) -> AbstractContextManager[Session | None]:
        """No transaction when the in-memory catalog answers; else a read-only one."""
        return nullcontext() if catalog is not None else self.read()

    def CreateProduct(
        self, request: catalog_pb2.CreateProductRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Product:
        self._check_link(request, "product", request.product.stripe_product_id, _nothing)
        with _named_from_request("product", request):
            return self.write(
                request,
                catalog_pb2.Product,
                lambda session: convert.product_out(
                    service.create_product(session, convert.product_fields(request.product))
                ),
            )

    def UpdateProduct(
        self, request: catalog_pb2.UpdateProductRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Product:
        paths = list(request.update_mask.paths) or convert.populated_paths(request.product)
        if _names(paths, "stripe_product_id"):
            self._check_link(
                request,
                "product",
                request.product.stripe_product_id,
                lambda session: _stored(
                    lambda: (
                        service.get_product(session, request.product.product_id).stripe_product_id
                    )
                ),
            )
        with _named_from_request("product", request):
            return self.write(
                request,
                catalog_pb2.Product,
                lambda session: convert.product_out(
                    service.update_product(
                        session,
                        request.product.product_id,
                        convert.product_fields(request.product),
                        paths,
                    )
                ),
            )

    def ArchiveProduct(
        self, request: catalog_pb2.ArchiveProductRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Product:
        return self.write(
            request,
            catalog_pb2.Product,
            lambda session: convert.product_out(
                service.archive_product(session, request.product_id)
            ),
        )

    def GetPrice(
        self, request: catalog_pb2.GetPriceRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Price:
        with self.read() as session:
            return convert.price_out(service.get_price(session, request.price_id))

    def CreatePrice(
        self, request: catalog_pb2.CreatePriceRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Price:
        remote = self._check_link(request, "price", request.price.stripe_price_id, _nothing)
        with _named_from_request("price", request):
            return self.write(
                request,
                catalog_pb2.Price,
                lambda session: convert.price_out(
                    links.charging_as(
                        service.create_price(session, convert.price_fields(request.price)),
                        remote,
                        LINK_FIELD,
                    )
                ),
            )

    def UpdatePrice(
        self, request: catalog_pb2.UpdatePriceRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Price:
        paths = list(request.update_mask.paths)
        given_immutable: list[str] = []
        if not paths:  # AIP-134: the implied mask is what the request populated
            populated = convert.populated_paths(request.price)
            paths = [p for p in populated if p not in PRICE_IMMUTABLE]
            given_immutable = [p for p in populated if p in PRICE_IMMUTABLE]
        remote = None
        if _names(paths, "stripe_price_id"):
            remote = self._check_link(
                request,
                "price",
                request.price.stripe_price_id,
                lambda session: _stored(
                    lambda: service.get_price(session, request.price.price_id).stripe_price_id
                ),
            )
        with _named_from_request("price", request):
            return self.write(
                request,
                catalog_pb2.Price,
                lambda session: convert.price_out(
                    links.charging_as(
                        service.update_price(
                            session,
                            request.price.price_id,
                            convert.price_fields(request.price),
                            paths,
                            given_immutable,
                        ),
                        remote,
                        LINK_FIELD,
                    )
                ),
            )

    def ArchivePrice(
        self, request: catalog_pb2.ArchivePriceRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.Price:
        return self.write(
            request,
            catalog_pb2.Price,
            lambda session: convert.price_out(service.archive_price(session, request.price_id)),
        )


@contextmanager
def _named_from_request(resource: str, request: Message) -> Iterator[None]:
    """An error about a field of the request's `resource` names it from the request
    (`product.name`, `price.metadata['k']`), as the edge's checks do; the catalog's rules
    name it within the resource (`name`)."""
    try:
        yield
    except errors.DomainError as exc:
        field = exc.metadata.get("field", "")
        descriptor = request.DESCRIPTOR.fields_by_name[resource].message_type
        assert descriptor is not None
        if re.split(r"[.\[ ]", field, maxsplit=1)[0] in descriptor.fields_by_name:
            named = f"{resource}.{field}"
            exc.metadata["field"] = named
            if exc.message.startswith(field):
                exc.message = named + exc.message[len(field) :]
                exc.args = (exc.message,)
        raise


def _nothing(session: Session) -> None:
    return None


def _names(paths: Sequence[str], field: str) -> bool:
    """Whether an update mask names `field` ("*" names every mutable one)."""
    return is_full_mask(paths) or field in (p.strip() for p in paths)


def _stored(read: Callable[[], str | None]) -> str | None:
    """The Stripe link an update would replace; None when the row is not there (the write
    then answers NOT_FOUND as it does for any update of it)."""
    try:
        return read()
    except errors.DomainError:
        return None
