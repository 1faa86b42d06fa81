"""The composition root: ``gunicorn wsgi:app``.

create_app builds the Redis client and the session factory from the
config; this module adds only what the web layer may not import: the
actors' enqueue and the broker's health probe (worker nodes, queue sizes).
"""

from actors import TASKS, config
from actors.health import BrokerHealth
from actors.periodic import QUEUES
from app.web import create_app


def enqueue(task_name, args=(), kwargs=None, **options):
    """Send a runbook task by name, with Celery's options (countdown, priority, ...)."""
    return TASKS[task_name].apply_async(args=args, kwargs=kwargs, **options)


app = create_app(config, enqueue=enqueue, health=BrokerHealth(config), queues=QUEUES)
