/*
 * bench_remote: throughput of the remote (OpenAI-compatible HTTP) embedding provider against
 * the in-process test server of tests/embed/fake_openai_server.c, on real text: the first
 * ~2000 SciFact abstracts, each cut to at most 1600 bytes (ragcore's default chunk_max) on a
 * UTF-8 boundary.
 *
 * For a server latency of 0 ms (pure HTTP + JSON cost on loopback) and of 2 ms per request
 * (a stand-in for model time; the server sleeps before answering), every batch_size in
 * {1, 16, 64, 256} embeds all texts in one `embed` call (the provider splits them into
 * requests of batch_size) and reports texts/s.  Output: one JSON line per figure on stdout,
 * then a table.
 *
 * Each figure is the median of REPS runs.
 *
 * Usage: bench_remote [DATA_DIR] [N_TEXTS] [REPS]   (DATA_DIR default: $RAG_SHARED_DATA,
 * else <source>/../shared/data; "" for the default; N_TEXTS 2000; REPS 3)
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragcore/ragcore.h"
#include "fake_openai_server.h"

#ifndef RAG_BENCH_SOURCE_DIR
#define RAG_BENCH_SOURCE_DIR "."
#endif

#define DIM 384
#define CHUNK_MAX 1600

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0u) == 0x80u)
        n--;
    return n;
}

/* Load up to `want` abstracts ("text" of each JSONL line). */
static size_t load_texts(const char *data_dir, size_t want, char ***texts_out, size_t **lens_out,
                         size_t *bytes_out)
{
    static const char *const names[] = {"scifact/docs.jsonl", "scifact/corpus.jsonl"};
    FILE *f = NULL;
    char path[4096];
    for (size_t i = 0; i < 2 && !f; i++) {
        int pl = snprintf(path, sizeof path, "%s/%s", data_dir, names[i]);
        if (pl > 0 && (size_t)pl < sizeof path)
            f = fopen(path, "r");
    }
    if (!f) {
        fprintf(stderr, "bench_remote: no scifact/docs.jsonl under %s\n", data_dir);
        return 0;
    }
    char **texts = calloc(want, sizeof *texts);
    size_t *lens = calloc(want, sizeof *lens);
    size_t n = 0, bytes = 0;
    char *line = NULL;
    size_t cap = 0;
    while (n < want && getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        const char *t = o ? json_string_value(json_object_get(o, "text")) : NULL;
        if (t && *t) {
            size_t len = strlen(t);
            if (len > CHUNK_MAX)
                len = utf8_cut(t, CHUNK_MAX);
            texts[n] = malloc(len + 1);
            memcpy(texts[n], t, len);
            texts[n][len] = '\0';
            lens[n] = len;
            bytes += len;
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    *texts_out = texts;
    *lens_out = lens;
    *bytes_out = bytes;
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct figure {
    unsigned int latency_ms;
    size_t batch;
    double seconds, texts_per_s;
    unsigned long long requests;
} figure;

int main(int argc, char **argv)
{
    const char *data_dir = argc > 1 && argv[1][0] ? argv[1] : getenv("RAG_SHARED_DATA");
    char default_dir[4096];
    if (!data_dir || !*data_dir) {
        snprintf(default_dir, sizeof default_dir, "%s/../shared/data", RAG_BENCH_SOURCE_DIR);
        data_dir = default_dir;
    }
    size_t want = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 2000;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (reps < 1 || reps > 16)
        reps = 3;
    char **texts = NULL;
    size_t *lens = NULL, bytes = 0;
    size_t n = load_texts(data_dir, want, &texts, &lens, &bytes);
    if (n == 0)
        return 1;
    fprintf(stderr, "bench_remote: %zu SciFact abstracts (%.1f KiB, mean %zu bytes), dim %d\n",
            n, bytes / 1024.0, bytes / n, DIM);

    fake_openai *srv = NULL;
    if (fake_openai_start(&srv, DIM) != 0) {
        perror("bench_remote: fake server");
        return 1;
    }
    float *out = malloc(sizeof(float) * n * DIM);
    static const unsigned int latencies[] = {0, 2};
    static const size_t batches[] = {1, 16, 64, 256};
    figure figs[8];
    size_t nf = 0;
    int rc = 0;

    for (size_t li = 0; li < 2 && !rc; li++) {
        for (size_t bi = 0; bi < 4 && !rc; bi++) {
            rag_embed_remote_options o = RAG_EMBED_REMOTE_OPTIONS_INIT;
            o.base_url = fake_openai_base_url(srv);
            o.model = "bench-model";
            o.dim = DIM;
            o.batch_size = batches[bi];
            o.timeout_ms = 60000;
            rag_embed_provider p;
            if ((rc = rag_embed_remote_init(&p, &o)) != RAG_OK) {
                fprintf(stderr, "bench_remote: init: %s\n", rag_error_last());
                break;
            }
            /* warm-up: the connection and the server's thread exist before timing */
            fake_openai_set_latency(srv, 0);
            if ((rc = p.embed(p.state, (const char *const *)texts, lens, 1, out)) != RAG_OK) {
                fprintf(stderr, "bench_remote: warm-up: %s\n", rag_error_last());
                rag_embed_provider_release(&p);
                break;
            }
            rag_embed_remote_stats s0, s1;
            fake_openai_set_latency(srv, latencies[li]);
            /* the median of `reps` runs: the machine may be shared */
            double runs[16];
            for (int r = 0; r < reps && !rc; r++) {
                rag_embed_remote_stats_get(&p, &s0);
                double t0 = now_s();
                rc = p.embed(p.state, (const char *const *)texts, lens, n, out);
                runs[r] = now_s() - t0;
                rag_embed_remote_stats_get(&p, &s1);
            }
            if (rc) {
                fprintf(stderr, "bench_remote: embed: %s\n", rag_error_last());
                rag_embed_provider_release(&p);
                break;
            }
            qsort(runs, (size_t)reps, sizeof runs[0], cmp_double);
            double dt = runs[reps / 2];
            /* the vectors must be the server's: check one row against its formula */
            float want_row[DIM];
            fake_openai_vector(DIM, texts[n - 1], lens[n - 1], want_row);
            double dot = 0, nn = 0;
            for (int d = 0; d < DIM; d++) {
                dot += (double)want_row[d] * out[(n - 1) * DIM + d];
                nn += (double)want_row[d] * want_row[d];
            }
            if (dot / sqrt(nn) < 0.99999) {
                fprintf(stderr, "bench_remote: wrong vector for the last text\n");
                rc = 1;
            }
            figure *fg = &figs[nf++];
            fg->latency_ms = latencies[li];
            fg->batch = batches[bi];
            fg->seconds = dt;
            fg->texts_per_s = (double)n / dt;
            fg->requests = s1.requests - s0.requests;
            printf("{\"bench\":\"remote\",\"server_latency_ms\":%u,\"batch_size\":%zu,"
                   "\"texts\":%zu,\"dim\":%d,\"requests\":%llu,\"runs\":%d,"
                   "\"median_seconds\":%.4f,\"texts_per_s\":%.1f,\"ms_per_request\":%.3f}\n",
                   fg->latency_ms, fg->batch, n, DIM, fg->requests, reps, dt, fg->texts_per_s,
                   1000.0 * dt / (double)fg->requests);
            fflush(stdout);
            rag_embed_provider_release(&p);
        }
    }
    fake_openai_stop(srv);

    if (!rc) {
        printf("\n%-18s %-10s %-9s %-10s %-12s %-10s\n", "server latency", "batch", "requests",
               "seconds", "texts/s", "vs batch 1");
        for (size_t i = 0; i < nf; i++) {
            const figure *base = &figs[i - i % 4];
            printf("%-18s %-10zu %-9llu %-10.3f %-12.0f x%.1f\n",
                   figs[i].latency_ms ? "2 ms/request" : "0 (loopback)", figs[i].batch,
                   figs[i].requests, figs[i].seconds, figs[i].texts_per_s,
                   figs[i].texts_per_s / base->texts_per_s);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    free(out);
    return rc ? 1 : 0;
}
