"""Storage: SQLAlchemy models and the session factory."""

from app.db.models import Base, Conversation, Message, MessageStatus
from app.db.session import create_schema, make_engine, make_session_factory, session_scope

__all__ = [
    "Base",
    "Conversation",
    "Message",
    "MessageStatus",
    "create_schema",
    "make_engine",
    "make_session_factory",
    "session_scope",
]
