"""What the benchmarks read from the machine: process trees, CPU time and memory
from /proc, private ``redis-server`` instances, and percentiles.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class BenchError(RuntimeError):
    """A benchmark could not measure what it should; the message says why."""


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of ``pids`` (all their threads), in seconds.

    Read from each thread's ``/proc/<pid>/task/<tid>/schedstat`` (time on
    a CPU in nanoseconds): ``utime``/``stime`` in ``stat`` count whole clock
    ticks (10 ms), too coarse for an idle worker's 10 s.  A thread that
    ends between two readings takes its time with it, which an idle
    worker's threads do not do.
    """
    total_ns = 0
    for pid in pids:
        try:
            tids = [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return total_ns / 1e9


def memory_mib(pids: list[int]) -> dict[str, float]:
    """RSS and PSS summed over ``pids``, in MiB, from ``/proc/<pid>/smaps_rollup``.

    PSS shares each page among the processes that map it, so a forked
    pool's copy-on-write pages are counted once, not once per child.
    """
    rss = pss = 0
    seen = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        seen += 1
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            if name == "Rss":
                rss += int(rest.split()[0])
            elif name == "Pss":
                pss += int(rest.split()[0])
    if seen == 0:
        raise BenchError(f"none of the processes {pids} could be read in /proc")
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": seen}


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of ``values``."""
    if not values:
        raise BenchError("no values to take a percentile of")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, *, timeout_s: float, what: str, interval_s: float = 0.01) -> None:
    """Poll ``condition`` until true; a :class:`BenchError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise BenchError("redis-server is not installed (Debian: apt-get install redis-server), "
                             "or pass --redis URL to use a database of a running server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited with {self.proc.returncode}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout_s=30, what="the private redis-server")
        client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
