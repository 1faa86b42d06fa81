"""Keeps the worker's log to one line per task start and finish."""

from __future__ import annotations

import logging

__all__ = ["install_log_filters"]


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
