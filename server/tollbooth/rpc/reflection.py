"""Server reflection from the contract's descriptor set, comments included.

grpcio-reflection answers from the process's descriptor pool, whose files carry no source info
(so `grpcurl describe` prints no comments) and which cannot find a method by its full name
("Symbol not found: billing.v1.CreditService.GrantCredits"). This servicer answers from
`gateway/billing.binpb` instead (built by `make proto` with buf, which keeps source info): the
stored FileDescriptorProtos go out as they are, and every symbol (service, method, message,
field, enum, enum value, extension) is indexed to its file. Files outside the set (health,
reflection itself) fall back to the default pool. Only the contract's files (`billing/`) and
what they import are served: the set also holds the gateway's restatement of grpc.health.v1
(protos/gateway, Envoy's GET /v1/health), and health is answered from grpcio's own file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

SERVICE_NAME = reflection.SERVICE_NAME
CONTRACT_PREFIX = "billing/"


def _index_messages(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto], file: str, out: dict
) -> None:
    for msg in messages:
        name = f"{prefix}.{msg.name}" if prefix else msg.name
        out[name] = file
        for field in msg.field:
            out[f"{name}.{field.name}"] = file
        for ext in msg.extension:
            out[f"{name}.{ext.name}"] = file
        for oneof in msg.oneof_decl:
            out[f"{name}.{oneof.name}"] = file
        _index_enums(name, msg.enum_type, file, out)
        _index_messages(name, msg.nested_type, file, out)


def _index_enums(
    prefix: str, enums: Iterable[descriptor_pb2.EnumDescriptorProto], file: str, out: dict
) -> None:
    for enum in enums:
        name = f"{prefix}.{enum.name}" if prefix else enum.name
        out[name] = file
        for value in enum.value:
            # Enum values are scoped like siblings of their enum (C++ scoping).
            out[f"{prefix}.{value.name}" if prefix else value.name] = file
            out[f"{name}.{value.name}"] = file


class DescriptorSet:
    """The contract's files of a FileDescriptorSet (and their imports) by name, and the file
    of every symbol in them."""

    def __init__(self, data: bytes) -> None:
        every = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}
        self.files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        stack = [name for name in every if name.startswith(CONTRACT_PREFIX)]
        while stack:
            name = stack.pop()
            if name in self.files or name not in every:
                continue
            self.files[name] = every[name]
            stack.extend(every[name].dependency)
        fds = [every[name] for name in every if name in self.files]
        for f in fds:
            _drop_json_names(f.message_type)
        self.symbols: dict[str, str] = {}
        self.extensions: dict[tuple[str, int], str] = {}
        for f in fds:
            pkg = f.package
            _index_messages(pkg, f.message_type, f.name, self.symbols)
            _index_enums(pkg, f.enum_type, f.name, self.symbols)
            for ext in f.extension:
                self.symbols[f"{pkg}.{ext.name}" if pkg else ext.name] = f.name
                self.extensions[(ext.extendee.lstrip("."), ext.number)] = f.name
            for svc in f.service:
                service = f"{pkg}.{svc.name}" if pkg else svc.name
                self.symbols[service] = f.name
                for method in svc.method:
                    self.symbols[f"{service}.{method.name}"] = f.name
            for msg_ext in _nested_extensions(f.message_type):
                self.extensions[(msg_ext.extendee.lstrip("."), msg_ext.number)] = f.name

    @classmethod
    def load(cls, path: Path) -> DescriptorSet:
        return cls(path.read_bytes())

    def closure(self, name: str) -> list[bytes]:
        """The file `name` then every file it imports, transitively, serialized."""
        out: list[bytes] = []
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.files:
                continue
            seen.add(current)
            proto = self.files[current]
            out.append(proto.SerializeToString())
            stack.extend(reversed(proto.dependency))
        return out


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """Clear buf's json_name so grpcurl prints proto field names (snake_case), as the REST
    surface does and as grpcio's own reflection did."""
    for msg in messages:
        for field in msg.field:
            field.ClearField("json_name")
        _drop_json_names(msg.nested_type)


def _nested_extensions(
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterable[descriptor_pb2.FieldDescriptorProto]:
    for msg in messages:
        yield from msg.extension
        yield from _nested_extensions(msg.nested_type)


class ReflectionServicer(reflection.ReflectionServicer):
    """grpcio's servicer, answering from a DescriptorSet first."""

    def __init__(self, service_names: Iterable[str], descriptors: DescriptorSet) -> None:
        super().__init__(list(service_names))
        self._set = descriptors

    def _answer(self, request, name: str):  # type: ignore[no-untyped-def]
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=self._set.closure(name)
            ),
            original_request=request,
        )

    def _file_by_filename(self, request, filename):  # type: ignore[no-untyped-def]
        if filename in self._set.files:
            return self._answer(request, filename)
        return super()._file_by_filename(request, filename)

    def _file_containing_symbol(self, request, fully_qualified_name):  # type: ignore[no-untyped-def]
        name = fully_qualified_name.lstrip(".")
        if name in self._set.symbols:
            return self._answer(request, self._set.symbols[name])
        return super()._file_containing_symbol(request, fully_qualified_name)

    def _file_containing_extension(self, request, containing_type, extension_number):  # type: ignore[no-untyped-def]
        key = (containing_type.lstrip("."), extension_number)
        if key in self._set.extensions:
            return self._answer(request, self._set.extensions[key])
        return super()._file_containing_extension(request, containing_type, extension_number)


def enable(service_names: Iterable[str], server: grpc.Server, descriptor_set: Path) -> None:
    """Serve reflection on `server`: from `descriptor_set` when it exists, else grpcio's own."""
    names = [*service_names, SERVICE_NAME]
    if not descriptor_set.exists():
        reflection.enable_server_reflection(names, server)
        return
    servicer = ReflectionServicer(names, DescriptorSet.load(descriptor_set))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
