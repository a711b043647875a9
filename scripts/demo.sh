#!/usr/bin/env bash
# Demo: index the Python 3.11 documentation (Debian package python3.11-doc) with the rag CLI,
# then answer a few questions about Python.
#
#   scripts/demo.sh            (or: make demo, which builds first)
#
# The index lives in ./demo-data (RAG_DEMO_ROOT overrides).  Running the demo again resumes an
# interrupted ingest and skips what is already there: the CLI keys every file by path and
# content, so only new or changed files cost anything.
# Environment: RAG_BIN (default build/rag), RAG_DEMO_ROOT (default demo-data),
# RAG_DEMO_CORPUS (default /usr/share/doc/python3.11/html).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

RAG_BIN=${RAG_BIN:-build/rag}
ROOT=${RAG_DEMO_ROOT:-demo-data}
CORPUS=${RAG_DEMO_CORPUS:-/usr/share/doc/python3.11/html}

die() {
  echo "demo: error: $*" >&2
  exit 1
}

[ -x "$RAG_BIN" ] || die "$RAG_BIN not found or not executable: run 'make build' first (or 'make demo')"
if [ ! -d "$CORPUS" ] || [ -z "$(find "$CORPUS" -name '*.html' -print -quit 2>/dev/null)" ]; then
  die "demo corpus $CORPUS is missing or has no HTML files: install the Debian package python3.11-doc (scripts/install-deps.sh does)"
fi

rag() { "$RAG_BIN" --root "$ROOT" "$@"; }

QUESTIONS=(
  "How do I read a file line by line?"
  "What does the with statement do?"
  "How can I sort a list of dictionaries by a key?"
)

echo "== Ingesting $CORPUS into $ROOT (resumes and skips what is already indexed)"
rag ingest "$CORPUS" || die "ingest failed"

echo
echo "== Index status"
rag status || die "status failed"

for q in "${QUESTIONS[@]}"; do
  echo
  echo "== Q: $q"
  echo "   top 3 results with their sources:"
  rag search "$q" -k 3 || die "search failed for: $q"
done

echo
echo "== Prompt assembled for: ${QUESTIONS[0]}  (token budget 1024)"
rag ask "${QUESTIONS[0]}" --budget 1024 || die "ask failed"
