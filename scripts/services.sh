# Sourced by test.sh: make sure Redis and PostgreSQL answer, starting
# (or, as root on Debian, installing) them when they do not.

redis_up() {
  .venv/bin/python - "$TEST_REDIS_URL" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1] + "/0", socket_connect_timeout=2).ping()
PY
}

pg_up() {
  .venv/bin/python - "$TEST_PG_ADMIN_URL" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}

wait_for() {
  tries=0
  until "$1"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
      echo "error: $2 did not come up" >&2
      return 1
    fi
    sleep 0.5
  done
}

ensure_redis() {
  redis_up && return 0
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  port=$(printf '%s\n' "$TEST_REDIS_URL" | sed -n 's#.*:\([0-9][0-9]*\)/*$#\1#p')
  port=${port:-6379}
  echo "Starting redis-server on 127.0.0.1:$port for the tests..." >&2
  mkdir -p .run/test-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$PWD/.run/test-redis" --logfile "$PWD/.run/test-redis/redis.log"
  wait_for redis_up "redis-server"
}

ensure_postgres() {
  pg_up && return 0
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
    fresh_cluster=1
  fi
  version=$(ls /etc/postgresql | sort -n | tail -n 1)
  echo "Starting PostgreSQL $version for the tests..." >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start
  if [ "${fresh_cluster:-0}" = 1 ]; then
    # A new Debian cluster wants a password over TCP: give the tests one.
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    TEST_PG_ADMIN_URL="postgresql://postgres:postgres@127.0.0.1:5432/postgres"
    export TEST_PG_ADMIN_URL
  fi
  wait_for pg_up "PostgreSQL"
}
