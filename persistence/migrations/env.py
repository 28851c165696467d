"""Alembic environment: runs migrations on the engine o2c uses, with o2c's table metadata."""
from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import persistence.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from persistence.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
