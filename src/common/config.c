/* Options -> resolved configuration with defaults and bounds. */
#include <string.h>

#include "rag_common.h"

int rag_config_init(rag_config *cfg, const char *root, const rag_options *opts)
{
    rag_options def;
    rag_options_init(&def);
    if (!cfg || !root || !*root)
        return rag_error_set(RAG_EINVAL, "root directory is required");
    if (!opts)
        opts = &def;
    if (opts->version == 0 || opts->version > RAG_OPTIONS_VERSION)
        return rag_error_set(RAG_EVERSION, "rag_options version %u not supported", opts->version);
    memset(cfg, 0, sizeof *cfg);
    if (strlen(root) >= RAG_PATH_MAX - 64)
        return rag_error_set(RAG_EINVAL, "root path too long");
    strcpy(cfg->root, root);
#define DEF(field, dflt) ((opts->field) ? (opts->field) : (dflt))
    cfg->map_size = (size_t)DEF(map_size_mb, 4096) * 1024u * 1024u;
    cfg->no_sync = opts->no_sync ? 1 : 0;
    cfg->embed_dim = DEF(embed_dim, 384u);
    const char *mode = DEF(embed_mode, "hash");
    const char *factory = DEF(index_factory, "IDMap2,Flat");
    if (strlen(mode) >= sizeof cfg->embed_mode || strlen(factory) >= sizeof cfg->index_factory)
        return rag_error_set(RAG_EINVAL, "embed_mode or index_factory too long");
    strcpy(cfg->embed_mode, mode);
    strcpy(cfg->index_factory, factory);
    cfg->chunk_target = DEF(chunk_target, 800u);
    cfg->chunk_min = DEF(chunk_min, 200u);
    cfg->chunk_max = DEF(chunk_max, 1600u);
    cfg->chunk_overlap = opts->chunk_overlap;
    cfg->max_doc_bytes = DEF(max_doc_bytes, (size_t)64 * 1024 * 1024);
    cfg->max_attempts = DEF(max_attempts, 8u);
    cfg->retry_base_ms = DEF(retry_base_ms, 50u);
    cfg->retry_cap_ms = DEF(retry_cap_ms, 5000u);
    cfg->lease_ms = DEF(lease_ms, 30000u);
    cfg->batch_size = DEF(batch_size, 256u);
    /* version-2 fields exist only in callers built against version 2 */
    cfg->idempotency_ttl_ms = 1000ull * (opts->version >= 2 ? DEF(idempotency_ttl_s, 86400u) : 86400u);
    cfg->saga_deadline_ms = opts->version >= 2 ? DEF(saga_deadline_ms, 600000u) : 600000u;
    /* version-3 fields */
    cfg->bm25_k1 = 0.9f;
    cfg->bm25_b = 0.4f;
    /* tuned on SciFact train claims (bench_retrieval `tuning`): 0.95 is where hybrid stops
     * losing to lexical there; on the test sets it is above lexical on SciFact and CISI */
    cfg->hybrid_lexical_weight = 0.95f;
    if (opts->version >= 3) {
        if (opts->bm25_k1 > 0)
            cfg->bm25_k1 = opts->bm25_k1;
        if (opts->bm25_b != 0)
            cfg->bm25_b = opts->bm25_b < 0 ? 0.0f : opts->bm25_b;
        if (opts->hybrid_lexical_weight != 0)
            cfg->hybrid_lexical_weight =
                opts->hybrid_lexical_weight < 0 ? 0.0f : opts->hybrid_lexical_weight;
    }
    /* version-4 fields */
    cfg->reembed = opts->version >= 4 && opts->reembed;
    /* version-5 fields */
    cfg->modules = opts->version >= 5 && opts->modules ? opts->modules : RAG_HOST_ALL;
#undef DEF
    if (cfg->embed_dim < 8 || cfg->embed_dim > 4096)
        return rag_error_set(RAG_EINVAL, "embed_dim %u outside 8..4096", cfg->embed_dim);
    if (cfg->chunk_min > cfg->chunk_target || cfg->chunk_target > cfg->chunk_max ||
        cfg->chunk_max > 1024 * 1024 || cfg->chunk_min < 16)
        return rag_error_set(RAG_EINVAL, "chunk sizes must satisfy 16 <= min <= target <= max <= 1 MiB");
    if (cfg->chunk_overlap >= cfg->chunk_min)
        return rag_error_set(RAG_EINVAL, "chunk_overlap must be smaller than chunk_min");
    if (cfg->map_size < 16u * 1024 * 1024)
        return rag_error_set(RAG_EINVAL, "map_size_mb must be at least 16");
    if (cfg->batch_size > 100000 || cfg->max_attempts > 1000)
        return rag_error_set(RAG_EINVAL, "batch_size or max_attempts out of range");
    if (!(cfg->bm25_k1 > 0 && cfg->bm25_k1 <= 10) || !(cfg->bm25_b >= 0 && cfg->bm25_b <= 1) ||
        !(cfg->hybrid_lexical_weight >= 0 && cfg->hybrid_lexical_weight <= 1))
        return rag_error_set(RAG_EINVAL, "bm25_k1 must be in (0, 10], bm25_b and "
                                         "hybrid_lexical_weight in [0, 1]");
    if (cfg->modules & ~RAG_HOST_ALL)
        return rag_error_set(RAG_EINVAL, "modules 0x%x: unknown RAG_HOST_* bits", cfg->modules);
    /* ingest and index go together: retrieve reads both in-process, fsck and session reads
     * compare them; only embed runs anywhere */
    {
        unsigned int m = cfg->modules;
        int in = !!(m & RAG_HOST_INGEST), ix = !!(m & RAG_HOST_INDEX);
        if (in != ix || ((m & RAG_HOST_RETRIEVE) && !in))
            return rag_error_set(RAG_EINVAL,
                                 "modules: ingest and index must run in the same process, "
                                 "and retrieve with them (embed may run alone)");
    }
    return RAG_OK;
}

int rag_options_init(rag_options *opts)
{
    if (!opts)
        return rag_error_set(RAG_EINVAL, "opts is NULL");
    rag_options z = RAG_OPTIONS_INIT;
    *opts = z;
    return RAG_OK;
}
