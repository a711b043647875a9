/* The embed module as seen by the core: chunks -> vectors through a provider, with a vector
 * cache keyed by (provider fingerprint, chunk content hash). */
#ifndef RAG_EMBED_API_H
#define RAG_EMBED_API_H

#include "ragcore/sys/embed_provider.h"
#include "rag_common.h"
#include "rag_queue.h"

typedef struct rag_embed rag_embed;

/* Open `<root>/embed/`. `provider` is borrowed (the core owns it). The provider's fingerprint
 * and dimension are recorded on first open; a different one later fails with
 * RAG_EFINGERPRINT, unless cfg->reembed: then the new provider is recorded under the next
 * model generation and the vector cache is emptied (the core goes on with the index and
 * ingest, see rag_open). */
int rag_embed_open(rag_embed **out, const rag_config *cfg, const rag_embed_provider *provider);
void rag_embed_close(rag_embed *em);

/* Consumer of doc.chunked (emits doc.embedded). */
rag_consumer *rag_embed_consumer(rag_embed *em);
rag_outbox *rag_embed_outbox(rag_embed *em);
MDB_env *rag_embed_env(rag_embed *em);
/* Model generation of the recorded provider (0 until the first re-embed); stamped on every
 * doc.embedded. */
uint64_t rag_embed_model_gen(const rag_embed *em);
const char *rag_embed_fingerprint(const rag_embed *em);
/* Latency of the consumer's provider calls (rag_embed_texts) since open; NULL without `em`. */
const rag_hist *rag_embed_provider_latency(const rag_embed *em);

typedef struct rag_embed_stats {
    uint64_t cache_entries;
    uint64_t cache_hits;   /* since open */
    uint64_t cache_misses; /* since open */
} rag_embed_stats;
int rag_embed_stats_get(rag_embed *em, rag_embed_stats *out);

#endif
