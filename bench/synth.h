/*
 * The synthetic workload of `bench_synth` (issue 9): a fixed-seed generator of documents,
 * access lists, replacements and queries, and the embedding provider that gives ragcore and
 * raw FAISS the same vectors.
 *
 * Documents are plain text of 1-2 KB (sentences of pseudo-words, paragraphs of 2-4
 * sentences), each readable by 1-3 of 16 groups ("g00".."g15").  Vectors are 384-d, unit
 * length, clustered: a text's vector is one of `SYNTH_CLUSTERS` random centroids plus Gaussian
 * noise, both picked by a 64-bit hash of the text, so any text (whatever ragcore's chunker
 * cuts) gets a deterministic vector at a cost of about a microsecond, and an approximate index
 * faces a realistic, non-uniform distribution.  Query texts are "synthq-<n>"; their vectors
 * are drawn from the same distribution from `n` alone.
 *
 * The provider can record every vector it returns (`synth_provider_record`), so that the raw
 * FAISS baseline indexes exactly the vectors ragcore indexed, in the same process.
 */
#ifndef RAG_BENCH_SYNTH_H
#define RAG_BENCH_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include <ragcore/sys/embed_provider.h>

#define SYNTH_DIM 384
#define SYNTH_GROUPS 16
#define SYNTH_CLUSTERS 256

typedef struct synth_doc {
    char id[32];                 /* "doc-NNNNNNN" */
    char *text;                  /* owned, NUL-terminated */
    size_t size;                 /* strlen(text) */
    const char *acl[3];          /* group names (static strings) */
    size_t acl_count;            /* 1..3 */
    uint32_t groups;             /* bit g set: readable by group g */
} synth_doc;

typedef struct synth_corpus {
    uint64_t seed;
    size_t n_docs;
    synth_doc *docs;             /* n_docs originals */
    size_t n_updates;
    size_t *update_of;           /* index of the document each replacement replaces (distinct) */
    synth_doc *updates;          /* n_updates replacements: same id and acl, new text */
    size_t bytes;                /* total text bytes of the originals */
} synth_corpus;

/* Group name g (0..15): "g00".."g15". */
const char *synth_group_name(unsigned g);

/* Generate `n_docs` documents and `n_updates` (<= n_docs) replacements from `seed`. */
int synth_corpus_make(synth_corpus *c, uint64_t seed, size_t n_docs, size_t n_updates);
void synth_corpus_free(synth_corpus *c);

/* Query i's text ("synthq-<i>", written into buf of >= 24 bytes) and its ACL group (the group
 * an ACL-filtered query runs as; cycles through all 16). */
void synth_query_text(size_t i, char *buf, size_t size);
unsigned synth_query_group(size_t i);

/* The vector of a text / of query i (unit length, SYNTH_DIM floats). */
void synth_text_vector(const char *text, size_t len, float *out);
void synth_query_vector(size_t i, float *out);

/* The provider (public vtable, version 2): embeds texts with synth_text_vector (query texts
 * with synth_query_vector).  Fingerprint "bench-synth-v1-384".  rag_open() takes ownership of
 * the state; the recorder below stays valid until synth_recorder_free(). */
typedef struct synth_recorder synth_recorder;
int synth_provider_init(rag_embed_provider *p, synth_recorder *rec);

/* A recorder collects every non-query vector the provider returned (deduplicated by text
 * hash), so that raw FAISS can index the same set.  Thread-safe. */
synth_recorder *synth_recorder_new(void);
void synth_recorder_free(synth_recorder *r);
/* Number of recorded vectors; copies them (n x SYNTH_DIM) and their text hashes when non-NULL. */
size_t synth_recorder_count(synth_recorder *r);
void synth_recorder_get(synth_recorder *r, float *vecs, uint64_t *hashes);
void synth_recorder_reset(synth_recorder *r);

/* Extensions for bench_synth (the functions above behave as before):
 * keep_texts: from now on also keep a copy of each newly recorded text (off by default), so
 * the bench can attribute every recorded vector to the document whose chunk it is.
 * synth_recorder_text: recorded text i (NULL when it was recorded without keep_texts or i is
 * out of range); the pointer stays valid until synth_recorder_reset()/free().
 * synth_recorder_view: the recorder's own arrays, no copy (n vectors and hashes); valid until
 * the next vector is recorded, so only while no provider call records concurrently. */
void synth_recorder_keep_texts(synth_recorder *r, int on);
const char *synth_recorder_text(synth_recorder *r, size_t i, size_t *len);
void synth_recorder_view(synth_recorder *r, const float **vecs, const uint64_t **hashes,
                         size_t *n);

uint64_t synth_hash(const char *text, size_t len);

#endif
