"""Who the customer is, when Meta's ids for one person arrive apart."""

from __future__ import annotations

from sqlalchemy import select

from app.customers import get_or_create_conversation
from app.db import session_scope
from app.db.models import Customer

NUMBER, USER_ID = "15550002222", "US.70021933458812006655"


def test_a_message_with_the_number_of_one_customer_and_the_user_id_of_another_is_stored(db):
    # Given one customer known by user id only (a username) and one by number only
    with session_scope(db) as session:
        get_or_create_conversation(session, USER_ID, user_id=USER_ID)
    with session_scope(db) as session:
        get_or_create_conversation(session, NUMBER, wa_id=NUMBER)

    # When a message names both (it violated the user id's unique constraint: the task failed, the message lost)
    with session_scope(db) as session:
        conversation = get_or_create_conversation(session, NUMBER, wa_id=NUMBER, user_id=USER_ID)
        assert conversation.customer_key == NUMBER

    # Then each id stays with the row that had it
    with session_scope(db) as session:
        rows = session.execute(select(Customer.wa_id, Customer.user_id).order_by(Customer.id)).all()
    assert [tuple(r) for r in rows] == [(None, USER_ID), (NUMBER, None)]
