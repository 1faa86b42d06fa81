"""How Celery prints remote-command replies (celery/bin/base.py, control.py).

``->  NODE: OK`` per node, the reply indented under it (``* item`` per
list entry, ``- empty -`` for an empty list, sorted indent-4 JSON for a
dict, ``pong`` for ``{"ok": "pong"}``), then a blank line and
``N node(s) online.``.  No colours: they appear only on a TTY in Celery,
and scripts read the plain text.
"""

from __future__ import annotations

import json
from pprint import pformat
from typing import Any

__all__ = ["pretty", "say_reply", "nodes_online"]


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())


def pretty(reply: Any) -> tuple[str, str]:
    """(status, text) of one reply, as Celery's ``CLIContext.pretty``."""
    if isinstance(reply, list):
        return "OK", "\n".join(f"* {item}" for item in reply) if reply else "- empty -"
    if isinstance(reply, dict):
        if "ok" in reply:
            return "OK", _indent(pretty(reply["ok"])[1], 4)
        if "error" in reply:
            return "ERROR", _indent(pretty(reply["error"])[1], 4)
        return "OK", json.dumps(reply, sort_keys=True, indent=4)
    if isinstance(reply, str):
        return "OK", reply
    return "OK", pformat(reply)


def say_reply(node: str, reply: Any, *, show_reply: bool, quiet: bool = False) -> str:
    """The lines Celery prints for one node's reply."""
    status, text = pretty(reply)
    arrow = "" if quiet else "-> "
    lines = f"{arrow} {node}: {status}"
    if show_reply and text:
        lines += "\n" + _indent(text, 4)
    return lines


def nodes_online(count: int) -> str:
    """The closing line, after a blank one: ``1 node online.`` / ``2 nodes online.``"""
    return f"\n{count} {'node' if count == 1 else 'nodes'} online."
