"""``--pidfile`` of worker and beat: written at start, removed at exit, refused when it names a live process.

As Celery's ``create_pidlock``: a file naming a live process refuses the
start (exit 73); a file naming a dead one, or no pid at all, is reported on
stderr in Celery's words and taken over, so that a node restarted by its
service manager after a crash starts again.  Unlike Celery, a process we may
not signal (EPERM: another user's) counts as alive, not stale: taking over
its pidfile would run two nodes under one name.

The file is removed when the block holding it ends and, through
:func:`release`, before the ``os._exit`` of a cold shutdown or of a task
stuck in C code (:mod:`actors.hard_exit`); only while it still names this
process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from facade.cli import CliError

__all__ = ["held", "release", "EX_CANTCREAT"]

#: sysexits' "cannot create output file", Celery's exit code for a held pidfile.
EX_CANTCREAT = 73

#: Windows: rights asked of a process to read its exit code.
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
#: Windows: GetExitCodeProcess's answer for a process that has not exited.
_STILL_ACTIVE = 259
#: Windows: OpenProcess's error for a pid that names no process.
_ERROR_INVALID_PARAMETER = 87


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (when in doubt, yes: a live node's pidfile must never be taken over)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _alive_nt(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return False
    return True


def _alive_nt(pid: int, kernel32: Any = None, last_error: Callable[[], int] | None = None) -> bool:
    """Windows: whether ``pid`` runs, by its exit code (``os.kill`` would end it there).

    ``kernel32`` and ``last_error`` stand for ``kernel32.dll`` and
    ``ctypes.get_last_error``; tests give stand-ins, as the DLL exists on
    Windows only.  A process that ended with code 259 (STILL_ACTIVE) reads
    as running: Windows has no cheaper answer, and erring that way only
    refuses a start.
    """
    from ctypes import pointer, wintypes

    if kernel32 is None or last_error is None:
        kernel32, last_error = _kernel32()
    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # No such process (any more): ERROR_INVALID_PARAMETER.  Anything else
        # (ERROR_ACCESS_DENIED: another user's process, a protected one) lives.
        return last_error() != _ERROR_INVALID_PARAMETER
    try:
        code = wintypes.DWORD(0)
        if not kernel32.GetExitCodeProcess(handle, pointer(code)):
            return True  # cannot tell
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _kernel32() -> tuple[Any, Callable[[], int]]:
    """``kernel32.dll`` with the prototypes :func:`_alive_nt` uses (a HANDLE is pointer-sized)."""
    if sys.platform != "win32":
        raise OSError("kernel32 exists on Windows only")
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.GetExitCodeProcess.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    kernel32.CloseHandle.restype = wintypes.BOOL
    return kernel32, ctypes.get_last_error


def release(path: str | None) -> None:
    """Remove ``path`` if it names this process (a successor's file stays).

    :func:`held` does this when its block ends; a process about to leave
    with ``os._exit`` calls it itself (:mod:`actors.hard_exit`).
    """
    if path is None:
        return
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8") as f:
            mine = f.read().strip() == str(os.getpid())
        if mine:
            os.unlink(path)


@contextlib.contextmanager
def held(path: str | None) -> Iterator[None]:
    """Hold ``path`` for this process while the block runs.

    Raises:
      CliError: the file names a live process, or cannot be written.
    """
    if path is None:
        yield
        return
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        text = None
    except OSError as e:
        raise CliError(f"cannot read the pidfile {path!r}: {e.strerror}", EX_CANTCREAT) from None
    if text is not None:
        pid = int(text) if text.isdigit() else 0
        if pid != os.getpid() and _alive(pid):
            # Celery's words (celery.platforms.PIDLOCKED), exit 73.
            raise CliError(f"Pidfile ({path}) already exists.\nSeems we're already running? (pid: {pid})",
                           EX_CANTCREAT, prefix="ERROR: ")
        if pid != os.getpid():
            # Celery's words (celery.platforms.Pidfile.remove_if_stale), on stderr.
            print("Stale pidfile exists - Removing it." if pid else "Broken pidfile found - Removing it.",
                  file=sys.stderr, flush=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: its process is gone
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise CliError(f"cannot create the pidfile {path!r}: {e.strerror}", EX_CANTCREAT) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        release(path)
