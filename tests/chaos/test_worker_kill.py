"""Workers killed (kill -9) and stopped (SIGTERM) with work in flight: every customer still
gets exactly the replies due, once, and no message stays held by a dead process.

One stack for both: gunicorn (the web app), the run's PostgreSQL database, a Redis
database of its own, the offline model, and a WhatsApp stand-in that can hold requests
(tests/chaos/gate.py) so that a kill lands while every worker thread waits for WhatsApp.
The tests start, kill and stop the worker nodes themselves (tests/chaos/nodes.py).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dramatiq import Message

from actors import keys
from tests.chaos.audit import audit
from tests.chaos.gate import GatedWhatsApp
from tests.chaos.load import confirm_sends, make_load, post
from tests.chaos.nodes import Node, celery_node, dramatiq_node, gave_back
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_for

#: A dead worker process's messages go back within this (60 s in production).
HEARTBEAT_TIMEOUT_S = 4
#: Generous waits on a machine shared by several test runs (they end as soon as the condition holds).
START_TIMEOUT_S = 120
SETTLE_TIMEOUT_S = 180
#: The sweep gives back a process silent for half the heartbeat timeout, and runs every
#: sixth of it: within the timeout, unless this machine is too busy to run the survivor.
RECOVERY_TIMEOUT_S = 5 * HEARTBEAT_TIMEOUT_S

ENV = {
    # What a customer writes within a second is one batch.
    "BUFFER_WINDOW_SECONDS": "1",
    "BUFFER_MAX_WAIT_SECONDS": "5",
    "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT_S),
    # The conversation lock of a task whose process was killed with its supervisor lasts
    # 8 + 2 x 3 + 5 = 19 s (no one is left who knows it is dead; the sweep leaves locks alone).
    "TASK_TIME_LIMIT_SECONDS": "8",
    "TASK_SOFT_TIME_LIMIT_SECONDS": "6",
    # Held requests must not time out on the worker's side.
    "WHATSAPP_TIMEOUT_SECONDS": "30",
    "WORKER_EXTRA_MODULES": "tests.support.extra_actors",
}


@pytest.fixture(scope="module")
def stack(engine, checkpoints, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("chaos-kill"), ENV, worker=[], whatsapp=GatedWhatsApp()) as stack:
        yield stack


@pytest.fixture
def nodes(stack):
    """The nodes a test starts (``nodes.append``); stopped after it.  Their logs and the
    web app's are printed (pytest shows them when the test failed)."""
    started: list[Node] = []
    yield started
    stack.whatsapp.release()
    for node in started:
        node.stop()
    print(stack.logs())


def beating(stack: Stack) -> set[str]:
    """The broker ids of the worker processes in the heartbeats."""
    return {m.decode() if isinstance(m, bytes) else str(m) for m in stack.redis.zrange(keys.HEARTBEATS, 0, -1)}


def still_held(stack: Stack, broker_ids: set[str]) -> list[str]:
    """What of ``broker_ids`` is still in Redis: heartbeats, in-flight indexes, non-empty in-flight lists."""
    left = sorted(beating(stack) & broker_ids)
    for broker_id in broker_ids:
        if stack.redis.exists(keys.inflight_index_key(broker_id)):
            left.append(keys.inflight_index_key(broker_id))
        left += [k.decode() for k in stack.redis.scan_iter(f"{keys.NAMESPACE}:*.inflight.{broker_id}.*")
                 if stack.redis.llen(k)]
    return left


def settled(stack: Stack) -> bool:
    """Nothing waits, runs or is delayed on either queue, and no buffer holds a message."""
    for queue in ("default", "state"):
        sizes = stack.broker.queue_sizes(queue)
        if sizes["waiting"] + sizes["inflight"] + sizes["delayed"]:
            return False
    return not any(stack.redis.llen(k) for k in stack.redis.scan_iter("app:buffer:*"))


def worker_lost_retries(*nodes: Node) -> int:
    return sum(len(re.findall(r"retry: Retry in .*WorkerLostError", node.output())) for node in nodes)


def test_kill_9_of_workers_under_2000_messages_leaves_every_customer_one_reply_per_batch(
        stack, nodes, db, figures):
    gate: GatedWhatsApp = stack.whatsapp
    load = make_load("k", conversations=200, per_conversation=10, first_wa_id=15557000000)
    began = time.monotonic()

    # Given a node under the plain dramatiq CLI (1 process of 2 threads) that lives on, and a
    # celery prefork node of 2 children (1 thread each) that will be killed
    nodes.append(dramatiq_node(stack, "survivor", "--processes", "1", "--threads", "2"))
    victim = celery_node(stack, "victim", "-P", "prefork", "-c", "2")
    nodes.append(victim)
    wait_for(lambda: len(beating(stack)) == 3, timeout_s=START_TIMEOUT_S, interval_s=0.1)

    def all_threads_held() -> bool:
        # (each process beating has one thread, but the survivor's, which has two)
        return gate.held() == len(beating(stack)) + 1

    with ThreadPoolExecutor(1) as poster:
        # When 200 customers write 5 messages each (one notification each), and every
        # worker thread is in a model turn (its typing indicator held by WhatsApp), one
        # child of the victim is killed
        gate.hold("read")
        first_half = poster.submit(post, stack, load, slice(0, 5), per_body=5)
        wait_for(all_threads_held, timeout_s=START_TIMEOUT_S, interval_s=0.05)
        before = beating(stack)
        victim.kill_child(victim.children()[0])
        gate.release()
        # (its supervisor gives back what the child held at once, and starts another)
        wait_for(lambda: before - beating(stack) and not still_held(stack, before - beating(stack)),
                 timeout_s=RECOVERY_TIMEOUT_S, interval_s=0.05)
        assert first_half.result() == 1000

        # And when they write 5 more each, and every worker thread waits for WhatsApp, in
        # a model turn or to accept a reply (its outbox row written), the victim is killed
        # whole (a thread that starts a task meanwhile waits in its model turn: no thread
        # is between writing an outbox row and sending it); a new node is started
        gate.hold("read")
        gate.hold("send")
        second_half = poster.submit(post, stack, load, slice(5, 10), per_body=5)
        wait_for(all_threads_held, timeout_s=START_TIMEOUT_S, interval_s=0.05)
        processes = beating(stack)
        victim.kill()
        killed_at = time.monotonic()
        gate.release()
        nodes.append(celery_node(stack, "replacement", "-P", "prefork", "-c", "1"))

        # Then the survivor's sweep gives back everything the victim's processes held once
        # their heartbeats stopped (all of them are gone but the survivor's one process,
        # which a very busy machine may keep from beating for a moment)
        def recovered() -> set[str]:
            gone = processes - beating(stack)
            return gone if len(gone) >= len(processes) - 1 and not still_held(stack, gone) else set()

        wait_for(recovered, timeout_s=RECOVERY_TIMEOUT_S, interval_s=0.05)
        recovery_s = time.monotonic() - killed_at
        assert second_half.result() == 1000

    # And once everything is answered (and Meta confirmed the sends it accepted, as it does)
    wait_for(lambda: settled(stack), timeout_s=SETTLE_TIMEOUT_S, interval_s=0.2)
    confirm_sends(stack, stack.sends())
    wait_for(lambda: settled(stack), timeout_s=SETTLE_TIMEOUT_S, interval_s=0.2)

    # every customer got exactly one reply per batch, each message answered once
    result = audit(stack, load, db)
    figures(**result.figures(), redelivered=gave_back(*nodes) + worker_lost_retries(*nodes),
            recovery_s=round(recovery_s, 1), heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
            time_s=round(time.monotonic() - began, 1))
    assert not result.problems, result.report()
    assert (result.sent, result.duplicates, result.lost) == (2000, 0, 0)
    # and nothing is in flight anywhere, nor dead-lettered
    assert not [k for k in stack.redis.scan_iter(f"{keys.NAMESPACE}:*.inflight.*") if stack.redis.llen(k)]
    assert stack.dead_letters() == []


def test_sigterm_lets_running_tasks_finish_and_gives_back_one_longer_than_the_shutdown_timeout(
        stack, nodes, db, figures):
    gate: GatedWhatsApp = stack.whatsapp
    load = make_load("t", conversations=40, per_conversation=5, first_wa_id=15558000000)
    began = time.monotonic()
    # Given a celery prefork node of 2 children whose warm shutdown waits 6 + 3 + 5 = 14 s for running tasks
    limits = ("--time-limit", "6", "--soft-time-limit", "5")
    before = beating(stack)
    draining = celery_node(stack, "draining", "-P", "prefork", "-c", "2", *limits)
    nodes.append(draining)
    wait_for(lambda: len(beating(stack) - before) == 2, timeout_s=START_TIMEOUT_S, interval_s=0.1)

    # and in flight: a task that needs longer than that (it was sent with a limit of its
    # own), and a conversation task waiting for WhatsApp to accept its reply
    stack.broker.declare_queue("default")
    stack.broker.enqueue(Message(queue_name="default", actor_name="test_crash_once", args=("long",), kwargs={},
                                 options={"time_limit": 120_000, "soft_time_limit": 110_000}))
    wait_for(lambda: stack.redis.llen("test:started") == 1, timeout_s=START_TIMEOUT_S, interval_s=0.05)
    gate.hold("send")
    with ThreadPoolExecutor(1) as poster:
        posted = poster.submit(post, stack, load, slice(None))
        wait_for(lambda: gate.held() == 1, timeout_s=START_TIMEOUT_S, interval_s=0.05)

        # When the node gets SIGTERM (and a successor starts, as in a rolling restart)
        draining.terminate()
        draining.wait_for_output("Warm shutdown")
        stopped_at = time.monotonic()
        nodes.append(celery_node(stack, "successor", "-P", "prefork", "-c", "1", *limits))
        gate.release()
        assert posted.result() == load.size

    # Then the node finishes the reply it was sending, gives the long task back to its
    # queue at the shutdown timeout, and exits
    assert draining.wait(60) == 0, draining.output()[-4000:]
    shutdown_s = time.monotonic() - stopped_at
    after_sigterm = draining.output().split("Warm shutdown (MainProcess)", 1)[1]
    assert re.search(r"process_message_task\[[^]]+\] succeeded in [0-9.]+s: 'sent'", after_sigterm)
    assert "Tasks still running after the shutdown timeout" in after_sigterm
    # and the successor runs the long task again, and answers everything else
    wait_for(lambda: stack.redis.lrange("test:done", 0, -1) == [b"long"], timeout_s=SETTLE_TIMEOUT_S)
    wait_for(lambda: settled(stack), timeout_s=SETTLE_TIMEOUT_S, interval_s=0.2)
    result = audit(stack, load, db)
    figures(**result.figures(), redelivered=gave_back(*nodes), shutdown_s=round(shutdown_s, 1),
            time_s=round(time.monotonic() - began, 1))
    assert not result.problems, result.report()
    assert (result.duplicates, result.lost) == (0, 0)
    assert stack.redis.llen("test:started") == 2
    assert stack.dead_letters() == []
