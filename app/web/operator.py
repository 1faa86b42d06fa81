"""The operator API: take a conversation over, write in it, hand it back, read it.

Every route needs ``Authorization: Bearer <OPERATOR_TOKEN>``.  Writes are
enqueued on the ``state`` queue and answered 202; the history is read
from the database.

- ``POST /operator/conversations/{key}/takeover`` and ``.../handback``,
  body optional ``{"operator_id": "..."}``: ``update_langgraph_state_task``.
- ``POST /operator/conversations/{key}/messages``, body ``{"text": "...",
  "operator_id": optional, "message_id": optional}``:
  ``sync_operator_message_to_graph_task``, which sends the text to
  WhatsApp (outbox key ``operator:<id>``) and adds it to the
  conversation's history, at most once per message id.  The id (returned)
  is a fresh UUID, or, when the client gives ``message_id`` (1 to 100 of
  ``A-Z a-z 0-9 . _ : -``), ``client:<key>:<message_id>``: the client's
  idempotency key, so a POST retried after a timeout or a 503 sends the
  message once (the first text under that id wins).  Give each message
  its own ``message_id`` within a conversation.
- ``GET /operator/conversations/{key}``: the conversation and its messages.

``{key}`` is any id of the customer: the conversation's key, or another
of their ids (a new number, a phone number next to a username), looked
up as the tasks look it up; the answers name the conversation's own key.
Every route answers 404 for a conversation that does not exist (an
operator cannot start one: there would be nobody to write to).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import falcon
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.customers import find_conversation
from app.db.models import Conversation, Message
from app.untrusted import encodable
from app.web.hooks import require_operator_token

__all__ = ["OperatorConversationResource", "MAX_KEY_LENGTH", "MAX_TEXT_LENGTH"]

logger = logging.getLogger(__name__)

#: Longest conversation key (a wa_id or a business-scoped user id).
MAX_KEY_LENGTH = 128
#: Longest operator message: WhatsApp's limit of a text body.
MAX_TEXT_LENGTH = 4096
#: Longest operator id.
MAX_OPERATOR_ID_LENGTH = 128
#: Messages returned by the history, at most (the latest ones).
MAX_HISTORY = 1000
#: A client's ``message_id``: its idempotency key for an operator message.
CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
#: Largest operator request body, in bytes.
MAX_BODY_BYTES = 64 * 1024


def _bad(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid request", description=description)


def _storable(name: str, value: str) -> str:
    """``value`` when PostgreSQL and Redis can store it: no NUL character
    (``"\\u0000"`` in JSON, ``%00`` in a path), no lone surrogate (``"\\ud800"``);
    else a 400, not a 202 whose task then fails, nor a 5xx."""
    if "\x00" in value:
        raise _bad(f"{name} must not hold a NUL character")
    if not encodable(value):
        raise _bad(f"{name} must be valid Unicode text (it holds a lone surrogate)")
    return value


def _check_key(key: str) -> str:
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise _bad(f"the conversation key must be 1 to {MAX_KEY_LENGTH} characters")
    return _storable("the conversation key", key)


def _body(req: falcon.Request, allowed: set[str], *, required: bool) -> dict[str, Any]:
    """The JSON object of the request, with only ``allowed`` fields."""
    if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(title="Body too large",
                                         description=f"the body must be at most {MAX_BODY_BYTES} bytes")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(title="Body too large",
                                         description=f"the body must be at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        if required:
            raise _bad("a JSON object body is required")
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise _bad(f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return body


def _operator_id(body: dict[str, Any]) -> str | None:
    value = body.get("operator_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_OPERATOR_ID_LENGTH:
        raise _bad(f"operator_id must be a string of 1 to {MAX_OPERATOR_ID_LENGTH} characters")
    return _storable("operator_id", value)


def _find(session: Session, key: str) -> Conversation:
    conversation = find_conversation(session, key)
    if conversation is None:
        raise falcon.HTTPNotFound(title="Unknown conversation", description=f"no conversation {key!r}")
    return conversation


def _client_message_id(body: dict[str, Any]) -> str | None:
    value = body.get("message_id")
    if value is None:
        return None
    if not isinstance(value, str) or not CLIENT_MESSAGE_ID.fullmatch(value):
        raise _bad("message_id must be 1 to 100 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
    return value


class OperatorConversationResource:
    """One conversation as the operator sees it; routes by suffix.

    Parameters:
      enqueue: ``enqueue(task_name, args, kwargs=None, **options)``.
      sessions: the database session factory (reads only).
      operator_token: OPERATOR_TOKEN; None refuses every call.
      new_id: a fresh unique string (a UUID4 in production).
    """

    def __init__(self, enqueue: Callable[..., Any], sessions: sessionmaker[Session], *, operator_token: str | None,
                 new_id: Callable[[], str]) -> None:
        self.enqueue = enqueue
        self.sessions = sessions
        self.operator_token = operator_token
        self.new_id = new_id

    def _conversation_key(self, key: str) -> str:
        """The key of the conversation ``key`` names; 404 when there is none."""
        with self.sessions() as session:
            return _find(session, key).customer_key

    def _send(self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
        try:
            self.enqueue(task, args, kwargs)
        except Exception as e:
            logger.error("Could not enqueue %s for conversation %s: %r.", task, args[0], e)
            raise falcon.HTTPServiceUnavailable(title="Not accepted",
                                                description="the queue is unavailable; try again") from e

    def _hold(self, req: falcon.Request, resp: falcon.Response, key: str, action: str) -> None:
        key = _check_key(key)
        operator_id = _operator_id(_body(req, {"operator_id"}, required=False))
        key = self._conversation_key(key)
        self._send("update_langgraph_state_task", (key, action, operator_id))
        resp.status = falcon.HTTP_202
        resp.media = {"conversation": key, "action": action, "operator_id": operator_id}

    @falcon.before(require_operator_token)
    def on_post_takeover(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        self._hold(req, resp, key, "takeover")

    @falcon.before(require_operator_token)
    def on_post_handback(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        self._hold(req, resp, key, "handback")

    @falcon.before(require_operator_token)
    def on_post_messages(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        key = _check_key(key)
        body = _body(req, {"text", "operator_id", "message_id"}, required=True)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _bad("text must be a non-empty string")
        if len(text) > MAX_TEXT_LENGTH:
            raise _bad(f"text must be at most {MAX_TEXT_LENGTH} characters, got {len(text)}")
        _storable("text", text)
        operator_id = _operator_id(body)
        client_id = _client_message_id(body)
        key = self._conversation_key(key)
        # Namespaced by conversation: message ids are unique across all of them.
        message_id = f"client:{key}:{client_id}" if client_id is not None else self.new_id()
        self._send("sync_operator_message_to_graph_task", (key, text, message_id),
                   {"operator_id": operator_id, "send": True})
        resp.status = falcon.HTTP_202
        resp.media = {"conversation": key, "message_id": message_id, "operator_id": operator_id}

    @falcon.before(require_operator_token)
    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        key = _check_key(key)
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_HISTORY, default=200)
        with self.sessions() as session:
            conversation = _find(session, key)
            rows = session.scalars(
                select(Message).where(Message.conversation_id == conversation.id)
                .order_by(Message.id.desc()).limit(limit)
            ).all()
            resp.media = {
                "conversation": conversation.customer_key,
                "wa_id": conversation.wa_id,
                "user_id": conversation.user_id,
                "operator_active": bool(conversation.operator_active),
                "operator_id": conversation.operator_id,
                "messages": [_message(m) for m in reversed(rows)],
            }


def _message(m: Message) -> dict[str, Any]:
    return {
        "author": m.author,
        "kind": m.kind,
        "text": m.text,
        "wamid": m.wamid,
        "status": m.status,
        "error_code": m.error_code,
        "error_title": m.error_title,
        "created_at": m.created_at.isoformat() if m.created_at else None,
    }
