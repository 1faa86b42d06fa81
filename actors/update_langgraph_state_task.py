"""update_langgraph_state_task: an operator takes a conversation over or hands it back."""

from __future__ import annotations

from actors import runtime, validate
from actors.task_options import runbook_task
from app.db import session_scope
from app.errors import InvalidTaskArguments
from app.operator import ACTIONS, set_operator_hold

__all__ = ["update_langgraph_state_task"]


@runbook_task(queue="state", priority=8)
def update_langgraph_state_task(conversation: str, action: str, operator_id: str | None = None) -> bool:
    """Set whether an operator holds ``conversation``; returns the new flag."""
    validate.text("conversation", conversation, max_length=128)
    if action not in ACTIONS:
        raise InvalidTaskArguments(f"action must be one of {', '.join(ACTIONS)}, got {action!r:.80}")
    if operator_id is not None:
        validate.text("operator_id", operator_id, max_length=128)
    with session_scope(runtime.get().sessions) as session:
        return set_operator_hold(session, conversation, action, operator_id).operator_active
