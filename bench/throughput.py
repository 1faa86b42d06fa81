"""Enqueue rate of one producer, and drain rate of a worker, for no-op tasks.

    .venv/bin/python -m bench.throughput [--messages 20000] [--processes 2] [--threads 8]

Enqueues ``--messages`` no-op tasks with a 200-byte payload from this
process (one producer), then starts ``dramatiq bench.noop_app`` and
times how long it takes until nothing waits or runs.  The Redis
database given is flushed before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    os.environ["REDIS_URI"] = args.redis
    sys.path.insert(0, str(ROOT))
    from actors import broker
    from bench.noop_app import bench_noop

    payload = "x" * 200
    started = time.perf_counter()
    for _ in range(args.messages):
        bench_noop.send(payload)
    enqueue_s = time.perf_counter() - started

    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "bench.noop_app", "--processes", str(args.processes),
         "--threads", str(args.threads)],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Time from the first message taken to the queue empty and nothing in flight.
        while client.llen("celery") == args.messages:
            time.sleep(0.001)
        drain_started = time.perf_counter()
        broker.join("default", interval=10, timeout=600_000)
        drain_s = time.perf_counter() - drain_started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        client.flushdb()
    print(f"enqueue, one producer: {args.messages / enqueue_s:,.0f} msgs/s")
    print(f"drain of {args.messages:,} no-op tasks, {args.processes} proc x {args.threads} thr: "
          f"{args.messages / drain_s:,.0f} tasks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
