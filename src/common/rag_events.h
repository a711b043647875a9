/*
 * The events that travel between modules, and their wire encoding.  This file is the contract
 * between producers and consumers: one event per document version per hop.
 *
 *   ingest --doc.chunked--> embed --doc.embedded--> index --doc.indexed--> ingest
 *   ingest --doc.deleted--> index --doc.indexed(status=deleted)--> ingest
 *
 * Decoders point strings into the message buffer (valid while the message is); arrays are
 * allocated and released with the matching *_clear().
 */
#ifndef RAG_EVENTS_H
#define RAG_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "rag_common.h"

#define RAG_TOPIC_CHUNKED "doc.chunked"
#define RAG_TOPIC_EMBEDDED "doc.embedded"
#define RAG_TOPIC_INDEXED "doc.indexed"
#define RAG_TOPIC_DELETED "doc.deleted"

/* Chunk as carried by doc.chunked. */
typedef struct rag_ev_chunk {
    uint32_t chunk_no;
    uint8_t hash[16];      /* XXH3-128 of the chunk text */
    const char *text;      /* NFC UTF-8, NUL-terminated in the buffer */
    size_t text_len;
} rag_ev_chunk;

typedef struct rag_ev_chunked {
    const char *doc_id;
    uint64_t version;
    const char *title;
    const char *uri;
    size_t acl_count;
    const char **acl;      /* allocated array of pointers into the buffer */
    size_t chunk_count;
    rag_ev_chunk *chunks;  /* allocated */
} rag_ev_chunked;

int rag_ev_chunked_encode(const rag_ev_chunked *ev, rag_wbuf *out);
int rag_ev_chunked_decode(const void *data, size_t len, rag_ev_chunked *ev);
void rag_ev_chunked_clear(rag_ev_chunked *ev);

/* Vector row as carried by doc.embedded. */
typedef struct rag_ev_vector {
    uint32_t chunk_no;
    uint8_t hash[16];
    const char *text;      /* chunk text (for the lexical side); may be "" */
    size_t text_len;
    float *vector;         /* `dim` floats, allocated */
} rag_ev_vector;

typedef struct rag_ev_embedded {
    const char *doc_id;
    uint64_t version;
    size_t acl_count;
    const char **acl;
    uint32_t dim;
    size_t vector_count;
    rag_ev_vector *vectors; /* allocated; each ->vector allocated */
} rag_ev_embedded;

int rag_ev_embedded_encode(const rag_ev_embedded *ev, rag_wbuf *out);
int rag_ev_embedded_decode(const void *data, size_t len, rag_ev_embedded *ev);
void rag_ev_embedded_clear(rag_ev_embedded *ev);

typedef struct rag_ev_deleted {
    const char *doc_id;
    uint64_t version;      /* newest version number at the time of the delete */
} rag_ev_deleted;

int rag_ev_deleted_encode(const rag_ev_deleted *ev, rag_wbuf *out);
int rag_ev_deleted_decode(const void *data, size_t len, rag_ev_deleted *ev);

typedef enum rag_indexed_status {
    RAG_INDEXED_ACTIVE = 0,     /* `version` is now the active version in the index */
    RAG_INDEXED_SUPERSEDED = 1, /* `version` arrived after a newer one: nothing was added */
    RAG_INDEXED_DELETED = 2     /* every label of the document is gone (delete applied) */
} rag_indexed_status;

typedef struct rag_ev_indexed {
    const char *doc_id;
    uint64_t version;
    uint32_t status;       /* rag_indexed_status */
    uint32_t vector_count; /* labels now live for this version */
} rag_ev_indexed;

int rag_ev_indexed_encode(const rag_ev_indexed *ev, rag_wbuf *out);
int rag_ev_indexed_decode(const void *data, size_t len, rag_ev_indexed *ev);

#endif
