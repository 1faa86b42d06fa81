"""``create_app``: the Falcon application, wired from a config and an enqueue callable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from app.config import Config

__all__ = ["create_app", "Enqueue", "VERSION"]

VERSION = "0.1.0"

#: Sends a task by its runbook name: ``enqueue("check_buffer_task", args, countdown=3)``.
Enqueue = Callable[..., Any]


class IndexResource:
    """``GET /``: what this service is.  The webhook, health and metrics
    resources join it with the pipeline and operations issues."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"service": "whatsapp-assistant", "version": VERSION}


def create_app(config: Config, *, enqueue: Enqueue) -> falcon.App:
    """The WSGI app (``gunicorn wsgi:app``)."""
    app = falcon.App()
    app.req_options.strip_url_path_trailing_slash = True
    app.add_route("/", IndexResource())
    return app
