#!/bin/sh
# Install everything into .venv and run the whole system with embedded
# defaults: a private Redis when REDIS_URI is unset, SQLite when DB_URL
# is unset, the offline model when GOOGLE_API_KEY is unset.
set -eu
cd "$(dirname "$0")"
. ./scripts/venv.sh
ensure_venv ""
exec .venv/bin/assistant run "$@"
