# One image for every role: the web app (default), a worker, or a migration.
#   docker run IMAGE                                  -> gunicorn wsgi:app on :5000
#   docker run IMAGE celery -A tasks worker -l info -Q default,state   -> a worker
#   docker run IMAGE assistant migrate                -> create the tables
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LANGGRAPH_STRICT_MSGPACK=true

WORKDIR /srv/assistant
COPY pyproject.toml setup.cfg README.md ./
COPY app ./app
COPY actors ./actors
COPY facade ./facade
COPY tasks.py wsgi.py ./
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /srv/assistant assistant \
 && mkdir -p /srv/assistant/.run && chown assistant /srv/assistant/.run

USER assistant
EXPOSE 5000
STOPSIGNAL SIGTERM
CMD ["gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf", "--bind", "0.0.0.0:5000", "--workers", "4", "--access-logfile", "-"]
