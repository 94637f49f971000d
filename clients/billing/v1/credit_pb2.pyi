import datetime

from billing.v1 import options_pb2 as _options_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GrantState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANT_STATE_UNSPECIFIED: _ClassVar[GrantState]
    GRANT_STATE_ACTIVE: _ClassVar[GrantState]
    GRANT_STATE_DEPLETED: _ClassVar[GrantState]
    GRANT_STATE_EXPIRED: _ClassVar[GrantState]
    GRANT_STATE_VOIDED: _ClassVar[GrantState]

class LedgerEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_ENTRY_KIND_UNSPECIFIED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_GRANT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_DEBIT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_EXPIRATION: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_VOID: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_RESERVATION: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_RELEASE: _ClassVar[LedgerEntryKind]

class ReservationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATE_UNSPECIFIED: _ClassVar[ReservationState]
    RESERVATION_STATE_HELD: _ClassVar[ReservationState]
    RESERVATION_STATE_COMMITTED: _ClassVar[ReservationState]
    RESERVATION_STATE_RELEASED: _ClassVar[ReservationState]
    RESERVATION_STATE_EXPIRED: _ClassVar[ReservationState]
GRANT_STATE_UNSPECIFIED: GrantState
GRANT_STATE_ACTIVE: GrantState
GRANT_STATE_DEPLETED: GrantState
GRANT_STATE_EXPIRED: GrantState
GRANT_STATE_VOIDED: GrantState
LEDGER_ENTRY_KIND_UNSPECIFIED: LedgerEntryKind
LEDGER_ENTRY_KIND_GRANT: LedgerEntryKind
LEDGER_ENTRY_KIND_DEBIT: LedgerEntryKind
LEDGER_ENTRY_KIND_EXPIRATION: LedgerEntryKind
LEDGER_ENTRY_KIND_VOID: LedgerEntryKind
LEDGER_ENTRY_KIND_RESERVATION: LedgerEntryKind
LEDGER_ENTRY_KIND_RELEASE: LedgerEntryKind
RESERVATION_STATE_UNSPECIFIED: ReservationState
RESERVATION_STATE_HELD: ReservationState
RESERVATION_STATE_COMMITTED: ReservationState
RESERVATION_STATE_RELEASED: ReservationState
RESERVATION_STATE_EXPIRED: ReservationState

class CreditGrant(_message.Message):
    __slots__ = ("grant_id", "billing_account_id", "credit_type", "amount", "remaining", "reason", "priority", "expire_time", "state", "request_id", "create_time", "metadata", "held")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    billing_account_id: str
    credit_type: str
    amount: str
    remaining: str
    reason: str
    priority: int
    expire_time: _timestamp_pb2.Timestamp
    state: GrantState
    request_id: str
    create_time: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    held: str
    def __init__(self, grant_id: _Optional[str] = ..., billing_account_id: _Optional[str] = ..., credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., remaining: _Optional[str] = ..., reason: _Optional[str] = ..., priority: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[GrantState, str]] = ..., request_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., held: _Optional[str] = ...) -> None: ...

class GrantCreditsRequest(_message.Message):
    __slots__ = ("account", "credit_type", "amount", "reason", "priority", "expire_time", "request_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    account: str
    credit_type: str
    amount: str
    reason: str
    priority: int
    expire_time: _timestamp_pb2.Timestamp
    request_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, account: _Optional[str] = ..., credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., reason: _Optional[str] = ..., priority: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account", "type")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    account: str
    type: str
    def __init__(self, account: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class CreditBalance(_message.Message):
    __slots__ = ("billing_account_id", "credit_type", "balance", "reserved", "as_of_time", "overage")
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TIME_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_FIELD_NUMBER: _ClassVar[int]
    billing_account_id: str
    credit_type: str
    balance: str
    reserved: str
    as_of_time: _timestamp_pb2.Timestamp
    overage: str
    def __init__(self, billing_account_id: _Optional[str] = ..., credit_type: _Optional[str] = ..., balance: _Optional[str] = ..., reserved: _Optional[str] = ..., as_of_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., overage: _Optional[str] = ...) -> None: ...

class CheckAvailabilityRequest(_message.Message):
    __slots__ = ("account", "type", "required")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    account: str
    type: str
    required: str
    def __init__(self, account: _Optional[str] = ..., type: _Optional[str] = ..., required: _Optional[str] = ...) -> None: ...

class CheckAvailabilityResponse(_message.Message):
    __slots__ = ("available", "balance", "required", "shortfall")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_FIELD_NUMBER: _ClassVar[int]
    available: bool
    balance: str
    required: str
    shortfall: str
    def __init__(self, available: _Optional[bool] = ..., balance: _Optional[str] = ..., required: _Optional[str] = ..., shortfall: _Optional[str] = ...) -> None: ...

class DebitCreditsRequest(_message.Message):
    __slots__ = ("account", "credit_type", "amount", "reason", "request_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    account: str
    credit_type: str
    amount: str
    reason: str
    request_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, account: _Optional[str] = ..., credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GrantAllocation(_message.Message):
    __slots__ = ("grant_id", "amount")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    amount: str
    def __init__(self, grant_id: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class CreditDebit(_message.Message):
    __slots__ = ("debit_id", "billing_account_id", "credit_type", "amount", "balance_after", "reason", "request_id", "allocations", "create_time")
    DEBIT_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    debit_id: str
    billing_account_id: str
    credit_type: str
    amount: str
    balance_after: str
    reason: str
    request_id: str
    allocations: _containers.RepeatedCompositeFieldContainer[GrantAllocation]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, debit_id: _Optional[str] = ..., billing_account_id: _Optional[str] = ..., credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., balance_after: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., allocations: _Optional[_Iterable[_Union[GrantAllocation, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("entry_id", "billing_account_id", "credit_type", "kind", "amount", "balance_after", "grant_id", "debit_id", "reason", "create_time", "reservation_id", "request_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    billing_account_id: str
    credit_type: str
    kind: LedgerEntryKind
    amount: str
    balance_after: str
    grant_id: str
    debit_id: str
    reason: str
    create_time: _timestamp_pb2.Timestamp
    reservation_id: str
    request_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, entry_id: _Optional[str] = ..., billing_account_id: _Optional[str] = ..., credit_type: _Optional[str] = ..., kind: _Optional[_Union[LedgerEntryKind, str]] = ..., amount: _Optional[str] = ..., balance_after: _Optional[str] = ..., grant_id: _Optional[str] = ..., debit_id: _Optional[str] = ..., reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reservation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListLedgerEntriesRequest(_message.Message):
    __slots__ = ("account", "credit_type", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: str
    credit_type: str
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[str] = ..., credit_type: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLedgerEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("account", "credit_type", "include_inactive", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: str
    credit_type: str
    include_inactive: bool
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[str] = ..., credit_type: _Optional[str] = ..., include_inactive: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "next_page_token")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[CreditGrant]
    next_page_token: str
    def __init__(self, grants: _Optional[_Iterable[_Union[CreditGrant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetGrantRequest(_message.Message):
    __slots__ = ("account", "grant_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    grant_id: str
    def __init__(self, account: _Optional[str] = ..., grant_id: _Optional[str] = ...) -> None: ...

class GetDebitRequest(_message.Message):
    __slots__ = ("account", "debit_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    debit_id: str
    def __init__(self, account: _Optional[str] = ..., debit_id: _Optional[str] = ...) -> None: ...

class VoidGrantRequest(_message.Message):
    __slots__ = ("account", "grant_id", "reason", "request_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    grant_id: str
    reason: str
    request_id: str
    def __init__(self, account: _Optional[str] = ..., grant_id: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreditReservation(_message.Message):
    __slots__ = ("reservation_id", "billing_account_id", "credit_type", "amount", "committed_amount", "state", "expire_time", "request_id", "create_time", "reason", "debit_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    billing_account_id: str
    credit_type: str
    amount: str
    committed_amount: str
    state: ReservationState
    expire_time: _timestamp_pb2.Timestamp
    request_id: str
    create_time: _timestamp_pb2.Timestamp
    reason: str
    debit_id: str
    def __init__(self, reservation_id: _Optional[str] = ..., billing_account_id: _Optional[str] = ..., credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., committed_amount: _Optional[str] = ..., state: _Optional[_Union[ReservationState, str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., debit_id: _Optional[str] = ...) -> None: ...

class ReserveCreditsRequest(_message.Message):
    __slots__ = ("account", "credit_type", "amount", "ttl_seconds", "reason", "request_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    credit_type: str
    amount: str
    ttl_seconds: int
    reason: str
    request_id: str
    def __init__(self, account: _Optional[str] = ..., credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("account", "reservation_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    reservation_id: str
    def __init__(self, account: _Optional[str] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class CommitReservationRequest(_message.Message):
    __slots__ = ("account", "reservation_id", "amount", "request_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    reservation_id: str
    amount: str
    request_id: str
    def __init__(self, account: _Optional[str] = ..., reservation_id: _Optional[str] = ..., amount: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ReleaseReservationRequest(_message.Message):
    __slots__ = ("account", "reservation_id", "request_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    reservation_id: str
    request_id: str
    def __init__(self, account: _Optional[str] = ..., reservation_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
