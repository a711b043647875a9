#!/usr/bin/env bash
# The CUDA provider's device kit (bench/README.md, "Device kit: scripts/gpu-check.sh").
#
#   scripts/gpu-check.sh prepare   on a machine with ragcore's dependencies and nvcc: builds
#                                  build-gpukit/ (the cpu provider as a static library, copies
#                                  of libutf8proc.a and libxxhash.a, the SciFact chunk file),
#                                  and builds the kit once here to prove that it links.
#   scripts/gpu-check.sh run       on the GPU machine, in the repository root, with
#                                  build-gpukit/ carried over: configures bench/cuda, builds it
#                                  with nvcc, runs the parity check and the benchmark.  JSON
#                                  lines and logs go to $OUT (if set) or build-gpucheck/out.
#
# Exit status of `run`: 0 parity within 1e-5 and the benchmark ran; 1 a parity check failed;
# 2 a build or setup error; 77 no CUDA device (the kit built, nothing to measure).
#
# Environment: RAG_GPUKIT_DIR (default build-gpukit), RAG_GPUCHECK_BUILD (default
# build-gpucheck), RAG_SHARED_DATA (prepare: where scifact/docs.jsonl is; default ../shared/data),
# CUDA_ARCHS (default "80;90"), JOBS (build parallelism, default nproc), CC.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
KIT=${RAG_GPUKIT_DIR:-build-gpukit}
BUILD=${RAG_GPUCHECK_BUILD:-build-gpucheck}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
CUDA_ARCHS=${CUDA_ARCHS:-80;90}
case $KIT in /*) ;; *) KIT=$ROOT/$KIT ;; esac
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac

die() { echo "gpu-check: $*" >&2; exit 2; }
say() { echo "gpu-check: $*"; }

find_nvcc() {
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  command -v nvcc >/dev/null 2>&1 || die "nvcc not found (PATH, /usr/local/cuda/bin)"
}

build_kit() { # configure and build bench/cuda against $KIT
  find_nvcc
  say "building bench/cuda in $BUILD ($(nvcc --version | tail -1), architectures $CUDA_ARCHS)"
  mkdir -p "$BUILD" || die "cannot create $BUILD"
  cmake -S "$ROOT/bench/cuda" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DRAG_GPUKIT_DIR="$KIT" "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS" >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log" >&2; die "cmake configure failed (log: $BUILD/configure.log)"; }
  cmake --build "$BUILD" -j "$JOBS" >"$BUILD/build.log" 2>&1 ||
    { tail -50 "$BUILD/build.log" >&2; die "build failed (log: $BUILD/build.log)"; }
}

static_lib() { # static_lib NAME: path of libNAME.a on this machine
  local d
  for d in "$(pkg-config --variable=libdir "lib$1" 2>/dev/null)" \
           "$(pkg-config --variable=libdir "$1" 2>/dev/null)" \
           /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
    if [ -n "$d" ] && [ -f "$d/lib$1.a" ]; then echo "$d/lib$1.a"; return 0; fi
  done
  return 1
}

prepare() {
  local cc=${CC:-cc} obj=$KIT/obj
  rm -rf "$KIT"
  mkdir -p "$obj" || die "cannot create $KIT"
  # The cpu provider and the src/common units it calls (error.c: rag_error_set; text.c:
  # casefold, tokenizer, stopwords), compiled as the full build compiles them, -fPIC.
  local flags=(-std=c11 -O2 -g -fPIC -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter
               -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -DNDEBUG -Iinclude -Isrc/common)
  "$cc" "${flags[@]}" -DRAG_BACKEND_EMBED_CPU=1 -Ibackends/embed-cpu \
        -c backends/embed-cpu/embed_cpu.c -o "$obj/embed_cpu.o" || die "compile embed_cpu.c"
  local u
  for u in text error; do
    "$cc" "${flags[@]}" -c "src/common/$u.c" -o "$obj/$u.o" || die "compile src/common/$u.c"
  done
  # error.c also holds rag_mdb_error(), which the kit never calls; its mdb_strerror()
  # reference is all that would pull in LMDB.
  cat >"$obj/kit_stubs.c" <<'EOF'
/* gpu-check kit: LMDB is not part of the kit; rag_mdb_error() is never called by it. */
char *mdb_strerror(int err);
char *mdb_strerror(int err) { (void)err; return (char *)"LMDB is not part of the gpu-check kit"; }
EOF
  "$cc" "${flags[@]}" -c "$obj/kit_stubs.c" -o "$obj/kit_stubs.o" || die "compile kit stubs"
  ar rcs "$KIT/libragcore_cpukit.a" "$obj"/*.o || die "ar"
  local lib
  for lib in utf8proc xxhash; do
    local a
    a=$(static_lib "$lib") || die "lib$lib.a not found (Debian: lib$lib-dev)"
    cp "$a" "$KIT/lib$lib.a" || die "copy $a"
  done
  # Anything the kit needs beyond libc/libm and the two copied libraries?
  local undef
  undef=$(nm -u "$KIT/libragcore_cpukit.a" 2>/dev/null | awk 'NF==2{print $2}' | sort -u |
          grep -v -E '^(utf8proc_|XXH|_GLOBAL_OFFSET_TABLE_|__tls_get_addr|__stack_chk_fail)' |
          grep -v -x -E 'rag_.*|calloc|free|malloc|realloc|memcmp|memcpy|memmove|memset|strlen|snprintf|vsnprintf|log|sqrt|mdb_strerror' || true)
  [ -z "$undef" ] || die "the kit needs symbols it does not carry: $(echo $undef)"
  rm -rf "$obj"

  build_kit
  local data=${RAG_SHARED_DATA:-$ROOT/../shared/data}
  "$BUILD/bench_providers" --docs "$data/scifact/docs.jsonl" --dump-chunks "$KIT/chunks.txt" ||
    die "cannot extract the chunk file from $data/scifact/docs.jsonl"
  {
    echo "ragcore gpu-check kit"
    echo "made: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $("$cc" --version | head -1)"
    echo "source: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    (cd "$KIT" && sha256sum libragcore_cpukit.a libutf8proc.a libxxhash.a chunks.txt)
  } >"$KIT/MANIFEST"
  say "kit ready: $KIT ($(du -sh "$KIT" | cut -f1)); carry it to the GPU machine and run: scripts/gpu-check.sh run"
}

run() {
  local f
  for f in libragcore_cpukit.a libutf8proc.a libxxhash.a chunks.txt; do
    [ -f "$KIT/$f" ] || die "$KIT/$f missing: run scripts/gpu-check.sh prepare (on a machine with the dependencies) and carry $KIT"
  done
  build_kit
  local out=${OUT:-$BUILD/out}
  mkdir -p "$out" || die "cannot create $out"
  local bin=$BUILD/bench_providers
  local n
  n=$("$bin" --device-count 2>/dev/null) || n=0
  if [ "${n:-0}" -le 0 ] 2>/dev/null; then
    echo "gpu-check: no CUDA device (rag_embed_cuda_device_count() = 0): the kit built, parity and benchmark not run"
    echo '{"figure":"cuda","skipped":"no CUDA device"}' >"$out/gpu-check.jsonl"
    exit 77
  fi
  { nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv; } >"$out/nvidia-smi.txt" 2>&1 || true
  say "$n CUDA device(s): $(head -1 "$out/nvidia-smi.txt" 2>/dev/null)"
  say "parity check"
  "$bin" --parity --chunks "$KIT/chunks.txt" --json "$out/parity.jsonl" 2>&1 | tee "$out/parity.txt"
  local prc=${PIPESTATUS[0]}
  say "benchmark"
  "$bin" --chunks "$KIT/chunks.txt" --json "$out/bench.jsonl" 2>&1 | tee "$out/bench.txt"
  local brc=${PIPESTATUS[0]}
  cat "$out/parity.jsonl" "$out/bench.jsonl" >"$out/gpu-check.jsonl" 2>/dev/null
  say "parity exit $prc, benchmark exit $brc; results in $out"
  if [ "$prc" -ne 0 ]; then exit 1; fi
  if [ "$brc" -ne 0 ]; then exit 2; fi
  exit 0
}

case ${1:-} in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
