"""The conversation graph's checkpointer failures are transient (real PostgreSQL port, real SQLite file)."""

from __future__ import annotations

import sqlite3

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from app.checkpoints import strict_serializer
from app.errors import TransientError
from app.graph import ConversationGraph, customer_turn
from app.llm import OfflineModel


def test_an_unreachable_postgresql_is_a_transient_error():
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool, PoolTimeout

    # Given a checkpointer whose pool cannot connect (nothing listens on port 1)
    pool = ConnectionPool("postgresql://postgres@127.0.0.1:1/none", min_size=1, max_size=1, timeout=0.5,
                          kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 1}, open=True)
    try:
        graph = ConversationGraph(PostgresSaver(pool, serde=strict_serializer()), OfflineModel())  # type: ignore[arg-type]

        # When a run needs its checkpoint, Then the task is told to retry
        with pytest.raises(TransientError) as caught:
            graph.run("15550001111", [customer_turn("w1", "hello")], reply_to="b1")
        assert isinstance(caught.value.__cause__, PoolTimeout)
    finally:
        pool.close()


def test_a_locked_sqlite_database_is_a_transient_error(tmp_path):
    path = tmp_path / "assistant.db"
    # (as open_checkpoints sets it up, with a short busy timeout)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=0.1)
    conn.execute("PRAGMA journal_mode=WAL")
    saver = SqliteSaver(conn, serde=strict_serializer())
    saver.setup()
    graph = ConversationGraph(saver, OfflineModel())
    graph.run("15550001111", [customer_turn("w1", "hello")], reply_to=None)
    # Given another process holds the database's write lock
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        # Then writing the thread is a transient failure (readers are not blocked in WAL mode)
        with pytest.raises(TransientError, match="database is locked"):
            graph.run("15550001111", [customer_turn("w2", "still there?")], reply_to="b2")
        with pytest.raises(TransientError, match="database is locked"):
            graph.write_as_operator("15550001111", {"operator_active": True})
        assert [m.id for m in graph.messages("15550001111")] == ["w1"]
    finally:
        other.rollback()
        other.close()
        conn.close()
