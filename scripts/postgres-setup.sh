#!/usr/bin/env bash
# A PostgreSQL server from Debian's packages for checkpoints (issue 4): installs
# postgresql if missing, starts the default cluster on 127.0.0.1, and makes a role
# and a database for minionflow. Prints the connection URL on stdout.
# Idempotent. Override the names with MINIONFLOW_PG_USER / _PASSWORD / _DB.
set -euo pipefail
PG_USER="${MINIONFLOW_PG_USER:-minionflow}"
PG_PASSWORD="${MINIONFLOW_PG_PASSWORD:-minionflow}"
PG_DB="${MINIONFLOW_PG_DB:-minionflow}"
log() { printf '[postgres] %s\n' "$*" >&2; }

# Callers capture stdout, so only the URL may go there: everything the tools
# print (pg_ctlcluster says "Removed stale pid file." after an unclean stop)
# goes to stderr. A function, not `exec 3>&1`: the postmaster would inherit the
# extra descriptor and keep the caller's $(...) open for ever.
setup() {
  if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing Debian's postgresql"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      log "PostgreSQL is not installed: install Debian's postgresql (as root), then rerun"
      exit 1
    fi
  fi
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    log "creating cluster $version/main"
    pg_createcluster "$version" main >/dev/null
  fi
  read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
  if [ "$status" != online ]; then
    log "starting cluster $version/$cluster on port $port"
    pg_ctlcluster "$version" "$cluster" start
  fi
  psql_admin() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
  for _ in $(seq 50); do psql_admin -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  if [ "$(psql_admin -c "select 1 from pg_roles where rolname = '$PG_USER'")" != 1 ]; then
    # createdb: the tests give each case a database of its own
    psql_admin -c "create role \"$PG_USER\" login createdb password '$PG_PASSWORD'"
  fi
  if [ "$(psql_admin -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    psql_admin -c "create database \"$PG_DB\" owner \"$PG_USER\""
  fi
}
setup >&2
echo "postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
