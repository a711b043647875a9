/* The cpu provider's `bag` slot (provider version 2): the terms `featurize` emits, summed and
 * normalised by a plain C reference of the embedding-bag arithmetic (what the CUDA kernel
 * does), must give cpu_embed's vectors; plus the ETOOBIG/needed protocol and the edge cases
 * (empty, stopwords only, invalid UTF-8) taking the same path as embed.  No GPU needed. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/providers.h"
#include "rag_common.h"
#include "rag_text.h"
#include "scifact_load.h"
#include "test_support.h"

#define N_DOCS 3000

typedef struct terms {
    uint32_t *index;
    float *weight;
    size_t *offsets;
    size_t n_terms;
} terms;

static void terms_free(terms *t)
{
    free(t->index);
    free(t->weight);
    free(t->offsets);
    memset(t, 0, sizeof *t);
}

/* featurize with the documented protocol: start small, grow to `needed` on ETOOBIG. */
static int featurize_all(const rag_embed_bag *bag, const char *const *texts, const size_t *lens,
                         size_t n, terms *t, int *retries)
{
    memset(t, 0, sizeof *t);
    t->offsets = malloc((n + 1) * sizeof *t->offsets);
    size_t cap = 16;
    t->index = malloc(cap * sizeof *t->index);
    t->weight = malloc(cap * sizeof *t->weight);
    for (int tries = 0; tries < 3; tries++) {
        size_t needed = 0;
        int rc = bag->featurize(bag->featurize_state, texts, lens, n, t->index, t->weight, cap,
                                t->offsets, &needed);
        if (rc == 0) {
            t->n_terms = t->offsets[n];
            return 0;
        }
        if (rc != RAG_EMBED_ETOOBIG)
            return rc;
        assert_true(needed > cap);
        if (retries)
            (*retries)++;
        cap = needed;
        t->index = realloc(t->index, cap * sizeof *t->index);
        t->weight = realloc(t->weight, cap * sizeof *t->weight);
    }
    return -1;
}

/* The reference embedding bag: sums and norm in double, rounded to float at the end. */
static void bag_reference(const rag_embed_bag *bag, const terms *t, size_t n, float *out)
{
    unsigned int dim = bag->dim;
    double *acc = malloc(dim * sizeof *acc);
    for (size_t i = 0; i < n; i++) {
        memset(acc, 0, dim * sizeof *acc);
        for (size_t k = t->offsets[i]; k < t->offsets[i + 1]; k++) {
            double w = t->weight[k];
            if (bag->kind == RAG_EMBED_BAG_HASH) {
                assert_true(t->index[k] < dim);
                acc[t->index[k]] += w;
            } else {
                assert_true(t->index[k] < bag->n_rows);
                const float *row = bag->rows + (size_t)t->index[k] * dim;
                for (unsigned int d = 0; d < dim; d++)
                    acc[d] += w * (double)row[d];
            }
        }
        double norm = 0;
        for (unsigned int d = 0; d < dim; d++)
            norm += acc[d] * acc[d];
        float *o = out + i * dim;
        if (norm > 0) {
            double inv = 1.0 / sqrt(norm);
            for (unsigned int d = 0; d < dim; d++)
                o[d] = (float)(acc[d] * inv);
        } else {
            memset(o, 0, dim * sizeof *o);
        }
    }
    free(acc);
}

/* max |a - b| over n*dim floats */
static double max_abs_diff(const float *a, const float *b, size_t count)
{
    double m = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m)
            m = d;
    }
    return m;
}

/* featurize + reference == embed over the corpus; returns the max abs difference. */
static double check_parity(const rag_embed_provider *p, const scifact_docs *d)
{
    rag_embed_bag bag;
    assert_non_null(p->bag);
    assert_int_equal(p->bag(p->state, &bag), 0);
    assert_int_equal(bag.dim, p->dim);
    unsigned int dim = p->dim;
    float *want = malloc(d->n * dim * sizeof *want);
    float *got = malloc(d->n * dim * sizeof *got);
    const char *const *texts = (const char *const *)d->texts;
    assert_int_equal(p->embed(p->state, texts, d->lens, d->n, want), 0);
    terms t;
    int retries = 0;
    assert_int_equal(featurize_all(&bag, texts, d->lens, d->n, &t, &retries), 0);
    assert_int_equal(retries, 1); /* 16 terms never suffice for a corpus */
    assert_true(t.n_terms > d->n * 10);
    bag_reference(&bag, &t, d->n, got);
    double diff = max_abs_diff(want, got, d->n * dim);
    size_t exact = 0;
    for (size_t i = 0; i < d->n * dim; i++)
        exact += want[i] == got[i];
    printf("  %s d%u: %zu texts, %zu terms, max |diff| %.3g, %.4f%% components bit-equal\n",
           bag.kind == RAG_EMBED_BAG_HASH ? "hash" : "table", dim, d->n, t.n_terms, diff,
           100.0 * exact / (double)(d->n * dim));
    terms_free(&t);
    free(want);
    free(got);
    return diff;
}

static int load_docs(scifact_docs *d)
{
    if (scifact_load(d, N_DOCS) != 0 || d->n < 1000) {
        fprintf(stderr, "SciFact is missing (../shared/data): skipped\n");
        return -1;
    }
    return 0;
}

static void test_bag_slot_fields(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 128), RAG_OK);
    assert_int_equal(p.version, 2);
    assert_non_null(p.bag);
    rag_embed_bag bag;
    assert_int_equal(p.bag(p.state, &bag), 0);
    assert_int_equal(bag.kind, RAG_EMBED_BAG_HASH);
    assert_int_equal(bag.dim, 128);
    assert_null(bag.rows);
    assert_int_equal(bag.n_rows, 0);
    assert_non_null(bag.featurize);
    assert_int_not_equal(p.bag(p.state, NULL), 0);
    rag_embed_provider_release(&p);

    const char *toks[] = {"alpha", "beta"};
    const float rows[] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(rag_embed_cpu_table_init(&p, toks, 2, rows, 3, "t"), RAG_OK);
    assert_int_equal(p.bag(p.state, &bag), 0);
    assert_int_equal(bag.kind, RAG_EMBED_BAG_TABLE);
    assert_int_equal(bag.dim, 3);
    assert_int_equal(bag.n_rows, 2);
    assert_non_null(bag.rows);
    assert_true(bag.rows != rows); /* the provider's copy, valid while its state lives */
    assert_memory_equal(bag.rows, rows, sizeof rows);

    /* "beta alpha beta gamma": first-occurrence order, tf weights, OOV dropped */
    const char *txt[1] = {"Beta alpha BETA gamma the"};
    size_t len[1] = {strlen(txt[0])};
    terms t;
    assert_int_equal(featurize_all(&bag, txt, len, 1, &t, NULL), 0);
    assert_int_equal(t.n_terms, 2);
    assert_int_equal(t.index[0], 1);
    assert_int_equal(t.index[1], 0);
    assert_true(t.weight[0] == (float)(1.0 + log(2.0)));
    assert_true(t.weight[1] == 1.0f);
    terms_free(&t);
    rag_embed_provider_release(&p);
}

static void test_hash_parity(void **st)
{
    (void)st;
    scifact_docs d;
    if (load_docs(&d))
        skip();
    unsigned int dims[2] = {8, 384};
    for (int k = 0; k < 2; k++) {
        rag_embed_provider p;
        assert_int_equal(rag_embed_cpu_hash_init(&p, dims[k]), RAG_OK);
        double diff = check_parity(&p, &d);
        assert_true(diff <= 1e-6);
        rag_embed_provider_release(&p);
    }
    scifact_free(&d);
}

typedef struct vocab {
    char **tok;
    size_t n, cap;
    uint64_t *slot; /* open addressing over tok indices + 1 */
    size_t mask;
} vocab;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static int vocab_add(void *arg, const char *tok, size_t len)
{
    vocab *v = arg;
    if (v->n == v->cap)
        return 0;
    size_t j = fnv(tok, len) & v->mask;
    while (v->slot[j]) {
        const char *t = v->tok[v->slot[j] - 1];
        if (strlen(t) == len && memcmp(t, tok, len) == 0)
            return 0;
        j = (j + 1) & v->mask;
    }
    char *c = malloc(len + 1);
    memcpy(c, tok, len);
    c[len] = 0;
    v->tok[v->n++] = c;
    v->slot[j] = v->n;
    return 0;
}

/* Table mode over a synthetic table whose tokens are the corpus vocabulary (every other one,
 * so that out-of-vocabulary tokens occur too). */
static void test_table_parity(void **st)
{
    (void)st;
    scifact_docs d;
    if (load_docs(&d))
        skip();
    vocab v = {0};
    v.cap = 40000;
    v.tok = calloc(v.cap, sizeof *v.tok);
    v.mask = (1u << 17) - 1;
    v.slot = calloc(v.mask + 1, sizeof *v.slot);
    for (size_t i = 0; i < d.n && v.n < v.cap; i++) {
        char *f = NULL;
        size_t fl = 0;
        assert_int_equal(rag_utf8_nfkc_casefold(d.texts[i], d.lens[i], &f, &fl), RAG_OK);
        assert_int_equal(rag_tokenize(f, fl, 0, vocab_add, &v), 0);
        free(f);
    }
    size_t nt = 0;
    const char **toks = malloc(v.n * sizeof *toks);
    for (size_t i = 0; i < v.n; i += 2)
        toks[nt++] = v.tok[i];
    unsigned int dims[2] = {50, 384};
    for (int k = 0; k < 2; k++) {
        unsigned int dim = dims[k];
        float *rows = malloc(nt * dim * sizeof *rows);
        uint64_t x = 0x9E3779B97F4A7C15ULL;
        for (size_t i = 0; i < nt * dim; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rows[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        }
        rag_embed_provider p;
        assert_int_equal(rag_embed_cpu_table_init(&p, toks, nt, rows, dim, "scifact-vocab"),
                         RAG_OK);
        free(rows);
        double diff = check_parity(&p, &d);
        assert_true(diff <= 1e-6);
        rag_embed_provider_release(&p);
    }
    free(toks);
    for (size_t i = 0; i < v.n; i++)
        free(v.tok[i]);
    free(v.tok);
    free(v.slot);
    scifact_free(&d);
}

static void test_toobig_protocol(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 64), RAG_OK);
    rag_embed_bag bag;
    assert_int_equal(p.bag(p.state, &bag), 0);
    const char *texts[3] = {"one two three two", "", "four five six seven one"};
    size_t lens[3] = {strlen(texts[0]), 0, strlen(texts[2])};
    const size_t total = 3 + 0 + 5; /* distinct non-stopword tokens per text */
    uint32_t idx[16];
    float w[16];
    size_t off[4], needed = 0;

    /* cap 0 (NULL buffers allowed): ETOOBIG and the exact need */
    assert_int_equal(bag.featurize(bag.featurize_state, texts, lens, 3, NULL, NULL, 0, off,
                                   &needed),
                     RAG_EMBED_ETOOBIG);
    assert_int_equal(needed, total);
    /* one short: ETOOBIG again, same need */
    needed = 0;
    assert_int_equal(bag.featurize(bag.featurize_state, texts, lens, 3, idx, w, total - 1, off,
                                   &needed),
                     RAG_EMBED_ETOOBIG);
    assert_int_equal(needed, total);
    /* exactly enough: success */
    assert_int_equal(bag.featurize(bag.featurize_state, texts, lens, 3, idx, w, needed, off,
                                   &needed),
                     0);
    assert_int_equal(off[0], 0);
    assert_int_equal(off[1], 3);
    assert_int_equal(off[2], 3);
    assert_int_equal(off[3], total);
    /* "two" occurs twice: weight 1 + ln 2, with the sign of its hash */
    assert_true(fabsf(w[1]) == (float)(1.0 + log(2.0)));
    assert_true(fabsf(w[0]) == 1.0f && fabsf(w[2]) == 1.0f);
    /* the same token gives the same term in another text ("one") */
    assert_int_equal(idx[0], idx[7]);
    assert_true(w[0] == w[7]);

    /* retry with a big buffer gives the same terms */
    uint32_t idx2[64];
    float w2[64];
    size_t off2[4];
    assert_int_equal(bag.featurize(bag.featurize_state, texts, lens, 3, idx2, w2, 64, off2, NULL),
                     0);
    assert_memory_equal(off, off2, sizeof off);
    assert_memory_equal(idx, idx2, total * sizeof *idx);
    assert_memory_equal(w, w2, total * sizeof *w);

    /* n == 0: only offsets[0] */
    off[0] = 99;
    assert_int_equal(bag.featurize(bag.featurize_state, texts, lens, 0, idx, w, 16, off, NULL), 0);
    assert_int_equal(off[0], 0);
    /* NULL text with a length: EINVAL (as embed) */
    const char *bad[1] = {NULL};
    size_t badlen[1] = {3};
    assert_int_equal(bag.featurize(bag.featurize_state, bad, badlen, 1, idx, w, 16, off, NULL),
                     RAG_EMBED_EINVAL);
    float v[64];
    assert_int_equal(p.embed(p.state, bad, badlen, 1, v), RAG_EMBED_EINVAL);
    rag_embed_provider_release(&p);
}

static void test_empty_and_stopwords(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 32), RAG_OK);
    rag_embed_bag bag;
    assert_int_equal(p.bag(p.state, &bag), 0);
    const char *texts[4] = {"", "the and of a to", NULL, " ,.;! ... \n\t"};
    size_t lens[4] = {0, strlen(texts[1]), 0, strlen(texts[3])};
    uint32_t idx[8];
    float w[8];
    size_t off[5];
    assert_int_equal(bag.featurize(bag.featurize_state, texts, lens, 4, idx, w, 8, off, NULL), 0);
    for (int i = 0; i <= 4; i++)
        assert_int_equal(off[i], 0);
    float v[4 * 32], ref[4 * 32];
    memset(v, 0x7f, sizeof v);
    assert_int_equal(p.embed(p.state, texts, lens, 4, v), 0);
    terms t = {idx, w, off, 0};
    bag_reference(&bag, &t, 4, ref);
    for (int i = 0; i < 4 * 32; i++) {
        assert_true(v[i] == 0.0f);
        assert_true(ref[i] == 0.0f);
    }
    rag_embed_provider_release(&p);
}

static void test_invalid_utf8(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 384), RAG_OK);
    rag_embed_bag bag;
    assert_int_equal(p.bag(p.state, &bag), 0);
    /* a lone continuation byte, a truncated sequence, a surrogate, an overlong */
    static const char bad0[] = "Caf\xc3\xa9 r\x80sum\xe9 protein \xed\xa0\x80 kinase \xc0\xaf";
    static const char bad1[] = "\xff\xfe Gene EXPRESSION gene \xe2\x82";
    const char *texts[2] = {bad0, bad1};
    size_t lens[2] = {sizeof bad0 - 1, sizeof bad1 - 1};
    size_t bo = 0;
    assert_int_equal(rag_utf8_check(bad0, lens[0], &bo), RAG_EUTF8);
    assert_int_equal(rag_utf8_check(bad1, lens[1], &bo), RAG_EUTF8);
    char *rep[2];
    size_t rlen[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(rag_utf8_repair(texts[i], lens[i], &rep[i], &rlen[i]), RAG_OK);

    terms a, b;
    assert_int_equal(featurize_all(&bag, texts, lens, 2, &a, NULL), 0);
    assert_int_equal(featurize_all(&bag, (const char *const *)rep, rlen, 2, &b, NULL), 0);
    assert_true(a.n_terms >= 6);
    assert_int_equal(a.n_terms, b.n_terms);
    assert_memory_equal(a.offsets, b.offsets, 3 * sizeof *a.offsets);
    assert_memory_equal(a.index, b.index, a.n_terms * sizeof *a.index);
    assert_memory_equal(a.weight, b.weight, a.n_terms * sizeof *a.weight);

    float want[2 * 384], got[2 * 384];
    assert_int_equal(p.embed(p.state, texts, lens, 2, want), 0);
    bag_reference(&bag, &a, 2, got);
    assert_true(max_abs_diff(want, got, 2 * 384) <= 1e-6);
    terms_free(&a);
    terms_free(&b);
    free(rep[0]);
    free(rep[1]);
    rag_embed_provider_release(&p);
}

/* featurize is documented thread-safe: two threads on disjoint halves equal one call. */
typedef struct feat_arg {
    const rag_embed_bag *bag;
    const scifact_docs *d;
    size_t first, n;
    terms t;
    int rc;
} feat_arg;

static void *feat_thread(void *a)
{
    feat_arg *f = a;
    for (int round = 0; round < 3 && f->rc == 0; round++) {
        terms_free(&f->t);
        f->rc = featurize_all(f->bag, (const char *const *)f->d->texts + f->first,
                              f->d->lens + f->first, f->n, &f->t, NULL);
    }
    return NULL;
}

static void test_featurize_threads(void **st)
{
    (void)st;
    scifact_docs d;
    if (load_docs(&d))
        skip();
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 384), RAG_OK);
    rag_embed_bag bag;
    assert_int_equal(p.bag(p.state, &bag), 0);
    terms all;
    assert_int_equal(featurize_all(&bag, (const char *const *)d.texts, d.lens, d.n, &all, NULL),
                     0);
    size_t half = d.n / 2;
    feat_arg fa[2] = {{&bag, &d, 0, half, {0}, 0}, {&bag, &d, half, d.n - half, {0}, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, feat_thread, &fa[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(fa[0].rc, 0);
    assert_int_equal(fa[1].rc, 0);
    size_t n0 = fa[0].t.n_terms;
    assert_int_equal(n0 + fa[1].t.n_terms, all.n_terms);
    assert_memory_equal(fa[0].t.index, all.index, n0 * sizeof *all.index);
    assert_memory_equal(fa[1].t.index, all.index + n0, fa[1].t.n_terms * sizeof *all.index);
    assert_memory_equal(fa[1].t.weight, all.weight + n0, fa[1].t.n_terms * sizeof *all.weight);
    for (size_t i = 0; i <= fa[1].n; i++)
        assert_int_equal(fa[1].t.offsets[i] + n0, all.offsets[half + i]);
    terms_free(&fa[0].t);
    terms_free(&fa[1].t);
    terms_free(&all);
    rag_embed_provider_release(&p);
    scifact_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bag_slot_fields),
        cmocka_unit_test(test_hash_parity),
        cmocka_unit_test(test_table_parity),
        cmocka_unit_test(test_toobig_protocol),
        cmocka_unit_test(test_empty_and_stopwords),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_featurize_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
