"""The Falcon app: resources take their collaborators in ``__init__``."""

from app.web.app import create_app

__all__ = ["create_app"]
