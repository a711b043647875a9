/**
 * @file ragcore/providers.h
 * @brief Constructors of the embedding providers built into ragcore.
 */
#ifndef RAGCORE_PROVIDERS_H
#define RAGCORE_PROVIDERS_H

#include <stddef.h>

#include "ragcore/common.h"
#include "ragcore/sys/embed_provider.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The built-in CPU provider in `hash` mode: signed feature hashing of NFKC-casefolded word
 * unigrams (stopwords dropped), sublinear term frequency, L2-normalised.  Needs no model file
 * and gives identical vectors on every run and machine.
 * @param[out] out provider struct to fill (caller's memory); hand it to rag_options::provider
 *                 (rag_open() copies it and owns its state) or release it with
 *                 rag_embed_provider_release().
 * @param dim      dimension, 8..4096 (0: 384).
 * @return ::RAG_OK, ::RAG_EINVAL, ::RAG_ENOMEM.
 */
RAG_API int rag_embed_cpu_hash_init(rag_embed_provider *out, unsigned int dim);

/**
 * The built-in CPU provider in `table` mode: an embedding bag over a static table supplied by
 * the host (token -> row): the rows of a text's tokens (NFKC-casefolded words, stopwords
 * dropped) weighted by sublinear term frequency, summed and L2-normalised.  Tokens not in the
 * table are ignored.
 * @param tokens   `n_tokens` NUL-terminated tokens (copied).
 * @param rows     `n_tokens * dim` floats (copied), row i for tokens[i].
 * @param name     model name that goes into the fingerprint (copied), e.g. "glove-6B-50d".
 */
RAG_API int rag_embed_cpu_table_init(rag_embed_provider *out, const char *const *tokens,
                                    size_t n_tokens, const float *rows, unsigned int dim,
                                    const char *name);

/** Release the state of a provider that was not handed to rag_open() (calls its `free`) and
 *  zero the struct.  NULL is allowed. */
RAG_API void rag_embed_provider_release(rag_embed_provider *p);

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_PROVIDERS_H */
