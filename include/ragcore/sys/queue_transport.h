/**
 * @file ragcore/sys/queue_transport.h
 * @brief The work-queue transport vtable: how events travel between ragcore's modules.
 *
 * Modules never talk to each other directly.  A module writes its state change and its
 * outgoing events in one LMDB transaction of its own environment (the transactional outbox);
 * a relay hands outbox rows to a transport and deletes them only after the transport accepted
 * them; consumers fetch messages, apply them together with an inbox record (idempotent) in one
 * transaction, and only then acknowledge.  Delivery is therefore at least once and effects are
 * exactly once.
 *
 * ragcore ships the `lmdb` transport (an embedded broker environment under `<root>/queue/`)
 * and, when built with libnats, the `nats` transport on NATS JetStream
 * (rag_queue_nats_new() in ragcore/transports.h), which lets modules run in separate
 * processes and machines.  A host may supply its own through rag_options::transport.
 *
 * Versioning as for every ragcore vtable: `version` first, ::RAG_QUEUE_TRANSPORT_INIT,
 * slots appended only, RAG_EVERSION (-16) for 0 or future versions.
 *
 * Thread-safety: every slot may be called concurrently from several ragcore threads.
 */
#ifndef RAGCORE_SYS_QUEUE_TRANSPORT_H
#define RAGCORE_SYS_QUEUE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Current transport vtable version (number of the newest slot set). */
#define RAG_QUEUE_TRANSPORT_VERSION 2u

/** Longest message id, including NUL. */
#define RAG_QUEUE_MSGID_MAX 64
/** Longest topic name, including NUL. */
#define RAG_QUEUE_TOPIC_MAX 32

/** One message, as published or as delivered. */
typedef struct rag_queue_message {
    /** Topic (event type), e.g. "doc.chunked". */
    char topic[RAG_QUEUE_TOPIC_MAX];
    /** Globally unique id, stable across redeliveries (producer module + outbox sequence). */
    char id[RAG_QUEUE_MSGID_MAX];
    /** Payload bytes.  On delivery owned by the transport until `release`. */
    const void *data;
    size_t size;       /**< payload length in bytes */
    /** On delivery: how many times this message has been delivered, this time included (>=1). */
    uint32_t attempts;
    /** On delivery: transport-private handle identifying this delivery for ack/nak. */
    uint64_t handle;
} rag_queue_message;

/** Queue depth of one topic. */
typedef struct rag_queue_depth {
    uint64_t ready;    /**< visible now */
    uint64_t delayed;  /**< waiting for a retry backoff */
    uint64_t inflight; /**< leased to a consumer, not yet acknowledged */
} rag_queue_depth;

/**
 * Queue transport vtable (version 2).  Required slots: `publish`, `fetch`, `ack`, `nak`,
 * `release`, `depth`.  Optional (NULL when unused): `wait`, `wake_all`, `free`, and in
 * version 2 `term` and `progress`.  Every slot returns 0 or a negative RAG_E* code
 * (RAG_ETRANSIENT for a failure worth retrying).
 */
typedef struct rag_queue_transport {
    /** Must be ::RAG_QUEUE_TRANSPORT_VERSION (or an older supported version). */
    unsigned int version;
    /** Opaque transport state passed back to every slot; owned by ragcore after rag_open(). */
    void *state;
    /**
     * Publish `n` messages.  Returns 0 only once every message is durable in the transport;
     * the caller then deletes its outbox rows.  May be called again with the same ids after a
     * crash: the transport may deduplicate, consumers deduplicate in any case.
     */
    int (*publish)(void *state, const rag_queue_message *msgs, size_t n);
    /**
     * Lease up to `max` visible messages of `topic` for `lease_ms` milliseconds.  A message
     * not acknowledged or nak'ed within its lease becomes visible again.
     * @param[out] out    array of `max` entries filled with the leased messages.
     * @param[out] n_out  number filled (0 when none is visible).
     */
    int (*fetch)(void *state, const char *topic, size_t max, uint32_t lease_ms,
                 rag_queue_message *out, size_t *n_out);
    /** Acknowledge (remove) delivered messages.  A transport may write acknowledgements
     *  lazily (the embedded broker does, with its next write): a lost ack must only mean a
     *  redelivery, which the consumer's inbox absorbs, and depth() must not count acked
     *  messages as in flight. */
    int (*ack)(void *state, const rag_queue_message *msgs, size_t n);
    /** Return a delivered message; it becomes visible again after `delay_ms`. */
    int (*nak)(void *state, const rag_queue_message *msg, uint32_t delay_ms);
    /** Free payload memory of delivered messages (after ack/nak). */
    void (*release)(void *state, rag_queue_message *msgs, size_t n);
    /** Depth of a topic. */
    int (*depth)(void *state, const char *topic, rag_queue_depth *out);
    /**
     * Optional: block up to `timeout_ms` until `topic` may have visible messages (a publish
     * happened or a delay expired).  NULL: ragcore polls.
     */
    int (*wait)(void *state, const char *topic, uint32_t timeout_ms);
    /** Optional: wake every waiter (shutdown). */
    void (*wake_all)(void *state);
    /** Optional: release `state`.  Called once when the owning handle closes. */
    void (*free)(void *state);
    /* ---- version 2 ---- */
    /**
     * Optional: remove delivered messages that the consumer dead-lettered (its dead-letter
     * record is committed): they must never be delivered again, and the transport may record
     * them as terminated (JetStream `Term`).  NULL: ragcore calls `ack`.
     */
    int (*term)(void *state, const rag_queue_message *msgs, size_t n);
    /**
     * Optional: the consumer is still working on these delivered messages; extend their lease
     * (JetStream `InProgress`).  Called during long batches.  NULL: leases are not extended.
     */
    int (*progress)(void *state, const rag_queue_message *msgs, size_t n);
} rag_queue_transport;

/** Static initialiser: `rag_queue_transport t = RAG_QUEUE_TRANSPORT_INIT;` */
#define RAG_QUEUE_TRANSPORT_INIT \
    {RAG_QUEUE_TRANSPORT_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
     NULL, NULL}

/** Bytes of a transport struct of `version` (the slots that version has). */
#define RAG_QUEUE_TRANSPORT_SIZE(version) \
    ((version) >= 2 ? sizeof(rag_queue_transport) : offsetof(rag_queue_transport, term))

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_SYS_QUEUE_TRANSPORT_H */
