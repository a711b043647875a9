/*
 * Re-embed rate: how fast a root moves to a provider of another fingerprint.
 *
 * 1. Ingest SciFact (5,183 abstracts with titles) through the full pipeline with the cpu
 *    provider (hash, 384-d), fsync on, and drain: the bulk-ingest baseline.
 * 2. Reopen with the cpu provider at 256-d and rag_options.reembed = 1, then drain: the
 *    re-embed (rag_open's scan, which queues every active version, plus the pipeline work).
 * 3. Baseline in the same run: the 256-d provider alone over the same chunk texts, on one
 *    thread (the embed worker's share of the work).
 *
 * Prints one JSON line per figure, then a short table.  Usage:
 *   bench_reembed [DATA_DIR]   (DATA_DIR: the folder holding scifact/; default
 *                               $RAG_SHARED_DATA, else <source>/../shared/data)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_docs.h"
#include "ragcore/ragcore.h"

#ifndef RAG_BENCH_SOURCE_DIR
#define RAG_BENCH_SOURCE_DIR "."
#endif


static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_root(const char *root, unsigned int dim, int reembed, rag_ctx **ctx)
{
    rag_options o;
    rag_options_init(&o);
    rag_embed_provider p;
    if (rag_embed_cpu_hash_init(&p, dim))
        return -1;
    o.provider = &p;
    o.reembed = reembed;
    int rc = rag_open(ctx, root, &o);
    if (rc)
        fprintf(stderr, "bench_reembed: open: %s\n", rag_error_last());
    return rc;
}

static void emit(const char *figure, double value, const char *unit, const char *extra)
{
    printf("{\"bench\":\"reembed\",\"figure\":\"%s\",\"value\":%.1f,\"unit\":\"%s\"%s%s}\n",
           figure, value, unit, extra ? "," : "", extra ? extra : "");
}

int main(int argc, char **argv)
{
    const char *data_dir = argc > 1 ? argv[1] : getenv("RAG_SHARED_DATA");
    char def[4096], path[4200];
    if (!data_dir || !*data_dir) {
        snprintf(def, sizeof def, "%s/../shared/data", RAG_BENCH_SOURCE_DIR);
        data_dir = def;
    }
    snprintf(path, sizeof path, "%s/scifact/docs.jsonl", data_dir);
    bench_doc *docs = NULL;
    size_t n = 0;
    if (bench_docs_load("bench_reembed", path, 0, &docs, &n))
        return 1;
    char root[] = "/tmp/bench_reembed_XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    fprintf(stderr, "bench_reembed: %zu SciFact documents, root %s\n", n, root);

    /* 1. bulk ingest, 384-d */
    rag_ctx *ctx = NULL;
    if (open_root(root, 384, 0, &ctx))
        return 1;
    double t0 = now_s();
    const size_t batch = 256;
    rag_doc *rd = calloc(batch, sizeof *rd);
    rag_put_result *res = calloc(batch, sizeof *res);
    for (size_t i = 0; i < n; i += batch) {
        size_t m = n - i < batch ? n - i : batch;
        for (size_t j = 0; j < m; j++) {
            memset(&rd[j], 0, sizeof rd[j]);
            rd[j].id = docs[i + j].id;
            rd[j].title = docs[i + j].title;
            rd[j].data = docs[i + j].text;
            rd[j].size = strlen(docs[i + j].text);
            rd[j].mime = "text/plain";
        }
        if (rag_doc_put_batch(ctx, rd, m, res)) {
            fprintf(stderr, "bench_reembed: put: %s\n", rag_error_last());
            return 1;
        }
    }
    if (rag_drain(ctx, 0)) {
        fprintf(stderr, "bench_reembed: drain: %s\n", rag_error_last());
        return 1;
    }
    double ingest_s = now_s() - t0;
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    rag_status(ctx, &st);
    uint64_t chunks = st.chunks;
    rag_close(ctx);

    /* 2. re-embed with the 256-d provider */
    t0 = now_s();
    if (open_root(root, 256, 1, &ctx))
        return 1;
    double scan_s = now_s() - t0;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    rag_status(ctx, &st);
    uint64_t pending = st.reembed_pending;
    if (rag_drain(ctx, 0)) {
        fprintf(stderr, "bench_reembed: drain: %s\n", rag_error_last());
        return 1;
    }
    double reembed_s = now_s() - t0;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    rag_status(ctx, &st);
    if (st.reembed_pending != 0 || st.model_generation != 1) {
        fprintf(stderr, "bench_reembed: re-embed incomplete: %llu pending, generation %llu\n",
                (unsigned long long)st.reembed_pending,
                (unsigned long long)st.model_generation);
        return 1;
    }
    /* every document still found, on the vector side, by its own title */
    size_t found = 0, probes = 0;
    for (size_t i = 0; i < n; i += n / 50 + 1) {
        rag_query q = RAG_QUERY_INIT;
        q.text = docs[i].title;
        q.k = 10;
        q.unrestricted = 1;
        q.mode = RAG_MODE_VECTOR;
        rag_results *r = NULL;
        if (rag_search(ctx, &q, &r) == RAG_OK) {
            for (size_t j = 0; j < r->count; j++)
                if (!strcmp(r->items[j].doc_id, docs[i].id)) {
                    found++;
                    break;
                }
            rag_results_free(r);
        }
        probes++;
    }
    rag_close(ctx);

    /* 3. the provider alone on the same texts (titles are part of each chunk's lexical
     *    terms, not of what is embedded: embed the chunk texts, i.e. the abstracts) */
    rag_embed_provider p;
    rag_embed_cpu_hash_init(&p, 256);
    float *out = malloc(256 * sizeof *out * 64);
    const char *texts[64];
    size_t lens[64];
    t0 = now_s();
    for (size_t i = 0; i < n; i += 64) {
        size_t m = n - i < 64 ? n - i : 64;
        for (size_t j = 0; j < m; j++) {
            texts[j] = docs[i + j].text;
            lens[j] = strlen(docs[i + j].text);
        }
        p.embed(p.state, texts, lens, m, out);
    }
    double provider_s = now_s() - t0;
    rag_embed_provider_release(&p);
    free(out);

    char extra[256];
    snprintf(extra, sizeof extra, "\"docs\":%zu,\"chunks\":%llu,\"seconds\":%.2f", n,
             (unsigned long long)chunks, ingest_s);
    emit("bulk_ingest_chunks_per_s", (double)chunks / ingest_s, "chunks/s", extra);
    snprintf(extra, sizeof extra,
             "\"docs\":%zu,\"chunks\":%llu,\"seconds\":%.2f,\"open_scan_seconds\":%.2f,"
             "\"pending_after_open\":%llu",
             n, (unsigned long long)chunks, reembed_s, scan_s, (unsigned long long)pending);
    emit("reembed_chunks_per_s", (double)chunks / reembed_s, "chunks/s", extra);
    emit("reembed_docs_per_s", (double)n / reembed_s, "docs/s", NULL);
    snprintf(extra, sizeof extra, "\"texts\":%zu,\"seconds\":%.2f,\"threads\":1", n, provider_s);
    emit("provider_only_texts_per_s", (double)n / provider_s, "texts/s", extra);
    snprintf(extra, sizeof extra, "\"probes\":%zu", probes);
    emit("vector_self_retrieval_after_reembed", 100.0 * (double)found / (double)probes, "%",
         extra);

    fprintf(stderr, "\n%-36s %12s\n", "re-embed (SciFact, cpu 384 -> 256)", "rate");
    fprintf(stderr, "%-36s %9.0f chunks/s (%.1f s)\n", "bulk ingest, durable", chunks / ingest_s,
            ingest_s);
    fprintf(stderr, "%-36s %9.0f chunks/s (%.1f s, open %.2f s)\n", "re-embed, durable",
            chunks / reembed_s, reembed_s, scan_s);
    fprintf(stderr, "%-36s %9.0f texts/s (%.2f s)\n", "provider alone, 1 thread", n / provider_s,
            provider_s);

    bench_docs_free(docs, n);
    free(rd);
    free(res);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_reembed: could not remove %s\n", root);
    return 0;
}
