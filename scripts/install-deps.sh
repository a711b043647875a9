#!/usr/bin/env bash
# Install the Debian 12 (bookworm) packages ragcore needs to build, test, fuzz and run its demo.
#
# Only missing packages are installed, and `apt-get update` runs only when something is
# missing, so a second run on a ready machine does nothing but print "all dependencies present".
# Runs as root, or through sudo when available.  Non-interactive.
set -euo pipefail

# Why each package is here:
#   build-essential cmake pkg-config       toolchain (gcc's libgomp provides OpenMP for FAISS)
#   liblmdb-dev                            per-module storage
#   libutf8proc-dev                        UTF-8 validation, NFC/NFKC, case folding
#   libxml2-dev libmd4c-dev                HTML and Markdown parsing
#   libxxhash-dev                          XXH3-128 content hashes
#   libjansson-dev                         JSON (CLI, providers, status)
#   libfaiss-dev libopenblas-dev liblapack-dev   vector index and its BLAS/LAPACK
#   libstemmer-dev                         Snowball stemming for the lexical index
#   libcurl4-openssl-dev                   HTTP embedding providers
#   libnats-dev nats-server                NATS JetStream transport and its tests
#   libcmocka-dev                          unit tests
#   clang libclang-rt-14-dev libomp-dev    libFuzzer builds; clang's FindOpenMP needs libomp
#                                          (gcc builds do not: they use libgomp)
#   python3 python3.11-doc                 demo corpus (/usr/share/doc/python3.11/html)
#   doxygen                                API reference from the header comments; the
#                                          build_docs test fails on undocumented items
#   abigail-tools                          abidiff: the build_abi test against the last release
PACKAGES=(
  build-essential cmake pkg-config
  liblmdb-dev libutf8proc-dev libxml2-dev libxxhash-dev libjansson-dev libmd4c-dev
  libfaiss-dev libopenblas-dev liblapack-dev
  libstemmer-dev libcurl4-openssl-dev libnats-dev nats-server
  libcmocka-dev
  clang libclang-rt-14-dev libomp-dev
  python3 python3.11-doc
  doxygen abigail-tools
)

die() {
  echo "install-deps: error: $*" >&2
  exit 1
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  die "dpkg-query/apt-get not found: this script supports Debian 12; install these packages by hand: ${PACKAGES[*]}"
fi

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    installed "$p" || echo "$p"
  done
}

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all dependencies present"
  exit 0
fi
echo "install-deps: missing: ${missing[*]}"

if [ "$(id -u)" -eq 0 ]; then
  as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
  # sudo resets the environment; pass DEBIAN_FRONTEND explicitly.
  as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
  die "not root and sudo is not available; run as root: apt-get install ${missing[*]}"
fi

"${as_root[@]}" apt-get update \
  || die "apt-get update failed"
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" \
  || die "apt-get install failed for: ${missing[*]}"

mapfile -t still < <(missing_packages)
if [ "${#still[@]}" -ne 0 ]; then
  die "still missing after apt-get install: ${still[*]}"
fi
echo "install-deps: installed ${missing[*]}"
