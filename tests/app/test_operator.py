"""Takeover silences the AI, operator turns enter the history, handback answers."""

from __future__ import annotations

from langchain_core.messages import AIMessage
from sqlalchemy import select

from app.db import Conversation, Message, session_scope
from app.db.models import OperatorAction
from app.operator import set_hold_flag, set_operator_hold, sync_operator_message
from app.replies import process_batch
from tests.support.conversations import inbound, parsed

KEY = "15550001111"


def test_takeover_silences_the_ai_while_inbound_messages_are_stored_and_in_the_history(services, whatsapp, db):
    # Given an operator holds the conversation
    assert set_operator_hold(services, KEY, "takeover", "op-7") is None

    # When the customer writes
    assert process_batch(services, KEY, "b1", parsed(inbound("w1", "hello?"))) is None

    # Then nothing is sent or marked read, and the message is stored and in the history
    assert whatsapp.sent == [] and whatsapp.read == []
    with db() as session:
        assert session.scalars(select(Message.wamid)).all() == ["w1"]
        conversation = session.scalars(select(Conversation).where(Conversation.customer_key == KEY)).one()
        assert (conversation.operator_active, conversation.operator_id) == (True, "op-7")
    assert [m.id for m in services.graph.messages(KEY)] == ["w1"]
    assert services.graph.operator_active(KEY) is True


def test_an_operator_message_lands_in_the_history_as_the_operators(services, whatsapp, db):
    set_operator_hold(services, KEY, "takeover", "op-7")
    process_batch(services, KEY, "b1", parsed(inbound("w1", "hello?")))

    # Written in the WhatsApp Business app: recorded and synced, not sent
    sync_operator_message(services, KEY, "Hi, Rita here.", message_id="op-msg-1", operator_id="op-7")
    sync_operator_message(services, KEY, "Hi, Rita here.", message_id="op-msg-1", operator_id="op-7")

    assert whatsapp.sent == []
    last = services.graph.messages(KEY)[-1]
    assert isinstance(last, AIMessage) and (last.id, last.name, last.content) == ("op-msg-1", "operator",
                                                                                  "Hi, Rita here.")
    assert len(services.graph.messages(KEY)) == 2
    with db() as session:
        (row,) = session.scalars(select(Message).where(Message.author == "operator")).all()
        assert (row.operator_message_id, row.operator_id, row.text) == ("op-msg-1", "op-7", "Hi, Rita here.")
        actions = session.scalars(select(OperatorAction.action).order_by(OperatorAction.id)).all()
        assert actions == ["takeover", "message"]


def test_an_operator_message_to_send_goes_out_once_per_message_id(services, whatsapp, db):
    process_batch(services, KEY, "b0", parsed(inbound("w0", "hi")))
    set_operator_hold(services, KEY, "takeover", "op-7")
    for _ in range(2):
        sync_operator_message(services, KEY, "Your order left today.", message_id="op-msg-2",
                              operator_id="op-7", send=True)

    operator_sends = [s for s in whatsapp.sent if s.callback_data == "operator:op-msg-2"]
    assert [(s.to, s.text) for s in operator_sends] == [(KEY, "Your order left today.")]
    with db() as session:
        (row,) = session.scalars(select(Message).where(Message.author == "operator")).all()
        assert (row.wamid, row.status) == (operator_sends[0].wamid, "sent")
    assert services.graph.messages(KEY)[-1].id == "op-msg-2"


def test_handback_answers_the_waiting_messages_with_the_operator_turn_in_the_models_input(
        services, whatsapp, model, db):
    # Given a held conversation where the operator answered, then the customer wrote again
    process_batch(services, KEY, "b0", parsed(inbound("w0", "I need help with my order")))
    set_operator_hold(services, KEY, "takeover", "op-7")
    sync_operator_message(services, KEY, "Which order number?", message_id="op-1", operator_id="op-7")
    process_batch(services, KEY, "b1", parsed(inbound("w1", "It is 4471")))
    assert len(whatsapp.sent) == 1

    # When the operator hands back
    waiting = set_operator_hold(services, KEY, "handback", "op-7")

    # Then the waiting message is due for an answer, in a handback batch
    assert waiting is not None
    assert (waiting.batch_id, [m["wamid"] for m in waiting.messages]) == ("handback:w1", ["w1"])
    entry = process_batch(services, waiting.conversation, waiting.batch_id, parsed(*waiting.messages))
    assert entry is not None and entry.state == "sent"
    assert len(whatsapp.sent) == 2
    # And the model saw the whole history, the operator's turn marked
    turns = [(t.role, t.text) for t in model.calls[-1]]
    assert turns[0] == ("user", "I need help with my order")
    assert turns[1][0] == "model" and turns[1][1].endswith("\n\n[human operator] Which order number?")
    assert turns[-1] == ("user", "It is 4471")
    # A repeated handback answers nothing more
    assert set_operator_hold(services, KEY, "handback", "op-7") is None


def test_handback_with_nothing_waiting_sends_nothing(services, whatsapp):
    process_batch(services, KEY, "b0", parsed(inbound("w0", "hi")))
    set_operator_hold(services, KEY, "takeover", "op-7")
    sync_operator_message(services, KEY, "All sorted!", message_id="op-1")
    assert set_operator_hold(services, KEY, "handback") is None
    assert len(whatsapp.sent) == 1


def test_a_takeover_while_the_model_writes_stops_the_reply(services, whatsapp, model, db):
    # Given the operator takes over (the database flag) while the model is writing
    def take_over():
        with session_scope(db) as session:
            set_hold_flag(session, KEY, "takeover", "op-7")

    model.during = take_over

    # When the reply is ready
    entry = process_batch(services, KEY, "b1", parsed(inbound("w1", "hello")))

    # Then the flag, re-read before the send, stops it; the unsent reply is not history
    assert entry is None
    assert whatsapp.sent == []
    assert [m.id for m in services.graph.messages(KEY)] == ["w1"]


def test_an_operator_message_for_a_customer_without_any_id_is_refused_clearly(services, whatsapp, db):
    import pytest

    from app.errors import InvalidTaskArguments

    with pytest.raises(InvalidTaskArguments, match="has no wa_id or user_id"):
        sync_operator_message(services, "nobody-known", "Hello?", message_id="op-9", send=True)
    assert whatsapp.sent == []
    with db() as session:
        assert session.scalars(select(Message)).all() == []


def test_a_batch_that_waited_for_the_lock_through_a_handback_is_answered(services, whatsapp, monkeypatch):
    from app import replies

    # Given a held conversation, and a batch stored while held whose task then waits
    # for the lock while the operator hands back (the handback cannot see the batch yet)
    set_operator_hold(services, KEY, "takeover", "op-7")
    real_lock = replies.conversation_lock

    handed_back = []

    def handback_while_waiting(*args, **kwargs):
        if not handed_back:  # (the handback takes the lock too)
            handed_back.append(True)
            assert set_operator_hold(services, KEY, "handback", "op-7") is None
        return real_lock(*args, **kwargs)

    monkeypatch.setattr(replies, "conversation_lock", handback_while_waiting)

    # When the batch's task gets the lock
    entry = process_batch(services, KEY, "b1", parsed(inbound("w1", "anyone there?")))

    # Then it reads the flag afresh and answers
    assert entry is not None and entry.state == "sent"
    assert [s.callback_data for s in whatsapp.sent] == ["b1"]


def test_operators_work_on_the_embedded_sqlite_without_waiting_for_its_write_lock(tmp_path, redis_client, whatsapp,
                                                                                  model):
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    from app.checkpoints import strict_serializer
    from app.db import create_schema, make_engine, make_session_factory
    from app.graph import ConversationGraph
    from app.lock import LockTerms
    from app.replies import Services

    # Given the embedded defaults: one SQLite file for the tables and the
    # checkpoints (the checkpointer waits 1 s, not 30, for the write lock)
    path = tmp_path / "assistant.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=1)
    conn.execute("PRAGMA journal_mode=WAL")
    saver = SqliteSaver(conn, serde=strict_serializer())
    saver.setup()
    try:
        sqlite_services = Services(sessions=make_session_factory(engine), redis=redis_client,
                                   graph=ConversationGraph(saver, model), whatsapp=whatsapp,
                                   lock_terms=lambda: LockTerms(ttl_s=60))
        process_batch(sqlite_services, KEY, "b0", parsed(inbound("w0", "hi")))

        # When an operator takes over, writes from the Business app (not sent), and hands back
        set_operator_hold(sqlite_services, KEY, "takeover", "op-7")
        row = sync_operator_message(sqlite_services, KEY, "Rita here.", message_id="op-1", operator_id="op-7")
        assert set_operator_hold(sqlite_services, KEY, "handback", "op-7") is None

        # Then each step was stored in the tables and in the history
        assert row is not None and row.author == "operator"
        with make_session_factory(engine)() as session:
            assert session.scalars(select(Message.author).order_by(Message.id)).all() == [
                "customer", "ai", "operator"]
            assert session.scalars(select(OperatorAction.action).order_by(OperatorAction.id)).all() == [
                "takeover", "message", "handback"]
        assert [m.id for m in sqlite_services.graph.messages(KEY)] == ["w0", "reply:b0", "op-1"]
        assert sqlite_services.graph.operator_active(KEY) is False
    finally:
        conn.close()
        engine.dispose()
