/*
 * What the index module's tests share: the fixture handle and the helpers that drive the
 * consumers.  Include after defining DIM (the vector dimension of the file's tests).
 */
#ifndef RAG_INDEX_TEST_UTIL_H
#define RAG_INDEX_TEST_UTIL_H

#include <math.h>
#include <string.h>

#include "test_support.h"
#include "index_internal.h"
#include "rag_common.h"
#include "rag_queue.h"

typedef struct tctx {
    char *root;
    rag_config cfg;
    rag_index *ix;
    rag_queue_transport *t;
    rag_queue_policy pol;
    int msg_no;
} tctx;

/* Run one consumer until its topic is empty; messages handled. */
static inline size_t drain(tctx *c, rag_consumer *cons)
{
    size_t total = 0, n;
    do {
        assert_int_equal(rag_consumer_run_once(cons, c->t, &c->pol, &n), RAG_OK);
        total += n;
    } while (n);
    return total;
}

/* Run the index's three consumers until none has work. */
static inline void drain_all(tctx *c)
{
    while (drain(c, rag_index_consumer_embedded(c->ix)) +
           drain(c, rag_index_consumer_deleted(c->ix)) +
           drain(c, rag_index_consumer_revert(c->ix)))
        ;
}

#ifndef IXT_OWN_CHUNK_VEC
/* Deterministic unit vector of (doc, version, chunk). */
static inline void chunk_vec(const char *doc, uint64_t version, uint32_t chunk, float *out)
{
    char key[512];
    int n = snprintf(key, sizeof key, "%s|%llu|%u", doc, (unsigned long long)version, chunk);
    uint8_t h[16];
    rag_hash128(key, (size_t)n, h);
    uint64_t s;
    memcpy(&s, h, 8);
    s |= 1;
    float norm = 0;
    for (int i = 0; i < DIM; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out[i] = (float)((s >> 11) * (1.0 / 9007199254740992.0)) - 0.5f;
        norm += out[i] * out[i];
    }
    norm = sqrtf(norm);
    for (int i = 0; i < DIM; i++)
        out[i] /= norm;
}
#endif

#endif
