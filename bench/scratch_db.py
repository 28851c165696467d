"""A throw-away PostgreSQL database per bench run, created and dropped through the admin URL."""
from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text


def create_database(admin_url: str, prefix: str = "o2c_bench") -> tuple[str, str]:
    """(name, URL) of a new empty database on the admin URL's server."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
