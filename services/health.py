"""Dependency checks for GET /health."""
from __future__ import annotations

from sqlalchemy import text

from persistence.db import engine_for


def database_status(db_url: str) -> tuple[bool, str | None]:
    try:
        with engine_for(db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True, None
    except Exception as exc:  # any failure means "down"; the detail says which
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
