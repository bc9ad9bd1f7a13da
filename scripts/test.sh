#!/usr/bin/env bash
# The one test command: formatting, lints, docs and every test, against a real
# PostgreSQL, NATS and nginx (started or installed by scripts/ensure-*.sh when
# needed), with the Python environment whose MCP SDK the MCP tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

step "PostgreSQL"
scripts/ensure-postgres.sh

step "NATS"
scripts/ensure-nats.sh

step "nginx"
scripts/ensure-nginx.sh

step "Chromium"
scripts/ensure-chromium.sh

step "Python test environment (the MCP tests' client)"
scripts/ensure-python.sh


step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-features --locked 2>&1 | tee "$log"

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"

step "Python package (maturin, pytest, mypy --strict, stubtest)"
scripts/test-python.sh
