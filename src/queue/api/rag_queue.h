/*
 * The queue module's interface, used by every other module: the transactional outbox, the
 * idempotent inbox with dead letters, consumers with retries, and the embedded LMDB broker
 * (the default transport).
 *
 * Guarantees: a producer's state change and its events commit in one LMDB transaction of its
 * own env; outbox rows are deleted only after the transport accepted them (lazily: by the
 * env's next write txn, see outbox.c); a consumer's effects, inbox record and outgoing events
 * commit in one transaction before the ack.  A crash between any two steps loses nothing
 * (rows/messages stay) and applies nothing twice (inbox).
 */
#ifndef RAG_QUEUE_API_H
#define RAG_QUEUE_API_H

#include <stddef.h>
#include <stdint.h>
#include <lmdb.h>

#include "ragcore/sys/queue_transport.h"
#include "rag_common.h"

/* ---- embedded LMDB broker (transport "lmdb") ------------------------------------------- */

/* Open the broker env under `<root>/queue/` and return a transport on it.  Every lease left
 * by a previous process is released (the root lock guarantees that process is gone).
 * Free with transport->free(transport->state) and then free(transport). */
int rag_queue_lmdb_transport_new(rag_queue_transport **out, const rag_config *cfg);
/* The broker's env when `t` is the LMDB transport (for backups); NULL for any other. */
MDB_env *rag_queue_lmdb_transport_env(const rag_queue_transport *t);

/* ---- outbox (in the producer's env) ----------------------------------------------------- */

typedef struct rag_outbox rag_outbox;

/* Open the outbox tables ("__outbox", "__outbox_meta") in `env`. `module` names message ids:
 * "<module>-<16 hex digits of the env's random origin>-<16 hex digits of the outbox sequence>",
 * unique across roots (see outbox.c). */
int rag_outbox_open(rag_outbox **out, MDB_env *env, const char *module);
void rag_outbox_free(rag_outbox *ob);
/* Append an event inside the caller's write transaction. `id_out` (may be NULL) gets the id. */
int rag_outbox_add(rag_outbox *ob, MDB_txn *txn, const char *topic, const void *data,
                   size_t len, char id_out[RAG_QUEUE_MSGID_MAX]);
/* Publish up to `max` pending rows (0 = all) in batches.  Accepted rows are no longer
 * pending; the env's next write txn (rag_outbox_add) or rag_outbox_free() deletes them.
 * Thread-safe: concurrent relays of one outbox serialise. */
int rag_outbox_relay(rag_outbox *ob, const rag_queue_transport *t, size_t max, size_t *moved);
int rag_outbox_pending(rag_outbox *ob, uint64_t *count);
const char *rag_outbox_module(const rag_outbox *ob);

/* ---- consumers --------------------------------------------------------------------------- */

typedef struct rag_queue_policy {
    unsigned int max_attempts;   /* deliveries before dead-lettering */
    unsigned int retry_base_ms, retry_cap_ms;
    unsigned int lease_ms;
    unsigned int batch_size;     /* messages per transaction */
} rag_queue_policy;

void rag_queue_policy_from_config(rag_queue_policy *p, const rag_config *cfg);

/*
 * A consuming module.  For each fetched batch: one write txn in `env`; per message a nested
 * txn: inbox check (duplicate: skip), then handle(); RAG_OK commits the nested txn with the
 * inbox record; RAG_ETRANSIENT aborts it and the message is nak'ed with capped full-jitter
 * backoff (dead-lettered once attempts reach max_attempts); any other error aborts it and
 * the message is dead-lettered at once.  Dead-lettering writes the "__dead" row, the inbox
 * record and whatever on_dead() adds, in the batch txn.  After commit: end_batch(committed=1),
 * relay of `outbox`, then ack/nak (the embedded broker writes acks with its next write).
 * If the commit fails: end_batch(0) and every message is nak'ed.
 */
typedef struct rag_consumer {
    const char *module;         /* e.g. "embed" */
    const char *topic;          /* e.g. RAG_TOPIC_CHUNKED */
    MDB_env *env;               /* the consuming module's env */
    rag_outbox *outbox;         /* the module's outbox (may be NULL) */
    void *self;
    int (*begin_batch)(void *self, MDB_txn *txn);                       /* optional */
    int (*handle)(void *self, MDB_txn *txn, const rag_queue_message *msg);
    /* Optional: called in the dead-letter transaction (e.g. to emit doc.failed, which starts
     * the saga's compensation).  It must succeed for any payload, malformed ones included:
     * a failure keeps the message in the queue. */
    int (*on_dead)(void *self, MDB_txn *txn, const rag_queue_message *msg, int code,
                   const char *reason);
    void (*end_batch)(void *self, int committed);                       /* optional */
    /* internal, set by rag_consumer_init(): */
    MDB_dbi inbox_dbi, dead_dbi;
    /* Counters since rag_consumer_init() (metrics), updated once a batch's outcome is known:
     * handled = applied (acked), retried = nak'ed for a later delivery (a failed batch counts
     * each of its messages), dead = dead-lettered, duplicates = skipped by the inbox. */
    _Atomic uint64_t n_handled, n_retried, n_dead, n_duplicates;
    _Atomic int relay_failing; /* 1 after a failed relay was logged, until one succeeds */
} rag_consumer;

/* Open the consumer's "__inbox" and "__dead" tables in c->env. */
int rag_consumer_init(rag_consumer *c);
/* Fetch and process one batch. *processed = messages handled (acked, dead or nak'ed). */
int rag_consumer_run_once(rag_consumer *c, const rag_queue_transport *t,
                          const rag_queue_policy *p, size_t *processed);

/* Dead letters of one consumer env. */
typedef struct rag_dead_letter {
    char id[RAG_QUEUE_MSGID_MAX];
    char topic[RAG_QUEUE_TOPIC_MAX];
    int code;
    uint32_t attempts;
    uint64_t when_ms;
    char reason[256];
    const void *payload;   /* the message's bytes, valid during rag_dead_list's callback */
    size_t payload_len;
} rag_dead_letter;

int rag_dead_count(MDB_env *env, uint64_t *count);
/* Calls `fn` for each dead letter (stops when fn returns nonzero). */
int rag_dead_list(MDB_env *env, int (*fn)(void *arg, const rag_dead_letter *dl), void *arg);
/* Remove one dead letter (its inbox record stays, so redeliveries are still skipped).
 * RAG_ENOTFOUND when there is no such dead letter. */
int rag_dead_drop(MDB_env *env, const char *id);
/* Re-drive one dead letter: in one txn of the outbox's env (which must be the consumer env
 * holding the dead letter) its payload is appended to `ob` under a NEW id (the old id is in
 * the inbox) and the dead letter is deleted; relay `ob` afterwards. `new_id` may be NULL. */
int rag_dead_retry(rag_outbox *ob, const char *id, char new_id[RAG_QUEUE_MSGID_MAX]);

/* Depth of a topic, all states summed. */
int rag_queue_total_depth(const rag_queue_transport *t, const char *topic, uint64_t *total);

#endif
