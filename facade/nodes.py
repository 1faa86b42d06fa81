"""The nodes a ``status`` or ``inspect`` answers for, read from the node registry.

Celery broadcasts and collects replies for ``--timeout`` seconds; a busy
solo worker never replies.  Here every node's heartbeat thread keeps its
entry in :mod:`actors.registry` fresh, so a node counts while it runs a
long task.  ``--timeout`` keeps Celery's meaning of "how long to wait for
an answer": the registry is read again until a node (or, with
``--destination``, every named node) is there, or the time is up.
"""

from __future__ import annotations

import argparse
import time

import redis

from actors import registry
from facade.cli import EX_UNAVAILABLE, CliError
from facade.connection import unavailable

__all__ = ["replying_nodes", "add_remote_options", "NO_NODES", "POLL_S"]

#: Celery's message when nobody answered.
NO_NODES = "No nodes replied within time constraint"

#: Seconds between two reads of the registry while waiting.
POLL_S = 0.1


def replying_nodes(client: redis.Redis, *, timeout_s: float, destination: list[str] | None = None,
                   ) -> list[registry.Node]:
    """The live nodes (only those named in ``destination``, if given), by name.

    Raises:
      CliError: exit 69 when no node is found within ``timeout_s``, or
        when Redis stops answering.
    """
    wanted = set(destination or ())
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        try:
            nodes = registry.live_nodes(client)
        except redis.RedisError as e:
            raise unavailable(e) from None
        if wanted:
            nodes = [n for n in nodes if n.name in wanted]
        complete = {n.name for n in nodes} >= wanted if wanted else bool(nodes)
        if complete or time.monotonic() >= deadline:
            break
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    if not nodes:
        raise CliError(NO_NODES, EX_UNAVAILABLE)
    return nodes


def add_remote_options(parser) -> None:
    """Celery's "Remote Control Options" of ``status`` and ``inspect``."""
    parser.add_argument("-t", "--timeout", type=float, default=1.0,
                        help="seconds to wait for a node to answer (default 1.0)")
    parser.add_argument("-d", "--destination", type=_comma_list,
                        help="comma-separated list of node names (only these answer)")
    parser.add_argument("-j", "--json", action="store_true", help="use json as output format")


def _comma_list(value: str) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no node named")
    return names
