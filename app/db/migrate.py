"""Bring a database to the newest schema with Alembic, from any directory.

``assistant migrate`` calls :func:`upgrade`.  A database made by the
foundation's ``create_all`` (tables but no ``alembic_version``) is
stamped with the first revision, which describes exactly those tables,
and then upgraded like any other.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

__all__ = ["upgrade", "alembic_config", "include_object", "FOUNDATION_REVISION", "CHECKPOINT_TABLES"]

#: The revision that matches the tables the foundation created without Alembic.
FOUNDATION_REVISION = "0001"

#: Tables LangGraph's checkpointers own (their ``setup()`` creates and
#: migrates them); Alembic leaves them alone.
CHECKPOINT_TABLES = frozenset(
    {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations", "writes"}
)

_SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration, built in code (no alembic.ini)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(_SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave LangGraph's checkpoint tables out of Alembic's view."""
    return not (type_ == "table" and name in CHECKPOINT_TABLES)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision``.

    On SQLite, foreign keys are off while the migrations run: batch mode
    rebuilds a table by copying it and dropping the original, and with
    foreign keys on, dropping ``conversations`` would cascade (ON DELETE
    CASCADE) and delete every message.  They are checked at the end,
    then turned back on.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # The pragma is a no-op inside a transaction: set it before one begins.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                _upgrade(connection, revision)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration left rows with broken foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _upgrade(connection: Connection, revision: str) -> None:
    tables = set(inspect(connection).get_table_names())
    config = alembic_config(connection)
    if "conversations" in tables and "alembic_version" not in tables:
        command.stamp(config, FOUNDATION_REVISION)
    command.upgrade(config, revision)
