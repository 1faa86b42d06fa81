"""Worker nodes the chaos tests start, kill and stop: ``celery -A tasks worker`` and
``dramatiq actors`` as real subprocesses, each in a session of its own (so that
``kill -9`` of the node is ``killpg``, as systemd's ``KillMode=control-group`` would do)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.celery_worker import CELERY
from tests.support.stack import ROOT, Stack
from tests.support.waiting import wait_for

__all__ = ["Node", "celery_node", "dramatiq_node", "gave_back"]

#: Seconds a node may take to start on this shared machine (every process imports the whole app).
START_TIMEOUT_S = 120.0


class Node:
    """One worker invocation and its children, its output in ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        def printed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-4000:]}")
            return text in self.output()

        wait_for(printed, timeout_s=timeout_s, interval_s=0.1)

    def children(self) -> list[int]:
        """The pids of the node's worker processes (multiprocessing children; not its resource tracker)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # (the command name in parentheses may hold spaces: the ppid is the second field after it)
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        return sorted(found)

    def kill(self) -> None:
        """``kill -9`` of the whole node: the main process and every child at once."""
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def kill_child(self, pid: int) -> None:
        """``kill -9`` of one child only; its node lives on."""
        os.kill(pid, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM to the main process (``KillMode=mixed``): a warm shutdown."""
        os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def stop(self, timeout_s: float = 60) -> None:
        """Stop warmly if still running; kill what is left after ``timeout_s``."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # children a killed supervisor left behind, too
        except ProcessLookupError:
            pass
        self.proc.wait()


def celery_node(stack: Stack, name: str, *options: str, env: dict[str, str] | None = None) -> Node:
    """``celery -A tasks worker -n NAME@%h -Q default,state OPTIONS`` on the stack's Redis and database."""
    argv = [CELERY, "-A", "tasks", "worker", "-l", "info", "-n", f"{name}@%h", "-Q", "default,state", *options]
    return Node(name, argv, {**stack.env, **(env or {})}, stack.log_dir / f"{name}.log")


def dramatiq_node(stack: Stack, name: str, *options: str, env: dict[str, str] | None = None) -> Node:
    """``dramatiq actors OPTIONS`` on the stack's Redis and database."""
    argv = [sys.executable, "-m", "dramatiq", "actors", *options]
    return Node(name, argv, {**stack.env, **(env or {})}, stack.log_dir / f"{name}.log")


_GAVE_BACK = re.compile(r"Gave back (\d+) message")


def gave_back(*nodes: Node) -> int:
    """Messages the nodes' logs say they gave back to their queues (sweeps, released processes)."""
    return sum(int(n) for node in nodes for n in _GAVE_BACK.findall(node.output()))
