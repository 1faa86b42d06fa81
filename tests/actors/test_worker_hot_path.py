"""What a busy worker does per message, cheaply: deferred acks, one deadline per task,
batched log lines, the history folded per task, idle consumers that block long."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time

import dramatiq
from dramatiq import Middleware
from dramatiq.compat import StreamablePipe

from actors import keys, task_history
from actors.middleware import TimeLimits, find
from actors.worker_logging import MAX_BATCH_BYTES, BatchingPipe, batch_pipe_writes
from tests.actors.test_broker import declare, drain
from tests.support.waiting import wait_for


def test_an_ack_while_the_consumer_is_parked_goes_with_its_next_fetch(make_broker, redis_client):
    # Given a consumer holding its whole prefetch, parked in another thread for room
    broker = make_broker()
    actor = declare(broker)
    for i in range(10):
        actor.send(i)
    consumer = broker.consume("default", prefetch=8, timeout=5000)
    held = drain(consumer, 8)
    got = []
    parked = threading.Thread(target=lambda: got.append(next(consumer)))
    parked.start()
    wait_for(lambda: broker.inflight._parked == 1, timeout_s=5)

    # When a task ends and its message is acked
    consumer.ack(held[0])

    # Then the parked consumer sent the ack with its fetch: the acked element left the in-flight
    # list, a new message took its place, and nothing is counted twice
    parked.join(10)
    assert [m.args for m in got] == [(8,)]
    inflight = redis_client.lrange(held[0].inflight_key, 0, -1)
    assert held[0].raw not in inflight and len(inflight) == 8
    assert broker.inflight.busy_count(held[0].inflight_key) == 8
    assert broker.inflight.take_acks() == []


def test_an_ack_with_no_consumer_parked_is_sent_at_once(make_broker, redis_client):
    broker = make_broker()
    declare(broker).send(1)
    consumer = broker.consume("default", prefetch=8, timeout=100)
    (message,) = drain(consumer, 1)
    consumer.ack(message)
    assert redis_client.llen(message.inflight_key) == 0


def test_acks_a_failed_round_trip_could_not_send_wait_for_the_next_one(make_broker, redis_client, monkeypatch):
    # Given an ack left to a parked consumer whose fetch then fails (Redis went away)
    broker = make_broker()
    actor = declare(broker)
    for i in range(3):
        actor.send(i)
    consumer = broker.consume("default", prefetch=2, timeout=5000)
    first, _second = drain(consumer, 2)
    real = broker.scripts["fetch"]
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            import redis

            raise redis.ConnectionError("Redis went away")
        return real(*args, **kwargs)

    monkeypatch.setitem(broker.scripts, "fetch", flaky)
    errors = []

    def run():
        try:
            next(consumer)
        except Exception as e:  # noqa: BLE001 - the consumer's error is the point
            errors.append(e)

    parked = threading.Thread(target=run)
    parked.start()
    wait_for(lambda: broker.inflight._parked == 1, timeout_s=5)
    consumer.ack(first)
    parked.join(10)

    # Then the consumer raised (Dramatiq restarts it), the element is still in flight and busy,
    # and the next round trip sends the ack
    assert [type(e).__name__ for e in errors] == ["ConnectionClosed"]
    assert first.raw in redis_client.lrange(first.inflight_key, 0, -1)
    assert broker.inflight.busy_count(first.inflight_key) == 2
    assert next(consumer).args == (2,)
    assert first.raw not in redis_client.lrange(first.inflight_key, 0, -1)
    assert broker.inflight.busy_count(first.inflight_key) == 2


def test_an_idle_worker_blocks_long_and_its_stop_cuts_the_wait_short(make_broker, redis_client, start_worker):
    # Given a running worker whose consumers wait for work
    broker = make_broker()
    seen = []
    dramatiq.actor(lambda x: seen.append(x), actor_name="rec", queue_name="default", broker=broker)
    worker = start_worker(broker, worker_timeout=100)
    db = str(redis_client.connection_pool.connection_kwargs.get("db", 0))
    wait_for(lambda: any(c.get("cmd") == "blmove" and c.get("db") == db for c in redis_client.client_list()),
             timeout_s=10)
    assert broker.long_blocks

    # Then a message still starts at once
    broker.get_actor("rec").send("now")
    wait_for(lambda: seen == ["now"], timeout_s=10)

    # And stopping does not wait for the 10 s block to run out
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    stopper.join(8)
    assert not stopper.is_alive()
    assert not broker.long_blocks
    assert broker.queue_sizes("default") == {"waiting": 0, "delayed": 0, "inflight": 0, "dead": 0}


def test_a_stop_landing_just_before_the_long_block_is_sent_still_cuts_it(make_broker, redis_client, monkeypatch):
    # Given an idle consumer of a running worker, whose stop lands after it took its blocking
    # connection and before its BLMOVE went out (the connection was closed under it)
    broker = make_broker()
    declare(broker)
    consumer = broker.consume("default", prefetch=1, timeout=100)
    broker.long_blocks = True  # (what a Worker's boot does)
    real = broker.blocking_client

    def stop_lands_now():
        blocker = real()
        broker.interrupt_consumers()
        return blocker

    monkeypatch.setattr(broker, "blocking_client", stop_lands_now)
    got = []
    waiting = threading.Thread(target=lambda: got.append(next(consumer)))
    waiting.start()

    # Then it does not reconnect to block the full 10 s: it returns as a cut block does
    waiting.join(8)
    assert not waiting.is_alive()
    assert got == [None]


def test_finished_tasks_leave_no_deadline_behind(make_broker, start_worker):
    # Given a worker that ran many short tasks
    broker = make_broker()
    actor = declare(broker)
    start_worker(broker, worker_threads=4)
    for i in range(300):
        actor.send(i)
    broker.join("default", timeout=60_000)

    # Then the time limits hold about one deadline per thread (a few more behind a slow one),
    # not one or two per task of the last minutes (with their messages)
    limits = find(broker, TimeLimits)
    assert len(limits._deadlines) < 50


def test_a_middleware_added_later_gets_its_hooks_called(make_broker):
    # (a signal of the test's own: a real one would reach the broker's other middleware,
    # CurrentMessage would keep the fake message as this thread's current one)
    broker = make_broker()
    broker.emit_before("late_signal", None)  # the hooks of the first list are remembered
    calls = []

    class Late(Middleware):
        def before_late_signal(self, broker, message):
            calls.append(message)

    broker.add_middleware(Late())
    broker.emit_before("late_signal", "m")
    assert calls == ["m"]


def test_the_batching_pipe_delivers_every_line_in_order():
    # Given the dramatiq CLI's pipe behind a batching stream, written by four threads
    reader, writer = multiprocessing.Pipe(duplex=False)
    stream = BatchingPipe(StreamablePipe(writer))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.batching")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        def log(n):
            for i in range(500):
                logger.warning("t%d %d", n, i)

        threads = [threading.Thread(target=log, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stream.send()

        # Then every line arrives once, each thread's in order, in fewer pipe messages than lines
        received, messages = [], 0
        while reader.poll(1):
            received += reader.recv_bytes().decode().splitlines()
            messages += 1
            if len(received) >= 2000:
                break
        assert len(received) == 2000
        for n in range(4):
            assert [line for line in received if line.startswith(f"t{n} ")] == [f"t{n} {i}" for i in range(500)]
        assert messages < 2000
    finally:
        logger.removeHandler(handler)
        writer.close()
        reader.close()


def test_a_batch_of_lines_fits_one_atomic_pipe_write_and_a_long_line_goes_alone():
    # Given lines that together are far over the pipe's atomic write size, and one long line
    reader, writer = multiprocessing.Pipe(duplex=False)
    stream = BatchingPipe(StreamablePipe(writer))
    stream._send_lock.acquire()  # (the writer thread must not send them as they come)
    try:
        lines = [f"line {i:04d} " + "x" * 180 + "\n" for i in range(200)]
        long_line = "y" * 10_000 + "\n"
        for line in lines[:100] + [long_line] + lines[100:]:
            stream.write(line)
    finally:
        stream._send_lock.release()
    stream.send()

    # Then every message but the long line's is at most MAX_BATCH_BYTES, and nothing is lost
    messages = []
    while reader.poll(1):
        messages.append(reader.recv_bytes())
        if b"".join(messages).count(b"\n") >= 201:
            break
    writer.close()
    reader.close()
    assert b"".join(messages).decode() == "".join(lines[:100] + [long_line] + lines[100:])
    assert [len(m) for m in messages if m != long_line.encode()] and \
        all(len(m) <= MAX_BATCH_BYTES for m in messages if m != long_line.encode())
    assert long_line.encode() in messages


def test_a_batch_writes_what_one_event_at_a_time_would(redis_client):
    # Given two tasks' lifecycles, one written event by event, the other as one batch
    def lifecycle(task_id):
        now = time.time()
        return [
            task_history.TaskEvent(task_id, "t", "task-received", "w@h", now, {}),
            task_history.TaskEvent(task_id, "t", "task-started", "w@h", now, {"state": "STARTED", "args": "[1]"}),
            task_history.TaskEvent(task_id, "t", "task-succeeded", "w@h", now + 0.5,
                                   {"state": "SUCCESS", "result": "'é'", "runtime": 0.5}, runtime_s=0.5),
        ]

    for event in lifecycle("one"):
        task_history.write_events(redis_client, [event], max_tasks=10, ttl_s=60)
    task_history.write_events(redis_client, lifecycle("two"), max_tasks=10, ttl_s=60)

    # Then both records, their state indexes and the counters agree
    one, two = task_history.get_task(redis_client, "one"), task_history.get_task(redis_client, "two")
    assert {k: v for k, v in one.items() if k not in ("uuid", "timestamp")} == \
        {k: v for k, v in two.items() if k not in ("uuid", "timestamp")}
    assert two["result"] == "'é'" and two["state"] == "SUCCESS"
    assert redis_client.zscore(keys.task_state_index_key("SUCCESS"), "two") is not None
    assert redis_client.zscore(keys.task_state_index_key("STARTED"), "two") is None
    counts = task_history.event_counts(redis_client)
    assert counts[("t", "task-received", "w@h")] == 2 and counts[("t", "task-succeeded", "w@h")] == 2


def _log_then_exit(writer) -> None:
    # A plain-CLI worker child: its log handler writes to the pipe, batched.
    handler = logging.StreamHandler(StreamablePipe(writer))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().handlers[:] = [handler]
    batch_pipe_writes()
    stream = handler.stream
    stream._wake = threading.Event()  # (the writer thread sleeps on the old one: it never sends)
    logging.getLogger("test.exit").critical("the reason this child stops")
    raise SystemExit(3)


def test_a_child_that_stops_itself_sends_its_last_lines_first():
    # Given a multiprocessing child (as dramatiq's CLI starts them) whose last line waits in the batch
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_log_then_exit, args=(writer,))
    child.start()
    writer.close()
    child.join(30)

    # Then it leaves with its code, and the line reached the pipe on the way out
    assert child.exitcode == 3
    assert reader.poll(5)
    assert reader.recv_bytes().decode() == "the reason this child stops\n"
    reader.close()
