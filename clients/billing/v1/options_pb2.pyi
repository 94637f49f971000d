from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
AUTH_FIELD_NUMBER: _ClassVar[int]
auth: _descriptor.FieldDescriptor
MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
max_length: _descriptor.FieldDescriptor
VALIDATED_PER_ITEM_FIELD_NUMBER: _ClassVar[int]
validated_per_item: _descriptor.FieldDescriptor

class AuthRule(_message.Message):
    __slots__ = ("service_key", "bearer", "bearer_scope")
    SERVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    BEARER_FIELD_NUMBER: _ClassVar[int]
    BEARER_SCOPE_FIELD_NUMBER: _ClassVar[int]
    service_key: bool
    bearer: bool
    bearer_scope: str
    def __init__(self, service_key: _Optional[bool] = ..., bearer: _Optional[bool] = ..., bearer_scope: _Optional[str] = ...) -> None: ...
