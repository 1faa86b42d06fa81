"""The monitor's WSGI application: Falcon resources behind an optional URL prefix.

The resources only translate: workers come from :mod:`actors.registry`,
queues from the broker (:meth:`actors.broker.RedisBroker.queue_sizes`,
:mod:`actors.queue_browser`, :mod:`actors.queue_samples`), tasks from
:mod:`actors.task_history`, dead letters from :mod:`actors.dead_letters`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import falcon

from facade.monitor import api, metrics, pages
from facade.monitor.auth import LOOPBACK_HOSTS, AuthMiddleware

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["MonitorSettings", "Sources", "create_app", "normalise_prefix"]


@dataclass(frozen=True)
class MonitorSettings:
    """What ``celery flower``'s options decide.

    Attributes:
      credentials: ``user:password`` pairs of ``--basic-auth`` (empty: none).
      url_prefix: ``""`` or ``/name`` (``--url-prefix``).
      unauthenticated_api: ``FLOWER_UNAUTHENTICATED_API``.
      allowed_hosts: host names ``Host`` and ``Origin`` may name (``*``: any).
    """

    credentials: tuple[str, ...] = ()
    url_prefix: str = ""
    unauthenticated_api: bool = False
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS


@dataclass
class Sources:
    """Where the monitor reads from: the project's broker, its queues and task names."""

    broker: RedisBroker
    queues: tuple[str, ...] = ("default", "state")
    registered: Callable[[], list[str]] = field(default=lambda: [])

    @property
    def client(self) -> Any:
        return self.broker.client


def normalise_prefix(value: str | None) -> str:
    """``flower/`` -> ``/flower``; ``""`` or ``/`` -> ``""``.

    Raises:
      ValueError: characters a URL path cannot hold as they are.
    """
    value = (value or "").strip().strip("/")
    if not value:
        return ""
    if any(c in value for c in "?#% \t\n\"'<>\\") or "//" in value:
        raise ValueError(f"--url-prefix must be a plain path such as 'flower', got {value!r}")
    return "/" + value


def _json_errors(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every error as JSON with its reason (Falcon has set the status and headers)."""
    resp.content_type = falcon.MEDIA_JSON
    body: dict[str, Any] = {"error": exc.title}
    if exc.description:
        body["reason"] = exc.description
    resp.text = json.dumps(body)


def create_app(sources: Sources, settings: MonitorSettings) -> Callable:
    """The monitor as a WSGI callable, every route under ``settings.url_prefix``."""
    app = falcon.App(middleware=[AuthMiddleware(settings.credentials, unauthenticated_api=settings.unauthenticated_api,
                                                allowed_hosts=settings.allowed_hosts)])
    app.set_error_serializer(lambda req, resp, exc: _json_errors(req, resp, exc))
    app.req_options.strip_url_path_trailing_slash = True
    pages.add_routes(app, sources, settings.url_prefix)
    api.add_routes(app, sources)
    app.add_route("/metrics", metrics.MetricsResource(sources))
    return _Prefixed(app, settings.url_prefix) if settings.url_prefix else app


class _Prefixed:
    """Serves ``app`` under ``prefix`` only: ``/prefix/x`` is the app's ``/x``; anything else is 404."""

    def __init__(self, app: Callable, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path == self.prefix:
            start_response("301 Moved Permanently", [("Location", self.prefix + "/"), ("Content-Type", "text/plain"),
                                                   ("Content-Length", "0")])
            return [b""]
        if not path.startswith(self.prefix + "/"):
            body = json.dumps({"error": "Not Found", "reason": f"the monitor is served under {self.prefix}/"})
            start_response("404 Not Found", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body.encode()]
        environ = {**environ, "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + self.prefix,
                   "PATH_INFO": path[len(self.prefix):]}
        return self.app(environ, start_response)
