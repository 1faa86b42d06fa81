"""``celery beat`` underneath: periodic jobs on APScheduler, fired by one process only.

Any number of beat processes may run (two, for availability).  Each one
schedules every job on the same grid of periods (multiples of the job's
interval since the epoch), and tends a Redis lease (:class:`actors.lease.Lease`)
every third of its lifetime.  When a job is due, a process fires it only
if, in one Lua step, it still holds the lease and nobody fired that
period yet; so the job runs once per period even while a paused holder
and its successor both believe they lead.  If the holder dies, its lease
runs out and a standby takes over within the lease's lifetime plus a
third.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from actors import keys
from actors.lease import Lease
from facade.api import seconds_to_ms

__all__ = ["Job", "Beat"]

logger = logging.getLogger(__name__)

#: Every job's periods are counted from here, so all beat processes agree.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Job:
    """A periodic job: its name in the logs, what it sends, how often, and the call."""

    name: str
    task: str
    interval_s: float
    run: Callable[[], object]


class Beat:
    """Runs ``jobs`` in this process whenever it holds the beat lease.

    Parameters:
      client: Redis (the lease and the per-job period marks live there).
      jobs: the periodic jobs.
      lease_s: the lease's lifetime.
    """

    def __init__(self, client: redis.Redis, jobs: list[Job], *, lease_s: float) -> None:
        self.client = client
        self.jobs = jobs
        self.lease_s = lease_s
        self.lease = Lease(client, keys.beat_lease_key(), ttl_ms=seconds_to_ms(lease_s))
        self.held = False
        self._announced_standby = False
        self._scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})

    def tend_lease(self) -> bool:
        """Take, keep or lose the lease; returns whether this process holds it."""
        try:
            held = self.lease.acquire_or_renew()
        except redis.RedisError as e:
            held = False
            logger.error("beat: Connection error: %s. Trying again in %s seconds...", e, round(self.lease_s / 3, 3))
        if held and not self.held:
            logger.info("beat: Took the lease %r: this beat sends the periodic tasks.", self.lease.token)
            self._announced_standby = False
        elif not held and self.held:
            logger.warning("beat: Lost the lease: another beat sends the periodic tasks now.")
        elif not held and not self._announced_standby:
            try:
                holder = self.lease.holder()
            except redis.RedisError:
                holder = None
            logger.info("beat: Another beat holds the lease (%s); standing by to take over.", holder)
            self._announced_standby = True
        self.held = held
        return held

    def fire(self, job: Job) -> bool:
        """Run ``job`` if this process holds the lease and its current period has not run.

        The period is numbered by Redis's clock, not this host's: a beat
        whose clock runs ahead cannot fire a period early after a takeover.
        """
        if not self.held:
            return False
        remember_ms = seconds_to_ms(max(job.interval_s * 3, self.lease_s * 2))
        try:
            period = self.lease.claim_run(keys.beat_run_key(job.name), interval_ms=seconds_to_ms(job.interval_s),
                                          remember_ms=remember_ms)
            if period is None:
                return False
        except redis.RedisError as e:
            logger.error("beat: Connection error: %s. Job %s skipped this period.", e, job.name)
            return False
        logger.info("Scheduler: Sending due task %s (%s)", job.name, job.task)
        logger.debug("beat: %s runs for period %d.", job.name, period)
        try:
            job.run()
        except Exception as e:
            logger.error("Message Error: Couldn't apply scheduled task %s: %r", job.name, e, exc_info=True)
        return True

    def run(self, stop: threading.Event) -> None:
        """Schedule the jobs and tend the lease until ``stop`` is set; then give the lease up."""
        logger.info("beat: Starting...")
        self.tend_lease()
        self._scheduler.add_job(self.tend_lease, IntervalTrigger(seconds=self.lease_s / 3), id="lease",
                                name="beat lease")
        for job in self.jobs:
            self._scheduler.add_job(self.fire, IntervalTrigger(seconds=job.interval_s, start_date=_EPOCH),
                                    args=[job], id=job.name, name=job.name, misfire_grace_time=None)
        self._scheduler.start()
        try:
            stop.wait()
        finally:
            logger.info("beat: Shutting down...")
            self._scheduler.shutdown(wait=True)
            try:
                if self.lease.release():
                    logger.info("beat: Gave the lease up.")
            except redis.RedisError as e:
                logger.warning("beat: Could not give the lease up (%s); it runs out in %ss.", e, self.lease_s)
