"""PostgreSQL: a notification on channel `tollbooth_catalog` when a transaction that changed
products or prices commits, so every server process reloads its in-memory catalog
(tollbooth.catalog.snapshot). SQLite has no notifications: nothing to do there.

Revision ID: 0019
Revises: 0017
"""

from alembic import op

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None

TABLES = ("products", "prices")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION tollbooth_catalog_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- Delivered at commit; identical notifications of one transaction fold into one.
            PERFORM pg_notify('tollbooth_catalog', '');
            RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_catalog_changed AFTER INSERT OR UPDATE OR DELETE OR "
            f"TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION tollbooth_catalog_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_catalog_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_catalog_changed()")
