"""The recurring items of a subscription (kept out of models.py, which is at its size limit).

Imported by `tollbooth.db.migrations.env` and by the subscriptions room, so the table is part
of `Base.metadata` wherever subscriptions are read or written."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tollbooth.db.models import Base


class SubscriptionItem(Base):
    """One recurring item of a subscription, in the provider's order, as its object last said.

    Rewritten whole, under the subscription's row lock, each time the subscription is synced;
    the subscription row's own price columns keep the first item (its plan)."""

    __tablename__ = "subscription_items"

    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(200))
    # Ours, when the provider price is linked to the catalog.
    price_id: Mapped[str | None] = mapped_column(String(40))
    lookup_key: Mapped[str | None] = mapped_column(String(200))
    subscription_group: Mapped[str | None] = mapped_column(String(200))
    stackable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
