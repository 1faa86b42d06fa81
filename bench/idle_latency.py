"""Idle cost and send-to-start latency of one worker process of this project.

    .venv/bin/python -m bench.idle_latency [--redis redis://127.0.0.1:6379/15]

It starts ``dramatiq bench.noop_app --processes 1 --threads 8`` (the
shape of stock Dramatiq's default), lets it settle, then measures:

* idle: the worker's CPU time (main process and children, from /proc)
  and the Redis commands it sends (INFO commandstats), over 10 s;
* latency: 50 sends at random 0-0.8 s spacing, each stamping its send
  time; the task records when it started.  p50 and p99 in ms.

The Redis database given is flushed before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                pids.extend(_tree(int(p.name)))
    return pids


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def _commands(client: redis.Redis) -> int:
    return sum(v["calls"] for v in client.info("commandstats").values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--sends", type=int, default=50)
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    env = {**os.environ, "REDIS_URI": args.redis}
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "bench.noop_app", "--processes", "1", "--threads", "8"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(4)
        pids = _tree(worker.pid)
        cpu0, cmd0, t0 = _cpu_s(pids), _commands(client), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, cmd1, t1 = _cpu_s(pids), _commands(client), time.monotonic()
        elapsed = t1 - t0
        # Our own INFO call is counted once in the second reading.
        idle_cpu_pct = 100 * (cpu1 - cpu0) / elapsed
        idle_cmds = (cmd1 - cmd0 - 1) / elapsed

        os.environ["REDIS_URI"] = args.redis
        sys.path.insert(0, str(ROOT))
        from bench.noop_app import bench_stamp

        rng = random.Random(7)
        for _ in range(args.sends):
            time.sleep(rng.uniform(0, 0.8))
            bench_stamp.send(time.time() * 1000)
        deadline = time.monotonic() + 30
        while client.llen("bench:latency_ms") < args.sends and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = sorted(float(v) for v in client.lrange("bench:latency_ms", 0, -1))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        client.flushdb()

    p50 = statistics.median(latencies)
    p99 = latencies[max(0, int(round(0.99 * len(latencies))) - 1)]
    print(f"idle worker (1 process x 8 threads), {elapsed:.1f} s: {idle_cpu_pct:.2f} % of a core, "
          f"{idle_cmds:.2f} Redis commands/s")
    print(f"send to start on an idle worker, {len(latencies)} sends 0-0.8 s apart: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
