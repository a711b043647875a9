/*
 * bench_scifact: end-to-end benchmark of ragcore on BEIR SciFact (5,183 abstracts, 300 claims).
 *
 *   bench_scifact [DATA_DIR]      DATA_DIR holds scifact/{docs,queries}.jsonl and
 *                                 scifact/qrels.tsv; default $RAG_SHARED_DATA, else
 *                                 <source dir>/../shared/data.
 *
 * What it measures, in one run on one fresh root (removed at the end):
 *   1. Durable ingest (default options, fsync on): wall time from the first rag_doc_put_batch()
 *      to rag_drain() returning, i.e. until every document is searchable -> docs/s, chunks/s.
 *      Then rag_close(), which writes the index snapshot; peak RSS and the on-disk size of
 *      each module's directory are taken here.
 *   2. Raw FAISS on the same vectors: the snapshot is loaded with the FAISS C API and the
 *      queries are embedded with the public CPU provider.  The root is reopened and each
 *      query is timed through rag_search() (k=10, unrestricted, result cache cold) and through
 *      faiss_Index_search() alone, interleaved -> p50/p99 of both and their ratio.
 *   3. Retrieval quality against the qrels at document level (nDCG@10, recall@100), per
 *      search mode this build supports.
 *
 * Output: one JSON object per figure per line on stdout
 *   {"bench":"scifact","metric":"...","value":...,"unit":"..."}
 * and a human-readable table on stderr.  No assertions on the figures: the exit status is
 * non-zero only when something fails (the error text is printed).
 */
#define _XOPEN_SOURCE 700 /* getrusage */

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_io_c.h>

#include <ragcore/providers.h>
#include <ragcore/ragcore.h>

#include "bench_util.h"

#ifndef RAG_BENCH_SOURCE_DIR
#define RAG_BENCH_SOURCE_DIR "."
#endif

#define BATCH 64            /* documents per rag_doc_put_batch() */
#define SEARCH_K 10         /* results per timed search */
#define NDCG_DEPTH 10       /* nDCG@10 over distinct documents ... */
#define NDCG_SEARCH_K 100   /* ... taken from a k=100 chunk search */
#define RECALL_DEPTH 100    /* recall@100 over distinct documents ... */
#define RECALL_SEARCH_K 1000 /* ... from a k=1000 search (chunks repeat docs; 1000 is the API cap) */
#define EMBED_DIM 384       /* rag_options default embed_dim; the raw side must match it */

/* Where rag_close() leaves the index module's FAISS snapshot (src/index). */
#define SNAPSHOT_REL "index/vectors.faiss"

static const char *const MODULE_DIRS[] = {"ingest", "embed", "index", "retrieve", "assemble",
                                          "queue"};

/* ------------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fprintf(stderr, "bench_scifact: out of memory\n");
        exit(2);
    }
    return d;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "bench_scifact: out of memory\n");
        exit(2);
    }
    return q;
}

/* snprintf a path; a path that does not fit is an error, never silently cut. */
static int path_fmt(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= size)
        return bench_fail("path too long: %s/%s", a, b);
    return 0;
}

/* One figure as one JSON line on stdout; `tag_key`/`tag_val` optionally qualify it. */
static void emit_tagged(const char *metric, double value, const char *unit, const char *tag_key,
                        const char *tag_val)
{
    json_t *o = json_object();
    json_object_set_new(o, "bench", json_string("scifact"));
    json_object_set_new(o, "metric", json_string(metric));
    if (tag_key)
        json_object_set_new(o, tag_key, json_string(tag_val));
    /* Counts print as integers, everything else as reals. */
    if (value == floor(value) && fabs(value) < 9e15 && strcmp(unit, "ms") != 0 &&
        strcmp(unit, "ratio") != 0)
        json_object_set_new(o, "value", json_integer((json_int_t)value));
    else
        json_object_set_new(o, "value", json_real(value));
    json_object_set_new(o, "unit", json_string(unit));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (line) {
        puts(line);
        free(line);
    }
    fflush(stdout);
    json_decref(o);
}

static void emit(const char *metric, double value, const char *unit)
{
    emit_tagged(metric, value, unit, NULL, NULL);
}

/* ------------------------------------------------------------------------------------------
 * Data set
 * ---------------------------------------------------------------------------------------- */

typedef struct doc_rec {
    char *id;
    char *title;
    char *body; /* title + "\n\n" + text: what gets ingested */
    size_t len;
} doc_rec;

typedef struct query_rec {
    char *id;
    char *text;
} query_rec;

typedef struct qrel_rec {
    char *qid;
    char *did;
    double gain;
} qrel_rec;

typedef struct dataset {
    doc_rec *docs;
    size_t ndocs;
    query_rec *queries; /* test queries: timed and scored */
    size_t nqueries;
    qrel_rec *qrels;
    size_t nqrels;
} dataset;

static const char *json_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) { /* tolerate numeric ids */
        static char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

/* Read a JSON-lines file, calling `fn` on each object.  Returns 0 or 1 (error printed). */
static int read_jsonl(const char *path, int (*fn)(json_t *, void *), void *arg)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return bench_fail("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (n == 1 && line[0] == '\n')
            continue;
        json_error_t err;
        json_t *o = json_loadb(line, (size_t)n, 0, &err);
        if (!json_is_object(o)) {
            rc = bench_fail("%s:%zu: bad JSON: %s", path, lineno, err.text);
            json_decref(o);
            break;
        }
        rc = fn(o, arg);
        json_decref(o);
        if (rc) {
            bench_fail("%s:%zu: missing field", path, lineno);
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

static int add_doc(json_t *o, void *arg)
{
    dataset *ds = arg;
    const char *id = json_str(o, "id");
    const char *title = json_str(o, "title");
    const char *text = json_str(o, "text");
    if (!id)
        return 1;
    title = title ? title : "";
    text = text ? text : "";
    ds->docs = xrealloc(ds->docs, (ds->ndocs + 1) * sizeof *ds->docs);
    doc_rec *d = &ds->docs[ds->ndocs++];
    d->id = xstrdup(id);
    d->title = xstrdup(title);
    d->len = strlen(title) + 2 + strlen(text);
    d->body = xrealloc(NULL, d->len + 1);
    snprintf(d->body, d->len + 1, "%s\n\n%s", title, text);
    return 0;
}

static int add_query(json_t *o, void *arg)
{
    dataset *ds = arg;
    const char *id = json_str(o, "id");
    const char *text = json_str(o, "text");
    if (!id || !text)
        return 1;
    ds->queries = xrealloc(ds->queries, (ds->nqueries + 1) * sizeof *ds->queries);
    ds->queries[ds->nqueries].id = xstrdup(id);
    ds->queries[ds->nqueries].text = xstrdup(text);
    ds->nqueries++;
    return 0;
}

/* qrels.tsv: header "query-id\tcorpus-id\tscore", then one judgement per line. */
static int read_qrels(const char *path, dataset *ds)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return bench_fail("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || (lineno == 1 && strncmp(line, "query-id", 8) == 0))
            continue;
        char *save = NULL;
        char *q = strtok_r(line, "\t", &save);
        char *d = strtok_r(NULL, "\t", &save);
        char *s = strtok_r(NULL, "\t", &save);
        if (!q || !d || !s) {
            rc = bench_fail("%s:%zu: expected 3 tab-separated fields", path, lineno);
            break;
        }
        ds->qrels = xrealloc(ds->qrels, (ds->nqrels + 1) * sizeof *ds->qrels);
        ds->qrels[ds->nqrels].qid = xstrdup(q);
        ds->qrels[ds->nqrels].did = xstrdup(d);
        ds->qrels[ds->nqrels].gain = atof(s);
        ds->nqrels++;
    }
    free(line);
    fclose(f);
    return rc;
}

static void dataset_free(dataset *ds)
{
    for (size_t i = 0; i < ds->ndocs; i++) {
        free(ds->docs[i].id);
        free(ds->docs[i].title);
        free(ds->docs[i].body);
    }
    for (size_t i = 0; i < ds->nqueries; i++) {
        free(ds->queries[i].id);
        free(ds->queries[i].text);
    }
    for (size_t i = 0; i < ds->nqrels; i++) {
        free(ds->qrels[i].qid);
        free(ds->qrels[i].did);
    }
    free(ds->docs);
    free(ds->queries);
    free(ds->qrels);
}

static int dataset_load(dataset *ds, const char *data_dir)
{
    char path[4096];
    if (path_fmt(path, sizeof path, data_dir, "scifact/docs.jsonl") ||
        read_jsonl(path, add_doc, ds))
        return 1;
    if (path_fmt(path, sizeof path, data_dir, "scifact/queries.jsonl") ||
        read_jsonl(path, add_query, ds))
        return 1;
    if (path_fmt(path, sizeof path, data_dir, "scifact/qrels.tsv") || read_qrels(path, ds))
        return 1;
    if (ds->ndocs == 0 || ds->nqueries == 0)
        return bench_fail("%s/scifact: no documents or no queries", data_dir);
    return 0;
}

/* Relevance of `did` for query `qid` (0 when unjudged). */
static double qrel_gain(const dataset *ds, const char *qid, const char *did)
{
    for (size_t i = 0; i < ds->nqrels; i++)
        if (strcmp(ds->qrels[i].qid, qid) == 0 && strcmp(ds->qrels[i].did, did) == 0)
            return ds->qrels[i].gain;
    return 0.0;
}

/* ------------------------------------------------------------------------------------------
 * File-system helpers: temp root removal and du-style sizes
 * ---------------------------------------------------------------------------------------- */

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* ------------------------------------------------------------------------------------------
 * Benchmark phases
 * ---------------------------------------------------------------------------------------- */

typedef struct figures {
    double ingest_s, put_s, docs_per_s, chunks_per_s;
    uint64_t docs, chunks, vectors;
    double p50, p99;             /* rag_search, default mode, result cache cold */
    double raw_p50, raw_p99;     /* faiss_Index_search alone, interleaved with the above */
    double rep_p50, rep_p99;     /* default mode, the same queries again (cache hits) */
    double vec_p50, vec_p99;     /* vector mode; NAN when unsupported */
    double vec_raw_p50;          /* raw FAISS interleaved with the vector pass */
    double qembed_p50;           /* provider embed of one query */
    double ndcg[4], recall[4];   /* by rag_search_mode; NAN when unsupported */
    size_t judged;
    double rss_ingest_mib, rss_end_mib;
} figures;

static int read_status(rag_ctx *ctx, rag_status_info *st)
{
    memset(st, 0, sizeof *st);
    st->version = RAG_STATUS_VERSION;
    int rc = rag_status(ctx, st);
    return rc == RAG_OK ? 0 : bench_fail_rag("rag_status", rc);
}

/* Put every document in batches, then drain: the whole window is "ingested and searchable". */
static int run_ingest(rag_ctx *ctx, const dataset *ds, figures *fg)
{
    rag_doc docs[BATCH];
    rag_put_result res[BATCH];
    uint32_t drain_ms = 0; /* 0: no limit; RAG_BENCH_DRAIN_MS bounds a hung pipeline */
    const char *env = getenv("RAG_BENCH_DRAIN_MS");
    if (env && *env)
        drain_ms = (uint32_t)strtoul(env, NULL, 10);

    double t0 = bench_now_s();
    for (size_t off = 0; off < ds->ndocs; off += BATCH) {
        size_t n = ds->ndocs - off < BATCH ? ds->ndocs - off : BATCH;
        for (size_t i = 0; i < n; i++) {
            const doc_rec *d = &ds->docs[off + i];
            memset(&docs[i], 0, sizeof docs[i]);
            docs[i].id = d->id;
            docs[i].data = d->body;
            docs[i].size = d->len;
            docs[i].mime = "text/plain";
            docs[i].title = d->title;
        }
        int rc = rag_doc_put_batch(ctx, docs, n, res);
        if (rc != RAG_OK)
            return bench_fail_rag("rag_doc_put_batch", rc);
        for (size_t i = 0; i < n; i++)
            if (res[i].code != RAG_OK)
                return bench_fail("rag_doc_put_batch: document %s: %s (%d): %s", docs[i].id,
                            rag_strerror(res[i].code), res[i].code, rag_error_last());
    }
    double t_put = bench_now_s();
    int rc = rag_drain(ctx, drain_ms);
    if (rc != RAG_OK)
        return bench_fail_rag("rag_drain", rc);
    double t1 = bench_now_s();

    rag_status_info st;
    if (read_status(ctx, &st))
        return 1;
    if (st.dead_letters != 0)
        return bench_fail("%llu message(s) dead-lettered during ingest",
                    (unsigned long long)st.dead_letters);
    if (st.documents != ds->ndocs)
        return bench_fail("rag_status reports %llu documents after drain, expected %zu",
                    (unsigned long long)st.documents, ds->ndocs);

    fg->put_s = t_put - t0;
    fg->ingest_s = t1 - t0;
    fg->docs = st.documents;
    fg->chunks = st.chunks;
    fg->vectors = st.vectors;
    fg->docs_per_s = (double)ds->ndocs / fg->ingest_s;
    fg->chunks_per_s = (double)st.chunks / fg->ingest_s;
    return 0;
}

/* ---- raw FAISS ---------------------------------------------------------------------------- */

/*
 * The raw side: the snapshot rag_close() wrote holds exactly the vectors ragcore searches.
 * The test queries are embedded once with the same public provider (untimed), so a raw
 * search is faiss_Index_search() alone, one query per call like rag_search().
 */
typedef struct raw_faiss {
    FaissIndex *fx;
    size_t d;
    float *qv; /* nqueries * d query vectors */
} raw_faiss;

static void raw_close(raw_faiss *rf)
{
    faiss_Index_free(rf->fx);
    free(rf->qv);
    memset(rf, 0, sizeof *rf);
}

static int raw_open(raw_faiss *rf, const char *root, const dataset *ds, figures *fg)
{
    char path[4096];
    rag_embed_provider p;
    double *lat = NULL;
    int ret = 0;
    memset(rf, 0, sizeof *rf);
    memset(&p, 0, sizeof p);

    if (path_fmt(path, sizeof path, root, SNAPSHOT_REL))
        return 1;
    if (faiss_read_index_fname(path, 0, &rf->fx) != 0) {
        const char *e = faiss_get_last_error();
        return bench_fail("faiss_read_index_fname(%s): %s", path, e ? e : "unknown error");
    }
    rf->d = (size_t)faiss_Index_d(rf->fx);
    long long ntotal = (long long)faiss_Index_ntotal(rf->fx);
    if (ntotal < 0 || (uint64_t)ntotal != fg->vectors) {
        ret = bench_fail("snapshot %s holds %lld vectors, rag_status reported %llu", path, ntotal,
                   (unsigned long long)fg->vectors);
        goto out;
    }

    int rc = rag_embed_cpu_hash_init(&p, EMBED_DIM);
    if (rc != RAG_OK) {
        ret = bench_fail_rag("rag_embed_cpu_hash_init", rc);
        goto out;
    }
    if (p.dim != rf->d) {
        ret = bench_fail("snapshot dimension %zu differs from the provider's %u", rf->d, p.dim);
        goto out;
    }
    rf->qv = xrealloc(NULL, ds->nqueries * rf->d * sizeof *rf->qv);
    lat = xrealloc(NULL, ds->nqueries * sizeof *lat);
    for (size_t i = 0; i < ds->nqueries; i++) {
        const char *t = ds->queries[i].text;
        size_t len = strlen(t);
        double t0 = bench_now_s();
        rc = p.embed(p.state, &t, &len, 1, rf->qv + i * rf->d);
        lat[i] = (bench_now_s() - t0) * 1e3;
        if (rc != 0) {
            ret = bench_fail_rag("provider embed", rc);
            goto out;
        }
    }
    fg->qembed_p50 = bench_percentile(lat, ds->nqueries, 50);

out:
    free(lat);
    rag_embed_provider_release(&p);
    if (ret)
        raw_close(rf);
    return ret;
}

/* One raw k=SEARCH_K search of query `i`; its time in ms goes to *ms. */
static int raw_search(const raw_faiss *rf, size_t i, double *ms)
{
    float dist[SEARCH_K];
    idx_t labels[SEARCH_K];
    double t0 = bench_now_s();
    int frc = faiss_Index_search(rf->fx, 1, rf->qv + i * rf->d, SEARCH_K, dist, labels);
    *ms = (bench_now_s() - t0) * 1e3;
    if (frc != 0) {
        const char *e = faiss_get_last_error();
        return bench_fail("faiss_Index_search: %s", e ? e : "unknown error");
    }
    return 0;
}

/* ---- ragcore searches --------------------------------------------------------------------- */

static int search_one(rag_ctx *ctx, const char *text, size_t k, rag_search_mode mode,
                      rag_results **out)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = k;
    q.unrestricted = 1;
    q.mode = mode;
    return rag_search(ctx, &q, out);
}

/* One rag_search of query `i` at k=SEARCH_K; its time in ms goes to *ms.  RAG_EUNSUPPORTED
 * comes back silently so a mode this build lacks can be skipped; other failures print. */
static int rag_timed(rag_ctx *ctx, const dataset *ds, size_t i, rag_search_mode mode,
                     double *ms)
{
    rag_results *res = NULL;
    double t0 = bench_now_s();
    int rc = search_one(ctx, ds->queries[i].text, SEARCH_K, mode, &res);
    *ms = (bench_now_s() - t0) * 1e3;
    rag_results_free(res);
    if (rc == RAG_OK || rc == RAG_EUNSUPPORTED)
        return rc;
    return bench_fail_rag("rag_search", rc);
}

/*
 * Time every test query once in `mode` -> p50/p99 (ms).  With `rf`, each query is also
 * searched raw, interleaved (alternating which goes first), so both sides see the same
 * machine load: the ratio stays fair on a busy box, where back-to-back passes would not.
 */
static int time_pass(rag_ctx *ctx, const raw_faiss *rf, const dataset *ds, rag_search_mode mode,
                     double *p50, double *p99, double *raw_p50, double *raw_p99)
{
    size_t n = ds->nqueries;
    double *lat = xrealloc(NULL, n * sizeof *lat);
    double *raw = xrealloc(NULL, n * sizeof *raw);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (rf && i % 2 == 0)
            rc = raw_search(rf, i, &raw[i]);
        if (rc == 0)
            rc = rag_timed(ctx, ds, i, mode, &lat[i]);
        if (rc == 0 && rf && i % 2 == 1)
            rc = raw_search(rf, i, &raw[i]);
    }
    if (rc == 0) {
        *p50 = bench_percentile(lat, n, 50);
        *p99 = bench_percentile(lat, n, 99);
        if (rf) {
            *raw_p50 = bench_percentile(raw, n, 50);
            if (raw_p99)
                *raw_p99 = bench_percentile(raw, n, 99);
        }
    }
    free(lat);
    free(raw);
    return rc;
}

/*
 * The retrieve module caches results keyed by (query, principals, effective mode, k, index
 * epoch), so a query timed right after its warm-up would be a cache hit.  Any index change
 * moves the epoch and makes every cached entry unreachable: put one throw-away document,
 * drain, delete it, drain.  The corpus is the same afterwards (the delete removes its vector).
 */
static int invalidate_result_cache(rag_ctx *ctx)
{
    static unsigned bump;
    static const char body[] = "Result cache invalidation marker.";
    char id[64];
    snprintf(id, sizeof id, "__bench_epoch_bump_%u", bump++);
    rag_status_info before, after;
    if (read_status(ctx, &before))
        return 1;

    rag_doc d;
    memset(&d, 0, sizeof d);
    d.id = id;
    d.data = body;
    d.size = sizeof body - 1;
    d.mime = "text/plain";
    int rc = rag_doc_put(ctx, &d, NULL);
    if (rc != RAG_OK)
        return bench_fail_rag("rag_doc_put (cache invalidation)", rc);
    if ((rc = rag_drain(ctx, 0)) != RAG_OK)
        return bench_fail_rag("rag_drain", rc);
    if ((rc = rag_doc_delete(ctx, id)) != RAG_OK)
        return bench_fail_rag("rag_doc_delete (cache invalidation)", rc);
    if ((rc = rag_drain(ctx, 0)) != RAG_OK)
        return bench_fail_rag("rag_drain", rc);

    if (read_status(ctx, &after))
        return 1;
    if (after.index_epoch == before.index_epoch)
        fprintf(stderr, "bench_scifact: warning: index epoch did not move (%llu); timed "
                        "searches may hit the result cache\n",
                (unsigned long long)after.index_epoch);
    if (after.documents != before.documents || after.vectors != before.vectors)
        return bench_fail("cache invalidation changed the corpus: %llu docs / %llu vectors -> "
                    "%llu / %llu",
                    (unsigned long long)before.documents, (unsigned long long)before.vectors,
                    (unsigned long long)after.documents, (unsigned long long)after.vectors);
    return 0;
}

/*
 * Latency.  Every test query once as warm-up on both sides (pages in LMDB, FAISS and the chunk
 * texts), then the result cache is invalidated and each query is timed on a cache miss,
 * interleaved with raw FAISS (the headline figures and their ratio), then once more (the
 * repeat figure: what a cache hit costs).  Vector mode is timed after another invalidation,
 * since in a build whose default mode *is* vector it would otherwise hit the default pass's
 * entries.
 */
static int run_latency(rag_ctx *ctx, const raw_faiss *rf, const dataset *ds, figures *fg)
{
    double ms;
    for (size_t i = 0; i < ds->nqueries; i++) {
        int rc = rag_timed(ctx, ds, i, RAG_MODE_DEFAULT, &ms);
        if (rc == RAG_EUNSUPPORTED)
            return bench_fail_rag("rag_search (warm-up)", rc);
        if (rc || raw_search(rf, i, &ms))
            return 1;
    }
    if (invalidate_result_cache(ctx))
        return 1;
    int rc = time_pass(ctx, rf, ds, RAG_MODE_DEFAULT, &fg->p50, &fg->p99, &fg->raw_p50,
                       &fg->raw_p99);
    if (rc)
        return rc == RAG_EUNSUPPORTED ? bench_fail_rag("rag_search", rc) : 1;
    rc = time_pass(ctx, NULL, ds, RAG_MODE_DEFAULT, &fg->rep_p50, &fg->rep_p99, NULL, NULL);
    if (rc)
        return rc == RAG_EUNSUPPORTED ? bench_fail_rag("rag_search", rc) : 1;
    /* Vector-only mode: the like-for-like counterpart of raw FAISS. */
    if (invalidate_result_cache(ctx))
        return 1;
    rc = time_pass(ctx, rf, ds, RAG_MODE_VECTOR, &fg->vec_p50, &fg->vec_p99, &fg->vec_raw_p50,
                   NULL);
    if (rc == RAG_EUNSUPPORTED)
        fg->vec_p50 = fg->vec_p99 = NAN;
    else if (rc)
        return 1;
    return 0;
}

/* ---- quality ------------------------------------------------------------------------------ */

/* Document ids of `res` in rank order, each once (a document's best chunk counts).  Returns
 * the number kept, at most `max`; `out` borrows strings from `res`. */
static size_t distinct_docs(const rag_results *res, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < res->count && n < max; i++) {
        const char *id = res->items[i].doc_id;
        size_t j = 0;
        while (j < n && strcmp(out[j], id) != 0)
            j++;
        if (j == n)
            out[n++] = id;
    }
    return n;
}

static int cmp_gain_desc(const void *a, const void *b)
{
    return bench_cmp_double(b, a);
}

/* nDCG@10 (linear gain, log2 discount, as BEIR/pytrec_eval) and recall@100, document level,
 * averaged over the queries that have at least one relevant judgement.  RAG_EUNSUPPORTED is
 * passed back silently for a mode this build lacks. */
static int run_quality(rag_ctx *ctx, const dataset *ds, rag_search_mode mode, double *ndcg_out,
                       double *recall_out, size_t *judged_out)
{
    const char *top[RECALL_DEPTH];
    double *gains = xrealloc(NULL, (ds->nqrels + 1) * sizeof *gains);
    double ndcg_sum = 0, recall_sum = 0;
    size_t judged = 0;
    int ret = 0;

    for (size_t qi = 0; qi < ds->nqueries && !ret; qi++) {
        const query_rec *q = &ds->queries[qi];
        size_t nrel = 0;
        for (size_t i = 0; i < ds->nqrels; i++)
            if (strcmp(ds->qrels[i].qid, q->id) == 0 && ds->qrels[i].gain > 0)
                gains[nrel++] = ds->qrels[i].gain;
        if (nrel == 0)
            continue; /* unjudged query: no contribution, as in BEIR */
        judged++;

        /* nDCG@10 from a k=100 search. */
        rag_results *res = NULL;
        int rc = search_one(ctx, q->text, NDCG_SEARCH_K, mode, &res);
        if (rc != RAG_OK) {
            ret = rc == RAG_EUNSUPPORTED ? rc : bench_fail_rag("rag_search (quality)", rc);
            break;
        }
        size_t n = distinct_docs(res, top, NDCG_DEPTH);
        double dcg = 0, idcg = 0;
        for (size_t r = 0; r < n; r++)
            dcg += qrel_gain(ds, q->id, top[r]) / log2((double)r + 2.0);
        qsort(gains, nrel, sizeof *gains, cmp_gain_desc);
        for (size_t r = 0; r < nrel && r < NDCG_DEPTH; r++)
            idcg += gains[r] / log2((double)r + 2.0);
        ndcg_sum += dcg / idcg;
        rag_results_free(res);

        /* recall@100 from a deeper search: 100 chunks cover fewer than 100 documents. */
        res = NULL;
        rc = search_one(ctx, q->text, RECALL_SEARCH_K, mode, &res);
        if (rc != RAG_OK) {
            ret = rc == RAG_EUNSUPPORTED ? rc : bench_fail_rag("rag_search (quality)", rc);
            break;
        }
        n = distinct_docs(res, top, RECALL_DEPTH);
        size_t hit = 0;
        for (size_t r = 0; r < n; r++)
            if (qrel_gain(ds, q->id, top[r]) > 0)
                hit++;
        recall_sum += (double)hit / (double)nrel;
        rag_results_free(res);
    }
    free(gains);
    if (ret)
        return ret;
    *ndcg_out = judged ? ndcg_sum / (double)judged : NAN;
    *recall_out = judged ? recall_sum / (double)judged : NAN;
    *judged_out = judged;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Report
 * ---------------------------------------------------------------------------------------- */

static const char *const MODE_NAMES[4] = {"default", "vector", "lexical", "hybrid"};
#define NMODULES (sizeof MODULE_DIRS / sizeof *MODULE_DIRS)

static void report(const figures *fg, const double *sizes, double root_bytes)
{
    int have_vec = !isnan(fg->vec_p50);
    emit("ingest_docs", (double)fg->docs, "count");
    emit("ingest_chunks", (double)fg->chunks, "count");
    emit("ingest_vectors", (double)fg->vectors, "count");
    emit("ingest_put_s", fg->put_s, "s");
    emit("ingest_wall_s", fg->ingest_s, "s");
    emit("ingest_docs_per_s", fg->docs_per_s, "docs/s");
    emit("ingest_chunks_per_s", fg->chunks_per_s, "chunks/s");
    emit("search_p50_ms", fg->p50, "ms");
    emit("search_p99_ms", fg->p99, "ms");
    emit("faiss_raw_p50_ms", fg->raw_p50, "ms");
    emit("faiss_raw_p99_ms", fg->raw_p99, "ms");
    emit("search_to_raw_p50_ratio", fg->p50 / fg->raw_p50, "ratio");
    emit("search_repeat_p50_ms", fg->rep_p50, "ms");
    emit("search_repeat_p99_ms", fg->rep_p99, "ms");
    if (have_vec) {
        emit("search_vector_p50_ms", fg->vec_p50, "ms");
        emit("search_vector_p99_ms", fg->vec_p99, "ms");
        emit("search_vector_to_raw_p50_ratio", fg->vec_p50 / fg->vec_raw_p50, "ratio");
    }
    emit("query_embed_p50_ms", fg->qembed_p50, "ms");
    for (int m = 0; m < 4; m++) {
        if (isnan(fg->ndcg[m]))
            continue;
        emit_tagged("ndcg_at_10", fg->ndcg[m], "score", "mode", MODE_NAMES[m]);
        emit_tagged("recall_at_100", fg->recall[m], "score", "mode", MODE_NAMES[m]);
    }
    emit("judged_queries", (double)fg->judged, "count");
    emit("peak_rss_ingest_mib", fg->rss_ingest_mib, "MiB");
    emit("peak_rss_total_mib", fg->rss_end_mib, "MiB");
    for (size_t i = 0; i < NMODULES; i++)
        if (sizes[i] >= 0)
            emit_tagged("disk_bytes", sizes[i], "bytes", "module", MODULE_DIRS[i]);
    emit_tagged("disk_bytes", root_bytes, "bytes", "module", "total");

    /* The human table. */
    fprintf(stderr, "\n== ragcore SciFact benchmark ==\n");
    fprintf(stderr, "ingest (durable)   %llu docs, %llu chunks, %llu vectors\n",
            (unsigned long long)fg->docs, (unsigned long long)fg->chunks,
            (unsigned long long)fg->vectors);
    fprintf(stderr, "  put %.2f s, put+drain %.2f s: %.1f docs/s, %.1f chunks/s\n", fg->put_s,
            fg->ingest_s, fg->docs_per_s, fg->chunks_per_s);
    fprintf(stderr, "rag_search k=%d     p50 %8.3f ms   p99 %8.3f ms\n", SEARCH_K, fg->p50,
            fg->p99);
    fprintf(stderr, "raw FAISS k=%d      p50 %8.3f ms   p99 %8.3f ms  (interleaved)\n", SEARCH_K,
            fg->raw_p50, fg->raw_p99);
    fprintf(stderr, "ragcore/raw p50     %.2fx (target <= 1.5)\n", fg->p50 / fg->raw_p50);
    fprintf(stderr, "  repeated (cached) p50 %8.3f ms   p99 %8.3f ms\n", fg->rep_p50,
            fg->rep_p99);
    if (have_vec)
        fprintf(stderr, "  vector mode       p50 %8.3f ms   p99 %8.3f ms   %.2fx raw\n",
                fg->vec_p50, fg->vec_p99, fg->vec_p50 / fg->vec_raw_p50);
    fprintf(stderr, "  query embed       p50 %8.3f ms\n", fg->qembed_p50);
    fprintf(stderr, "quality (%zu judged queries, doc level)\n", fg->judged);
    for (int m = 0; m < 4; m++)
        if (!isnan(fg->ndcg[m]))
            fprintf(stderr, "  %-8s nDCG@10 %.4f   recall@100 %.4f\n", MODE_NAMES[m],
                    fg->ndcg[m], fg->recall[m]);
    fprintf(stderr, "peak RSS           %.1f MiB after ingest, %.1f MiB at the end\n",
            fg->rss_ingest_mib, fg->rss_end_mib);
    fprintf(stderr, "disk after ingest ");
    for (size_t i = 0; i < NMODULES; i++)
        if (sizes[i] >= 0)
            fprintf(stderr, " %s %.1f MiB", MODULE_DIRS[i], sizes[i] / 1048576.0);
    fprintf(stderr, "  (total %.1f MiB)\n", root_bytes / 1048576.0);
}

/* ------------------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------------------- */

static int open_started(rag_ctx **ctx, const char *root)
{
    /* Default options: the built-in hash provider at 384-d, IDMap2,Flat, fsync on. */
    rag_options opts;
    rag_options_init(&opts);
    opts.no_sync = 0;
    int rc = rag_open(ctx, root, &opts);
    if (rc != RAG_OK)
        return bench_fail_rag("rag_open", rc);
    rc = rag_start(*ctx);
    if (rc != RAG_OK)
        return bench_fail_rag("rag_start", rc);
    return 0;
}

int main(int argc, char **argv)
{
    const char *data_dir = argc > 1 ? argv[1] : getenv("RAG_SHARED_DATA");
    char default_dir[4096];
    if (!data_dir || !*data_dir) {
        snprintf(default_dir, sizeof default_dir, "%s/../shared/data", RAG_BENCH_SOURCE_DIR);
        data_dir = default_dir;
    }

    dataset ds;
    memset(&ds, 0, sizeof ds);
    figures fg;
    memset(&fg, 0, sizeof fg);
    for (int m = 0; m < 4; m++)
        fg.ndcg[m] = fg.recall[m] = NAN;
    double sizes[NMODULES];
    double root_bytes = 0;
    rag_ctx *ctx = NULL;
    raw_faiss rf;
    memset(&rf, 0, sizeof rf);
    int ret = 1;

    fprintf(stderr, "bench_scifact: loading %s/scifact\n", data_dir);
    if (dataset_load(&ds, data_dir)) {
        dataset_free(&ds);
        return 1;
    }
    fprintf(stderr, "bench_scifact: %zu docs, %zu queries, %zu qrels\n", ds.ndocs, ds.nqueries,
            ds.nqrels);

    /* A fresh root; RAG_BENCH_TMPDIR or TMPDIR choose the file system it lives on. */
    const char *tmp = getenv("RAG_BENCH_TMPDIR");
    if (!tmp || !*tmp)
        tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    char root[4096];
    int n = snprintf(root, sizeof root, "%s/ragcore-bench-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof root || !mkdtemp(root)) {
        bench_fail("cannot make a temporary root under %s: %s", tmp, strerror(errno));
        dataset_free(&ds);
        return 1;
    }
    fprintf(stderr, "bench_scifact: root %s\n", root);

    /* 1. Durable ingest. */
    if (open_started(&ctx, root))
        goto out;
    fprintf(stderr, "bench_scifact: ingesting...\n");
    if (run_ingest(ctx, &ds, &fg))
        goto out;
    fprintf(stderr, "bench_scifact: %llu chunks in %.2f s\n", (unsigned long long)fg.chunks,
            fg.ingest_s);

    /* Close: stops the workers and writes the index snapshot that raw FAISS loads.  The
     * footprint is measured here: the corpus as ingested, before queries fill any cache. */
    rag_close(ctx);
    ctx = NULL;
    fg.rss_ingest_mib = peak_rss_mib();
    for (size_t i = 0; i < NMODULES; i++) {
        char dir[4200];
        if (path_fmt(dir, sizeof dir, root, MODULE_DIRS[i]))
            goto out;
        sizes[i] = bench_dir_bytes(dir);
        if (sizes[i] < 0)
            fprintf(stderr, "bench_scifact: note: no %s directory\n", dir);
    }
    root_bytes = bench_dir_bytes(root);

    /* 2. Raw FAISS on the snapshot, then the root reopened for the timed comparison. */
    fprintf(stderr, "bench_scifact: loading the snapshot into raw FAISS...\n");
    if (raw_open(&rf, root, &ds, &fg))
        goto out;
    if (open_started(&ctx, root))
        goto out;
    fprintf(stderr, "bench_scifact: timing searches...\n");
    if (run_latency(ctx, &rf, &ds, &fg))
        goto out;

    /* 3. Quality, per mode this build supports. */
    fprintf(stderr, "bench_scifact: scoring quality...\n");
    for (int m = 0; m < 3; m++) {
        int rc = run_quality(ctx, &ds, (rag_search_mode)m, &fg.ndcg[m], &fg.recall[m],
                             &fg.judged);
        if (rc == RAG_EUNSUPPORTED) {
            fprintf(stderr, "bench_scifact: note: mode %s not supported by this build: %s\n",
                    MODE_NAMES[m], rag_error_last());
            if (m == 0) {
                bench_fail_rag("rag_search (default mode)", rc);
                goto out;
            }
        } else if (rc) {
            goto out;
        }
    }
    rag_close(ctx);
    ctx = NULL;
    fg.rss_end_mib = peak_rss_mib();

    report(&fg, sizes, root_bytes);
    ret = 0;

out:
    rag_close(ctx);
    raw_close(&rf);
    bench_rm_tree(root);
    dataset_free(&ds);
    return ret;
}
