#!/usr/bin/env bash
# The whole test suite, as CI runs it (`make test`, .ci/run):
#   1. install missing dependencies (scripts/install-deps.sh)
#   2. build/        RelWithDebInfo, benchmarks included; ctest
#   3. build-asan/   -DRAG_SANITIZE=ON (ASan+UBSan, leaks included), no benchmarks; ctest
#   4. fuzz          scripts/fuzz.sh: the libFuzzer targets of tests/fuzz (clang, build-fuzz/),
#                    each run RAG_FUZZ_SECONDS (default 20) under ASan+UBSan; counts as one test
# Every stage runs even when an earlier one failed (so one run shows everything); the exit
# status is non-zero when any stage failed, and the last line is a one-line summary.
#
# Environment: JOBS (build parallelism, default nproc), CTEST_JOBS (default 2),
# BUILD_DIR / ASAN_BUILD_DIR (default build, build-asan), RAG_TEST_ASAN=0 skips stage 3,
# RAG_TEST_FUZZ=0 skips stage 4 (local use only; CI runs everything), RAG_FUZZ_SECONDS (per
# fuzz target, default 20), FUZZ_BUILD_DIR (default build-fuzz).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
CTEST_JOBS=${CTEST_JOBS:-2}
RAG_TEST_ASAN=${RAG_TEST_ASAN:-1}
RAG_TEST_FUZZ=${RAG_TEST_FUZZ:-1}
RAG_FUZZ_SECONDS=${RAG_FUZZ_SECONDS:-20}
BUILD_DIR=${BUILD_DIR:-build}
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
start=$(date +%s)
results=()
failed=0
passed_total=0
failed_total=0

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/ragcore-test.XXXXXX")
trap 'rm -rf "$log_dir"' EXIT

banner() { printf '\n==== %s\n' "$*"; }

record() { # record NAME STATUS TEXT
  results+=("$1: $3")
  if [ "$2" -ne 0 ]; then failed=1; fi
}

# ctest_summary LOG: "passed/total" from CTest's "NN% tests passed, F tests failed out of T".
ctest_summary() {
  local line total failed_n
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    echo "no CTest summary"
    return
  fi
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  failed_n=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")
  echo "$((total - failed_n))/$total tests passed"
  echo "$((total - failed_n)) $failed_n" >"$1.counts"
}

# stage NAME DIR CMAKE_ARGS...: configure, build, ctest one tree.
stage() {
  local name=$1 dir=$2
  shift 2
  local t0 rc log
  t0=$(date +%s)
  log=$log_dir/$name.ctest.log

  banner "$name: configure ($dir)"
  if ! cmake -S . -B "$dir" "$@"; then
    record "$name" 1 "FAILED at configure"
    return
  fi
  banner "$name: build (-j$JOBS)"
  if ! cmake --build "$dir" -j"$JOBS"; then
    record "$name" 1 "FAILED at build"
    return
  fi
  banner "$name: ctest (-j$CTEST_JOBS)"
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$CTEST_JOBS" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    record "$name" 1 "FAILED ($(ctest_summary "$log"), $(($(date +%s) - t0)) s)"
  else
    record "$name" 0 "ok ($(ctest_summary "$log"), $(($(date +%s) - t0)) s)"
  fi
}

# fuzz_stage: scripts/fuzz.sh (configure, build, a bounded run of every target); one test.
fuzz_stage() {
  local t0 log
  t0=$(date +%s)
  log=$log_dir/fuzz.log
  banner "fuzz: scripts/fuzz.sh $RAG_FUZZ_SECONDS (per target)"
  JOBS=$JOBS scripts/fuzz.sh "$RAG_FUZZ_SECONDS" 2>&1 | tee "$log"
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "0 1" >"$log_dir/fuzz.counts"
    # the failing targets' lines name their artifacts
    record fuzz 1 "FAILED ($(grep -E '^fuzz [a-z0-9]+: .*CRASH|^fuzz: FAILED' "$log" | paste -sd '|' -), $(($(date +%s) - t0)) s)"
  else
    echo "1 0" >"$log_dir/fuzz.counts"
    record fuzz 0 "ok ($(grep -cE '^fuzz [a-z0-9]+: .*, ok$' "$log") targets, ${RAG_FUZZ_SECONDS} s each, $(($(date +%s) - t0)) s)"
  fi
}

banner "dependencies"
if scripts/install-deps.sh; then
  record deps 0 "ok"
else
  record deps 1 "FAILED"
fi

if [ "$failed" -eq 0 ]; then
  stage build "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  if [ "$RAG_TEST_ASAN" != "0" ]; then
    stage build-asan "$ASAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAG_SANITIZE=ON -DRAG_BUILD_BENCH=OFF
  else
    results+=("build-asan: skipped (RAG_TEST_ASAN=0)")
  fi
  if [ "$RAG_TEST_FUZZ" != "0" ]; then
    fuzz_stage
  else
    results+=("fuzz: skipped (RAG_TEST_FUZZ=0)")
  fi
fi

banner "summary"
for r in "${results[@]}"; do
  echo "  $r"
done
elapsed=$(($(date +%s) - start))
summary=$(IFS=';'; echo "${results[*]}")
summary=${summary//;/; }
for f in "$log_dir"/*.counts; do
  [ -f "$f" ] || continue
  read -r p f_n <"$f"
  passed_total=$((passed_total + p))
  failed_total=$((failed_total + f_n))
done
if [ "$failed" -ne 0 ]; then
  echo "make test: FAILED in ${elapsed} s -- $summary"
  echo "tests: ${passed_total} passed, ${failed_total} failed"
  exit 1
fi
echo "make test: PASSED in ${elapsed} s -- $summary"
echo "tests: ${passed_total} passed, ${failed_total} failed"
