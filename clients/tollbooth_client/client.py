"""BillingClient: one channel, the five service stubs, a few typed shortcuts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message

from billing.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    checkout_pb2,
    checkout_pb2_grpc,
    credit_pb2,
    credit_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from tollbooth_client._interceptor import BillingInterceptor, Metadata

PACKAGE = "billing.v1"
_SERVICES = {
    "TokenService": ("token", token_pb2),
    "CatalogService": ("catalog", catalog_pb2),
    "CheckoutService": ("checkout", checkout_pb2),
    "CreditService": ("credit", credit_pb2),
    "UsageService": ("usage", usage_pb2),
}


class BillingClient:
    """A typed client for the billing gRPC API.

    Every call made through it, including calls on the raw stubs (`client.token`,
    `client.catalog`, `client.checkout`, `client.credit`, `client.usage`), carries the
    credential, gets `default_timeout` as its deadline unless given one, has an empty
    `request_id` filled with a uuid4 (so the server can deduplicate it), is retried with
    backoff only when the server is UNAVAILABLE (same `request_id` each time, so a retry
    cannot apply an effect twice), and raises `BillingError` with the server's stable reason.

    Backends pass `service_key`; a browser-equivalent caller passes `bearer_token` (see
    `with_bearer`). Pass `channel` to reuse a channel you manage (TLS, options, interceptors);
    the client then never closes it.
    """

    def __init__(
        self,
        target: str,
        *,
        service_key: str | None = None,
        bearer_token: str | None = None,
        default_timeout: float = 10.0,
        max_retries: int = 3,
        channel: grpc.Channel | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> None:
        if service_key and bearer_token:
            # The server refuses bearer tokens on service-key RPCs and vice versa, and a
            # call carrying both is the token's (seed 003's shape): the key would add
            # nothing but an environment check. Use two clients.
            raise ValueError("pass service_key or bearer_token, not both")
        if default_timeout <= 0:
            raise ValueError("default_timeout must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if channel is not None and channel_credentials is not None:
            raise ValueError("channel_credentials only apply to a channel the client creates")
        self.target = target
        self.default_timeout = default_timeout
        self.max_retries = max_retries
        self._backoff = (initial_backoff, max_backoff)
        self._service_key = service_key
        self._owns_channel = channel is None
        if channel is None:
            if channel_credentials is not None:
                channel = grpc.secure_channel(target, channel_credentials)
            else:
                channel = grpc.insecure_channel(target)
        self._raw_channel: grpc.Channel = channel
        auth: Metadata = ()
        if service_key:
            auth = (("x-api-key", service_key),)
        elif bearer_token:
            auth = (("authorization", f"Bearer {bearer_token}"),)
        self._interceptor = BillingInterceptor(
            auth,
            default_timeout=default_timeout,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
        )
        self.channel: grpc.Channel = grpc.intercept_channel(channel, self._interceptor)
        self.token = token_pb2_grpc.TokenServiceStub(self.channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channel)
        self.checkout = checkout_pb2_grpc.CheckoutServiceStub(self.channel)
        self.credit = credit_pb2_grpc.CreditServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)

    # -- lifecycle ---------------------------------------------------------------------------

    def with_bearer(self, token: str) -> BillingClient:
        """A client acting as the token's account, sharing this client's connection.

        A backend typically issues a token with its service key, then calls the browser-facing
        RPCs as that account without opening a second connection. Closing the returned client
        leaves the shared channel open; close this one when done.
        """
        initial, maximum = self._backoff
        return BillingClient(
            self.target,
            bearer_token=token,
            default_timeout=self.default_timeout,
            max_retries=self.max_retries,
            channel=self._raw_channel,
            initial_backoff=initial,
            max_backoff=maximum,
        )

    def close(self) -> None:
        """Close the channel if this client created it."""
        if self._owns_channel:
            self._raw_channel.close()

    def __enter__(self) -> BillingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "service_key" if self._service_key else "bearer" if self._interceptor.auth else None
        return f"BillingClient({self.target!r}, auth={kind})"

    # -- shortcuts ---------------------------------------------------------------------------

    def issue_token(
        self,
        principal_id: str,
        *,
        user_id: str = "",
        scopes: Iterable[str] = (),
        session_ttl_seconds: int = 0,
        email: str = "",
        name: str = "",
        timeout: float | None = None,
    ) -> token_pb2.IssueTokenResponse:
        """Map `principal_id` to its billing account (creating it on first use) and sign a token.

        Needs a service key. Empty `scopes` grants the server's default set.
        """
        request = token_pb2.IssueTokenRequest(
            principal_id=principal_id,
            user_id=user_id,
            scopes=list(scopes),
            session_ttl_seconds=session_ttl_seconds,
            email=email,
            name=name,
        )
        response: token_pb2.IssueTokenResponse = self.token.IssueToken(request, timeout=timeout)
        return response

    def list_products(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        include_inactive: bool = False,
        timeout: float | None = None,
    ) -> catalog_pb2.ListProductsResponse:
        """One page of products; follow `next_page_token` until it is empty."""
        request = catalog_pb2.ListProductsRequest(
            page_size=page_size, page_token=page_token, include_inactive=include_inactive
        )
        response: catalog_pb2.ListProductsResponse = self.catalog.ListProducts(
            request, timeout=timeout
        )
        return response

    def list_prices(
        self,
        product_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        include_inactive: bool = False,
        timeout: float | None = None,
    ) -> catalog_pb2.ListPricesResponse:
        """One page of a product's prices; with a bearer token each carries a purchase hint."""
        request = catalog_pb2.ListPricesRequest(
            product_id=product_id,
            page_size=page_size,
            page_token=page_token,
            include_inactive=include_inactive,
        )
        response: catalog_pb2.ListPricesResponse = self.catalog.ListPrices(request, timeout=timeout)
        return response

    def call(
        self,
        method: str,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Any:
        """Call any unary RPC by name, for RPCs without a shortcut yet.

        `method` may be `"CreditService.GetBalance"`, `"billing.v1.CreditService.GetBalance"`
        or the wire path `"/billing.v1.CreditService/GetBalance"`. The request type is checked
        here, so a wrong message fails locally instead of as an opaque server-side parse error.
        """
        service_name, method_name = _split_method(method)
        entry = _SERVICES.get(service_name)
        if entry is None:
            raise ValueError(f"unknown service {service_name!r} in {method!r}")
        attr, module = entry
        descriptor = module.DESCRIPTOR.services_by_name[service_name].methods_by_name.get(
            method_name
        )
        if descriptor is None:
            raise ValueError(f"{PACKAGE}.{service_name} has no method {method_name!r}")
        if descriptor.client_streaming or descriptor.server_streaming:
            raise ValueError(
                f"{descriptor.full_name} streams; call client.{attr}.{method_name} instead"
            )
        if request.DESCRIPTOR.full_name != descriptor.input_type.full_name:
            raise TypeError(
                f"{descriptor.full_name} takes {descriptor.input_type.full_name}, "
                f"not {request.DESCRIPTOR.full_name}"
            )
        stub = getattr(self, attr)
        return getattr(stub, method_name)(request, timeout=timeout, metadata=tuple(metadata))


def _split_method(method: str) -> tuple[str, str]:
    name = method.strip().lstrip("/").replace("/", ".")
    if name.startswith(PACKAGE + "."):
        name = name[len(PACKAGE) + 1 :]
    service, sep, rpc = name.rpartition(".")
    if not sep or not service or not rpc or "." in service:
        raise ValueError(f"method must look like 'Service.Method', got {method!r}")
    return service, rpc
