#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (built in BUILD by `make fuzz-build`) for SECONDS each,
# JOBS at a time, and prints one line per target: executions, executions per second, coverage
# (libFuzzer's last "cov:"), corpus size, and whether it found anything.
#
#   scripts/fuzz.sh BUILD SECONDS JOBS OUT TARGET...
#
# Each target reads the committed seeds (tests/fuzz/corpus/<target>, never written) and grows a
# corpus of its own under OUT/<target>/corpus (kept between runs, so a long run continues where
# the last one stopped; delete OUT to start over). Its log is OUT/<target>/log.txt and a finding
# is saved as OUT/<target>/crash-*, timeout-*, oom-* or leak-*. FUZZ_FLAGS adds libFuzzer flags
# (e.g. FUZZ_FLAGS="-fork=2 -ignore_crashes=1" to keep going past findings). Exit status 1 when
# any target found something or did not run.
set -uo pipefail
cd "$(dirname "$0")/.."

build=$1 seconds=$2 jobs=$3 out=$4
shift 4
targets=("$@")
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets" >&2; exit 2; }

run_one() {
  local t=$1 dir="$out/$1"
  mkdir -p "$dir/corpus"
  rm -f "$dir/log.txt"
  local dict=() seeds=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
  # UBSan prints no stack trace unless asked (its findings abort: -fno-sanitize-recover).
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$build/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$dir/" "${dict[@]}" ${FUZZ_FLAGS:-} "$dir/corpus" "${seeds[@]}" \
      > "$dir/log.txt" 2>&1
  echo $? > "$dir/status"
}

summary() {
  local t=$1 dir="$out/$1" log="$out/$1/log.txt"
  local rc execs rate cov corpus found
  rc=$(cat "$dir/status" 2>/dev/null || echo "?")
  # -a: a log holds the raw bytes of what a finding printed. Fork mode (-fork=N) prints no
  # final stats: then the last status line's count, and no rate.
  execs=$(grep -a -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  [ -n "$execs" ] || execs=$(grep -a -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  rate=$(grep -a -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  cov=$(grep -a -o ' cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  corpus=$(find "$dir/corpus" -type f | wc -l)
  found=$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
          -o -name 'leak-*' -o -name 'slow-unit-*' \) -newer "$dir/log.txt.start" | tr '\n' ' ')
  local verdict=ok
  if [ "$rc" != 0 ] || [ -n "$found" ]; then verdict="FOUND ${found:-(exit $rc, see $log)}"; fi
  printf '%-28s %12s %9s %7s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" \
    "$verdict"
  [ "$verdict" = ok ]
}

for t in "${targets[@]}"; do
  [ -x "$build/$t" ] || { echo "fuzz: $build/$t not built (make fuzz-build)" >&2; exit 2; }
  mkdir -p "$out/$t"
  touch "$out/$t/log.txt.start"
done

echo "fuzz: ${#targets[@]} targets, ${seconds}s each, $jobs at a time; logs in $out/<target>/"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

printf '%-28s %12s %9s %7s %8s  %s\n' target executions exec/s cov corpus result
status=0
for t in "${targets[@]}"; do summary "$t" || status=1; done
exit $status
