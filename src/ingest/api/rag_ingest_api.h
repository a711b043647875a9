/* The ingest module as seen by the core: upload, parse, chunk; owns the document store. */
#ifndef RAG_INGEST_API_H
#define RAG_INGEST_API_H

#include "rag_common.h"
#include "rag_queue.h"
#include "rag_readers.h"

typedef struct rag_ingest rag_ingest;

/* Open `<root>/ingest/`. */
int rag_ingest_open(rag_ingest **out, const rag_config *cfg);
void rag_ingest_close(rag_ingest *ig);

/* Parse, validate, chunk and store `n` documents in one transaction, each with one
 * doc.chunked event in the outbox. Per-document failures go to results[i].code. */
int rag_ingest_put_batch(rag_ingest *ig, const rag_doc *docs, size_t n, rag_put_result *results);
/* Tombstone (visible at once) and queue doc.deleted. RAG_ENOTFOUND if no live doc. */
int rag_ingest_delete(rag_ingest *ig, const char *doc_id);

const rag_ingest_reader *rag_ingest_reader_get(rag_ingest *ig);
/* Consumer of doc.indexed (marks versions active, frees superseded text). */
rag_consumer *rag_ingest_consumer(rag_ingest *ig);
rag_outbox *rag_ingest_outbox(rag_ingest *ig);
MDB_env *rag_ingest_env(rag_ingest *ig);

typedef struct rag_ingest_stats {
    uint64_t documents; /* live */
    uint64_t versions;  /* stored versions (text kept) */
    uint64_t chunks;    /* stored chunks */
} rag_ingest_stats;
int rag_ingest_stats_get(rag_ingest *ig, rag_ingest_stats *out);

#endif
