"""``celery -A tasks worker ...`` as a real subprocess of the installed script, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
#: The console script the package installs next to the interpreter.
CELERY = str(Path(sys.executable).parent / "celery")

#: Starting a node imports the whole application in every process; the
#: machine is shared, so waits are generous (they end as soon as the
#: condition holds).
START_TIMEOUT_S = 120.0

#: The environment that makes a worker load the test actors too.
TEST_ACTORS = {"WORKER_EXTRA_MODULES": "tests.support.extra_actors"}


class CeleryWorker:
    """One ``celery`` process (and its children), its output kept in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, *,
                 split_stderr: bool = False) -> None:
        """With ``split_stderr``, stderr goes to its own file (``stderr()``); else both to one."""
        self.args = args
        self.log_path = log_path
        self.err_path = log_path.with_suffix(".stderr") if split_stderr else None
        self._log = open(log_path, "wb")
        self._err = open(self.err_path, "wb") if self.err_path is not None else None
        environment = {**os.environ, **TEST_ACTORS, **(env or {})}
        self.proc = subprocess.Popen(
            [CELERY, "-A", "tasks", *args], cwd=ROOT, env=environment, stdout=self._log,
            stderr=subprocess.STDOUT if self._err is None else self._err, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """Everything printed (stdout, then stderr when split)."""
        return self.stdout() + self.stderr()

    def stdout(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stderr(self) -> str:
        return "" if self.err_path is None else self.err_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = START_TIMEOUT_S) -> str:
        try:
            wait_for(lambda: text in self.output() or self.proc.poll() is not None, timeout_s)
        except AssertionError:
            raise AssertionError(f"{text!r} not printed within {timeout_s:g} s:\n{self.output()}") from None
        assert text in self.output(), f"exited ({self.proc.poll()}) without printing {text!r}:\n{self.output()}"
        return self.output()

    def wait_ready(self) -> None:
        self.wait_for_output(" ready.")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout_s: float = START_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout_s:g} s:\n{self.output()}") from None

    def kill_all(self) -> None:
        """Leave nothing behind: the main process and its children."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._log.close()
        if self._err is not None:
            self._err.close()
