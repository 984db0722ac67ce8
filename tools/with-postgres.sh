#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL on loopback, exported as MACPOOL_TEST_POSTGRES_URL.
# Uses an existing MACPOOL_TEST_POSTGRES_URL if set; runs without PostgreSQL (SQLite only) when
# its binaries are missing and MACPOOL_REQUIRE_POSTGRES is not set.
set -euo pipefail
if [ -n "${MACPOOL_TEST_POSTGRES_URL:-}" ]; then exec "$@"; fi
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  if [ -n "${MACPOOL_REQUIRE_POSTGRES:-}" ]; then echo "PostgreSQL is required but not installed" >&2; exit 1; fi
  echo "note: PostgreSQL not installed; running the suite on SQLite only" >&2
  exec "$@"
fi
PGDIR=$(mktemp -d); chmod 755 "$PGDIR"
RUN=()
if [ "$(id -u)" = 0 ]; then
  install -d -o postgres -g postgres -m 700 "$PGDIR/data" "$PGDIR/sock"
  RUN=(runuser -u postgres --)
else
  install -d -m 700 "$PGDIR/data" "$PGDIR/sock"
fi
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"${RUN[@]}" "$BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
"${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/sock/pg.log" -w -t 30 \
  -o "-p $PORT -k $PGDIR/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
cleanup() { "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
trap cleanup EXIT
"${RUN[@]}" "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE macpool_test" >/dev/null
export MACPOOL_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/macpool_test"
echo "PostgreSQL for tests at 127.0.0.1:$PORT" >&2
"$@"
