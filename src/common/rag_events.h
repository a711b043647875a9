/*
 * The events that travel between modules, and their wire encoding.  This file is the contract
 * between producers and consumers: one event per document version per hop.
 *
 *   ingest --doc.chunked--> embed --doc.embedded--> index --doc.indexed--> ingest
 *   ingest --doc.deleted--> index --doc.indexed(status=deleted)--> ingest
 * and the compensation path of the saga (a version that failed permanently):
 *   embed|index --doc.failed--> ingest --doc.revert--> index --doc.indexed(reverted)--> ingest
 *
 * Every event carries a trail: the hops its saga took so far (module, event handled, time,
 * delivery attempts, outcome).  Each handler copies the trail of the event it consumed into
 * the events it emits and appends its own hop, so ingest ends up with the whole journey of a
 * version without reading anybody else's state (rag_trace() shows it).  The trail is encoded
 * after the fixed fields; an event without one decodes with an empty trail.
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
#define RAG_TOPIC_FAILED "doc.failed"
#define RAG_TOPIC_REVERT "doc.revert"

/* ---- trail ---------------------------------------------------------------------------- */

#define RAG_EV_TRAIL_MAX 16 /* older hops are dropped first when a trail is full */

typedef struct rag_ev_hop {
    const char *module;    /* who handled it: "ingest", "embed", "index" */
    const char *event;     /* what was handled: "put", "delete", "doc.chunked", ... */
    uint64_t at_ms;        /* wall clock, ms since the epoch */
    uint32_t attempts;     /* delivery attempt that produced the outcome (1 = first) */
    int32_t code;          /* outcome: RAG_OK, or the RAG_E* of a permanent failure */
} rag_ev_hop;

typedef struct rag_ev_trail {
    size_t count;
    rag_ev_hop hops[RAG_EV_TRAIL_MAX];
} rag_ev_trail;

/* Append a hop (strings must outlive the trail: static names, or the decoded buffer). */
void rag_ev_trail_add(rag_ev_trail *t, const char *module, const char *event, uint64_t at_ms,
                      uint32_t attempts, int32_t code);

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
    rag_ev_trail trail;
    uint32_t flags;        /* RAG_EV_REEMBED */
} rag_ev_chunked;

/* doc.chunked / doc.embedded flag: not a new version but the active one, sent again to be
 * embedded by a new provider (a re-embed).  Embed does not report its failure as doc.failed
 * (the version stays active; the dead letter is the report), and the index only replaces the
 * vectors of the version if it is still the active one; no doc.indexed answers it. */
#define RAG_EV_REEMBED 0x1u

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
    const char *title;     /* document title, indexed by the lexical side with every chunk */
    uint32_t dim;
    size_t vector_count;
    rag_ev_vector *vectors; /* allocated; each ->vector allocated */
    rag_ev_trail trail;
    uint64_t model_gen;    /* the embed module's model generation that made the vectors */
    uint32_t flags;        /* RAG_EV_REEMBED */
} rag_ev_embedded;

int rag_ev_embedded_encode(const rag_ev_embedded *ev, rag_wbuf *out);
int rag_ev_embedded_decode(const void *data, size_t len, rag_ev_embedded *ev);
void rag_ev_embedded_clear(rag_ev_embedded *ev);

typedef struct rag_ev_deleted {
    const char *doc_id;
    uint64_t version;      /* newest version number at the time of the delete */
    rag_ev_trail trail;
} rag_ev_deleted;

int rag_ev_deleted_encode(const rag_ev_deleted *ev, rag_wbuf *out);
int rag_ev_deleted_decode(const void *data, size_t len, rag_ev_deleted *ev);

typedef enum rag_indexed_status {
    RAG_INDEXED_ACTIVE = 0,     /* `version` is now the active version in the index */
    RAG_INDEXED_SUPERSEDED = 1, /* `version` arrived after a newer one: nothing was added */
    RAG_INDEXED_DELETED = 2,    /* every label of the document is gone (delete applied) */
    RAG_INDEXED_REVERTED = 3    /* doc.revert applied: no label of `version` is left, and a
                                 * late doc.embedded of it will add nothing */
} rag_indexed_status;

typedef struct rag_ev_indexed {
    const char *doc_id;
    uint64_t version;
    uint32_t status;       /* rag_indexed_status */
    uint32_t vector_count; /* labels now live for this version */
    rag_ev_trail trail;
    uint32_t flags;        /* RAG_EV_STALE_VECTORS */
} rag_ev_indexed;

/* doc.indexed flag: the version was switched to, but its vectors came from an older model
 * generation than the index's (embedded before a re-embed began), so it is searchable only
 * on the lexical side: ingest answers with a re-embed doc.chunked for it. */
#define RAG_EV_STALE_VECTORS 0x1u

int rag_ev_indexed_encode(const rag_ev_indexed *ev, rag_wbuf *out);
int rag_ev_indexed_decode(const void *data, size_t len, rag_ev_indexed *ev);

/* A version failed permanently in `stage` (its message was dead-lettered there: the
 * provider rejected a chunk, attempts ran out, malformed data).  Emitted by the consumer's
 * on_dead hook in the transaction that writes the dead letter; consumed by ingest, which
 * starts the compensation. */
typedef struct rag_ev_failed {
    const char *doc_id;
    uint64_t version;
    const char *stage;     /* module that gave up: "embed", "index" */
    int32_t code;          /* RAG_E* of the failure */
    const char *reason;    /* detail text */
    rag_ev_trail trail;
} rag_ev_failed;

int rag_ev_failed_encode(const rag_ev_failed *ev, rag_wbuf *out);
int rag_ev_failed_decode(const void *data, size_t len, rag_ev_failed *ev);

/* Compensation (ingest -> index): remove every label of doc@version unless that version is
 * the index's active one, and refuse it from now on.  Answered with doc.indexed REVERTED
 * (or ACTIVE when the version had already become active: the saga then completes
 * forward, see docs/update-flow.md). */
typedef struct rag_ev_revert {
    const char *doc_id;
    uint64_t version;
    rag_ev_trail trail;
} rag_ev_revert;

int rag_ev_revert_encode(const rag_ev_revert *ev, rag_wbuf *out);
int rag_ev_revert_decode(const void *data, size_t len, rag_ev_revert *ev);

/* The document id and version of any event above, without decoding the rest (dead letters,
 * trace).  RAG_ECORRUPT when `data` is not one of them. */
int rag_ev_peek(const char *topic, const void *data, size_t len, const char **doc_id,
                uint64_t *version);

#endif
