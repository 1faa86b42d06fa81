"""The Celery-compatible facade: Celery's words, Dramatiq underneath.

It only translates; it holds no business logic.
"""

from facade.api import AsyncResult, Task, task
from facade.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

__all__ = ["AsyncResult", "Task", "task", "SoftTimeLimitExceeded", "TimeLimitExceeded"]
