"""Routing by environment: one server answers every environment served
(`tollbooth.environments`), each call handled by the servicers of the environment whose
service key or token authenticated it.

The interceptors (logging, errors, auth, open streams, rate limits) are shared; the
authenticator says which environment a credential belongs to (`Caller.environment`), and the
one handler registered for each service (`EnvironmentRouter`) hands the call to that
environment's servicer, which holds that environment's settings, database and token codec.
With one environment nothing is routed: the servicers are registered as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from tollbooth.auth.caller import Authenticator, Credentials, current_caller
from tollbooth.deps import Deps
from tollbooth.rpc.servicer import Servicer


def authenticator(deps: Deps) -> Authenticator:
    """Credentials of every environment `deps` serves, each known as its environment's."""
    return Authenticator(
        deps.settings.service_keys,
        deps.codec,
        environment=deps.environment,
        others=[
            Credentials(name, other.settings.service_keys, other.codec)
            for name, other in deps.others.items()
        ],
    )


class EnvironmentRouter:
    """One service's servicers, one per environment, registered as one: each RPC goes to the
    servicer of the caller's environment (the first one for a call no credential named)."""

    def __init__(self, by_environment: Mapping[str, Servicer]) -> None:
        self._by_environment = dict(by_environment)
        self._default = next(iter(self._by_environment))
        first = self._by_environment[self._default]
        self.service_descriptor: ServiceDescriptor = first.service_descriptor
        self.unbuilt_methods = first.unbuilt_methods
        if any(
            s.service_descriptor is not self.service_descriptor for s in by_environment.values()
        ):
            raise ValueError("an environment router routes one service")

    def __getattr__(self, name: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        if name.startswith("_") or name not in self.service_descriptor.methods_by_name:
            raise AttributeError(name)
        behaviours = {env: getattr(s, name) for env, s in self._by_environment.items()}

        def route(request: Any, context: grpc.ServicerContext) -> Any:
            environment = current_caller.get().environment or self._default
            return behaviours[environment](request, context)

        route.__name__ = name
        return route


def route(by_environment: Mapping[str, Sequence[Servicer]]) -> list[Servicer | EnvironmentRouter]:
    """What the server registers: the servicers of the one environment as they are, or one
    router per service over every environment's servicers (the same services, in order)."""
    if len(by_environment) == 1:
        return list(next(iter(by_environment.values())))
    lists = list(by_environment.values())
    if len({len(servicers) for servicers in lists}) != 1:
        raise ValueError("every environment serves the same services")
    return [
        EnvironmentRouter(dict(zip(by_environment, column, strict=True)))
        for column in zip(*lists, strict=True)
    ]
