"""check_buffer_task: hand a quiet conversation's buffer to process_message_task."""

from __future__ import annotations

from actors import runtime, validate
from actors.process_message_task import process_message_task
from actors.task_options import runbook_task
from app.buffer import claim_batch

__all__ = ["check_buffer_task"]


@runbook_task(queue="default", priority=3)
def check_buffer_task(conversation: str, seq: int) -> str | None:
    """Claim the buffer if ``seq`` is still the latest append (or the wait is over).

    The wait is judged by Redis's clock, not this worker's (see :mod:`app.buffer`).

    Returns the batch id handed over, or None when a newer check will.
    """
    validate.text("conversation", conversation, max_length=128)
    validate.whole_number("seq", seq, minimum=1)
    rt = runtime.get()
    max_wait_ms = int(rt.config.buffer_max_wait_s * 1000)
    batch = claim_batch(rt.redis, conversation, seq, max_wait_ms=max_wait_ms)
    if batch is None:
        return None
    process_message_task.send(conversation, batch.batch_id, batch.messages)
    return batch.batch_id
