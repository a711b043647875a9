#!/bin/sh
# getting_started_test.sh BUILD_DIR SOURCE_DIR WORK_DIR CC [EXTRA_FLAGS]
#
# Keeps docs/getting-started.md true: extracts the fenced blocks that follow the markers
# `<!-- getting-started: hello.c -->` and `<!-- getting-started: CMakeLists.txt -->`, installs
# the build tree into WORK_DIR/prefix (`cmake --install --prefix`, as install_test.sh does),
# builds hello.c with the page's pkg-config command and with its CMake project
# (find_package(ragcore) + ragcore::rag), runs both (the second run stores version 2), and runs
# the page's first CLI steps (put, search) with the installed `rag`.  EXTRA_FLAGS (sanitizer
# flags in an ASan tree) go to compile and link.  WORK_DIR is kept on failure, removed on success.
set -eu

build=$1
src=$2
work=$3
cc=$4
extra=${5:-}
page=$src/docs/getting-started.md

step() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ -f "$build/CMakeCache.txt" ] || die "$build is not a configured build tree"
[ -f "$page" ] || die "no $page"

rm -rf "$work"
mkdir -p "$work/app"

# extract NAME OUT: the first fenced block after the marker line for NAME.
extract() {
  awk -v name="$1" '
    $0 == "<!-- getting-started: " name " -->" { armed = 1; next }
    armed && !inside && /^```/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }
  ' "$page" >"$2"
  [ -s "$2" ] || die "docs/getting-started.md has no block marked '$1'"
}

step "extract the program and the CMake project from docs/getting-started.md"
extract hello.c "$work/app/hello.c"
extract CMakeLists.txt "$work/app/CMakeLists.txt"
wc -l "$work/app/hello.c" "$work/app/CMakeLists.txt"

step "cmake --install $build --prefix $work/prefix"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log"; die "cmake --install failed"; }
pc=$(find "$prefix" -path '*/pkgconfig/ragcore.pc' | head -n 1)
[ -n "$pc" ] || die "ragcore.pc was not installed"
libdir=$(dirname "$(dirname "$pc")")

step "build with pkg-config (the page's command, plus -pedantic -Werror)"
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH
# shellcheck disable=SC2046,SC2086  # flags are word lists by design
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror $extra $(pkg-config --cflags ragcore) \
  "$work/app/hello.c" -o "$work/hello-pc" $(pkg-config --libs ragcore) \
  || die "hello.c does not build with the pkg-config command"
out=$(LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$work/hello-pc" "$work/root") \
  || die "hello (pkg-config) failed"
printf '%s\n' "$out"
printf '%s\n' "$out" | grep -q '^ragcore .*: lmdb-note is at version 1$' || die "unexpected first output"
printf '%s\n' "$out" | grep -q '^1\. lmdb-note (chunk 0, ' || die "the document was not the top hit"

step "build with CMake find_package(ragcore)"
cmake -S "$work/app" -B "$work/app-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="-Wall -Wextra -pedantic -Werror $extra" \
  -DCMAKE_EXE_LINKER_FLAGS="$extra" >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; die "configuring the page's CMake project failed"; }
cmake --build "$work/app-build" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; die "building the page's CMake project failed"; }
# Same root again: the page says the second run stores version 2.
out=$(env -u LD_LIBRARY_PATH "$work/app-build/hello" "$work/root") || die "hello (CMake) failed"
printf '%s\n' "$out"
printf '%s\n' "$out" | grep -q ': lmdb-note is at version 2$' || die "second run did not store version 2"

step "first steps with the installed rag tool"
rag=$prefix/bin/rag
[ -x "$rag" ] || die "the rag tool was not installed"
printf '# Notes\n\nThe staff meeting moved to Thursday afternoon in room 4.\n' >"$work/notes.md"
RAG_ROOT=$work/cli-root
export RAG_ROOT
"$rag" put notes-1 "$work/notes.md" --acl group:staff || die "rag put failed"
"$rag" drain || die "rag drain failed"
"$rag" search "staff meeting" -k 5 | tee "$work/search.txt" || die "rag search failed"
grep -q notes-1 "$work/search.txt" || die "rag search (operator access) did not find notes-1"
"$rag" search "staff meeting" --as user:bob --json >"$work/search-bob.json" || die "rag search --as failed"
if grep -q notes-1 "$work/search-bob.json"; then die "a principal outside the ACL found notes-1"; fi
"$rag" search "staff meeting" --as user:ann,group:staff --json >"$work/search-ann.json" \
  || die "rag search --as failed"
grep -q notes-1 "$work/search-ann.json" || die "group:staff did not find notes-1"
"$rag" status || die "rag status failed"

rm -rf "$work"
printf '\ngetting-started test OK\n'
