"""Argument checks shared by the actors: invalid input fails before any work."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidTaskArguments
from app.untrusted import encodable

__all__ = ["text", "whole_number", "object_list"]


def text(name: str, value: Any, *, max_length: int = 4096) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidTaskArguments(f"{name} must be a non-empty string, got {value!r:.80}")
    if len(value) > max_length:
        raise InvalidTaskArguments(f"{name} must be at most {max_length} characters, got {len(value)}")
    if not encodable(value):
        # Redis and PostgreSQL would refuse it deep in the task
        raise InvalidTaskArguments(f"{name} must be valid Unicode text (it holds a lone surrogate)")
    return value


def whole_number(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidTaskArguments(f"{name} must be a whole number >= {minimum}, got {value!r:.80}")
    return value


def object_list(name: str, value: Any) -> list[dict]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise InvalidTaskArguments(f"{name} must be a non-empty list of objects")
    return value
