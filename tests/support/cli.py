"""Run the ``celery`` command line as a real subprocess, as operators do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_celery(*args: str, input: str | None = None, env: dict[str, str] | None = None,
               timeout_s: float = 60) -> subprocess.CompletedProcess:
    """``celery ARGS...`` from the project root; stdin is ``input`` (closed when None)."""
    return subprocess.run(
        [sys.executable, "-m", "facade", *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, input=input if input is not None else "",
        capture_output=True, text=True, timeout=timeout_s,
    )


def start_celery(*args: str, output: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``celery ARGS...`` in the background, in its own session; stdout and stderr go to ``output``."""
    with open(output, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "facade", *args],
            cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )
