"""systemd's readiness protocol: tell the service manager a node is ready or stopping.

A unit with ``Type=notify`` (deploy/systemd/whatsapp-worker.service) counts
the worker as started when it receives ``READY=1``, which the node sends when
it prints ``<node> ready.`` (the moment ``celery status`` counts it), so
``systemctl start`` returns once the node serves and units ordered after it
start then.  ``STOPPING=1`` on a warm shutdown shows "deactivating" at once
instead of waiting for the process to exit.

systemd passes the socket's address in ``NOTIFY_SOCKET`` (read by
:mod:`app.config`): a path, or ``@name`` for Linux's abstract namespace.  With
no socket (a terminal, Docker, Windows) every call does nothing.  A lost
notification is logged, never raised: it must not stop a worker.
"""

from __future__ import annotations

import logging
import socket

__all__ = ["notify"]

logger = logging.getLogger(__name__)


def notify(socket_path: str | None, *lines: str) -> bool:
    """Send ``lines`` (``READY=1``, ``STATUS=...``) as one datagram to systemd.

    Parameters:
      socket_path: ``NOTIFY_SOCKET``; None or empty when not run by systemd.
      lines: the assignments, one per line of the datagram.

    Returns:
      Whether the datagram was sent.
    """
    if not socket_path or not lines or not hasattr(socket, "AF_UNIX"):
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as e:
        logger.warning("Could not notify systemd at %s (%s): %s", socket_path, lines[0], e)
        return False
    return True
