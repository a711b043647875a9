/* SciFact-style document collections ({"id", "title", "text"} per line) for the benchmarks. */
#ifndef RAG_BENCH_DOCS_H
#define RAG_BENCH_DOCS_H

#include <stddef.h>

typedef struct bench_doc {
    char *id, *title, *text;
} bench_doc;

/* Read up to `limit` documents (0: all) with a non-empty text from the JSON-lines file `path`.
 * `who` prefixes the error message.  Returns 0 with at least one document, -1 otherwise. */
int bench_docs_load(const char *who, const char *path, size_t limit, bench_doc **out,
                    size_t *n_out);
void bench_docs_free(bench_doc *docs, size_t n);

#endif
