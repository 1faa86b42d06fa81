"""The monitor (``celery -A tasks flower``) as a real process, and plain HTTP calls to it."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.support.celery_worker import CeleryWorker

__all__ = ["Monitor", "start_monitor", "http"]


@dataclass
class Response:
    status: int
    #: Header names in lower case.
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


def http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
         auth: tuple[str, str] | None = None, timeout_s: float = 30) -> Response:
    """One request; HTTP errors are answers too."""
    headers = dict(headers or {})
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Response(response.status, _lower(response.headers), response.read().decode())
    except urllib.error.HTTPError as e:
        return Response(e.code, _lower(e.headers), e.read().decode())


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class Monitor:
    """A started monitor: its process and its base URL."""

    def __init__(self, process: CeleryWorker) -> None:
        self.process = process
        output = process.wait_for_output("Connected to ")
        match = re.search(r"Visit me at (http://\S+)", output)
        assert match, output
        self.url = match.group(1).rstrip("/")

    def get(self, path: str, **kwargs: Any) -> Response:
        return http(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return http(self.url + path, method="POST", **kwargs)


def start_monitor(celery_worker, *options: str, **env: str) -> Monitor:
    """``celery -A tasks flower --port=0 OPTIONS`` (a free port), started and answering."""
    return Monitor(celery_worker(["flower", "--port=0", *options], **env))
