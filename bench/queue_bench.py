"""The queue benchmarks of one system: enqueue, batch enqueue, drain and memory,
idle cost and latency, state-task latency under a backlog, memory with and
without ``--max-tasks-per-child``.  Each function takes the system's
producer (:class:`bench.systems.Client`) on a Redis database that holds
nothing else, and leaves it empty.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError, cpu_seconds, percentile, tree, wait_until
from bench.systems import LATENCY_KEY, STATE_LATENCY_KEY, Client, System
from bench.workers import Worker

PAYLOAD = "x" * 200


@dataclass(frozen=True)
class Scale:
    """How big each benchmark is; :meth:`quick` for a smoke run."""

    messages: int = 20_000
    backlog: int = 10_000
    state_tasks: int = 50
    state_spacing_s: float = 0.1
    idle_seconds: float = 10.0
    idle_sends: int = 50
    idle_max_spacing_s: float = 0.8
    memory_tasks: int = 10_000
    max_tasks_per_child: int = 1000
    web_rate: int = 500
    web_seconds: int = 30
    e2e_messages: int = 50
    #: A drain or join may take this long before the run is declared broken.
    drain_timeout_s: float = 900.0

    @classmethod
    def quick(cls) -> Scale:
        return cls(messages=2000, backlog=2000, state_tasks=5, idle_seconds=3.0, idle_sends=10,
                   memory_tasks=1000, max_tasks_per_child=200, web_rate=200, web_seconds=5,
                   e2e_messages=5, drain_timeout_s=300.0)


def _flush(client: Client) -> None:
    client.redis.flushdb()


def enqueue_rate(client: Client, scale: Scale) -> float:
    """Messages per second of one producer sending ``scale.messages`` no-op tasks one by one."""
    started = time.perf_counter()
    for _ in range(scale.messages):
        client.send("bench_noop", PAYLOAD)
    elapsed = time.perf_counter() - started
    if client.waiting() != scale.messages:
        raise BenchError(f"{client.waiting()} messages wait after {scale.messages} sends")
    return scale.messages / elapsed


def batch_enqueue_rate(client: Client, scale: Scale, *, chunk: int = 1000) -> float | None:
    """Messages per second sent in batches of ``chunk`` (one round trip each); None when the system has no
    batch send."""
    if not client.batch_supported:
        return None
    _flush(client)
    payloads = [PAYLOAD] * scale.messages
    started = time.perf_counter()
    for i in range(0, len(payloads), chunk):
        client.send_batch("bench_noop", payloads[i:i + chunk])
    elapsed = time.perf_counter() - started
    if client.waiting() != scale.messages:
        raise BenchError(f"{client.waiting()} messages wait after a batch of {scale.messages}")
    _flush(client)
    return scale.messages / elapsed


def drain(client: Client, worker: Worker, scale: Scale) -> float:
    """Tasks per second from the first message taken until none waits or runs.

    The ``scale.messages`` no-op tasks must already wait; ``worker`` has just been started.
    """
    def taken() -> bool:
        worker.check()
        return client.waiting() < scale.messages

    wait_until(taken, timeout_s=180, what="the worker to take its first message", interval_s=0.001)
    started = time.perf_counter()

    def drained() -> bool:
        worker.check()
        return client.pending() == 0

    wait_until(drained, timeout_s=scale.drain_timeout_s, what=f"a drain of {scale.messages} tasks",
               interval_s=0.005)
    return scale.messages / (time.perf_counter() - started)


def _commands(client: Client) -> int:
    return sum(int(v["calls"]) for v in client.redis.info("commandstats").values())


def idle_cost(client: Client, worker: Worker, scale: Scale) -> dict[str, float]:
    """% of a core the worker's processes use, and Redis commands per second, while nothing is sent.

    The database must be this system's alone: every command on it counts
    (our own INFO readings are taken out).  It starts after a short settle,
    so that what a drain left behind (a last ack, a heartbeat) is not counted.
    """
    time.sleep(min(2.0, scale.idle_seconds / 2))
    pids = tree(worker.pid)
    cpu0, cmd0, t0 = cpu_seconds(pids), _commands(client), time.monotonic()
    time.sleep(scale.idle_seconds)
    cpu1, cmd1, t1 = cpu_seconds(pids), _commands(client), time.monotonic()
    worker.check()
    elapsed = t1 - t0
    return {"idle_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
            # The first INFO is counted once it has run, so it is in the second reading.
            "idle_redis_cmds_s": max(0, cmd1 - cmd0 - 1) / elapsed}


def _collect(client: Client, key: str, count: int, worker: Worker, what: str) -> list[float]:
    def done() -> bool:
        worker.check()
        return client.redis.llen(key) >= count

    wait_until(done, timeout_s=120, what=what, interval_s=0.02)
    values = [float(v) for v in client.redis.lrange(key, 0, -1)]
    client.redis.delete(key)
    return values


def idle_latency(client: Client, worker: Worker, scale: Scale, *, seed: int) -> list[float]:
    """Send-to-start latencies (ms) of ``scale.idle_sends`` stamps at random 0-0.8 s spacing."""
    client.redis.delete(LATENCY_KEY)
    rng = random.Random(seed)
    for _ in range(scale.idle_sends):
        time.sleep(rng.uniform(0, scale.idle_max_spacing_s))
        client.send("bench_stamp", time.time() * 1000)
    return _collect(client, LATENCY_KEY, scale.idle_sends, worker, "the idle stamps to run")


def fill_backlog(client: Client, scale: Scale) -> None:
    """``scale.backlog`` bulk tasks of 10 ms, waiting in ``default`` before a worker starts."""
    for _ in range(scale.backlog):
        client.send("bench_bulk", PAYLOAD)


def state_latency(client: Client, worker: Worker, scale: Scale) -> list[float]:
    """Send-to-start latencies (ms) of state tasks sent ``state_spacing_s`` apart while the
    backlog of :func:`fill_backlog` waits; ``worker`` has just been started.  The rest of
    the backlog is dropped after."""
    client.redis.delete(STATE_LATENCY_KEY)

    def taken() -> bool:
        worker.check()
        return client.waiting() < scale.backlog

    wait_until(taken, timeout_s=180, what="the worker to take its first bulk task", interval_s=0.005)
    for _ in range(scale.state_tasks):
        if client.waiting() == 0:
            raise BenchError("the bulk backlog ran out before every state task was sent; raise the backlog")
        client.send("bench_state_stamp", time.time() * 1000)
        time.sleep(scale.state_spacing_s)
    latencies = _collect(client, STATE_LATENCY_KEY, scale.state_tasks, worker, "the state tasks to run")
    client.redis.delete(client.waiting_key)
    return latencies


def memory_after_tasks(system: System, client: Client, scale: Scale, log_dir: Path, *, redis_url: str,
                       max_tasks_per_child: int | None) -> dict[str, float]:
    """RSS and PSS of the system's prefork pool (2 children) after ``scale.memory_tasks`` no-op tasks."""
    assert system.prefork is not None
    argv = list(system.prefork)
    suffix = "plain"
    if max_tasks_per_child is not None:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
        suffix = f"mtpc{max_tasks_per_child}"
    worker = Worker(argv, system.env(redis_url),
                    log_dir / f"{system.name}-prefork-{suffix}.log")
    try:
        worker.wait_ready(client)
        for _ in range(scale.memory_tasks):
            client.send("bench_noop", PAYLOAD)

        def drained() -> bool:
            worker.check()
            return client.pending() == 0

        wait_until(drained, timeout_s=scale.drain_timeout_s,
                   what=f"{scale.memory_tasks} tasks on the prefork pool", interval_s=0.02)
        time.sleep(0.5)  # a child replaced on its last task gets to start
        return worker.memory()
    finally:
        worker.stop()
        _flush(client)


def summarize(latencies: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": max(latencies)}
