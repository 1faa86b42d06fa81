"""Alembic migrations build the models' schema on empty PostgreSQL and SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.db import Base, make_engine
from app.db.migrate import include_object, upgrade
from tests.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]


def schema_diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object, "compare_type": True})
        return compare_metadata(context, Base.metadata)


@pytest.fixture
def empty_pg():
    """A new, empty PostgreSQL database, dropped after the test."""
    name = f"test_wa_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_empty_postgresql_database_migrates_to_the_models_schema(empty_pg):
    upgrade(empty_pg)
    assert schema_diff(empty_pg) == []
    with empty_pg.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"


def test_an_empty_sqlite_database_migrates_to_the_models_schema(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    try:
        upgrade(engine)
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_a_database_the_foundation_created_without_alembic_is_stamped_and_upgraded(empty_pg):
    # Given the foundation's tables, made by create_all (no alembic_version)
    upgrade(empty_pg, "0001")
    with empty_pg.begin() as conn:
        conn.execute(text("INSERT INTO conversations (customer_key, operator_active, created_at, updated_at) "
                          "VALUES ('old', false, now(), now())"))
        conn.execute(text("DROP TABLE alembic_version"))

    # When it is migrated
    upgrade(empty_pg)

    # Then it has the whole schema and keeps its rows
    assert schema_diff(empty_pg) == []
    with empty_pg.connect() as conn:
        assert conn.execute(text("SELECT customer_key FROM conversations")).scalars().all() == ["old"]


def test_migrations_downgrade_to_the_foundation_and_back(empty_pg):
    upgrade(empty_pg)
    from alembic import command

    from app.db.migrate import alembic_config

    with empty_pg.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert "reply_outbox" not in inspect(empty_pg).get_table_names()
    upgrade(empty_pg)
    assert schema_diff(empty_pg) == []


def test_assistant_migrate_sets_up_sqlite_and_the_checkpointer_from_any_directory(tmp_path):
    # Given no DB_URL: the embedded SQLite under DATA_DIR
    env = {k: v for k, v in os.environ.items() if k != "DB_URL"}
    env["DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(ROOT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # When `assistant migrate` runs twice from a directory without any alembic.ini
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "app.manage", "migrate"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    # Then the app's tables and LangGraph's are there
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'assistant.sqlite3'}")
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"conversations", "messages", "customers", "reply_outbox", "operator_actions",
                "message_statuses", "alembic_version"} <= tables
        assert {"checkpoints", "writes"} <= tables
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def _foundation_rows(engine) -> None:
    """A conversation with a message, in the foundation's schema."""
    now = "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO conversations (id, customer_key, operator_active, created_at, updated_at) "
                          f"VALUES (1, '15550001111', false, {now}, {now})"))
        conn.execute(text(f"INSERT INTO messages (conversation_id, author, wamid, kind, text, status, created_at) "
                          f"VALUES (1, 'customer', 'wamid.1', 'text', 'hello', 'received', {now})"))


def _kept_rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT c.customer_key, m.wamid, m.text FROM messages m "
                                 "JOIN conversations c ON c.id = m.conversation_id")).all()


def test_migrating_a_sqlite_database_with_messages_keeps_them(tmp_path):
    # Given an embedded database at the foundation's revision, with a message
    engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    try:
        upgrade(engine, "0001")
        _foundation_rows(engine)

        # When it is migrated (batch mode copies and drops `conversations`)
        upgrade(engine)

        # Then the message is still there, and foreign keys are enforced again
        assert _kept_rows(engine) == [("15550001111", "wamid.1", "hello")]
        assert schema_diff(engine) == []
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_migrating_a_postgresql_database_with_messages_keeps_them(empty_pg):
    upgrade(empty_pg, "0001")
    _foundation_rows(empty_pg)

    upgrade(empty_pg)

    assert _kept_rows(empty_pg) == [("15550001111", "wamid.1", "hello")]
    assert schema_diff(empty_pg) == []
