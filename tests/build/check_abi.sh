#!/bin/sh
# ABI check against the previous release: build librag.so of the newest release tag (v*) that
# is an ancestor of HEAD, and compare it with this build's librag.so using abidiff
# (abigail-tools), restricted to the public headers.  An incompatible change (a removed or
# changed function, a changed struct layout) fails within the same MAJOR.MINOR; a new minor
# version may add, never remove.  Exit 77 (skipped) while no release tag exists yet, outside
# a git checkout, or without abidiff.
#   check_abi.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -eu
src=$1 build=$2 work=$3
say() { echo "check_abi: $*"; }
command -v abidiff >/dev/null 2>&1 || { say "abidiff not installed (abigail-tools): skipped"; exit 77; }
command -v git >/dev/null 2>&1 && git -C "$src" rev-parse --git-dir >/dev/null 2>&1 \
  || { say "not a git checkout: skipped"; exit 77; }
tag=$(git -C "$src" describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null || true)
[ -n "$tag" ] || { say "no release tag (v*) yet: nothing to compare with, skipped"; exit 77; }
new="$build/librag.so"
[ -f "$new" ] || { say "no $new: build the library first"; exit 2; }

rm -rf "$work"
mkdir -p "$work"
git -C "$src" worktree add --detach "$work/old-src" "$tag" >/dev/null 2>&1 \
  || git clone -q --branch "$tag" "$src" "$work/old-src"
cleanup() { git -C "$src" worktree remove --force "$work/old-src" >/dev/null 2>&1 || true; }
trap cleanup EXIT
say "building $tag"
cmake -S "$work/old-src" -B "$work/old-build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRAG_BUILD_TESTS=OFF -DRAG_BUILD_BENCH=OFF -DRAG_WITH_CUDA=off >"$work/old-cmake.log" 2>&1 \
  || { say "configure of $tag failed (see $work/old-cmake.log)"; exit 2; }
cmake --build "$work/old-build" --target rag -j2 >"$work/old-build.log" 2>&1 \
  || { say "build of $tag failed (see $work/old-build.log)"; exit 2; }

old="$work/old-build/librag.so"
set +e
abidiff --headers-dir1 "$work/old-src/include/ragcore" --headers-dir2 "$src/include/ragcore" \
  --drop-private-types --no-added-syms "$old" "$new" >"$work/abidiff.txt" 2>&1
status=$?
set -e
cat "$work/abidiff.txt"
# abidiff's status is a bit field: 4 = ABI change, 8 = incompatible ABI change.
if [ $((status & 8)) -ne 0 ]; then
  say "FAIL: incompatible ABI change since $tag"
  exit 1
fi
if [ $((status & 3)) -ne 0 ]; then
  say "FAIL: abidiff could not compare (status $status)"
  exit 2
fi
old_ver=$(echo "$tag" | sed 's/^v//')
new_ver=$(sed -n 's/^project(ragcore VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
if [ $((status & 4)) -ne 0 ] && [ "${old_ver%.*}" = "${new_ver%.*}" ]; then
  say "FAIL: the ABI changed since $tag but the version stays $new_ver (bump MINOR)"
  exit 1
fi
say "OK: librag.so is ABI compatible with $tag"
