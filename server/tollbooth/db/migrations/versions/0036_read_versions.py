"""PostgreSQL: versions that every change to what a process keeps in memory bumps in its own
transaction, so a read checks its kept copy with one statement (`tollbooth.db.versions`)
instead of trusting that the change's notification (0019, 0022) has been heard:

- `catalog_version`, one row: bumped by a transaction that changed `products` or `prices`;
- `holdings_version`, one row per account (created by its first bump; the account '' means
  every account: a TRUNCATE, an item whose subscription is gone): bumped by a transaction that
  changed the account's `subscriptions`, `subscription_items` or `purchases`.

The bumps are deferred constraint triggers: they run when the transaction commits, so the
version row is the last lock the transaction takes (held for the commit alone: no deadlock
with the rows it changed, no wait for the catalog's other writers while they work), and the
new version becomes visible with the change, never before it (a sequence's `nextval` would).
The catalog is bumped once per transaction (a transaction-local setting remembers it). Credit,
usage and every other hot path bump nothing. SQLite has no kept copies: nothing to do there.

Revision ID: 0036
Revises: 0035
"""

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

CATALOG = ("products", "prices")
HOLDINGS = ("subscriptions", "subscription_items", "purchases")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE catalog_version (id integer PRIMARY KEY CHECK (id = 1), "
        "version bigint NOT NULL)"
    )
    op.execute("INSERT INTO catalog_version (id, version) VALUES (1, 0)")
    op.execute(
        "CREATE TABLE holdings_version (billing_account_id text PRIMARY KEY, "
        "version bigint NOT NULL)"
    )
    op.execute(
        """
        CREATE FUNCTION tollbooth_catalog_bump() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('tollbooth.catalog_bumped', true) IS DISTINCT FROM '1' THEN
                UPDATE catalog_version SET version = version + 1 WHERE id = 1;
                PERFORM set_config('tollbooth.catalog_bumped', '1', true);
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION tollbooth_holdings_bump_of(account text) RETURNS void
        LANGUAGE sql AS $$
            INSERT INTO holdings_version AS v (billing_account_id, version) VALUES (account, 1)
            ON CONFLICT (billing_account_id) DO UPDATE SET version = v.version + 1
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION tollbooth_holdings_bump() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            account text;
            sub text;
        BEGIN
            IF TG_LEVEL = 'STATEMENT' THEN
                PERFORM tollbooth_holdings_bump_of('');
                RETURN NULL;
            END IF;
            IF TG_TABLE_NAME = 'subscription_items' THEN
                sub := CASE WHEN TG_OP = 'DELETE' THEN OLD.subscription_id
                            ELSE NEW.subscription_id END;
                SELECT s.billing_account_id INTO account FROM subscriptions s WHERE s.id = sub;
                PERFORM tollbooth_holdings_bump_of(coalesce(account, ''));
                RETURN NULL;
            END IF;
            IF TG_OP <> 'INSERT' THEN
                PERFORM tollbooth_holdings_bump_of(OLD.billing_account_id);
            END IF;
            IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT'
                    OR NEW.billing_account_id IS DISTINCT FROM OLD.billing_account_id) THEN
                PERFORM tollbooth_holdings_bump_of(NEW.billing_account_id);
            END IF;
            RETURN NULL;
        END $$
        """
    )
    for table in CATALOG:
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_catalog_bump AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION tollbooth_catalog_bump()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_catalog_bump_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tollbooth_catalog_bump()"
        )
    for table in HOLDINGS:
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_holdings_bump AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION tollbooth_holdings_bump()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_holdings_bump_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tollbooth_holdings_bump()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in CATALOG:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_catalog_bump ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_catalog_bump_truncated ON {table}")
    for table in HOLDINGS:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_holdings_bump ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_holdings_bump_truncated ON {table}")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_holdings_bump()")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_holdings_bump_of(text)")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_catalog_bump()")
    op.execute("DROP TABLE IF EXISTS holdings_version")
    op.execute("DROP TABLE IF EXISTS catalog_version")
