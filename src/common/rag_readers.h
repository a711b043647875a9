/*
 * Read interfaces: the only way a module reads another module's data.  The core wires them;
 * no module opens another module's environment.
 */
#ifndef RAG_READERS_H
#define RAG_READERS_H

#include <stddef.h>
#include <stdint.h>

#include "ragcore/rag.h"

#define RAG_READER_VERSION 2u

/* What ingest says about a document (borrowed pointers valid until reader end()). */
typedef struct rag_doc_view {
    uint64_t latest_version;   /* newest version accepted by ingest */
    int deleted;               /* 1: tombstoned; searches must drop it */
    /* Newest version number covered by any delete of this id (0: never deleted). Hits of a
     * version <= this are dropped even after the id was put again: until the index applies
     * the delete it may still hold the deleted version's labels. */
    uint64_t deleted_through;
    const char *title;         /* of the latest version; "" if none */
    const char *uri;           /* "" if none */
} rag_doc_view;

typedef struct rag_ingest_reader {
    unsigned int version;
    void *self;
    /* Begin a consistent read snapshot; `*rtxn` is passed to the calls below. */
    int (*begin)(void *self, void **rtxn);
    void (*end)(void *self, void *rtxn);
    /* Text of one chunk; RAG_ENOTFOUND once purged. `*text` valid until end(). */
    int (*chunk_text)(void *self, void *rtxn, const char *doc_id, uint64_t version,
                      uint32_t chunk_no, const char **text, size_t *len);
    /* Document metadata; RAG_ENOTFOUND for unknown ids. */
    int (*doc_info)(void *self, void *rtxn, const char *doc_id, rag_doc_view *out);
} rag_ingest_reader;

/* Access filter for a search. */
typedef struct rag_acl_filter {
    int unrestricted;                /* 1: every document */
    const char *const *principals;   /* else: public documents + these principals' */
    size_t principal_count;
} rag_acl_filter;

typedef struct rag_index_hit {
    char doc_id[RAG_DOC_ID_MAX + 1];
    uint64_t version;
    uint32_t chunk_no;
    float score;                     /* inner product, higher is better */
} rag_index_hit;

typedef struct rag_index_reader {
    unsigned int version;
    void *self;
    /* Top-k active labels for `query` (dim floats) among those `filter` allows, best first.
     * `hits` has room for k entries; *n_hits <= k. ACL filtering happens inside the search. */
    int (*search)(void *self, const float *query, size_t k, const rag_acl_filter *filter,
                  rag_index_hit *hits, size_t *n_hits);
    /* Epoch: increments with every committed index change. */
    int (*epoch)(void *self, uint64_t *out);
    /* BM25 top-k over the lexical side (terms of each chunk's text plus its document's title:
     * NFKC casefold, stopwords dropped, Snowball English stems), among the labels `filter`
     * allows, best first.  Same consistency as search(): the lexical side changes with the
     * vectors, in the same transactions and under the same lock, so both sides always agree
     * on a document's active version.  `query` is UTF-8 (NFC) of `len` bytes; a query with
     * no indexable term gives 0 hits. */
    int (*search_lexical)(void *self, const char *query, size_t len, size_t k,
                          const rag_acl_filter *filter, rag_index_hit *hits, size_t *n_hits);
} rag_index_reader;

#endif
