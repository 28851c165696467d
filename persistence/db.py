"""Engine, sessions and schema migration for o2c's database (SQLite embedded default, PostgreSQL in production)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        # WAL lets the API read while the worker writes; busy_timeout waits for the writer instead of failing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:
        # Take the write lock at BEGIN so read-modify-write transactions (sequence numbers, allowances) serialise.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None})
        _configure_sqlite(engine)
        return engine
    # At least as many connections as the worker has activity slots (worker.ACTIVITY_SLOTS, 32): an activity
    # must never wait for a connection that another activity's thread holds.
    return create_engine(url, pool_pre_ping=True, pool_size=16, max_overflow=24)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on an exception."""
    with Session(engine_for(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(url: str) -> None:
    """Bring the schema to the latest revision; a no-op when it is already there. ("head", not "heads":
    two migrations written side by side must fail here rather than run in an unplanned order.)"""
    command.upgrade(alembic_config(url), "head")
