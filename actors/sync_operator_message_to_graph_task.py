"""sync_operator_message_to_graph_task: what an operator wrote enters the history."""

from __future__ import annotations

from actors import runtime, validate
from actors.task_options import runbook_task
from app.db import session_scope
from app.operator import record_operator_message

__all__ = ["sync_operator_message_to_graph_task"]


@runbook_task(queue="state", priority=7)
def sync_operator_message_to_graph_task(conversation: str, text: str, message_id: str,
                                        operator_id: str | None = None) -> None:
    """Store the operator's message ``message_id`` in ``conversation``."""
    validate.text("conversation", conversation, max_length=128)
    validate.text("text", text)
    validate.text("message_id", message_id, max_length=255)
    if operator_id is not None:
        validate.text("operator_id", operator_id, max_length=128)
    with session_scope(runtime.get().sessions) as session:
        record_operator_message(session, conversation, text, message_id=message_id, operator_id=operator_id)
