#!/usr/bin/env bash
# Builds every cargo-fuzz target once, then runs each for a bounded time and fails on a crash,
# a leak, a timeout or an out-of-memory. Usage: fuzz/run-all.sh [seconds per target]
# (default $FUZZ_SECS, else 30). Targets run $FUZZ_JOBS at a time (default: the number of
# cores), each starting from its committed seeds in fuzz/corpus/<target>/; what a run finds goes
# to a scratch directory, so the committed corpus only changes by hand (`cargo fuzz cmin`).
# Prints each target's libFuzzer "#N DONE" line so a log shows how much really ran.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-${FUZZ_SECS:-30}}"
case "$secs" in
  '' | *[!0-9]* | 0) echo "seconds per target must be a positive integer, not '$secs'" >&2; exit 2 ;;
esac
jobs="${FUZZ_JOBS:-$(nproc)}"
# cargo fuzz passes nightly-only flags (-Zsanitizer); this lets a stable toolchain take them.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
echo "== fuzz: build"
cargo fuzz build
built=$(date +%s)
echo "built in $((built - start)) s"

mapfile -t targets < <(cargo fuzz list)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

run_one() {
  local target="$1" corpus=()
  mkdir -p "$scratch/$target"
  [ -d "corpus/$target" ] && corpus=("corpus/$target")
  # -timeout: one input taking this long is a hang, and a bug; -rss_limit_mb: a bound per
  # process that leaves room for $jobs of them.
  if cargo fuzz run "$target" "$scratch/$target" "${corpus[@]}" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=1536 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1 </dev/null; then
    echo 0 >"$scratch/$target.rc"
  else
    echo $? >"$scratch/$target.rc"
  fi
}

echo "== fuzz: ${#targets[@]} targets, $secs s each, $jobs at a time"
running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$target" &
  running=$((running + 1))
done
wait || true

failed=()
for target in "${targets[@]}"; do
  rc="$(cat "$scratch/$target.rc" 2>/dev/null || echo missing)"
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$scratch/$target.log" | tail -n 1 || true)"
  if [ "$rc" = 0 ] && [ -n "$done_line" ]; then
    echo "$target: $done_line"
  else
    failed+=("$target")
    echo "$target: FAILED (exit $rc); the end of its log:"
    tail -n 40 "$scratch/$target.log" | sed "s/^/  $target| /"
  fi
done
echo "fuzzing took $(($(date +%s) - built)) s after the build, $(($(date +%s) - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]} (crashing inputs: fuzz/artifacts/<target>/)" >&2
  exit 1
fi
