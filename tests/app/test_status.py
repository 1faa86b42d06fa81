"""Delivery statuses move forward only and wait for their message (PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.conversation import InboundMessage, get_or_create_conversation, store_inbound
from app.db import Message, session_scope
from app.errors import InvalidTaskArguments
from app.status import StatusUpdate, record_status


def status(wamid, value, **extra):
    return StatusUpdate.parse({"id": wamid, "status": value, "timestamp": "1", **extra})


def test_a_status_never_moves_backwards(db):
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, "c1")
        session.add(Message(conversation=conversation, author="ai", wamid="w1", status="sending"))
    results = []
    for value in ("delivered", "sent", "read", "delivered"):
        with session_scope(db) as session:
            results.append(record_status(session, status("w1", value)))
    assert results == ["delivered", "delivered", "read", "read"]


def test_failed_keeps_metas_code_and_title(db):
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, "c1")
        session.add(Message(conversation=conversation, author="ai", wamid="w2", status="sent"))
    failed = status("w2", "failed", errors=[{"code": 131047, "title": "Re-engagement message"}])
    with session_scope(db) as session:
        assert record_status(session, failed) == "failed"
    with session_scope(db) as session:
        message = session.scalars(select(Message).where(Message.wamid == "w2")).one()
        assert (message.error_code, message.error_title) == (131047, "Re-engagement message")


def test_a_status_for_an_unknown_wamid_is_kept_and_applied_when_the_message_appears(db):
    with session_scope(db) as session:
        assert record_status(session, status("w3", "read")) is None
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, "c1")
        row = store_inbound(session, conversation, InboundMessage("w3", "hello"))
        assert row.status == "read"


@pytest.mark.parametrize(
    "data, message",
    [
        ("sent", "must be an object"),
        ({"status": "sent"}, "status.id"),
        ({"id": "w", "status": "opened"}, "status.status must be one of"),
        ({"id": "w", "status": "sent", "timestamp": "noon"}, "status.timestamp"),
        ({"id": "w", "status": "sent", "timestamp": float("inf")}, "status.timestamp must be seconds, got inf"),
        ({"id": "w", "status": "sent", "timestamp": 2**63}, "status.timestamp"),
        ({"id": "w", "status": ["sent"]}, "status.status must be one of .*, got a list"),
    ],
)
def test_malformed_statuses_are_refused(data, message):
    with pytest.raises(InvalidTaskArguments, match=message):
        StatusUpdate.parse(data)


@pytest.mark.parametrize("code, kept", [(131047, 131047), ("131047", 131047), ("\u00b2", None), ("0x10", None),
                                        (-1, None), (2**31, None), ("1" * 10, None), (True, None), (None, None),
                                        ([131047], None)])
def test_only_error_codes_an_integer_column_holds_are_kept(code, kept):
    update = StatusUpdate.parse({"id": "w", "status": "failed", "timestamp": "1", "errors": [{"code": code}]})
    assert update.error_code == kept



def test_a_racing_insert_of_one_wamid_returns_the_stored_row(db):
    import threading

    from sqlalchemy import func

    with session_scope(db) as session:
        get_or_create_conversation(session, "c1")
    # Given one transaction that inserted the wamid and has not committed yet
    first = db()
    store_inbound(first, get_or_create_conversation(first, "c1"), InboundMessage("w-race", "first"))
    first.flush()

    # When a second one stores the same wamid (it blocks on the unique key)
    result = {}

    def second():
        with session_scope(db) as session:
            row = store_inbound(session, get_or_create_conversation(session, "c1"), InboundMessage("w-race", "2nd"))
            result["text"] = row.text

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()
    first.commit()
    first.close()
    thread.join(10)

    # Then it gets the first one's row instead of failing
    assert result == {"text": "first"}
    with session_scope(db) as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.wamid == "w-race")) == 1


def test_free_text_longer_than_its_column_is_cut_and_stored(db):
    # PostgreSQL refuses a value longer than a VARCHAR column (SQLite would not show it)
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, "c1")
        session.add(Message(conversation=conversation, author="ai", wamid="w3", status="sent"))
    failed = status("w3", "failed", errors=[{"code": 131047, "title": "t" * 1000}], recipient_id="1" * 300)
    assert len(failed.error_title) == 255 and len(failed.recipient_id) == 128
    with session_scope(db) as session:
        assert record_status(session, failed) == "failed"

    # and so is a customer's profile name
    message = InboundMessage.parse({"wamid": "w4", "text": "hi", "wa_id": "15550001111", "profile_name": "P" * 999})
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, "15550001111", wa_id="15550001111",
                                                  profile_name=message.profile_name)
        store_inbound(session, conversation, message)
    with session_scope(db) as session:
        assert session.scalars(select(Message.wamid).where(Message.wamid == "w4")).one() == "w4"


@pytest.mark.parametrize(("fields", "reason"), [
    ({"timestamp": float("inf")}, "message.timestamp: a timestamp must be seconds, got inf"),
    ({"timestamp": 10**30}, "message.timestamp: a timestamp must be seconds from 0 to 2\\*\\*63-1"),
    ({"text": "hi \udfff"}, "message.text is not valid Unicode text"),
    ({"wa_id": "1555\ud800"}, "message.wa_id is not valid Unicode text"),
])
def test_an_inbound_message_postgresql_cannot_store_is_refused_by_the_tasks_check(fields, reason):
    # (it failed deep in the task, with OverflowError, DataError or UnicodeEncodeError)
    with pytest.raises(InvalidTaskArguments, match=reason):
        InboundMessage.parse({"wamid": "w5", "text": "hi", "wa_id": "15550001111", **fields})


def test_a_nul_in_what_the_customer_wrote_is_replaced_and_the_message_stored(db):
    # (PostgreSQL's text refuses NUL: the task failed, and the customer's message was lost)
    message = InboundMessage.parse({"wamid": "w6", "text": "a\x00b", "wa_id": "15550001111", "profile_name": "P\x00"})
    assert (message.text, message.profile_name) == ("a\ufffdb", "P\ufffd")
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, "15550001111", wa_id="15550001111",
                                                  profile_name=message.profile_name)
        store_inbound(session, conversation, message)
    with session_scope(db) as session:
        assert session.scalars(select(Message.text).where(Message.wamid == "w6")).one() == "a\ufffdb"


@pytest.mark.parametrize("field", ["wamid", "wa_id", "context_id"])
def test_a_nul_in_an_identifier_is_refused_by_the_tasks_check(field):
    with pytest.raises(InvalidTaskArguments, match=f"message.{field} holds a NUL character"):
        InboundMessage.parse({"wamid": "w7", "text": "hi", "wa_id": "15550001111", field: "x\x00y"})


def test_a_nul_in_a_status_is_refused_in_its_wamid_and_replaced_elsewhere(db):
    with pytest.raises(InvalidTaskArguments, match="holds a NUL character"):
        StatusUpdate.parse({"id": "w\x00", "status": "read", "timestamp": "1"})
    failed = StatusUpdate.parse({"id": "w8", "status": "failed", "timestamp": "1", "recipient_id": "1\x00",
                                 "errors": [{"code": 131047, "title": "t\x00"}], "biz_opaque_callback_data": "c\x00"})
    assert (failed.recipient_id, failed.error_title, failed.callback_data) == ("1\ufffd", "t\ufffd", "c\ufffd")
    with session_scope(db) as session:
        assert record_status(session, failed) is None
