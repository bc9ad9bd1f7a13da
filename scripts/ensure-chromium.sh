#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (chromedriver) are on PATH for
# the browser tests (custard-testkit's `browser` module), or stops with a
# message that names what is missing. Quick when both are already there.
#
# Installs Debian's chromium and chromium-driver packages when missing; set
# CUSTARD_NO_INSTALL=1 to forbid installing.
set -euo pipefail

packages=(chromium chromium-driver)

present() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

report() {
  echo "ensure-chromium: $(chromium --version 2>/dev/null | head -n 1)"
  echo "ensure-chromium: $(chromedriver --version 2>/dev/null | head -n 1)"
}

missing() {
  echo "ensure-chromium: chromium and chromedriver are required for the browser tests; $*" >&2
  echo "  Install Debian's ${packages[*]} packages (scripts/ensure-chromium.sh does it when allowed)." >&2
  exit 1
}

if present; then
  report
  exit 0
fi

if [ "${CUSTARD_NO_INSTALL:-0}" = "1" ]; then
  missing "installing is forbidden by CUSTARD_NO_INSTALL=1"
fi
command -v apt-get >/dev/null 2>&1 || missing "apt-get is not available on this machine"

as_root=()
if [ "$(id -u)" != "0" ]; then
  # -n: never wait for a password prompt; fail instead.
  command -v sudo >/dev/null 2>&1 || missing "not running as root and sudo is not available"
  as_root=(sudo -n)
fi

install() {
  ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

echo "ensure-chromium: installing Debian's ${packages[*]} packages"
started=$SECONDS
if ! install; then
  # Usually a missing or stale package list; refresh it once and retry.
  echo "ensure-chromium: install failed; running apt-get update and retrying"
  ${as_root[@]+"${as_root[@]}"} apt-get update -qq || missing "apt-get update failed"
  install || missing "apt-get install ${packages[*]} failed"
fi
echo "ensure-chromium: installed in $((SECONDS - started)) s"

present || missing "they are still not on PATH after installing"
report
