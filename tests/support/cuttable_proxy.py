"""A TCP proxy the test can cut: a dependency (PostgreSQL) gone and back, as its clients see it."""

from __future__ import annotations

import random
import socket
import struct
import threading

__all__ = ["CuttableProxy"]

#: The proxy listens on a port below the kernel's ephemeral range (32768+ on
#: Linux), so that while it is cut no outgoing connection of another process
#: can be given its port, and it can listen on the same port again.
_PORTS = range(20_000, 32_000)


class CuttableProxy:
    """Forwards loopback connections to ``upstream_port``; :meth:`cut` makes the
    upstream unavailable, :meth:`restore` brings it back on the same port.

    While cut, the port is closed (a new connection is refused, as with a
    stopped server) and every live connection was dropped both ways (as a
    crashed server or a partition does to them).

    Attributes:
      connections: how many client connections were forwarded.
      dropped: live connections ended by cuts.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.connections = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self.port = self._bind_free_port()
        self._closed = False

    def _bind_free_port(self) -> int:
        for port in random.sample(_PORTS, 200):
            try:
                self._listen(port)
            except OSError:
                continue
            return port
        raise RuntimeError("no free port for the proxy between 20000 and 32000")

    def _listen(self, port: int) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self.cut()

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        """Refuse new connections and drop the live ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            # (shutdown first: close alone would leave the thread blocked in
            # accept() holding the socket, still listening)
            _drop(listener)
        for pair in pairs:
            self.dropped += 1
            for sock in pair:
                _reset(sock)

    def restore(self) -> None:
        """Listen on the same port again.

        Raises:
          OSError: the port was taken meanwhile (unlikely: see ``_PORTS``).
        """
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if self._listener is None:
            self._listen(self.port)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut (or closed)
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _drop(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while this one connected
                    _reset(client)
                    _reset(server)
                    continue
                self._pairs.append((client, server))
                self.connections += 1
            pair = (client, server)
            threading.Thread(target=self._pump, args=(client, server, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, pair), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        # One side ended: end the other too, as a direct connection would.
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        _drop(target)
        _drop(source)


def _reset(sock: socket.socket) -> None:
    """Close with a reset: the peer learns at once, and nothing lingers on the
    proxy's port (a graceful close would wait for the peer's, keeping the
    port from being listened on again)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _drop(sock)


def _drop(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked on the socket; close() alone would not.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
