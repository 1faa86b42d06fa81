"""``create_app``: the Falcon application, wired from a config and an enqueue callable."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import falcon
import redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Config
from app.health import BrokerProbe, BrokerSnapshot
from app.web.health import HealthResource
from app.web.metrics import MetricsResource, WebhookMetrics, count_enqueued
from app.web.operator import OperatorConversationResource
from app.web.probes import Probe, database_check, make_probe_engine, secrets_of
from app.web.webhook import WebhookResource

__all__ = ["create_app", "Enqueue", "VERSION"]

logger = logging.getLogger(__name__)

VERSION = "0.1.0"

#: Sends a task by its runbook name: ``enqueue("check_buffer_task", args, countdown=3)``.
Enqueue = Callable[..., Any]

#: Seconds the web app waits for Redis before answering 503 (Meta retries).
REDIS_CONNECT_TIMEOUT_S = 2
REDIS_SOCKET_TIMEOUT_S = 5


class IndexResource:
    """``GET /``: what this service is."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"service": "whatsapp-assistant", "version": VERSION}


def _unavailable(what: str) -> Callable[..., None]:
    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
        logger.error("%s is unavailable while serving %s %s: %r.", what, req.method, req.path, ex)
        raise falcon.HTTPServiceUnavailable(
            title=f"{what} unavailable", description=f"{what} did not answer; nothing was stored, try again",
            retry_after=5)

    return handle


def create_app(config: Config, *, enqueue: Enqueue, health: BrokerProbe | None = None,
               queues: Sequence[str] = (), redis_client: redis.Redis | None = None,
               sessions: sessionmaker[Session] | None = None,
               new_id: Callable[[], str] | None = None) -> falcon.App:
    """The WSGI app (``gunicorn wsgi:app``).

    Parameters:
      config: the settings (secrets, caps, buffer window).
      enqueue: sends a runbook task by name with Celery's options.
      health: reads the worker nodes and queue sizes from Redis, for
        ``/health`` and ``/metrics`` (``wsgi.py`` builds it from the
        actors); without it both report the workers as unknown.
      queues: the queues ``/health`` lists, also when Redis fails (``wsgi.py``
        passes the actors' list).
      redis_client: where the webhook dedups and buffers; built from
        ``config.redis_uri`` when not given.
      sessions: the database session factory of the operator API; built
        from ``config.db_url`` when not given (no connection until used).
      new_id: injected unique ids, for tests.
    """
    if redis_client is None:
        redis_client = redis.Redis.from_url(config.redis_uri, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                                            socket_timeout=REDIS_SOCKET_TIMEOUT_S)
    if sessions is None:
        from app.db import make_engine, make_session_factory

        sessions = make_session_factory(make_engine(config.db_url))
    enqueue = count_enqueued(enqueue)
    app = falcon.App(middleware=[WebhookMetrics(WebhookResource)])
    app.req_options.strip_url_path_trailing_slash = True
    # A store that does not answer is a 503: the caller (Meta, an operator) tries again.
    app.add_error_handler(redis.RedisError, _unavailable("Redis"))
    app.add_error_handler(DBAPIError, _unavailable("The database"))

    app.add_route("/", IndexResource())
    # One probe of each kind per app: /health and /metrics share its attempts and its cached result.
    secrets = secrets_of(config.whatsapp_token, config.whatsapp_app_secret, config.whatsapp_verify_token,
                         config.operator_token, config.google_api_key, urls=(config.redis_uri, config.db_url))
    broker = Probe[BrokerSnapshot](health, name="redis", secrets=secrets) if health is not None else None
    database = Probe(database_check(make_probe_engine(config.db_url)), name="database", secrets=secrets)
    app.add_route("/health", HealthResource(broker=broker, database=database, queues=queues))
    app.add_route("/metrics", MetricsResource(broker=broker, database=database,
                                              multiprocess_dir=config.prometheus_multiproc_dir))
    app.add_route("/webhook", WebhookResource(
        redis_client, enqueue,
        app_secret=config.whatsapp_app_secret,
        verify_token=config.whatsapp_verify_token,
        max_body_bytes=config.webhook_max_body_bytes,
        buffer_window_s=config.buffer_window_s,
        dead_letter_ttl_s=config.dead_letter_ttl_s,
    ))
    operator = OperatorConversationResource(enqueue, sessions, operator_token=config.operator_token,
                                            new_id=new_id or (lambda: str(uuid.uuid4())))
    app.add_route("/operator/conversations/{key}", operator)
    for action in ("takeover", "handback", "messages"):
        app.add_route(f"/operator/conversations/{{key}}/{action}", operator, suffix=action)
    return app
