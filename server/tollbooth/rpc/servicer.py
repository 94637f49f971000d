"""Servicer helpers: unbuilt methods answer UNIMPLEMENTED (after auth) with a stable reason."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from tollbooth.errors import not_implemented


def _unbuilt(full_name: str) -> Any:
    def method(self: Any, request: Any, context: Any) -> Any:
        raise not_implemented(full_name)

    method.__name__ = full_name.rsplit(".", 1)[-1]
    method.__unbuilt__ = True  # type: ignore[attr-defined]
    return method


def contract(service: ServiceDescriptor):  # type: ignore[no-untyped-def]
    """Class decorator: every RPC of `service` the class does not define answers UNIMPLEMENTED."""

    def apply(cls: type) -> type:
        generated = cls.__mro__[-2]  # the generated *Servicer base, just above object
        unbuilt = []
        for method in service.methods:
            own = any(method.name in vars(k) for k in cls.__mro__ if k not in (generated, object))
            if not own:
                setattr(cls, method.name, _unbuilt(method.full_name))
                unbuilt.append(method.name)
        cls.unbuilt_methods = tuple(unbuilt)  # type: ignore[attr-defined]
        cls.service_descriptor = service  # type: ignore[attr-defined]
        return cls

    return apply
