from billing.v1 import options_pb2 as _options_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RecordStripeEventRequest(_message.Message):
    __slots__ = ("payload", "stripe_signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    STRIPE_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    stripe_signature: str
    def __init__(self, payload: _Optional[bytes] = ..., stripe_signature: _Optional[str] = ...) -> None: ...

class RecordStripeEventResponse(_message.Message):
    __slots__ = ("event_id", "duplicate")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    duplicate: bool
    def __init__(self, event_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...
