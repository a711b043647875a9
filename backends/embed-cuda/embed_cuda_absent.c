/*
 * The CUDA provider's entry points in a build without CUDA (-DRAG_WITH_CUDA=off, `auto`
 * without a toolkit, sanitizer builds): they exist so that hosts link against one API
 * whatever the build, and report that the provider is not available.
 */
#include <stddef.h>

#include "ragcore/sys/embed_cuda.h"
#include "rag_common.h"

int rag_embed_cuda_init(rag_embed_provider *out, rag_embed_provider *source,
                        const rag_embed_cuda_options *opts)
{
    (void)out;
    (void)source;
    (void)opts;
    return rag_error_set(RAG_EUNSUPPORTED,
                         "CUDA embedding provider: built without CUDA (-DRAG_WITH_CUDA)");
}

int rag_embed_cuda_stats_get(const rag_embed_provider *provider, rag_embed_cuda_stats *out)
{
    (void)provider;
    (void)out;
    /* No provider can have come from rag_embed_cuda_init() in this build. */
    return rag_error_set(RAG_EINVAL, "not a CUDA embedding provider (built without CUDA)");
}

int rag_embed_cuda_device_count(void) { return 0; }

/* The benchmark's hook (see embed_cuda.cu). */
__attribute__((visibility("hidden"))) int
rag_embed_cuda__bench(const rag_embed_provider *provider, const char *const *texts,
                      const size_t *lens, size_t n, unsigned int reps, double *kernel_s,
                      double *pipeline_s);

int rag_embed_cuda__bench(const rag_embed_provider *provider, const char *const *texts,
                          const size_t *lens, size_t n, unsigned int reps, double *kernel_s,
                          double *pipeline_s)
{
    (void)provider;
    (void)texts;
    (void)lens;
    (void)n;
    (void)reps;
    (void)kernel_s;
    (void)pipeline_s;
    return RAG_EUNSUPPORTED;
}
