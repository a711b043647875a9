/*
 * The façade's handle, shared by the files of src/core (rag.c: lifecycle, put, search, status,
 * dead letters; fsck.c: consistency check and trace).
 */
#ifndef RAG_MODULE_CORE
#error "private header of the core"
#endif
#ifndef RAG_CORE_INTERNAL_H
#define RAG_CORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "rag_assemble_api.h"
#include "rag_common.h"
#include "rag_embed_api.h"
#include "rag_index_api.h"
#include "rag_ingest_api.h"
#include "rag_queue.h"
#include "rag_retrieve_api.h"

/* On-disk layout version of a root; bumped on incompatible changes. */
#define RAG_ROOT_FORMAT 1
#define RAG_MAX_CONSUMERS 8

/* One worker thread per consuming env: consumers that share an env (index's doc.embedded and
 * doc.deleted) share a thread, so that each batch's commit, FAISS apply and outbox relay run
 * in order and no other thread relays an event whose effect is committed but not applied. */
typedef struct rag_worker {
    rag_ctx *ctx;
    rag_consumer *consumers[RAG_MAX_CONSUMERS];
    size_t count;
    pthread_t thread;
} rag_worker;

/* Session consistency (rag_query.consistency == RAG_CONSISTENCY_SESSION).  The handle keeps
 * its own writes that are not yet known to be applied by the index: one entry per put
 * version or delete (for a delete, the version it covered), appended after the write's
 * commit, in order of a sequence number.  A session search waits until every entry older
 * than the search is applied (rag_index_applied) or failed for good
 * (rag_ingest_version_failed); settled entries are removed by whoever checks them.
 * The list is bounded: a write that finds it full (even after the writer checked it) is not
 * recorded but counted in `overflow_gen`, and a session search that sees an uncovered
 * overflow waits instead for the whole pipeline to be quiet (every outbox and queue empty),
 * which implies that every earlier write was applied or dead-lettered. */
#define RAG_SESSION_MAX 4096u
/* A writer that finds the list full checks it again only after this many more writes: with
 * nothing moving (no workers) every write would otherwise scan the full list. */
#define RAG_SESSION_PRUNE_EVERY (RAG_SESSION_MAX / 4u)

typedef struct rag_session_entry {
    char *doc_id;
    uint64_t version;
    uint64_t seq;
} rag_session_entry;

typedef struct rag_session {
    pthread_mutex_t lock;
    rag_session_entry *items; /* ascending seq */
    size_t count, cap;
    uint64_t next_seq;
    uint64_t overflow_gen;   /* writes that were not recorded */
    uint64_t quiet_gen;      /* overflow_gen values covered by a quiet pipeline */
    uint64_t writes_since_prune;
} rag_session;

/* RAG_ESTATE for a call that needs a module this handle does not host. */
int rag_core__hosted_error(const char *call, const char *module);

struct rag_ctx {
    rag_config cfg;
    int lock_fd;
    rag_embed_provider provider;
    int have_provider;
    rag_queue_transport transport;
    int have_transport;
    rag_queue_policy policy;

    rag_ingest *ingest;
    rag_embed *embed;
    rag_index *index;
    rag_retrieve *retrieve;
    rag_assembler *assembler;

    rag_consumer *consumers[RAG_MAX_CONSUMERS];
    size_t consumer_count;
    rag_outbox *outboxes[3];
    size_t outbox_count;

    rag_worker workers[RAG_MAX_CONSUMERS];
    size_t worker_count;
    int started;
    atomic_int stopping;
    pthread_mutex_t pump_lock; /* one inline pump at a time */
    rag_session session;
    rag_hist search_latency;   /* every rag_search call on this handle (metrics.c) */
    atomic_int relay_failing;  /* 1 after a failed relay was logged, until one succeeds */
    /* While workers run, a put's events are relayed to the broker by this thread, so a
     * rag_doc_put returns after its own commit and concurrent puts share one relay. */
    pthread_t relay_thread;
    pthread_mutex_t relay_mu;
    pthread_cond_t relay_cv;
    int relay_pending;         /* a put committed events the relay thread has not taken yet */
    int relay_running;         /* relay_thread exists */
    int opened;                /* rag_open() succeeded (its "close" event is logged) */
};

#endif
