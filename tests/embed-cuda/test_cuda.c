/* The CUDA embedding provider.  Without a device (CI, and builds without CUDA) the tests check
 * that rag_embed_cuda_init() refuses cleanly and leaves the source provider untouched, then
 * skip.  With a device: parity with the cpu provider (max abs difference <= 1e-5) on SciFact
 * in hash and table mode, batch sizes from 1 to several device batches, two threads at once,
 * and a whole put/drain/search through the public API giving the cpu provider's results. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/ragcore.h"
#include "ragcore/providers.h"
#include "ragcore/sys/embed_cuda.h"
#include "rag_text.h"
#include "../embed-cpu/scifact_load.h"
#include "test_support.h"

#define N_DOCS 3000
#define PARITY_TOL 1e-5

static int have_device(void) { return rag_embed_cuda_device_count() > 0; }

static void skip_without_device(void)
{
    if (!have_device()) {
        printf("no CUDA device: parity skipped\n");
        skip();
    }
}

/* ---- without a device ------------------------------------------------------------------ */

static void test_refuses_cleanly(void **st)
{
    (void)st;
    assert_true(rag_embed_cuda_device_count() >= 0);

    rag_embed_provider src, copy, out;
    assert_int_equal(rag_embed_cpu_hash_init(&src, 384), RAG_OK);
    memcpy(&copy, &src, sizeof copy);
    memset(&out, 0, sizeof out);

    /* A source without a bag (a version-1 provider): never usable, device or not. */
    rag_embed_provider v1 = src;
    v1.version = 1;
    assert_int_equal(rag_embed_cuda_init(&out, &v1, NULL), RAG_EUNSUPPORTED);

    /* Bad options are refused without touching the source either. */
    rag_embed_cuda_options o = RAG_EMBED_CUDA_OPTIONS_INIT;
    o.streams = 17;
    int rc = rag_embed_cuda_init(&out, &src, &o);
    assert_true(rc == RAG_EINVAL || rc == RAG_EUNSUPPORTED); /* the latter without CUDA */
    assert_memory_equal(&src, &copy, sizeof src);

    /* Stats of a provider that is not a CUDA one. */
    rag_embed_cuda_stats s;
    assert_int_equal(rag_embed_cuda_stats_get(&src, &s), RAG_EINVAL);
    assert_int_equal(rag_embed_cuda_stats_get(NULL, &s), RAG_EINVAL);

    if (!have_device()) {
        assert_int_equal(rag_embed_cuda_init(&out, &src, NULL), RAG_EUNSUPPORTED);
        assert_memory_equal(&src, &copy, sizeof src); /* still the caller's */
        /* ... and still works */
        const char *t[1] = {"protein kinase"};
        size_t l[1] = {strlen(t[0])};
        float v[384];
        assert_int_equal(src.embed(src.state, t, l, 1, v), 0);
        rag_embed_provider_release(&src);
        printf("no CUDA device: parity skipped\n");
        skip();
    }
    rag_embed_provider_release(&src);
}

/* ---- with a device ---------------------------------------------------------------------- */

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

/* Embed the corpus with `p` in calls of `step` texts (0: one call). */
static void embed_steps(const rag_embed_provider *p, const scifact_docs *d, size_t step,
                        float *out)
{
    if (step == 0)
        step = d->n;
    for (size_t i = 0; i < d->n; i += step) {
        size_t m = d->n - i < step ? d->n - i : step;
        assert_int_equal(p->embed(p->state, (const char *const *)d->texts + i, d->lens + i, m,
                                  out + i * p->dim),
                         0);
    }
}

/* Wrap a fresh copy of a cpu provider (made by `make`) in a CUDA provider; check the source
 * handover; compare on the corpus with several call sizes.  Returns the max difference. */
typedef int (*make_fn)(rag_embed_provider *out, void *arg);

static double parity_case(make_fn make, void *arg, const scifact_docs *d, const char *what)
{
    rag_embed_provider cpu, src, gpu;
    assert_int_equal(make(&cpu, arg), RAG_OK);
    assert_int_equal(make(&src, arg), RAG_OK);
    rag_embed_cuda_options o = RAG_EMBED_CUDA_OPTIONS_INIT;
    o.batch_texts = 512; /* a corpus call spans several device batches and every stream */
    o.streams = 3;
    assert_int_equal(rag_embed_cuda_init(&gpu, &src, &o), RAG_OK);
    assert_null(src.state); /* ownership moved */
    assert_null(src.embed);
    assert_int_equal(gpu.version, RAG_EMBED_PROVIDER_VERSION);
    assert_int_equal(gpu.dim, cpu.dim);
    char f1[RAG_EMBED_FINGERPRINT_MAX], f2[RAG_EMBED_FINGERPRINT_MAX];
    assert_int_equal(cpu.fingerprint(cpu.state, f1, sizeof f1), 0);
    assert_int_equal(gpu.fingerprint(gpu.state, f2, sizeof f2), 0);
    assert_string_equal(f1, f2);

    unsigned int dim = cpu.dim;
    size_t count = d->n * dim;
    float *want = malloc(count * sizeof *want), *got = malloc(count * sizeof *got);
    embed_steps(&cpu, d, 0, want);
    double worst = 0;
    size_t steps[4] = {0, 1, 7, 1000};
    for (int k = 0; k < 4; k++) {
        scifact_docs sub = *d;
        if (steps[k] == 1)
            sub.n = 200; /* one text per call: a query's path, on a slice of the corpus */
        memset(got, 0xff, count * sizeof *got);
        embed_steps(&gpu, &sub, steps[k], got);
        double diff = max_abs_diff(want, got, sub.n * dim);
        printf("  %s d%u, calls of %zu texts: max |diff| %.3g\n", what, dim,
               steps[k] ? steps[k] : sub.n, diff);
        if (diff > worst)
            worst = diff;
    }
    rag_embed_cuda_stats s;
    assert_int_equal(rag_embed_cuda_stats_get(&gpu, &s), 0);
    assert_true(s.texts >= 3 * d->n);
    assert_true(s.terms > 0 && s.bytes_up > 0 && s.bytes_down >= s.texts * dim * sizeof(float));
    assert_true(s.kernel_s > 0 && s.total_s >= s.featurize_s);
    printf("  %s: %llu texts: featurize %.3f s, up %.3f s, kernel %.3f s, down %.3f s, total "
           "%.3f s\n",
           what, s.texts, s.featurize_s, s.upload_s, s.kernel_s, s.download_s, s.total_s);

    /* empty and stopword-only texts give the zero vector; NULL text with a length is EINVAL */
    const char *t[3] = {"", "the of and", NULL};
    size_t l[3] = {0, 10, 0};
    float *z = malloc(3 * dim * sizeof *z);
    memset(z, 0x7f, 3 * dim * sizeof *z);
    assert_int_equal(gpu.embed(gpu.state, t, l, 3, z), 0);
    for (size_t i = 0; i < 3 * (size_t)dim; i++)
        assert_true(z[i] == 0.0f);
    l[2] = 4;
    assert_int_equal(gpu.embed(gpu.state, t, l, 3, z), RAG_EINVAL);
    free(z);

    free(want);
    free(got);
    rag_embed_provider_release(&gpu);
    rag_embed_provider_release(&cpu);
    return worst;
}

static int make_hash(rag_embed_provider *out, void *arg)
{
    return rag_embed_cpu_hash_init(out, *(unsigned int *)arg);
}

typedef struct table_def {
    const char **toks;
    size_t n;
    float *rows;
    unsigned int dim;
} table_def;

static int make_table(rag_embed_provider *out, void *arg)
{
    table_def *t = arg;
    return rag_embed_cpu_table_init(out, t->toks, t->n, t->rows, t->dim, "scifact-vocab");
}

typedef struct vocab {
    char **tok;
    size_t n, cap;
    uint64_t *slot;
    size_t mask;
} vocab;

static int vocab_add(void *arg, const char *tok, size_t len)
{
    vocab *v = arg;
    if (v->n == v->cap)
        return 0;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)tok[i]) * 1099511628211ULL;
    size_t j = h & v->mask;
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

static void test_parity_hash(void **st)
{
    (void)st;
    skip_without_device();
    scifact_docs d;
    assert_int_equal(scifact_load(&d, N_DOCS), 0);
    assert_true(d.n >= 2000);
    unsigned int dims[3] = {8, 384, 4096};
    for (int k = 0; k < 3; k++) {
        double diff = parity_case(make_hash, &dims[k], &d, "hash");
        assert_true(diff <= PARITY_TOL);
    }
    scifact_free(&d);
}

static void test_parity_table(void **st)
{
    (void)st;
    skip_without_device();
    scifact_docs d;
    assert_int_equal(scifact_load(&d, N_DOCS), 0);
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
    table_def t = {0};
    t.toks = malloc(v.n * sizeof *t.toks);
    for (size_t i = 0; i < v.n; i += 2) /* every other word: out-of-vocabulary tokens too */
        t.toks[t.n++] = v.tok[i];
    /* 50: few components a lane; 384: the usual; 1000: more than a warp keeps in registers */
    unsigned int dims[3] = {50, 384, 1000};
    for (int k = 0; k < 3; k++) {
        t.dim = dims[k];
        t.rows = malloc(t.n * t.dim * sizeof *t.rows);
        uint64_t x = 0x9E3779B97F4A7C15ULL;
        for (size_t i = 0; i < t.n * t.dim; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t.rows[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        }
        double diff = parity_case(make_table, &t, &d, "table");
        assert_true(diff <= PARITY_TOL);
        free(t.rows);
    }
    free(t.toks);
    for (size_t i = 0; i < v.n; i++)
        free(v.tok[i]);
    free(v.tok);
    free(v.slot);
    scifact_free(&d);
}

typedef struct thr_arg {
    const rag_embed_provider *p;
    const scifact_docs *d;
    const float *want;
    size_t step;
    double worst;
    int failures;
} thr_arg;

static void *thr_main(void *a)
{
    thr_arg *t = a;
    unsigned int dim = t->p->dim;
    float *out = malloc(t->step * dim * sizeof *out);
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < t->d->n; i += t->step) {
            size_t m = t->d->n - i < t->step ? t->d->n - i : t->step;
            if (t->p->embed(t->p->state, (const char *const *)t->d->texts + i, t->d->lens + i, m,
                            out) != 0) {
                t->failures++;
                continue;
            }
            double diff = max_abs_diff(out, t->want + i * dim, m * dim);
            if (diff > t->worst)
                t->worst = diff;
        }
    free(out);
    return NULL;
}

static void test_two_threads(void **st)
{
    (void)st;
    skip_without_device();
    scifact_docs d;
    assert_int_equal(scifact_load(&d, N_DOCS), 0);
    rag_embed_provider cpu, src, gpu;
    assert_int_equal(rag_embed_cpu_hash_init(&cpu, 384), RAG_OK);
    assert_int_equal(rag_embed_cpu_hash_init(&src, 384), RAG_OK);
    rag_embed_cuda_options o = RAG_EMBED_CUDA_OPTIONS_INIT;
    o.batch_texts = 256;
    assert_int_equal(rag_embed_cuda_init(&gpu, &src, &o), RAG_OK);
    assert_int_equal(gpu.flags & RAG_EMBED_SINGLE_THREADED, 0);
    float *want = malloc(d.n * 384 * sizeof *want);
    embed_steps(&cpu, &d, 0, want);
    thr_arg a[2] = {{&gpu, &d, want, 700, 0, 0}, {&gpu, &d, want, 1, 0, 0}};
    scifact_docs small = d;
    small.n = 300; /* the one-text-per-call thread: a query stream next to a bulk load */
    a[1].d = &small;
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a[i].failures, 0);
        assert_true(a[i].worst <= PARITY_TOL);
    }
    free(want);
    rag_embed_provider_release(&gpu);
    rag_embed_provider_release(&cpu);
    scifact_free(&d);
}

/* ---- the whole pipeline ----------------------------------------------------------------- */

static rag_ctx *open_with(const char *root, rag_embed_provider *p)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.provider = p;
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    return ctx;
}

static void put_docs(rag_ctx *ctx, const scifact_docs *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "doc%zu", i);
        rag_doc doc = {0};
        doc.id = id;
        doc.data = d->texts[i];
        doc.size = d->lens[i];
        doc.mime = "text/plain";
        assert_int_equal(rag_doc_put(ctx, &doc, NULL), RAG_OK);
    }
    assert_int_equal(rag_drain(ctx, 120000), RAG_OK);
}

/* Same hits with the same scores (1e-4); near-ties may swap, so hits are matched by
 * (doc, chunk) and a hit missing on one side must score at the cut-off of the other. */
static void same_results(rag_ctx *a, rag_ctx *b, const char *text, rag_search_mode mode)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = 10;
    q.unrestricted = 1;
    q.mode = mode;
    rag_results *ra = NULL, *rb = NULL;
    assert_int_equal(rag_search(a, &q, &ra), RAG_OK);
    assert_int_equal(rag_search(b, &q, &rb), RAG_OK);
    assert_int_equal(ra->count, rb->count);
    assert_true(ra->count > 0);
    float cut = rb->items[rb->count - 1].score;
    for (size_t i = 0; i < ra->count; i++) {
        const rag_result *x = &ra->items[i];
        int found = 0;
        for (size_t j = 0; j < rb->count; j++) {
            const rag_result *y = &rb->items[j];
            if (strcmp(x->doc_id, y->doc_id) == 0 && x->chunk == y->chunk) {
                assert_true(fabsf(x->score - y->score) <= 1e-4f);
                found = 1;
            }
        }
        if (!found)
            assert_true(fabsf(x->score - cut) <= 1e-4f);
        assert_true(fabsf(x->score - rb->items[i].score) <= 1e-4f); /* rank by rank too */
    }
    rag_results_free(ra);
    rag_results_free(rb);
}

static void test_pipeline_equals_cpu(void **st)
{
    (void)st;
    skip_without_device();
    scifact_docs d;
    assert_int_equal(scifact_load(&d, 300), 0);
    char *root_cpu = rag_test_tmpdir("cuda-pipeline-cpu");
    char *root_gpu = rag_test_tmpdir("cuda-pipeline-gpu");

    rag_embed_provider cpu, src, gpu;
    assert_int_equal(rag_embed_cpu_hash_init(&cpu, 384), RAG_OK);
    assert_int_equal(rag_embed_cpu_hash_init(&src, 384), RAG_OK);
    assert_int_equal(rag_embed_cuda_init(&gpu, &src, NULL), RAG_OK);
    rag_ctx *a = open_with(root_cpu, &cpu);
    rag_ctx *b = open_with(root_gpu, &gpu);
    put_docs(a, &d, d.n);
    put_docs(b, &d, d.n);
    const char *queries[] = {"protein kinase signalling in cancer cells",
                             "vitamin D deficiency", "randomized controlled trial mortality",
                             "gene expression in stem cells", "antibiotic resistance bacteria"};
    for (size_t i = 0; i < sizeof queries / sizeof *queries; i++) {
        same_results(a, b, queries[i], RAG_MODE_VECTOR);
        same_results(a, b, queries[i], RAG_MODE_DEFAULT);
    }
    rag_close(a);
    rag_close(b);

    /* Same fingerprint: the cpu-built root opens with the CUDA provider, no re-embed. */
    assert_int_equal(rag_embed_cpu_hash_init(&src, 384), RAG_OK);
    assert_int_equal(rag_embed_cuda_init(&gpu, &src, NULL), RAG_OK);
    a = open_with(root_cpu, &gpu);
    rag_query q = RAG_QUERY_INIT;
    q.text = queries[0];
    q.unrestricted = 1;
    q.mode = RAG_MODE_VECTOR;
    rag_results *r = NULL;
    assert_int_equal(rag_search(a, &q, &r), RAG_OK);
    assert_true(r->count > 0);
    rag_results_free(r);
    rag_close(a);

    rag_test_rmtree(root_cpu);
    rag_test_rmtree(root_gpu);
    free(root_cpu);
    free(root_gpu);
    scifact_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refuses_cleanly),
        cmocka_unit_test(test_parity_hash),
        cmocka_unit_test(test_parity_table),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_pipeline_equals_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
