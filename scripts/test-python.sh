#!/usr/bin/env bash
# The Python package's tests: builds `custard` into a virtualenv with maturin,
# runs pytest (against the PostgreSQL of scripts/ensure-postgres.sh) and checks
# the type stubs (mypy --strict on a typed usage file, and stubtest).
#
# Idempotent and quick when already set up: the virtualenv in
# target/python-venv is kept, and pip installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "test-python: $python is missing (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || {
    echo "test-python: could not create a virtualenv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
export VIRTUAL_ENV="$PWD/$venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
requirements=bindings/python/requirements-test.txt
# pip answers from what is installed when every pin is satisfied (no download).
python -m pip install --quiet --disable-pip-version-check -r "$requirements"

# A debug build: the tests are about behaviour, and it links in seconds.
maturin develop --quiet --locked --manifest-path bindings/python/Cargo.toml

python -m pytest bindings/python/tests -q -p no:cacheprovider
python -m mypy --strict --no-incremental bindings/python/tests/typed_usage.py
python -m mypy.stubtest custard._custard
python examples/python/ask_sqlite.py >/dev/null
echo "test-python: pytest, mypy --strict, stubtest and the example passed"
