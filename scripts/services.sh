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

wait_for_quietly() {
  tries=0
  until "$1"; do
    tries=$((tries + 1))
    [ "$tries" -ge 20 ] && return 1
    sleep 0.5
  done
}

wait_for() {
  wait_for_quietly "$1" && return 0
  echo "error: $2 did not come up (set TEST_REDIS_URL / TEST_PG_ADMIN_URL to reach it)" >&2
  return 1
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
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      echo "Starting PostgreSQL $version for the tests..." >&2
      # Exit code 2 means "already running": not an error here.
      pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null ||
        pg_ctlcluster "$version" main start 2>/dev/null || true
    done
    wait_for_quietly pg_up && return 0
  else
    apt_install postgresql
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    done
  fi
  # Running, but not reachable as TEST_PG_ADMIN_URL says (a Debian cluster
  # wants a password over TCP): give the postgres role one, as root.
  if [ "$(id -u)" = 0 ] && command -v su >/dev/null 2>&1; then
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    TEST_PG_ADMIN_URL="postgresql://postgres:postgres@127.0.0.1:5432/postgres"
    export TEST_PG_ADMIN_URL
  fi
  wait_for pg_up "PostgreSQL at $TEST_PG_ADMIN_URL"
}

# promtool (Debian's prometheus package) checks deploy/prometheus/ in tests/deploy.
# Not fatal when it cannot be installed: only those tests fail, saying so.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  apt_install prometheus ||
    echo "warning: promtool is missing; the tests of deploy/prometheus will fail" >&2
}

# The monitor's browser test drives Debian's Chromium (never a downloaded one).
# Without it that one test fails; the rest of the suite still runs.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  apt_install chromium ||
    echo "warning: /usr/bin/chromium is missing: the monitor's browser test will fail" >&2
}

# tests/bench drives the benchmark harness's web load with wrk (Debian's package).
ensure_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  apt_install wrk ||
    echo "warning: wrk is missing; the benchmark harness's test will fail" >&2
}
