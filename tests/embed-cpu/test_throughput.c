/* Throughput of the CPU hash provider over real SciFact abstracts (printed, not asserted:
 * timings depend on the machine; the assertions only check that every row came out unit
 * length or zero). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragcore/providers.h"
#include "rag_common.h"
#include "scifact_load.h"
#include "test_support.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_hash_throughput(void **st)
{
    (void)st;
    scifact_docs d;
    if (scifact_load(&d, 5000) != 0) {
        fprintf(stderr, "scifact missing: skipped\n");
        skip();
    }
    const unsigned int dim = 384;
    const size_t batch = 64;
    rag_embed_provider p;
    assert_int_equal(rag_embed_cpu_hash_init(&p, dim), RAG_OK);
    float *out = malloc(d.n * dim * sizeof *out);
    size_t bytes = 0;
    for (size_t i = 0; i < d.n; i++)
        bytes += d.lens[i];

    double t0 = now_s();
    for (size_t i = 0; i < d.n; i += batch) {
        size_t m = d.n - i < batch ? d.n - i : batch;
        assert_int_equal(p.embed(p.state, (const char *const *)d.texts + i, d.lens + i, m,
                                 out + i * dim),
                         0);
    }
    double dt = now_s() - t0;
    printf("cpu hash d%u: %zu texts (%.1f MB) in %.3f s: %.0f chunks/s, %.1f MB/s\n", dim, d.n,
           bytes / 1e6, dt, d.n / dt, bytes / 1e6 / dt);

    size_t zero = 0;
    for (size_t i = 0; i < d.n; i++) {
        double n2 = 0;
        for (unsigned int j = 0; j < dim; j++)
            n2 += (double)out[i * dim + j] * out[i * dim + j];
        if (n2 == 0)
            zero++;
        else
            assert_float_equal(n2, 1.0, 1e-5);
    }
    assert_true(zero < d.n / 100);
    free(out);
    rag_embed_provider_release(&p);
    scifact_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
