/* Private to the retrieve module: tuning constants and test hooks. */
#ifndef RAG_MODULE_RETRIEVE
#error "private header of the retrieve module"
#endif
#ifndef RAG_RETRIEVE_INTERNAL_H
#define RAG_RETRIEVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "rag_retrieve_api.h"

/* On-disk format of the result cache (key material and value layout). A different number
 * found on open drops the cache: it is derived data, rebuilding it is always safe. */
#define RAG_RETRIEVE_FORMAT 2u

#define RAG_RETRIEVE_K_DEFAULT 10u
#define RAG_RETRIEVE_K_MAX 1000u
/* Upper bound of the number of hits asked from the index while re-querying to make up for
 * hits dropped after the index search (deleted documents, purged text). */
#define RAG_RETRIEVE_FETCH_MAX 16384u
/* Smallest candidate page asked from each side in hybrid mode (max(4k, this)). */
#define RAG_RETRIEVE_HYBRID_MIN 50u
/* Default cap of the result cache: the table is dropped when an insert finds it this full
 * (cheap, bounded, and a cache needs no LRU precision). */
#define RAG_RETRIEVE_CACHE_MAX 4096u

/* Counters for tests and status; monotonic since open. */
typedef struct rag_retrieve_stats {
    uint64_t searches;       /* successful searches */
    uint64_t cache_hits;     /* answered from the cache after re-validation */
    uint64_t cache_misses;   /* key absent (or entry unusable) */
    uint64_t cache_stale;    /* cache entry found but a hit was no longer valid */
    uint64_t index_queries;  /* calls of index->search (the vector side) */
    uint64_t cache_drops;    /* times the table was emptied because of the cap */
    uint64_t cache_bypass;   /* searches without a cache (disabled, or no index epoch) */
    uint64_t lexical_queries;/* calls of index->search_lexical */
} rag_retrieve_stats;

void rag_retrieve__stats(const rag_retrieve *rt, rag_retrieve_stats *out);
/* 0 disables the cache entirely. */
void rag_retrieve__set_cache_max(rag_retrieve *rt, size_t max_entries);
/* Number of entries in the cache table (or a negative code). */
int rag_retrieve__cache_entries(rag_retrieve *rt, size_t *out);

#endif
