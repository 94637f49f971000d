"""Alembic environment: the URL comes from tollbooth.db.migrate.alembic_config."""

from alembic import context
from sqlalchemy import create_engine, pool

from tollbooth.db import connection_settings
from tollbooth.db.models import Base
from tollbooth.db.payment_intents import PaymentIntent  # noqa: F401 - its table
from tollbooth.db.subscription_items import SubscriptionItem  # noqa: F401 - its table

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connection_settings(url))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
