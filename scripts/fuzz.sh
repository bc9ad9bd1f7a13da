#!/usr/bin/env bash
# The fuzzing suite's long run: each target (guard, wire, api, canary) for a
# fixed time, each in its own process under a 4 GiB address-space limit, so
# that unbounded memory ends as a crash rather than a swapping machine. Prints
# one summary line per target and exits non-zero on any finding or crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]          (default 60)
#
# CUSTARD_FUZZ_SEED repeats a run; CUSTARD_FUZZ_TARGETS picks targets
# ("guard wire api canary"; "canary-without-guard-mask" runs the canary target
# with the column mask left to the database's privileges). The canary targets
# need PostgreSQL (scripts/ensure-postgres.sh is run for them). Findings are
# written in full to target/fuzz-findings/.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
targets="${CUSTARD_FUZZ_TARGETS:-guard wire api canary}"
seed="${CUSTARD_FUZZ_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' \n')}"
findings="target/fuzz-findings"
memory_kib=$((4 * 1024 * 1024))

case " $targets " in
  *" canary"*) scripts/ensure-postgres.sh || exit 2 ;;
esac

echo "== building custard-fuzz (release) =="
cargo build --release --locked -p custard-fuzz || exit 2
bin="target/release/custard-fuzz"
mkdir -p "$findings"
# A case in flight is only news from the run that left it.
rm -f "$findings"/*-in-flight.txt

status=0
summaries=()
for target in $targets; do
  echo
  echo "== $target: ${seconds} s, seed $seed =="
  log="$findings/$target-seed$seed.log"
  args=("$target")
  [ "$target" = canary-without-guard-mask ] && args=(canary --guard-without-mask)
  # Own process and limit per target: a crash or the limit stops only this one.
  ( ulimit -v "$memory_kib"; exec "$bin" "${args[@]}" --seconds "$seconds" --seed "$seed" \
      --findings-dir "$findings" ) 2>&1 | tee "$log"
  code=${PIPESTATUS[0]}
  line=$(grep '^summary ' "$log" | tail -n 1)
  if [ "$code" -gt 1 ] || [ -z "$line" ]; then
    status=1
    line="summary target=$target CRASHED exit=$code (killed by a signal, the memory limit or the hang watchdog; see $log)"
    in_flight="$findings/$target-in-flight.txt"
    if [ -f "$in_flight" ]; then
      read -r _ s _ b _ c < "$in_flight"
      line="$line; replay the case in flight: $bin ${args[*]} --seed $s --first-batch $b --case $c"
    fi
  elif [ "$code" -ne 0 ]; then
    status=1
  fi
  summaries+=("$line")
done

echo
echo "== fuzz summary (seed $seed, ${seconds} s per target) =="
printf '%s\n' "${summaries[@]}"
if [ "$status" -ne 0 ]; then
  echo "fuzz: FINDINGS (details above and in $findings/)"
else
  echo "fuzz: no findings"
fi
exit "$status"
