import datetime

from billing.v1 import catalog_pb2 as _catalog_pb2
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

class CheckoutSessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKOUT_SESSION_STATUS_UNSPECIFIED: _ClassVar[CheckoutSessionStatus]
    CHECKOUT_SESSION_STATUS_OPEN: _ClassVar[CheckoutSessionStatus]
    CHECKOUT_SESSION_STATUS_COMPLETE: _ClassVar[CheckoutSessionStatus]
    CHECKOUT_SESSION_STATUS_EXPIRED: _ClassVar[CheckoutSessionStatus]

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_UNPAID: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PAID: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_NO_PAYMENT_REQUIRED: _ClassVar[PaymentStatus]

class CheckoutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKOUT_MODE_UNSPECIFIED: _ClassVar[CheckoutMode]
    CHECKOUT_MODE_PAYMENT: _ClassVar[CheckoutMode]
    CHECKOUT_MODE_SUBSCRIPTION: _ClassVar[CheckoutMode]

class SubscriptionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_STATE_UNSPECIFIED: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_INCOMPLETE: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_TRIALING: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_ACTIVE: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_PAST_DUE: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_UNPAID: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_CANCELED: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_INCOMPLETE_EXPIRED: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_PAUSED: _ClassVar[SubscriptionState]
CHECKOUT_SESSION_STATUS_UNSPECIFIED: CheckoutSessionStatus
CHECKOUT_SESSION_STATUS_OPEN: CheckoutSessionStatus
CHECKOUT_SESSION_STATUS_COMPLETE: CheckoutSessionStatus
CHECKOUT_SESSION_STATUS_EXPIRED: CheckoutSessionStatus
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_UNPAID: PaymentStatus
PAYMENT_STATUS_PAID: PaymentStatus
PAYMENT_STATUS_NO_PAYMENT_REQUIRED: PaymentStatus
CHECKOUT_MODE_UNSPECIFIED: CheckoutMode
CHECKOUT_MODE_PAYMENT: CheckoutMode
CHECKOUT_MODE_SUBSCRIPTION: CheckoutMode
SUBSCRIPTION_STATE_UNSPECIFIED: SubscriptionState
SUBSCRIPTION_STATE_INCOMPLETE: SubscriptionState
SUBSCRIPTION_STATE_TRIALING: SubscriptionState
SUBSCRIPTION_STATE_ACTIVE: SubscriptionState
SUBSCRIPTION_STATE_PAST_DUE: SubscriptionState
SUBSCRIPTION_STATE_UNPAID: SubscriptionState
SUBSCRIPTION_STATE_CANCELED: SubscriptionState
SUBSCRIPTION_STATE_INCOMPLETE_EXPIRED: SubscriptionState
SUBSCRIPTION_STATE_PAUSED: SubscriptionState

class CheckoutItem(_message.Message):
    __slots__ = ("catalog_price_id", "lookup_key", "quantity")
    CATALOG_PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    catalog_price_id: str
    lookup_key: str
    quantity: int
    def __init__(self, catalog_price_id: _Optional[str] = ..., lookup_key: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class CheckoutSession(_message.Message):
    __slots__ = ("checkout_session_id", "billing_account_id", "status", "payment_status", "mode", "url", "items", "amount_total", "currency", "client_reference", "stripe_checkout_session_id", "create_time", "expire_time")
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    STRIPE_CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    checkout_session_id: str
    billing_account_id: str
    status: CheckoutSessionStatus
    payment_status: PaymentStatus
    mode: CheckoutMode
    url: str
    items: _containers.RepeatedCompositeFieldContainer[CheckoutItem]
    amount_total: int
    currency: str
    client_reference: str
    stripe_checkout_session_id: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, checkout_session_id: _Optional[str] = ..., billing_account_id: _Optional[str] = ..., status: _Optional[_Union[CheckoutSessionStatus, str]] = ..., payment_status: _Optional[_Union[PaymentStatus, str]] = ..., mode: _Optional[_Union[CheckoutMode, str]] = ..., url: _Optional[str] = ..., items: _Optional[_Iterable[_Union[CheckoutItem, _Mapping]]] = ..., amount_total: _Optional[int] = ..., currency: _Optional[str] = ..., client_reference: _Optional[str] = ..., stripe_checkout_session_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCheckoutSessionRequest(_message.Message):
    __slots__ = ("account", "items", "success_url", "cancel_url", "client_reference", "request_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_URL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_URL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    items: _containers.RepeatedCompositeFieldContainer[CheckoutItem]
    success_url: str
    cancel_url: str
    client_reference: str
    request_id: str
    def __init__(self, account: _Optional[str] = ..., items: _Optional[_Iterable[_Union[CheckoutItem, _Mapping]]] = ..., success_url: _Optional[str] = ..., cancel_url: _Optional[str] = ..., client_reference: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PortalRedirect(_message.Message):
    __slots__ = ("url", "conflicting_subscription_id")
    URL_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    url: str
    conflicting_subscription_id: str
    def __init__(self, url: _Optional[str] = ..., conflicting_subscription_id: _Optional[str] = ...) -> None: ...

class CreateCheckoutSessionResponse(_message.Message):
    __slots__ = ("url", "session", "portal")
    URL_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PORTAL_FIELD_NUMBER: _ClassVar[int]
    url: str
    session: CheckoutSession
    portal: PortalRedirect
    def __init__(self, url: _Optional[str] = ..., session: _Optional[_Union[CheckoutSession, _Mapping]] = ..., portal: _Optional[_Union[PortalRedirect, _Mapping]] = ...) -> None: ...

class GetCheckoutSessionRequest(_message.Message):
    __slots__ = ("checkout_session_id",)
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    checkout_session_id: str
    def __init__(self, checkout_session_id: _Optional[str] = ...) -> None: ...

class PortalOptions(_message.Message):
    __slots__ = ("allow_cancel", "show_invoices", "allow_payment_method_update", "allow_plan_change")
    ALLOW_CANCEL_FIELD_NUMBER: _ClassVar[int]
    SHOW_INVOICES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PAYMENT_METHOD_UPDATE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PLAN_CHANGE_FIELD_NUMBER: _ClassVar[int]
    allow_cancel: bool
    show_invoices: bool
    allow_payment_method_update: bool
    allow_plan_change: bool
    def __init__(self, allow_cancel: _Optional[bool] = ..., show_invoices: _Optional[bool] = ..., allow_payment_method_update: _Optional[bool] = ..., allow_plan_change: _Optional[bool] = ...) -> None: ...

class CreatePortalSessionRequest(_message.Message):
    __slots__ = ("account", "return_url", "options", "request_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    return_url: str
    options: PortalOptions
    request_id: str
    def __init__(self, account: _Optional[str] = ..., return_url: _Optional[str] = ..., options: _Optional[_Union[PortalOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PortalSession(_message.Message):
    __slots__ = ("portal_session_id", "url", "return_url", "create_time")
    PORTAL_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    portal_session_id: str
    url: str
    return_url: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, portal_session_id: _Optional[str] = ..., url: _Optional[str] = ..., return_url: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetBillingStatusRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("subscription_id", "stripe_subscription_id", "price_id", "lookup_key", "subscription_group", "quantity", "state", "current_period_start_time", "current_period_end_time", "cancel_at_period_end", "cancel_time", "create_time")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    STRIPE_SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_GROUP_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PERIOD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_AT_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    stripe_subscription_id: str
    price_id: str
    lookup_key: str
    subscription_group: str
    quantity: int
    state: SubscriptionState
    current_period_start_time: _timestamp_pb2.Timestamp
    current_period_end_time: _timestamp_pb2.Timestamp
    cancel_at_period_end: bool
    cancel_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, subscription_id: _Optional[str] = ..., stripe_subscription_id: _Optional[str] = ..., price_id: _Optional[str] = ..., lookup_key: _Optional[str] = ..., subscription_group: _Optional[str] = ..., quantity: _Optional[int] = ..., state: _Optional[_Union[SubscriptionState, str]] = ..., current_period_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_at_period_end: _Optional[bool] = ..., cancel_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Purchase(_message.Message):
    __slots__ = ("purchase_id", "price_id", "lookup_key", "quantity", "amount_total", "currency", "checkout_session_id", "create_time")
    PURCHASE_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    purchase_id: str
    price_id: str
    lookup_key: str
    quantity: int
    amount_total: int
    currency: str
    checkout_session_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, purchase_id: _Optional[str] = ..., price_id: _Optional[str] = ..., lookup_key: _Optional[str] = ..., quantity: _Optional[int] = ..., amount_total: _Optional[int] = ..., currency: _Optional[str] = ..., checkout_session_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BillingStatus(_message.Message):
    __slots__ = ("billing_account_id", "plan", "plan_price_id", "state", "current_period_end_time", "cancel_at_period_end", "entitlements")
    BILLING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLAN_PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_AT_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENTS_FIELD_NUMBER: _ClassVar[int]
    billing_account_id: str
    plan: str
    plan_price_id: str
    state: SubscriptionState
    current_period_end_time: _timestamp_pb2.Timestamp
    cancel_at_period_end: bool
    entitlements: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.Entitlement]
    def __init__(self, billing_account_id: _Optional[str] = ..., plan: _Optional[str] = ..., plan_price_id: _Optional[str] = ..., state: _Optional[_Union[SubscriptionState, str]] = ..., current_period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_at_period_end: _Optional[bool] = ..., entitlements: _Optional[_Iterable[_Union[_catalog_pb2.Entitlement, _Mapping]]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("account", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: str
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    next_page_token: str
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListPurchasesRequest(_message.Message):
    __slots__ = ("account", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: str
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPurchasesResponse(_message.Message):
    __slots__ = ("purchases", "next_page_token")
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    purchases: _containers.RepeatedCompositeFieldContainer[Purchase]
    next_page_token: str
    def __init__(self, purchases: _Optional[_Iterable[_Union[Purchase, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
