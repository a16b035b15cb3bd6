"""Alembic environment for pgops' own objects.

The version table lives in the `pgops` schema, so pgops' history never collides with the application's own
Alembic history. All revisions of one run share a single transaction under an advisory lock, so two daemons
starting at once can't both migrate, and a failure leaves nothing half-done.
"""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from pgops import db
from pgops.config import load_settings

SCHEMA = "pgops"
VERSION_TABLE = "alembic_version"
LOCK = "SELECT pg_advisory_xact_lock(hashtext('pgops.migrate'))"
log = logging.getLogger("pgops.migrate")

config = context.config
if config.config_file_name and not config.attributes.get("dsn"):
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _settings():
    return config.attributes.get("settings") or load_settings(dsn=context.get_x_argument(as_dictionary=True).get("dsn"))


def _drop_leftovers_at_base(connection) -> None:
    """After `downgrade base`, remove the version table and the schema, unless something else lives there."""
    if connection.execute(text(f"SELECT count(*) FROM {SCHEMA}.{VERSION_TABLE}")).scalar():
        return
    connection.execute(text(f"DROP TABLE {SCHEMA}.{VERSION_TABLE}"))
    others = connection.execute(
        text(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgops'::regnamespace "
            "UNION ALL SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgops'::regnamespace"
        )
    ).scalars()
    if sum(others):
        log.warning("schema %s kept: it holds objects pgops did not install", SCHEMA)
    else:
        connection.execute(text(f"DROP SCHEMA {SCHEMA}"))


def run_migrations_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        version_table_schema=SCHEMA,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.execute(LOCK)
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()
        if context.get_revision_argument() in (None, "base"):  # downgrade to base: None as the destination
            context.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{VERSION_TABLE}")
            context.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")


def run_migrations_online() -> None:
    settings = _settings()
    dsn = config.attributes.get("dsn") or settings.dsn
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: db.connect(dsn, settings.database, db.ConnectOptions(autocommit=False)),
        poolclass=NullPool,
    )
    with engine.connect() as connection:
        connection.execute(text(LOCK))
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        context.configure(
            connection=connection,
            version_table_schema=SCHEMA,
            version_table=VERSION_TABLE,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        _drop_leftovers_at_base(connection)
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
