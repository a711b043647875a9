/* The ingest module as seen by the core: upload, parse, chunk; owns the document store. */
#ifndef RAG_INGEST_API_H
#define RAG_INGEST_API_H

#include "rag_common.h"
#include "rag_events.h"
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
/* Consumer of doc.indexed (marks versions active, frees superseded text, closes sagas). */
rag_consumer *rag_ingest_consumer(rag_ingest *ig);
/* Consumer of doc.failed (starts a saga's compensation: version failed, doc.revert). */
rag_consumer *rag_ingest_consumer_failed(rag_ingest *ig);
rag_outbox *rag_ingest_outbox(rag_ingest *ig);
MDB_env *rag_ingest_env(rag_ingest *ig);

typedef struct rag_ingest_stats {
    uint64_t documents; /* live */
    uint64_t versions;  /* stored versions (text kept) */
    uint64_t chunks;    /* stored chunks */
    uint64_t sagas_running, sagas_compensating, sagas_failed; /* saga rows in these states */
} rag_ingest_stats;
int rag_ingest_stats_get(rag_ingest *ig, rag_ingest_stats *out);

/* ---- sagas ------------------------------------------------------------------------------
 * Every version transition (a put creating version v, a delete) is a saga with a row in the
 * "sagas" table, written in the transaction that starts it and updated by every event ingest
 * receives about it.  States: */
typedef enum rag_saga_state {
    RAG_SAGA_RUNNING = 1,      /* on its way through embed and index */
    RAG_SAGA_DONE = 2,         /* the index confirmed it (active version / delete applied) */
    RAG_SAGA_SUPERSEDED = 3,   /* a newer version or a delete overtook it */
    RAG_SAGA_COMPENSATING = 4, /* failed permanently; doc.revert sent, not yet confirmed */
    RAG_SAGA_FAILED = 5        /* failed and compensated: the previous version stays active */
} rag_saga_state;

typedef enum rag_saga_kind { RAG_SAGA_PUT = 1, RAG_SAGA_DELETE = 2 } rag_saga_kind;

const char *rag_saga_state_name(int state);

typedef struct rag_ingest_saga_view {
    const char *doc_id;
    int kind, state;             /* rag_saga_kind, rag_saga_state */
    uint64_t version;
    uint64_t started_ms, updated_ms, deadline_ms;
    int code;                    /* failure code (COMPENSATING, FAILED), else 0 */
    const char *reason;
    rag_ev_trail trail;          /* strings valid during the callback */
    /* the document now */
    int deleted;
    uint64_t latest, active;
} rag_ingest_saga_view;

/* The newest saga of `doc_id` (RAG_ENOTFOUND when none). */
int rag_ingest_saga_get(rag_ingest *ig, const char *doc_id,
                        int (*fn)(void *arg, const rag_ingest_saga_view *s), void *arg);

/* What rag_fsck needs of each document (in doc id order, one read snapshot). */
typedef struct rag_ingest_doc_state {
    const char *doc_id;
    int deleted;
    uint64_t latest, active, deleted_at;
    int active_stored;           /* the active version's data is stored */
    uint32_t active_chunks;      /* its chunk count */
    size_t stored_versions;      /* versions whose data is still stored */
    int has_saga;
    int saga_kind, saga_state;   /* of the newest saga */
    uint64_t saga_version, saga_deadline_ms;
} rag_ingest_doc_state;

/* Session consistency: *failed = 1 when version `version` of `doc_id` failed for good (its
 * version row is VERSION_FAILED, or its put saga is compensating or failed), so a reader
 * waiting for it to be applied must stop waiting.  Read-only. */
int rag_ingest_version_failed(rag_ingest *ig, const char *doc_id, uint64_t version, int *failed);

int rag_ingest_scan(rag_ingest *ig, int (*fn)(void *arg, const rag_ingest_doc_state *d),
                    void *arg);

/* Repairs (rag_fsck --repair): each writes one event into ingest's outbox in one ingest
 * transaction, so the fix travels the normal event path. */
typedef enum rag_ingest_redrive_mode {
    /* Re-send the pending step of the newest saga: doc.chunked of a running put (from the
     * stored chunks), doc.deleted of a running delete, doc.revert of a compensation. */
    RAG_REDRIVE_RESUME = 1,
    /* Store the active version's content again as a new version (a new saga): the index
     * switch then replaces whatever labels the document has. */
    RAG_REDRIVE_REINDEX = 2,
    /* doc.deleted{doc, version} whatever ingest knows of the document (orphan vectors of a
     * deleted or unknown document). */
    RAG_REDRIVE_PURGE = 3
} rag_ingest_redrive_mode;

int rag_ingest_redrive(rag_ingest *ig, const char *doc_id, int mode, uint64_t version);

/* Re-embed scan for model generation `gen`: send the active version of up to `max_docs`
 * documents (in id order, after where the previous step stopped) as doc.chunked flagged
 * RAG_EV_REEMBED, in one txn that also records the position, so an interrupted scan resumes
 * where it was.  *done = 1 once every document was sent for `gen` (also when a previous
 * scan finished it); *sent counts the versions sent by this step. */
int rag_ingest_reembed_step(rag_ingest *ig, uint64_t gen, size_t max_docs, size_t *sent,
                            int *done);

#endif
