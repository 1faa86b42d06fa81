"""A local stand-in of the WhatsApp Cloud API, for tests and the demo.

A real HTTP server (``assistant whatsapp-standin --port N``) that

- accepts ``POST /{version?}/{phone_number_id}/messages`` with a bearer
  token: a text send is answered as Meta does
  (``{"messaging_product": "whatsapp", "contacts": [...], "messages":
  [{"id": "wamid.<unique>"}]}``), a mark-read with ``{"success": true}``;
- records every such request (JSON) with what it answered and when
  (``at``, seconds since the epoch): ``GET /_standin/requests``;
  ``DELETE /_standin/requests`` clears them and any pending failures;
- fails on request: ``POST /_standin/fail`` with ``{"code": 131056,
  "http_status": 400, "times": 2}`` makes the next 2 sends answer Meta's
  error JSON with that code (``"kind": "read"`` or ``"any"`` for
  mark-reads too); with ``"to": "16505551234"``, only the sends to that
  customer (its ``to`` or ``recipient``), so each conversation can be
  given its own sequence of answers (failures queue up in order);
- answers chosen wamids on request: ``POST /_standin/ids`` with
  ``{"ids": ["wamid.X"]}`` makes the next sends return those ids, in
  order, so a test can post statuses for a reply before or after it is
  sent.
"""

from __future__ import annotations

import argparse
import itertools
import re
import threading
import time
import uuid
from typing import Any

from app.devtools.standin import Reply, StandinServer

__all__ = ["WhatsAppStandin", "main"]

_MESSAGES = re.compile(r"^/(?:(?P<version>v[\d.]+)/)?(?P<phone>[^/?]+)/messages/?(?:\?.*)?$")

#: Titles of the error codes the stand-in is asked for most.
_TITLES = {
    130429: "Rate limit hit", 131056: "(Business Account, Consumer Account) pair rate limit hit",
    131047: "Re-engagement message", 131026: "Message undeliverable", 131000: "Something went wrong",
    131016: "Service unavailable", 190: "Invalid OAuth access token", 100: "Invalid parameter",
}


def meta_error(code: int, http_status: int, message: str | None = None) -> Reply:
    """Meta's error JSON for ``code``."""
    title = message or _TITLES.get(code, f"Error {code}")
    return http_status, {"error": {"message": f"(#{code}) {title}", "type": "OAuthException", "code": code,
                                   "error_data": {"messaging_product": "whatsapp", "details": title},
                                   "fbtrace_id": uuid.uuid4().hex[:20]}}


class WhatsAppStandin(StandinServer):
    """The Cloud API's messages endpoint on a loopback port; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._failures: list[dict[str, Any]] = []
        self._failures_lock = threading.Lock()
        self._counter = itertools.count(1)
        self._next_ids: list[str] = []

    def fail(self, *, code: int, http_status: int = 400, times: int = 1, kind: str = "send",
             to: str | None = None) -> None:
        """Make the next ``times`` requests of ``kind`` (send, read, any) fail with ``code``.

        Parameters:
          to: only sends to this customer (their ``to`` or ``recipient``) fail;
            the others go through.
        """
        if kind not in ("send", "read", "any"):
            raise ValueError("kind must be send, read or any")
        if to is not None and (kind != "send" or not isinstance(to, str) or not to):
            raise ValueError("to names a customer (a non-empty string), for sends only")
        with self._failures_lock:
            self._failures.extend({"code": code, "http_status": http_status, "kind": kind, "to": to}
                                  for _ in range(times))

    def use_ids(self, ids: list[str]) -> None:
        """Answer the next ``len(ids)`` successful sends with these wamids, in order."""
        with self._failures_lock:
            self._next_ids.extend(ids)

    def clear(self) -> None:
        super().clear()
        with self._failures_lock:
            self._failures.clear()
            self._next_ids.clear()

    def _new_wamid(self) -> str:
        with self._failures_lock:
            if self._next_ids:
                return self._next_ids.pop(0)
        return f"wamid.STANDIN{next(self._counter):06d}{uuid.uuid4().hex[:12].upper()}"

    def _next_failure(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        customer = body.get("to") or body.get("recipient")
        with self._failures_lock:
            for i, failure in enumerate(self._failures):
                if failure["kind"] in (kind, "any") and failure["to"] in (None, customer):
                    return self._failures.pop(i)
        return None

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        if path.split("?")[0] == "/_standin/requests":
            if method == "GET":
                return 200, self.requests()
            if method == "DELETE":
                self.clear()
                return 200, {"cleared": True}
        if path.split("?")[0] == "/_standin/fail" and method == "POST":
            return self._set_failure(body)
        if path.split("?")[0] == "/_standin/ids" and method == "POST":
            ids = body.get("ids") if isinstance(body, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                return 400, {"error": "send {\"ids\": [\"wamid...\", ...]}"}
            self.use_ids(ids)
            return 200, {"next_ids": ids}
        match = _MESSAGES.match(path)
        if match is None or method != "POST":
            return 404, {"error": {"message": f"Unknown path components: {path}", "code": 2500}}
        return self._messages(match["phone"], headers, body)

    def _set_failure(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not isinstance(body.get("code"), int):
            return 400, {"error": "send {\"code\": int, \"http_status\": int, \"times\": int, \"kind\": str, "
                                  "\"to\": str}"}
        try:
            self.fail(code=body["code"], http_status=int(body.get("http_status", 400)),
                      times=int(body.get("times", 1)), kind=str(body.get("kind", "send")), to=body.get("to"))
        except (TypeError, ValueError) as e:
            return 400, {"error": str(e)}
        return 200, {"failing": body}

    def _messages(self, phone_number_id: str, headers: dict[str, str], body: Any) -> Reply:
        kind = "read" if isinstance(body, dict) and body.get("status") == "read" else "send"
        record = {"kind": kind, "phone_number_id": phone_number_id, "body": body,
                  "authorization": headers.get("authorization", ""), "at": time.time()}
        reply = self._answer(kind, headers, body)
        record["response"] = {"status": reply[0], "body": reply[1]}
        self.record(record)
        return reply

    def _answer(self, kind: str, headers: dict[str, str], body: Any) -> Reply:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return meta_error(190, 401)
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return meta_error(100, 400, "messaging_product must be whatsapp")
        failure = self._next_failure(kind, body)
        if failure is not None:
            return meta_error(failure["code"], failure["http_status"])
        if kind == "read":
            if not body.get("message_id"):
                return meta_error(100, 400, "message_id is required")
            return 200, {"success": True}
        to, recipient = body.get("to"), body.get("recipient")
        text = (body.get("text") or {}).get("body") if isinstance(body.get("text"), dict) else None
        if body.get("type") != "text" or not isinstance(text, str) or not text:
            return meta_error(100, 400, "a text message needs type text and text.body")
        if bool(to) == bool(recipient):
            return meta_error(100, 400, "exactly one of to and recipient is required")
        contact = {"input": to, "wa_id": to} if to else {"input": recipient, "user_id": recipient}
        wamid = self._new_wamid()
        return 200, {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]}


def main(argv: list[str] | None = None) -> int:
    """``assistant whatsapp-standin``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="assistant whatsapp-standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    server = WhatsAppStandin(host=args.host, port=args.port)
    print(f"[whatsapp-standin] listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
