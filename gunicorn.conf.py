"""Read by a bare ``gunicorn wsgi:app`` in the project root: the app's own settings."""

from app.web.gunicorn_conf import access_log_format, bind, child_exit, on_exit, on_starting  # noqa: F401
