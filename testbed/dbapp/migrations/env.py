"""Alembic's environment for the test app: online migrations only, one transaction per
revision (`transaction_per_migration`): a failing revision leaves the ones before it applied."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from dburl import database_url
from sqlalchemy import create_engine, pool


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


# alembic.ini's logging: "Running upgrade A -> B" lines on stderr, as a real project prints.
if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)
if context.is_offline_mode():
    raise SystemExit("the test app migrates online only")
run_migrations_online()
