/* Functional tests of the built-in CPU embedding provider (hash and table modes). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ragcore/providers.h"
#include "rag_common.h"
#include "rag_text.h"
#include "scifact_load.h"
#include "test_support.h"

/* Written down independently of the provider source on purpose: if the provider's seed or
 * hashing scheme changes, every stored vector changes, and this test must notice. */
#define GOLDEN_SEED 0x52414743505531ULL

static void embed1(const rag_embed_provider *p, const char *s, float *out)
{
    const char *texts[1] = {s};
    size_t lens[1] = {strlen(s)};
    assert_int_equal(p->embed(p->state, texts, lens, 1, out), 0);
}

static double dot(const float *a, const float *b, unsigned int dim)
{
    double s = 0;
    for (unsigned int i = 0; i < dim; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ---- independent reference of hash mode ---------------------------------------------- */

typedef struct ref_terms {
    uint64_t h[4096];
    uint32_t c[4096];
    size_t n;
} ref_terms;

static int ref_tok(void *arg, const char *t, size_t len)
{
    ref_terms *r = arg;
    uint64_t h = XXH3_64bits_withSeed(t, len, GOLDEN_SEED);
    for (size_t i = 0; i < r->n; i++)
        if (r->h[i] == h) {
            r->c[i]++;
            return 0;
        }
    if (r->n == 4096)
        return -1;
    r->h[r->n] = h;
    r->c[r->n++] = 1;
    return 0;
}

static void ref_hash_embed(const char *s, size_t len, unsigned int dim, float *out)
{
    char *folded = NULL;
    size_t flen = 0;
    assert_int_equal(rag_utf8_nfkc_casefold(s, len, &folded, &flen), RAG_OK);
    ref_terms *r = calloc(1, sizeof *r);
    assert_int_equal(rag_tokenize(folded, flen, 1, ref_tok, r), 0);
    free(folded);
    double *acc = calloc(dim, sizeof *acc);
    for (size_t i = 0; i < r->n; i++) {
        double w = 1.0 + log((double)r->c[i]);
        acc[r->h[i] % dim] += (r->h[i] >> 63) ? -w : w;
    }
    double norm = 0;
    for (unsigned int d = 0; d < dim; d++)
        norm += acc[d] * acc[d];
    norm = sqrt(norm);
    for (unsigned int d = 0; d < dim; d++)
        out[d] = norm > 0 ? (float)(acc[d] / norm) : 0.0f;
    free(acc);
    free(r);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_hash_init_and_fingerprint(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 0), RAG_OK);
    assert_int_equal(rag_embed_provider_check(&p), RAG_OK);
    assert_int_equal(p.dim, 384);
    assert_int_equal(p.version, RAG_EMBED_PROVIDER_VERSION);
    assert_int_equal(p.flags & RAG_EMBED_SINGLE_THREADED, 0);
    char fp[RAG_EMBED_FINGERPRINT_MAX];
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_string_equal(fp, "ragcore-cpu-hash-v1-d384");
    char small[8];
    assert_int_not_equal(p.fingerprint(p.state, small, sizeof small), 0);
    rag_embed_provider_release(&p);
    assert_null(p.state);
    assert_null(p.embed);
    assert_int_equal(p.version, 0);
    rag_embed_provider_release(NULL);

    assert_int_equal(rag_embed_cpu_hash_init(&p, 64), RAG_OK);
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_string_equal(fp, "ragcore-cpu-hash-v1-d64");
    rag_embed_provider_release(&p);

    assert_int_equal(rag_embed_cpu_hash_init(&p, 7), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_hash_init(&p, 4097), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_hash_init(NULL, 384), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_hash_init(&p, 8), RAG_OK);
    rag_embed_provider_release(&p);
    assert_int_equal(rag_embed_cpu_hash_init(&p, 4096), RAG_OK);
    rag_embed_provider_release(&p);
}

static void test_hash_golden(void **st)
{
    (void)st;
    const unsigned int dim = 256;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, dim), RAG_OK);
    float v[256], v2[256];

    /* "The" and "of" are stopwords; "cell" appears 3 times (weight 1 + ln 3). */
    embed1(&p, "The growth of Cell cell CELL.", v);
    double exp[256] = {0};
    uint64_t hc = XXH3_64bits_withSeed("cell", 4, GOLDEN_SEED);
    uint64_t hg = XXH3_64bits_withSeed("growth", 6, GOLDEN_SEED);
    double wc = 1.0 + log(3.0), wg = 1.0;
    exp[hg % dim] += (hg >> 63) ? -wg : wg;
    exp[hc % dim] += (hc >> 63) ? -wc : wc;
    double norm = 0;
    for (unsigned int d = 0; d < dim; d++)
        norm += exp[d] * exp[d];
    norm = sqrt(norm);
    int nonzero = 0;
    for (unsigned int d = 0; d < dim; d++) {
        assert_float_equal(v[d], exp[d] / norm, 1e-6);
        nonzero += v[d] != 0.0f;
    }
    assert_true(nonzero >= 1 && nonzero <= 2);
    /* the sign really comes from the top bit */
    if (hc % dim != hg % dim) {
        assert_true((v[hc % dim] < 0) == ((hc >> 63) != 0));
        assert_true((v[hg % dim] < 0) == ((hg >> 63) != 0));
    }

    /* same text, same vector (bit for bit), also from a fresh provider instance */
    embed1(&p, "The growth of Cell cell CELL.", v2);
    assert_memory_equal(v, v2, sizeof v);
    rag_embed_provider q;
    assert_int_equal(rag_embed_cpu_hash_init(&q, dim), RAG_OK);
    embed1(&q, "The growth of Cell cell CELL.", v2);
    assert_memory_equal(v, v2, sizeof v);
    rag_embed_provider_release(&q);
    rag_embed_provider_release(&p);

    /* Literal golden values (XXH3-64, seed above): "protein" = 0x50533a3cb3dc8541 -> bucket
     * 65 of 384, sign +; "cell" = 0x608a5b21b3a98130 -> 304, +; "growth" = 0xf0ee2e91fa392349
     * -> 73, -.  These hold on every machine; a change here invalidates every stored vector. */
    assert_true(XXH3_64bits_withSeed("protein", 7, GOLDEN_SEED) == 0x50533a3cb3dc8541ULL);
    float g[384];
    assert_int_equal(rag_embed_cpu_hash_init(&p, 384), RAG_OK);
    embed1(&p, "Protein", g);
    for (int d = 0; d < 384; d++)
        assert_true(g[d] == (d == 65 ? 1.0f : 0.0f));
    embed1(&p, "cell growth", g);
    for (int d = 0; d < 384; d++) {
        float want = d == 304 ? (float)(1 / sqrt(2.0)) : d == 73 ? (float)(-1 / sqrt(2.0)) : 0.0f;
        assert_float_equal(g[d], want, 1e-7);
    }
    rag_embed_provider_release(&p);
}

static void test_hash_matches_reference_on_scifact(void **st)
{
    (void)st;
    scifact_docs d;
    if (scifact_load(&d, 300) != 0) {
        fprintf(stderr, "scifact missing: skipped\n");
        skip();
    }
    const unsigned int dim = 384;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, dim), RAG_OK);
    float *out = malloc(d.n * dim * sizeof *out);
    assert_int_equal(p.embed(p.state, (const char *const *)d.texts, d.lens, d.n, out), 0);
    float ref[384];
    size_t non_ascii = 0;
    for (size_t i = 0; i < d.n; i++) {
        for (size_t k = 0; k < d.lens[i]; k++)
            if ((unsigned char)d.texts[i][k] >= 0x80) {
                non_ascii++;
                break;
            }
        ref_hash_embed(d.texts[i], d.lens[i], dim, ref);
        for (unsigned int j = 0; j < dim; j++)
            assert_float_equal(out[i * dim + j], ref[j], 1e-6);
        assert_float_equal(dot(out + i * dim, out + i * dim, dim), 1.0, 1e-5);
    }
    /* both the ASCII fast path and the utf8proc path were exercised */
    assert_true(non_ascii > 0 && non_ascii < d.n);
    free(out);
    rag_embed_provider_release(&p);
    scifact_free(&d);
}

static void test_norm_and_zero_vectors(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 128), RAG_OK);
    const char *texts[] = {"Mitochondrial DNA replication", "the and of to is it", "", "  ...!? -- ",
                           "x"};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(texts[i]);
    float out[5 * 128];
    memset(out, 0x7f, sizeof out); /* garbage: the provider must overwrite every row */
    assert_int_equal(p.embed(p.state, texts, lens, 5, out), 0);
    assert_float_equal(dot(out, out, 128), 1.0, 1e-6);
    assert_float_equal(dot(out + 4 * 128, out + 4 * 128, 128), 1.0, 1e-6);
    for (int r = 1; r <= 3; r++)
        for (int j = 0; j < 128; j++)
            assert_true(out[r * 128 + j] == 0.0f);
    rag_embed_provider_release(&p);
}

static void test_casefold_and_fullwidth(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 384), RAG_OK);
    float a[384], b[384], c[384], d[384];
    embed1(&p, "hello world protein", a);
    embed1(&p, "HELLO World PROTEIN", b);
    /* full-width Latin letters and an ideographic space: NFKC maps them to ASCII */
    embed1(&p, "\xEF\xBD\x88\xEF\xBD\x85\xEF\xBD\x8C\xEF\xBD\x8C\xEF\xBD\x8F\xE3\x80\x80"
               "\xEF\xBC\xB7\xEF\xBD\x8F\xEF\xBD\x92\xEF\xBD\x8C\xEF\xBD\x84 Protein",
           c);
    /* German sharp s casefolds to "ss" */
    embed1(&p, "STRASSE", d);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(a, c, sizeof a);
    float e[384];
    embed1(&p, "stra\xC3\x9F" "e", e);
    assert_memory_equal(d, e, sizeof d);
    /* invalid UTF-8 does not fail the batch */
    float f[384];
    embed1(&p, "bad \xFF\xFE bytes protein", f);
    assert_float_equal(dot(f, f, 384), 1.0, 1e-6);
    rag_embed_provider_release(&p);
}

static void test_similarity(void **st)
{
    (void)st;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 384), RAG_OK);
    float a[384], b[384], c[384];
    embed1(&p, "Mitochondria produce cellular energy through oxidative phosphorylation.", a);
    embed1(&p, "Oxidative phosphorylation in the mitochondria produces energy for the cell.", b);
    embed1(&p, "Stock market prices fell sharply on Tuesday after the bank report.", c);
    double ab = dot(a, b, 384), ac = dot(a, c, 384);
    assert_true(ab > 0.4);
    assert_true(ab > ac + 0.3);
    rag_embed_provider_release(&p);
}

static void test_table_mode(void **st)
{
    (void)st;
    const char *toks[] = {"cat", "dog", "fish", "cat" /* duplicate: first row wins */};
    const float rows[] = {
        1.0f, 0.0f, 2.0f, 0.0f,  /* cat */
        0.0f, 3.0f, 0.0f, 1.0f,  /* dog */
        5.0f, 5.0f, 5.0f, 5.0f,  /* fish */
        9.0f, 9.0f, 9.0f, 9.0f,  /* cat again: unreachable */
    };
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_table_init(&p, toks, 4, rows, 4, "toy-4d"), RAG_OK);
    assert_int_equal(rag_embed_provider_check(&p), RAG_OK);
    assert_int_equal(p.dim, 4);
    char fp[RAG_EMBED_FINGERPRINT_MAX];
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_non_null(strstr(fp, "toy-4d"));
    assert_non_null(strstr(fp, "-d4"));
    assert_non_null(strstr(fp, "table"));

    /* cat x2 (1 + ln 2), dog x1; "the" is a stopword, "bird" is not in the table */
    float v[4];
    embed1(&p, "The CAT and the cat saw a dog and a bird", v);
    double w = 1.0 + log(2.0);
    double exp[4] = {w * 1.0, 3.0, w * 2.0, 1.0};
    double n = sqrt(exp[0] * exp[0] + exp[1] * exp[1] + exp[2] * exp[2] + exp[3] * exp[3]);
    for (int i = 0; i < 4; i++)
        assert_float_equal(v[i], exp[i] / n, 1e-6);

    /* no known token: zero vector */
    embed1(&p, "bird horse", v);
    for (int i = 0; i < 4; i++)
        assert_true(v[i] == 0.0f);

    /* the table is copied: the caller's memory may go away */
    float rows2[16];
    memcpy(rows2, rows, sizeof rows2);
    rag_embed_provider q;
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 4, rows2, 4, "toy-4d"), RAG_OK);
    char fq[RAG_EMBED_FINGERPRINT_MAX];
    assert_int_equal(q.fingerprint(q.state, fq, sizeof fq), 0);
    assert_string_equal(fp, fq); /* same table, same fingerprint */
    memset(rows2, 0, sizeof rows2);
    float v2[4];
    embed1(&q, "fish", v2);
    assert_float_equal(v2[0], 0.5, 1e-6);
    rag_embed_provider_release(&q);

    /* one changed value changes the fingerprint; so does the name */
    memcpy(rows2, rows, sizeof rows2);
    rows2[9] = 5.5f;
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 4, rows2, 4, "toy-4d"), RAG_OK);
    assert_int_equal(q.fingerprint(q.state, fq, sizeof fq), 0);
    assert_string_not_equal(fp, fq);
    rag_embed_provider_release(&q);
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 4, rows, 4, "other"), RAG_OK);
    assert_int_equal(q.fingerprint(q.state, fq, sizeof fq), 0);
    assert_string_not_equal(fp, fq);
    rag_embed_provider_release(&q);

    /* a very long name still gives a fingerprint that fits */
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 4, rows, 4, longname), RAG_OK);
    assert_int_equal(q.fingerprint(q.state, fq, sizeof fq), 0);
    assert_true(strlen(fq) < RAG_EMBED_FINGERPRINT_MAX);
    rag_embed_provider_release(&q);

    /* bad arguments */
    float bad[4] = {1, NAN, 0, 0};
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 1, bad, 4, "x"), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 0, rows, 4, "x"), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 4, rows, 0, "x"), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_table_init(&q, toks, 4, NULL, 4, "x"), RAG_EINVAL);
    assert_int_equal(rag_embed_cpu_table_init(&q, NULL, 4, rows, 4, "x"), RAG_EINVAL);
    rag_embed_provider_release(&p);
}

/* ---- thread-safety smoke ------------------------------------------------------------- */

typedef struct thr_arg {
    const rag_embed_provider *p;
    const scifact_docs *d;
    const float *expect;
    int mismatches;
} thr_arg;

static void *thr_main(void *a)
{
    thr_arg *t = a;
    unsigned int dim = t->p->dim;
    float *out = malloc(16 * dim * sizeof *out);
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < t->d->n; i += 16) {
            size_t m = t->d->n - i < 16 ? t->d->n - i : 16;
            if (t->p->embed(t->p->state, (const char *const *)t->d->texts + i, t->d->lens + i, m,
                            out) != 0) {
                t->mismatches++;
                continue;
            }
            if (memcmp(out, t->expect + i * dim, m * dim * sizeof *out) != 0)
                t->mismatches++;
        }
    free(out);
    return NULL;
}

static void test_threads(void **st)
{
    (void)st;
    scifact_docs d;
    if (scifact_load(&d, 400) != 0)
        skip();
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, 384), RAG_OK);
    float *expect = malloc(d.n * 384 * sizeof *expect);
    assert_int_equal(p.embed(p.state, (const char *const *)d.texts, d.lens, d.n, expect), 0);
    thr_arg a[2] = {{&p, &d, expect, 0}, {&p, &d, expect, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(a[0].mismatches, 0);
    assert_int_equal(a[1].mismatches, 0);
    free(expect);
    rag_embed_provider_release(&p);
    scifact_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_init_and_fingerprint),
        cmocka_unit_test(test_hash_golden),
        cmocka_unit_test(test_hash_matches_reference_on_scifact),
        cmocka_unit_test(test_norm_and_zero_vectors),
        cmocka_unit_test(test_casefold_and_fullwidth),
        cmocka_unit_test(test_similarity),
        cmocka_unit_test(test_table_mode),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
