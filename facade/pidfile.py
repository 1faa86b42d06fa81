"""``--pidfile`` of worker and beat: written at start, removed at exit, refused when it names a live process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from facade.cli import CliError

__all__ = ["held", "EX_CANTCREAT"]

#: sysexits' "cannot create output file", Celery's exit code for a held pidfile.
EX_CANTCREAT = 73


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":
        # os.kill would terminate it there: assume it lives.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return False
    return True


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
        with contextlib.suppress(OSError):
            with open(path, encoding="utf-8") as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(path)
