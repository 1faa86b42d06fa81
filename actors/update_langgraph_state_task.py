"""update_langgraph_state_task: an operator takes a conversation over or hands it back."""

from __future__ import annotations

from dramatiq.middleware import CurrentMessage

from actors import runtime, validate
from actors.busy import requeue_later
from actors.process_message_task import process_message_task
from actors.task_options import runbook_task
from app.errors import InvalidTaskArguments
from app.lock import ConversationBusy

__all__ = ["update_langgraph_state_task"]


@runbook_task(queue="state", priority=8)
def update_langgraph_state_task(conversation: str, action: str, operator_id: str | None = None, *,
                                flag_applied: bool = False) -> str | None:
    """Set whether an operator holds ``conversation``.

    On handback, customer messages that waited unanswered go to
    ``process_message_task``; returns that batch's id.  ``flag_applied``
    is set on the copy re-sent when the conversation was busy: the action
    is in the database already, and only the graph is brought up to date.
    """
    # The domain (SQLAlchemy, LangGraph) loads at the first run, not at import: see actors.runtime.
    runtime.load_domain()
    from app.operator import ACTIONS, set_operator_hold

    validate.text("conversation", conversation, max_length=128)
    if action not in ACTIONS:
        raise InvalidTaskArguments(f"action must be one of {', '.join(ACTIONS)}, got {action!r:.80}")
    if operator_id is not None:
        validate.text("operator_id", operator_id, max_length=128)
    if not isinstance(flag_applied, bool):
        raise InvalidTaskArguments(f"flag_applied must be true or false, got {flag_applied!r:.80}")
    current = CurrentMessage.get_current_message()
    try:
        # A retry keeps the message's id: the action is not applied twice.
        waiting = set_operator_hold(runtime.services(runtime.get()), conversation, action, operator_id,
                                    flag_applied=flag_applied,
                                    action_id=current.message_id if current is not None else None)
    except ConversationBusy:
        # Never re-apply the action: a later takeover or handback may have
        # been applied meanwhile, and the last one must win.
        requeue_later(update_langgraph_state_task, conversation, action, operator_id, flag_applied=True)
        return None
    if waiting is None:
        return None
    # Sent after the commit of the handback, so the answer sees it.
    process_message_task.send(waiting.conversation, waiting.batch_id, waiting.messages)
    return waiting.batch_id
