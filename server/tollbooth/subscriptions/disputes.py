"""Disputes (`charge.dispute.created`, `charge.dispute.closed`): a dispute the account lost ends
what the disputed payment bought exactly as a full refund does (`refunds.end_payment`).

Registered with the webhook inbox at assembly. The provider is the truth: the dispute is read
from the provider first (outside any transaction), then its charge; the event body's status
is never acted on. Only a dispute the provider reports `lost` changes credits, once per
charge under the refund's own guard (`refund:{ch_…}`), so a refund of the same charge, a
second event about the dispute, a twin or a replay, in any order, voids nothing twice. A
dispute still open or won changes nothing. Each event also queues its outbound notification
(`charge.dispute.created` / `charge.dispute.closed`, once per dispute each).
"""

from __future__ import annotations

from typing import Any

from tollbooth.notifications import outbox
from tollbooth.provider import repository as links
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions.effects import Context, Effect, Facts, Reader
from tollbooth.subscriptions.refunds import end_payment
from tollbooth.webhooks.dispatch import Ignored
from tollbooth.webhooks.dispatch import object_id as _id

LOST = "lost"


def _dispute_of(obj: dict[str, Any]) -> str:
    dispute_id = _id(obj.get("id"))
    if not dispute_id:
        raise Ignored("the event names no usable dispute id")
    return dispute_id


def read_dispute(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
    """The provider's dispute, then the charge it disputes (for the account and payment)."""
    dispute_id = _dispute_of(obj)
    truth = provider.retrieve_dispute(dispute_id)
    facts.disputes[dispute_id] = truth
    charge_id = _id((truth or {}).get("charge"))
    if charge_id:
        facts.charges[charge_id] = provider.retrieve_charge(charge_id)


def _on_dispute(ctx: Context, obj: dict[str, Any], notification: str) -> None:
    dispute_id = _dispute_of(obj)
    truth = ctx.facts.disputes.get(dispute_id)
    if truth is None:
        raise Ignored("the provider does not know this dispute")
    charge_id = _id(truth.get("charge"))
    charge = ctx.facts.charges.get(charge_id) if charge_id else None
    if charge_id is None or charge is None:
        raise Ignored("the provider does not know the disputed charge")
    intent, customer = _id(charge.get("payment_intent")), _id(charge.get("customer"))
    account = links.account_by_customer(ctx.session, customer) if customer else None
    if account is None or intent is None:
        raise Ignored("a dispute of a charge of a customer that is not ours")
    status = str(truth.get("status") or "")[:40]
    if status == LOST and end_payment(ctx, account.id, intent, charge_id, "lost in a dispute"):
        ctx.changes.append(f"dispute {dispute_id} lost: what charge {charge_id} bought ended")
    amount = truth.get("amount")
    outbox.enqueue(
        ctx.session,
        notification,
        account.id,
        {
            "dispute_id": dispute_id,
            "charge": charge_id,
            "payment_intent": intent,
            "status": status,
            "reason": str(truth.get("reason") or "")[:40] or None,
            "amount": amount if type(amount) is int else None,
            "currency": truth.get("currency") if isinstance(truth.get("currency"), str) else None,
        },
        f"{notification}:{dispute_id}",
    )
    ctx.changes.append(f"dispute {dispute_id} of charge {charge_id}: {status}")


def on_dispute_created(ctx: Context, obj: dict[str, Any]) -> None:
    _on_dispute(ctx, obj, "charge.dispute.created")


def on_dispute_closed(ctx: Context, obj: dict[str, Any]) -> None:
    truth = ctx.facts.disputes.get(_dispute_of(obj))
    if truth is not None and truth.get("status") not in ("won", LOST, "warning_closed"):
        raise Ignored("the provider does not report this dispute closed")
    _on_dispute(ctx, obj, "charge.dispute.closed")


HANDLERS: dict[str, tuple[Reader, Effect]] = {
    "charge.dispute.created": (read_dispute, on_dispute_created),
    "charge.dispute.closed": (read_dispute, on_dispute_closed),
}
