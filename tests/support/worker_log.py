"""What a stack's worker logged: its retries, read from Celery's retry lines."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["retries"]

_RETRY_LINE = re.compile(r"Task (?:tasks\.)?(?P<task>\w+)\[(?P<id>[^\]]+)\] retry: Retry in (?P<delay>[\d.]+)s")


def retries(log_dir: Path, task: str = "process_message_task") -> list[tuple[str, float]]:
    """(message id, delay in s) of every retry of ``task`` in ``log_dir/worker.log``, in order."""
    log = (log_dir / "worker.log").read_text(errors="replace")
    return [(m["id"], float(m["delay"])) for m in _RETRY_LINE.finditer(log) if m["task"] == task]
