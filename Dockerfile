# One image for every role: the web app (default), a worker, beat, the monitor or a migration.
#   docker run IMAGE                                  -> gunicorn wsgi:app on :5000
#   docker run IMAGE celery -A tasks worker -l info --concurrency=4 --max-tasks-per-child=100 --time-limit=300 --soft-time-limit=240 -Q default,state
#   docker run IMAGE celery -A tasks beat -l info
#   docker run IMAGE dramatiq actors -p 2 -t 4 -Q default state --worker-shutdown-timeout 308000
#   docker run IMAGE celery -A tasks flower --port=5555 --address=0.0.0.0
#   docker run IMAGE assistant migrate
# The HEALTHCHECK below is the web app's /health (503 while no worker is alive);
# deploy/docker/compose.yml gives the other roles their own.

# -- build: the project and its dependencies in a virtualenv, no compiler needed
#    (psycopg[binary] and the others ship wheels).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY app ./app
COPY actors ./actors
COPY facade ./facade
COPY tasks.py wsgi.py ./
RUN /opt/venv/bin/pip install .

# -- runtime: the virtualenv and an unprivileged user, nothing else.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    LANGGRAPH_STRICT_MSGPACK=true
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --user-group --home-dir /srv/assistant --no-create-home assistant \
 && mkdir -p /srv/assistant/.run && chown assistant:assistant /srv/assistant/.run
WORKDIR /srv/assistant
USER assistant
# web, monitor, a worker node's metrics (WORKER_METRICS_PORT)
EXPOSE 5000 5555 9191
# A worker stops warmly on SIGTERM (running tasks finish); compose gives it the time.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=8)"]
CMD ["gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf", "--bind", "0.0.0.0:5000", "--workers", "4", "--access-logfile", "-"]
