#!/usr/bin/env bash
# The Python test environment: a virtualenv in target/python-venv with
# bindings/python/requirements-test.txt installed (maturin, pytest, mypy, and
# the official MCP SDK the MCP tests drive the server and agent with).
#
# Idempotent and quick when already set up: the virtualenv is kept, and pip
# installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "ensure-python: $python is missing (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || {
    echo "ensure-python: could not create a virtualenv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
# pip answers from what is installed when every pin is satisfied (no download).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r bindings/python/requirements-test.txt
