"""One AI reply per batch, at most once, through the graph (PostgreSQL, Redis)."""

from __future__ import annotations

import dataclasses

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import select

from app import replies
from app.db import Message, session_scope
from app.db.models import MessageStatus, OutboxEntry
from app.devtools.whatsapp_standin import WhatsAppStandin
from app.errors import TransientError
from app.graph import UNANSWERABLE_NAME
from app.replies import process_batch
from app.status import StatusUpdate, record_status
from app.whatsapp import WhatsAppClient
from tests.support.conversations import inbound, parsed
from tests.support.fixtures import OFFLINE
from tests.support.waiting import wait_for
from tests.support.whatsapp_fake import Crash, FakePermanentError, FakeTransientError


def rows(db, model=Message, *where):
    with db() as session:
        return session.scalars(select(model).where(*where).order_by(model.id)).all()


def test_a_batch_gets_one_reply_sent_to_the_customers_number(services, whatsapp, model, db):
    # Given two buffered messages of one customer
    batch = parsed(inbound("w1", "hello"), inbound("w2", "do you ship to Lisbon?"))

    # When the batch is processed
    entry = process_batch(services, "15550001111", "b1", batch)

    # Then one model call saw both, in order, and one reply went to the number
    assert [t.text for t in model.calls[0]] == ["hello\n\ndo you ship to Lisbon?"]
    (sent,) = whatsapp.sent
    assert (sent.to, sent.recipient, sent.callback_data) == ("15550001111", None, "b1")
    assert whatsapp.read == [("w2", True)]
    assert entry is not None and (entry.state, entry.wamid) == ("sent", sent.wamid)
    (reply,) = rows(db, Message, Message.author == "ai")
    assert (reply.wamid, reply.batch_id, reply.status, reply.text) == (sent.wamid, "b1", "sent", sent.text)
    history = services.graph.messages("15550001111")
    assert [m.id for m in history] == ["w1", "w2", "reply:b1"]


def test_running_a_batch_twice_sends_one_reply(services, whatsapp, model, db):
    batch = parsed(inbound("w1", "hello"))
    first = process_batch(services, "15550001111", "b1", batch)
    second = process_batch(services, "15550001111", "b1", batch)

    assert len(whatsapp.sent) == 1
    assert len(model.calls) == 1
    assert first is not None and second is not None and first.id == second.id
    assert len(rows(db, Message, Message.author == "ai")) == 1
    assert [m.id for m in services.graph.messages("15550001111")] == ["w1", "reply:b1"]


def test_a_task_that_dies_after_the_model_call_and_before_the_send_replies_once_when_rerun(
        services, whatsapp, model, db, monkeypatch):
    # Given a run that dies between the model's answer and the send
    real_send_once = replies.send_once

    def die(*args, **kwargs):
        raise Crash("worker died before the send")

    monkeypatch.setattr(replies, "send_once", die)
    batch = parsed(inbound("w1", "hello"))
    with pytest.raises(Crash):
        process_batch(services, "15550001111", "b1", batch)
    assert whatsapp.sent == [] and rows(db, OutboxEntry) == []

    # When the task runs again (redelivery)
    monkeypatch.setattr(replies, "send_once", real_send_once)
    entry = process_batch(services, "15550001111", "b1", batch)

    # Then the checkpointed answer is sent, once, without a second model call
    assert len(whatsapp.sent) == 1
    assert len(model.calls) == 1
    assert entry is not None and entry.state == "sent"
    assert process_batch(services, "15550001111", "b1", batch).id == entry.id
    assert len(whatsapp.sent) == 1


def test_a_task_that_dies_after_the_send_and_before_storing_the_wamid_never_resends(services, whatsapp, db):
    # Given a run that dies right after WhatsApp accepted the reply
    whatsapp.crash_after_send = True
    batch = parsed(inbound("w1", "hello"))
    with pytest.raises(Crash):
        process_batch(services, "15550001111", "b1", batch)
    (entry,) = rows(db, OutboxEntry)
    assert (entry.state, entry.wamid) == ("sending", None)

    # When the task runs again and nothing proves the send
    settled = process_batch(services, "15550001111", "b1", batch)

    # Then it is marked unknown and not sent again
    assert len(whatsapp.sent) == 1
    assert settled is not None and settled.state == "unknown"
    (reply,) = rows(db, Message, Message.author == "ai")
    assert reply.status == "unknown"

    # And a status webhook echoing the batch id later completes it
    sent = whatsapp.sent[0]
    with session_scope(db) as session:
        record_status(session, StatusUpdate.parse({"id": sent.wamid, "status": "delivered", "timestamp": "2",
                                                   "biz_opaque_callback_data": "b1"}))
    (entry,) = rows(db, OutboxEntry)
    assert (entry.state, entry.wamid) == ("sent", sent.wamid)
    (reply,) = rows(db, Message, Message.author == "ai")
    assert (reply.wamid, reply.status) == (sent.wamid, "delivered")


def test_a_crashed_send_that_a_status_webhook_proves_is_completed_with_its_wamid(services, whatsapp, db):
    whatsapp.crash_after_send = True
    batch = parsed(inbound("w1", "hello"))
    with pytest.raises(Crash):
        process_batch(services, "15550001111", "b1", batch)
    # Meta's "sent" status for it arrives before the rerun
    sent = whatsapp.sent[0]
    with session_scope(db) as session:
        record_status(session, StatusUpdate.parse({"id": sent.wamid, "status": "sent", "timestamp": "2",
                                                   "biz_opaque_callback_data": "b1"}))

    entry = process_batch(services, "15550001111", "b1", batch)

    assert len(whatsapp.sent) == 1
    assert entry is not None and (entry.state, entry.wamid) == ("sent", sent.wamid)
    (reply,) = rows(db, Message, Message.author == "ai")
    assert (reply.wamid, reply.status) == (sent.wamid, "sent")


def test_a_permanent_whatsapp_error_is_recorded_and_not_retried(services, whatsapp, db):
    whatsapp.fail_next.append(FakePermanentError(131047, "Re-engagement message"))
    entry = process_batch(services, "15550001111", "b1", parsed(inbound("w1", "hello")))

    assert entry is not None and (entry.state, entry.error_code, entry.error_title) == (
        "failed", 131047, "Re-engagement message")
    (reply,) = rows(db, Message, Message.author == "ai")
    assert (reply.status, reply.error_code, reply.error_title) == ("failed", 131047, "Re-engagement message")
    # The customer never saw it: it is not in the history
    assert [m.id for m in services.graph.messages("15550001111")] == ["w1"]
    assert process_batch(services, "15550001111", "b1", parsed(inbound("w1", "hello"))).state == "failed"
    assert whatsapp.sent == []


def test_a_transient_whatsapp_error_propagates_and_the_retry_sends(services, whatsapp, db):
    whatsapp.fail_next.append(FakeTransientError(130429, "Rate limit hit"))
    batch = parsed(inbound("w1", "hello"))
    with pytest.raises(TransientError):
        process_batch(services, "15550001111", "b1", batch)
    assert rows(db, OutboxEntry) == []
    # The unsent reply is no part of the conversation (the retries may never succeed)
    assert [m.id for m in services.graph.messages("15550001111")] == ["w1"]

    entry = process_batch(services, "15550001111", "b1", batch)

    assert entry is not None and entry.state == "sent"
    assert len(whatsapp.sent) == 1
    assert len(rows(db, Message, Message.author == "ai")) == 1


def test_reactions_and_system_messages_are_stored_and_never_answered(services, whatsapp, db):
    batch = parsed(
        inbound("w-r", "[reaction 👍]", kind="reaction", reaction_to="wamid.x", emoji="👍"),
        inbound("w-s", "User changed number", kind="system"),
    )
    assert process_batch(services, "15550001111", "b1", batch) is None

    assert whatsapp.sent == [] and whatsapp.read == []
    stored = rows(db, Message)
    assert [(m.wamid, m.kind, m.answerable) for m in stored] == [("w-r", "reaction", False),
                                                                 ("w-s", "system", False)]
    assert (stored[0].reaction_to, stored[0].emoji) == ("wamid.x", "👍")
    # The reaction is part of the history, marked unanswerable; the system notice is not the customer's words
    assert [(m.id, m.name) for m in services.graph.messages("15550001111")] == [("w-r", UNANSWERABLE_NAME)]


def test_a_reaction_never_reaches_the_model_alone_or_with_the_words_it_was_buffered_with(services, whatsapp,
                                                                                         model, db):
    # Given an answered question
    process_batch(services, "15550001111", "b1", parsed(inbound("w1", "do you ship to Lisbon?")))
    # When the customer reacts to the answer: stored, not answered, the model not asked
    assert process_batch(services, "15550001111", "b2", parsed(
        inbound("w-r1", "[reaction 👍]", kind="reaction", reaction_to="wamid.x", emoji="👍"))) is None
    assert len(model.calls) == 1 and len(whatsapp.sent) == 1
    # And then writes, with another reaction in the same buffer
    process_batch(services, "15550001111", "b3", parsed(
        inbound("w2", "and to Porto?"),
        inbound("w-r2", "[reaction 🙏]", kind="reaction", reaction_to="wamid.x", emoji="🙏")))

    # Then the model saw the conversation's words only, and answered once more
    assert [(t.role, t.text) for t in model.calls[-1]] == [
        ("user", "do you ship to Lisbon?"), ("model", OFFLINE + "do you ship to Lisbon?"), ("user", "and to Porto?")]
    assert len(model.calls) == 2 and len(whatsapp.sent) == 2
    assert whatsapp.read[-1] == ("w2", True)
    # And the reactions stay in the history, where they arrived
    assert [m.id for m in services.graph.messages("15550001111")] == ["w1", "reply:b1", "w-r1", "w2", "w-r2",
                                                                      "reply:b3"]


def test_a_username_only_customer_is_answered_through_recipient(services, whatsapp, db):
    user_id = "BR.70021933458812006655"
    batch = parsed(inbound("w-u", "hello, do you ship to Brazil?", wa_id=None, user_id=user_id))

    process_batch(services, user_id, "b1", batch)

    (sent,) = whatsapp.sent
    assert (sent.to, sent.recipient) == (None, user_id)


def test_a_changed_number_moves_the_customer_and_keeps_the_conversation(services, whatsapp, db):
    from app.db.models import Conversation, Customer

    # Given a customer who wrote from 16505551234
    process_batch(services, "16505551234", "b1", parsed(inbound("w1", "hi", wa_id="16505551234")))
    # When WhatsApp reports the change of number
    process_batch(services, "16505551234", "b2", parsed(
        inbound("w-sys", "User changed from 16505551234 to 16505559876", kind="system", wa_id="16505551234",
                new_wa_id="16505559876")))
    # And the customer writes from the new number
    process_batch(services, "16505559876", "b3", parsed(inbound("w2", "still me", wa_id="16505559876")))

    # Then one conversation, one customer, and the reply goes to the new number
    (conversation,) = rows(db, Conversation, Conversation.wa_id == "16505559876")
    (customer,) = rows(db, Customer, Customer.id == conversation.customer_id)
    assert rows(db, Conversation, Conversation.customer_key == "16505559876") == []
    assert (conversation.customer_key, conversation.wa_id) == ("16505551234", "16505559876")
    assert (customer.wa_id, customer.previous_wa_id) == ("16505559876", "16505551234")
    assert [s.to for s in whatsapp.sent] == ["16505551234", "16505559876"]
    assert [m.id for m in services.graph.messages("16505551234")] == ["w1", "reply:b1", "w2", "reply:b3"]


def test_a_status_history_row_is_kept_for_every_status(db):
    with session_scope(db) as session:
        for status in ("sent", "read", "delivered"):
            record_status(session, StatusUpdate.parse({"id": "w-h", "status": status, "timestamp": "1"}))
    assert [r.status for r in rows(db, MessageStatus)] == ["sent", "read", "delivered"]


def test_the_history_holds_customer_and_ai_turns_as_messages(services):
    process_batch(services, "15550001111", "b1", parsed(inbound("w1", "hello")))
    customer, reply = services.graph.messages("15550001111")
    assert isinstance(customer, HumanMessage) and isinstance(reply, AIMessage)


def test_a_model_failure_propagates_and_the_retry_answers_once(services, whatsapp, model, db):
    # Given the model is out of quota for one call
    def quota_exhausted():
        model.during = None
        raise TransientError("model quota exhausted")

    model.during = quota_exhausted
    batch = parsed(inbound("w1", "hello"))
    with pytest.raises(TransientError):
        process_batch(services, "15550001111", "b1", batch)
    assert whatsapp.sent == [] and rows(db, OutboxEntry) == []

    # When the task is retried
    entry = process_batch(services, "15550001111", "b1", batch)

    # Then one reply, and the history holds the message once
    assert entry is not None and entry.state == "sent"
    assert len(whatsapp.sent) == 1
    assert [m.id for m in services.graph.messages("15550001111")] == ["w1", "reply:b1"]


def test_the_pipeline_runs_on_the_embedded_sqlite_with_its_checkpointer(tmp_path, redis_client, whatsapp, model):
    from app.checkpoints import open_checkpoints
    from app.db import create_schema, make_engine, make_session_factory
    from app.graph import ConversationGraph
    from app.lock import LockTerms
    from app.replies import Services

    # Given the embedded defaults: one SQLite file for the tables and the checkpoints
    url = f"sqlite:///{tmp_path / 'assistant.sqlite3'}"
    engine = make_engine(url)
    create_schema(engine)
    checkpoints = open_checkpoints(url)
    checkpoints.setup()
    try:
        sqlite_services = Services(sessions=make_session_factory(engine), redis=redis_client,
                                   graph=ConversationGraph(checkpoints.saver, model), whatsapp=whatsapp,
                                   lock_terms=lambda: LockTerms(ttl_s=60))
        # When a batch is answered twice
        for _ in range(2):
            process_batch(sqlite_services, "15550001111", "b1", parsed(inbound("w1", "hello")))
        # Then one reply, and the thread is checkpointed in SQLite
        assert len(whatsapp.sent) == 1
        reopened = open_checkpoints(url)
        try:
            graph = ConversationGraph(reopened.saver, model)
            assert [m.id for m in graph.messages("15550001111")] == ["w1", "reply:b1"]
        finally:
            reopened.close()
    finally:
        checkpoints.close()
        engine.dispose()


def test_a_removed_reaction_keeps_its_empty_emoji(services, whatsapp, db):
    batch = parsed(inbound("w-r0", "[reaction removed]", kind="reaction", reaction_to="wamid.x", emoji=""))
    assert process_batch(services, "15550001111", "b1", batch) is None
    (row,) = rows(db, Message)
    assert (row.kind, row.reaction_to, row.emoji, row.answerable) == ("reaction", "wamid.x", "", False)
    assert whatsapp.sent == []


def test_an_empty_answer_is_replaced_by_a_polite_fallback(services, whatsapp, model):
    from app.llm import FALLBACK_REPLY

    model._inner.generate = lambda system_prompt, turns: "   "
    process_batch(services, "15550001111", "b1", parsed(inbound("w1", "hello")))
    assert [s.text for s in whatsapp.sent] == [FALLBACK_REPLY]


def test_a_username_customer_who_shows_a_phone_number_keeps_one_conversation(services, whatsapp, db):
    from app.db.models import Conversation

    user_id = "BR.70021933458812006655"
    process_batch(services, user_id, "b1", parsed(inbound("w1", "hi", wa_id=None, user_id=user_id)))
    # Later Meta sends the same customer's messages with a wa_id too (the webhook keys them by it)
    process_batch(services, "5511987654321", "b2", parsed(inbound("w2", "me again", wa_id="5511987654321",
                                                                  user_id=user_id)))

    (conversation,) = rows(db, Conversation, Conversation.user_id == user_id)
    assert (conversation.customer_key, conversation.wa_id) == (user_id, "5511987654321")
    assert [(s.to, s.recipient) for s in whatsapp.sent] == [(None, user_id), ("5511987654321", None)]
    assert [m.id for m in services.graph.messages(user_id)] == ["w1", "reply:b1", "w2", "reply:b2"]


def test_a_send_that_timed_out_after_reaching_whatsapp_is_never_resent(services, db):
    # Given the real client on the stand-in, whose answer to the send comes
    # after the client's timeout (the mark-read before it is answered at once)
    with WhatsAppStandin() as standin, \
            WhatsAppClient(standin.url, "t", "1", timeout_s=0.3) as client:
        standin.stall(0)
        standin.stall(2)
        real = dataclasses.replace(services, whatsapp=client)
        batch = parsed(inbound("w1", "hello"))

        # When the send times out, and the task is retried
        with pytest.raises(TransientError):
            process_batch(real, "15550001111", "b1", batch)
        (entry,) = rows(db, OutboxEntry)
        assert entry.state == "sending"
        settled = process_batch(real, "15550001111", "b1", batch)

        # Then the retry settles the reply as unknown and sends nothing:
        # the stand-in got the one send that timed out, and no other
        assert settled is not None and settled.state == "unknown"
        # It may have reached the customer: it stays in the history
        assert [m.id for m in real.graph.messages("15550001111")] == ["w1", "reply:b1"]
        wait_for(lambda: [r for r in standin.requests() if r["kind"] == "send"])
        assert len([r for r in standin.requests() if r["kind"] == "send"]) == 1


class _Verbose:
    """A model that answers far more than one WhatsApp message holds."""

    def generate(self, system_prompt, turns):
        return "This lamp comes in blue. " * 300


def test_a_reply_longer_than_whatsapps_limit_is_cut_and_sent(services, checkpoints, db):
    from app.graph import ConversationGraph
    from app.whatsapp import MAX_TEXT_LENGTH

    # Given a model whose answer is longer than WhatsApp's 4096 characters,
    # and the real client on the stand-in (which Meta's limit would refuse)
    with WhatsAppStandin() as standin, WhatsAppClient(standin.url, "t", "1", timeout_s=5) as client:
        verbose = dataclasses.replace(services, whatsapp=client,
                                      graph=ConversationGraph(checkpoints.saver, _Verbose()))

        # When the batch is answered
        entry = process_batch(verbose, "15550001111", "b1", parsed(inbound("w1", "colours?")))

        # Then one message went out, cut at a sentence's end with an ellipsis,
        # and the history holds the text the customer got
        assert entry is not None and entry.state == "sent"
        (send,) = [r for r in standin.requests() if r["kind"] == "send"]
        text = send["body"]["text"]["body"]
        assert len(text) <= MAX_TEXT_LENGTH and text.endswith("This lamp comes in blue. …")
        assert verbose.graph.messages("15550001111")[-1].content == text


def test_a_text_the_client_refuses_is_recorded_as_failed_not_left_sending(services, whatsapp, db):
    # Given a client that refuses the text itself (as send_text does for a too long one)
    whatsapp.fail_next.append(ValueError("a WhatsApp text is at most 4096 characters, got 5000"))

    entry = process_batch(services, "15550001111", "b1", parsed(inbound("w1", "hello")))

    assert entry is not None and entry.state == "failed" and "at most 4096" in entry.error_title
    (reply,) = rows(db, Message, Message.author == "ai")
    assert reply.status == "failed" and "at most 4096" in reply.error_title
    assert [m.id for m in services.graph.messages("15550001111")] == ["w1"]


def test_messages_are_marked_read_only_when_the_model_answers_them(services, whatsapp, model, db):
    # Given a batch that was answered
    process_batch(services, "15550001111", "b1", parsed(inbound("w1", "hello")))
    assert whatsapp.read == [("w1", True)]

    # When its messages come again in another batch (the history answers them),
    # and when the graph still holds the operator's flag (a handback not yet
    # written to the graph)
    assert process_batch(services, "15550001111", "b2", parsed(inbound("w1", "hello"))) is None
    services.graph.write_as_operator("15550001111", {"operator_active": True})
    assert process_batch(services, "15550001111", "b3", parsed(inbound("w2", "anyone?"))) is None

    # Then no run that does not answer shows the customer blue ticks and "typing…"
    assert whatsapp.read == [("w1", True)]
    assert len(whatsapp.sent) == 1 and len(model.calls) == 1
