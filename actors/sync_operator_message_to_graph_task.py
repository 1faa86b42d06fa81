"""sync_operator_message_to_graph_task: what an operator wrote enters the history."""

from __future__ import annotations

from actors import runtime, validate
from actors.busy import requeue_later
from actors.task_options import runbook_task
from app.errors import InvalidTaskArguments
from app.lock import ConversationBusy

__all__ = ["sync_operator_message_to_graph_task"]


@runbook_task(queue="state", priority=7)
def sync_operator_message_to_graph_task(conversation: str, text: str, message_id: str,
                                        operator_id: str | None = None, send: bool = False) -> bool:
    """Add the operator's message ``message_id`` to ``conversation``'s history,
    sending it to the customer first when ``send`` is true.

    Returns whether it entered the history (False: WhatsApp refused it).
    """
    # The domain (SQLAlchemy, LangGraph) loads at the first run, not at import: see actors.runtime.
    runtime.load_domain()
    from app.operator import sync_operator_message

    validate.text("conversation", conversation, max_length=128)
    validate.text("text", text)
    validate.text("message_id", message_id, max_length=255)
    if operator_id is not None:
        validate.text("operator_id", operator_id, max_length=128)
    if not isinstance(send, bool):
        raise InvalidTaskArguments(f"send must be true or false, got {send!r:.80}")
    try:
        row = sync_operator_message(runtime.services(runtime.get()), conversation, text, message_id=message_id,
                                    operator_id=operator_id, send=send)
    except ConversationBusy:
        requeue_later(sync_operator_message_to_graph_task, conversation, text, message_id, operator_id, send)
        return False
    return row is not None
