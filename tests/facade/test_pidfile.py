"""``facade.pidfile``: who counts as alive, and which file a leaving process removes.

The Windows check runs here against a stand-in for ``kernel32``: the DLL
exists on Windows only, but what the check asks of it and how it reads
the answers are the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facade import pidfile
from facade.cli import CliError

ROOT = Path(__file__).resolve().parents[2]


class Kernel32:
    """Answers OpenProcess/GetExitCodeProcess as Windows does for one process, and records the calls."""

    def __init__(self, *, exit_code: int | None = None, open_error: int = 0, query_fails: bool = False) -> None:
        self.exit_code, self.open_error, self.query_fails = exit_code, open_error, query_fails
        self.opened: list[tuple[int, bool, int]] = []
        self.closed: list[int] = []
        self.error = 0

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:  # noqa: N802 (Windows' name)
        self.opened.append((access, inherit, pid))
        if self.open_error:
            self.error = self.open_error
            return 0
        return 1234

    def GetExitCodeProcess(self, handle: int, code) -> int:  # noqa: N802
        assert handle == 1234
        if self.query_fails:
            return 0
        code.contents.value = self.exit_code
        return 1

    def CloseHandle(self, handle: int) -> int:  # noqa: N802
        self.closed.append(handle)
        return 1

    def last_error(self) -> int:
        return self.error


@pytest.mark.parametrize(("kernel32", "alive"), [
    (Kernel32(exit_code=259), True),  # STILL_ACTIVE
    (Kernel32(exit_code=0), False),  # ended; its handle is still open somewhere
    (Kernel32(exit_code=75), False),  # ended with our EX_REPLACE (NSSM restarts it)
    (Kernel32(open_error=87), False),  # ERROR_INVALID_PARAMETER: no such process
    (Kernel32(open_error=5), True),  # ERROR_ACCESS_DENIED: another user's process lives
    (Kernel32(exit_code=259, query_fails=True), True),  # cannot tell: never take over a live node's file
], ids=["running", "exited-0", "exited-75", "no-such-process", "access-denied", "unreadable"])
def test_windows_liveness_reads_the_exit_code_and_closes_the_handle(kernel32, alive):
    assert pidfile._alive_nt(4242, kernel32, kernel32.last_error) is alive

    # It asks for the least right that reads an exit code, of that pid, not inheritable
    assert kernel32.opened == [(0x1000, False, 4242)]
    assert kernel32.closed == ([] if kernel32.open_error else [1234])


def test_the_kernel32_prototypes_are_windows_only():
    if sys.platform == "win32":
        kernel32, last_error = pidfile._kernel32()
        assert pidfile._alive_nt(os.getpid(), kernel32, last_error) is True
    else:
        with pytest.raises(OSError):
            pidfile._kernel32()


def test_on_posix_this_process_lives_and_an_ended_one_does_not():
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: its pid names nothing now

    assert pidfile._alive(os.getpid()) is True
    assert pidfile._alive(ended.pid) is False
    assert pidfile._alive(0) is False


def test_on_posix_a_process_we_may_not_signal_counts_as_alive(monkeypatch):
    # EPERM: it exists and belongs to someone else (Celery would take its pidfile over)
    def refuse(pid, signum):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(pidfile.os, "kill", refuse)
    assert pidfile._alive(12345) is True


def test_a_pidfile_naming_a_dead_process_is_taken_over_in_celerys_words(tmp_path, capsys):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    path = tmp_path / "w.pid"
    path.write_text(f"{ended.pid}\n")

    with pidfile.held(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()
    assert capsys.readouterr().err == "Stale pidfile exists - Removing it.\n"


def test_a_broken_pidfile_is_taken_over_in_celerys_words(tmp_path, capsys):
    path = tmp_path / "w.pid"
    path.write_text("not a pid\n")

    with pidfile.held(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert capsys.readouterr().err == "Broken pidfile found - Removing it.\n"


def test_a_pidfile_naming_a_live_process_is_refused_with_exit_73(tmp_path):
    path = tmp_path / "w.pid"
    path.write_text(f"{os.getppid()}\n")

    with pytest.raises(CliError) as refused, pidfile.held(str(path)):
        pass
    assert refused.value.code == 73
    assert path.read_text() == f"{os.getppid()}\n"


def test_release_removes_the_file_only_while_it_names_this_process(tmp_path):
    path = tmp_path / "w.pid"
    with pidfile.held(str(path)):
        # a successor (after a restart) wrote its own pid: ours is gone, its file stays
        path.write_text(f"{os.getppid()}\n")
        pidfile.release(str(path))
        assert path.exists()
    assert path.read_text() == f"{os.getppid()}\n"
    pidfile.release(None)  # no --pidfile: nothing to do


def test_a_hard_exit_removes_the_held_pidfile_first(tmp_path):
    # os._exit skips the with block's clean-up; the worker registers the pidfile's release for it
    path = tmp_path / "w.pid"
    script = (
        "import sys\n"
        "from actors import hard_exit\n"
        "from facade import pidfile\n"
        "path = sys.argv[1]\n"
        "with pidfile.held(path), hard_exit.registered(lambda: pidfile.release(path)):\n"
        "    hard_exit.exit_now(75)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 75, done.stderr
    assert not path.exists()

