#!/bin/sh
# check_symbols.sh LIB EXPECTED_SONAME INCLUDE_DIR
#
# librag.so must export exactly the public API: every defined dynamic symbol is rag_* (nothing
# from FAISS, the C++ runtime or internal helpers), every exported name is a RAG_API function
# declared under INCLUDE_DIR, every declared RAG_API function is exported, and the SONAME
# carries a version (librag.so.N[...]) equal to what CMake says it should be.
set -eu
lib=$1
expected_soname=$2
include_dir=$3
fail=0
tmp=${TMPDIR:-/tmp}/rag-symbols.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT INT TERM

[ -f "$lib" ] || { echo "FAIL: $lib does not exist"; exit 1; }

# --- SONAME ---------------------------------------------------------------------------------
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
echo "SONAME: ${soname:-<none>} (expected $expected_soname)"
case "$soname" in
  librag.so.[0-9]*) ;;
  *) echo "FAIL: SONAME '${soname}' is not versioned (want librag.so.<N>...)"; fail=1 ;;
esac
if [ "$soname" != "$expected_soname" ]; then
  echo "FAIL: SONAME '$soname' differs from the target's '$expected_soname'"
  fail=1
fi

# --- exported symbols -----------------------------------------------------------------------
nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 } NF == 2 { print $2 }' \
  | sed 's/@.*//' | sort -u >"$tmp/exported"
count=$(wc -l <"$tmp/exported")
echo "exported defined dynamic symbols: $count"
if [ "$count" -eq 0 ]; then
  echo "FAIL: no defined dynamic symbols at all"
  fail=1
fi
if grep -v '^rag_' "$tmp/exported" >"$tmp/foreign"; then
  echo "FAIL: symbols outside the rag_ namespace are exported:"
  sed 's/^/  /' "$tmp/foreign" | head -50
  fail=1
fi
if grep -i -E 'faiss|^_Z' "$tmp/exported" >"$tmp/cxx"; then
  echo "FAIL: FAISS or C++ symbols are exported:"
  sed 's/^/  /' "$tmp/cxx" | head -50
  fail=1
fi

# --- exported set == declared RAG_API set ---------------------------------------------------
# (RAG_EMBED_CUDA_API: embed_cuda.h needs nothing but the C library, so it has its own macro)
find "$include_dir" -name '*.h' -exec cat {} + \
  | grep -E 'RAG_(EMBED_CUDA_)?API[[:space:]]' | grep -o 'rag_[A-Za-z0-9_]*[[:space:]]*(' \
  | sed 's/[[:space:]]*($//' | sort -u >"$tmp/declared"
echo "RAG_API functions declared in $include_dir: $(wc -l <"$tmp/declared")"
if comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/missing" && [ -s "$tmp/missing" ]; then
  echo "FAIL: declared RAG_API functions not exported (unimplemented or hidden):"
  sed 's/^/  /' "$tmp/missing"
  fail=1
fi
if grep '^rag_' "$tmp/exported" | comm -13 "$tmp/declared" - >"$tmp/extra" && [ -s "$tmp/extra" ]; then
  echo "FAIL: rag_* symbols exported but not declared RAG_API in a public header (internal leak):"
  sed 's/^/  /' "$tmp/extra"
  fail=1
fi

if [ "$fail" -ne 0 ]; then
  exit 1
fi
echo "symbol export OK"
