"""How a message is written into a queue list, and read back.

Our envelope is the JSON of a Dramatiq message with the priority as its
first field (``{"priority":-5,"queue_name":...}``) so that the Lua
scripts can keep a queue sorted without decoding JSON.  Elements written
by the old Celery deployment (protocol v2 envelopes) are recognised and
translated, so that a cut-over drains instead of crashing workers.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dramatiq import Message

from actors import keys
from app.untrusted import encodable

__all__ = ["Decoded", "UndecodableMessage", "encode", "decode"]


class UndecodableMessage(Exception):
    """An element of a queue list that is neither our envelope nor a Celery one."""


@dataclass(frozen=True)
class Decoded:
    """A message read from a queue list.

    Attributes:
      message: the Dramatiq message to run.
      eta_ms: for a foreign message whose eta lies in the future, when
        it is due; None when it can run now.
    """

    message: Message
    eta_ms: int | None = None


#: One encoder for every message: ``json.dumps`` with options builds a new one per call.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(message: Message, priority: int) -> bytes:
    """Serialise ``message`` with ``priority`` (Dramatiq's scale) in front."""
    # Message.asdict()'s fields, in its order, without its per-call dataclasses.fields().
    return _dumps({
        "priority": int(priority),
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": message.args,
        "kwargs": message.kwargs,
        "options": message.options,
        "message_id": message.message_id,
        "message_timestamp": message.message_timestamp,
    }).encode("utf-8")


def decode(raw: bytes, queue_name: str, *, now_ms: int | None = None) -> Decoded:
    """Read one element of the list of ``queue_name``.

    Raises:
      UndecodableMessage: when the element is not a message we can run;
        the caller dead-letters it with the reason.  Whatever is wrong
        with it (bad types, absurd nesting), nothing else is raised, so a
        poison message can never crash a consumer.
    """
    try:
        return _decode(raw, queue_name, now_ms)
    except UndecodableMessage:
        raise
    except Exception as e:
        raise UndecodableMessage(f"malformed message: {e!r:.300}") from None


def _decode(raw: bytes, queue_name: str, now_ms: int | None) -> Decoded:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UndecodableMessage(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise UndecodableMessage(f"expected a JSON object, got {type(data).__name__}")
    if "actor_name" in data:
        return _ours(data, queue_name, now_ms if now_ms is not None else int(time.time() * 1000))
    if isinstance(data.get("headers"), dict) and "body" in data:
        return _celery(data, queue_name, now_ms if now_ms is not None else int(time.time() * 1000))
    raise UndecodableMessage("neither a Dramatiq nor a Celery protocol 2 message")


#: The fields of our envelope (besides its priority).
_FIELDS = ("actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")


def _ours(data: dict[str, Any], queue_name: str, now_ms: int) -> Decoded:
    """Our envelope as a message of ``queue_name``, the list it was read from.

    The envelope's own ``queue_name`` is not trusted: the worker hands a
    finished message back to the consumer of the queue it names, and a name
    no consumer has (pushed by hand, or ``celery`` for ``default``) would end
    the worker thread with the message stuck in flight.
    """
    data.pop("priority", None)
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise UndecodableMessage(f"malformed message: no {', '.join(missing)}")
    args, kwargs, options = data["args"], data["kwargs"], data["options"]
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
        raise UndecodableMessage("malformed message: args must be a list, kwargs and options objects")
    try:
        timestamp = int(data["message_timestamp"])
    except (TypeError, ValueError, OverflowError):
        raise UndecodableMessage(f"malformed message: message_timestamp must be milliseconds, "
                                 f"got {data['message_timestamp']!r:.40}") from None
    options = _checked_options(options)
    eta = options.pop("eta", None)
    message: Message = Message(
        queue_name=keys.canonical_queue(queue_name),
        actor_name=_identifier("actor_name", data["actor_name"]),
        args=tuple(args),
        kwargs=kwargs,
        options=options,
        message_id=_identifier("message_id", data["message_id"]),
        message_timestamp=timestamp,
    )
    # Dramatiq's worker would hold a message with an eta in memory, in flight,
    # until then: it waits in the delayed set instead, as a Celery eta does.
    return Decoded(message, int(eta) if eta is not None and eta > now_ms else None)


#: Options the worker's middleware reads, and what each must be.
_WHOLE_OPTIONS = ("retries", "max_retries", "priority")
_NUMBER_OPTIONS = ("eta", "max_age", "time_limit", "soft_time_limit")


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` when the ones the middleware reads have their types.

    The middleware reads them after the task ran, where a failure is only
    logged: a message with ``"retries": "many"`` was acknowledged as if
    it had succeeded.

    Raises:
      UndecodableMessage: an option of the wrong type.
    """
    for name in _WHOLE_OPTIONS:
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or (name != "priority" and value < 0)):
            raise UndecodableMessage(f"malformed message: options.{name} must be a whole number, got {value!r:.40}")
    for name in _NUMBER_OPTIONS:
        if options.get(name) is not None and not _finite(options[name]):
            raise UndecodableMessage(f"malformed message: options.{name} must be milliseconds, "
                                     f"got {options[name]!r:.40}")
    delays = options.get("retry_delays")
    if delays is not None and not (isinstance(delays, list) and all(_finite(d) and d >= 0 for d in delays)):
        raise UndecodableMessage(f"malformed message: options.retry_delays must be a list of milliseconds, "
                                 f"got {delays!r:.40}")
    return dict(options)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _identifier(name: str, value: Any) -> str:
    """A message's id or task name, as the worker writes it to Redis (dead
    letters, task history): a string of valid UTF-8 text.

    Raises:
      UndecodableMessage: anything else; a lone surrogate (JSON may spell
        ``"\\ud800"``) would make every Redis write naming it fail, leaving
        the message stuck in flight.
    """
    if not isinstance(value, str):
        value = str(value)
    if not encodable(value):
        raise UndecodableMessage(f"{name} is not valid Unicode text (it holds a lone surrogate)")
    return value


def _parse_iso_ms(value: Any) -> int | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise UndecodableMessage(f"bad Celery eta/expires {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _celery(data: dict[str, Any], queue_name: str, now_ms: int) -> Decoded:
    headers = data["headers"]
    task = headers.get("task")
    task_id = headers.get("id")
    if not isinstance(task, str) or not task or not isinstance(task_id, str):
        raise UndecodableMessage("Celery message without headers.task or headers.id")
    task, task_id = _identifier("headers.task", task), _identifier("headers.id", task_id)
    content_type = data.get("content-type", "application/json")
    if content_type != "application/json":
        # pickle, yaml, msgpack ...: never unpickle what a queue holds.
        raise UndecodableMessage(f"Celery message {task_id} for {task} is serialised as {content_type!r}; "
                                 "only application/json is accepted (the old deployment's task_serializer)")
    try:
        body = data["body"]
        if (data.get("properties") or {}).get("body_encoding", "base64") == "base64":
            body = base64.b64decode(body, validate=True)
        args, kwargs, _embed = json.loads(body)
    except (binascii.Error, ValueError, TypeError) as e:
        raise UndecodableMessage(f"Celery message {task_id} has an unreadable body: {e}") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise UndecodableMessage(f"Celery message {task_id}: body must be [args, kwargs, embed]")
    expires_ms = _parse_iso_ms(headers.get("expires"))
    if expires_ms is not None and expires_ms <= now_ms:
        raise UndecodableMessage(f"Celery message {task_id} expired at {headers['expires']}")
    options: dict[str, Any] = {"retries": int(headers.get("retries") or 0), "celery_task": task}
    message: Message = Message(
        queue_name=keys.canonical_queue(queue_name),
        # Celery names tasks by module path ("tasks.process_message_task").
        actor_name=task.rsplit(".", 1)[-1],
        args=tuple(args),
        kwargs=kwargs,
        options=options,
        message_id=task_id,
        message_timestamp=now_ms,
    )
    eta_ms = _parse_iso_ms(headers.get("eta"))
    return Decoded(message, eta_ms if eta_ms is not None and eta_ms > now_ms else None)
