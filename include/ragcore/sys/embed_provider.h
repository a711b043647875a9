/**
 * @file ragcore/sys/embed_provider.h
 * @brief The embedding provider vtable: how a host swaps the model that turns text into vectors.
 *
 * This header depends on nothing but the C standard library, so a provider (for example the
 * CUDA kernels in `backends/embed-cuda/`) can be built and tested on a machine that has none
 * of ragcore's other dependencies.  `examples/host_provider/` implements one in a host
 * program and registers it.
 *
 * **Versioning.** `version` comes first.  Initialise a provider with ::RAG_EMBED_PROVIDER_INIT
 * or rag_embed_provider_init(); ragcore rejects version 0 and versions newer than it knows with
 * RAG_EVERSION (-16).  Slots are only ever appended; ragcore copies and reads only the slots
 * of the provider's own `version` (a version-1 struct is never read past `free`), so a
 * provider built against an older header keeps working.
 *
 * **Required and optional slots.** Required: `embed`, `fingerprint`, `dim` (1..65536).
 * Optional (0/NULL when unused): `state`, `flags`, `max_batch`, `free`, and in version 2
 * `bag`.
 *
 * **Ownership.** rag_open() copies the struct itself (the host may reuse or free its memory
 * once rag_open() returns) and takes ownership of `state`: ragcore calls `free(state)` (if
 * set) exactly once when the handle closes, also when rag_open() fails.  Buffers passed to
 * `embed` are borrowed for the call only: `texts`/`lens` belong to ragcore and stay valid
 * until the call returns; `out` is ragcore's, the provider writes every row of it.
 *
 * **Thread-safety.** `embed` may be called from several ragcore threads at once (the embed
 * worker and query threads embedding their query) unless `flags` contains
 * ::RAG_EMBED_SINGLE_THREADED, in which case ragcore serialises calls.  `fingerprint` may be
 * called at any time from any thread.
 *
 * **Batching.** ragcore passes all the new chunks of a document (after its vector cache) in
 * one call, and one text per query.  A provider that cannot take more than some number of
 * texts per call sets `max_batch`; ragcore then splits larger batches into calls of at most
 * that many.  A provider may split further internally (the remote provider sends requests of
 * its own batch size).
 *
 * **Errors.** `embed` returns 0, ::RAG_EMBED_ETRANSIENT for a failure worth retrying (ragcore
 * retries the message later with capped, jittered backoff) or ::RAG_EMBED_EPROVIDER /
 * ::RAG_EMBED_EINVAL when these inputs can never be embedded (ragcore dead-letters the
 * message at once and the update's saga compensates: the previous version stays active).
 * The values equal ragcore's RAG_E* codes of the same name (ragcore/common.h).
 *
 * **Fingerprint.** A string naming the model and every parameter that changes its output.
 * It keys the embed module's vector cache, and the root records the fingerprint and `dim` it
 * was built with: rag_open() with a provider of another fingerprint fails with
 * RAG_EFINGERPRINT (-20) unless rag_options::reembed asks for a re-embed, which re-embeds
 * every document through the normal event path.  Two providers may share a fingerprint only
 * if they return the same vectors for the same text (the CUDA provider shares the CPU
 * provider's, equal within 1e-5), which lets a host move a root between them freely.
 */
#ifndef RAGCORE_SYS_EMBED_PROVIDER_H
#define RAGCORE_SYS_EMBED_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Current provider vtable version (number of the newest slot set). */
#define RAG_EMBED_PROVIDER_VERSION 2u

/** Return codes a provider uses; equal to ragcore's RAG_E* codes of the same name. */
#define RAG_EMBED_OK 0
#define RAG_EMBED_ENOMEM (-2)           /**< out of memory (RAG_ENOMEM) */
#define RAG_EMBED_EINVAL (-3)           /**< invalid argument or input (RAG_EINVAL) */
#define RAG_EMBED_ETOOBIG (-11)         /**< a buffer or input is too large (RAG_ETOOBIG) */
#define RAG_EMBED_EUNSUPPORTED (-12)    /**< not supported by this provider or build (RAG_EUNSUPPORTED) */
#define RAG_EMBED_EPROVIDER (-15)       /**< permanent failure: never retried (RAG_EPROVIDER) */
#define RAG_EMBED_ETRANSIENT (-18)      /**< temporary failure: retried later (RAG_ETRANSIENT) */

/** Provider flag: calls to `embed` must not overlap; ragcore takes a lock around them. */
#define RAG_EMBED_SINGLE_THREADED 0x1u

/** Largest fingerprint, including the terminating NUL. */
#define RAG_EMBED_FINGERPRINT_MAX 128

/** rag_embed_bag::kind: vector[d] = sum of sign * weight over the terms whose bucket is d
 *  (`index` holds the bucket, the sign is folded into `weight`). */
#define RAG_EMBED_BAG_HASH 1u
/** rag_embed_bag::kind: vector = sum over the terms of weight * rows[index]. */
#define RAG_EMBED_BAG_TABLE 2u

/**
 * An embedding-bag model, described so that another engine (a GPU) can compute the same
 * vectors: text -> terms (on the host, by `featurize`) -> weighted sum of one-hot buckets or
 * table rows -> L2 normalisation (a zero sum stays the zero vector).  Reference arithmetic:
 * sums and the norm in double precision, the result rounded to float.
 *
 * Filled by a provider's version-2 `bag` slot; everything it points to is owned by the
 * provider and valid while the provider's state lives.
 */
typedef struct rag_embed_bag {
    unsigned int kind;  /**< ::RAG_EMBED_BAG_HASH or ::RAG_EMBED_BAG_TABLE */
    unsigned int dim;   /**< output dimension (the provider's `dim`) */
    const float *rows;  /**< TABLE: `n_rows * dim` floats, row-major; HASH: NULL */
    size_t n_rows;      /**< TABLE: rows in `rows`; every `index` is below it */
    /** Passed back to `featurize`. */
    void *featurize_state;
    /**
     * Turn `n` texts into terms: text i owns the entries of `index` from `offsets[i]` up to
     * (excluding) `offsets[i+1]`, and the same range of `weight` (`offsets[0]` = 0).  Thread-safe: several threads may featurize
     * disjoint batches at once.
     * @param cap      capacity of `index` and `weight`, in terms.
     * @param offsets  `n + 1` entries, written on success.
     * @param needed   on ::RAG_EMBED_ETOOBIG: the capacity that suffices; the caller grows
     *                 its buffers and calls again.
     * @return 0; ::RAG_EMBED_ETOOBIG when `cap` is too small; ::RAG_EMBED_ENOMEM.
     */
    int (*featurize)(void *featurize_state, const char *const *texts, const size_t *lens,
                     size_t n, uint32_t *index, float *weight, size_t cap, size_t *offsets,
                     size_t *needed);
} rag_embed_bag;

/**
 * Embedding provider vtable (version 2).
 *
 * Required slots: `embed`, `dim` (1..65536), `fingerprint`.  Optional: `state`, `flags`,
 * `max_batch`, `free`; version 2 adds the optional `bag`.
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
     * @return 0 on success; ::RAG_EMBED_ETRANSIENT for a failure worth retrying (timeout,
     *         429, 5xx); ::RAG_EMBED_EPROVIDER or ::RAG_EMBED_EINVAL when these inputs can
     *         never be embedded (ragcore dead-letters the document instead of retrying).
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
    /* ---- version 2 ---- */
    /**
     * Optional: describe the model as an embedding bag (see ::rag_embed_bag) so that an
     * accelerator can compute the same vectors; the built-in cpu provider implements it and
     * rag_embed_cuda_init() consumes it.
     * @return 0, or ::RAG_EMBED_EUNSUPPORTED when the model is not an embedding bag.
     */
    int (*bag)(void *state, rag_embed_bag *out);
} rag_embed_provider;

/** Static initialiser: `rag_embed_provider p = RAG_EMBED_PROVIDER_INIT;` */
#define RAG_EMBED_PROVIDER_INIT {RAG_EMBED_PROVIDER_VERSION, NULL, 0u, 0u, 0u, NULL, NULL, NULL, NULL}

/** Bytes of a provider struct of `version` (the slots that version has). */
static inline size_t rag_embed_provider_size(unsigned int version)
{
    return version >= 2 ? sizeof(rag_embed_provider)
                        : offsetof(rag_embed_provider, free) + sizeof(void (*)(void *));
}

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
