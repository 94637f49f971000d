"""Auth requirements, read once from the `(billing.v1.auth)` method options."""

from __future__ import annotations

from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from billing.v1 import (
    account_pb2,
    catalog_pb2,
    checkout_pb2,
    credit_pb2,
    customer_pb2,
    entitlement_pb2,
    notification_pb2,
    options_pb2,
    payment_pb2,
    token_pb2,
    usage_pb2,
    webhook_pb2,
)
from tollbooth.auth.caller import AuthRequirement

CONTRACT_FILES: tuple[FileDescriptor, ...] = (
    token_pb2.DESCRIPTOR,
    catalog_pb2.DESCRIPTOR,
    checkout_pb2.DESCRIPTOR,
    payment_pb2.DESCRIPTOR,
    credit_pb2.DESCRIPTOR,
    usage_pb2.DESCRIPTOR,
    webhook_pb2.DESCRIPTOR,
    account_pb2.DESCRIPTOR,
    customer_pb2.DESCRIPTOR,
    entitlement_pb2.DESCRIPTOR,
    notification_pb2.DESCRIPTOR,
)

# Standard services anyone on the network may call.
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def contract_services() -> list[ServiceDescriptor]:
    return [svc for f in CONTRACT_FILES for svc in f.services_by_name.values()]


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def load_requirements() -> dict[str, AuthRequirement]:
    """Method path -> requirement. A contract method without a rule is an error at start."""
    rules: dict[str, AuthRequirement] = {}
    for service in contract_services():
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(options_pb2.auth):
                raise RuntimeError(f"{method.full_name} declares no (billing.v1.auth) rule")
            rule = options.Extensions[options_pb2.auth]
            if not (rule.service_key or rule.bearer):
                raise RuntimeError(f"{method.full_name} admits nobody")
            rules[method_path(service, method.name)] = AuthRequirement(
                service_key=rule.service_key, bearer=rule.bearer, bearer_scope=rule.bearer_scope
            )
    return rules
