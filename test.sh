#!/bin/sh
# Install the project with its test extra into .venv, make sure Redis,
# PostgreSQL (starting them if needed) and promtool are there, and run the whole suite.
# Arguments go to pytest.  Exit code 5 (no tests ran) is a failure.
set -eu
cd "$(dirname "$0")"
. ./scripts/venv.sh
. ./scripts/services.sh
ensure_venv "[test]"
TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
TEST_PG_ADMIN_URL="${TEST_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL TEST_PG_ADMIN_URL
ensure_redis
ensure_postgres
ensure_promtool
ensure_chromium
ensure_wrk
# Two test processes (pytest-xdist; TEST_PROCESSES=0 runs in this one): most tests wait on
# real workers, web servers and Redis rather than compute, so two halve the run's wall time on
# 2 cores. Every process claims its own Redis database and PostgreSQL database (tests/conftest.py).
# A "-n N" among the arguments wins.
exec .venv/bin/python -m pytest -n "${TEST_PROCESSES:-2}" --dist worksteal "$@"
