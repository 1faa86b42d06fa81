"""Pieces of the hostile-input scenario: the stack's worker processes, what
Redis holds of the queues, and raw HTTP for requests httpx will not send."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors import keys
from tests.support.stack import Stack

#: The machine's Redis (tests/conftest.py claimed one database for the run; stacks claim their own).


def children(pid: int) -> set[int]:
    """The ids of the live processes whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def worker_pids(stack: Stack) -> tuple[int, set[int]]:
    """(the worker's main process id, its children's): a crashed and replaced
    child shows as a changed set, a crashed node as a main process that exited."""
    (proc,) = [p for name, p in stack.procs if name == "worker"]
    assert proc.poll() is None, f"the worker exited with {proc.returncode}:\n{stack.logs()}"
    return proc.pid, children(proc.pid)


def queue_state(stack: Stack) -> dict[str, Any]:
    """Everything that says something was enqueued: both queue lists, the
    delayed sets, the dead letters and the conversation buffers."""
    r = stack.redis
    return {
        "default": r.llen(keys.queue_key("default")),
        "state": r.llen(keys.queue_key("state")),
        "delayed": r.zcard(keys.delayed_key("default")) + r.zcard(keys.delayed_key("state")),
        "dead": r.zcard(keys.dead_key("default")) + r.zcard(keys.dead_key("state")),
        "rejected": r.zcard(keys.dead_key("webhook")),
        "app_keys": sorted(k.decode() for k in r.scan_iter("app:*")),
    }


def inflight_elements(stack: Stack) -> int:
    """Elements held in any in-flight list (stuck ones stay there)."""
    return sum(stack.redis.llen(k) for k in stack.redis.scan_iter(f"{keys.NAMESPACE}:*.inflight.*"))


def raw_request(port: int, head: bytes, body_parts: Sequence[bytes] = (), timeout_s: float = 30) -> tuple[int, bytes]:
    """Send ``head`` and ``body_parts`` as they are on a fresh connection; (status, body) of the answer.

    The server may answer (and close) before the body is all sent: a refused
    upload is not an error here."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1."), f"no HTTP answer: {data[:200]!r}"
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def env_seed(default: int) -> int:
    """The fuzz's seed: fixed (reproducible in CI) unless CHAOS_FUZZ_SEED says otherwise."""
    return int(os.environ.get("CHAOS_FUZZ_SEED", default))


#: Lines of a worker's log that tell of a crash, not of a task that failed.
CRASH_SIGNS = ("Exception in thread", "CRITICAL", "Unhandled error", "You've found a bug in Dramatiq",
               "exited unexpectedly")


def crash_lines(stack: Stack) -> list[str]:
    """The lines of the worker's whole log that tell of a crash (a dead thread,
    a failed post-processing, a died child); [] when there is none."""
    log = (stack.log_dir / "worker.log").read_text(errors="replace")
    return [line for line in log.splitlines() if any(sign in line for sign in CRASH_SIGNS)]
