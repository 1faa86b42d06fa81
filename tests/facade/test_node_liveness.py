"""A node's life as others see it: its pidfile, its registry entry and its ``ready.`` line.

Real ``celery`` worker processes on the run's Redis.  Each wait ends as soon
as its condition holds; the bounds are generous.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.support import extra_actors as test_actors
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def _order(redis_client) -> list[str]:
    return [v.decode() for v in redis_client.lrange("test:order", 0, -1)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_cold_shutdown_of_a_solo_worker_leaves_no_pidfile(signum, celery_worker, redis_client, tmp_path):
    # Given a solo node holding its pidfile, in a task that never ends on its own
    path = tmp_path / "solo.pid"
    worker = celery_worker(["worker", "-l", "info", "-P", "solo", "--time-limit=60", "--soft-time-limit=50",
                            "-Q", "default", "--pidfile", str(path)])
    worker.wait_ready()
    assert path.read_text() == f"{worker.pid}\n"
    test_actors.test_gate.delay("test:never")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)

    # When a second signal turns its warm shutdown into a cold one (the process leaves with os._exit)
    worker.signal(signum)
    worker.wait_for_output("worker: Warm shutdown (MainProcess)", 30)
    worker.signal(signum)

    # Then it leaves as before, in Celery's words, and its pidfile goes with it
    assert worker.wait() == 1
    assert "worker: Cold shutdown (MainProcess)" in worker.output()
    assert not path.exists()


def test_a_pidfile_naming_a_dead_process_is_taken_over(celery_worker, tmp_path):
    # Given the pidfile of a node that died without removing it (its pid names nothing now)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    path = tmp_path / "restarted.pid"
    path.write_text(f"{ended.pid}\n")

    # When the node starts again (as its service manager does)
    worker = celery_worker(["worker", "-l", "info", "-P", "solo", "-Q", "default", "--pidfile", str(path)],
                           split_stderr=True)

    # Then it says so in Celery's words, takes the file over and serves
    worker.wait_ready()
    assert path.read_text() == f"{worker.pid}\n"
    assert "Stale pidfile exists - Removing it.\n" in worker.stderr()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not path.exists()
