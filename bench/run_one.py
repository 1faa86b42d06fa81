"""One run of every queue benchmark for one system, as JSON on stdout.

    python -m bench.run_one --system ours --redis redis://127.0.0.1:6390/0 --log-dir DIR [--quick] [--web]

``bench.compare`` runs this once per system and run, each in a process of
its own, so that only the benchmarked system's client is imported.  The
Redis database given must be the system's alone; it is flushed before and
after.  Exit 1 with a message when a measurement breaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import BenchError
from bench.queue_bench import (
    Scale,
    batch_enqueue_rate,
    drain,
    enqueue_rate,
    fill_backlog,
    idle_cost,
    idle_latency,
    memory_after_tasks,
    state_latency,
)
from bench.systems import SYSTEMS, client_for
from bench.workers import Worker


def measure(system_name: str, redis_url: str, scale: Scale, log_dir: Path, *, seed: int, web: bool,
            pg_admin_url: str) -> dict[str, Any]:
    system = SYSTEMS[system_name]
    os.environ.update(system.env(redis_url))  # before the client imports its broker
    client = client_for(system, redis_url)
    client.redis.flushdb()
    result: dict[str, Any] = {"system": system.name}
    stages: dict[str, float] = {}
    result["stage_seconds"] = stages
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stages[stage] = round(now - clock, 1)
        clock = now

    try:
        result["batch_enqueue_msgs_s"] = batch_enqueue_rate(client, scale)
        result["enqueue_msgs_s"] = enqueue_rate(client, scale)
        lap("enqueue")

        worker = Worker(system.worker, system.env(redis_url), log_dir / f"{system.name}.log")
        try:
            result["drain_tasks_s"] = drain(client, worker, scale)
            memory = worker.memory()
            result["drain_rss_mib"], result["drain_pss_mib"] = memory["rss_mib"], memory["pss_mib"]
            result["worker_processes"] = memory["processes"]
            result.update(idle_cost(client, worker, scale))
            result["idle_latencies_ms"] = idle_latency(client, worker, scale, seed=seed)
        finally:
            worker.stop()
        client.redis.flushdb()
        lap("drain, idle")

        fill_backlog(client, scale)
        worker = Worker(system.worker, system.env(redis_url), log_dir / f"{system.name}-backlog.log")
        try:
            result["state_latencies_ms"] = state_latency(client, worker, scale)
        finally:
            worker.stop()
        client.redis.flushdb()
        lap("backlog")

        if system.prefork is not None:
            for key, mtpc in (("mem_plain", None), ("mem_mtpc", scale.max_tasks_per_child)):
                memory = memory_after_tasks(system, client, scale, log_dir, redis_url=redis_url,
                                            max_tasks_per_child=mtpc)
                result[f"{key}_rss_mib"], result[f"{key}_pss_mib"] = memory["rss_mib"], memory["pss_mib"]
                lap(key)

        if web and system.name == "ours":
            from bench import web_bench

            result.update(web_bench.run(redis_url=redis_url, pg_admin_url=pg_admin_url, scale=scale,
                                        log_dir=log_dir, seed=seed))
            lap("web, end to end")
    finally:
        client.redis.flushdb()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    parser.add_argument("--redis", required=True, help="a Redis database of this system's alone")
    parser.add_argument("--scale", required=True, help="the Scale as JSON (bench.compare passes it)")
    parser.add_argument("--log-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--web", action="store_true", help="also the web path (this project only)")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    scale = Scale(**json.loads(args.scale))
    try:
        result = measure(args.system, args.redis, scale, args.log_dir, seed=args.seed, web=args.web,
                         pg_admin_url=args.pg_admin)
    except BenchError as e:
        print(f"error: {args.system}: {e}", file=sys.stderr)
        return 1
    print("BENCH_RESULT " + json.dumps(result))
    return 0


def scale_json(scale: Scale) -> str:
    return json.dumps(dataclasses.asdict(scale))


if __name__ == "__main__":
    sys.exit(main())
