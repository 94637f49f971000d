"""Payment intents of PaymentService (kept out of models.py, which is at its size limit).

Imported by `tollbooth.db.migrations.env` and by the payments room, so the table is part of
`Base.metadata` wherever payment intents are read or written."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from tollbooth.db.models import Base
from tollbooth.db.types import UTCDateTime, utcnow


class PaymentIntent(Base):
    """A payment intent this service created (PaymentService): ours by id, the provider's by
    its own id. Recorded `pending` before the provider is called (the provider's parameters
    derive from this row, so a retry sends the same ones); the provider's events move it on.
    A succeeded one records its purchase once (`billing_effects` key `payment_intent:{pi_…}`),
    or, for a price bought once that the account holds already, its refund as a duplicate.
    """

    __tablename__ = "payment_intents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    billing_account_id: Mapped[str] = mapped_column(
        ForeignKey("billing_accounts.id"), nullable=False
    )
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    # pending | requires_payment_method | requires_confirmation | requires_action | processing
    # | succeeded | canceled
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    receipt_email: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    price_id: Mapped[str | None] = mapped_column(String(40))
    client_secret: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    # Whether its request carried a request_id: one without can never be retried by its
    # client (a retry is a new intent), so the sweeper cancels it rather than sending it.
    keyed: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    purchase_id: Mapped[str | None] = mapped_column(String(40))
    failure_code: Mapped[str | None] = mapped_column(String(100))
    decline_code: Mapped[str | None] = mapped_column(String(100))
    failure_message: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    succeeded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A payment for a price bought once that the account held already: the purchase it
    # duplicated, the provider's refund (None: refunded already there) and when it was recorded.
    duplicate_of: Mapped[str | None] = mapped_column(String(40))
    refund_id: Mapped[str | None] = mapped_column(String(200))
    refunded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    __table_args__ = (Index("ix_payment_intents_account", "billing_account_id", "created_at"),)
