"""Errors of the domain, classified by what a worker must do with them."""

from __future__ import annotations

__all__ = ["AppError", "TransientError", "InvalidTaskArguments", "ConfigError"]


class AppError(Exception):
    """Base class for every error the application raises on purpose."""


class TransientError(AppError):
    """A failure that may go away by itself: network, database down,
    WhatsApp 429/5xx, model quota.  Tasks that raise it are retried at
    5, 10 and 20 seconds, then dead-lettered.
    """


class InvalidTaskArguments(AppError, ValueError):
    """A task was called with arguments it cannot work with.  Retrying
    cannot help, so the message is dead-lettered at once.
    """


class ConfigError(AppError, ValueError):
    """The environment holds a value the application cannot use."""
