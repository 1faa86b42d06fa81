"""Stopping the worker processes a test started."""

from __future__ import annotations

import os
import signal
import subprocess

__all__ = ["stop"]


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM the main process (Dramatiq's children take a second one as
    "kill now"), and kill its whole session if it has not ended in time."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
