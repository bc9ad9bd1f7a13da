#!/usr/bin/env bash
# Makes sure the PostgreSQL that the tests use answers, or stops with a message
# that names what is missing. Quick when it already answers.
#
# The URL comes from CUSTARD_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test). Only a server on this machine at
# the default address is ever started or installed; set CUSTARD_NO_INSTALL=1
# to forbid installing Debian's postgresql package.
set -euo pipefail

url="${CUSTARD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
default_url="postgres://postgres@127.0.0.1:5432/test"
# The same server, database "postgres", for administrative commands.
admin_url="${url%%\?*}"
admin_url="${admin_url%/*}/postgres"

answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$admin_url" -t 2
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

wait_until_ready() {
  for _ in $(seq 1 30); do
    answers && return 0
    sleep 1
  done
  return 1
}

start_local_cluster() {
  command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  [ -d /etc/postgresql ] || return 1
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || return 1
  echo "ensure-postgres: starting PostgreSQL $version (cluster main)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_until_ready
}

install_postgres() {
  if [ "${CUSTARD_NO_INSTALL:-0}" = "1" ]; then return 1; fi
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  echo "ensure-postgres: installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect as postgres without a password over loopback, like the CI machines.
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' >"$hba"
  start_local_cluster
}

if ! answers; then
  if [ "$url" != "$default_url" ] && [[ "$url" != *"@127.0.0.1:5432/"* ]] && [[ "$url" != *"@localhost:5432/"* ]]; then
    echo "ensure-postgres: PostgreSQL at CUSTARD_TEST_DATABASE_URL does not answer; start it and rerun" >&2
    exit 1
  fi
  if ! start_local_cluster && ! install_postgres; then
    echo "ensure-postgres: PostgreSQL does not answer on 127.0.0.1:5432 and could not be started or installed." >&2
    echo "  Install Debian's postgresql package (trust auth for 127.0.0.1) or set CUSTARD_TEST_DATABASE_URL." >&2
    exit 1
  fi
fi

# The database named in the URL must exist (the machines ship one called "test").
dbname="${url%%\?*}"
dbname="${dbname##*/}"
if command -v psql >/dev/null 2>&1 && [ -n "$dbname" ]; then
  exists=$(psql -X -A -t -d "$admin_url" -c "SELECT 1 FROM pg_database WHERE datname = '$dbname'" 2>/dev/null || true)
  if [ "$exists" != "1" ]; then
    echo "ensure-postgres: creating database $dbname"
    psql -X -q -d "$admin_url" -c "CREATE DATABASE \"$dbname\""
  fi
fi
echo "ensure-postgres: PostgreSQL answers"
