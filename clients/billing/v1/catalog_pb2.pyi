import datetime

from billing.v1 import options_pb2 as _options_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRICE_TYPE_UNSPECIFIED: _ClassVar[PriceType]
    PRICE_TYPE_ONE_TIME: _ClassVar[PriceType]
    PRICE_TYPE_RECURRING: _ClassVar[PriceType]

class RecurringInterval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECURRING_INTERVAL_UNSPECIFIED: _ClassVar[RecurringInterval]
    RECURRING_INTERVAL_DAY: _ClassVar[RecurringInterval]
    RECURRING_INTERVAL_WEEK: _ClassVar[RecurringInterval]
    RECURRING_INTERVAL_MONTH: _ClassVar[RecurringInterval]
    RECURRING_INTERVAL_YEAR: _ClassVar[RecurringInterval]

class PurchaseHint(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURCHASE_HINT_UNSPECIFIED: _ClassVar[PurchaseHint]
    PURCHASE_HINT_BUY: _ClassVar[PurchaseHint]
    PURCHASE_HINT_MANAGE: _ClassVar[PurchaseHint]
    PURCHASE_HINT_CURRENT: _ClassVar[PurchaseHint]
PRICE_TYPE_UNSPECIFIED: PriceType
PRICE_TYPE_ONE_TIME: PriceType
PRICE_TYPE_RECURRING: PriceType
RECURRING_INTERVAL_UNSPECIFIED: RecurringInterval
RECURRING_INTERVAL_DAY: RecurringInterval
RECURRING_INTERVAL_WEEK: RecurringInterval
RECURRING_INTERVAL_MONTH: RecurringInterval
RECURRING_INTERVAL_YEAR: RecurringInterval
PURCHASE_HINT_UNSPECIFIED: PurchaseHint
PURCHASE_HINT_BUY: PurchaseHint
PURCHASE_HINT_MANAGE: PurchaseHint
PURCHASE_HINT_CURRENT: PurchaseHint

class Product(_message.Message):
    __slots__ = ("product_id", "name", "description", "active", "position", "stripe_product_id", "metadata", "entitlements", "create_time", "update_time", "key")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    name: str
    description: str
    active: bool
    position: int
    stripe_product_id: str
    metadata: _containers.ScalarMap[str, str]
    entitlements: _containers.RepeatedCompositeFieldContainer[Entitlement]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    key: str
    def __init__(self, product_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., active: _Optional[bool] = ..., position: _Optional[int] = ..., stripe_product_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., entitlements: _Optional[_Iterable[_Union[Entitlement, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class Recurring(_message.Message):
    __slots__ = ("interval", "interval_count")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    interval: RecurringInterval
    interval_count: int
    def __init__(self, interval: _Optional[_Union[RecurringInterval, str]] = ..., interval_count: _Optional[int] = ...) -> None: ...

class CreditGrantSpec(_message.Message):
    __slots__ = ("credit_type", "amount", "on_purchase", "on_renewal", "expires_after_seconds", "priority")
    CREDIT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ON_PURCHASE_FIELD_NUMBER: _ClassVar[int]
    ON_RENEWAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    credit_type: str
    amount: str
    on_purchase: bool
    on_renewal: bool
    expires_after_seconds: int
    priority: int
    def __init__(self, credit_type: _Optional[str] = ..., amount: _Optional[str] = ..., on_purchase: _Optional[bool] = ..., on_renewal: _Optional[bool] = ..., expires_after_seconds: _Optional[int] = ..., priority: _Optional[int] = ...) -> None: ...

class Entitlement(_message.Message):
    __slots__ = ("feature", "value")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: str
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("price_id", "product_id", "currency", "unit_amount", "type", "recurring", "lookup_key", "stripe_price_id", "stackable", "subscription_group", "credit_grants", "entitlements", "active", "position", "nickname", "metadata", "hint", "create_time", "update_time")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    UNIT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RECURRING_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    STACKABLE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_GROUP_FIELD_NUMBER: _ClassVar[int]
    CREDIT_GRANTS_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    price_id: str
    product_id: str
    currency: str
    unit_amount: int
    type: PriceType
    recurring: Recurring
    lookup_key: str
    stripe_price_id: str
    stackable: bool
    subscription_group: str
    credit_grants: _containers.RepeatedCompositeFieldContainer[CreditGrantSpec]
    entitlements: _containers.RepeatedCompositeFieldContainer[Entitlement]
    active: bool
    position: int
    nickname: str
    metadata: _containers.ScalarMap[str, str]
    hint: PurchaseHint
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, price_id: _Optional[str] = ..., product_id: _Optional[str] = ..., currency: _Optional[str] = ..., unit_amount: _Optional[int] = ..., type: _Optional[_Union[PriceType, str]] = ..., recurring: _Optional[_Union[Recurring, _Mapping]] = ..., lookup_key: _Optional[str] = ..., stripe_price_id: _Optional[str] = ..., stackable: _Optional[bool] = ..., subscription_group: _Optional[str] = ..., credit_grants: _Optional[_Iterable[_Union[CreditGrantSpec, _Mapping]]] = ..., entitlements: _Optional[_Iterable[_Union[Entitlement, _Mapping]]] = ..., active: _Optional[bool] = ..., position: _Optional[int] = ..., nickname: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., hint: _Optional[_Union[PurchaseHint, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_inactive")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_inactive: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_inactive: _Optional[bool] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListPricesRequest(_message.Message):
    __slots__ = ("product_id", "page_size", "page_token", "include_inactive")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    page_size: int
    page_token: str
    include_inactive: bool
    def __init__(self, product_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_inactive: _Optional[bool] = ...) -> None: ...

class ListPricesResponse(_message.Message):
    __slots__ = ("prices", "next_page_token")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[Price]
    next_page_token: str
    def __init__(self, prices: _Optional[_Iterable[_Union[Price, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class CreateProductRequest(_message.Message):
    __slots__ = ("product", "request_id")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    product: Product
    request_id: str
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateProductRequest(_message.Message):
    __slots__ = ("product", "update_mask", "request_id")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    product: Product
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ArchiveProductRequest(_message.Message):
    __slots__ = ("product_id", "request_id")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    request_id: str
    def __init__(self, product_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetPriceRequest(_message.Message):
    __slots__ = ("price_id",)
    PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    price_id: str
    def __init__(self, price_id: _Optional[str] = ...) -> None: ...

class CreatePriceRequest(_message.Message):
    __slots__ = ("price", "request_id")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    price: Price
    request_id: str
    def __init__(self, price: _Optional[_Union[Price, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdatePriceRequest(_message.Message):
    __slots__ = ("price", "update_mask", "request_id")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    price: Price
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, price: _Optional[_Union[Price, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ArchivePriceRequest(_message.Message):
    __slots__ = ("price_id", "request_id")
    PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    price_id: str
    request_id: str
    def __init__(self, price_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
