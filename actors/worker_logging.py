"""Logging of worker and beat processes, in Celery's format.

``[%(asctime)s: %(levelname)s/%(processName)s] %(message)s``: the
process name is ``MainProcess`` for the node's main process and
``ForkPoolWorker-N`` in prefork children, as the runbook's log filters
expect.  ``LOG_FORMAT=json`` writes each record as one JSON object
instead (:class:`JsonFormatter`), with the task's name, id, queue,
duration and outcome when it is about a task.  Also the filters that
keep the worker's log to one line per task start and finish.
"""

from __future__ import annotations

import atexit
import collections
import datetime
import json
import logging
import multiprocessing.util
import os
import sys
import threading

__all__ = ["FORMAT", "setup_logging", "expand_process_index", "say_shutdown", "install_log_filters",
           "JsonFormatter", "make_formatter", "adopt_handlers", "BatchingPipe", "batch_pipe_writes",
           "unbatch_pipe_writes"]

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"

#: Libraries whose own INFO lines repeat ours or are noise ("Shutting down...",
#: APScheduler's "Added job"/"Running job"): shown from WARNING unless at DEBUG.
_CHATTY = ("dramatiq", "apscheduler")


def expand_process_index(pattern: str, index: int) -> str:
    """Celery's ``%i`` (child index, 0 in the main process) and ``%I`` (``-N``, or nothing)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern) and pattern[i + 1] in "iI%":
            code = pattern[i + 1]
            out.append(str(index) if code == "i" else (f"-{index}" if index else "") if code == "I" else "%")
            i += 2
            continue
        out.append(pattern[i])
        i += 1
    return "".join(out)


def say_shutdown(how: str) -> None:
    """``worker: Warm shutdown (MainProcess)`` (or ``Cold``), as Celery writes it: on
    stdout, between newlines, in one write that is safe in a signal handler."""
    out = sys.__stdout__
    if out is None:
        return  # no stdout (a Windows service): the line is only for a terminal
    try:
        os.write(out.fileno(), f"\nworker: {how} shutdown (MainProcess)\n".encode())
    except (AttributeError, OSError, ValueError):
        pass  # no stdout (a Windows service): the line is only for a terminal


#: The task attributes a JSON line carries (None when the line is about no task).
TASK_FIELDS = ("task_name", "task_id", "queue", "event", "duration_s", "outcome")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``timestamp`` (UTC, ISO 8601), ``level``, ``process``
    (``MainProcess``, ``ForkPoolWorker-N``), ``pid``, ``logger``, ``message``, the task's
    fields, and ``exc_info`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "process": record.processName,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            document[name] = getattr(record, name, None)
        if record.exc_info:
            document["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exc_info"] = record.exc_text
        return json.dumps(document, default=repr)


def make_formatter(log_format: str) -> logging.Formatter:
    """Celery's line format (``text``) or :class:`JsonFormatter` (``json``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT)


def _task_filter() -> logging.Filter:
    from actors.middleware.task_log import TaskContextFilter

    return TaskContextFilter()


def adopt_handlers(log_format: str) -> None:
    """Give handlers set up by someone else (the plain ``dramatiq`` CLI) the task
    fields, and the JSON format when asked for; Dramatiq's line format stays otherwise."""
    from actors.middleware.task_log import TaskContextFilter

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())


#: The most a batch of lines may hold.  Dramatiq points the process's stdout and stderr at the
#: same pipe, and a pipe write of up to PIPE_BUF (4,096 bytes on Linux) is atomic: with
#: multiprocessing's 4-byte length in front, a batch under it can never be split by a print()
#: or a warning from another thread, which would break the pipe's framing for good.
MAX_BATCH_BYTES = 4000


class BatchingPipe:
    """The stream of a plain ``dramatiq`` CLI worker process's log handler, written by a thread of its own.

    That CLI sends each line through a pipe to its main process, which
    writes it out: two system calls and a few Python calls per line on
    each side, four lines per task.  Here a line only joins a queue; a
    writer thread, woken at once, sends whatever has gathered in one pipe
    message.  On an idle worker that is one line, sent within a thread
    switch; a busy worker sends a few dozen at a time.  The line is
    formatted by the thread that logs it, as before.  No lock: a signal
    handler may log while the thread it interrupted was logging.
    """

    def __init__(self, target) -> None:
        #: The stream it stands for (Dramatiq's ``StreamablePipe``).
        self.target = target
        self._lines: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        self._lines.append(text)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Called by the handler after every line: the writer thread sends it."""

    def send(self) -> None:
        """Send what has gathered now, in this thread (at exit), in pipe messages of at most
        :data:`MAX_BATCH_BYTES` (a longer line goes alone, as every line did before)."""
        with self._send_lock:
            lines = self._lines
            batch: list[str] = []
            size = 0
            for _ in range(len(lines)):
                line = lines.popleft()
                n = len(line.encode("utf-8", "replace"))
                if batch and size + n > MAX_BATCH_BYTES:
                    self.target.write("".join(batch))
                    batch, size = [], 0
                batch.append(line)
                size += n
            if batch:
                self.target.write("".join(batch))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.send()
            except (OSError, ValueError):
                return  # the pipe is closed: the process is leaving


def batch_pipe_writes() -> None:
    """Give the root handlers that write to the plain ``dramatiq`` CLI's log pipe a :class:`BatchingPipe`."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and type(stream).__name__ == "StreamablePipe":
            batching = BatchingPipe(stream)
            handler.setStream(batching)
            # What is left is sent at a normal exit, at the end of a multiprocessing child
            # (which leaves by os._exit, skipping atexit: a child stopping itself with
            # SystemExit would lose its last lines, the one saying why included), and
            # before our own os._exit.
            atexit.register(unbatch_pipe_writes)
            multiprocessing.util.Finalize(None, unbatch_pipe_writes, exitpriority=100)
            from actors import hard_exit

            hard_exit.add(unbatch_pipe_writes)


def unbatch_pipe_writes() -> None:
    """Point the handlers back at the pipe itself, after sending what is left (the worker stopped)."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(stream, BatchingPipe) and isinstance(handler, logging.StreamHandler):
            handler.setStream(stream.target)
            try:
                stream.send()
            except (OSError, ValueError):
                pass


def setup_logging(level: int, logfile: str | None, *, index: int = 0, log_format: str = "text") -> None:
    """Send every log record of this process to stderr or ``logfile`` (appended),
    as Celery's lines or as JSON objects (``log_format``)."""
    handler: logging.Handler
    if logfile:
        handler = logging.FileHandler(expand_process_index(logfile, index), encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(_task_filter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


class _DropDuplicateWorkerLines(logging.Filter):
    """Drops two lines of Dramatiq's worker thread that say what we say better.

    * "Failed to process message ... with unhandled exception": the retry
      middleware logs every failure once, in Celery's words, with its
      traceback and whether it is retried.
    * "Actor ... returned a value ... Results middleware": the runbook's
      deployment has no result backend on purpose; the return value is
      logged in the ``succeeded`` line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("Failed to process message") or "Results middleware" in text)


def install_log_filters() -> None:
    logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_DropDuplicateWorkerLines())
