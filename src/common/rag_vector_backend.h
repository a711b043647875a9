/*
 * Vector index backend vtable: what the index module needs from a vector library.  The
 * index module keeps the truth (labels, versions, ACLs) in LMDB; a backend only holds
 * vectors keyed by 64-bit labels.  backends/index-faiss implements it on FAISS; tests use a
 * brute-force fake.
 */
#ifndef RAG_VECTOR_BACKEND_H
#define RAG_VECTOR_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#define RAG_VECTOR_BACKEND_VERSION 1u

/* Label filter: returns nonzero when `label` may be returned. */
typedef int (*rag_label_filter_fn)(void *arg, int64_t label);

typedef struct rag_vector_backend {
    unsigned int version;
    void *state;
    unsigned int dim;
    /* Add n vectors (n*dim floats) with the given labels (labels unique, >= 0). */
    int (*add)(void *state, size_t n, const float *vectors, const int64_t *labels);
    /* Remove labels; unknown labels are ignored. *removed_out may be NULL. */
    int (*remove)(void *state, size_t n, const int64_t *labels, size_t *removed_out);
    /* Top-k by inner product among labels accepted by `filter` (NULL: all). The filter is
     * applied inside the search, so k results come back whenever k acceptable labels exist.
     * Unused slots: labels[i] = -1. */
    int (*search)(void *state, const float *query, size_t k, rag_label_filter_fn filter,
                  void *filter_arg, float *scores, int64_t *labels);
    /* Number of vectors held. */
    uint64_t (*count)(void *state);
    /* Write the whole index to `path` atomically and durably (temp file, fsync, rename,
     * fsync of the directory). */
    int (*save)(void *state, const char *path);
    /* Replace the contents with the index stored at `path`. */
    int (*load)(void *state, const char *path);
    /* Drop every vector. */
    int (*reset)(void *state);
    void (*free)(void *state);
} rag_vector_backend;

/* FAISS backend (backends/index-faiss): `factory` is a FAISS factory string such as
 * "IDMap2,Flat"; metric is inner product. */
int rag_vector_backend_faiss_new(rag_vector_backend **out, unsigned int dim, const char *factory);

#endif
