"""process_message_task: answer one batch of a customer's messages."""

from __future__ import annotations

from actors import runtime, validate
from actors.busy import requeue_later
from actors.task_options import runbook_task
from app.lock import ConversationBusy

__all__ = ["process_message_task"]


@runbook_task(queue="default", priority=5)
def process_message_task(conversation: str, batch_id: str, messages: list[dict]) -> str | None:
    """Store the batch and send the AI's one reply; returns the reply's outbox state."""
    # The domain (SQLAlchemy, LangGraph) loads at the first run, not at import: see actors.runtime.
    runtime.load_domain()
    from app.conversation import InboundMessage
    from app.replies import process_batch

    validate.text("conversation", conversation, max_length=128)
    validate.text("batch_id", batch_id, max_length=128)
    inbound = [InboundMessage.parse(m) for m in validate.object_list("messages", messages)]
    try:
        entry = process_batch(runtime.services(runtime.get()), conversation, batch_id, inbound)
    except ConversationBusy:
        requeue_later(process_message_task, conversation, batch_id, messages)
        return None
    return None if entry is None else entry.state
