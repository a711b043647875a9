/**
 * @file ragcore/transports.h
 * @brief Constructors of the queue transports built into ragcore besides the default.
 *
 * The default transport is the embedded LMDB broker under `<root>/queue/` (rag_options with
 * `transport` NULL).  The NATS JetStream transport lets the modules of one pipeline run in
 * separate processes and machines (`docs/deployment.md`).
 */
#ifndef RAGCORE_TRANSPORTS_H
#define RAGCORE_TRANSPORTS_H

#include "ragcore/common.h"
#include "ragcore/sys/queue_transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Current version of ::rag_queue_nats_options (put it in its `version` field). */
#define RAG_QUEUE_NATS_OPTIONS_VERSION 1u

/**
 * Options of the NATS JetStream transport; a zero field means the default in brackets.
 * Strings are copied.
 */
typedef struct rag_queue_nats_options {
    unsigned int version;       /**< ::RAG_QUEUE_NATS_OPTIONS_VERSION */
    /** Server URL, or several separated by commas (a cluster), e.g.
     *  "nats://10.0.0.1:4222,nats://10.0.0.2:4222"; "tls://" for TLS.  Required. */
    const char *urls;
    const char *creds_file;     /**< NATS credentials file (JWT + NKey seed); NULL: none */
    const char *tls_ca_file;    /**< CA certificates to verify the server; NULL: system's */
    const char *tls_cert_file;  /**< client certificate for mutual TLS; NULL: none */
    const char *tls_key_file;   /**< its private key */
    /** Prefix of the streams ("<prefix>_DOC_CHUNKED"), their subjects ("<prefix>.doc.chunked")
     *  and the durable consumers; pipelines sharing a broker use distinct prefixes ["RAG"]. */
    const char *prefix;
    unsigned int connect_timeout_ms; /**< per connection attempt [2000] */
    unsigned int reconnect_wait_ms;  /**< base delay between reconnect attempts, jittered and
                                          doubled up to 8x [250]; reconnects never give up */
    unsigned int publish_timeout_ms; /**< wait for the broker's acknowledgement of a publish;
                                          a timeout leaves the outbox row for the next relay
                                          [5000] */
    unsigned int max_deliver;   /**< MaxDeliver of each consumer [11]: keep it above
                                     rag_options::max_attempts (8 by default), so that ragcore
                                     dead-letters a message before the broker stops
                                     redelivering it */
    unsigned int ack_wait_ms;   /**< AckWait of each consumer, the lease of a delivered
                                     message [30000]; long batches extend it (InProgress) */
    unsigned int duplicate_window_ms; /**< the streams' Nats-Msg-Id de-duplication window
                                           [120000]; consumers de-duplicate beyond it */
    int memory_storage;         /**< 1: streams in memory (tests) [0: file] */
} rag_queue_nats_options;

/** Static initialiser of ::rag_queue_nats_options: current version, every field default. */
#define RAG_QUEUE_NATS_OPTIONS_INIT \
    {RAG_QUEUE_NATS_OPTIONS_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, 0u, 0u, 0u, 0u, 0u, 0u, 0}

/**
 * A transport on NATS JetStream: one work-queue stream per event type, one durable pull
 * consumer per stream shared by every process consuming that event (they split the work),
 * explicit acks.  `publish` sets `Nats-Msg-Id` to the outbox message id and returns only
 * once the broker acknowledged every message (the outbox keeps its rows until then);
 * consumers ack (`AckSync`) after their LMDB commit, nak with the capped full-jitter backoff
 * (`NakWithDelay`), extend leases of long batches (`InProgress`) and `Term` what they
 * dead-lettered.  Streams and consumers are created when missing.  While the broker is
 * unreachable, `publish` and `fetch` fail with ::RAG_ETRANSIENT (producers keep committing to
 * their outbox; `rag status` shows the backlog) and the connection is re-established in the
 * background.
 *
 * The connection is made here; the struct is filled for rag_options::transport (rag_open
 * copies it and owns its state).
 * @return ::RAG_OK; ::RAG_EINVAL bad options; ::RAG_EUNSUPPORTED when ragcore was built
 *         without libnats; ::RAG_ETRANSIENT when no server answered within the connect
 *         timeout; ::RAG_ENOMEM.
 */
RAG_API int rag_queue_nats_new(rag_queue_transport *out, const rag_queue_nats_options *opts);

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_TRANSPORTS_H */
