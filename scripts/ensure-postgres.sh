#!/usr/bin/env bash
# The test suite starts private PostgreSQL clusters (and a pgbouncer in transaction mode, as
# Supabase's pooler) itself; it only needs the binaries.
set -euo pipefail
PG_BIN="${TAM_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && command -v pgbouncer >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  echo "Installing PostgreSQL (binaries only; tests run their own clusters)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql pgbouncer >/dev/null
  # The Debian package starts a cluster and a pgbouncer of its own; tests run private ones.
  service pgbouncer stop >/dev/null 2>&1 || true
else
  echo "PostgreSQL binaries not found in $PG_BIN; install the 'postgresql' package." >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
