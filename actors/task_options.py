"""The runbook's contract for every task, in one place."""

from __future__ import annotations

from actors import config
from facade.api import task

__all__ = ["runbook_task"]


def runbook_task(*, queue: str, priority: int):
    """Declare a task with the runbook's limits and retry schedule."""
    return task(
        queue=queue,
        priority=priority,
        time_limit=config.time_limit_s,
        soft_time_limit=config.soft_time_limit_s,
        retry_delays=config.retry_delays_s,
    )
