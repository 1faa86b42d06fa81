"""The Falcon app: resources take their collaborators in ``__init__``.

``create_app`` is imported on first use, not with the package: gunicorn's
master imports :mod:`app.web.gunicorn_conf` before it prepares the metrics
directory, and prometheus_client (which :mod:`app.web.app` imports) must
not be imported before that (it reads the directory's variable once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.web.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
