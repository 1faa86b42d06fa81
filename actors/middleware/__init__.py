"""Worker policy, one concern per module."""

from actors.middleware.retries import FixedRetries, is_transient
from actors.middleware.task_log import TaskLog
from actors.middleware.time_limits import TimeLimits

__all__ = ["FixedRetries", "TaskLog", "TimeLimits", "is_transient"]
