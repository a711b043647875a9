/*
 * bench_retrieval: retrieval quality, query latency and ACL-filter recall (issue 5).
 *
 *   bench_retrieval [DATA_DIR]     DATA_DIR holds scifact/ and cisi/ (docs.jsonl,
 *                                  queries.jsonl, qrels.tsv; scifact also queries_train.jsonl
 *                                  and qrels_train.tsv); default $RAG_SHARED_DATA, else
 *                                  <source dir>/../shared/data.
 *
 * Phases, each on fresh roots under $RAG_BENCH_TMPDIR (else $TMPDIR, else /tmp), removed at
 * the end.  Options are the defaults except no_sync = 1 (durability costs ingest time and
 * changes no figure measured here):
 *
 *   1. quality: SciFact test and CISI; nDCG@10 and recall@100 per mode (vector, lexical,
 *      hybrid), document level, defined exactly as `rag eval` does.
 *   2. ACL recall on the SciFact root: recall@10 of a filtered search against an exact
 *      filtered scan at 10%, 1% and 0.1% selectivity, vector and lexical.
 *   3. tuning on SciFact TRAIN queries (never the test queries): BM25 k1 and b (lexical mode)
 *      and the hybrid weight; the best values, then their score on the test queries.
 *   4. latency: one root grown from ~5k chunks (a prefix of SciFact) to ~100k chunks (SciFact
 *      replicated with perturbed ids and text); at each size p50/p99 of rag_search per mode,
 *      unrestricted and as a principal that may read 1% of the documents, against raw FAISS
 *      (the same vectors, loaded from ragcore's snapshot, brute force) in the same run,
 *      interleaved query by query.
 *
 * Output: one JSON object per figure per line on stdout, human tables on stderr.  No
 * assertions on the figures: the exit status is non-zero only when a step fails.
 *
 * Environment: RAG_BENCH_TUNE=0 skips phase 3; RAG_BENCH_SCALE_CHUNKS (default 100000) sets
 * the large size of phase 4; RAG_BENCH_TMPDIR.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp */

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_io_c.h>

#include <ragcore/providers.h>
#include <ragcore/ragcore.h>

#include "bench_util.h"

#ifndef RAG_BENCH_SOURCE_DIR
#define RAG_BENCH_SOURCE_DIR "."
#endif

/* The FAISS >= 1.7.4 C API's filtered search (same names and signatures).  Debian's 1.7.3
 * headers do not declare it; ragcore's FAISS compatibility unit, linked in rag_static,
 * implements it (with a system libfaiss_c of a newer FAISS it comes from there). */
FAISS_DECLARE_CLASS(SearchParameters)
void faiss_SearchParameters_free(FaissSearchParameters *obj);
int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel);
int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances,
                                   idx_t *labels);

#define BATCH 256
#define K_MAX 1000            /* rag_query.k upper bound */
#define NDCG_DEPTH 10
#define NDCG_SEARCH_K 100     /* nDCG@10 from the first 10 documents of a k=100 search */
#define RECALL_DEPTH 100
#define RECALL_SEARCH_K 1000  /* recall@100 from the first 100 documents of a k=1000 search */
#define LAT_K 10              /* k of the timed searches */
#define EMBED_DIM 384         /* rag_options default; the raw side must match it */
#define SNAPSHOT_REL "index/vectors.faiss" /* what rag_close() writes (src/index) */
#define SMALL_CHUNKS 5000
#define SCALE_CHUNKS 100000
#define ACL_ONE_PERCENT "group:one-percent"

static const char *const MODE_NAMES[4] = {"default", "vector", "lexical", "hybrid"};

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------------------------- */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "bench_retrieval: out of memory\n");
        exit(2);
    }
    return q;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fprintf(stderr, "bench_retrieval: out of memory\n");
        exit(2);
    }
    return d;
}

static int cmp_double_desc(const void *a, const void *b) { return bench_cmp_double(b, a); }

/* One JSON object per line on stdout; takes ownership of `o`. */
static void emit(json_t *o)
{
    json_object_set_new(o, "bench", json_string("retrieval"));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(6));
    if (s) {
        puts(s);
        free(s);
    }
    fflush(stdout);
    json_decref(o);
}

static char tmp_base[2048];

/* A fresh empty root directory (caller frees). */
static char *new_root(const char *tag)
{
    char *p = xrealloc(NULL, 4096);
    snprintf(p, 4096, "%s/ragcore-bench-%s-XXXXXX", tmp_base, tag);
    if (!mkdtemp(p)) {
        bench_fail("cannot make a temporary root under %s: %s", tmp_base, strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

/* Options of every root: the defaults, no fsync; the tuning phase overrides BM25/fusion. */
static int open_root(rag_ctx **ctx, const char *root, float k1, float b, float w)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.bm25_k1 = k1;
    o.bm25_b = b;
    o.hybrid_lexical_weight = w;
    int rc = rag_open(ctx, root, &o);
    return rc ? bench_fail_rag("rag_open", rc) : 0;
}

static int read_status(rag_ctx *ctx, rag_status_info *st)
{
    memset(st, 0, sizeof *st);
    st->version = RAG_STATUS_VERSION;
    int rc = rag_status(ctx, st);
    return rc ? bench_fail_rag("rag_status", rc) : 0;
}

/* ------------------------------------------------------------------------------------------
 * Data
 * ---------------------------------------------------------------------------------------- */

typedef struct doc_rec {
    char *id, *title, *body; /* body: title + "\n\n" + text, what `rag ingest --jsonl` stores */
    size_t len;
} doc_rec;

typedef struct query_rec {
    char *id, *text;
    size_t rel_lo, rel_hi; /* judgements in the sorted qrels */
    size_t relevant;       /* positive ones */
} query_rec;

typedef struct qrel_rec {
    char *qid, *did;
    double gain;
} qrel_rec;

typedef struct qset {
    query_rec *q;
    size_t nq;
    qrel_rec *r;
    size_t nr;
    size_t judged;
} qset;

typedef struct collection {
    const char *name;
    doc_rec *docs;
    size_t ndocs;
    qset test, train; /* train: SciFact only */
} collection;

static const char *json_id(json_t *v, char *buf, size_t size)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

static int load_docs(collection *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return bench_fail("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        json_error_t err;
        json_t *o = json_loadb(line, (size_t)n, 0, &err);
        char ib[32];
        const char *id = o ? json_id(json_object_get(o, "id"), ib, sizeof ib) : NULL;
        const char *title = o ? json_string_value(json_object_get(o, "title")) : NULL;
        const char *text = o ? json_string_value(json_object_get(o, "text")) : NULL;
        if (!id || !text) {
            rc = bench_fail("%s:%zu: not an {\"id\",\"title\",\"text\"} object", path, lineno);
        } else {
            c->docs = xrealloc(c->docs, (c->ndocs + 1) * sizeof *c->docs);
            doc_rec *d = &c->docs[c->ndocs++];
            title = title ? title : "";
            d->id = xstrdup(id);
            d->title = xstrdup(title);
            /* as `rag ingest --jsonl`: the title opens the text (no blank line without one) */
            d->len = (*title ? strlen(title) + 2 : 0) + strlen(text);
            d->body = xrealloc(NULL, d->len + 1);
            snprintf(d->body, d->len + 1, "%s%s%s", title, *title ? "\n\n" : "", text);
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

static int load_queries(qset *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return bench_fail("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        json_error_t err;
        json_t *o = json_loadb(line, (size_t)n, 0, &err);
        char ib[32];
        const char *id = o ? json_id(json_object_get(o, "id"), ib, sizeof ib) : NULL;
        const char *text = o ? json_string_value(json_object_get(o, "text")) : NULL;
        if (!id || !text) {
            rc = bench_fail("%s:%zu: not an {\"id\",\"text\"} object", path, lineno);
        } else {
            s->q = xrealloc(s->q, (s->nq + 1) * sizeof *s->q);
            query_rec *q = &s->q[s->nq++];
            memset(q, 0, sizeof *q);
            q->id = xstrdup(id);
            q->text = xstrdup(text);
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

static int cmp_qrel(const void *a, const void *b)
{
    const qrel_rec *x = a, *y = b;
    int c = strcmp(x->qid, y->qid);
    return c ? c : strcmp(x->did, y->did);
}

/* "query-id<TAB>corpus-id<TAB>score" after a header line. */
static int load_qrels(qset *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return bench_fail("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || (lineno == 1 && !strncmp(line, "query-id", 8)))
            continue;
        char *save = NULL;
        char *q = strtok_r(line, "\t", &save), *d = strtok_r(NULL, "\t", &save),
             *g = strtok_r(NULL, "\t", &save);
        if (!q || !d || !g) {
            rc = bench_fail("%s:%zu: expected 3 tab-separated fields", path, lineno);
            break;
        }
        s->r = xrealloc(s->r, (s->nr + 1) * sizeof *s->r);
        s->r[s->nr++] = (qrel_rec){xstrdup(q), xstrdup(d), atof(g)};
    }
    free(line);
    fclose(f);
    if (rc)
        return rc;
    qsort(s->r, s->nr, sizeof *s->r, cmp_qrel);
    for (size_t i = 0; i < s->nq; i++) {
        query_rec *qr = &s->q[i];
        size_t lo = 0, hi = s->nr;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(s->r[mid].qid, qr->id) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        qr->rel_lo = qr->rel_hi = lo;
        while (qr->rel_hi < s->nr && !strcmp(s->r[qr->rel_hi].qid, qr->id))
            qr->relevant += s->r[qr->rel_hi++].gain > 0;
        s->judged += qr->relevant > 0;
    }
    return 0;
}

static void qset_free(qset *s)
{
    for (size_t i = 0; i < s->nq; i++) {
        free(s->q[i].id);
        free(s->q[i].text);
    }
    for (size_t i = 0; i < s->nr; i++) {
        free(s->r[i].qid);
        free(s->r[i].did);
    }
    free(s->q);
    free(s->r);
    memset(s, 0, sizeof *s);
}

static void collection_free(collection *c)
{
    for (size_t i = 0; i < c->ndocs; i++) {
        free(c->docs[i].id);
        free(c->docs[i].title);
        free(c->docs[i].body);
    }
    free(c->docs);
    qset_free(&c->test);
    qset_free(&c->train);
}

static int collection_load(collection *c, const char *data_dir, const char *name, int train)
{
    char p[4096];
    memset(c, 0, sizeof *c);
    c->name = name;
    snprintf(p, sizeof p, "%s/%s/docs.jsonl", data_dir, name);
    if (load_docs(c, p))
        return 1;
    snprintf(p, sizeof p, "%s/%s/queries.jsonl", data_dir, name);
    if (load_queries(&c->test, p))
        return 1;
    snprintf(p, sizeof p, "%s/%s/qrels.tsv", data_dir, name);
    if (load_qrels(&c->test, p))
        return 1;
    if (train) {
        snprintf(p, sizeof p, "%s/%s/queries_train.jsonl", data_dir, name);
        if (load_queries(&c->train, p))
            return 1;
        snprintf(p, sizeof p, "%s/%s/qrels_train.tsv", data_dir, name);
        if (load_qrels(&c->train, p))
            return 1;
    }
    fprintf(stderr, "bench_retrieval: %s: %zu docs, %zu test queries (%zu judged)%s\n", name,
            c->ndocs, c->test.nq, c->test.judged, train ? ", train queries too" : "");
    return 0;
}

static double qrel_gain(const qset *s, const query_rec *q, const char *did)
{
    size_t lo = q->rel_lo, hi = q->rel_hi;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->r[mid].did, did);
        if (!c)
            return s->r[mid].gain;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Ingest
 * ---------------------------------------------------------------------------------------- */

/* ACL of the document with sequence number `i` (its position in ingest order). */
typedef size_t (*acl_fn)(size_t i, const char **out, char bufs[][32]);

/* The SciFact root of phases 1-3: nested selectivity groups for the ACL recall, and one of
 * seven owners on every document so that none is public.  Offsets (3) keep the groups away
 * from the first documents of the file. */
#define SEL_GROUPS 3
static const char *const SEL_PRINCIPAL[SEL_GROUPS] = {"sel:10pct", "sel:1pct", "sel:0.1pct"};
static const size_t SEL_MOD[SEL_GROUPS] = {10, 100, 1000};
static const double SEL_FRACTION[SEL_GROUPS] = {0.10, 0.01, 0.001};

static int sel_member(size_t i, int g) { return i % SEL_MOD[g] == 3; }

static size_t acl_selectivity(size_t i, const char **out, char bufs[][32])
{
    size_t n = 0;
    snprintf(bufs[0], 32, "owner:%zu", i % 7);
    out[n++] = bufs[0];
    for (int g = 0; g < SEL_GROUPS; g++)
        if (sel_member(i, g))
            out[n++] = SEL_PRINCIPAL[g];
    return n;
}

/* The latency root: every document has one of 50 tenants; every 100th is also readable by
 * ACL_ONE_PERCENT. */
static size_t acl_scale(size_t i, const char **out, char bufs[][32])
{
    size_t n = 0;
    snprintf(bufs[0], 32, "group:t%02zu", i % 50);
    out[n++] = bufs[0];
    if (i % 100 == 0)
        out[n++] = ACL_ONE_PERCENT;
    return n;
}

/* A document to put: borrowed strings, or owned ones for replicas. */
typedef struct put_item {
    const char *id, *title, *body;
    size_t len;
} put_item;

/* Put `n` items in batches (ACLs from `acl`, sequence numbers from *seq on), then drain. */
static int put_items(rag_ctx *ctx, const put_item *items, size_t n, acl_fn acl, size_t *seq)
{
    rag_doc docs[BATCH];
    rag_put_result res[BATCH];
    const char *acls[BATCH][4];
    char bufs[BATCH][1][32];
    for (size_t off = 0; off < n; off += BATCH) {
        size_t m = n - off < BATCH ? n - off : BATCH;
        for (size_t i = 0; i < m; i++) {
            const put_item *it = &items[off + i];
            memset(&docs[i], 0, sizeof docs[i]);
            docs[i].id = it->id;
            docs[i].data = it->body;
            docs[i].size = it->len;
            docs[i].mime = "text/plain";
            docs[i].title = it->title;
            if (acl) {
                docs[i].acl_count = acl((*seq)++, acls[i], bufs[i]);
                docs[i].acl = acls[i];
            }
        }
        int rc = rag_doc_put_batch(ctx, docs, m, res);
        if (rc)
            return bench_fail_rag("rag_doc_put_batch", rc);
        for (size_t i = 0; i < m; i++)
            if (res[i].code)
                return bench_fail("put %s: %s", docs[i].id, rag_strerror(res[i].code));
    }
    int rc = rag_drain(ctx, 0);
    return rc ? bench_fail_rag("rag_drain", rc) : 0;
}

static int ingest_collection(rag_ctx *ctx, const collection *c, acl_fn acl, double *secs)
{
    put_item *items = xrealloc(NULL, c->ndocs * sizeof *items);
    for (size_t i = 0; i < c->ndocs; i++)
        items[i] = (put_item){c->docs[i].id, c->docs[i].title, c->docs[i].body, c->docs[i].len};
    size_t seq = 0;
    double t0 = bench_now_s();
    int rc = rag_start(ctx);
    if (rc) {
        free(items);
        return bench_fail_rag("rag_start", rc);
    }
    rc = put_items(ctx, items, c->ndocs, acl, &seq);
    rag_stop(ctx);
    *secs = bench_now_s() - t0;
    free(items);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Searches and quality
 * ---------------------------------------------------------------------------------------- */

static int search(rag_ctx *ctx, const char *text, size_t k, rag_search_mode mode,
                  const char *principal, rag_results **out)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = k;
    q.mode = mode;
    if (principal) {
        q.principals = &principal;
        q.principal_count = 1;
    } else {
        q.unrestricted = 1;
    }
    int rc = rag_search(ctx, &q, out);
    if (rc) {
        *out = NULL;
        return bench_fail_rag("rag_search", rc);
    }
    return 0;
}

/* Document ids in rank order, each once (its best chunk counts). */
static size_t distinct_docs(const rag_results *r, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->count && n < max; i++) {
        size_t j = 0;
        while (j < n && strcmp(out[j], r->items[i].doc_id))
            j++;
        if (j == n)
            out[n++] = r->items[i].doc_id;
    }
    return n;
}

static const double LOG2[NDCG_DEPTH] = {1.0, 1.584962500721156, 2.0, 2.321928094887362,
                                        2.584962500721156, 2.807354922057604, 3.0,
                                        3.169925001442312, 3.321928094887362, 3.459431618637297};

/* nDCG@10 (and, with `recall`, recall@100) of `mode` over the judged queries of `s`. */
static int quality(rag_ctx *ctx, const qset *s, rag_search_mode mode, double *ndcg,
                   double *recall)
{
    const char *top[RECALL_DEPTH];
    double *ideal = xrealloc(NULL, (s->nr + 1) * sizeof *ideal);
    double nsum = 0, rsum = 0;
    size_t judged = 0;
    for (size_t qi = 0; qi < s->nq; qi++) {
        const query_rec *q = &s->q[qi];
        if (!q->relevant)
            continue;
        judged++;
        rag_results *r;
        if (search(ctx, q->text, NDCG_SEARCH_K, mode, NULL, &r)) {
            free(ideal);
            return 1;
        }
        size_t n = distinct_docs(r, top, NDCG_DEPTH), ni = 0;
        double dcg = 0, idcg = 0;
        for (size_t j = 0; j < n; j++)
            dcg += qrel_gain(s, q, top[j]) / LOG2[j];
        for (size_t j = q->rel_lo; j < q->rel_hi; j++)
            if (s->r[j].gain > 0)
                ideal[ni++] = s->r[j].gain;
        qsort(ideal, ni, sizeof *ideal, cmp_double_desc);
        for (size_t j = 0; j < ni && j < NDCG_DEPTH; j++)
            idcg += ideal[j] / LOG2[j];
        nsum += dcg / idcg;
        rag_results_free(r);
        if (!recall)
            continue;
        if (search(ctx, q->text, RECALL_SEARCH_K, mode, NULL, &r)) {
            free(ideal);
            return 1;
        }
        n = distinct_docs(r, top, RECALL_DEPTH);
        size_t hit = 0;
        for (size_t j = 0; j < n; j++)
            hit += qrel_gain(s, q, top[j]) > 0;
        rsum += (double)hit / (double)q->relevant;
        rag_results_free(r);
    }
    free(ideal);
    *ndcg = judged ? nsum / (double)judged : NAN;
    if (recall)
        *recall = judged ? rsum / (double)judged : NAN;
    return 0;
}

typedef struct quality_row {
    const char *collection;
    double ndcg[4], recall[4];
    size_t judged, docs, chunks;
} quality_row;

static int run_quality(rag_ctx *ctx, const collection *c, quality_row *row)
{
    rag_status_info st;
    if (read_status(ctx, &st))
        return 1;
    row->collection = c->name;
    row->judged = c->test.judged;
    row->docs = (size_t)st.documents;
    row->chunks = (size_t)st.chunks;
    for (int m = 1; m <= 3; m++) {
        double t0 = bench_now_s();
        if (quality(ctx, &c->test, (rag_search_mode)m, &row->ndcg[m], &row->recall[m]))
            return 1;
        json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:f, s:I, s:I, s:I, s:f}", "figure",
                              "quality", "collection", c->name, "mode", MODE_NAMES[m],
                              "ndcg_at_10", row->ndcg[m], "recall_at_100", row->recall[m],
                              "judged", (json_int_t)row->judged, "docs", (json_int_t)row->docs,
                              "chunks", (json_int_t)row->chunks, "seconds", bench_now_s() - t0);
        emit(o);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * ACL recall: filtered search against an exact filtered scan
 * ---------------------------------------------------------------------------------------- */

/*
 * The reference must not go through the ACL filter it judges:
 *   - vector: a second root holding only the allowed documents (same text, same chunking,
 *     same provider, so the same vectors), no ACL, searched unrestricted: IDMap2,Flat is brute
 *     force, so that is the exact top 10 over the allowed chunks;
 *   - lexical: BM25 scores depend on collection statistics, so the reference comes from the
 *     full root itself, searched unrestricted at k=1000, keeping the allowed chunks in rank
 *     order.  That is the exact filtered ranking whenever the unrestricted list is exhaustive
 *     (fewer than 1000 chunks match), so lexical uses short queries (the two longest words of
 *     each claim) and skips, and counts, queries that match 1000 chunks or more.
 * A returned chunk counts as found when it is in the reference top 10 or ties its 10th score
 * (scores equal within 1e-5 relative), so tie order cannot cost recall.
 */

typedef struct chunk_ref {
    char *doc;
    uint32_t chunk;
    float score;
} chunk_ref;

/* Document id -> position in the collection (sorted ids, binary search). */
typedef struct doc_index {
    const char **id;
    size_t *pos, n;
} doc_index;

static const collection *sort_ctx;
static int cmp_pos_by_id(const void *a, const void *b)
{
    return strcmp(sort_ctx->docs[*(const size_t *)a].id, sort_ctx->docs[*(const size_t *)b].id);
}

static void doc_index_build(doc_index *ix, const collection *c)
{
    ix->n = c->ndocs;
    ix->pos = xrealloc(NULL, c->ndocs * sizeof *ix->pos);
    for (size_t i = 0; i < c->ndocs; i++)
        ix->pos[i] = i;
    sort_ctx = c; /* single-threaded here */
    qsort(ix->pos, ix->n, sizeof *ix->pos, cmp_pos_by_id);
    ix->id = xrealloc(NULL, c->ndocs * sizeof *ix->id);
    for (size_t i = 0; i < c->ndocs; i++)
        ix->id[i] = c->docs[ix->pos[i]].id;
}

/* Position of `id`, or (size_t)-1. */
static size_t doc_index_find(const doc_index *ix, const char *id)
{
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ix->id[mid], id);
        if (!c)
            return ix->pos[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

/* The two longest alphabetic words of `text` (ties: first), as a short lexical query. */
static void short_query(const char *text, char *out, size_t size)
{
    char best[2][64] = {"", ""};
    const char *p = text;
    while (*p) {
        while (*p && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            p++;
        const char *s = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
            p++;
        size_t n = (size_t)(p - s);
        if (n == 0 || n >= 64)
            continue;
        for (int b = 0; b < 2; b++)
            if (n > strlen(best[b])) {
                if (b == 0)
                    memcpy(best[1], best[0], sizeof best[0]);
                memcpy(best[b], s, n);
                best[b][n] = 0;
                break;
            }
    }
    snprintf(out, size, "%s %s", best[0], best[1]);
}

static int same_chunk(const chunk_ref *a, const rag_result *b)
{
    return a->chunk == b->chunk && !strcmp(a->doc, b->doc_id);
}

/* Hits of `got` (the filtered top 10) in `ref` (exact filtered ranking, best first). */
static size_t count_hits(const chunk_ref *ref, size_t nref, const rag_results *got)
{
    size_t depth = nref < NDCG_DEPTH ? nref : NDCG_DEPTH, hits = 0;
    float tenth = depth ? ref[depth - 1].score : 0.0f;
    for (size_t i = 0; i < got->count && i < NDCG_DEPTH; i++) {
        int found = 0;
        for (size_t j = 0; j < depth && !found; j++)
            found = same_chunk(&ref[j], &got->items[i]);
        /* a tie with the 10th reference score is as good as any of the tied chunks */
        if (!found && depth == NDCG_DEPTH)
            for (size_t j = depth; j < nref && !found; j++)
                found = same_chunk(&ref[j], &got->items[i]) &&
                        fabsf(ref[j].score - tenth) <= 1e-5f * fmaxf(1.0f, fabsf(tenth));
        hits += found;
    }
    return hits;
}

typedef struct acl_recall_row {
    double selectivity, chunk_share;
    double recall[4];    /* by mode (vector, lexical) */
    size_t queries[4];   /* queries scored */
    size_t skipped[4];   /* lexical: reference not exhaustive, or nothing allowed matched */
} acl_recall_row;

static int run_acl_recall(rag_ctx *ctx, const collection *c, acl_recall_row rows[SEL_GROUPS],
                          size_t nq)
{
    rag_status_info st;
    if (read_status(ctx, &st))
        return 1;
    if (nq > c->test.nq)
        nq = c->test.nq;
    doc_index ix;
    doc_index_build(&ix, c);
    chunk_ref *ref = xrealloc(NULL, K_MAX * sizeof *ref);
    char *roots[SEL_GROUPS] = {NULL};
    rag_ctx *rctx[SEL_GROUPS] = {NULL};
    collection sub[SEL_GROUPS];
    memset(sub, 0, sizeof sub);
    double sum[SEL_GROUPS][4];
    memset(sum, 0, sizeof sum);
    int ret = 0;

    /* Reference roots for the vector side: the allowed documents only, public. */
    for (int g = 0; g < SEL_GROUPS && !ret; g++) {
        memset(&rows[g], 0, sizeof rows[g]);
        rows[g].selectivity = SEL_FRACTION[g];
        sub[g].name = "allowed";
        for (size_t i = 0; i < c->ndocs; i++)
            if (sel_member(i, g)) {
                sub[g].docs = xrealloc(sub[g].docs, (sub[g].ndocs + 1) * sizeof *sub[g].docs);
                sub[g].docs[sub[g].ndocs++] = c->docs[i]; /* borrowed */
            }
        double secs;
        rag_status_info rst;
        if (!(roots[g] = new_root("aclref")) || open_root(&rctx[g], roots[g], 0, 0, 0) ||
            ingest_collection(rctx[g], &sub[g], NULL, &secs) || read_status(rctx[g], &rst))
            ret = 1;
        else
            rows[g].chunk_share = (double)rst.chunks / (double)st.chunks;
    }

    for (size_t qi = 0; qi < nq && !ret; qi++) {
        const char *text = c->test.q[qi].text;
        /* lexical reference: one exhaustive unrestricted list per query, for every group */
        char sq[160];
        short_query(text, sq, sizeof sq);
        rag_results *full = NULL;
        if ((ret = search(ctx, sq, K_MAX, RAG_MODE_LEXICAL, NULL, &full)) != 0)
            break;
        for (int g = 0; g < SEL_GROUPS && !ret; g++) {
            acl_recall_row *row = &rows[g];
            rag_results *rr = NULL, *got = NULL;
            /* vector */
            ret = search(rctx[g], text, 2 * NDCG_DEPTH, RAG_MODE_VECTOR, NULL, &rr);
            if (!ret)
                ret = search(ctx, text, NDCG_DEPTH, RAG_MODE_VECTOR, SEL_PRINCIPAL[g], &got);
            if (!ret) {
                size_t nref = 0;
                for (size_t i = 0; i < rr->count; i++)
                    ref[nref++] = (chunk_ref){(char *)rr->items[i].doc_id, rr->items[i].chunk,
                                              rr->items[i].score};
                size_t want = nref < NDCG_DEPTH ? nref : NDCG_DEPTH;
                if (want) {
                    sum[g][RAG_MODE_VECTOR] += (double)count_hits(ref, nref, got) / (double)want;
                    row->queries[RAG_MODE_VECTOR]++;
                }
            }
            rag_results_free(rr);
            rag_results_free(got);
            got = NULL;
            if (ret)
                break;
            /* lexical */
            if ((ret = search(ctx, sq, NDCG_DEPTH, RAG_MODE_LEXICAL, SEL_PRINCIPAL[g], &got)))
                break;
            size_t nref = 0;
            if (full->count < K_MAX)
                for (size_t i = 0; i < full->count; i++) {
                    size_t pos = doc_index_find(&ix, full->items[i].doc_id);
                    if (pos != (size_t)-1 && sel_member(pos, g))
                        ref[nref++] = (chunk_ref){(char *)full->items[i].doc_id,
                                                  full->items[i].chunk, full->items[i].score};
                }
            size_t want = nref < NDCG_DEPTH ? nref : NDCG_DEPTH;
            if (full->count >= K_MAX || want == 0) {
                row->skipped[RAG_MODE_LEXICAL]++;
            } else {
                sum[g][RAG_MODE_LEXICAL] += (double)count_hits(ref, nref, got) / (double)want;
                row->queries[RAG_MODE_LEXICAL]++;
            }
            rag_results_free(got);
        }
        rag_results_free(full);
    }

    for (int g = 0; g < SEL_GROUPS; g++) {
        acl_recall_row *row = &rows[g];
        for (int m = RAG_MODE_VECTOR; m <= RAG_MODE_LEXICAL && !ret; m++) {
            row->recall[m] = row->queries[m] ? sum[g][m] / (double)row->queries[m] : NAN;
            emit(json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:I, s:I, s:s}", "figure",
                           "acl_recall_at_10", "collection", c->name, "selectivity",
                           row->selectivity, "chunk_share", row->chunk_share, "mode",
                           MODE_NAMES[m], "recall_at_10", row->recall[m], "queries",
                           (json_int_t)row->queries[m], "skipped", (json_int_t)row->skipped[m],
                           "reference",
                           m == RAG_MODE_VECTOR ? "allowed-only root, brute force"
                                                : "unrestricted exhaustive list, filtered"));
        }
        free(sub[g].docs);
        rag_close(rctx[g]);
        if (roots[g])
            bench_rm_tree(roots[g]);
        free(roots[g]);
    }
    free(ix.pos);
    free(ix.id);
    free(ref);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Tuning on the train queries
 * ---------------------------------------------------------------------------------------- */

typedef struct tune_result {
    double k1, b, w, ndcg_train;             /* best hybrid configuration on train */
    double default_train_lexical, default_train_hybrid;
    double best_lex_k1, best_lex_b, best_lex_train;
    /* the best configuration on the test sets: [0] SciFact, [1] CISI; [mode] */
    double test_ndcg[2][4];
} tune_result;

static int reopen(rag_ctx **ctx, const char *root, float k1, float b, float w)
{
    rag_close(*ctx);
    *ctx = NULL;
    return open_root(ctx, root, k1, b, w);
}

/* BM25 k1 and b are applied at query time and the fusion weight too, so each configuration
 * is a reopen of the same root with other rag_options.  Chosen on the train queries only;
 * the best one is then scored once on the test sets of both collections. */
static int run_tuning(rag_ctx **ctx, const char *root, const collection *c,
                      const char *cisi_root, const collection *cisi, tune_result *t)
{
    static const float K1[] = {0.6f, 0.9f, 1.2f};
    static const float B[] = {0.3f, 0.4f, 0.6f};
    static const float W[] = {0.8f, 0.9f, 0.95f, 0.98f};
    memset(t, 0, sizeof *t);
    double best = -1;
    /* 1. BM25 k1/b in lexical mode (cheap: no vectors) */
    for (size_t i = 0; i < sizeof K1 / sizeof *K1; i++)
        for (size_t j = 0; j < sizeof B / sizeof *B; j++) {
            double nd, t0 = bench_now_s();
            if (reopen(ctx, root, K1[i], B[j], 0) ||
                quality(*ctx, &c->train, RAG_MODE_LEXICAL, &nd, NULL))
                return 1;
            emit(json_pack("{s:s, s:s, s:s, s:f, s:f, s:f, s:f}", "figure", "tuning", "split",
                           "train", "mode", "lexical", "bm25_k1", (double)K1[i], "bm25_b",
                           (double)B[j], "ndcg_at_10", nd, "seconds", bench_now_s() - t0));
            if (K1[i] == 0.9f && B[j] == 0.4f)
                t->default_train_lexical = nd;
            if (nd > best + 1e-9) {
                best = nd;
                t->best_lex_k1 = K1[i];
                t->best_lex_b = B[j];
            }
        }
    t->best_lex_train = best;
    /* 2. the hybrid weight at the default k1/b: k1/b move lexical nDCG by about 0.002 on
     * 809 queries (noise), the weight by ten times that, so only the weight is crossed with
     * the vector side (each hybrid pass costs ~5x a lexical one) */
    double bestw = -1;
    for (size_t i = 0; i < sizeof W / sizeof *W; i++) {
        double nd, t0 = bench_now_s();
        if (reopen(ctx, root, 0.9f, 0.4f, W[i]) ||
            quality(*ctx, &c->train, RAG_MODE_HYBRID, &nd, NULL))
            return 1;
        emit(json_pack("{s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f}", "figure", "tuning", "split",
                       "train", "mode", "hybrid", "bm25_k1", 0.9, "bm25_b", 0.4,
                       "hybrid_lexical_weight", (double)W[i], "ndcg_at_10", nd, "seconds",
                       bench_now_s() - t0));
        if (W[i] == 0.95f)
            t->default_train_hybrid = nd;
        if (nd > bestw + 1e-9) {
            bestw = nd;
            t->k1 = 0.9;
            t->b = 0.4;
            t->w = W[i];
        }
    }
    t->ndcg_train = bestw;
    /* 3. the best train configuration once on the test sets, hybrid and lexical (reported,
     * never chosen on) */
    for (int set = 0; set < 2; set++) {
        const char *r = set ? cisi_root : root;
        const collection *cc = set ? cisi : c;
        if (reopen(ctx, r, (float)t->k1, (float)t->b, (float)t->w) ||
            quality(*ctx, &cc->test, RAG_MODE_HYBRID, &t->test_ndcg[set][RAG_MODE_HYBRID],
                    NULL) ||
            quality(*ctx, &cc->test, RAG_MODE_LEXICAL, &t->test_ndcg[set][RAG_MODE_LEXICAL],
                    NULL))
            return 1;
        emit(json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "figure", "tuning_best",
                       "collection", cc->name, "bm25_k1", t->k1, "bm25_b", t->b,
                       "hybrid_lexical_weight", t->w, "ndcg_at_10_train", t->ndcg_train,
                       "ndcg_at_10_test_hybrid", t->test_ndcg[set][RAG_MODE_HYBRID],
                       "ndcg_at_10_test_lexical", t->test_ndcg[set][RAG_MODE_LEXICAL]));
    }
    return reopen(ctx, root, 0, 0, 0);
}

/* ------------------------------------------------------------------------------------------
 * Latency against raw FAISS
 * ---------------------------------------------------------------------------------------- */

typedef struct raw_faiss {
    FaissIndex *fx;
    FaissIDSelector *sel;          /* 1% of the labels */
    FaissSearchParameters *params; /* carrying `sel` */
    size_t d, nsel;
    float *qv; /* query vectors */
} raw_faiss;

static void raw_close(raw_faiss *rf)
{
    faiss_SearchParameters_free(rf->params);
    faiss_IDSelector_free(rf->sel);
    faiss_Index_free(rf->fx);
    free(rf->qv);
    memset(rf, 0, sizeof *rf);
}

/*
 * Raw FAISS: the snapshot rag_close() wrote (IDMap2 over IndexFlat, inner product: brute
 * force over exactly the vectors ragcore searches).  Queries are embedded once, untimed, with
 * the public provider.  The filtered raw search hands FAISS an IDSelectorBatch of every 100th
 * label value below the label count (labels are handed out in sequence, so about 1% of the
 * vectors: the same selectivity as the ACL filter, not the same documents).
 */
static int raw_open(raw_faiss *rf, const char *root, const qset *qs, uint64_t vectors)
{
    char path[4200];
    memset(rf, 0, sizeof *rf);
    snprintf(path, sizeof path, "%s/%s", root, SNAPSHOT_REL);
    if (faiss_read_index_fname(path, 0, &rf->fx))
        return bench_fail("faiss_read_index_fname(%s): %s", path, faiss_get_last_error());
    rf->d = (size_t)faiss_Index_d(rf->fx);
    idx_t ntotal = faiss_Index_ntotal(rf->fx);
    if ((uint64_t)ntotal != vectors) {
        raw_close(rf);
        return bench_fail("snapshot holds %lld vectors, rag_status %llu", (long long)ntotal,
                    (unsigned long long)vectors);
    }
    rag_embed_provider p;
    int rc = rag_embed_cpu_hash_init(&p, EMBED_DIM);
    if (rc) {
        raw_close(rf);
        return bench_fail_rag("rag_embed_cpu_hash_init", rc);
    }
    rf->qv = xrealloc(NULL, qs->nq * rf->d * sizeof *rf->qv);
    for (size_t i = 0; i < qs->nq && !rc; i++) {
        const char *t = qs->q[i].text;
        size_t len = strlen(t);
        rc = p.embed(p.state, &t, &len, 1, rf->qv + i * rf->d);
    }
    rag_embed_provider_release(&p);
    if (rc) {
        raw_close(rf);
        return bench_fail_rag("embed", rc);
    }
    /* labels run from 0 or 1 up; take every 100th value of the range */
    size_t n = (size_t)ntotal / 100 + 1;
    idx_t *ids = xrealloc(NULL, n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = (idx_t)(i * 100 + 50);
    FaissIDSelectorBatch *batch = NULL;
    if (faiss_IDSelectorBatch_new(&batch, n, ids) ||
        faiss_SearchParameters_new(&rf->params, (FaissIDSelector *)batch)) {
        free(ids);
        faiss_IDSelector_free((FaissIDSelector *)batch);
        raw_close(rf);
        return bench_fail("FAISS selector: %s", faiss_get_last_error());
    }
    rf->sel = (FaissIDSelector *)batch;
    rf->nsel = n;
    free(ids);
    return 0;
}

static int raw_search(const raw_faiss *rf, size_t qi, int filtered, double *ms)
{
    float dist[LAT_K];
    idx_t lab[LAT_K];
    double t0 = bench_now_s();
    int rc = filtered ? faiss_Index_search_with_params(rf->fx, 1, rf->qv + qi * rf->d, LAT_K,
                                                       rf->params, dist, lab)
                      : faiss_Index_search(rf->fx, 1, rf->qv + qi * rf->d, LAT_K, dist, lab);
    *ms = (bench_now_s() - t0) * 1e3;
    return rc ? bench_fail("faiss search: %s", faiss_get_last_error()) : 0;
}

typedef struct lat_row {
    size_t docs, chunks;
    double p50[4][2], p99[4][2];     /* [mode][filtered] */
    double raw_p50[2], raw_p99[2];   /* [filtered] */
    double results_avg[4][2];        /* results per query (k=10 unless fewer readable) */
} lat_row;

/* Time every test query once per (mode, filter), interleaved with raw FAISS.  The result
 * cache never hits: each (text, mode, principals) is searched once, and the warm-up uses the
 * train queries. */
static int time_tier(rag_ctx *ctx, const raw_faiss *rf, const collection *c, lat_row *row)
{
    size_t n = c->test.nq;
    double *lat = xrealloc(NULL, n * sizeof *lat);
    double *raw[2];
    raw[0] = xrealloc(NULL, n * sizeof *raw[0]);
    raw[1] = xrealloc(NULL, n * sizeof *raw[1]);
    size_t nraw[2] = {0, 0};
    int ret = 0;
    /* warm-up: pages of LMDB, FAISS and the lexical index, on queries not timed */
    for (size_t i = 0; i < c->train.nq && i < 30 && !ret; i++)
        for (int m = 1; m <= 3 && !ret; m++) {
            rag_results *r = NULL;
            ret = search(ctx, c->train.q[i].text, LAT_K, (rag_search_mode)m,
                         i % 2 ? ACL_ONE_PERCENT : NULL, &r);
            rag_results_free(r);
            double ms;
            if (!ret)
                ret = raw_search(rf, i % n, (int)(i % 2), &ms);
        }
    for (int f = 0; f < 2 && !ret; f++)
        for (int m = 1; m <= 3 && !ret; m++) {
            size_t results = 0;
            for (size_t i = 0; i < n && !ret; i++) {
                /* raw FAISS interleaved with the vector pass, its like-for-like counterpart */
                int with_raw = m == RAG_MODE_VECTOR;
                if (with_raw && i % 2 == 0)
                    ret = raw_search(rf, i, f, &raw[f][nraw[f]++]);
                rag_results *r = NULL;
                double t0 = bench_now_s();
                if (!ret)
                    ret = search(ctx, c->test.q[i].text, LAT_K, (rag_search_mode)m,
                                 f ? ACL_ONE_PERCENT : NULL, &r);
                lat[i] = (bench_now_s() - t0) * 1e3;
                if (r)
                    results += r->count;
                rag_results_free(r);
                if (!ret && with_raw && i % 2 == 1)
                    ret = raw_search(rf, i, f, &raw[f][nraw[f]++]);
            }
            if (ret)
                break;
            row->p50[m][f] = bench_percentile(lat, n, 50);
            row->p99[m][f] = bench_percentile(lat, n, 99);
            row->results_avg[m][f] = (double)results / (double)n;
        }
    for (int f = 0; f < 2 && !ret; f++) {
        row->raw_p50[f] = bench_percentile(raw[f], nraw[f], 50);
        row->raw_p99[f] = bench_percentile(raw[f], nraw[f], 99);
    }
    free(lat);
    free(raw[0]);
    free(raw[1]);
    if (ret)
        return ret;
    for (int f = 0; f < 2; f++) {
        for (int m = 1; m <= 3; m++)
            emit(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f, s:f}", "figure",
                           "latency", "mode", MODE_NAMES[m], "acl", f ? "1%" : "none", "docs",
                           (json_int_t)row->docs, "chunks", (json_int_t)row->chunks, "k",
                           (json_int_t)LAT_K, "p50_ms", row->p50[m][f], "p99_ms",
                           row->p99[m][f], "results_per_query", row->results_avg[m][f],
                           "to_raw_p50_ratio", row->p50[m][f] / row->raw_p50[f]));
        emit(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:s}", "figure", "latency",
                       "mode", "faiss_raw", "acl", f ? "1%" : "none", "docs",
                       (json_int_t)row->docs, "chunks", (json_int_t)row->chunks, "k",
                       (json_int_t)LAT_K, "p50_ms", row->raw_p50[f], "p99_ms", row->raw_p99[f],
                       "what",
                       f ? "IDMap2,Flat snapshot, IDSelectorBatch of 1% of the labels"
                         : "IDMap2,Flat snapshot (brute force inner product)"));
    }
    return 0;
}

/* One size: close (snapshot), load raw FAISS, reopen, time, keep the root open. */
static int measure_tier(rag_ctx **ctx, const char *root, const collection *c, lat_row *row)
{
    rag_status_info st;
    if (read_status(*ctx, &st))
        return 1;
    row->docs = (size_t)st.documents;
    row->chunks = (size_t)st.chunks;
    rag_close(*ctx);
    *ctx = NULL;
    raw_faiss rf;
    if (raw_open(&rf, root, &c->test, st.vectors))
        return 1;
    int ret = open_root(ctx, root, 0, 0, 0);
    if (!ret)
        ret = time_tier(*ctx, &rf, c, row);
    raw_close(&rf);
    return ret;
}

/* Replica `copy` (>= 1) of document `d`: id "<id>~<copy>", and every 9th word of the body,
 * starting at word (copy % 9), dropped, so no two copies embed alike or chunk alike. */
static void make_replica(const doc_rec *d, size_t copy, put_item *it, char **own_id,
                         char **own_body)
{
    size_t idl = strlen(d->id) + 24;
    *own_id = xrealloc(NULL, idl);
    snprintf(*own_id, idl, "%s~%zu", d->id, copy);
    char *b = xrealloc(NULL, d->len + 1);
    size_t o = 0, word = 0;
    const char *p = d->body;
    while (*p) {
        const char *s = p;
        while (*p && *p != ' ')
            p++;
        int drop = word % 9 == copy % 9 && word > 0;
        if (!drop) {
            memcpy(b + o, s, (size_t)(p - s));
            o += (size_t)(p - s);
        }
        word++;
        while (*p == ' ') {
            if (!drop || o == 0 || b[o - 1] != ' ')
                b[o++] = ' ';
            p++;
        }
    }
    b[o] = 0;
    *own_body = b;
    *it = (put_item){*own_id, d->title, b, o};
}

static int run_latency(const collection *c, lat_row rows[2], size_t scale_chunks,
                       double *ingest_s)
{
    char *root = new_root("scale");
    if (!root)
        return 1;
    rag_ctx *ctx = NULL;
    int ret = open_root(&ctx, root, 0, 0, 0);
    size_t seq = 0, next = 0, copy = 0;
    double t_ingest = 0;
    put_item *items = xrealloc(NULL, BATCH * sizeof *items);
    char **own = xrealloc(NULL, 2 * BATCH * sizeof *own);
    for (int tier = 0; tier < 2 && !ret; tier++) {
        size_t target = tier ? scale_chunks : SMALL_CHUNKS;
        double t0 = bench_now_s();
        if ((ret = rag_start(ctx)) != 0) {
            ret = bench_fail_rag("rag_start", ret);
            break;
        }
        for (;;) {
            rag_status_info st;
            if ((ret = read_status(ctx, &st)) != 0 || st.chunks >= target)
                break;
            /* roughly what is missing, in documents of ~2 chunks, at most one batch */
            size_t want = (size_t)((target - st.chunks) / 2 + 1);
            size_t m = want < BATCH ? want : BATCH, nown = 0;
            for (size_t i = 0; i < m; i++) {
                if (next == c->ndocs) {
                    next = 0;
                    copy++;
                }
                const doc_rec *d = &c->docs[next++];
                if (copy == 0) {
                    items[i] = (put_item){d->id, d->title, d->body, d->len};
                } else {
                    make_replica(d, copy, &items[i], &own[nown], &own[nown + 1]);
                    nown += 2;
                }
            }
            ret = put_items(ctx, items, m, acl_scale, &seq);
            for (size_t i = 0; i < nown; i++)
                free(own[i]);
            if (ret)
                break;
        }
        rag_stop(ctx);
        t_ingest += bench_now_s() - t0;
        if (ret)
            break;
        fprintf(stderr, "bench_retrieval: latency root at %s chunks: timing...\n",
                tier ? "~100k" : "~5k");
        ret = measure_tier(&ctx, root, c, &rows[tier]);
    }
    *ingest_s = t_ingest;
    free(items);
    free(own);
    rag_close(ctx);
    bench_rm_tree(root);
    free(root);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *data_dir = argc > 1 ? argv[1] : getenv("RAG_SHARED_DATA");
    char default_dir[4096];
    if (!data_dir || !*data_dir) {
        snprintf(default_dir, sizeof default_dir, "%s/../shared/data", RAG_BENCH_SOURCE_DIR);
        data_dir = default_dir;
    }
    const char *tmp = getenv("RAG_BENCH_TMPDIR");
    if (!tmp || !*tmp)
        tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    snprintf(tmp_base, sizeof tmp_base, "%s", tmp);
    const char *tune_env = getenv("RAG_BENCH_TUNE");
    int tune = !(tune_env && !strcmp(tune_env, "0"));
    const char *scale_env = getenv("RAG_BENCH_SCALE_CHUNKS");
    size_t scale_chunks = scale_env && *scale_env ? strtoul(scale_env, NULL, 10) : SCALE_CHUNKS;
    if (scale_chunks < SMALL_CHUNKS)
        scale_chunks = SMALL_CHUNKS;

    double t_start = bench_now_s();
    collection sf, cisi;
    int ret = 1;
    if (collection_load(&sf, data_dir, "scifact", 1) ||
        collection_load(&cisi, data_dir, "cisi", 0)) {
        collection_free(&sf);
        return 1;
    }
    quality_row qrows[2];
    memset(qrows, 0, sizeof qrows);
    acl_recall_row arows[SEL_GROUPS];
    memset(arows, 0, sizeof arows);
    tune_result tr;
    memset(&tr, 0, sizeof tr);
    lat_row lrows[2];
    memset(lrows, 0, sizeof lrows);
    double sf_ingest = 0, cisi_ingest = 0, scale_ingest = 0, t_quality = 0, t_acl = 0,
           t_tune = 0, t_lat = 0;
    rag_ctx *ctx = NULL;
    char *sf_root = NULL, *cisi_root = NULL;

    /* 1. quality: SciFact (with the selectivity ACLs; searched unrestricted) and CISI */
    fprintf(stderr, "bench_retrieval: phase 1: quality\n");
    double t0 = bench_now_s();
    if (!(sf_root = new_root("scifact")) || open_root(&ctx, sf_root, 0, 0, 0) ||
        ingest_collection(ctx, &sf, acl_selectivity, &sf_ingest) ||
        run_quality(ctx, &sf, &qrows[0]))
        goto out;
    {
        rag_ctx *cctx = NULL;
        int r = !(cisi_root = new_root("cisi")) || open_root(&cctx, cisi_root, 0, 0, 0) ||
                ingest_collection(cctx, &cisi, NULL, &cisi_ingest) ||
                run_quality(cctx, &cisi, &qrows[1]);
        rag_close(cctx);
        if (r)
            goto out;
    }
    t_quality = bench_now_s() - t0;

    /* 2. ACL recall on the SciFact root */
    fprintf(stderr, "bench_retrieval: phase 2: ACL recall\n");
    t0 = bench_now_s();
    if (run_acl_recall(ctx, &sf, arows, 300))
        goto out;
    t_acl = bench_now_s() - t0;

    /* 3. tuning on the train queries */
    if (tune) {
        fprintf(stderr, "bench_retrieval: phase 3: tuning on SciFact train queries\n");
        t0 = bench_now_s();
        if (run_tuning(&ctx, sf_root, &sf, cisi_root, &cisi, &tr))
            goto out;
        t_tune = bench_now_s() - t0;
    }
    rag_close(ctx);
    ctx = NULL;

    /* 4. latency */
    fprintf(stderr, "bench_retrieval: phase 4: latency (5k and %zu chunks)\n", scale_chunks);
    t0 = bench_now_s();
    if (run_latency(&sf, lrows, scale_chunks, &scale_ingest))
        goto out;
    t_lat = bench_now_s() - t0;
    ret = 0;

    /* ---- tables ---- */
    fprintf(stderr, "\n== ragcore retrieval benchmark (default options, no_sync) ==\n");
    fprintf(stderr, "\nquality (document level; nDCG@10 / recall@100)\n");
    fprintf(stderr, "  %-8s %7s %6s %6s   %-17s %-17s %-17s\n", "set", "docs", "chunks", "judged",
            "vector", "lexical", "hybrid (default)");
    for (int i = 0; i < 2; i++)
        fprintf(stderr, "  %-8s %7zu %6zu %6zu   %.4f / %.4f   %.4f / %.4f   %.4f / %.4f\n",
                qrows[i].collection, qrows[i].docs, qrows[i].chunks, qrows[i].judged,
                qrows[i].ndcg[1], qrows[i].recall[1], qrows[i].ndcg[2], qrows[i].recall[2],
                qrows[i].ndcg[3], qrows[i].recall[3]);
    fprintf(stderr, "\nACL filter recall@10 vs exact filtered scan (SciFact, %zu chunks)\n",
            qrows[0].chunks);
    fprintf(stderr, "  %-11s %-12s %-22s %-22s\n", "selectivity", "chunk share", "vector",
            "lexical (2-word queries)");
    for (int g = 0; g < SEL_GROUPS; g++)
        fprintf(stderr, "  %-11.3g %-12.4f %.4f (%3zu q)          %.4f (%3zu q, %zu skipped)\n",
                arows[g].selectivity, arows[g].chunk_share, arows[g].recall[1],
                arows[g].queries[1], arows[g].recall[2], arows[g].queries[2],
                arows[g].skipped[2]);
    if (tune) {
        fprintf(stderr, "\ntuning on SciFact train (%zu judged), nDCG@10\n", sf.train.judged);
        fprintf(stderr, "  defaults (k1 0.9, b 0.4, w 0.95): lexical %.4f, hybrid %.4f\n",
                tr.default_train_lexical, tr.default_train_hybrid);
        fprintf(stderr, "  best lexical: k1 %.2f b %.2f -> %.4f\n", tr.best_lex_k1, tr.best_lex_b,
                tr.best_lex_train);
        fprintf(stderr, "  best hybrid:  k1 %.2f b %.2f w %.2f -> train %.4f\n", tr.k1, tr.b,
                tr.w, tr.ndcg_train);
        fprintf(stderr, "  with it on the test sets: SciFact hybrid %.4f lexical %.4f, CISI hybrid "
                        "%.4f lexical %.4f\n",
                tr.test_ndcg[0][RAG_MODE_HYBRID], tr.test_ndcg[0][RAG_MODE_LEXICAL],
                tr.test_ndcg[1][RAG_MODE_HYBRID], tr.test_ndcg[1][RAG_MODE_LEXICAL]);
    }
    fprintf(stderr, "\nquery latency, k=%d, ms p50 / p99 (SciFact test claims; 1%%: as a "
                    "principal reading 1%% of the documents)\n", LAT_K);
    fprintf(stderr, "  %-7s %7s %-5s %-17s %-17s %-17s %-17s\n", "chunks", "docs", "acl",
            "vector", "lexical", "hybrid", "raw FAISS");
    for (int t = 0; t < 2; t++)
        for (int f = 0; f < 2; f++)
            fprintf(stderr,
                    "  %-7zu %7zu %-5s %7.3f / %7.3f %7.3f / %7.3f %7.3f / %7.3f %7.3f / %7.3f\n",
                    lrows[t].chunks, lrows[t].docs, f ? "1%" : "none", lrows[t].p50[1][f],
                    lrows[t].p99[1][f], lrows[t].p50[2][f], lrows[t].p99[2][f],
                    lrows[t].p50[3][f], lrows[t].p99[3][f], lrows[t].raw_p50[f],
                    lrows[t].raw_p99[f]);
    fprintf(stderr, "\ntime: ingest SciFact %.1f s, CISI %.1f s, latency root %.1f s; quality "
                    "%.1f s, ACL recall %.1f s, tuning %.1f s, latency %.1f s; total %.1f s\n",
            sf_ingest, cisi_ingest, scale_ingest, t_quality, t_acl, t_tune, t_lat,
            bench_now_s() - t_start);
    emit(json_pack("{s:s, s:f, s:f, s:f, s:f}", "figure", "time", "ingest_scifact_s", sf_ingest,
                   "ingest_scale_s", scale_ingest, "latency_phase_s", t_lat, "total_s",
                   bench_now_s() - t_start));

out:
    rag_close(ctx);
    if (sf_root)
        bench_rm_tree(sf_root);
    if (cisi_root)
        bench_rm_tree(cisi_root);
    free(sf_root);
    free(cisi_root);
    collection_free(&sf);
    collection_free(&cisi);
    return ret;
}
