#!/usr/bin/env bash
# The Python package's tests: builds `custard` into a virtualenv with maturin,
# runs pytest (against the PostgreSQL of scripts/ensure-postgres.sh) and checks
# the type stubs (mypy --strict on a typed usage file, and stubtest).
#
# Idempotent and quick when already set up: the virtualenv in
# target/python-venv is kept, and pip installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-python.sh
venv=target/python-venv
export VIRTUAL_ENV="$PWD/$venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

# A debug build: the tests are about behaviour, and it links in seconds.
maturin develop --quiet --locked --manifest-path bindings/python/Cargo.toml

python -m pytest bindings/python/tests -q -p no:cacheprovider
python -m mypy --strict --no-incremental bindings/python/tests/typed_usage.py
python -m mypy.stubtest custard._custard
python examples/python/ask_sqlite.py >/dev/null
echo "test-python: pytest, mypy --strict, stubtest and the example passed"
