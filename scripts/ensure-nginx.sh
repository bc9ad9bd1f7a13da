#!/usr/bin/env bash
# Makes sure an nginx binary exists for the replica tests, or stops with a
# message that names what is missing. Quick when it is already there; prints
# the binary's path at the end.
#
# Only the binary is needed: the tests start their own nginx, as the current
# user, with their own configuration on a free port
# (`nginx -p <dir> -c <conf> -g 'daemon off;'`). Installs Debian's nginx package
# (or nginx-light where that is the one there is) when missing, as root only;
# set CUSTARD_NO_INSTALL=1 to forbid installing. A system nginx that the
# package starts is stopped again, so nothing is left listening on port 80.
set -euo pipefail

binary() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }
}

report() {
  local bin
  bin=$(binary)
  echo "ensure-nginx: $("$bin" -v 2>&1 | head -n 1)"
  echo "ensure-nginx: $bin"
}

missing() {
  echo "ensure-nginx: nginx is required for the replica tests; $*" >&2
  echo "  Install Debian's nginx package (scripts/ensure-nginx.sh does it when allowed)." >&2
  exit 1
}

# The system nginx the package's post-install script may have started (it reads
# the default configuration, whose pid file says which process it is).
stop_system_nginx() {
  local bin pid
  bin=$(binary)
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
  pid=$(cat /run/nginx.pid 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  echo "ensure-nginx: stopping the system nginx the package started (pid $pid)"
  "$bin" -s quit 2>/dev/null || service nginx stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  echo "ensure-nginx: the system nginx (pid $pid) is still running; stop it with: $bin -s quit" >&2
}

if binary >/dev/null; then
  report
  exit 0
fi

if [ "${CUSTARD_NO_INSTALL:-0}" = "1" ]; then
  missing "it is not installed and installing is forbidden by CUSTARD_NO_INSTALL=1"
fi
[ "$(id -u)" = "0" ] || missing "it is not installed and only root installs it"
command -v apt-get >/dev/null 2>&1 || missing "it is not installed and apt-get is not available"
export DEBIAN_FRONTEND=noninteractive

# nginx where the release has it; nginx-light on releases that ship only flavours.
package() {
  local name
  for name in nginx nginx-light; do
    # A package with a version, not only a name others provide. grep reads it
    # all (no -q): an early exit would fail apt-cache with SIGPIPE (pipefail).
    if apt-cache show --no-all-versions "$name" 2>/dev/null | grep '^Version:' >/dev/null; then
      echo "$name"
      return 0
    fi
  done
  return 1
}

started=$SECONDS
if ! name=$(package); then
  # Usually a missing or stale package list; refresh it once and look again.
  apt-get update -qq || missing "apt-get update failed"
  name=$(package) || missing "neither nginx nor nginx-light is in the package lists"
fi
echo "ensure-nginx: installing Debian's $name package"
if ! apt-get install -y -qq --no-install-recommends "$name" >/dev/null; then
  echo "ensure-nginx: install failed; running apt-get update and retrying"
  apt-get update -qq || missing "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "$name" >/dev/null || missing "apt-get install $name failed"
fi
echo "ensure-nginx: installed in $((SECONDS - started)) s"
binary >/dev/null || missing "it is still not found after installing $name"
stop_system_nginx
report
