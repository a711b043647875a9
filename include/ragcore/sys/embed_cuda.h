/**
 * @file ragcore/sys/embed_cuda.h
 * @brief The CUDA embedding provider: the built-in cpu provider's model as CUDA kernels.
 *
 * Like embed_provider.h this header needs nothing but the C standard library; the provider
 * (`backends/embed-cuda/embed_cuda.cu`) is built from it and the CUDA runtime alone, so its
 * parity test and benchmark build on a GPU machine without ragcore's other dependencies.
 *
 * The provider wraps a *source* provider that describes itself as an embedding bag (the
 * version-2 `bag` slot; the built-in cpu provider in `hash` and `table` mode does):
 *  - the host featurizes texts with the source's `featurize`, on several threads, into
 *    pinned (page-locked) buffers;
 *  - each batch's terms (and, once, the table) are copied to the device on one of several
 *    streams, so that the copies of one batch overlap the kernel of the previous one;
 *  - an embedding-bag kernel gathers the rows (or one-hot buckets), sums them weighted, and
 *    L2-normalises, accumulating in double as the cpu provider does;
 *  - the vectors are copied back into pinned memory and then into ragcore's `out`.
 * The results equal the source's within 1e-5 (absolute, per component), so the provider
 * reports the source's fingerprint: a root moves between the cpu and cuda providers without
 * a re-embed.
 *
 * When ragcore is built without CUDA (`-DRAG_WITH_CUDA=off`, or `auto` without a toolkit)
 * rag_embed_cuda_init() exists and fails with ::RAG_EMBED_EUNSUPPORTED, as it does when no
 * CUDA device is present.
 */
#ifndef RAGCORE_SYS_EMBED_CUDA_H
#define RAGCORE_SYS_EMBED_CUDA_H

#include "ragcore/sys/embed_provider.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @def RAG_EMBED_CUDA_API
 * Symbol visibility of the CUDA provider's functions (the provider is built without
 * ragcore/common.h, so it has its own copy of ::RAG_API). */
#if defined(_WIN32)
#define RAG_EMBED_CUDA_API
#elif defined(__GNUC__)
#define RAG_EMBED_CUDA_API __attribute__((visibility("default")))
#else
#define RAG_EMBED_CUDA_API
#endif

/** Current version of ::rag_embed_cuda_options (put it in its `version` field). */
#define RAG_EMBED_CUDA_OPTIONS_VERSION 1u

/** Options of rag_embed_cuda_init(); a zero field means the default in brackets. */
typedef struct rag_embed_cuda_options {
    unsigned int version;      /**< ::RAG_EMBED_CUDA_OPTIONS_VERSION */
    int device;                /**< CUDA device ordinal [0] */
    unsigned int streams;      /**< streams overlapping copies with compute, 1..16 [2] */
    size_t batch_texts;        /**< texts per device batch [8192] */
    unsigned int host_threads; /**< featurizing threads, 1..256 [online CPUs] */
} rag_embed_cuda_options;

/** Static initialiser of ::rag_embed_cuda_options: current version, every field default. */
#define RAG_EMBED_CUDA_OPTIONS_INIT {RAG_EMBED_CUDA_OPTIONS_VERSION, 0, 0u, 0u, 0u}

/** Where the time of the provider's calls went, summed since init (seconds). */
typedef struct rag_embed_cuda_stats {
    double featurize_s;   /**< host: texts -> terms (wall time of the threaded phase) */
    double upload_s;      /**< host -> device copies (stream events) */
    double kernel_s;      /**< embedding-bag kernel (stream events) */
    double download_s;    /**< device -> host copies (stream events) */
    double total_s;       /**< wall time inside `embed` */
    unsigned long long texts;  /**< texts embedded */
    unsigned long long terms;  /**< terms gathered */
    unsigned long long bytes_up, bytes_down; /**< bytes copied each way */
} rag_embed_cuda_stats;
/** @var rag_embed_cuda_stats::bytes_up
 *  Bytes copied host -> device (terms, weights and, once, the table). */
/** @var rag_embed_cuda_stats::bytes_down
 *  Bytes copied device -> host (the vectors). */

/**
 * Build a CUDA provider from `source`.
 * @param[out] out   provider to fill (version 2); hand it to rag_options::provider or release
 *                   it with rag_embed_provider_release().
 * @param source     a provider with a `bag` slot (e.g. from rag_embed_cpu_hash_init()).  On
 *                   success the CUDA provider takes ownership of it (its state is freed with
 *                   the CUDA provider's) and `*source` is zeroed; on failure it is untouched.
 * @param opts       options, or NULL for the defaults.
 * @return 0; ::RAG_EMBED_EUNSUPPORTED (no CUDA in this build, no device, or `source` has no
 *         bag); ::RAG_EMBED_EINVAL bad options; ::RAG_EMBED_ENOMEM (host or device memory).
 */
RAG_EMBED_CUDA_API int rag_embed_cuda_init(rag_embed_provider *out, rag_embed_provider *source,
                                           const rag_embed_cuda_options *opts);

/**
 * Time spent by a provider made by rag_embed_cuda_init() (its `state`), for benchmarks.
 * @return 0, or ::RAG_EMBED_EINVAL when `provider` is not a CUDA provider.
 */
RAG_EMBED_CUDA_API int rag_embed_cuda_stats_get(const rag_embed_provider *provider,
                                                rag_embed_cuda_stats *out);

/** Number of CUDA devices visible (0 without CUDA in this build or without a device). */
RAG_EMBED_CUDA_API int rag_embed_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_SYS_EMBED_CUDA_H */
