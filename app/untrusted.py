"""Reading values of decoded, untrusted JSON (webhook bodies) without surprises.

A signed webhook body may hold anything JSON (and Python's decoder) can
express, and each of these broke the parser with something other than
the ``ValueError`` it reports parts with:

- ``repr()`` of a deeply nested list raises ``RecursionError`` once the
  caller is a few frames deeper than ``json.loads`` was, so a value is
  never rendered whole (:func:`brief`);
- a lone surrogate (``"\\ud800"``) cannot be encoded as UTF-8, so a
  reason holding one breaks Redis (cjson refuses it) and Falcon's JSON
  answer (:func:`text` escapes it);
- ``Infinity``, ``NaN`` and ``1e999`` are floats that ``int()`` refuses
  with ``OverflowError`` or gives a number no BIGINT column takes
  (:func:`epoch_seconds`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["brief", "json_type", "text", "epoch_seconds", "without_nul", "encodable", "MAX_EPOCH_SECONDS"]

#: What a PostgreSQL BIGINT holds: the largest timestamp kept.
MAX_EPOCH_SECONDS = 2**63 - 1

_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def json_type(value: Any) -> str:
    """What ``value`` is, in JSON's words ("a list", "null")."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def brief(value: Any, limit: int = 80) -> str:
    """A short rendering of ``value`` for a reason: the repr of a scalar cut
    to ``limit`` characters, the JSON type of anything else.  Never recurses."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return "a very large number"  # (its decimal digits are not worth computing)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)[:limit]
    return json_type(value)


def text(reason: str, limit: int = 300) -> str:
    """``reason`` cut to ``limit`` characters, lone surrogates written as
    ``\\udxxx`` escapes, so it can be stored and sent as UTF-8."""
    if len(reason) > limit:
        reason = reason[:limit] + "..."
    return reason.encode("utf-8", "backslashreplace").decode("utf-8")


def epoch_seconds(value: Any) -> int:
    """``value`` (a number or a numeric string, as Meta sends timestamps) as
    whole seconds since the epoch.

    Raises:
      ValueError: not a whole number of seconds from 0 to
        :data:`MAX_EPOCH_SECONDS`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"a timestamp must be seconds, got {brief(value)}")
    try:
        seconds = int(value)
    except (ValueError, OverflowError):  # "abc", NaN, Infinity, over int's digit limit
        raise ValueError(f"a timestamp must be seconds, got {brief(value)}") from None
    if not 0 <= seconds <= MAX_EPOCH_SECONDS:
        raise ValueError(f"a timestamp must be seconds from 0 to 2**63-1, got {brief(value)}")
    return seconds


def encodable(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: JSON may spell a lone surrogate
    (``"\\ud800"``), which Redis's client, the broker and PostgreSQL all refuse to encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def without_nul(value: str) -> str:
    """``value`` with each NUL character (JSON spells it ``"\\u0000"``) replaced
    by U+FFFD: PostgreSQL's text and jsonb refuse NUL."""
    return value.replace("\x00", "\ufffd")
