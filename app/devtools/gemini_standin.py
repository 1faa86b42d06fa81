"""A local stand-in of Gemini's REST endpoint, for tests of the real SDK.

It answers ``POST /{version}/models/{model}:generateContent`` with a
Gemini-shaped response.  By default the reply echoes the last user turn;
:meth:`GeminiStandin.respond_with` queues exact answers (an error status,
a blocked prompt, a safety stop) for the next calls.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from app.devtools.standin import Reply, StandinServer

__all__ = ["GeminiStandin", "text_response", "error_response"]

_GENERATE = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:?]+):generateContent(?:\?.*)?$")

#: Gemini's error status names by HTTP status.
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 503: "UNAVAILABLE"}


def text_response(text: str, *, finish_reason: str = "STOP") -> dict[str, Any]:
    """A successful generateContent body with one candidate."""
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish_reason,
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        "modelVersion": "standin",
    }


def error_response(status: int, message: str = "stand-in error") -> Reply:
    """Google's error JSON for ``status``."""
    return status, {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}


class GeminiStandin(StandinServer):
    """Gemini's generateContent on a loopback port; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._scripted: deque[Reply] = deque()

    def respond_with(self, *replies: Reply) -> None:
        """Answer the next calls with ``replies`` (status, JSON body), in order."""
        self._scripted.extend(replies)

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        match = _GENERATE.match(path)
        if method != "POST" or match is None:
            return error_response(404, f"no such endpoint: {method} {path}")
        self.record({"method": method, "path": path, "version": match["version"], "model": match["model"],
                     "api_key": headers.get("x-goog-api-key"), "body": body})
        if not headers.get("x-goog-api-key"):
            return error_response(403, "API key missing")
        try:
            return self._scripted.popleft()
        except IndexError:
            pass
        contents = (body or {}).get("contents") or []
        last = contents[-1]["parts"][0].get("text", "") if contents else ""
        return 200, text_response(f"Stand-in Gemini reply to: {last}")
