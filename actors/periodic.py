"""The periodic jobs ``celery beat`` runs: the buffer sweep and the queue check.

Each job is a plain function of its collaborators; :mod:`actors.beat`
decides when and where (which beat process) it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from actors import backlog, keys
from actors.beat import Job
from app.buffer_sweep import forget_resent, iter_lost_checks, note_resent
from app.config import Config

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["jobs", "sweep_buffers", "check_queues", "redis_now_ms", "RESEND_AFTER_S", "QUEUES"]

logger = logging.getLogger(__name__)

#: A check sent again for a lost buffer is not sent once more for this long
#: (seconds): it waits in the queue when no worker runs.
RESEND_AFTER_S = 300

#: Most checks one sweep sends again; the next sweep goes on with the others
#: (those sent are skipped for RESEND_AFTER_S).
MAX_SENDS_PER_SWEEP = 1000

#: The queues the queue check watches.
QUEUES = ("default", "state")


def jobs(config: Config, broker: RedisBroker) -> list[Job]:
    """The jobs ``celery beat`` runs, their intervals, and how they send."""
    send_check = broker.get_actor("check_buffer_task").send
    return [
        Job("buffer-sweep", "tasks.check_buffer_task", config.buffer_sweep_interval_s,
            lambda: sweep_buffers(broker.client, config, send_check=send_check)),
        Job("queue-check", "actors.periodic.check_queues", config.queue_check_interval_s,
            lambda: check_queues(broker, threshold=config.queue_alert_threshold)),
    ]


def redis_now_ms(client: redis.Redis) -> int:
    """Redis's clock in ms: the one clock every host of the deployment shares."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def sweep_buffers(client: redis.Redis, config: Config, *, send_check: Callable[[str, int], object],
                  max_sends: int = MAX_SENDS_PER_SWEEP) -> int:
    """Send ``check_buffer_task`` again for every buffer whose check was lost.

    It goes by Redis's clock, the one ``app:last:*`` is written by (see
    :mod:`app.buffer`), so that the beat host's clock being ahead cannot
    take a conversation whose customer is still typing for a lost one.

    It scans every buffer, skipping those sent again recently, and stops
    after ``max_sends`` sends; so beyond that many lost buffers, each sweep
    reaches new ones instead of finding the same first ones again.

    Returns:
      How many checks were sent.
    """
    now_ms = redis_now_ms(client)
    quiet_ms = int((config.buffer_window_s + config.buffer_sweep_margin_s) * 1000)
    sent = 0
    for lost in iter_lost_checks(client, now_ms=now_ms, quiet_ms=quiet_ms):
        if sent >= max_sends:
            break
        if not note_resent(client, lost, resend_after_s=RESEND_AFTER_S):
            continue
        try:
            send_check(lost.conversation, lost.seq)
        except BaseException:
            # Not sent: let the next sweep try again.
            forget_resent(client, lost)
            raise
        logger.debug("Sent check_buffer_task(%r, %d) again: its check was lost.", lost.conversation, lost.seq)
        sent += 1
    if sent:
        logger.warning("Buffer sweep: sent check_buffer_task again for %d conversation(s) whose check was lost.",
                       sent)
    return sent


def check_queues(broker: RedisBroker, *, threshold: int) -> list[str]:
    """Warn about a queue deeper than ``threshold`` and about dead letters that grew.

    Returns:
      The warnings logged.
    """
    warnings = []
    for queue in QUEUES:
        sizes = broker.queue_sizes(queue)
        depth = backlog.count_waiting(broker.client, queue)
        if depth > threshold:
            warnings.append(f"Queue {queue!r} (list {keys.queue_key(queue)!r}) has {depth} waiting messages, "
                            f"above the alert threshold of {threshold}.")
        seen = broker.client.getset(keys.beat_dead_seen_key(queue), sizes["dead"])
        if seen is not None and sizes["dead"] > int(seen):
            warnings.append(f"Dead letters of queue {queue!r} grew from {int(seen)} to {sizes['dead']}.")
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings
