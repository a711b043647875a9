#!/bin/sh
# install_test.sh BUILD_DIR CONSUMER_SRC WORK_DIR CC [EXTRA_FLAGS]
#
# Installs the build tree into WORK_DIR/prefix with `cmake --install --prefix` and checks that
# an outside program can use it both ways a consumer would:
#   1. cc $(pkg-config --cflags --libs ragcore) with PKG_CONFIG_PATH (run with LD_LIBRARY_PATH)
#   2. the same with librag.a and `pkg-config --static` (checks Libs.private/Requires.private)
#   3. CMake find_package(ragcore) + ragcore::rag with CMAKE_PREFIX_PATH (run as built: the
#      imported library's RPATH must find the staged librag)
# then runs the consumers (examples/consumer/consumer.c: open, put, drain, search, version
# check).  EXTRA_FLAGS (sanitizer flags in an ASan tree) go to both compile and link.
# WORK_DIR is kept on failure for inspection and removed on success.
set -eu

build=$1
src=$2
work=$3
cc=$4
extra=${5:-}

step() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# librag_dir BINARY: the directory (resolved) from which the dynamic loader takes librag.so for
# BINARY under the current environment, or nothing.
librag_dir() {
  path=$(ldd "$1" | sed -n 's/^[[:space:]]*librag\.so[^ ]* => \([^ ]*\) .*/\1/p' | head -n 1)
  [ -n "$path" ] && [ -e "$path" ] && (cd "$(dirname "$path")" && pwd -P)
}

[ -f "$build/CMakeCache.txt" ] || die "$build is not a configured build tree"
[ -f "$src/consumer.c" ] || die "no consumer source in $src"

rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log"; die "cmake --install failed"; }

pc=$(find "$prefix" -path '*/pkgconfig/ragcore.pc' | head -n 1)
[ -n "$pc" ] || die "ragcore.pc was not installed"
libdir=$(dirname "$(dirname "$pc")")
config=$(find "$prefix" -path '*/cmake/ragcore/ragcoreConfig.cmake' | head -n 1)
[ -n "$config" ] || die "ragcoreConfig.cmake was not installed"
for f in "$prefix/include/ragcore/ragcore.h" "$prefix/include/ragcore/rag.h" \
         "$prefix/include/ragcore/sys/embed_provider.h" "$libdir/librag.so" \
         "$(dirname "$config")/ragcoreConfigVersion.cmake" "$(dirname "$config")/ragcoreTargets.cmake"; do
  [ -e "$f" ] || die "missing after install: $f"
done
libdir_real=$(cd "$libdir" && pwd -P)
echo "installed: libdir $libdir"
find "$libdir" -maxdepth 1 -name 'librag*' | sort | sed 's/^/  /'

step "pkg-config"
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH
pkg-config --exists --print-errors ragcore || die "pkg-config cannot resolve ragcore"
pc_prefix=$(pkg-config --variable=prefix ragcore)
[ "$pc_prefix" = "$prefix" ] || die "ragcore.pc says prefix=$pc_prefix, installed to $prefix"
cflags=$(pkg-config --cflags ragcore)
libs=$(pkg-config --libs ragcore)
echo "cflags: $cflags"
echo "libs:   $libs"
# librag.so links its dependencies privately: a dynamic consumer needs nothing but -lrag.
case " $libs " in
  *-lfaiss*|*-llmdb*|*-lstdc++*|*-lgomp*) die "pkg-config --libs leaks private dependencies: $libs" ;;
esac

step "consumer via pkg-config"
# shellcheck disable=SC2086  # flags are word lists by design
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror $extra $cflags "$src/consumer.c" \
  -o "$work/consumer-pc" $libs || die "building the consumer with pkg-config flags failed"
[ "$(LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} librag_dir "$work/consumer-pc")" = "$libdir_real" ] \
  || die "consumer-pc does not load librag from $libdir"
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$work/consumer-pc" "$work" \
  || die "consumer built with pkg-config failed"

step "consumer via pkg-config --static (librag.a + Libs.private / Requires.private)"
# The static library is installed too; its dependencies must all be named in ragcore.pc.
static_libs=$(pkg-config --static --libs ragcore) || die "pkg-config --static --libs failed"
static_libs=$(printf '%s\n' "$static_libs" | sed "s|-lrag\\b|$libdir/librag.a|")
echo "static libs: $static_libs"
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror $extra $cflags "$src/consumer.c" \
  -o "$work/consumer-static" $static_libs \
  || die "linking the consumer statically failed: ragcore.pc's Libs.private/Requires.private miss a dependency"
[ -z "$(unset LD_LIBRARY_PATH; librag_dir "$work/consumer-static")" ] \
  || die "consumer-static loads librag.so; it should contain librag.a"
"$work/consumer-static" "$work" || die "consumer linked statically against librag.a failed"

step "consumer via CMake find_package(ragcore)"
cmake -S "$src" -B "$work/consumer-cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/consumer-configure.log" 2>&1 \
  || { cat "$work/consumer-configure.log"; die "configuring the CMake consumer failed"; }
found=$(sed -n 's/^ragcore_DIR:PATH=//p' "$work/consumer-cmake/CMakeCache.txt")
[ "$found" = "$(dirname "$config")" ] || die "find_package(ragcore) found '$found', not the staged $(dirname "$config")"
cmake --build "$work/consumer-cmake" >"$work/consumer-build.log" 2>&1 \
  || { cat "$work/consumer-build.log"; die "building the CMake consumer failed"; }
# No LD_LIBRARY_PATH: CMake's build RPATH to the imported library must be enough.
[ "$(unset LD_LIBRARY_PATH; librag_dir "$work/consumer-cmake/consumer")" = "$libdir_real" ] \
  || die "the CMake consumer does not load librag from $libdir"
env -u LD_LIBRARY_PATH "$work/consumer-cmake/consumer" "$work" \
  || die "consumer built with find_package failed"

step "installed CLI"
if [ -e "$prefix/bin/rag" ]; then
  # The installed tool must find the installed library by itself (RUNPATH $ORIGIN/../lib).
  [ "$(unset LD_LIBRARY_PATH; librag_dir "$prefix/bin/rag")" = "$libdir_real" ] \
    || die "the installed rag CLI does not load librag from $libdir"
  echo "bin/rag loads $libdir/librag"
else
  die "the rag CLI was not installed to $prefix/bin"
fi

rm -rf "$work"
printf '\ninstall test OK\n'
