/* The retrieve module as seen by the core: queries and ACL filtering. Reads through the
 * ingest and index read interfaces; writes only its own env (result cache). */
#ifndef RAG_RETRIEVE_API_H
#define RAG_RETRIEVE_API_H

#include "ragcore/rag.h"
#include "rag_common.h"
#include "rag_readers.h"

typedef struct rag_retrieve rag_retrieve;

/* Open `<root>/retrieve/`. Everything passed is borrowed and must outlive the module. */
int rag_retrieve_open(rag_retrieve **out, const rag_config *cfg,
                      const rag_embed_provider *provider, const rag_ingest_reader *ingest,
                      const rag_index_reader *index);
void rag_retrieve_close(rag_retrieve *rt);

/* Search in q->mode: VECTOR, LEXICAL, HYBRID (DEFAULT: HYBRID, or VECTOR when the index
 * reader has no search_lexical; LEXICAL/HYBRID then fail with RAG_EUNSUPPORTED). Only the
 * version-1 fields of `q` are read. */
int rag_retrieve_search(rag_retrieve *rt, const rag_query *q, rag_results **out);
void rag_retrieve_results_free(rag_results *r);

/* Result-cache counters since open: searches answered from the cache, and searches that went
 * to the index (no entry, a stale entry, or no cache). Either pointer may be NULL; rt may be
 * NULL (both 0). */
void rag_retrieve_stats_get(rag_retrieve *rt, uint64_t *hits, uint64_t *misses);

#endif
