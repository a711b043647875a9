#!/usr/bin/env bash
# Fetch the XML documentation corpus of bench/bench_ingest into DIR without installing anything:
# the C-locale Mallard pages of Debian's gnome-user-docs package.
#
#   scripts/fetch-corpora.sh DIR          e.g. scripts/fetch-corpora.sh build/corpora
#
# `apt-get download` fetches the .deb into DIR/debs (no root needed, nothing installed, the
# package's dependencies are not fetched), and only its usr/share/help/C/ tree is unpacked
# with dpkg-deb into DIR (the other locales are ~20x more and not read by the bench).  When
# DIR already holds the pages nothing is downloaded (offline); when it holds the .deb, it is
# unpacked again without the network.  bench_ingest looks for the pages in $RAG_CORPORA, else
# in <build dir>/corpora.
set -euo pipefail

PKG=gnome-user-docs
GUIDES=(gnome-help system-admin-guide)

die() {
  echo "fetch-corpora: error: $*" >&2
  exit 1
}

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 DIR"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
HELP="$DIR/usr/share/help/C"

count_pages() {
  local n=0 g
  for g in "${GUIDES[@]}"; do
    [ -d "$HELP/$g" ] && n=$((n + $(find "$HELP/$g" -maxdepth 1 -name '*.page' | wc -l)))
  done
  echo "$n"
}

report() {
  local g
  for g in "${GUIDES[@]}"; do
    echo "fetch-corpora: $g: $HELP/$g ($(find "$HELP/$g" -maxdepth 1 -name '*.page' | wc -l) pages)"
  done
  if [ "$(basename "$DIR")" = corpora ]; then
    echo "fetch-corpora: bench_ingest finds them when DIR is <build dir>/corpora, or with RAG_CORPORA=$DIR"
  else
    echo "fetch-corpora: run bench_ingest with RAG_CORPORA=$DIR"
  fi
}

all_present() {
  local g
  for g in "${GUIDES[@]}"; do
    [ -n "$(find "$HELP/$g" -maxdepth 1 -name '*.page' 2>/dev/null | head -n 1)" ] || return 1
  done
}

if all_present; then
  echo "fetch-corpora: already present ($(count_pages) pages); nothing downloaded"
  report
  exit 0
fi

command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (this script needs Debian's dpkg)"

mkdir -p "$DIR/debs"
deb=$(find "$DIR/debs" -maxdepth 1 -name "${PKG}_*.deb" | sort | tail -n 1)
if [ -z "$deb" ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found (this script needs Debian's apt)"
  echo "fetch-corpora: downloading $PKG with apt-get download (nothing is installed)"
  # apt's sandbox user (_apt) may not write DIR: download into a directory it can write, then
  # move the file.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 0777 "$tmp"
  if ! (cd "$tmp" && apt-get download -q "$PKG"); then
    die "apt-get download $PKG failed (offline, or no package lists: run 'apt-get update' as root first)"
  fi
  deb_name=$(find "$tmp" -maxdepth 1 -name "${PKG}_*.deb" -printf '%f\n' | head -n 1)
  [ -n "$deb_name" ] || die "apt-get download left no ${PKG}_*.deb"
  mv "$tmp/$deb_name" "$DIR/debs/"
  deb="$DIR/debs/$deb_name"
fi

echo "fetch-corpora: unpacking the C locale of $(basename "$deb") into $DIR"
# dpkg-deb -x would unpack every locale; take only the C pages from the data archive.
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$DIR" --wildcards './usr/share/help/C/*'
all_present || die "$(basename "$deb") holds no pages under usr/share/help/C/{${GUIDES[*]}}"
report
