"""Starting, checking and stopping a benchmarked worker process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from bench.procs import BenchError, memory_mib, tree, wait_until
from bench.systems import LATENCY_KEY, ROOT, Client

#: How long a worker may take to start on a shared, busy machine (it ends as soon as it serves).
START_TIMEOUT_S = 180


class Worker:
    """One worker command in its own session, its output in ``log``."""

    def __init__(self, argv: tuple[str, ...] | list[str], env: dict[str, str], log: Path) -> None:
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the worker {' '.join(self.argv[1:])!r} exited with {self.proc.returncode}:\n"
                             f"{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, client: Client) -> None:
        """Until the worker ran a task: one stamp, sent now, recorded (and then forgotten)."""
        client.redis.delete(LATENCY_KEY)
        client.send("bench_stamp", time.time() * 1000)

        def served() -> bool:
            self.check()
            return client.redis.llen(LATENCY_KEY) > 0

        wait_until(served, timeout_s=START_TIMEOUT_S, what=f"the worker {self.log.stem!r} to run a task",
                   interval_s=0.05)
        client.redis.delete(LATENCY_KEY)

    def memory(self) -> dict[str, float]:
        """RSS and PSS summed over the worker's processes, in MiB."""
        self.check()
        return memory_mib(tree(self.pid))

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM to the main process (it stops its children), the whole session killed if it lingers."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
