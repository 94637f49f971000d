"""Queries of `credit_reservations`: open holds of a balance, one reservation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.credit.repository.common import fresh
from tollbooth.db.models import CreditReservation


def held_reservations(
    session: Session, account_id: str, credit_type: str
) -> list[CreditReservation]:
    return list(
        session.execute(
            fresh(
                select(CreditReservation).where(
                    CreditReservation.billing_account_id == account_id,
                    CreditReservation.credit_type == credit_type,
                    CreditReservation.state == "held",
                )
            )
        ).scalars()
    )


def reservation(session: Session, account_id: str, reservation_id: str) -> CreditReservation | None:
    """A reservation of this account; another account's is None, like a missing one."""
    return session.execute(
        fresh(
            select(CreditReservation).where(
                CreditReservation.id == reservation_id,
                CreditReservation.billing_account_id == account_id,
            )
        )
    ).scalar_one_or_none()
