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
};

#endif
