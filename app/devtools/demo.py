"""``assistant demo``: post a signed fixture to the running webhook and
print the reply the local WhatsApp stand-in received.

It signs the fixture's raw bytes as Meta does, posts them, then watches
the stand-in's record (``GET /_standin/requests``) for a send to the
fixture's customer, for a bounded time.  ``--fresh`` gives the messages
new wamids (and re-signs), so a fixture can be replayed; without it a
second run is a Meta retry, which the webhook deduplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.webhook import conversation_key, parse_body

__all__ = ["FIXTURES", "DemoError", "find_fixture", "sign", "run_demo", "standin_url_file"]

#: The webhook bodies shipped with the package (copies of Meta-shaped fixtures).
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Seconds between two reads of the stand-in's record.
POLL_INTERVAL_S = 0.2


class DemoError(Exception):
    """The demo could not show a reply; the message says why and what to do."""


def standin_url_file(data_dir: str | Path) -> Path:
    """Where ``assistant run`` writes the URL of the stand-in it started."""
    return Path(data_dir) / "whatsapp-standin.url"


def find_fixture(name_or_path: str) -> Path:
    """A shipped fixture by name (``text`` or ``text.json``), or a file path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (FIXTURES / name_or_path, FIXTURES / f"{name_or_path}.json"):
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "verification"))
    raise DemoError(f"no fixture {name_or_path!r}; pick one of: {names}, or give a file path")


def sign(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 header of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def freshen(body: bytes) -> bytes:
    """``body`` with every inbound message given a new wamid (re-serialised)."""
    data = json.loads(body)
    for entry in data.get("entry", []):
        for change in entry.get("changes", []):
            for message in change.get("value", {}).get("messages", []) or []:
                message["id"] = f"wamid.DEMO{uuid.uuid4().hex.upper()}"
    return json.dumps(data).encode()


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout_s: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise DemoError(f"{url} did not answer ({e}); is `assistant run` running?") from None


def _standin_requests(standin_url: str) -> list[dict[str, Any]]:
    status, data = _http("GET", f"{standin_url}/_standin/requests")
    if status != 200:
        raise DemoError(f"the WhatsApp stand-in at {standin_url} answered {status}")
    return json.loads(data)


@dataclass
class DemoResult:
    webhook_status: int
    webhook_answer: Any
    replies: list[dict[str, Any]]


def run_demo(fixture: Path, *, webhook_url: str, standin_url: str, secret: str, timeout_s: float,
             fresh: bool = False) -> DemoResult:
    """Post ``fixture`` signed and wait for the replies it should produce.

    Raises:
      DemoError: the webhook refused it, the stand-in is unreachable, or no
        reply came within ``timeout_s``.
    """
    body = fixture.read_bytes()
    if fresh:
        body = freshen(body)
    expected = [m for m in parse_body(body).messages if m["answerable"]]
    customers = {conversation_key(m) for m in expected}
    before = len(_standin_requests(standin_url))
    status, answer_bytes = _http("POST", f"{webhook_url.rstrip('/')}/webhook", body,
                                 {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)})
    try:
        answer = json.loads(answer_bytes)
    except ValueError:
        answer = answer_bytes.decode("utf-8", "replace")
    if status != 200:
        raise DemoError(f"the webhook answered {status}: {answer}")
    if not customers:
        return DemoResult(status, answer, [])
    if isinstance(answer, dict) and answer.get("messages") == 0 and answer.get("duplicates"):
        raise DemoError("the webhook had seen these messages before (Meta retries are deduplicated), so no new "
                        "reply comes; run the demo with --fresh to send them as new messages")
    deadline = time.monotonic() + timeout_s
    while True:
        replies = [r for r in _standin_requests(standin_url)[before:]
                   if r.get("kind") == "send" and r.get("response", {}).get("status") == 200
                   and ((r.get("body") or {}).get("to") or (r.get("body") or {}).get("recipient")) in customers]
        if {(r["body"].get("to") or r["body"].get("recipient")) for r in replies} >= customers:
            return DemoResult(status, answer, replies)
        if time.monotonic() > deadline:
            raise DemoError(
                f"no reply to {', '.join(sorted(c for c in customers if c))} reached the WhatsApp stand-in "
                f"within {timeout_s:g} s; is the worker running (see `assistant run`'s output)?")
        time.sleep(POLL_INTERVAL_S)
