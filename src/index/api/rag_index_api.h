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
/* Consumers of doc.embedded, doc.deleted and doc.revert (all three emit doc.indexed).
 * A doc.embedded that is dead-lettered emits doc.failed{stage "index"} instead. */
rag_consumer *rag_index_consumer_embedded(rag_index *ix);
rag_consumer *rag_index_consumer_deleted(rag_index *ix);
rag_consumer *rag_index_consumer_revert(rag_index *ix);
rag_outbox *rag_index_outbox(rag_index *ix);
MDB_env *rag_index_env(rag_index *ix);

/* Session consistency: *applied = 1 when searches already reflect version `version` of
 * `doc_id` or something newer — the active version is >= it, or a delete covering it was
 * applied — i.e. the change is committed AND applied to the backend and view, not only
 * committed in LMDB.  0 otherwise (not yet there, or never coming: see ingest's version
 * state). */
int rag_index_applied(rag_index *ix, const char *doc_id, uint64_t version, int *applied);

/* Write a snapshot now (temp file, fsync, rename, fsync dir) and record its log sequence. */
int rag_index_snapshot(rag_index *ix);

typedef struct rag_index_stats {
    uint64_t vectors;   /* live labels */
    uint64_t documents; /* documents with an active version */
    uint64_t epoch;
    uint64_t log_seq;   /* last mutation-log sequence */
    uint64_t without_vector; /* live labels without a vector of the current model (a
                                re-embed in flight, or one that was dead-lettered) */
    uint64_t model_gen; /* model generation of the vectors held */
} rag_index_stats;
int rag_index_stats_get(rag_index *ix, rag_index_stats *out);

/* ---- consistency checks (rag_fsck) ---------------------------------------------------------
 * Both scans read one LMDB snapshot each; the callback's strings live until it returns; a
 * nonzero return from the callback stops the scan and is returned. */

/* One row of the "docs" table. */
typedef struct rag_index_doc_state {
    const char *doc_id;
    uint64_t active;           /* 0: no active version (deleted or never indexed) */
    uint64_t deleted_through;
    size_t label_count;        /* live labels listed in the row */
    const int64_t *labels;     /* label_count labels */
} rag_index_doc_state;

/* One row of the "labels" table. */
typedef struct rag_index_label_state {
    int64_t label;
    const char *doc_id;
    uint64_t version;
    uint32_t chunk_no;
    int has_vector;            /* a "vectors" row exists for the label */
} rag_index_label_state;

int rag_index_scan_docs(rag_index *ix, int (*fn)(void *arg, const rag_index_doc_state *d),
                        void *arg);
int rag_index_scan_labels(rag_index *ix,
                          int (*fn)(void *arg, const rag_index_label_state *l), void *arg);

/* Problems inside the index module (its tables against each other, and against the
 * in-memory view and the vector backend):
 *   "unreferenced_label"  a labels row no docs row lists (doc_id/label set)
 *   "missing_label"       a docs row lists a label with no labels row, or one of another doc
 *   "missing_vector"      a live label without a vectors row
 *   "view_mismatch"       the in-memory view or the backend disagrees with LMDB (counts)
 * With `repair`: unreferenced labels are removed and missing labels dropped from their docs
 * row in one index transaction (logged, epoch++, applied to the backend like any change),
 * and the view and backend are rebuilt from LMDB when they disagree.  `*found` = problems
 * seen before repair. */
typedef struct rag_index_problem {
    const char *what;
    const char *doc_id;        /* "" when unknown */
    int64_t label;             /* -1 when none */
    const char *detail;
} rag_index_problem;

int rag_index_check(rag_index *ix, int repair,
                    int (*fn)(void *arg, const rag_index_problem *p), void *arg,
                    uint64_t *found);

#endif
