"""The Alembic chain is the schema's only author in production, the SQLModel tables are what the code
reads and writes: after `migrate`, the two must describe the same columns, types, nullability, indexes
and constraints, on both databases. Helpers writing migrations side by side is how they drift."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import persistence.tables  # noqa: F401 - registers every table on SQLModel.metadata
from persistence.db import alembic_config, engine_for


def test_the_migrations_form_one_line(db_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(db_url))
    assert script.get_heads() == [script.get_current_head()]
    revisions = [r.revision for r in script.walk_revisions()]
    assert revisions == sorted(revisions, reverse=True)  # numbered in the order they apply


def test_the_migrated_schema_is_the_tables_schema(db_url: str) -> None:
    with engine_for(db_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []
