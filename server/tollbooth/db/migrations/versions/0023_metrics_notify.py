"""PostgreSQL: a notification on channel `tollbooth_metrics` when a transaction that changed
billable metrics commits, so every server process reloads the metric definitions it keeps in
memory (tollbooth.usage.known_metrics). SQLite has no notifications: nothing to do there.

Revision ID: 0023
Revises: 0022
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION tollbooth_metrics_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- Delivered at commit; identical notifications of one transaction fold into one.
            PERFORM pg_notify('tollbooth_metrics', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER billable_metrics_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON billable_metrics FOR EACH STATEMENT EXECUTE FUNCTION tollbooth_metrics_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS billable_metrics_changed ON billable_metrics")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_metrics_changed()")
