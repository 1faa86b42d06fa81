"""gunicorn's settings for ``wsgi:app``: port 5000 and an access log without secrets.

``gunicorn wsgi:app`` run from the project root reads ``gunicorn.conf.py``,
which takes these; ``assistant run``, the systemd unit and the image name
this module (``-c python:app.web.gunicorn_conf``) so an installed copy gets
them too.  Options on the command line still win (``--bind``, ``--workers``).

The access log writes the path without its query string: Meta's
verification handshake carries ``hub.verify_token`` there, a secret.
"""

from __future__ import annotations

from app.config import Config

#: The runbook curls localhost:5000/health; WEB_PORT moves it.
bind = [f"0.0.0.0:{Config.from_env().web_port}"]

#: gunicorn's default format with %(U)s (path) for %(r)s (the whole request line, query included).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
