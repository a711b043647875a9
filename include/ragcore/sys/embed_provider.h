/**
 * @file ragcore/sys/embed_provider.h
 * @brief The embedding provider vtable: how a host swaps the model that turns text into vectors.
 *
 * This header depends on nothing but the C standard library, so a provider (for example a
 * CUDA kernel) can be built and tested on a machine that has none of ragcore's other
 * dependencies.
 *
 * Versioning: `version` comes first.  Initialise a provider with ::RAG_EMBED_PROVIDER_INIT or
 * rag_embed_provider_init(); ragcore rejects version 0 and versions newer than it knows with
 * RAG_EVERSION (-16).  Slots are only ever appended; a provider built against an older header
 * keeps working because ragcore never reads slots beyond the provider's `version`.
 *
 * Ownership: rag_open() copies the struct itself (the host may reuse or free its memory once
 * rag_open() returns) and takes ownership of `state`: ragcore calls `free(state)` (if set)
 * exactly once when the handle closes, also when rag_open() fails.
 *
 * Thread-safety: `embed` may be called from several ragcore threads at once (the embed worker
 * and query threads) unless `flags` contains ::RAG_EMBED_SINGLE_THREADED, in which case ragcore
 * serialises calls.
 */
#ifndef RAGCORE_SYS_EMBED_PROVIDER_H
#define RAGCORE_SYS_EMBED_PROVIDER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Current provider vtable version (number of the newest slot set). */
#define RAG_EMBED_PROVIDER_VERSION 1u

/** Provider flag: calls to `embed` must not overlap; ragcore takes a lock around them. */
#define RAG_EMBED_SINGLE_THREADED 0x1u

/** Largest fingerprint, including the terminating NUL. */
#define RAG_EMBED_FINGERPRINT_MAX 128

/**
 * Embedding provider vtable (version 1).
 *
 * Required slots: `embed`, `dim` (>0), `fingerprint`.  Optional: `free`, `state`, `flags`,
 * `max_batch`.
 */
typedef struct rag_embed_provider {
    /** Must be ::RAG_EMBED_PROVIDER_VERSION (or an older supported version). */
    unsigned int version;
    /** Opaque provider state passed back to every slot. */
    void *state;
    /** Required: vector dimension; constant for the provider's lifetime. */
    unsigned int dim;
    /** Optional: ::RAG_EMBED_SINGLE_THREADED and future flags; 0 if unused. */
    unsigned int flags;
    /** Optional: largest `n` the provider accepts per call; 0 = no limit. ragcore splits batches. */
    size_t max_batch;
    /**
     * Required: embed `n` texts.
     * @param state      the provider's `state`.
     * @param texts      `n` UTF-8 strings (NFC), each `lens[i]` bytes, not NUL-terminated;
     *                   borrowed for the duration of the call.
     * @param lens       byte lengths of `texts`.
     * @param n          number of texts (>= 1).
     * @param[out] out   `n * dim` floats owned by ragcore; write row i at `out + i*dim`.
     *                   Vectors are compared by inner product, so return L2-normalised rows
     *                   for cosine similarity.
     * @return 0 on success; RAG_ETRANSIENT (-18) for a failure worth retrying (timeout, 429,
     *         5xx); RAG_EPROVIDER (-15) or RAG_EINVAL (-3) when these inputs can never be
     *         embedded (ragcore dead-letters the document instead of retrying).
     */
    int (*embed)(void *state, const char *const *texts, const size_t *lens, size_t n,
                 float *out);
    /**
     * Required: write a NUL-terminated fingerprint of the model into `buf` (at most
     * ::RAG_EMBED_FINGERPRINT_MAX bytes including NUL).  Two providers with the same
     * fingerprint must produce identical vectors for identical text: the embed cache and the
     * root's recorded provider are keyed by it.  Include model name, dimension and every
     * parameter that changes the output.
     * @return 0 on success.
     */
    int (*fingerprint)(void *state, char *buf, size_t buf_size);
    /** Optional: release `state`.  Called once by ragcore when the owning handle closes. */
    void (*free)(void *state);
} rag_embed_provider;

/** Static initialiser: `rag_embed_provider p = RAG_EMBED_PROVIDER_INIT;` */
#define RAG_EMBED_PROVIDER_INIT {RAG_EMBED_PROVIDER_VERSION, NULL, 0u, 0u, 0u, NULL, NULL, NULL}

/**
 * Zero a provider struct and set its version.
 * @param p        provider to initialise (not NULL).
 * @param version  ::RAG_EMBED_PROVIDER_VERSION.
 * @return 0, or -3 (RAG_EINVAL) for a NULL pointer or unknown version.
 */
static inline int rag_embed_provider_init(rag_embed_provider *p, unsigned int version)
{
    if (!p || version == 0 || version > RAG_EMBED_PROVIDER_VERSION)
        return -3;
    {
        rag_embed_provider z = RAG_EMBED_PROVIDER_INIT;
        *p = z;
    }
    p->version = version;
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_SYS_EMBED_PROVIDER_H */
