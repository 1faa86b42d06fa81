"""A TCP proxy to a real PostgreSQL that can swallow queries: a connection that stalls after it was made."""

from __future__ import annotations

import socket
import threading

#: PostgreSQL's ReadyForQuery message when idle: after it, what a client sends is a query.
_READY_FOR_QUERY = b"Z\x00\x00\x00\x05I"


class StallingProxy:
    """Forwards loopback connections to ``upstream_port``; while ``stall`` is set,
    drops what a client sends once its connection is ready for queries.

    A connection made while ``stall`` is clear connects normally; its next
    query is then never answered (the server never sees it), like a
    partition after the connect.  Clearing ``stall`` lets new queries
    through; a query already swallowed stays unanswered.  Use with
    ``sslmode=disable`` so the proxy sees the protocol.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.stall = threading.Event()
        self.swallowed = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()

    def __enter__(self) -> StallingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            ready = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, ready, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, ready, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, ready: threading.Event, upward: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if upward and ready.is_set() and self.stall.is_set():
                    self.swallowed += 1
                    continue
                if not upward and _READY_FOR_QUERY in chunk:
                    ready.set()
                target.sendall(chunk)
        except OSError:
            pass
