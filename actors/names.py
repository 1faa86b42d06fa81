"""Task names as Celery printed them: ``tasks.<function>`` under ``celery -A tasks``.

The old deployment's logs, ``inspect`` replies and banner named the
runbook's tasks with their module; the runbook greps for those names,
so every Celery-shaped line uses them.  Dramatiq's own name (the
function's) stays the actor's name inside.
"""

from __future__ import annotations

__all__ = ["CELERY_APP", "celery_name"]

#: The module ``-A`` names, where the old deployment declared the tasks.
CELERY_APP = "tasks"


def celery_name(actor_name: str) -> str:
    """``process_message_task`` -> ``tasks.process_message_task``."""
    return f"{CELERY_APP}.{actor_name}"
