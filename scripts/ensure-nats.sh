#!/usr/bin/env bash
# Makes sure the NATS server that the replica tests use answers, or stops with
# a message that names what is missing. Quick when it already answers.
#
# The address comes from CUSTARD_TEST_NATS_URL (default nats://127.0.0.1:4222).
# Only a server at the default address is ever started or installed: with
# `nats-server` on PATH (or in /usr/sbin) it is started in the background, detached
# so it outlives this script, logging to /tmp/custard-nats-<uid>/nats-server.log;
# without it Debian's nats-server package is installed first (as root only; set
# CUSTARD_NO_INSTALL=1 to forbid installing).
set -euo pipefail

url="${CUSTARD_TEST_NATS_URL:-nats://127.0.0.1:4222}"
# host:port of the URL, without scheme, credentials or path.
address="${url#*://}"
address="${address##*@}"
address="${address%%/*}"
host="${address%:*}"
port="${address##*:}"
[ "$host" != "$address" ] || port=4222
run_dir="/tmp/custard-nats-$(id -u)"
log="$run_dir/nats-server.log"

# 0: a NATS server answers (it greets with INFO); 1: nothing answers;
# 2: something that is not NATS listens. In a child shell, bounded by
# `timeout`: a failed connect must not end this script, nor hang it.
probe() {
  # shellcheck disable=SC2016 # expanded by the child shell, from its arguments
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    read -r -t 2 greeting <&3 || exit 2
    [[ "$greeting" == INFO* ]] || exit 2' probe "$host" "$port" 2>/dev/null
}

answers() {
  local status=0
  probe || status=$?
  [ "$status" = 124 ] && status=1
  if [ "$status" = 2 ]; then
    echo "ensure-nats: something that is not NATS listens on $host:$port; stop it or set CUSTARD_TEST_NATS_URL" >&2
    exit 1
  fi
  return "$status"
}

missing() {
  echo "ensure-nats: NATS does not answer on $host:$port; $*" >&2
  echo "  Install Debian's nats-server package (scripts/ensure-nats.sh does it when allowed)," >&2
  echo "  or start one yourself: nats-server -a 127.0.0.1 -p 4222" >&2
  exit 1
}

binary() {
  command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }
}

start_server() {
  local bin pid
  bin=$(binary) || return 1
  mkdir -p "$run_dir"
  echo "ensure-nats: starting $bin on 127.0.0.1:4222 (log: $log)"
  # setsid + nohup: its own session, so it outlives this script and its terminal.
  # Core NATS is all the replicas use (no JetStream).
  setsid nohup "$bin" -a 127.0.0.1 -p 4222 >>"$log" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 50); do
    if answers; then
      echo "ensure-nats: nats-server started (pid $pid)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "ensure-nats: nats-server did not answer within 10 s; the end of $log:" >&2
    kill "$pid" 2>/dev/null || true
  else
    echo "ensure-nats: nats-server exited at start; the end of $log:" >&2
  fi
  tail -n 20 "$log" >&2 || true
  exit 1
}

install_nats() {
  if [ "${CUSTARD_NO_INSTALL:-0}" = "1" ]; then
    missing "nats-server is not installed and installing is forbidden by CUSTARD_NO_INSTALL=1"
  fi
  if [ "$(id -u)" != "0" ]; then
    missing "nats-server is not installed and only root installs it"
  fi
  command -v apt-get >/dev/null 2>&1 || missing "nats-server is not installed and apt-get is not available"
  echo "ensure-nats: installing Debian's nats-server package"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends nats-server >/dev/null; then
    # Usually a missing or stale package list; refresh it once and retry.
    echo "ensure-nats: install failed; running apt-get update and retrying"
    apt-get update -qq || missing "apt-get update failed"
    apt-get install -y -qq --no-install-recommends nats-server >/dev/null ||
      missing "apt-get install nats-server failed"
  fi
  binary >/dev/null || missing "nats-server is still not found after installing"
}

if answers; then
  echo "ensure-nats: NATS answers on $host:$port"
  exit 0
fi
if [ "$port" != 4222 ] || { [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ]; }; then
  echo "ensure-nats: NATS at CUSTARD_TEST_NATS_URL ($host:$port) does not answer; start it and rerun" >&2
  exit 1
fi
if ! binary >/dev/null; then
  install_nats
  # The package's service may have started it (not where systemd is absent).
  sleep 1
  if answers; then
    echo "ensure-nats: NATS answers on $host:$port"
    exit 0
  fi
fi
start_server
echo "ensure-nats: NATS answers on $host:$port"
