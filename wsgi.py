"""The composition root: ``gunicorn wsgi:app``."""

import redis

from actors import TASKS, config
from app.db import make_engine, make_session_factory
from app.web import create_app
from app.web.app import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S


def enqueue(task_name, args=(), kwargs=None, **options):
    """Send a runbook task by name, with Celery's options (countdown, priority, ...)."""
    return TASKS[task_name].apply_async(args=args, kwargs=kwargs, **options)


app = create_app(
    config,
    enqueue=enqueue,
    redis_client=redis.Redis.from_url(config.redis_uri, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                                      socket_timeout=REDIS_SOCKET_TIMEOUT_S),
    sessions=make_session_factory(make_engine(config.db_url)),
)
