"""Who the customer is, when Meta's ids for one person arrive apart."""

from __future__ import annotations

from sqlalchemy import event, select

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


def test_an_id_another_worker_gives_to_another_row_meanwhile_leaves_the_customer_as_it_was(db):
    # Given a customer known by number only
    with session_scope(db) as session:
        get_or_create_conversation(session, NUMBER, wa_id=NUMBER)

    # When a message names its user id too, and another worker (the same person's user-id-only
    # conversation, under another lock) stores a customer with that user id between the look-up
    # and the write (the unique constraint failed the task at commit, and the message was lost)
    def the_other_worker_stores_its_customer(state):
        columns = list(getattr(state.statement, "selected_columns", []))
        if not (len(columns) == 1 and columns[0].name == "id" and columns[0].table.name == "customers"):
            return None
        looked = state.invoke_statement().freeze()  # (the look-up found no other row with the id)
        with session_scope(db) as other:
            other.add(Customer(user_id=USER_ID))
        return looked()

    with session_scope(db) as session:
        event.listen(session, "do_orm_execute", the_other_worker_stores_its_customer)
        conversation = get_or_create_conversation(session, NUMBER, wa_id=NUMBER, user_id=USER_ID)
        assert conversation.customer_key == NUMBER

    # Then the message's conversation is stored, and each id stays with the row that had it
    with session_scope(db) as session:
        rows = session.execute(select(Customer.wa_id, Customer.user_id).order_by(Customer.id)).all()
    assert [tuple(r) for r in rows] == [(NUMBER, None), (None, USER_ID)]
