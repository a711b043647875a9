#!/bin/sh
# `rag --version`, rag_version_string(), rag_version_number(), the project version in
# CMakeLists.txt and CHANGELOG.md agree.
#   check_version.sh SOURCE_DIR RAG_BINARY C_COMPILER BUILD_DIR [EXTRA_CFLAGS]
# (EXTRA_CFLAGS: the sanitizer flags of a sanitized librag, which a program linking it needs.)
set -eu
src=$1 rag=$2 cc=$3 build=$4 extra=${5:-}
project=$(sed -n 's/^project(ragcore VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
out=$("$rag" --version)
echo "rag --version: $out"
expected="rag $project (librag $project)"
[ "$out" = "$expected" ] || { echo "FAIL: expected '$expected'"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/v.c" <<'C'
#include <stdio.h>
#include <ragcore/ragcore.h>
int main(void)
{
    printf("%d %s %d %s\n", rag_version_number(), rag_version_string(), RAG_VERSION_NUMBER,
           RAG_VERSION_STRING);
    return 0;
}
C
# shellcheck disable=SC2086  # $extra holds several flags
"$cc" -std=c11 $extra -I"$src/include" "$tmp/v.c" -o "$tmp/v" -L"$build" -lrag -Wl,-rpath,"$build"
set -- $("$tmp/v")
echo "library: number $1 string $2; header: number $3 string $4"
major=${project%%.*} rest=${project#*.} minor=${rest%%.*} patch=${rest#*.}
num=$((major * 10000 + minor * 100 + patch))
[ "$1" = "$num" ] && [ "$3" = "$num" ] || { echo "FAIL: version number is not $num"; exit 1; }
[ "$2" = "$project" ] && [ "$4" = "$project" ] || { echo "FAIL: version string is not $project"; exit 1; }
grep -q '^## \[Unreleased\]\|^## \['"$project"'\]' "$src/CHANGELOG.md" \
  || { echo "FAIL: CHANGELOG.md has no section for $project or [Unreleased]"; exit 1; }
echo "OK: $project everywhere"
