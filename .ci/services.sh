#!/usr/bin/env bash
# Installs and starts what the service tests need (Debian's postgresql and chromium), then prints
# `export SAFEVIEW_TEST_PG_URL=…` for `eval "$(.ci/services.sh)"`. Idempotent; run as root.
# Never fails CI: if something is missing it warns on stderr and exits 0 (those tests then skip).
set -u
warn() { echo "services.sh: warning: $*" >&2; }
DB=safeview_test
USER_=safeview_test
PASS=safeview_test
PORT=${SAFEVIEW_TEST_PG_PORT:-5432}

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    warn "not root; cannot install ${need[*]}"
  else
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; } >&2 \
      || warn "apt-get could not install ${need[*]}"
  fi
fi

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  warn "PostgreSQL is not installed; the PostgreSQL tests will skip"
  exit 0
fi
cluster=$(pg_lsclusters -h 2>/dev/null | head -n1)
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n1)
  pg_createcluster "$version" main -p "$PORT" >&2 || { warn "pg_createcluster failed"; exit 0; }
  cluster=$(pg_lsclusters -h | head -n1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$status" != online ]; then
  pg_ctlcluster "$version" "$name" start -o "-c listen_addresses=127.0.0.1" >&2 || { warn "PostgreSQL did not start"; exit 0; }
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -p $port -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
psql_() { su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
if [ "$(psql_ "select 1 from pg_roles where rolname='$USER_'" 2>/dev/null)" != 1 ]; then
  psql_ "create role $USER_ login password '$PASS'" >&2 || { warn "cannot create the test role"; exit 0; }
fi
if [ "$(psql_ "select 1 from pg_database where datname='$DB'" 2>/dev/null)" != 1 ]; then
  psql_ "create database $DB owner $USER_" >&2 || { warn "cannot create the test database"; exit 0; }
fi
echo "export SAFEVIEW_TEST_PG_URL=postgresql+psycopg://$USER_:$PASS@127.0.0.1:$port/$DB"
