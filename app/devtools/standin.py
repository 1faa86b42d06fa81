"""What the local stand-ins of remote APIs share: a threaded HTTP server
that records every request as JSON and answers from a handler.

The stand-ins are real HTTP servers on loopback ports, so the clients
under test run their real transport (httpx, TLS aside) end to end.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StandinServer", "Reply"]

logger = logging.getLogger(__name__)

#: Largest request body a stand-in reads, in bytes.
MAX_REQUEST_BYTES = 8 * 1024 * 1024

#: An answer: HTTP status, then a JSON body or plain text.
Reply = tuple[int, Any]


class StandinServer:
    """A ThreadingHTTPServer on ``host:port`` (0 picks a free port).

    Subclasses implement :meth:`handle`; every request is kept in
    :attr:`requests` (method, path, headers, body parsed as JSON when it
    is JSON) under a lock, oldest first.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._stalls: list[float] = []
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StandinServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or an interrupt)."""
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> list[dict[str, Any]]:
        """What was received so far, oldest first."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def stall(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` answers for ``seconds`` (to test client timeouts)."""
        with self._lock:
            self._stalls.extend([seconds] * times)

    def _take_stall(self) -> float:
        with self._lock:
            return self._stalls.pop(0) if self._stalls else 0.0

    def record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(request)

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REQUEST_BYTES:
                    self._answer(413, {"error": {"message": "request too large"}})
                    return
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not self.path.startswith("/_standin/"):
                    time.sleep(standin._take_stall())
                try:
                    status, reply = standin.handle(self.command, self.path, headers, body)
                except Exception:  # a stand-in bug must show, not hang the client
                    logger.exception("The stand-in failed on %s %s.", self.command, self.path)
                    status, reply = 500, {"error": {"message": "stand-in failure"}}
                self._answer(status, reply)

            def _answer(self, status: int, reply: Any) -> None:
                if isinstance(reply, str):
                    data, kind = reply.encode(), "text/plain; charset=utf-8"
                else:
                    data, kind = json.dumps(reply).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("%s %s", self.address_string(), format % args)

        return Handler
