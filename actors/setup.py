"""Builds the project's broker with its middleware, from the config."""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Pipelines

from actors.broker import RedisBroker
from actors.middleware import (
    DomainLoader,
    FixedRetries,
    NodeState,
    RedisAccessCheck,
    TaskHistory,
    TaskLog,
    TaskMetrics,
    TimeLimits,
)
from actors.worker_logging import install_log_filters
from app.config import Config
from facade.api import seconds_to_ms

__all__ = ["build_broker"]


def build_broker(config: Config, **overrides: Any) -> RedisBroker:
    """The broker every process of the project uses (web, workers, CLI).

    The middleware order matters: ``after_*`` hooks run in reverse, so
    the time limits are lifted first, then the retry decision is taken,
    and the monitor's task history, the node state and the metrics record the outcome last.
    """
    install_log_filters()
    metrics = TaskMetrics(port=config.worker_metrics_port, config=config)
    time_limits = TimeLimits(
        time_limit_ms=seconds_to_ms(config.time_limit_s),
        soft_time_limit_ms=seconds_to_ms(config.soft_time_limit_s),
    )
    time_limits.on_limit = metrics.count_limit_hit
    middleware = [
        # First, so that its after_process_boot runs last, once logging goes to dramatiq's pipe.
        RedisAccessCheck(config.redis_uri),
        AgeLimit(),
        CurrentMessage(),
        Callbacks(),
        Pipelines(),
        NodeState(),
        TaskHistory(max_tasks=config.monitor_max_tasks, ttl_s=config.monitor_task_ttl_s),
        metrics,
        FixedRetries(retry_delays_ms=tuple(seconds_to_ms(d) for d in config.retry_delays_s)),
        TaskLog(log_format=config.log_format),
        # Before the time limits: the first task's domain import is not counted against them.
        DomainLoader(),
        time_limits,
    ]
    options: dict[str, Any] = {
        "url": config.redis_uri,
        "middleware": middleware,
        "heartbeat_timeout_ms": seconds_to_ms(config.heartbeat_timeout_s),
        "dead_letter_ttl_ms": seconds_to_ms(config.dead_letter_ttl_s),
    }
    options.update(overrides)
    return RedisBroker(**options)
