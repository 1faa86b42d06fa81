"""Who the customer is: a phone number, a business-scoped user id, or both.

A conversation is keyed by ``wa_id`` when Meta sends one, else by
``user_id``.  The key is the conversation's LangGraph thread and lock
name, so it never changes; when a customer changes number (a
``user_changed_number`` system message) the customer's and the
conversation's ``wa_id`` move to the new number, and messages from the
new number find the same conversation through the customer row.
"""

from __future__ import annotations

import re

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db.models import Conversation, Customer
from app.db.session import add_unless_taken

__all__ = ["find_conversation", "get_or_create_conversation", "change_number", "ids_from_key"]

#: A business-scoped user id: country code, dot, digits (``BR.70021933458812006655``).
_USER_ID = re.compile(r"[A-Z]{2}\.[0-9]+")


def ids_from_key(customer_key: str) -> tuple[str | None, str | None]:
    """(wa_id, user_id) that a conversation key stands for, when messages
    do not say (older queued messages carry only wamid and text)."""
    if customer_key.isdigit():
        return customer_key, None
    if _USER_ID.fullmatch(customer_key):
        return None, customer_key
    return None, None


def _find_customer(session: Session, wa_id: str | None, user_id: str | None) -> Customer | None:
    clauses = []
    if wa_id:
        clauses.append(Customer.wa_id == wa_id)
    if user_id:
        clauses.append(Customer.user_id == user_id)
    if not clauses:
        return None
    return session.scalars(select(Customer).where(or_(*clauses)).order_by(Customer.id)).first()


def find_conversation(session: Session, customer_key: str, *, wa_id: str | None = None,
                      user_id: str | None = None) -> Conversation | None:
    """The conversation of ``customer_key``, also when that is the customer's
    new number, or the customer is known by another of their ids (a
    username-only customer who now writes with a phone number)."""
    conversation = session.scalars(select(Conversation).where(Conversation.customer_key == customer_key)).first()
    if conversation is not None:
        return conversation
    customer = _find_customer(session, customer_key, customer_key) or _find_customer(session, wa_id, user_id)
    if customer is None:
        return None
    return session.scalars(
        select(Conversation).where(Conversation.customer_id == customer.id).order_by(Conversation.id)
    ).first()


def _link_customer(session: Session, conversation: Conversation, wa_id: str | None, user_id: str | None,
                   profile_name: str | None) -> None:
    customer = conversation.customer or _find_customer(session, wa_id, user_id)
    if customer is None:
        customer = Customer(wa_id=wa_id, user_id=user_id, profile_name=profile_name)
        if not add_unless_taken(session, customer):
            # Another worker stored this customer first.
            customer = _find_customer(session, wa_id, user_id)
            if customer is None:  # pragma: no cover - the row we collided with is gone
                return
    if wa_id and not customer.wa_id:
        _take_id(session, customer, Customer.wa_id, wa_id)
    if user_id and not customer.user_id:
        _take_id(session, customer, Customer.user_id, user_id)
    if profile_name:
        customer.profile_name = profile_name
    conversation.customer = customer


def _take_id(session: Session, customer: Customer, column: InstrumentedAttribute[str | None], value: str) -> None:
    """Give ``customer`` the id ``value`` unless another customer row holds it.

    An id another row holds is not taken from it (the rows may be one person
    known twice, by number only and by user id only): its unique constraint
    would fail the task, and the message with it.  The look-up is only a
    shortcut: another worker may give the id to a row of its own after it (two
    conversation keys of one person have two locks), so the id is written in a
    savepoint, and a clash leaves the customer as it was.
    """
    held = select(Customer.id).where(column == value, Customer.id != customer.id)
    if session.scalars(held).first() is not None:
        return
    session.flush()  # (what came before is not this savepoint's to undo)
    try:
        with session.begin_nested():
            setattr(customer, column.key, value)
    except IntegrityError:
        pass


def get_or_create_conversation(session: Session, customer_key: str, *, wa_id: str | None = None,
                               user_id: str | None = None, profile_name: str | None = None) -> Conversation:
    """The conversation of ``customer_key`` (wa_id, else user_id), created on
    first sight, with its customer's identities completed."""
    conversation = find_conversation(session, customer_key, wa_id=wa_id, user_id=user_id)
    if conversation is None:
        conversation = Conversation(customer_key=customer_key, wa_id=wa_id, user_id=user_id)
        if not add_unless_taken(session, conversation):
            # Another worker created it first.
            conversation = session.scalars(
                select(Conversation).where(Conversation.customer_key == customer_key)
            ).one()
    if wa_id and not conversation.wa_id:
        conversation.wa_id = wa_id
    if user_id and not conversation.user_id:
        conversation.user_id = user_id
    known_wa_id, known_user_id = wa_id or conversation.wa_id, user_id or conversation.user_id
    if known_wa_id or known_user_id:
        _link_customer(session, conversation, known_wa_id, known_user_id, profile_name)
    return conversation


def change_number(session: Session, conversation: Conversation, new_wa_id: str) -> None:
    """The customer now writes from ``new_wa_id``: replies go there."""
    customer = conversation.customer
    if customer is not None and customer.wa_id != new_wa_id:
        other = session.scalars(select(Customer).where(Customer.wa_id == new_wa_id)).first()
        if other is not None and other.id != customer.id:
            # The new number was a customer of its own: it is this one now.
            other.wa_id = None
            session.flush()
        customer.previous_wa_id = customer.wa_id
        customer.wa_id = new_wa_id
    conversation.wa_id = new_wa_id
