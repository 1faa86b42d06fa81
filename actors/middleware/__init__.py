"""Worker policy, one concern per module."""

from actors.middleware.child_limits import ChildLimits
from actors.middleware.node_state import NodeState
from actors.middleware.parent_link import ParentLink
from actors.middleware.retries import FixedRetries, is_transient
from actors.middleware.task_log import TaskLog
from actors.middleware.time_limits import TimeLimits

__all__ = ["ChildLimits", "FixedRetries", "NodeState", "ParentLink", "TaskLog", "TimeLimits", "is_transient"]
