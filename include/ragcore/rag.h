/**
 * @file ragcore/rag.h
 * @brief The ragcore handle: open a root, put and delete documents, search, assemble prompts.
 *
 * Threading: one ::rag_ctx may be used from several threads at once for rag_doc_put(),
 * rag_doc_delete(), rag_search(), rag_assemble() and rag_status(); rag_open(), rag_close(),
 * rag_start() and rag_stop() must not race with any other call on the same handle.
 *
 * Processes: a root directory is used by one process at a time (rag_open() takes an
 * exclusive lock and fails with ::RAG_EBUSY otherwise).  Never use a handle in a child
 * created by fork(); fork, then exec, then rag_open().
 */
#ifndef RAGCORE_RAG_H
#define RAGCORE_RAG_H

#include <stddef.h>
#include <stdint.h>

#include "ragcore/common.h"
#include "ragcore/sys/embed_provider.h"
#include "ragcore/sys/queue_transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque handle on one root directory. */
typedef struct rag_ctx rag_ctx;

/** Version of ::rag_options this header describes (fields are only ever appended). */
#define RAG_OPTIONS_VERSION 5u

/** @name Modules a handle hosts (rag_options::modules)
 * A process may host a subset of the pipeline when the modules talk through a shared
 * transport (NATS JetStream, ragcore/transports.h): typically one primary with ingest, index
 * and retrieve, and embed workers elsewhere.  Ingest and index go together (fsck, session
 * reads and retrieve read both in-process); retrieve needs them both; embed may stand alone.
 * @{ */
/** The ingest module (documents, versions, sagas). */
#define RAG_HOST_INGEST 0x1u
/** The embed module (provider calls, vector cache). */
#define RAG_HOST_EMBED 0x2u
/** The index module (vectors, lexical index, FAISS). */
#define RAG_HOST_INDEX 0x4u
/** The retrieve module (searches, result cache). */
#define RAG_HOST_RETRIEVE 0x8u
/** Every module (the embedded default). */
#define RAG_HOST_ALL (RAG_HOST_INGEST | RAG_HOST_EMBED | RAG_HOST_INDEX | RAG_HOST_RETRIEVE)
/** @} */

/** Longest document id in bytes (excluding NUL). */
#define RAG_DOC_ID_MAX 256

/**
 * Options for rag_open().  Initialise with rag_options_init() (or ::RAG_OPTIONS_INIT) and
 * change only what you need: a zero field means "the default" shown in brackets.
 */
typedef struct rag_options {
    unsigned int version;          /**< ::RAG_OPTIONS_VERSION */
    /** Embedding provider.  NULL: the built-in cpu provider in `embed_mode`.  rag_open()
     *  copies the struct and owns `state` from then on (see embed_provider.h). */
    rag_embed_provider *provider;
    const char *embed_mode;        /**< built-in provider mode: "hash" ["hash"] */
    unsigned int embed_dim;        /**< built-in provider dimension [384], 8..4096 */
    const char *index_factory;     /**< FAISS factory string ["IDMap2,Flat"], inner product */
    size_t chunk_target;           /**< target chunk size in bytes [800] */
    size_t chunk_min;              /**< smallest chunk unless the text is shorter [200] */
    size_t chunk_max;              /**< hard upper bound of a chunk [1600] */
    size_t chunk_overlap;          /**< bytes of the previous chunk repeated at the start [0] */
    size_t max_doc_bytes;          /**< largest accepted document [64 MiB]; else ::RAG_ETOOBIG */
    size_t map_size_mb;            /**< LMDB map size per module env [4096 MiB] */
    unsigned int max_attempts;     /**< deliveries before a message is dead-lettered [8] */
    unsigned int retry_base_ms;    /**< backoff base: delay = U(0, min(cap, base*2^n)) [50] */
    unsigned int retry_cap_ms;     /**< backoff cap [5000] */
    unsigned int lease_ms;         /**< visibility timeout of a leased message [30000] */
    unsigned int batch_size;       /**< messages per consumer transaction [256] */
    int no_sync;                   /**< 1: skip fsync on commit (tests, bulk loads) [0] */
    /** Queue transport.  NULL: the embedded LMDB broker under `<root>/queue/`.  Copied, and
     *  `state` owned, as for `provider`. */
    rag_queue_transport *transport;
    /* ---- version 2 ---- */
    /** How long an idempotency key is remembered, in seconds [86400 = 24 h]. */
    unsigned int idempotency_ttl_s;
    /** A document version (or delete) not confirmed by the index within this many ms is
     *  reported by rag_fsck() as a stuck saga [600000 = 10 min]. */
    unsigned int saga_deadline_ms;
    /* ---- version 3 ---- */
    /** BM25 term-frequency saturation k1 of the lexical side [0.9]; 0: the default. */
    float bm25_k1;
    /** BM25 length normalisation b, 0..1 [0.4]; a negative value means 0. */
    float bm25_b;
    /** Weight of the lexical side in hybrid search, 0..1: score = w * lexical / max lexical
     *  + (1 - w) * vector / max vector [0.95]; 0: the default, a negative value means 0. */
    float hybrid_lexical_weight;
    /* ---- version 4 ---- */
    /** 1: when the root was built with a provider of another fingerprint (or dimension),
     *  re-embed it with this one instead of failing with ::RAG_EFINGERPRINT.  rag_open()
     *  records the new provider, drops every stored vector (they belong to the old model;
     *  queries are embedded by the new one), and sends each document's active version through
     *  embed and index again.  Until a document's vectors arrive it is found by the lexical
     *  side only; rag_drain() waits for all of them, and rag_status_info::reembed_pending
     *  counts the chunks still without a vector.  Interrupted re-embeds resume at the next
     *  rag_open().  No effect when the fingerprint matches [0]. */
    int reembed;
    /* ---- version 5 ---- */
    /** Modules this handle opens and runs (RAG_HOST_* bits) [0: RAG_HOST_ALL].  Calls that
     *  need a module the handle does not host fail with ::RAG_ESTATE (rag_doc_put without
     *  ingest, rag_search without retrieve, ...); rag_drain() waits for the whole pipeline,
     *  wherever its other modules run. */
    unsigned int modules;
} rag_options;

/** Static initialiser of ::rag_options: the current version, every other field 0 (default). */
#define RAG_OPTIONS_INIT {RAG_OPTIONS_VERSION, NULL, NULL, 0u, NULL, 0, 0, 0, 0, 0, 0, 0u, 0u, 0u, 0u, 0u, 0, NULL, 0u, 0u, 0.0f, 0.0f, 0.0f, 0, 0u}

/**
 * Fill `opts` with defaults.
 * @param[out] opts options to initialise.
 * @return ::RAG_OK, or ::RAG_EINVAL when `opts` is NULL.
 */
RAG_API int rag_options_init(rag_options *opts);

/**
 * Open (creating if needed) the root directory `root` and every module environment in it.
 * @param[out] out   new handle; free it with rag_close().
 * @param root       directory path; created when missing.
 * @param opts       options, or NULL for defaults.  Copied; strings need not outlive the call.
 * @return ::RAG_OK; ::RAG_EINVAL bad options; ::RAG_EVERSION unsupported options/vtable
 *         version or on-disk format; ::RAG_EBUSY another process holds the root;
 *         ::RAG_EFINGERPRINT the root was built with a provider of another fingerprint or
 *         dimension and rag_options::reembed is not set; ::RAG_EIO,
 *         ::RAG_ESTORAGE, ::RAG_EINDEX, ::RAG_ECORRUPT on storage failures.
 */
RAG_API int rag_open(rag_ctx **out, const char *root, const rag_options *opts);

/**
 * Stop workers (if started), flush, and free the handle.  Pending queue messages stay
 * durable in the root and are processed after the next open.
 * @param ctx may be NULL.
 */
RAG_API void rag_close(rag_ctx *ctx);

/**
 * Start the module workers on background threads (one per consuming module).  Without it,
 * nothing moves until rag_drain() pumps the queues on the calling thread.
 * @return ::RAG_OK; ::RAG_ESTATE if already started; ::RAG_ERROR if a thread cannot start.
 */
RAG_API int rag_start(rag_ctx *ctx);

/** Stop the background workers started by rag_start().  Idempotent. */
RAG_API int rag_stop(rag_ctx *ctx);

/**
 * Wait until every outbox and every queue is empty, i.e. every accepted document is
 * searchable (or dead-lettered).  When the workers are not started, the calling thread
 * does the work itself.
 * @param timeout_ms upper bound of the wait; 0 waits without limit.
 * @return ::RAG_OK; ::RAG_ETIMEOUT when work remains after `timeout_ms`.
 */
RAG_API int rag_drain(rag_ctx *ctx, uint32_t timeout_ms);

/** Flags of ::rag_doc. */
#define RAG_PUT_REPAIR_UTF8 0x1u /**< replace invalid UTF-8 with U+FFFD instead of failing */

/** A document to put.  All pointers are borrowed for the duration of the call. */
typedef struct rag_doc {
    const char *id;              /**< document id, 1..::RAG_DOC_ID_MAX bytes, UTF-8 */
    const void *data;            /**< content bytes */
    size_t size;                 /**< content length */
    const char *mime;            /**< "text/plain", "text/markdown", "text/html"; NULL: detect */
    const char *title;           /**< NULL: taken from the content (the HTML `title`, else the
                                      first heading) */
    const char *uri;             /**< source location shown in citations; NULL: none */
    const char *const *acl;      /**< principals allowed to read; NULL/0: public */
    size_t acl_count;            /**< number of entries in `acl` */
    const char *idempotency_key; /**< optional; same key + same bytes returns the first result */
    unsigned int flags;          /**< RAG_PUT_* */
} rag_doc;

/**
 * Store a new version of a document and queue it for embedding and indexing.  Durable when
 * it returns; searchable after the pipeline ran (see rag_drain()).
 * @param[out] version_out new version number (1 for a new document); may be NULL.
 * @return ::RAG_OK; ::RAG_EINVAL bad id/arguments; ::RAG_EUTF8 (detail names the byte offset);
 *         ::RAG_EPARSE; ::RAG_ETOOBIG; ::RAG_EEMPTY no text; ::RAG_EUNSUPPORTED unknown MIME;
 *         ::RAG_EIDEMPOTENCY key reused with other bytes; ::RAG_ESTORAGE, ::RAG_EMAPFULL.
 */
RAG_API int rag_doc_put(rag_ctx *ctx, const rag_doc *doc, uint64_t *version_out);

/** Per-document outcome of rag_doc_put_batch(). */
typedef struct rag_put_result {
    int code;         /**< as rag_doc_put() */
    uint64_t version; /**< new version when code == RAG_OK */
} rag_put_result;

/**
 * Put `n` documents in one durable transaction (much faster than `n` rag_doc_put() calls).
 * Documents that fail (parse, UTF-8, size) are reported in `results` and skipped; the others
 * are stored.
 * @param[out] results `n` entries, required.
 * @return ::RAG_OK when the transaction committed (check each result); otherwise nothing was
 *         stored and the code says why.
 */
RAG_API int rag_doc_put_batch(rag_ctx *ctx, const rag_doc *docs, size_t n,
                              rag_put_result *results);

/**
 * Delete a document: invisible to searches at once, purged from every module asynchronously.
 * @return ::RAG_OK; ::RAG_ENOTFOUND when no live document has this id.
 */
RAG_API int rag_doc_delete(rag_ctx *ctx, const char *doc_id);

/** Search modes. */
typedef enum rag_search_mode {
    RAG_MODE_DEFAULT = 0, /**< hybrid */
    RAG_MODE_VECTOR = 1,  /**< dense vectors only */
    RAG_MODE_LEXICAL = 2, /**< BM25 only */
    RAG_MODE_HYBRID = 3   /**< convex combination of both (see rag_options.hybrid_lexical_weight) */
} rag_search_mode;

/** Read consistency of a search. */
typedef enum rag_consistency {
    /** Search what the index has applied now [default]. */
    RAG_CONSISTENCY_EVENTUAL = 0,
    /** First wait (up to the query's `timeout_ms`) until the index has applied every put and
     *  delete made through this handle before the call, so a caller reads its own writes.
     *  A version that failed for good (e.g. ::RAG_EPROVIDER, its saga compensated) is not
     *  waited for: the previous version is what the search then returns.  Someone must be
     *  moving the pipeline: rag_start() workers, or rag_drain() on another thread; otherwise
     *  the wait ends in ::RAG_ETIMEOUT (call rag_drain() first when running without
     *  workers). */
    RAG_CONSISTENCY_SESSION = 1
} rag_consistency;

/** Version of ::rag_query this header describes. */
#define RAG_QUERY_VERSION 2u

/** A query.  Initialise with ::RAG_QUERY_INIT. */
typedef struct rag_query {
    unsigned int version;              /**< ::RAG_QUERY_VERSION */
    const char *text;                  /**< query text (UTF-8) */
    size_t k;                          /**< results wanted [10], at most 1000 */
    const char *const *principals;     /**< caller's principals (user and groups) */
    size_t principal_count;            /**< number of entries in `principals` */
    /** 1: ignore ACLs (operator access).  0: public documents plus those readable by
     *  `principals`. */
    int unrestricted;
    rag_search_mode mode;              /**< vector, lexical or hybrid [::RAG_MODE_DEFAULT: hybrid] */
    /* ---- version 2 ---- */
    rag_consistency consistency;       /**< [::RAG_CONSISTENCY_EVENTUAL] */
    /** Bound of the session wait in ms [5000]; ::RAG_ETIMEOUT when it runs out.  Unused for
     *  ::RAG_CONSISTENCY_EVENTUAL. */
    uint32_t timeout_ms;
} rag_query;

/** Static initialiser of ::rag_query: k 10, hybrid, eventual consistency. */
#define RAG_QUERY_INIT {RAG_QUERY_VERSION, NULL, 10, NULL, 0, 0, RAG_MODE_DEFAULT, RAG_CONSISTENCY_EVENTUAL, 0u}

/** One hit.  Strings are owned by the enclosing ::rag_results. */
typedef struct rag_result {
    const char *doc_id; /**< the document's id */
    uint64_t version;   /**< the document version the chunk belongs to */
    uint32_t chunk;     /**< chunk number within the version, from 0 */
    float score;        /**< higher is better */
    const char *text;   /**< the chunk's text (NFC) */
    const char *title;  /**< document title ("" when none) */
    const char *uri;    /**< document uri ("" when none) */
} rag_result;

/** Results of rag_search(), best first; free with rag_results_free(). */
typedef struct rag_results {
    size_t count;       /**< hits in `items` (at most the query's k) */
    rag_result *items;  /**< the hits */
} rag_results;

/**
 * Search.  Hybrid by default: BM25 and vector candidates, each side's scores divided by its
 * best, combined as w * lexical + (1 - w) * vector (w = rag_options.hybrid_lexical_weight);
 * scores of RAG_MODE_LEXICAL are raw BM25, of RAG_MODE_VECTOR inner products.
 * Version-1 queries (no `consistency` field) are eventual.
 * @param[out] out results, best first; free with rag_results_free().
 * @return ::RAG_OK (possibly 0 results); ::RAG_EINVAL; ::RAG_EUNSUPPORTED mode not in this
 *         build; ::RAG_ETIMEOUT a session wait ran out (detail names a pending document);
 *         ::RAG_EPROVIDER; ::RAG_EINDEX; ::RAG_ESTORAGE.
 */
RAG_API int rag_search(rag_ctx *ctx, const rag_query *query, rag_results **out);

/** Free search results.  NULL is allowed. */
RAG_API void rag_results_free(rag_results *results);

/** Output formats of rag_assemble(). */
typedef enum rag_prompt_format {
    RAG_PROMPT_TEXT = 0, /**< plain text */
    RAG_PROMPT_JSON = 1  /**< JSON array of chat messages [{"role":..,"content":..}, ...] */
} rag_prompt_format;

/** Version of ::rag_assemble_opts this header describes. */
#define RAG_ASSEMBLE_VERSION 2u

/** A token counter for rag_assemble(): tokens of `len` bytes of UTF-8 at `text`. */
typedef size_t (*rag_token_counter)(void *arg, const char *text, size_t len);

/** Options of rag_assemble(); initialise with ::RAG_ASSEMBLE_INIT. */
typedef struct rag_assemble_opts {
    unsigned int version;        /**< ::RAG_ASSEMBLE_VERSION */
    const char *question;        /**< the user's question */
    size_t token_budget;         /**< upper bound of the prompt's tokens [2048] */
    /** Template with `{question}` and `{context}` placeholders; NULL: the built-in one. */
    const char *template_text;
    rag_prompt_format format;    /**< plain text or a JSON messages array [::RAG_PROMPT_TEXT] */
    /* ---- version 2 ---- */
    /** Token counter (e.g. the model's tokenizer); NULL: the built-in estimate, one token per
     *  4 bytes of UTF-8 rounded up.  Called many times per rag_assemble() on pieces and
     *  prefixes of the prompt (always whole UTF-8 characters); it should count a longer text
     *  no lower than its prefix. */
    rag_token_counter count_tokens;
    void *count_tokens_arg;      /**< passed as `arg` to `count_tokens` */
} rag_assemble_opts;

/** Static initialiser of ::rag_assemble_opts: budget 2048 tokens, plain text. */
#define RAG_ASSEMBLE_INIT {RAG_ASSEMBLE_VERSION, NULL, 2048, NULL, RAG_PROMPT_TEXT, NULL, NULL}

/**
 * Build a prompt from search results within a token budget, with numbered citations `[n]`
 * naming title and uri.  Tokens of the returned prompt (for ::RAG_PROMPT_JSON, of the whole
 * JSON text) are counted by `opts->count_tokens` when set, else estimated as one per 4 bytes
 * of UTF-8, rounded up; either way that count is at most the budget.
 * Retrieved text is fenced and stripped of control characters.
 * @param[out] prompt_out NUL-terminated text; free with rag_free().
 * @return ::RAG_OK; ::RAG_EINVAL; ::RAG_ETOOBIG when not even the question fits the budget.
 */
RAG_API int rag_assemble(rag_ctx *ctx, const rag_results *results, const rag_assemble_opts *opts,
                         char **prompt_out);

/** Most queues rag_status() reports (topics and outboxes). */
#define RAG_STATUS_MAX_QUEUES 16

/** Depth of one queue as reported by rag_status(). */
typedef struct rag_status_queue {
    char name[RAG_QUEUE_TOPIC_MAX]; /**< topic, or "outbox:<module>" */
    uint64_t ready;    /**< messages visible now */
    uint64_t delayed;  /**< messages waiting for a retry backoff */
    uint64_t inflight; /**< messages delivered and not yet acknowledged */
} rag_status_queue;

/** Version of ::rag_status_info this header describes. */
#define RAG_STATUS_VERSION 4u

/** Counts filled by rag_status(); older callers get the fields of their version only. */
typedef struct rag_status_info {
    unsigned int version;  /**< set by the caller to ::RAG_STATUS_VERSION */
    uint64_t documents;    /**< live (not deleted) documents */
    uint64_t versions;     /**< stored document versions */
    uint64_t chunks;       /**< stored chunks */
    uint64_t vectors;      /**< vectors in the index */
    uint64_t dead_letters; /**< dead-lettered messages, all modules */
    uint64_t index_epoch;  /**< increments with every index change */
    size_t queue_count;    /**< entries used in `queues` */
    rag_status_queue queues[RAG_STATUS_MAX_QUEUES]; /**< every topic, then every outbox */
    /* ---- version 2 (filled only when the caller set version >= 2) ---- */
    uint64_t sagas_running;     /**< versions/deletes on their way through the pipeline */
    uint64_t sagas_failed;      /**< documents whose newest version failed and was compensated
                                     (an older version, if any, stays searchable) */
    uint64_t sagas_compensating;/**< failed versions whose compensation has not finished */
    /* ---- version 3 (filled only when the caller set version >= 3) ---- */
    uint64_t cache_hits;        /**< searches answered from the result cache (earlier handles' counts
                                     are added at rag_close(); lost with the cache after a crash) */
    uint64_t cache_misses;      /**< searches that ran against the index (counted the same way) */
    /* ---- version 4 (filled only when the caller set version >= 4) ---- */
    uint64_t model_generation;  /**< provider changes this root has been re-embedded for (0: none) */
    uint64_t reembed_pending;   /**< live chunks whose vector of the current model has not
                                     arrived yet (0 once a re-embed has drained) */
    char provider_fingerprint[128]; /**< fingerprint of the provider the root is built with */
} rag_status_info;

/**
 * Counts of documents, versions, chunks, vectors, queue depths and dead letters.
 * @param[in,out] out `version` set by the caller; filled on success.
 */
RAG_API int rag_status(rag_ctx *ctx, rag_status_info *out);

/**
 * @name Backup and restore
 * @{
 */

/**
 * Copy the root of an open handle into `dest_dir` while it keeps running: each hosted
 * module's LMDB environment (and the embedded broker's) with LMDB's consistent, compacting
 * copy, plus the root's FORMAT file.  The retrieve cache and the FAISS snapshot are not
 * copied: both are rebuilt from the copied tables.  Each environment is consistent in itself;
 * the modules are copied one after the other, so work that moved between them during the
 * backup is reconciled by rag_restore() (which drains and runs a repairing rag_fsck()).
 * @param dest_dir  a directory that does not exist yet or is empty; created (mode 0700).
 * @return ::RAG_OK; ::RAG_EEXISTS `dest_dir` is not empty; ::RAG_EIO; ::RAG_ESTORAGE.
 */
RAG_API int rag_backup(rag_ctx *ctx, const char *dest_dir);

/**
 * Restore a backup made by rag_backup() into `root`, which must not exist or be empty: copy
 * the files, open the root with `opts` (the provider must be the backup's), drain, and run
 * rag_fsck() with ::RAG_FSCK_REPAIR so that work caught between modules during the backup is
 * redone.  The root is closed again before returning.
 * @param[out] findings  if not NULL: number of inconsistencies found and repaired.
 * @return ::RAG_OK; ::RAG_EEXISTS `root` is not empty; ::RAG_ENOTFOUND `backup_dir` holds no
 *         backup; the codes of rag_open(), rag_drain() and rag_fsck().
 */
RAG_API int rag_restore(const char *backup_dir, const char *root, const rag_options *opts,
                        size_t *findings);

/**@}*/

/**
 * @name Dead letters
 * A message that failed permanently (e.g. the provider rejected a text with ::RAG_EPROVIDER),
 * or transiently on every one of `max_attempts` deliveries, is parked in the dead-letter table
 * of the module that consumed it, and rag_drain() no longer waits for it.  These calls list
 * the dead letters of every module, put one back into the pipeline, or discard it.
 * Like rag_status(), they may be called while workers run.
 */
/**@{*/

/** One dead letter as reported by rag_dlq_list(). */
typedef struct rag_dead_letter_info {
    char id[64];       /**< message id (unique across roots); pass it to retry/drop */
    char topic[32];    /**< the event, e.g. "doc.chunked" */
    char module[16];   /**< the module that consumed it and gave up, e.g. "embed" */
    int code;          /**< the failure's status code (RAG_E*) */
    uint32_t attempts; /**< deliveries made before it was dead-lettered */
    uint64_t when_ms;  /**< wall-clock time of dead-lettering, ms since the Unix epoch */
    char reason[256];  /**< detail text of the last failure (rag_error_last() of the handler) */
    char doc_id[RAG_DOC_ID_MAX + 1]; /**< document the message is about ("" if unreadable) */
    uint64_t version;  /**< its version (for doc.deleted: the newest version deleted) */
} rag_dead_letter_info;

/**
 * List the dead letters of every module (per module in id order).
 * @param[out] out   array of `*count` entries, NULL when there are none; free it with
 *                   rag_free().  It copies everything: it stays valid after later calls.
 * @param[out] count number of entries.
 * @return ::RAG_OK; ::RAG_EINVAL a NULL argument; ::RAG_ENOMEM; ::RAG_ESTORAGE,
 *         ::RAG_ECORRUPT when a module's dead-letter table cannot be read.
 */
RAG_API int rag_dlq_list(rag_ctx *ctx, rag_dead_letter_info **out, size_t *count);

/**
 * Put one dead letter back into the pipeline: in one transaction of the consuming module's
 * env its payload is queued in that module's outbox under a NEW message id (the old id stays
 * in the module's inbox, so the old message can never be applied) and the dead letter is
 * deleted; the outbox is then relayed.  The message keeps its topic, so the same module
 * consumes it again; it is processed by the workers or by the next rag_drain().  Retry after
 * fixing the cause (e.g. the provider), or it is dead-lettered again under its new id.
 * @param id a message id from rag_dlq_list().
 * @return ::RAG_OK (queued; a failed relay is retried by the next drain, worker or open);
 *         ::RAG_ENOTFOUND no dead letter has this id; ::RAG_EINVAL a NULL or empty argument;
 *         ::RAG_ESTORAGE, ::RAG_EMAPFULL, ::RAG_ECORRUPT.
 */
RAG_API int rag_dlq_retry(rag_ctx *ctx, const char *id);

/**
 * Discard one dead letter for good.  Its id stays in the module's inbox, so a late
 * redelivery of the same message is still skipped.  The document it concerned keeps its
 * state (e.g. a version that never reached the index stays unsearchable; put the document
 * again to move on).
 * @param id a message id from rag_dlq_list().
 * @return ::RAG_OK; ::RAG_ENOTFOUND no dead letter has this id; ::RAG_EINVAL a NULL or empty
 *         argument; ::RAG_ESTORAGE.
 */
RAG_API int rag_dlq_drop(rag_ctx *ctx, const char *id);

/**@}*/

/**
 * @name Consistency check
 * rag_fsck() first drains the pipeline (work in flight is not an inconsistency), then checks
 * every module against the others: each index label must belong to the version ingest holds
 * active (else an *orphan vector*), each live document's latest version must be active and
 * searchable unless its saga failed (else a *phantom document*), no document may have labels
 * of two versions or two labels for one chunk (*duplicate*), no saga may be unfinished or past
 * its deadline (*stuck saga*), and no message may sit in a dead-letter table (*dead letter*).
 * With ::RAG_FSCK_REPAIR every finding is fixed through the normal event paths (ingest
 * re-emits the event that moves the document to its correct state) and the pipeline is
 * drained again; a second run then reports nothing.  Dead letters are reported, never
 * dropped: retry or drop them with rag_dlq_retry()/rag_dlq_drop().
 */
/**@{*/

#define RAG_FSCK_REPAIR 0x1u /**< fix what is found (through events), then drain */

/** Kinds of findings. */
typedef enum rag_fsck_kind {
    RAG_FSCK_ORPHAN_VECTOR = 1,   /**< index label of a version that is not active in ingest */
    RAG_FSCK_PHANTOM_DOCUMENT = 2,/**< live document whose latest version is not searchable */
    RAG_FSCK_DUPLICATE = 3,       /**< labels of two versions, or two labels for one chunk */
    RAG_FSCK_STUCK_SAGA = 4,      /**< a saga unfinished after the drain or past its deadline */
    RAG_FSCK_DEAD_LETTER = 5,     /**< a message parked in a dead-letter table */
    RAG_FSCK_INDEX_STATE = 6,     /**< index tables disagree with each other or with FAISS */
    RAG_FSCK_QUEUE = 7            /**< work still queued when the drain timed out */
} rag_fsck_kind;

/** One finding. */
typedef struct rag_fsck_issue {
    rag_fsck_kind kind;              /**< what kind of inconsistency */
    char doc_id[RAG_DOC_ID_MAX + 1]; /**< "" when the finding is not about one document */
    uint64_t version;                /**< version concerned, 0 when none */
    int64_t label;                   /**< index label concerned, -1 when none */
    int repaired;                    /**< 1: a fix was queued and the drain after it ran */
    char detail[256];                /**< human-readable description */
} rag_fsck_issue;

/** Result of rag_fsck(); free with rag_fsck_report_free(). */
typedef struct rag_fsck_report {
    size_t count;                /**< findings */
    rag_fsck_issue *issues;      /**< the findings */
    uint64_t documents_checked;  /**< ingest documents looked at */
    uint64_t labels_checked;     /**< index labels looked at */
    uint64_t sagas_checked;      /**< saga rows looked at */
    int drained;                 /**< 1: the pipeline was empty when checked */
} rag_fsck_report;

/**
 * Check (and with ::RAG_FSCK_REPAIR repair) the consistency of the root.
 * @param flags      0 or ::RAG_FSCK_REPAIR.
 * @param timeout_ms bound of each drain (0: no limit).
 * @param[out] out   report; free with rag_fsck_report_free().  `count == 0` means clean.
 * @return ::RAG_OK (check `count`); ::RAG_EINVAL; ::RAG_ESTORAGE, ::RAG_ECORRUPT when a table
 *         cannot be read.
 */
RAG_API int rag_fsck(rag_ctx *ctx, unsigned int flags, uint32_t timeout_ms,
                     rag_fsck_report **out);
/** Free a report of rag_fsck().  NULL is allowed. */
RAG_API void rag_fsck_report_free(rag_fsck_report *report);
/** "orphan_vector", "phantom_document", ... (stable names, used by `rag fsck --json`). */
RAG_API const char *rag_fsck_kind_name(rag_fsck_kind kind);

/**@}*/

/**
 * @name Trace
 * The journey of a document's last version (or of its delete) through the modules: each
 * event, the module that handled it, when, after how many delivery attempts, and with what
 * outcome; plus the saga's state and, while it is unfinished, where it waits.
 */
/**@{*/

/** One hop of a saga: an event handled by a module. */
typedef struct rag_trace_step {
    char module[16];   /**< "ingest", "embed", "index" */
    char event[32];    /**< "put", "delete", "doc.chunked", "doc.embedded", ... */
    uint64_t at_ms;    /**< wall clock, ms since the Unix epoch */
    uint32_t attempts; /**< delivery attempt that produced the outcome (1 = first try) */
    int code;          /**< ::RAG_OK or the failure's code */
} rag_trace_step;

/** The journey of a document's last version (or delete), from rag_trace(). */
typedef struct rag_trace_info {
    char doc_id[RAG_DOC_ID_MAX + 1]; /**< the document */
    uint64_t version;       /**< the version the saga is about */
    char kind[8];           /**< "put" or "delete" */
    char state[16];         /**< "running", "done", "superseded", "compensating", "failed" */
    uint64_t active_version;/**< version searches return now (0: none) */
    int deleted;            /**< 1: the document is deleted */
    uint64_t started_ms;    /**< when the saga began (ms since the Unix epoch) */
    uint64_t updated_ms;    /**< its last change */
    uint64_t deadline_ms;   /**< after this an unfinished saga is reported stuck by rag_fsck() */
    int code;               /**< failure code of a failed saga, else ::RAG_OK */
    char reason[256];       /**< failure detail, or where an unfinished saga waits */
    size_t step_count;      /**< entries in `steps` */
    rag_trace_step *steps;  /**< oldest first */
} rag_trace_info;

/**
 * @param[out] out trace; free with rag_trace_free().
 * @return ::RAG_OK; ::RAG_ENOTFOUND no saga is recorded for this id; ::RAG_EINVAL.
 */
RAG_API int rag_trace(rag_ctx *ctx, const char *doc_id, rag_trace_info **out);
/** Free a trace of rag_trace().  NULL is allowed. */
RAG_API void rag_trace_free(rag_trace_info *trace);

/**@}*/

/**
 * @name Metrics and logging
 * A Prometheus scrape text of a handle, and a process-wide structured log sink.
 */
/**@{*/

/**
 * The handle's metrics in the Prometheus text exposition format 0.0.4 (`# HELP` / `# TYPE`
 * lines, metric names `ragcore_*`, labels such as `topic="doc.chunked"`, `module="embed"`):
 * queue depth per pipeline topic and state (ready, delayed, inflight), outbox backlog and dead
 * letters per module, consumer counters per module and topic since rag_open() (messages
 * handled, retried, dead-lettered, duplicates skipped), lag per module (depth of the topic it
 * consumes), retrieve cache hits, misses and hit ratio, documents, chunks, vectors, sagas
 * running and failed, chunks waiting for a re-embed, and latency histograms in seconds of
 * rag_search() and of the embed module's provider calls.  Consumer counters and histograms
 * start at zero with each handle (the cache counts are the root's, as in rag_status()).  Only the modules this handle hosts are reported (as rag_status()).
 * May be called while workers run.
 * @param[out] out NUL-terminated text; free with rag_free().
 * @return ::RAG_OK; ::RAG_EINVAL a NULL argument; ::RAG_ENOMEM; the codes of rag_status().
 */
RAG_API int rag_metrics_text(rag_ctx *ctx, char **out);

/** @name Log levels (rag_log_set())
 * @{ */
#define RAG_LOG_ERROR 1 /**< a call or a worker failed */
#define RAG_LOG_WARN 2  /**< something an operator should look at (dead letter, relay failure) */
#define RAG_LOG_INFO 3  /**< lifecycle (open, close, re-embed, fsck repairs) */
#define RAG_LOG_DEBUG 4 /**< per-message detail (retries) */
/** @} */

/**
 * A log sink.  `module` is the emitting part ("core", "queue", "embed", "ingest", "index"
 * or the consumer's module), `event` a stable snake_case name ("dead_letter", "retry",
 * "open", ...), `message` a human-readable detail.  The strings are valid during the call
 * only.  Messages never contain document text or provider secrets.
 */
typedef void (*rag_log_fn)(void *user, int level, const char *module, const char *event,
                           const char *message);

/**
 * Install the process-wide log sink (like curl's global callbacks, it serves every handle).
 * Events with a level above `max_level` are dropped before any message is built.
 * Thread-safe: the callback may be called from worker threads, concurrently from several
 * threads, and from inside any ragcore call; it must not call back into ragcore (neither the
 * same handle nor rag_log_set()).  When rag_log_set() returns, no call of the previous sink
 * is still running, so its `user` may be freed.
 * @param fn        the sink; NULL silences logging (the default).
 * @param user      passed to every call of `fn`.
 * @param max_level most verbose level delivered (::RAG_LOG_ERROR .. ::RAG_LOG_DEBUG).
 * @return ::RAG_OK; ::RAG_EINVAL `fn` is set and `max_level` is not a level.
 */
RAG_API int rag_log_set(rag_log_fn fn, void *user, int max_level);

/**@}*/

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_RAG_H */
