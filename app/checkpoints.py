"""LangGraph's checkpointer for the configured database.

PostgreSQL gets ``PostgresSaver`` on a psycopg 3 connection pool; the
embedded SQLite default gets ``SqliteSaver`` on the same file.  The
serializer is strict by construction: it loads only the message types
the conversation state holds (what ``LANGGRAPH_STRICT_MSGPACK=true``
enforces), so a tampered checkpoint cannot make the worker import and
run arbitrary code.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from sqlalchemy.engine import make_url

__all__ = ["Checkpoints", "open_checkpoints", "strict_serializer", "libpq_url"]

#: The only classes a checkpoint may contain besides plain data.
ALLOWED_TYPES = (
    ("langchain_core.messages.human", "HumanMessage"),
    ("langchain_core.messages.ai", "AIMessage"),
    ("langchain_core.messages.modifier", "RemoveMessage"),
)

#: Connections the checkpointer's pool keeps per process, at most.  Fewer
#: than a worker's threads (8 in deploy/) on purpose: PostgresSaver runs
#: every checkpoint read and write under one lock per saver and takes a
#: pooled connection only for that query, never across a model call, so
#: a process uses one connection at a time; the rest replace a connection
#: that broke.  Waiting for one (CONNECT_TIMEOUT_S) thus fails only when
#: PostgreSQL cannot be reached, and that is retried (a TransientError).
POOL_MAX_SIZE = 5
#: Seconds to wait for a PostgreSQL connection before failing (retried by the task policy).
CONNECT_TIMEOUT_S = 5


def strict_serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=ALLOWED_TYPES)


def libpq_url(db_url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's spelling) -> a libpq URL."""
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Checkpoints:
    """A checkpointer and what must be closed with it."""

    saver: BaseCheckpointSaver
    _resource: Any

    def setup(self) -> None:
        """Create or migrate the checkpointer's own tables (idempotent)."""
        self.saver.setup()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._resource.close()


def open_checkpoints(db_url: str) -> Checkpoints:
    """The checkpointer for ``db_url`` (an SQLAlchemy URL)."""
    if db_url.startswith("sqlite"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = make_url(db_url).database or ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SqliteSaver serialises its own use of the connection with a lock.
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return Checkpoints(SqliteSaver(conn, serde=strict_serializer()), conn)

    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        libpq_url(db_url),
        min_size=1,
        max_size=POOL_MAX_SIZE,
        timeout=CONNECT_TIMEOUT_S,
        # A connection is checked (one round trip) before it is handed out,
        # as the SQLAlchemy engine's pool_pre_ping does: after a database
        # outage or restart the pool still holds connections the outage
        # killed, and without the check the first task to draw one fails on
        # a database that is back (dead-lettered, if it was its last retry).
        check=ConnectionPool.check_connection,
        # What PostgresSaver requires: autocommit (its setup() creates
        # indexes concurrently), dict rows, no server-side prepared
        # statements (safe behind PgBouncer).
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT_S},
        open=True,
    )
    return Checkpoints(PostgresSaver(pool, serde=strict_serializer()), pool)  # type: ignore[arg-type]
