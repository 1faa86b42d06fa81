"""process_message_task: answer one batch of a customer's messages."""

from __future__ import annotations

from actors import runtime, validate
from actors.task_options import runbook_task
from app.conversation import InboundMessage, answer_batch
from app.db import session_scope

__all__ = ["process_message_task"]


@runbook_task(queue="default", priority=5)
def process_message_task(conversation: str, batch_id: str, messages: list[dict]) -> int | None:
    """Store the batch and the AI's one reply; returns the reply's row id."""
    validate.text("conversation", conversation, max_length=128)
    validate.text("batch_id", batch_id, max_length=128)
    inbound = [InboundMessage.parse(m) for m in validate.object_list("messages", messages)]
    rt = runtime.get()
    with session_scope(rt.sessions) as session:
        reply = answer_batch(session, customer_key=conversation, batch_id=batch_id, messages=inbound, model=rt.model)
        return None if reply is None else reply.id
