"""Worker policy, one concern per module."""

from __future__ import annotations

from typing import TypeVar

from actors.middleware.child_limits import ChildLimits
from actors.middleware.domain import DomainLoader
from actors.middleware.metrics import TaskMetrics
from actors.middleware.node_state import NodeState
from actors.middleware.parent_link import ParentLink
from actors.middleware.redis_access import RedisAccessCheck
from actors.middleware.retries import FixedRetries, is_transient
from actors.middleware.task_history import TaskHistory
from actors.middleware.task_log import TaskLog
from actors.middleware.time_limits import TimeLimits

__all__ = ["ChildLimits", "DomainLoader", "FixedRetries", "NodeState", "ParentLink", "RedisAccessCheck", "TaskHistory",
           "TaskLog", "TaskMetrics", "TimeLimits", "find", "find_optional", "is_transient"]


M = TypeVar("M")


def find(broker, kind: type[M]) -> M:
    """The broker's middleware of type ``kind`` (every worker's broker has one of each)."""
    return next(m for m in broker.middleware if isinstance(m, kind))


def find_optional(broker, kind: type[M]) -> M | None:
    """The broker's middleware of type ``kind``, or None when it has none (a broker built by a test)."""
    return next((m for m in broker.middleware if isinstance(m, kind)), None)
