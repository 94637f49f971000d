"""Outbound notifications: the sole owner of the `notification_outbox` table."""
