#!/usr/bin/env bash
# Bounded libFuzzer run of the ingest entry points (issue 4), as CI runs it (scripts/test.sh,
# stage "fuzz"):
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 20)
#
# Configures $FUZZ_BUILD_DIR (default build-fuzz) with clang, -DRAG_FUZZ=ON (the library built
# with -fsanitize=fuzzer-no-link,address,undefined), builds fuzz_html, fuzz_xml, fuzz_markdown
# and fuzz_utf8, and runs each for SECONDS_PER_TARGET seconds, one after the other, on a copy
# of its seed corpus (tests/fuzz/corpus/<target>/ plus tests/fuzz/regressions/<target>/) in a
# temporary directory: the source tree is never written.  Prints one line per target:
#   fuzz <target>: N runs, cov C, ok
#   fuzz <target>: N runs, cov C, CRASH <artifact>
# and exits non-zero when any target crashed, leaked, timed out (10 s per input) or ran out of
# memory (2 GB), or when the build failed.  Artifacts (the failing inputs) are kept under
# $FUZZ_BUILD_DIR/artifacts/<target>/; the full libFuzzer log of a failing target is printed.
# To replay one: $FUZZ_BUILD_DIR/tests/fuzz/fuzz_<target> <artifact>; to keep it as a
# regression test, minimise it (-minimize_crash=1) and copy it to tests/fuzz/regressions/<target>/.
#
# Environment: FUZZ_BUILD_DIR, JOBS (build parallelism, default nproc), FUZZ_TARGETS (default
# "html xml markdown utf8"), FUZZ_KEEP_CORPUS=DIR (copy the grown corpora there).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

SECONDS_PER_TARGET=${1:-20}
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TARGETS=${FUZZ_TARGETS:-html xml markdown utf8}

if ! command -v clang >/dev/null 2>&1 || ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang/clang++ not found (scripts/install-deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ragcore-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fuzz: configure $BUILD (clang, RAG_FUZZ=ON)"
if ! CC=clang CXX=clang++ cmake -S . -B "$BUILD" -DRAG_FUZZ=ON -DRAG_BUILD_BENCH=OFF \
     -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" 2>&1; then
  cat "$work/configure.log"
  echo "fuzz: FAILED at configure"
  exit 1
fi
# A build directory first configured with gcc keeps gcc (CMake caches the compiler): refuse it
# rather than silently building no fuzzers.
if ! grep -q '^CMAKE_C_COMPILER:.*clang' "$BUILD/CMakeCache.txt"; then
  echo "fuzz: $BUILD was configured with another compiler; remove it or set FUZZ_BUILD_DIR" >&2
  exit 1
fi
bins=()
for t in $TARGETS; do bins+=("fuzz_$t"); done
echo "fuzz: build ${bins[*]} (-j$JOBS)"
if ! cmake --build "$BUILD" --target "${bins[@]}" -j"$JOBS"; then
  echo "fuzz: FAILED at build"
  exit 1
fi

failed=0
for t in $TARGETS; do
  bin=$BUILD/tests/fuzz/fuzz_$t
  corpus=$work/corpus-$t
  artifacts=$BUILD/artifacts/$t
  log=$work/$t.log
  mkdir -p "$corpus" "$artifacts"
  cp tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
  # regressions go in too: a fix that regresses is found at once, and they are good seeds
  cp tests/fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null
  args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$artifacts/")
  [ -f "tests/fuzz/$t.dict" ] && args+=(-dict="tests/fuzz/$t.dict")
  # leaks are failures (LeakSanitizer runs at exit and after suspicious inputs)
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  [ -n "$runs" ] || runs=$(sed -nE 's/^#([0-9]+)[[:space:]].*/\1/p' "$log" | tail -n 1)
  cov=$(sed -nE 's/.*[[:space:]]cov: ([0-9]+).*/\1/p' "$log" | tail -n 1)
  artifact=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ] && [ -z "$artifact" ]; then
    echo "fuzz $t: ${runs:-0} runs, cov ${cov:-?}, ok"
  else
    failed=1
    echo "---- fuzz $t: libFuzzer log (exit $rc) ----"
    grep -vE '^(#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)|"|	NEW_FUNC)' "$log" | tail -n 80
    echo "fuzz $t: ${runs:-0} runs, cov ${cov:-?}, CRASH ${artifact:-"(no artifact; exit $rc)"}"
  fi
  if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
    mkdir -p "$FUZZ_KEEP_CORPUS/$t" && cp "$corpus"/* "$FUZZ_KEEP_CORPUS/$t"/ 2>/dev/null
  fi
done
exit "$failed"
