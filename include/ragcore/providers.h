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
 * @param[out] out provider struct to fill, as for rag_embed_cpu_hash_init().
 * @param tokens   `n_tokens` NUL-terminated tokens (copied).
 * @param n_tokens number of tokens and of rows.
 * @param rows     `n_tokens * dim` floats (copied), row i for tokens[i].
 * @param dim      dimension of each row, 8..4096.
 * @param name     model name that goes into the fingerprint (copied), e.g. "glove-6B-50d".
 * @return ::RAG_OK, ::RAG_EINVAL, ::RAG_ENOMEM.
 */
RAG_API int rag_embed_cpu_table_init(rag_embed_provider *out, const char *const *tokens,
                                    size_t n_tokens, const float *rows, unsigned int dim,
                                    const char *name);

/** Current version of ::rag_embed_remote_options (put it in its `version` field). */
#define RAG_EMBED_REMOTE_OPTIONS_VERSION 1u

/**
 * Options of the remote provider; a zero field means the default in brackets.  Strings are
 * copied by rag_embed_remote_init().
 */
typedef struct rag_embed_remote_options {
    unsigned int version;          /**< ::RAG_EMBED_REMOTE_OPTIONS_VERSION */
    /** Base URL of an OpenAI-compatible API; requests go to `<base_url>/embeddings`, e.g.
     *  "http://127.0.0.1:11434/v1" (Ollama), "https://api.openai.com/v1".  Required. */
    const char *base_url;
    const char *model;             /**< model name sent in each request.  Required. */
    unsigned int dim;              /**< expected dimension, 1..65536.  Required: a response
                                        of another size fails with ::RAG_EPROVIDER. */
    size_t batch_size;             /**< texts per request [64] */
    unsigned int connect_timeout_ms; /**< TCP/TLS connect timeout [5000] */
    unsigned int timeout_ms;       /**< whole-request timeout [60000] */
    unsigned int max_retries;      /**< retries of one request on 429, 5xx, timeouts and
                                        connection errors before ::RAG_ETRANSIENT [4] */
    unsigned int backoff_base_ms;  /**< retry delay U(0, min(cap, base * 2^attempt)) [200] */
    unsigned int backoff_cap_ms;   /**< ... and its cap [10000]; a Retry-After header
                                        (seconds) is honoured up to 60 s */
    /** Name of the environment variable holding the API key (sent as
     *  `Authorization: Bearer <key>`); NULL: no key.  The key is read at init, and never
     *  appears in logs, error messages, traces or the fingerprint. */
    const char *api_key_env;
    /** Fingerprint override; NULL: "remote:<model>:d<dim>" (the URL is not part of it: the
     *  same model served elsewhere gives the same vectors). */
    const char *fingerprint;
    int no_normalize;              /**< 1: keep the vectors as returned [0: L2-normalise] */
} rag_embed_remote_options;

/** Static initialiser of ::rag_embed_remote_options: current version, every field default. */
#define RAG_EMBED_REMOTE_OPTIONS_INIT \
    {RAG_EMBED_REMOTE_OPTIONS_VERSION, NULL, NULL, 0u, 0, 0u, 0u, 0u, 0u, 0u, NULL, NULL, 0}

/**
 * A provider calling an OpenAI-compatible `POST /v1/embeddings` endpoint over libcurl
 * (OpenAI, Ollama, llama.cpp server, vLLM, text-embeddings-inference).
 *
 * Errors of `embed`: HTTP 429, 5xx, timeouts and connection failures are retried up to
 * `max_retries` times within the call, then reported as ::RAG_ETRANSIENT (ragcore retries
 * the message later); 400, 401, 403, 404, 413, 422, a malformed response or a vector of the
 * wrong dimension are ::RAG_EPROVIDER at once (the document's saga compensates).
 * @return ::RAG_OK, ::RAG_EINVAL (missing base_url/model/dim, bad URL scheme, the key
 *         variable named but unset), ::RAG_ENOMEM.
 */
RAG_API int rag_embed_remote_init(rag_embed_provider *out, const rag_embed_remote_options *opts);

/** Counters of a provider made by rag_embed_remote_init() (for benchmarks and status). */
typedef struct rag_embed_remote_stats {
    unsigned long long requests;   /**< HTTP requests sent, retries included */
    unsigned long long retries;    /**< requests that were retries */
    unsigned long long texts;      /**< texts embedded */
    unsigned long long failures;   /**< `embed` calls that returned an error */
} rag_embed_remote_stats;

/** @return ::RAG_OK, or ::RAG_EINVAL when `p` is not a remote provider. */
RAG_API int rag_embed_remote_stats_get(const rag_embed_provider *p, rag_embed_remote_stats *out);

/** Release the state of a provider that was not handed to rag_open() (calls its `free`) and
 *  zero the struct.  NULL is allowed. */
RAG_API void rag_embed_provider_release(rag_embed_provider *p);

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_PROVIDERS_H */
