"""The public notification types (DESIGN section 10): what an endpoint may subscribe to,
what `WatchNotifications` sends, and what the OpenAPI document lists for `event_types`.
Plumbing, so the document's rules (`openapirules`) and the notifications room read one list."""

from __future__ import annotations

# The types an endpoint may subscribe to (DESIGN section 10), plus the delivery's own: every
# type the rooms write, so an endpoint can ask for any one it would receive.
ENDPOINT_DISABLED = "notification.endpoint.disabled"
KNOWN_TYPES = (
    "account.credits.balance_depleted",
    "account.credits.granted",
    "credits.voided",
    "checkout.session.completed",
    "checkout.conflict_canceled",
    "checkout.duplicate_refunded",
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.upgrade_not_granted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.renewal_refunded",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.duplicate_refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    ENDPOINT_DISABLED,
)
