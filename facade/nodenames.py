"""Celery's node names: ``-n worker1@%h`` and the ``%`` codes of file names."""

from __future__ import annotations

import socket

__all__ = ["hostname", "node_name", "expand", "file_name"]

#: What a name without ``@`` gets in front, as in Celery.
DEFAULT_PREFIX = "celery"


def hostname() -> str:
    """Celery's ``%h``: ``socket.gethostname()`` as it is (no DNS lookup, so no stall
    where name resolution is slow; ``celery/utils/nodenames.py`` does the same)."""
    return socket.gethostname()


def expand(pattern: str, *, host: str, node: str | None = None, name: str | None = None,
           per_process: bool = False) -> str:
    """Expand ``%h`` (host), ``%n`` (``name``, else the host up to the first dot),
    ``%d`` (the host's domain), ``%p`` (the node's full name, when given) and ``%%``.

    With ``per_process`` (file names), ``%i``, ``%I`` and ``%%`` are left
    for each process to expand (:func:`actors.worker_logging.expand_process_index`).
    """
    host_name, _, domain = host.partition(".")
    codes = {"h": host, "n": name or host_name, "d": domain, "%": "%%" if per_process else "%"}
    if node is not None:
        codes["p"] = node
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern) and pattern[i + 1] in codes:
            out.append(codes[pattern[i + 1]])
            i += 2
            continue
        out.append(pattern[i])
        i += 1
    return "".join(out)


def file_name(pattern: str, node: str, *, per_process: bool = True) -> str:
    """A ``--logfile``/``--pidfile`` as Celery's ``node_format`` expands it: of the node
    ``w1@vm.example.com``, ``%p`` is the whole name, ``%n`` its name part (``w1``),
    ``%h`` its host part and ``%d`` that host's domain."""
    short, host = node.split("@", 1) if "@" in node else ("", node)
    return expand(pattern, host=host, node=node, name=short or DEFAULT_PREFIX, per_process=per_process)


def node_name(value: str | None, *, host: str | None = None) -> str:
    """``-n`` as Celery reads it: ``worker1`` -> ``celery@worker1``, ``w1@%h`` -> ``w1@<host>``."""
    host = host or hostname()
    if not value:
        return f"{DEFAULT_PREFIX}@{host}"
    expanded = expand(value, host=host)
    if "@" not in expanded:
        return f"{DEFAULT_PREFIX}@{expanded}"
    return expanded
