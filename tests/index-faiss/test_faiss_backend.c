/* FAISS vector backend: exactness against brute force, filtered search, removal, atomic
 * save/load, other factory strings. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_support.h"
#include "rag_common.h"
#include "rag_vector_backend.h"

#define DIM 32

static uint64_t rng_state = 88172645463325252ull;
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *random_vectors(size_t n)
{
    float *v = malloc(n * DIM * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        float norm = 0;
        for (int t = 0; t < DIM; t++) {
            v[i * DIM + t] = frand();
            norm += v[i * DIM + t] * v[i * DIM + t];
        }
        norm = sqrtf(norm);
        for (int t = 0; t < DIM; t++)
            v[i * DIM + t] /= norm;
    }
    return v;
}

/* Reference: brute-force top-k over (labels, vecs) with live flags and a filter. */
typedef struct ref_set {
    size_t n;
    int64_t *labels;
    float *vecs;
    unsigned char *live;
} ref_set;

static void ref_topk(const ref_set *r, const float *q, size_t k, rag_label_filter_fn f, void *arg,
                     float *scores, int64_t *labels)
{
    for (size_t i = 0; i < k; i++) {
        scores[i] = -INFINITY;
        labels[i] = -1;
    }
    for (size_t j = 0; j < r->n; j++) {
        if (!r->live[j] || (f && !f(arg, r->labels[j])))
            continue;
        float d = 0;
        for (int t = 0; t < DIM; t++)
            d += q[t] * r->vecs[j * DIM + t];
        size_t i = k;
        while (i > 0 && (labels[i - 1] == -1 || scores[i - 1] < d))
            i--;
        if (i >= k)
            continue;
        memmove(scores + i + 1, scores + i, (k - i - 1) * sizeof *scores);
        memmove(labels + i + 1, labels + i, (k - i - 1) * sizeof *labels);
        scores[i] = d;
        labels[i] = r->labels[j];
    }
}

static void check_against_ref(rag_vector_backend *b, const ref_set *r, const float *queries,
                              size_t nq, size_t k, rag_label_filter_fn f, void *arg)
{
    float *s1 = malloc(k * sizeof *s1), *s2 = malloc(k * sizeof *s2);
    int64_t *l1 = malloc(k * sizeof *l1), *l2 = malloc(k * sizeof *l2);
    for (size_t qi = 0; qi < nq; qi++) {
        const float *q = queries + qi * DIM;
        assert_int_equal(b->search(b->state, q, k, f, arg, s1, l1), RAG_OK);
        ref_topk(r, q, k, f, arg, s2, l2);
        for (size_t i = 0; i < k; i++) {
            assert_int_equal(l1[i], l2[i]);
            if (l2[i] >= 0)
                assert_true(fabsf(s1[i] - s2[i]) < 1e-4f);
        }
    }
    free(s1);
    free(s2);
    free(l1);
    free(l2);
}

static int only_hundredth(void *arg, int64_t label)
{
    (void)arg;
    return label % 100 == 0;
}

static int odd_labels(void *arg, int64_t label)
{
    int *calls = arg;
    if (calls)
        __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    return label % 2 == 1;
}

static void test_roundtrip_flat(void **state)
{
    (void)state;
    char *dir = rag_test_tmpdir("faiss-roundtrip");
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "IDMap2,Flat"), RAG_OK);
    assert_int_equal(b->dim, DIM);

    const size_t n = 2000;
    ref_set r = {n, malloc(n * sizeof(int64_t)), random_vectors(n), malloc(n)};
    for (size_t i = 0; i < n; i++) {
        r.labels[i] = (int64_t)(i * 7 + 3);
        r.live[i] = 1;
    }
    /* two adds, so that ids do not coincide with positions */
    assert_int_equal(b->add(b->state, 1200, r.vecs, r.labels), RAG_OK);
    assert_int_equal(b->add(b->state, n - 1200, r.vecs + 1200 * DIM, r.labels + 1200), RAG_OK);
    assert_int_equal(b->count(b->state), n);

    float *queries = random_vectors(20);
    check_against_ref(b, &r, queries, 20, 10, NULL, NULL);

    /* remove every third label in one batch, plus an unknown one */
    int64_t *rm = malloc((n / 3 + 2) * sizeof *rm);
    size_t nrm = 0;
    for (size_t i = 0; i < n; i += 3) {
        rm[nrm++] = r.labels[i];
        r.live[i] = 0;
    }
    rm[nrm++] = 999999999;
    size_t removed = 0;
    assert_int_equal(b->remove(b->state, nrm, rm, &removed), RAG_OK);
    assert_int_equal(removed, nrm - 1);
    assert_int_equal(b->count(b->state), n - (nrm - 1));
    check_against_ref(b, &r, queries, 20, 10, NULL, NULL);
    check_against_ref(b, &r, queries, 5, 10, odd_labels, NULL);

    /* save: atomic, no temp file left; load into a fresh backend gives the same answers */
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/vectors.faiss", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(b->save(b->state, path), RAG_OK);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);

    rag_vector_backend *b2 = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b2, DIM, NULL), RAG_OK);
    assert_int_equal(b2->load(b2->state, path), RAG_OK);
    assert_int_equal(b2->count(b2->state), n - (nrm - 1));
    check_against_ref(b2, &r, queries, 20, 10, NULL, NULL);
    check_against_ref(b2, &r, queries, 5, 7, odd_labels, NULL);
    /* the loaded index keeps removing correctly (its reverse map was rebuilt) */
    assert_int_equal(b2->remove(b2->state, 1, &r.labels[1], &removed), RAG_OK);
    assert_int_equal(removed, 1);
    r.live[1] = 0;
    check_against_ref(b2, &r, queries, 5, 10, NULL, NULL);

    /* reset drops everything */
    assert_int_equal(b2->reset(b2->state), RAG_OK);
    assert_int_equal(b2->count(b2->state), 0);
    float sc[3];
    int64_t lb[3];
    assert_int_equal(b2->search(b2->state, queries, 3, NULL, NULL, sc, lb), RAG_OK);
    assert_int_equal(lb[0], -1);

    b->free(b->state);
    free(b);
    b2->free(b2->state);
    free(b2);
    free(rm);
    free(queries);
    free(r.labels);
    free(r.vecs);
    free(r.live);
    rag_test_rmtree(dir);
    free(dir);
}

static void test_k_larger_than_ntotal(void **state)
{
    (void)state;
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "IDMap2,Flat"), RAG_OK);
    float *v = random_vectors(3);
    int64_t labels[3] = {10, 20, 30};
    assert_int_equal(b->add(b->state, 3, v, labels), RAG_OK);
    float sc[8];
    int64_t lb[8];
    assert_int_equal(b->search(b->state, v, 8, NULL, NULL, sc, lb), RAG_OK);
    assert_int_equal(lb[0], 10);
    assert_true(lb[1] == 20 || lb[1] == 30);
    for (int i = 3; i < 8; i++)
        assert_int_equal(lb[i], -1);
    /* filtered, fewer acceptable than k */
    assert_int_equal(b->search(b->state, v, 8, odd_labels, NULL, sc, lb), RAG_OK);
    assert_int_equal(lb[0], -1);
    /* negative labels are refused */
    int64_t bad = -5;
    assert_int_equal(b->add(b->state, 1, v, &bad), RAG_EINVAL);
    b->free(b->state);
    free(b);
    free(v);
}

static void test_filter_one_percent(void **state)
{
    (void)state;
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "IDMap2,Flat"), RAG_OK);
    const size_t n = 5000;
    ref_set r = {n, malloc(n * sizeof(int64_t)), random_vectors(n), malloc(n)};
    for (size_t i = 0; i < n; i++) {
        r.labels[i] = (int64_t)i;
        r.live[i] = 1;
    }
    assert_int_equal(b->add(b->state, n, r.vecs, r.labels), RAG_OK);
    float *queries = random_vectors(10);
    float sc[10];
    int64_t lb[10];
    for (int qi = 0; qi < 10; qi++) {
        assert_int_equal(b->search(b->state, queries + qi * DIM, 10, only_hundredth, NULL, sc, lb),
                         RAG_OK);
        for (int i = 0; i < 10; i++) {
            assert_true(lb[i] >= 0); /* k results although only 1% qualify */
            assert_int_equal(lb[i] % 100, 0);
            if (i)
                assert_true(sc[i] <= sc[i - 1]);
        }
    }
    check_against_ref(b, &r, queries, 10, 10, only_hundredth, NULL);
    b->free(b->state);
    free(b);
    free(queries);
    free(r.labels);
    free(r.vecs);
    free(r.live);
}

typedef struct thr_arg {
    rag_vector_backend *b;
    const ref_set *r;
    const float *queries;
    int calls;
    int failures;
} thr_arg;

static void *search_thread(void *p)
{
    thr_arg *a = p;
    for (int rep = 0; rep < 20; rep++) {
        float s1[5], s2[5];
        int64_t l1[5], l2[5];
        const float *q = a->queries + (rep % 10) * DIM;
        if (a->b->search(a->b->state, q, 5, odd_labels, &a->calls, s1, l1) != RAG_OK) {
            a->failures++;
            continue;
        }
        ref_topk(a->r, q, 5, odd_labels, NULL, s2, l2);
        for (int i = 0; i < 5; i++)
            if (l1[i] != l2[i])
                a->failures++;
    }
    return NULL;
}

static void test_concurrent_filtered_searches(void **state)
{
    (void)state;
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "IDMap2,Flat"), RAG_OK);
    const size_t n = 3000;
    ref_set r = {n, malloc(n * sizeof(int64_t)), random_vectors(n), malloc(n)};
    for (size_t i = 0; i < n; i++) {
        r.labels[i] = (int64_t)(n - i);
        r.live[i] = 1;
    }
    assert_int_equal(b->add(b->state, n, r.vecs, r.labels), RAG_OK);
    float *queries = random_vectors(10);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){b, &r, queries, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, search_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
        assert_true(args[i].calls > 0); /* the filter ran inside the search */
    }
    b->free(b->state);
    free(b);
    free(queries);
    free(r.labels);
    free(r.vecs);
    free(r.live);
}

static void test_hnsw(void **state)
{
    (void)state;
    char *dir = rag_test_tmpdir("faiss-hnsw");
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "HNSW32"), RAG_OK);
    const size_t n = 500;
    float *v = random_vectors(n);
    int64_t *labels = malloc(n * sizeof *labels);
    for (size_t i = 0; i < n; i++)
        labels[i] = (int64_t)(1000 + i);
    assert_int_equal(b->add(b->state, n, v, labels), RAG_OK);
    assert_int_equal(b->count(b->state), n);
    float sc[5];
    int64_t lb[5];
    assert_int_equal(b->search(b->state, v + 42 * DIM, 5, NULL, NULL, sc, lb), RAG_OK);
    assert_int_equal(lb[0], 1042); /* a vector is its own nearest neighbour */
    assert_int_equal(b->search(b->state, v + 43 * DIM, 5, odd_labels, NULL, sc, lb), RAG_OK);
    assert_int_equal(lb[0], 1043);
    for (int i = 0; i < 5; i++)
        if (lb[i] >= 0)
            assert_int_equal(lb[i] % 2, 1);
    /* HNSW cannot remove: reported cleanly, contents untouched */
    size_t removed = 7;
    assert_int_equal(b->remove(b->state, 1, &labels[3], &removed), RAG_EUNSUPPORTED);
    assert_int_equal(removed, 0);
    assert_int_equal(b->count(b->state), n);
    char path[4200];
    snprintf(path, sizeof path, "%s/hnsw.faiss", dir);
    assert_int_equal(b->save(b->state, path), RAG_OK);
    assert_int_equal(b->load(b->state, path), RAG_OK);
    assert_int_equal(b->count(b->state), n);
    b->free(b->state);
    free(b);
    free(v);
    free(labels);
    rag_test_rmtree(dir);
    free(dir);
}

static void test_ivf(void **state)
{
    (void)state;
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "IVF8,Flat"), RAG_OK);
    const size_t n = 1200;
    ref_set r = {n, malloc(n * sizeof(int64_t)), random_vectors(n), malloc(n)};
    for (size_t i = 0; i < n; i++) {
        r.labels[i] = (int64_t)(i * 2);
        r.live[i] = 0;
    }
    /* before training: buffered and searched exactly */
    assert_int_equal(b->add(b->state, 100, r.vecs, r.labels), RAG_OK);
    memset(r.live, 1, 100);
    assert_int_equal(b->count(b->state), 100);
    check_against_ref(b, &r, r.vecs, 3, 5, NULL, NULL);
    size_t removed = 0;
    assert_int_equal(b->remove(b->state, 1, &r.labels[0], &removed), RAG_OK);
    assert_int_equal(removed, 1);
    r.live[0] = 0;
    check_against_ref(b, &r, r.vecs, 3, 5, NULL, NULL);
    char *dir = rag_test_tmpdir("faiss-ivf");
    char path[4200];
    snprintf(path, sizeof path, "%s/ivf.faiss", dir);
    assert_int_equal(b->save(b->state, path), RAG_ESTATE); /* cannot persist the buffer */
    /* enough vectors: trains, and the search still finds exact self-matches */
    assert_int_equal(b->add(b->state, n - 100, r.vecs + 100 * DIM, r.labels + 100), RAG_OK);
    assert_int_equal(b->count(b->state), n - 1);
    assert_int_equal(b->remove(b->state, 1, &r.labels[500], &removed), RAG_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(b->count(b->state), n - 2);
    float sc[5];
    int64_t lb[5];
    assert_int_equal(b->search(b->state, r.vecs + 700 * DIM, 5, NULL, NULL, sc, lb), RAG_OK);
    assert_int_equal(lb[0], 1400);
    assert_int_equal(b->search(b->state, r.vecs + 701 * DIM, 5, only_hundredth, NULL, sc, lb),
                     RAG_OK);
    for (int i = 0; i < 5; i++)
        if (lb[i] >= 0)
            assert_int_equal(lb[i] % 100, 0);
    assert_int_equal(b->save(b->state, path), RAG_OK);
    assert_int_equal(b->load(b->state, path), RAG_OK);
    assert_int_equal(b->count(b->state), n - 2);
    b->free(b->state);
    free(b);
    free(r.labels);
    free(r.vecs);
    free(r.live);
    rag_test_rmtree(dir);
    free(dir);
}

/* A restrictive filter on IVF: the backend visits more lists (nprobe) until k selected
 * vectors are found, when that many exist. */
static int one_in_twenty(void *arg, int64_t label)
{
    (void)arg;
    return label % 40 == 0; /* labels are 2i: one vector in twenty */
}

static void filter_fills_k(const char *factory)
{
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, factory), RAG_OK);
    const size_t n = 4000, k = 10;
    int64_t *labels = malloc(n * sizeof *labels);
    float *vecs = random_vectors(n);
    for (size_t i = 0; i < n; i++)
        labels[i] = (int64_t)(i * 2);
    assert_int_equal(b->add(b->state, n, vecs, labels), RAG_OK);
    float sc[10];
    int64_t lb[10];
    for (size_t q = 0; q < 50; q++) {
        assert_int_equal(b->search(b->state, vecs + (q * 37 % n) * DIM, k, one_in_twenty, NULL,
                                   sc, lb),
                         RAG_OK);
        for (size_t i = 0; i < k; i++) {
            if (lb[i] < 0)
                fail_msg("%s: query %zu got %zu of %zu results with 200 selectable", factory, q,
                         i, k);
            assert_int_equal(lb[i] % 40, 0);
        }
    }
    b->free(b->state);
    free(b);
    free(labels);
    free(vecs);
}

static void test_ivf_filter_fills_k(void **state)
{
    (void)state;
    filter_fills_k("IVF64,Flat"); /* nprobe 1 of 64 lists holds ~3 selectable vectors */
}

static void test_errors(void **state)
{
    (void)state;
    rag_vector_backend *b = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, "NoSuchIndex42"), RAG_EINVAL);
    assert_null(b);
    assert_true(strlen(rag_error_last()) > 0);
    assert_int_equal(rag_vector_backend_faiss_new(&b, 0, NULL), RAG_EINVAL);
    assert_int_equal(rag_vector_backend_faiss_new(NULL, DIM, NULL), RAG_EINVAL);

    char *dir = rag_test_tmpdir("faiss-errors");
    assert_int_equal(rag_vector_backend_faiss_new(&b, DIM, NULL), RAG_OK);
    float *v = random_vectors(4);
    int64_t labels[4] = {1, 2, 3, 4};
    assert_int_equal(b->add(b->state, 4, v, labels), RAG_OK);
    char path[4200], tmp[4300];
    /* a directory that does not exist: fails, leaves nothing behind */
    snprintf(path, sizeof path, "%s/missing/vectors.faiss", dir);
    assert_int_equal(b->save(b->state, path), RAG_EINDEX);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
    /* load: missing file, garbage file, other dimension */
    assert_int_equal(b->load(b->state, path), RAG_ENOTFOUND);
    snprintf(path, sizeof path, "%s/garbage.faiss", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("this is not a faiss index", f);
    fclose(f);
    assert_int_equal(b->load(b->state, path), RAG_ECORRUPT);
    assert_int_equal(b->count(b->state), 4); /* a failed load keeps the contents */
    rag_vector_backend *other = NULL;
    assert_int_equal(rag_vector_backend_faiss_new(&other, DIM * 2, NULL), RAG_OK);
    snprintf(path, sizeof path, "%s/vectors.faiss", dir);
    assert_int_equal(b->save(b->state, path), RAG_OK);
    assert_int_equal(other->load(other->state, path), RAG_ECORRUPT);
    other->free(other->state);
    free(other);
    b->free(b->state);
    free(b);
    free(v);
    rag_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_flat),
        cmocka_unit_test(test_k_larger_than_ntotal),
        cmocka_unit_test(test_filter_one_percent),
        cmocka_unit_test(test_ivf_filter_fills_k),
        cmocka_unit_test(test_concurrent_filtered_searches),
        cmocka_unit_test(test_hnsw),
        cmocka_unit_test(test_ivf),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
