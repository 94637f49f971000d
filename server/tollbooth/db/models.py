"""SQLAlchemy models: the billing truth. Migrations in db/migrations mirror this file."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tollbooth.db.types import ExactDecimal, UnboundedDecimal, UTCDateTime, utcnow  # noqa: F401


class Base(DeclarativeBase):
    pass


class BillingAccount(Base):
    """One billing owner. principal_id -> id never changes once written."""

    __tablename__ = "billing_accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # Accounts as a resource (AccountService, CustomerService).
    attributes: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON, nullable=False, default=dict, server_default="{}"
    )
    description: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(40))
    archived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Bumped by each change the provider must learn; customer_version: the last it acknowledged.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    customer_version: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    # When DeleteCustomer deleted the provider customer (the account is archived with it).
    customer_deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_billing_accounts_email_lower", text("lower(email)"), "id"),)


class StripeEvent(Base):
    """The webhook inbox: every verified provider event, once, by its id."""

    __tablename__ = "stripe_events"

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    api_version: Mapped[str | None] = mapped_column(String(60))
    livemode: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    provider_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Store first, then apply: pending (stored, not applied yet), applied, ignored (nothing to
    # do, with the reason in last_error) or failed (retried at next_attempt_at while it is set).
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripe_events_due", "status", "next_attempt_at"),)


class Product(Base):
    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Stable handle, unique among all products (catalog as code matches on it).
    key: Mapped[str | None] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stripe_product_id: Mapped[str | None] = mapped_column(String(100))
    attributes: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON, nullable=False, default=dict
    )
    entitlements: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    __table_args__ = (
        Index("ix_products_order", "active", "position", "seq"),
        Index("uq_products_key", "key", unique=True),
    )


class Price(Base):
    __tablename__ = "prices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    unit_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    interval: Mapped[str | None] = mapped_column(String(8))
    interval_count: Mapped[int | None] = mapped_column(Integer)
    lookup_key: Mapped[str | None] = mapped_column(String(200))
    stripe_price_id: Mapped[str | None] = mapped_column(String(100))
    stackable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    subscription_group: Mapped[str | None] = mapped_column(String(200))
    credit_grants: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    entitlements: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    nickname: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON, nullable=False, default=dict
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    __table_args__ = (
        Index("ix_prices_order", "product_id", "active", "position", "seq"),
        Index(
            "uq_prices_active_lookup_key",
            "lookup_key",
            unique=True,
            sqlite_where=text("active AND lookup_key IS NOT NULL"),
            postgresql_where=text("active AND lookup_key IS NOT NULL"),
        ),
    )


class IdempotencyKey(Base):
    """A claimed request_id: written first, in the same transaction as the effect."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class Sequence(Base):
    """Monotonic counters (creation order of catalog entries) that work on both backends."""

    __tablename__ = "sequences"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class NotificationOutbox(Base):
    """Outbound notifications (DESIGN section 10), written in the transaction of the change.

    "Notification" always means outbound, never a usage event or an inbound Stripe event.
    `dedupe_key`, when set, makes a notification once-only (one depletion per transition)."""

    __tablename__ = "notification_outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    billing_account_id: Mapped[str | None] = mapped_column(String(40))
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Assigned by the delivery process, one at a time under a lock, in the order the rows
    # became visible (commit order); NULL until then. The cursor of WatchNotifications.
    position: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    __table_args__ = (Index("ix_notification_outbox_pending", "delivered_at", "created_at"),)


class NotificationEndpoint(Base):
    """A company endpoint that outbound notifications are POSTed to (Standard Webhooks)."""

    __tablename__ = "notification_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    description: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    # Public event types it wants; empty means all.
    event_types: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    secret: Mapped[str] = mapped_column(String(100), nullable=False)
    # A secret a rotation replaced still signs until it expires: the last one's here, earlier
    # ones' in `earlier_secrets` ([[secret, ISO expiry], ...]; notifications/endpoints.py).
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    earlier_secrets: Mapped[list[list[str]] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    # Since when every attempt failed (NULL after a success); disabled after days of it.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class NotificationDelivery(Base):
    """One notification for one endpoint: pending until delivered or given up."""

    __tablename__ = "notification_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("notification_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    notification_id: Mapped[str] = mapped_column(
        ForeignKey("notification_outbox.id"), nullable=False
    )
    # The account's ordering key ("" for none) and the notification's position.
    order_key: Mapped[str] = mapped_column(String(40), nullable=False, default="")
    position: Mapped[int] = mapped_column(BigInteger, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Pending: not before this time (a claim pushes it past the send's timeout).
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # While a process sends it: not claimed again before then (a resend too), nor before its
    # attempt is recorded.
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    # The message's own time, or its latest resend to this endpoint: retries count from it.
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("endpoint_id", "notification_id", name="uq_notification_delivery"),
        Index("ix_notification_deliveries_due", "state", "next_attempt_at"),
        Index("ix_notification_deliveries_order", "endpoint_id", "order_key", "position"),
        Index("ix_notification_deliveries_listing", "endpoint_id", "position"),
    )


class NotificationAttempt(Base):
    """Every POST of a delivery: status code (0: none), latency, error."""

    __tablename__ = "notification_attempts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    endpoint_id: Mapped[str] = mapped_column(String(40), nullable=False)
    notification_id: Mapped[str] = mapped_column(String(40), nullable=False)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    __table_args__ = (Index("ix_notification_attempts_endpoint", "endpoint_id", "created_at"),)


class CreditBalance(Base):
    """One balance per (account, credit type): the row every change to it locks first.

    `balance` (available) and `reserved` are the ledger's running totals as of the last
    write; `next_event_at` is a lower bound of the next expiry of a grant or a hold, so a
    reader knows when the stored figures are still exact without looking at any grant.
    """

    __tablename__ = "credit_balances"

    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), primary_key=True
    )
    credit_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    reserved: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    # The seq of the last ledger entry of this balance (entries are numbered 1, 2, ...).
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    next_event_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Depletion is a transition: set when the balance reaches zero, cleared when it rises.
    depleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    depletions: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # Usage burns asked for more than the balance held: the uncovered rest, added up, less
    # what later grants paid back (the sum of the ledger's `overage` column).
    overage: Mapped[Decimal] = mapped_column(
        UnboundedDecimal, nullable=False, default=Decimal(0), server_default="0"
    )


class CreditGrant(Base):
    """Credits granted to an account; `remaining` is free to spend, `held` is under holds."""

    __tablename__ = "credit_grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    credit_type: Mapped[str] = mapped_column(String(100), nullable=False)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    remaining: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    held: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    # active | depleted | expired | voided
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    expire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Consumption order: priority, then expiry (epoch microseconds; int64 max when none),
    # then age (the seq of the grant's ledger entry).
    expiry_key: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    request_id: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON, nullable=False, default=dict
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_credit_grants_order",
            "billing_account_id",
            "credit_type",
            "priority",
            "expiry_key",
            "seq",
        ),
    )


class CreditReservation(Base):
    """A hold on credits; `allocations` names the grants it holds from (JSON decimal strings)."""

    __tablename__ = "credit_reservations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    credit_type: Mapped[str] = mapped_column(String(100), nullable=False)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    committed_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    # held | committed | released | expired
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    expire_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    allocations: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    request_id: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    debit_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_credit_reservations_open", "billing_account_id", "credit_type", "state"),
    )


class CreditLedgerEntry(Base):
    """One line of the ledger: signed amount and the balance after it, numbered per balance.
    The sum of `amount` over a balance's entries is its `balance`; (account, type, seq) is
    unique, so two writers can never both append the same line."""

    __tablename__ = "credit_ledger"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    credit_type: Mapped[str] = mapped_column(String(100), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # grant | debit | expiration | void | reservation | release
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    balance_after: Mapped[Decimal] = mapped_column(ExactDecimal, nullable=False)
    grant_id: Mapped[str | None] = mapped_column(String(40))
    debit_id: Mapped[str | None] = mapped_column(String(40))
    reservation_id: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    request_id: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    # For debits: [{"grant_id": ..., "amount": "<decimal>"}] in consumption order.
    allocations: Mapped[list[Any] | None] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # Signed change to the balance's overage: + a burn beyond the balance (kind "overage"),
    # - what a grant paid back (kind "overage_paid"); 0 otherwise. Unbounded, like overage.
    overage: Mapped[Decimal] = mapped_column(
        UnboundedDecimal, nullable=False, default=Decimal(0), server_default="0"
    )

    __table_args__ = (
        UniqueConstraint("billing_account_id", "credit_type", "seq", name="uq_credit_ledger_seq"),
        Index("ix_credit_ledger_listing", "billing_account_id", "created_at", "seq", "id"),
    )


# JSONB on PostgreSQL: properties are read by key in every usage aggregate.
PropertiesJSON = JSON().with_variant(JSONB(), "postgresql")


class UsageEvent(Base):
    """One metered usage event, stored once per account and unique id (kept forever).

    Written only through Core inserts (`usage.repository`), never as ORM objects per row. No
    foreign key to billing_accounts: the account is resolved in the ingest transaction and
    accounts are never deleted, and a foreign key check per row would slow ingest.
    """

    __tablename__ = "usage_events"

    unique_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_name: Mapped[str] = mapped_column(String(200), nullable=False)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    properties: Mapped[dict[str, Any]] = mapped_column(PropertiesJSON, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index(
            "ix_usage_events_account_name_time", "billing_account_id", "event_name", "occurred_at"
        ),
    )


class BillableMetric(Base):
    """How events of one name aggregate into billable usage (count, sum, ...)."""

    __tablename__ = "billable_metrics"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    event_name: Mapped[str] = mapped_column(String(200), nullable=False)
    aggregation: Mapped[str] = mapped_column(String(20), nullable=False)
    property: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    # [{"property": str, "values": [str, ...]}, ...]; all must match.
    filters: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    # Optional burn: credits of this type per unit. The rate is a canonical decimal string
    # (exact on SQLite too, where NUMERIC is stored as a binary float).
    credit_type: Mapped[str | None] = mapped_column(String(100))
    credit_rate: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    __table_args__ = (Index("ix_billable_metrics_event_name", "event_name"),)


class CheckoutSession(Base):
    """A hosted checkout this service created: ours by id, the provider's by its own id.

    `fulfilled_at` is the one-fulfilment marker: set in the transaction that grants what the
    purchase grants, guarded by the natural key `checkout:{stripe id}` in `billing_effects`.
    """

    __tablename__ = "checkout_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    # pending (recorded, provider not answered yet) | open | complete | expired
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # unpaid | paid | no_payment_required
    payment_status: Mapped[str] = mapped_column(String(24), nullable=False)
    # payment | subscription
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    url: Mapped[str | None] = mapped_column(Text)
    # [{"price_id", "lookup_key", "quantity", "stripe_price_id"}] as requested, resolved.
    items: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    amount_total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    client_reference: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fulfilled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # The request as recorded before the provider is called (status `pending` until then):
    # the provider's parameters are derived from these, so any retry sends the same ones.
    success_url: Mapped[str | None] = mapped_column(Text)
    cancel_url: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_checkout_sessions_account", "billing_account_id", "created_at"),)


class CheckoutSlot(Base):
    """The one live (pending or open) checkout of an account in a subscription group."""

    __tablename__ = "checkout_slots"

    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), primary_key=True
    )
    subscription_group: Mapped[str] = mapped_column(String(250), primary_key=True)
    checkout_session_id: Mapped[str] = mapped_column(String(40), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class Subscription(Base):
    """A provider subscription of an account, as Stripe's current object last said: written
    only from Stripe's object fetched while this row is locked, so the order in which events
    arrive never decides the state; `canceled` is terminal and never left."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    stripe_subscription_id: Mapped[str] = mapped_column(String(200), unique=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(200))
    # Ours, when the provider price is linked to the catalog.
    price_id: Mapped[str | None] = mapped_column(String(40))
    lookup_key: Mapped[str | None] = mapped_column(String(200))
    subscription_group: Mapped[str | None] = mapped_column(String(200))
    stackable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # incomplete | trialing | active | past_due | unpaid | canceled | incomplete_expired | paused
    state: Mapped[str] = mapped_column(String(24), nullable=False)
    current_period_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    current_period_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    cancel_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # Stripe's, any date
    canceled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    latest_invoice: Mapped[str | None] = mapped_column(String(200))
    # When the provider created it (newest-first listing), and when we last read its truth.
    provider_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    __table_args__ = (Index("ix_subscriptions_account", "billing_account_id", "created_at"),)


class Purchase(Base):
    """A paid one-time checkout line, or payment intent (line 0); held until fully refunded."""

    __tablename__ = "purchases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    # Exactly one of these names what made the purchase.
    checkout_session_id: Mapped[str | None] = mapped_column(String(40))
    payment_intent_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    line: Mapped[int] = mapped_column(Integer, nullable=False)
    price_id: Mapped[str | None] = mapped_column(String(40))
    stripe_price_id: Mapped[str | None] = mapped_column(String(200))
    lookup_key: Mapped[str | None] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    amount_total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(200))
    refunded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("checkout_session_id", "line", name="uq_purchases_line"),
        Index("ix_purchases_account", "billing_account_id", "created_at"),
    )


class BillingEffect(Base):
    """Natural-key guards of webhook effects (`checkout:{cs_…}`, `invoice:{in_…}`, …), inserted
    first in the effect's transaction: two distinct events for one change apply it once."""

    __tablename__ = "billing_effects"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), nullable=False)
    billing_account_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class RateLimitCounter(Base):
    """The fixed-window counters of the rate limits (`rpc/ratestore.py`), shared by every
    replica. Disposable: UNLOGGED on PostgreSQL, written without waiting for the disk."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # When the window ends, in milliseconds since the epoch.
    expires_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
