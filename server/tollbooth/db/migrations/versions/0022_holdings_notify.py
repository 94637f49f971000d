"""PostgreSQL: a notification on channel `tollbooth_holdings` when a transaction that changed
what an account holds (subscriptions, their items, purchases) commits, its payload the account
id, so every server process drops that account from its in-memory holdings
(tollbooth.subscriptions.holdings). An empty payload (TRUNCATE, an item whose subscription is
gone) means every account. SQLite has no notifications: nothing to do there.

Revision ID: 0022
Revises: 0019
"""

from alembic import op

revision = "0022"
down_revision = "0019"
branch_labels = None
depends_on = None

TABLES = ("subscriptions", "subscription_items", "purchases")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION tollbooth_holdings_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            account text;
            sub text;
        BEGIN
            -- Delivered at commit; identical notifications of one transaction fold into one.
            IF TG_LEVEL = 'STATEMENT' THEN
                PERFORM pg_notify('tollbooth_holdings', '');
                RETURN NULL;
            END IF;
            IF TG_TABLE_NAME = 'subscription_items' THEN
                sub := CASE WHEN TG_OP = 'DELETE' THEN OLD.subscription_id
                            ELSE NEW.subscription_id END;
                SELECT s.billing_account_id INTO account FROM subscriptions s WHERE s.id = sub;
                PERFORM pg_notify('tollbooth_holdings', coalesce(account, ''));
                RETURN NULL;
            END IF;
            IF TG_OP <> 'INSERT' THEN
                PERFORM pg_notify('tollbooth_holdings', OLD.billing_account_id);
            END IF;
            IF TG_OP <> 'DELETE' THEN
                PERFORM pg_notify('tollbooth_holdings', NEW.billing_account_id);
            END IF;
            RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_holdings_changed AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION tollbooth_holdings_changed()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_holdings_truncated AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION tollbooth_holdings_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_holdings_changed ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_holdings_truncated ON {table}")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_holdings_changed()")
