#!/usr/bin/env python3
"""Answer a question over the demo corpus (the Python 3.11 HTML docs) with the ragcore binding.

    # ingest a subset of /usr/share/doc/python3.11/html into a temporary root, then ask:
    RAGCORE_LIBRARY=build/librag.so PYTHONPATH=bindings/python \\
        python3 bindings/python/examples/ask.py "How do I read a file line by line?"

    # reuse a root that already holds documents (e.g. ./demo-data from `make demo`):
    python3 bindings/python/examples/ask.py --root demo-data "What does the with statement do?"

It prints the top hits with their sources and the prompt assembled for an LLM (ragcore does
not call a model: the prompt is what you would send to one).
"""

import argparse
import os
import sys
import tempfile
import time

import ragcore

DEFAULT_CORPUS = "/usr/share/doc/python3.11/html"
DEFAULT_QUESTION = "How do I read a file line by line?"


def corpus_files(corpus, limit):
    """Up to `limit` HTML files, the tutorial first, then the library reference, then the
    rest (sorted within each group, so runs are repeatable)."""
    groups = {0: [], 1: [], 2: []}
    for dirpath, dirnames, filenames in os.walk(corpus):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("_"))
        rel_dir = os.path.relpath(dirpath, corpus)
        group = 0 if rel_dir.startswith("tutorial") else 1 if rel_dir.startswith("library") else 2
        groups[group].extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".html"))
    files = sorted(groups[0]) + sorted(groups[1]) + sorted(groups[2])
    return files[:limit] if limit > 0 else files


def ingest(rag, corpus, limit, batch=32):
    files = corpus_files(corpus, limit)
    if not files:
        sys.exit("ask: no HTML files under %s (install the Debian package python3.11-doc)"
                 % corpus)
    t0 = time.monotonic()
    stored = skipped = 0
    for i in range(0, len(files), batch):
        docs = []
        for path in files[i:i + batch]:
            with open(path, "rb") as f:
                data = f.read()
            docs.append({"doc_id": os.path.relpath(path, corpus), "data": data,
                         "mime": "text/html", "uri": "file://" + path})
        for doc, res in zip(docs, rag.put_batch(docs)):
            if isinstance(res, ragcore.RagError):
                skipped += 1
                print("  skipped %s: %s" % (doc["doc_id"], res), file=sys.stderr)
            else:
                stored += 1
    rag.drain()
    print("ingested %d files (%d skipped) from %s in %.1f s"
          % (stored, skipped, corpus, time.monotonic() - t0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("question", nargs="*", help="question (default: %r)" % DEFAULT_QUESTION)
    ap.add_argument("--root", help="root directory; when it already holds documents they are "
                    "reused, otherwise the corpus is ingested into it (default: a temporary "
                    "root, removed afterwards)")
    ap.add_argument("--corpus", default=os.environ.get("RAG_DEMO_CORPUS", DEFAULT_CORPUS))
    ap.add_argument("--limit", type=int, default=200,
                    help="HTML files to ingest, 0 for all (default: 200)")
    ap.add_argument("-k", type=int, default=5, help="hits to retrieve (default: 5)")
    ap.add_argument("--budget", type=int, default=1024, help="prompt token budget")
    ap.add_argument("--json", action="store_true", help="print the prompt as JSON messages")
    ap.add_argument("--check", action="store_true", help="exit with status 1 unless a hit was "
                    "found and the prompt cites it as [1] (used by CTest)")
    args = ap.parse_args(argv)
    question = " ".join(args.question) or DEFAULT_QUESTION

    ok = False
    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="ragcore-ask-")
        root = os.path.join(tmp.name, "root")
    try:
        # A temporary root needs no fsync; a kept one should survive a crash.
        with ragcore.open(root, no_sync=tmp is not None) as rag:
            docs = rag.status()["documents"]
            if docs:
                print("reusing %s (%d documents)" % (root, docs))
                rag.drain()  # finish whatever an earlier run left queued
            else:
                ingest(rag, args.corpus, args.limit)

            hits = rag.search(question, k=args.k)
            print("\nQ: %s\ntop %d hits:" % (question, len(hits)))
            for i, h in enumerate(hits, 1):
                print("  %d. %.3f  %s#%d  %s" % (i, h.score, h.doc_id, h.chunk, h.title))
                print("       %s" % (h.uri or "-"))
            if not hits:
                print("  (nothing found)")
            prompt = rag.assemble(question, hits, budget=args.budget, json=args.json)
            print("\n--- prompt (budget %d tokens) ---\n%s" % (args.budget, prompt))
            ok = bool(hits) and "[1]" in prompt
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.check and not ok:
        print("ask: check failed: no hit, or the prompt does not cite [1]", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
