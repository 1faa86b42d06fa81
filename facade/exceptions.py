"""Celery's exception names, as ``celery.exceptions`` spells them."""

from __future__ import annotations

from dramatiq.middleware import Interrupt

__all__ = ["SoftTimeLimitExceeded", "TimeLimitExceeded"]


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task that ran past its soft time limit.

    It derives from :class:`Exception`, as Celery's does, so a task can
    catch it to clean up before the hard limit stops it.
    """


class TimeLimitExceeded(Interrupt):
    """Raised inside a task that ran past its hard time limit.

    It derives from :class:`BaseException` (Dramatiq's ``Interrupt``) so
    that ``except Exception`` in a task cannot swallow it.
    """
