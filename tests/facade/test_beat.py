"""``celery beat``: real beat processes on one Redis fire each job once per period."""

from __future__ import annotations

import os
import re
import signal

import pytest
from sqlalchemy import select

from app.buffer import append_to_buffer
from app.db import Conversation, Message
from tests.actors.test_worker_processes import processes, start_dramatiq  # noqa: F401  (fixture)
from tests.support.buffers import backdate
from tests.support.cli import run_celery, start_celery
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

FAST = {"BUFFER_SWEEP_INTERVAL_SECONDS": "0.5", "QUEUE_CHECK_INTERVAL_SECONDS": "0.5",
        "BEAT_LEASE_SECONDS": "1.5", "QUEUE_ALERT_THRESHOLD": "0"}


@pytest.fixture
def beats(tmp_path):
    """Start ``celery -A tasks beat -l debug`` processes; each one's output is in its own file."""
    started = []

    def start(name: str, *extra: str, env: dict[str, str] | None = None):
        log = tmp_path / f"{name}.log"
        proc = start_celery("-A", "tasks", "beat", "-l", "debug", *extra, output=log, env={**FAST, **(env or {})})
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def periods(log, job: str) -> list[int]:
    return [int(p) for p in re.findall(rf"beat: {job} runs for period (\d+)\.", log.read_text())]


def says(log, text: str) -> bool:
    return text in log.read_text()


def test_two_beats_fire_each_job_once_per_period_even_when_both_think_they_lead(beats, redis_client):
    # Given one waiting message (above the threshold of 0) and two beats, one holding the lease
    redis_client.lpush("celery", b"waiting")
    first, first_log = beats("first")
    wait_for(lambda: says(first_log, "beat: Took the lease"), timeout_s=60)
    second, second_log = beats("second")
    wait_for(lambda: says(second_log, "standing by to take over"), timeout_s=60)
    wait_for(lambda: len(periods(first_log, "queue-check")) >= 2)

    # When the holder is paused past its lease, the standby takes over, and the holder wakes up again
    os.killpg(first.pid, signal.SIGSTOP)
    wait_for(lambda: says(second_log, "beat: Took the lease"))
    wait_for(lambda: len(periods(second_log, "queue-check")) >= 2)
    os.killpg(first.pid, signal.SIGCONT)
    wait_for(lambda: says(first_log, "beat: Lost the lease"))
    fired_after_wake = len(periods(second_log, "queue-check"))
    wait_for(lambda: len(periods(second_log, "queue-check")) >= fired_after_wake + 2)
    for proc in (first, second):
        os.killpg(proc.pid, signal.SIGTERM)
    assert [first.wait(30), second.wait(30)] == [0, 0]

    # Then no period of either job ran twice, and each run had its effect once
    for job in ("queue-check", "buffer-sweep"):
        fired = periods(first_log, job) + periods(second_log, job)
        assert len(fired) == len(set(fired)), f"{job} ran twice in a period"
    checks = len(periods(first_log, "queue-check")) + len(periods(second_log, "queue-check"))
    warning = ("WARNING/MainProcess] Queue 'default' (list 'celery') has 1 waiting messages, "
               "above the alert threshold of 0.")
    assert first_log.read_text().count(warning) + second_log.read_text().count(warning) == checks
    assert "Scheduler: Sending due task queue-check (actors.periodic.check_queues)" in second_log.read_text()
    assert says(second_log, "beat: Gave the lease up.")


def test_a_standby_beat_takes_over_when_the_holder_is_killed(beats, redis_client):
    holder, holder_log = beats("holder", "-s", "/var/run/celerybeat-schedule")
    wait_for(lambda: says(holder_log, "beat: Took the lease"), timeout_s=60)
    standby, standby_log = beats("standby")
    wait_for(lambda: says(standby_log, "standing by to take over"), timeout_s=60)
    assert not says(standby_log, "Sending due task")

    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()

    wait_for(lambda: says(standby_log, "Scheduler: Sending due task buffer-sweep (tasks.check_buffer_task)"))
    text = standby_log.read_text()
    assert text.index("beat: Took the lease") < text.index("Sending due task")
    assert "beat: --schedule /var/run/celerybeat-schedule is not used" in holder_log.read_text()


def test_beat_resends_a_lost_check_and_the_worker_answers_the_conversation(beats, redis_client, db,
                                                                          processes):  # noqa: F811
    # Given a conversation whose messages were buffered a minute ago but whose check was lost
    append_to_buffer(redis_client, "15558880000", "wamid.beat1", {"wamid": "wamid.beat1", "text": "hello"})
    backdate(redis_client, "15558880000", first_ago_ms=60_000)

    # When a worker and beat run
    processes.append(start_dramatiq({}))
    _, log = beats("sweeper")

    # Then the conversation gets its answer
    def messages():
        with db() as session:
            conversation = session.scalars(
                select(Conversation).where(Conversation.customer_key == "15558880000")).first()
            if conversation is None:
                return []
            return [(m.author, m.wamid) for m in session.scalars(
                select(Message).where(Message.conversation_id == conversation.id).order_by(Message.id))]

    answered = wait_for(lambda: len(found := messages()) == 2 and found, timeout_s=60)
    assert answered == [("customer", "wamid.beat1"), ("ai", None)]
    assert says(log, "Buffer sweep: sent check_buffer_task again for 1 conversation(s) whose check was lost.")


def test_a_second_beat_with_the_same_pidfile_refuses_to_start(beats, tmp_path, redis_client):
    pidfile = tmp_path / "beat.pid"
    first, log = beats("first", "--pidfile", str(pidfile))
    wait_for(lambda: says(log, "beat: Starting..."), timeout_s=60)

    result = run_celery("-A", "tasks", "beat", "--pidfile", str(pidfile))

    assert result.returncode == 73
    assert result.stderr == (f"ERROR: Pidfile ({pidfile}) already exists.\n"
                             f"Seems we're already running? (pid: {first.pid})\n")


def test_a_beat_told_to_stop_while_starting_stops_cleanly(beats, tmp_path, redis_client):
    # Given a beat that wrote its pidfile and is still importing the app
    pidfile = tmp_path / "beat.pid"
    beat, log = beats("early", "--pidfile", str(pidfile))
    wait_for(lambda: pidfile.exists(), timeout_s=60, interval_s=0.01)

    # When it gets SIGTERM at once
    beat.send_signal(signal.SIGTERM)

    # Then it stops as it would later: exit 0, its pidfile removed
    assert beat.wait(60) == 0, log.read_text()
    assert not pidfile.exists()


@pytest.mark.parametrize("option", ["--detach", "--scheduler=django_celery_beat.schedulers:DatabaseScheduler",
                                    "--max-interval=5"])
def test_celery_beat_options_not_offered_are_refused_by_name(option):
    result = run_celery("-A", "tasks", "beat", option)

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"Error: 'celery beat {option.split('=')[0]}' is a Celery option this project does not offer: ")


def test_beat_without_redis_says_the_broker_is_unreachable():
    from tests.support.redis_server import free_port

    result = run_celery("-A", "tasks", "-b", f"redis://127.0.0.1:{free_port()}/0", "beat")

    assert result.returncode == 69
    assert result.stderr.startswith("Error: Could not connect to the message broker. ")
