"""An account's page lists its notifications with how each one's delivery stands at every
endpoint it is queued for: the same truth ListNotificationMessages and `notifications
messages` tell (public type, state, attempts, when delivered), on SQLite and PostgreSQL.
It showed the outbox row's own `delivered_at` and `attempts`, which nothing writes: every
notification "never delivered, 0 attempts", and its internal type name."""

from __future__ import annotations

from tests.notifications.support import enqueue
from tollbooth.console import inbox
from tollbooth.console.pages import PREFIX, TEMPLATES
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints, messages
from tollbooth.notifications import repository as notifications


def test_an_accounts_notifications_show_each_endpoints_delivery(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.transaction() as session:
            sent, _ = endpoints.create(
                session, endpoints.Fields(url="https://one.example/hook"), utcnow()
            )
            failing, _ = endpoints.create(
                session, endpoints.Fields(url="https://two.example/hook"), utcnow()
            )
        nid = enqueue(db, "credits.granted", "acct_shown", {"amount": "1"})
        with db.transaction() as session:
            rows = [r for r in notifications.assign_positions(session, 100) if r.id == nid]
            for ep in (sent, failing):
                assert notifications.insert_deliveries(session, ep.id, rows, utcnow()) == 1
            delivered = notifications.get_delivery(session, sent.id, nid)
            retried = notifications.get_delivery(session, failing.id, nid)
            assert delivered is not None and retried is not None
            delivered.state, delivered.attempts, delivered.delivered_at = "delivered", 2, utcnow()
            retried.attempts, retried.last_error = 3, "HTTP 500"
        with db.transaction(readonly=True) as session:
            told = {
                ep.id: [
                    (d.state, d.attempts)
                    for d, _ in messages.list_messages(session, ep.id, None, 10, "").items
                ]
                for ep in (sent, failing)
            }
            shown = inbox.notifications(session, "acct_shown").items
        assert told == {sent.id: [("delivered", 2)], failing.id: [("pending", 3)]}
        assert [(n.id, n.type) for n in shown] == [(nid, "account.credits.granted")]
        assert [(d.endpoint_id, d.state, d.attempts) for d in shown[0].deliveries] == sorted(
            [(sent.id, "delivered", 2), (failing.id, "pending", 3)]
        )
        html = TEMPLATES.get_template("outbox.html").render(prefix=PREFIX, notifications=shown)
        assert f"{sent.id}</code></a> delivered · 2 attempts" in html
        assert f"{failing.id}</code></a> pending · 3 attempts" in html
    finally:
        db.dispose()


def test_a_notification_no_endpoint_takes_says_so(database_url: str) -> None:
    db = Database(database_url)
    try:
        nid = enqueue(db, "credits.granted", "acct_alone", {"amount": "1"})
        with db.transaction(readonly=True) as session:
            shown = inbox.notifications(session, "acct_alone").items
        assert [(n.id, n.deliveries) for n in shown] == [(nid, [])]
        html = TEMPLATES.get_template("outbox.html").render(prefix=PREFIX, notifications=shown)
        assert "not queued for any endpoint" in html
    finally:
        db.dispose()


def test_the_deliveries_page_offers_no_resend_to_a_disabled_endpoint() -> None:
    """A resend to a disabled endpoint is refused (NOTIFICATION_ENDPOINT_DISABLED): its rows
    offer no Resend button that could only be refused, and say why; an enabled endpoint's do."""
    at = utcnow()

    def endpoint(ident: str, enabled: bool) -> inbox.Endpoint:
        shown = inbox.Delivery("ntf_1", "invoice.paid", None, "delivered", 1, "", at, at, "v1")
        return inbox.Endpoint(ident, "https://r.example/", enabled, "", [shown])

    html = TEMPLATES.get_template("notifications.html").render(
        prefix=PREFIX, endpoints=[endpoint("nep_on", True), endpoint("nep_off", False)]
    )
    on = html[html.index('id="endpoint-nep_on"') : html.index('id="endpoint-nep_off"')]
    off = html[html.index('id="endpoint-nep_off"') :]
    assert "/notifications/nep_on/ntf_1/resend" in on and 'class="resend"' in on
    assert "/resend" not in off and 'class="resend"' not in off
    assert "enable the endpoint to resend" in off
