/* The index module as seen by the core: label map, active versions, ACL labels, mutation log
 * and snapshots in LMDB; vectors in a rag_vector_backend (FAISS) derived from them. */
#ifndef RAG_INDEX_API_H
#define RAG_INDEX_API_H

#include "rag_common.h"
#include "rag_queue.h"
#include "rag_readers.h"
#include "rag_vector_backend.h"

typedef struct rag_index rag_index;

/* Open `<root>/index/`. `backend` is owned by the index from here on (freed on close, also
 * on failure). Loads the newest snapshot and replays the mutation log after it. */
int rag_index_open(rag_index **out, const rag_config *cfg, rag_vector_backend *backend);
/* Writes a snapshot when the log grew since the last one, then frees everything. */
void rag_index_close(rag_index *ix);

const rag_index_reader *rag_index_reader_get(rag_index *ix);
/* Consumers of doc.embedded and doc.deleted (both emit doc.indexed). */
rag_consumer *rag_index_consumer_embedded(rag_index *ix);
rag_consumer *rag_index_consumer_deleted(rag_index *ix);
rag_outbox *rag_index_outbox(rag_index *ix);
MDB_env *rag_index_env(rag_index *ix);

/* Write a snapshot now (temp file, fsync, rename, fsync dir) and record its log sequence. */
int rag_index_snapshot(rag_index *ix);

typedef struct rag_index_stats {
    uint64_t vectors;   /* live labels */
    uint64_t documents; /* documents with an active version */
    uint64_t epoch;
    uint64_t log_seq;   /* last mutation-log sequence */
} rag_index_stats;
int rag_index_stats_get(rag_index *ix, rag_index_stats *out);

#endif
