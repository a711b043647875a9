/*
 * bench_synth: the synthetic headline benchmark of issue 9 -- ragcore against raw FAISS on the
 * same vectors, in the same process and run.
 *
 *   bench_synth [--docs N[,N...]]... [--queries Q] [--updates U] [--no-sweep] [--no-rss]
 *               [--rss-nosync]
 *
 * Default: the 10,000-document workload, then the 100,000-document one (200 queries there
 * instead of 1,000, to keep the run near 6 minutes on 2 cores).  Per size, on a fresh root
 * under $RAG_BENCH_TMPDIR (else $TMPDIR, else /tmp), removed at the end:
 *   1. ingest   durable (fsync on) put_batch of every document, workers running, until
 *               rag_drain() returns; raw FAISS: add_with_ids of the same vectors (memory).
 *   2. updates  1,000 replacements, one rag_doc_put() each, back to back; a poller thread
 *               watches rag_trace() until each one's version is active; raw FAISS:
 *               remove_ids + add_with_ids per update.
 *   3. queries  k=10, vector mode (the like-for-like figure) and the default hybrid mode,
 *               unrestricted and as one of 16 groups (ACL, ~12.5% of the chunks), each query
 *               timed once on a result-cache miss, interleaved query by query with raw FAISS
 *               (IDMap2,Flat; ID selector for the ACL case); recall@10 of both against an
 *               exact scan computed here.
 *   4. rss      peak resident set of a ragcore-only run and of a raw-FAISS-only run of the same
 *               workload, each in a freshly exec'd copy of this program (VmHWM).
 *      disk     allocated bytes per module directory after ingest and at the end.
 *   5. growth   each headline figure of the smallest size against the largest.
 * and on the smallest size (<= 20,000 documents) the sweep: ragcore with HNSW32 and IVF256
 * index types, raw FAISS batched search (nq = Q and nq = 32) and ragcore with 2 concurrent
 * query threads.
 *
 * How the vectors are shared: the embedding provider of bench/synth.c maps every text to a
 * vector by its hash and records every vector it hands to ragcore (with the text).  Each
 * recorded chunk text is attributed to the document it was cut from (substring search), which
 * gives raw FAISS the same vectors per document, and the exact scan the live set.
 *
 * Output: one JSON object per figure per line on stdout ("bench":"synth_ingest", ...), a
 * table on stderr.  No assertions on the figures: the exit status is non-zero only when a
 * step fails (an error is printed).  See bench/README.md, "bench_synth".
 */
#define _GNU_SOURCE /* memmem, mkdtemp */

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <ragcore/ragcore.h>

#include "bench_util.h"
#include "synth.h"

/* The FAISS >= 1.7.4 C API's filtered search (same names and signatures).  Debian's 1.7.3
 * headers do not declare it; ragcore's FAISS compatibility unit, linked in rag_static,
 * implements it (as in bench_retrieval). */
FAISS_DECLARE_CLASS(SearchParameters)
void faiss_SearchParameters_free(FaissSearchParameters *obj);
int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel);
int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances,
                                   idx_t *labels);

/* BLAS (linked through FAISS): the exact scan's inner products, one block of queries at a
 * time.  Exact arithmetic all the same; only the top-k selection is ours. */
void sgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
            const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
            const float *beta, float *c, const int *ldc);

#ifndef RAG_BENCH_BUILD_TYPE
#define RAG_BENCH_BUILD_TYPE "unknown"
#endif

#define SEED 0x5EED0009ull      /* the corpus (issue 9) */
#define K 10                    /* top-k of every timed search */
#define DIM SYNTH_DIM
#define MAX_SIZES 8
#define DEFAULT_BATCH 256
#define CHUNK_TARGET 420
#define CHUNK_MIN 210
#define CHUNK_MAX 840
#define MAX_UPDATES 1000
#define SMALL_QUERIES 1000      /* queries at <= SMALL_DOCS documents */
#define LARGE_QUERIES 200       /* above */
#define SMALL_DOCS 20000
#define RSS_QUERIES 100         /* queries of the RSS children */
#define CONC_QUERIES 200        /* queries per pass of the concurrency figure */
#define HYBRID_QUERIES 200      /* queries of the hybrid passes (not compared; latency only) */
#define SWEEP_QUERIES 300       /* queries per pass of the index-type sweep */
#define WARM_QUERIES 50         /* warm-up queries per mode and filter */
#define WARM_QUERIES_LARGE 20   /* the same above SMALL_DOCS (a flat scan is ~10x longer) */
#define HYBRID_QUERIES_LARGE 100
#define RSS_QUERIES_LARGE 50
#define RAW_UPD_SAMPLE 100      /* above SMALL_DOCS, raw updates timed on this many (below) */
#define POLL_SLEEP_NS 75000     /* the update poller's pause: ~75 us */
#define POLL_AHEAD 3            /* pending updates checked past the oldest per round */
#define VISIBLE_TIMEOUT_S 120.0
#define SCORE_EPS 1e-5f         /* a hit tying the exact 10th score counts */
#define PFX 32                  /* attribution key: first bytes of a chunk */
#define TSCALE 1e3

/* Query text numbers: the timed queries are 0..Q-1; warm-up and other passes use distinct
 * texts, so that every timed query is a result-cache miss without moving the index epoch. */
#define QOFF_WARM 1000000u
#define QOFF_CONC1 2000000u
#define QOFF_CONC2 3000000u
#define QOFF_SESSION 4000000u

static const char *const MODULES[] = {"ingest", "embed", "index", "retrieve", "assemble", "queue"};
#define NMODULES (sizeof MODULES / sizeof *MODULES)

/* ------------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------------- */

static int fail_faiss(const char *what, int frc)
{
    const char *e = faiss_get_last_error();
    return bench_fail("%s: FAISS error %d: %s", what, frc, e ? e : "no detail");
}

static void note(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench_synth: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_synth: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "bench_synth: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "bench_synth: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return q;
}

static void sleep_ns(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* Nearest-rank percentile of n values (copied; `v` is left as it is). */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    double *s = xmalloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    double r = bench_percentile(s, n, p);
    free(s);
    return r;
}

static double sum(const double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

static const char *tmp_dir(void)
{
    const char *tmp = getenv("RAG_BENCH_TMPDIR");
    if (!tmp || !*tmp)
        tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    return tmp;
}

static int make_root(char *buf, size_t size, const char *what)
{
    int n = snprintf(buf, size, "%s/ragcore-synth-%s-XXXXXX", tmp_dir(), what);
    if (n < 0 || (size_t)n >= size || !mkdtemp(buf))
        return bench_fail("cannot make a temporary directory under %s: %s", tmp_dir(),
                    strerror(errno));
    return 0;
}

/* Peak resident set of this address space (VmHWM), in KiB.  Unlike getrusage's ru_maxrss it
 * starts afresh at execve, so an exec'd child reports only itself. */
static uint64_t vm_hwm_kib(void) { return bench_proc_status_kib("VmHWM:"); }

static void cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            const char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ' || *p == '\t')
                    p++;
                snprintf(buf, size, "%s", p);
                buf[strcspn(buf, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

/* ---- JSON lines ---------------------------------------------------------------------------- */

static json_t *fig_new(const char *bench, size_t docs, uint64_t chunks)
{
    json_t *o = json_object();
    json_object_set_new(o, "bench", json_string(bench));
    json_object_set_new(o, "docs", json_integer((json_int_t)docs));
    json_object_set_new(o, "chunks", json_integer((json_int_t)chunks));
    return o;
}

static void fig_num(json_t *o, const char *key, double v)
{
    if (isnan(v) || isinf(v))
        json_object_set_new(o, key, json_null());
    else
        json_object_set_new(o, key, json_real(v));
}

static void fig_int(json_t *o, const char *key, uint64_t v)
{
    json_object_set_new(o, key, json_integer((json_int_t)v));
}

static void fig_str(json_t *o, const char *key, const char *v)
{
    json_object_set_new(o, key, json_string(v));
}

static void fig_target(json_t *o, const char *target, int meets)
{
    json_object_set_new(o, "target", json_string(target));
    json_object_set_new(o, "meets_target", json_boolean(meets));
}

static void fig_emit(json_t *o)
{
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (line) {
        puts(line);
        free(line);
    }
    fflush(stdout);
    json_decref(o);
}

/* ------------------------------------------------------------------------------------------
 * Attribution: every recorded chunk text -> the document (original or replacement) it was cut
 * from, at which offset.  Chunks start at a unit (sentence) start, and every sentence of the
 * generator starts with its only capital letter, so each text is looked up by a hash of its
 * first PFX bytes among the sentence starts of all documents, then compared in full.  A text
 * not found that way is searched with memmem over every document (counted: `by_scan`).
 * ---------------------------------------------------------------------------------------- */

typedef struct pfx_ent {
    uint64_t key; /* 0: empty */
    uint32_t doc, off;
} pfx_ent;

typedef struct pfx_index {
    pfx_ent *e;
    size_t cap;
    const synth_doc *docs;
    size_t n_docs;
} pfx_index;

static uint64_t pfx_key(const char *p) { return synth_hash(p, PFX) | 1u; }

static void pfx_build(pfx_index *px, const synth_doc *docs, size_t n_docs)
{
    size_t n = 0;
    for (size_t d = 0; d < n_docs; d++)
        for (size_t i = 0; i + PFX <= docs[d].size; i++)
            n += docs[d].text[i] >= 'A' && docs[d].text[i] <= 'Z';
    size_t cap = 1024;
    while (cap < 2 * n + 2)
        cap *= 2;
    px->e = xcalloc(cap, sizeof *px->e);
    px->cap = cap;
    px->docs = docs;
    px->n_docs = n_docs;
    for (size_t d = 0; d < n_docs; d++)
        for (size_t i = 0; i + PFX <= docs[d].size; i++) {
            if (!(docs[d].text[i] >= 'A' && docs[d].text[i] <= 'Z'))
                continue;
            uint64_t k = pfx_key(docs[d].text + i);
            size_t j = k & (cap - 1);
            while (px->e[j].key)
                j = (j + 1) & (cap - 1);
            px->e[j].key = k;
            px->e[j].doc = (uint32_t)d;
            px->e[j].off = (uint32_t)i;
        }
}

static void pfx_free(pfx_index *px)
{
    free(px->e);
    memset(px, 0, sizeof *px);
}

/* Up to `max` (doc, off) places where `t` occurs; returns how many were found. */
static size_t pfx_find(const pfx_index *px, const char *t, size_t len, uint32_t *doc,
                       uint32_t *off, size_t max, int *by_scan)
{
    size_t n = 0;
    *by_scan = 0;
    if (len >= PFX) {
        uint64_t k = pfx_key(t);
        for (size_t j = k & (px->cap - 1); px->e[j].key; j = (j + 1) & (px->cap - 1)) {
            const pfx_ent *e = &px->e[j];
            const synth_doc *d = &px->docs[e->doc];
            if (e->key == k && e->off + len <= d->size && memcmp(d->text + e->off, t, len) == 0 &&
                n < max) {
                doc[n] = e->doc;
                off[n] = e->off;
                n++;
            }
        }
    }
    if (n)
        return n;
    *by_scan = 1;
    for (size_t d = 0; d < px->n_docs && n < max; d++) {
        const char *p = memmem(px->docs[d].text, px->docs[d].size, t, len);
        if (p) {
            doc[n] = (uint32_t)d;
            off[n] = (uint32_t)(p - px->docs[d].text);
            n++;
        }
    }
    return n;
}

/* One occurrence of a chunk: its document, place and recorded vector.  Its label (raw FAISS
 * id) is its index in the workload's occurrence array. */
typedef struct occ {
    uint32_t doc;  /* corpus document index */
    uint32_t upd;  /* replacement index when gen == 1 */
    uint32_t off, len;
    uint32_t rec;  /* recorder row */
    uint8_t gen;   /* 0: original text, 1: the replacement's */
} occ;

static int cmp_occ(const void *a, const void *b)
{
    const occ *x = a, *y = b;
    if (x->gen != y->gen)
        return x->gen < y->gen ? -1 : 1;
    uint32_t dx = x->gen ? x->upd : x->doc, dy = y->gen ? y->upd : y->doc;
    if (dx != dy)
        return dx < dy ? -1 : 1;
    return (x->off > y->off) - (x->off < y->off);
}

/* ------------------------------------------------------------------------------------------
 * The workload state of one size
 * ---------------------------------------------------------------------------------------- */

typedef struct qres {
    uint64_t hash[K]; /* result chunk text hashes, best first */
    uint32_t n;
} qres;

typedef struct ref {
    uint32_t occ[K];
    float score[K];
    uint32_t n;
} ref;

typedef struct lat_fig {
    double p50, p99, raw_p50, raw_p99, recall, raw_recall, results_per_query;
    size_t n;
} lat_fig;

typedef struct work {
    size_t n_docs, n_upd, nq, n_warm;
    int large;                    /* above SMALL_DOCS: shorter secondary passes */
    size_t batch;
    synth_corpus c;
    synth_recorder *rec;
    char root[4096];
    rag_ctx *ctx;

    /* attribution */
    occ *occ;
    size_t n_occ, n_occ0;         /* all; of originals (labels 0..n_occ0-1) */
    size_t *doc_first, *doc_n;    /* per document: its original occurrences */
    size_t *upd_first, *upd_n;    /* per replacement: its occurrences */
    long *upd_of_doc;             /* document -> replacement index, -1 when not replaced */
    size_t by_scan, dup_texts, unattributed;
    int32_t *rec_occ;             /* recorder row -> first occurrence, -1 */
    size_t n_rec_ingest, n_rec;   /* recorder rows after ingest / after the updates */
    double mean_chunk_chars;

    /* hash -> recorder row */
    uint64_t *hm_key;
    uint32_t *hm_val;
    size_t hm_cap;

    /* raw FAISS */
    FaissIndex *raw;
    FaissIDSelector *grp_sel[SYNTH_GROUPS];
    FaissSearchParameters *grp_par[SYNTH_GROUPS];
    float *qv;                    /* nq query vectors */

    /* exact references */
    ref *ref_plain, *ref_acl;
    double acl_share;             /* mean share of live chunks a query's group reads */

    /* figures */
    rag_status_info st_ingest, st_end;
    double put_s, ingest_s, chunks_per_s, docs_per_s, raw_add_s, raw_chunks_per_s;
    double upd_all_s, upd_put_p50, upd_put_p99, upd_vis_p50, upd_vis_p99, upd_tot_p50,
        upd_tot_p99, upd_raw_all_s, upd_raw_p50, upd_raw_p99, upd_polls;
    size_t upd_raw_timed;         /* raw updates timed one by one (the rest: one batch) */
    lat_fig vplain, vacl, hplain, hacl;
    uint64_t cache_hits_timed;
    double disk_ingest[NMODULES + 1], disk_end[NMODULES + 1];
    double rss_rag_mib, rss_raw_mib, rss_main_mib;
    double rss_rag_anon, rss_rag_file, rss_raw_anon, rss_raw_file; /* resident at the end */
    int have_rss;
} work;

static void hm_build(work *w)
{
    const uint64_t *hashes;
    size_t n;
    synth_recorder_view(w->rec, NULL, &hashes, &n);
    free(w->hm_key);
    free(w->hm_val);
    size_t cap = 1024;
    while (cap < 2 * n + 2)
        cap *= 2;
    w->hm_key = xcalloc(cap, sizeof *w->hm_key);
    w->hm_val = xcalloc(cap, sizeof *w->hm_val);
    w->hm_cap = cap;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = hashes[i] ? hashes[i] : 1;
        size_t j = k & (cap - 1);
        while (w->hm_key[j] && w->hm_key[j] != k)
            j = (j + 1) & (cap - 1);
        w->hm_key[j] = k;
        w->hm_val[j] = (uint32_t)i;
    }
}

/* Recorder row of a text hash, -1 when never recorded. */
static long hm_get(const work *w, uint64_t h)
{
    uint64_t k = h ? h : 1;
    for (size_t j = k & (w->hm_cap - 1); w->hm_key[j]; j = (j + 1) & (w->hm_cap - 1))
        if (w->hm_key[j] == k)
            return (long)w->hm_val[j];
    return -1;
}

static int occ_live(const work *w, size_t o)
{
    const occ *e = &w->occ[o];
    return e->gen == 1 || w->upd_of_doc[e->doc] < 0;
}

static const float *rec_vec(const work *w, size_t rec)
{
    const float *v;
    synth_recorder_view(w->rec, &v, NULL, NULL);
    return v + rec * DIM;
}

static float dot(const float *a, const float *b)
{
    float s = 0;
    for (int i = 0; i < DIM; i++)
        s += a[i] * b[i];
    return s;
}

/*
 * Attribute recorder rows [from, to) to documents of `docs` (the originals, gen 0, or the
 * replacements, gen 1), appending occurrences.  Every row must be found (else the run fails:
 * the raw side would miss vectors).
 */
static int attribute(work *w, size_t from, size_t to, int gen)
{
    const synth_doc *docs = gen ? w->c.updates : w->c.docs;
    size_t n_docs = gen ? w->c.n_updates : w->c.n_docs;
    pfx_index px;
    pfx_build(&px, docs, n_docs);
    w->occ = xrealloc(w->occ, (w->n_occ + (to - from) * 2 + 16) * sizeof *w->occ);
    size_t cap = w->n_occ + (to - from) * 2 + 16;
    int ret = 0;
    for (size_t r = from; r < to; r++) {
        size_t len;
        const char *t = synth_recorder_text(w->rec, r, &len);
        if (!t) {
            ret = bench_fail("recorder row %zu has no text", r);
            break;
        }
        uint32_t doc[4], off[4];
        int scan;
        size_t n = pfx_find(&px, t, len, doc, off, 4, &scan);
        w->by_scan += scan && n;
        if (n == 0) {
            w->unattributed++;
            continue;
        }
        if (n > 1)
            w->dup_texts++;
        for (size_t i = 0; i < n; i++) {
            if (w->n_occ == cap) {
                cap *= 2;
                w->occ = xrealloc(w->occ, cap * sizeof *w->occ);
            }
            occ *e = &w->occ[w->n_occ++];
            e->gen = (uint8_t)gen;
            e->doc = gen ? (uint32_t)w->c.update_of[doc[i]] : doc[i];
            e->upd = gen ? doc[i] : 0;
            e->off = off[i];
            e->len = (uint32_t)len;
            e->rec = (uint32_t)r;
        }
    }
    pfx_free(&px);
    if (!ret && w->unattributed)
        ret = bench_fail("%zu recorded chunk text(s) found in no document", w->unattributed);
    return ret;
}

/* Index the occurrences (sorted: originals by document, then replacements by index). */
static void occ_finish(work *w)
{
    qsort(w->occ, w->n_occ, sizeof *w->occ, cmp_occ);
    w->n_occ0 = 0;
    while (w->n_occ0 < w->n_occ && w->occ[w->n_occ0].gen == 0)
        w->n_occ0++;
    free(w->doc_first);
    free(w->doc_n);
    free(w->upd_first);
    free(w->upd_n);
    w->doc_first = xcalloc(w->n_docs, sizeof *w->doc_first);
    w->doc_n = xcalloc(w->n_docs, sizeof *w->doc_n);
    w->upd_first = xcalloc(w->n_upd, sizeof *w->upd_first);
    w->upd_n = xcalloc(w->n_upd, sizeof *w->upd_n);
    for (size_t o = w->n_occ; o-- > 0;) {
        const occ *e = &w->occ[o];
        if (e->gen == 0) {
            w->doc_first[e->doc] = o;
            w->doc_n[e->doc]++;
        } else {
            w->upd_first[e->upd] = o;
            w->upd_n[e->upd]++;
        }
    }
    size_t n_rec;
    synth_recorder_view(w->rec, NULL, NULL, &n_rec);
    free(w->rec_occ);
    w->rec_occ = xmalloc((n_rec + 1) * sizeof *w->rec_occ);
    for (size_t r = 0; r <= n_rec; r++)
        w->rec_occ[r] = -1;
    for (size_t o = 0; o < w->n_occ; o++)
        if (w->rec_occ[w->occ[o].rec] < 0)
            w->rec_occ[w->occ[o].rec] = (int32_t)o;
}

/* ------------------------------------------------------------------------------------------
 * ragcore side
 * ---------------------------------------------------------------------------------------- */

static int read_status(rag_ctx *ctx, rag_status_info *st)
{
    memset(st, 0, sizeof *st);
    st->version = RAG_STATUS_VERSION;
    int rc = rag_status(ctx, st);
    return rc == RAG_OK ? 0 : bench_fail_rag("rag_status", rc);
}

/* Open `root` with the synth provider (recording into `rec` when set), the bench's chunk
 * sizes, fsync on and `factory` (NULL: the default IDMap2,Flat), and start the workers. */
static int open_root_rc(rag_ctx **ctx, const char *root, synth_recorder *rec,
                        const char *factory, int no_sync)
{
    rag_embed_provider p;
    synth_provider_init(&p, rec);
    rag_options opts;
    rag_options_init(&opts);
    opts.provider = &p;
    opts.chunk_target = CHUNK_TARGET;
    opts.chunk_min = CHUNK_MIN;
    opts.chunk_max = CHUNK_MAX;
    opts.no_sync = no_sync;
    opts.index_factory = factory;
    int rc = rag_open(ctx, root, &opts);
    if (rc == RAG_OK)
        rc = rag_start(*ctx);
    return rc;
}

static int open_root(rag_ctx **ctx, const char *root, synth_recorder *rec, const char *factory,
                     int no_sync)
{
    int rc = open_root_rc(ctx, root, rec, factory, no_sync);
    return rc == RAG_OK ? 0 : bench_fail_rag("rag_open/rag_start", rc);
}

static void doc_of(rag_doc *d, const synth_doc *s)
{
    memset(d, 0, sizeof *d);
    d->id = s->id;
    d->data = s->text;
    d->size = s->size;
    d->mime = "text/plain";
    d->acl = s->acl;
    d->acl_count = s->acl_count;
}

/* rag_doc_put_batch of `docs` in batches; *put_s = the puts alone; drained at the end. */
static int put_all(rag_ctx *ctx, const synth_doc *docs, size_t n, size_t batch, double *put_s,
                   double *all_s)
{
    rag_doc *d = xmalloc(batch * sizeof *d);
    rag_put_result *res = xmalloc(batch * sizeof *res);
    int ret = 0;
    double t0 = bench_now_s();
    for (size_t off = 0; off < n && !ret; off += batch) {
        size_t m = n - off < batch ? n - off : batch;
        for (size_t i = 0; i < m; i++)
            doc_of(&d[i], &docs[off + i]);
        int rc = rag_doc_put_batch(ctx, d, m, res);
        if (rc != RAG_OK) {
            ret = bench_fail_rag("rag_doc_put_batch", rc);
            break;
        }
        for (size_t i = 0; i < m && !ret; i++)
            if (res[i].code != RAG_OK)
                ret = bench_fail("rag_doc_put_batch: %s: %s (%d)", d[i].id, rag_strerror(res[i].code),
                           res[i].code);
    }
    double t1 = bench_now_s();
    if (!ret) {
        int rc = rag_drain(ctx, 0);
        if (rc != RAG_OK)
            ret = bench_fail_rag("rag_drain", rc);
    }
    double t2 = bench_now_s();
    if (put_s)
        *put_s = t1 - t0;
    if (all_s)
        *all_s = t2 - t0;
    free(d);
    free(res);
    return ret;
}

/* One k=K search; the hashes of the result texts go to *out when set. */
static int rag_one(rag_ctx *ctx, size_t qi, int acl, rag_search_mode mode, double *ms, qres *out)
{
    char text[32];
    synth_query_text(qi, text, sizeof text);
    const char *pr[1] = {synth_group_name(synth_query_group(qi))};
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = K;
    q.mode = mode;
    if (acl) {
        q.principals = pr;
        q.principal_count = 1;
        q.unrestricted = 0;
    } else {
        q.unrestricted = 1;
    }
    rag_results *res = NULL;
    double t0 = bench_now_s();
    int rc = rag_search(ctx, &q, &res);
    double t1 = bench_now_s();
    if (ms)
        *ms = (t1 - t0) * TSCALE;
    if (rc != RAG_OK) {
        rag_results_free(res);
        return bench_fail_rag("rag_search", rc);
    }
    if (out) {
        out->n = 0;
        for (size_t i = 0; i < res->count && i < K; i++) {
            const char *t = res->items[i].text ? res->items[i].text : "";
            out->hash[out->n++] = synth_hash(t, strlen(t));
        }
    }
    rag_results_free(res);
    return 0;
}

/* ---- updates with a visibility poller ------------------------------------------------------ */

typedef struct upd_run {
    rag_ctx *ctx;
    const synth_corpus *c;
    size_t n;
    uint64_t *version;
    double *t_call, *t_ret, *t_vis;
    atomic_size_t published; /* puts returned (their version and times are set) */
    atomic_int abort_flag;
    int err;
    uint64_t polls;
} upd_run;

/* 1: update j's version is active (what searches return). */
static int upd_visible(upd_run *u, size_t j, int *err)
{
    rag_trace_info *t = NULL;
    int rc = rag_trace(u->ctx, u->c->updates[j].id, &t);
    u->polls++;
    if (rc != RAG_OK) {
        *err = bench_fail_rag("rag_trace", rc);
        return 0;
    }
    int vis = t->active_version >= u->version[j];
    rag_trace_free(t);
    return vis;
}

static void *poller_main(void *arg)
{
    upd_run *u = arg;
    uint8_t *seen = xcalloc(u->n, 1);
    size_t next = 0;
    int err = 0;
    while (next < u->n && !err) {
        size_t pub = atomic_load_explicit(&u->published, memory_order_acquire);
        if (atomic_load(&u->abort_flag))
            break;
        if (next >= pub) {
            sleep_ns(POLL_SLEEP_NS);
            continue;
        }
        if (upd_visible(u, next, &err)) {
            u->t_vis[next] = bench_now_s();
            seen[next] = 1;
            while (next < u->n && seen[next])
                next++;
            continue; /* the next one may be visible too: no pause */
        }
        if (err)
            break;
        /* The oldest is pending; the pipeline is FIFO, but look a few further in case a
         * later one overtook it, so that its time is not taken late. */
        size_t ahead = 0;
        for (size_t j = next + 1; j < pub && ahead < POLL_AHEAD && !err; j++) {
            if (seen[j])
                continue;
            ahead++;
            if (upd_visible(u, j, &err)) {
                u->t_vis[j] = bench_now_s();
                seen[j] = 1;
            }
        }
        if (bench_now_s() - u->t_ret[next] > VISIBLE_TIMEOUT_S) {
            err = bench_fail("update %zu (%s v%llu) not visible after %.0f s", next,
                       u->c->updates[next].id, (unsigned long long)u->version[next],
                       VISIBLE_TIMEOUT_S);
            break;
        }
        sleep_ns(POLL_SLEEP_NS);
    }
    u->err = err;
    free(seen);
    return NULL;
}

static int run_updates(work *w)
{
    upd_run u;
    memset(&u, 0, sizeof u);
    u.ctx = w->ctx;
    u.c = &w->c;
    u.n = w->n_upd;
    u.version = xcalloc(u.n, sizeof *u.version);
    u.t_call = xcalloc(u.n, sizeof(double));
    u.t_ret = xcalloc(u.n, sizeof(double));
    u.t_vis = xcalloc(u.n, sizeof(double));
    atomic_init(&u.published, 0);
    atomic_init(&u.abort_flag, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, poller_main, &u) != 0)
        return bench_fail("cannot start the poller thread");
    int ret = 0;
    for (size_t i = 0; i < u.n; i++) {
        rag_doc d;
        doc_of(&d, &w->c.updates[i]);
        u.t_call[i] = bench_now_s();
        int rc = rag_doc_put(w->ctx, &d, &u.version[i]);
        u.t_ret[i] = bench_now_s();
        if (rc != RAG_OK) {
            ret = bench_fail_rag("rag_doc_put (update)", rc);
            atomic_store(&u.abort_flag, 1);
            break;
        }
        atomic_store_explicit(&u.published, i + 1, memory_order_release);
    }
    pthread_join(th, NULL);
    if (!ret && u.err)
        ret = 1;
    if (!ret) {
        double *put = xmalloc(u.n * sizeof *put), *vis = xmalloc(u.n * sizeof *vis),
               *tot = xmalloc(u.n * sizeof *tot);
        double last = 0;
        for (size_t i = 0; i < u.n; i++) {
            put[i] = (u.t_ret[i] - u.t_call[i]) * TSCALE;
            vis[i] = (u.t_vis[i] - u.t_ret[i]) * TSCALE;
            tot[i] = (u.t_vis[i] - u.t_call[i]) * TSCALE;
            if (u.t_vis[i] > last)
                last = u.t_vis[i];
        }
        w->upd_all_s = last - u.t_call[0];
        w->upd_put_p50 = pct(put, u.n, 50);
        w->upd_put_p99 = pct(put, u.n, 99);
        w->upd_vis_p50 = pct(vis, u.n, 50);
        w->upd_vis_p99 = pct(vis, u.n, 99);
        w->upd_tot_p50 = pct(tot, u.n, 50);
        w->upd_tot_p99 = pct(tot, u.n, 99);
        w->upd_polls = (double)u.polls / (double)u.n;
        free(put);
        free(vis);
        free(tot);
    }
    free(u.version);
    free(u.t_call);
    free(u.t_ret);
    free(u.t_vis);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * raw FAISS side
 * ---------------------------------------------------------------------------------------- */

static int raw_new(FaissIndex **out)
{
    int frc = faiss_index_factory(out, DIM, "IDMap2,Flat", METRIC_INNER_PRODUCT);
    return frc ? fail_faiss("faiss_index_factory(IDMap2,Flat)", frc) : 0;
}

/* Remove `n` labels (selector built in the timed region: it is part of the raw work). */
static int raw_remove(FaissIndex *ix, const idx_t *labels, size_t n)
{
    FaissIDSelectorBatch *sel = NULL;
    int frc = faiss_IDSelectorBatch_new(&sel, n, labels);
    size_t removed = 0;
    if (!frc)
        frc = faiss_Index_remove_ids(ix, (FaissIDSelector *)sel, &removed);
    faiss_IDSelector_free((FaissIDSelector *)sel);
    if (frc)
        return fail_faiss("remove_ids", frc);
    if (removed != n)
        return bench_fail("raw remove_ids removed %zu of %zu labels", removed, n);
    return 0;
}

/* Selectors of the live labels each group reads (built once, untimed, as bench_retrieval). */
static int raw_make_selectors(work *w)
{
    idx_t *ids = xmalloc((w->n_occ + 1) * sizeof *ids);
    for (unsigned g = 0; g < SYNTH_GROUPS; g++) {
        size_t m = 0;
        for (size_t o = 0; o < w->n_occ; o++)
            if (occ_live(w, o) && (w->c.docs[w->occ[o].doc].groups & (1u << g)))
                ids[m++] = (idx_t)o;
        FaissIDSelectorBatch *b = NULL;
        int frc = faiss_IDSelectorBatch_new(&b, m, ids);
        if (!frc)
            frc = faiss_SearchParameters_new(&w->grp_par[g], (FaissIDSelector *)b);
        w->grp_sel[g] = (FaissIDSelector *)b;
        if (frc) {
            free(ids);
            return fail_faiss("IDSelectorBatch/SearchParameters", frc);
        }
    }
    free(ids);
    return 0;
}

static void raw_free_selectors(work *w)
{
    for (unsigned g = 0; g < SYNTH_GROUPS; g++) {
        faiss_SearchParameters_free(w->grp_par[g]);
        faiss_IDSelector_free(w->grp_sel[g]);
        w->grp_par[g] = NULL;
        w->grp_sel[g] = NULL;
    }
}

static int raw_one(const work *w, size_t qi, int acl, double *ms, qres *out)
{
    float dist[K];
    idx_t lab[K];
    const float *q = w->qv + qi * DIM;
    double t0 = bench_now_s();
    int frc = acl ? faiss_Index_search_with_params(w->raw, 1, q, K,
                                                   w->grp_par[synth_query_group(qi)], dist, lab)
                  : faiss_Index_search(w->raw, 1, q, K, dist, lab);
    double t1 = bench_now_s();
    if (ms)
        *ms = (t1 - t0) * TSCALE;
    if (frc)
        return fail_faiss("faiss search", frc);
    if (out) {
        const uint64_t *hashes;
        synth_recorder_view(w->rec, NULL, &hashes, NULL);
        out->n = 0;
        for (int i = 0; i < K; i++)
            if (lab[i] >= 0 && (size_t)lab[i] < w->n_occ)
                out->hash[out->n++] = hashes[w->occ[lab[i]].rec];
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Exact references: top-K over the live occurrences (plain) and over those of documents the
 * query's group reads (ACL), from inner products of every query with every recorded vector.
 * ---------------------------------------------------------------------------------------- */

static void ref_insert(ref *r, uint32_t o, float s)
{
    if (r->n == K && s <= r->score[K - 1])
        return;
    size_t i = r->n < K ? r->n++ : K - 1;
    while (i > 0 && r->score[i - 1] < s) {
        r->score[i] = r->score[i - 1];
        r->occ[i] = r->occ[i - 1];
        i--;
    }
    r->score[i] = s;
    r->occ[i] = o;
}

static void compute_refs(work *w)
{
    const float *vecs;
    size_t n_rec;
    synth_recorder_view(w->rec, &vecs, NULL, &n_rec);
    w->ref_plain = xcalloc(w->nq, sizeof *w->ref_plain);
    w->ref_acl = xcalloc(w->nq, sizeof *w->ref_acl);
    size_t *live = xmalloc(w->n_occ * sizeof *live);
    size_t n_live = 0;
    for (size_t o = 0; o < w->n_occ; o++)
        if (occ_live(w, o))
            live[n_live++] = o;
    const size_t B = 64;
    float *S = xmalloc(B * n_rec * sizeof *S);
    double share = 0;
    for (size_t q0 = 0; q0 < w->nq; q0 += B) {
        int nb = (int)(w->nq - q0 < B ? w->nq - q0 : B);
        int m = (int)n_rec, k = DIM, ld = DIM, ldc = (int)n_rec;
        float one = 1.0f, zero = 0.0f;
        sgemm_("T", "N", &m, &nb, &k, &one, vecs, &ld, w->qv + q0 * DIM, &ld, &zero, S, &ldc);
        for (int b = 0; b < nb; b++) {
            size_t qi = q0 + (size_t)b;
            uint32_t gbit = 1u << synth_query_group(qi);
            const float *s = S + (size_t)b * n_rec;
            size_t allowed = 0;
            for (size_t i = 0; i < n_live; i++) {
                size_t o = live[i];
                float x = s[w->occ[o].rec];
                ref_insert(&w->ref_plain[qi], (uint32_t)o, x);
                if (w->c.docs[w->occ[o].doc].groups & gbit) {
                    allowed++;
                    ref_insert(&w->ref_acl[qi], (uint32_t)o, x);
                }
            }
            share += (double)allowed / (double)(n_live ? n_live : 1);
        }
    }
    w->acl_share = share / (double)(w->nq ? w->nq : 1);
    free(S);
    free(live);
}

/* recall@K of `got` for query qi against `r`: a hit is in the reference, or is a live (and,
 * with ACL, readable) chunk whose exact score ties the reference's K-th. */
static double recall_one(const work *w, size_t qi, const ref *r, const qres *got, int acl)
{
    if (r->n == 0)
        return got->n == 0 ? 1.0 : 0.0;
    const uint64_t *hashes;
    synth_recorder_view(w->rec, NULL, &hashes, NULL);
    uint32_t gbit = 1u << synth_query_group(qi);
    size_t hits = 0;
    for (uint32_t i = 0; i < got->n; i++) {
        int dupe = 0;
        for (uint32_t j = 0; j < i; j++)
            dupe |= got->hash[j] == got->hash[i];
        if (dupe)
            continue;
        int in = 0;
        for (uint32_t j = 0; j < r->n && !in; j++)
            in = hashes[w->occ[r->occ[j]].rec] == got->hash[i];
        if (!in) {
            long rec = hm_get(w, got->hash[i]);
            long o = rec >= 0 ? w->rec_occ[rec] : -1;
            if (o >= 0 && occ_live(w, (size_t)o) &&
                (!acl || (w->c.docs[w->occ[o].doc].groups & gbit))) {
                float s = dot(w->qv + qi * DIM, rec_vec(w, (size_t)rec));
                in = s >= r->score[r->n - 1] - SCORE_EPS;
            }
        }
        hits += in != 0;
    }
    return (double)hits / (double)(r->n < K ? r->n : K);
}

/* ------------------------------------------------------------------------------------------
 * Query passes
 * ---------------------------------------------------------------------------------------- */

/* Time queries 0..nq-1 once each through ragcore (mode, acl) and, when `with_raw`, raw FAISS,
 * interleaved query by query (alternating which goes first) so that both see the same load. */
static int timed_pass(work *w, rag_ctx *ctx, rag_search_mode mode, int acl, int with_raw,
                      size_t nq, lat_fig *f)
{
    double *lat = xmalloc(nq * sizeof *lat), *raw = xmalloc(nq * sizeof *raw);
    qres *got = xcalloc(nq, sizeof *got), *rgot = xcalloc(nq, sizeof *rgot);
    int ret = 0;
    for (size_t i = 0; i < nq && !ret; i++) {
        if (with_raw && i % 2 == 0)
            ret = raw_one(w, i, acl, &raw[i], &rgot[i]);
        if (!ret)
            ret = rag_one(ctx, i, acl, mode, &lat[i], &got[i]);
        if (!ret && with_raw && i % 2 == 1)
            ret = raw_one(w, i, acl, &raw[i], &rgot[i]);
    }
    if (!ret) {
        memset(f, 0, sizeof *f);
        f->n = nq;
        f->p50 = pct(lat, nq, 50);
        f->p99 = pct(lat, nq, 99);
        f->raw_p50 = with_raw ? pct(raw, nq, 50) : NAN;
        f->raw_p99 = with_raw ? pct(raw, nq, 99) : NAN;
        double rc = 0, rrc = 0, cnt = 0;
        for (size_t i = 0; i < nq; i++) {
            const ref *r = acl ? &w->ref_acl[i] : &w->ref_plain[i];
            rc += recall_one(w, i, r, &got[i], acl);
            if (with_raw)
                rrc += recall_one(w, i, r, &rgot[i], acl);
            cnt += got[i].n;
        }
        f->recall = rc / (double)nq;
        f->raw_recall = with_raw ? rrc / (double)nq : NAN;
        f->results_per_query = cnt / (double)nq;
    }
    free(lat);
    free(raw);
    free(got);
    free(rgot);
    return ret;
}

/* Warm-up: n_warm queries of other texts (never timed) per mode and filter, both sides. */
static int warm_up(work *w, rag_ctx *ctx, int with_hybrid)
{
    for (size_t i = 0; i < w->n_warm; i++) {
        size_t qi = QOFF_WARM + i;
        for (int acl = 0; acl < 2; acl++) {
            if (rag_one(ctx, qi, acl, RAG_MODE_VECTOR, NULL, NULL))
                return 1;
            if (with_hybrid && rag_one(ctx, qi, acl, RAG_MODE_DEFAULT, NULL, NULL))
                return 1;
            /* raw: the same vectors for warm-up texts are not precomputed; one of the timed
             * set is fine (raw FAISS has no cache) */
            if (w->raw && raw_one(w, i % w->nq, acl, NULL, NULL))
                return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * RSS children: this program exec'd again with --rss-child, running one side of the workload
 * alone; the parent reads the child's VmHWM from a result file.
 * ---------------------------------------------------------------------------------------- */

/* The plan the raw child needs: per original occurrence (doc, off, len) in label order, then
 * per replacement occurrence (upd, off, len).  The child regenerates the corpus (same seed)
 * and embeds the same substrings with the same provider function. */
static int write_plan(const work *w, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return bench_fail("cannot write %s: %s", path, strerror(errno));
    uint64_t hdr[4] = {w->n_docs, w->n_upd, w->n_occ0, w->n_occ - w->n_occ0};
    int ok = fwrite(hdr, sizeof hdr, 1, f) == 1;
    for (size_t o = 0; o < w->n_occ && ok; o++) {
        const occ *e = &w->occ[o];
        uint32_t rec[3] = {e->gen ? e->upd : e->doc, e->off, e->len};
        ok = fwrite(rec, sizeof rec, 1, f) == 1;
    }
    if (fclose(f) != 0)
        ok = 0;
    return ok ? 0 : bench_fail("cannot write %s", path);
}

typedef struct child_args {
    const char *side; /* "rag" or "raw" */
    size_t docs, updates, queries, batch;
    int no_sync; /* the ragcore child without fsync (--rss-nosync: faster, ~8% more RSS) */
    const char *plan, *out;
} child_args;

static int write_result(const char *out, uint64_t kib, uint64_t anon, uint64_t file)
{
    FILE *f = fopen(out, "w");
    if (!f)
        return bench_fail("cannot write %s: %s", out, strerror(errno));
    fprintf(f, "%llu %llu %llu\n", (unsigned long long)kib, (unsigned long long)anon,
            (unsigned long long)file);
    return fclose(f) == 0 ? 0 : bench_fail("cannot write %s", out);
}

static int child_rag(const child_args *a)
{
    synth_corpus c;
    if (synth_corpus_make(&c, SEED, a->docs, a->updates) != 0)
        return bench_fail("synth_corpus_make");
    char root[4096];
    rag_ctx *ctx = NULL;
    int ret = make_root(root, sizeof root, "rss");
    if (!ret)
        ret = open_root(&ctx, root, NULL, NULL, a->no_sync);
    if (!ret)
        ret = put_all(ctx, c.docs, c.n_docs, a->batch, NULL, NULL);
    for (size_t i = 0; i < c.n_updates && !ret; i++) {
        rag_doc d;
        doc_of(&d, &c.updates[i]);
        int rc = rag_doc_put(ctx, &d, NULL);
        if (rc != RAG_OK)
            ret = bench_fail_rag("rag_doc_put", rc);
    }
    if (!ret) {
        int rc = rag_drain(ctx, 0);
        if (rc != RAG_OK)
            ret = bench_fail_rag("rag_drain", rc);
    }
    for (size_t i = 0; i < a->queries && !ret; i++)
        for (int acl = 0; acl < 2 && !ret; acl++)
            ret = rag_one(ctx, i, acl, RAG_MODE_VECTOR, NULL, NULL);
    /* what is resident now, anonymous vs file-backed (LMDB maps) */
    uint64_t anon = bench_proc_status_kib("RssAnon:"), file = bench_proc_status_kib("RssFile:");
    rag_close(ctx);
    uint64_t kib = vm_hwm_kib();
    bench_rm_tree(root);
    synth_corpus_free(&c);
    return ret ? ret : write_result(a->out, kib, anon, file);
}

static int child_raw(const child_args *a)
{
    synth_corpus c;
    if (synth_corpus_make(&c, SEED, a->docs, a->updates) != 0)
        return bench_fail("synth_corpus_make");
    FILE *f = fopen(a->plan, "rb");
    if (!f) {
        synth_corpus_free(&c);
        return bench_fail("cannot read %s: %s", a->plan, strerror(errno));
    }
    uint64_t hdr[4];
    int ret = fread(hdr, sizeof hdr, 1, f) == 1 && hdr[0] == c.n_docs && hdr[1] == c.n_updates
                  ? 0
                  : bench_fail("%s: bad header", a->plan);
    size_t n0 = ret ? 0 : hdr[2], n1 = ret ? 0 : hdr[3];
    uint32_t(*pl)[3] = xmalloc((n0 + n1 + 1) * sizeof *pl);
    if (!ret && fread(pl, sizeof *pl, n0 + n1, f) != n0 + n1)
        ret = bench_fail("%s: short", a->plan);
    fclose(f);

    FaissIndex *ix = NULL;
    if (!ret)
        ret = raw_new(&ix);
    /* Originals: embedded and added in batches of 4096 (as a streaming loader would). */
    const size_t B = 4096;
    float *v = xmalloc(B * DIM * sizeof *v);
    idx_t *lab = xmalloc(B * sizeof *lab);
    size_t *first = xcalloc(c.n_docs, sizeof *first), *cnt = xcalloc(c.n_docs, sizeof *cnt);
    for (size_t o = 0, m = 0; o < n0 && !ret; o++) {
        const synth_doc *d = &c.docs[pl[o][0]];
        if (!cnt[pl[o][0]]++)
            first[pl[o][0]] = o;
        synth_text_vector(d->text + pl[o][1], pl[o][2], v + m * DIM);
        lab[m++] = (idx_t)o;
        if (m == B || o + 1 == n0) {
            int frc = faiss_Index_add_with_ids(ix, (idx_t)m, v, lab);
            if (frc)
                ret = fail_faiss("add_with_ids", frc);
            m = 0;
        }
    }
    /* Replacements: every replaced document's labels removed in one call, the new ones added
     * in batches (the memory of a per-update loop, without its time). */
    long *upd_of_doc = xmalloc(c.n_docs * sizeof *upd_of_doc);
    for (size_t d = 0; d < c.n_docs; d++)
        upd_of_doc[d] = -1;
    if (!ret) {
        size_t nr = 0;
        for (size_t u = 0; u < c.n_updates; u++)
            nr += cnt[c.update_of[u]];
        idx_t *rm = xmalloc((nr + 1) * sizeof *rm);
        nr = 0;
        for (size_t u = 0; u < c.n_updates; u++) {
            size_t d = c.update_of[u];
            upd_of_doc[d] = (long)u;
            for (size_t i = 0; i < cnt[d]; i++)
                rm[nr++] = (idx_t)(first[d] + i);
        }
        ret = raw_remove(ix, rm, nr);
        free(rm);
    }
    for (size_t o = n0, m = 0; o < n0 + n1 && !ret; o++) {
        const synth_doc *d = &c.updates[pl[o][0]];
        synth_text_vector(d->text + pl[o][1], pl[o][2], v + m * DIM);
        lab[m++] = (idx_t)o;
        if (m == B || o + 1 == n0 + n1) {
            int frc = faiss_Index_add_with_ids(ix, (idx_t)m, v, lab);
            if (frc)
                ret = fail_faiss("add_with_ids", frc);
            m = 0;
        }
    }
    /* Queries: plain and with the group's selector (live labels of readable documents). */
    FaissSearchParameters *par[SYNTH_GROUPS] = {0};
    FaissIDSelector *sel[SYNTH_GROUPS] = {0};
    idx_t *ids = xmalloc((n0 + n1 + 1) * sizeof *ids);
    for (unsigned g = 0; g < SYNTH_GROUPS && !ret; g++) {
        size_t m = 0;
        for (size_t o = 0; o < n0 + n1; o++) {
            size_t d = o < n0 ? pl[o][0] : c.update_of[pl[o][0]];
            int live = o >= n0 || upd_of_doc[d] < 0;
            if (live && (c.docs[d].groups & (1u << g)))
                ids[m++] = (idx_t)o;
        }
        FaissIDSelectorBatch *b = NULL;
        int frc = faiss_IDSelectorBatch_new(&b, m, ids);
        sel[g] = (FaissIDSelector *)b;
        if (!frc)
            frc = faiss_SearchParameters_new(&par[g], sel[g]);
        if (frc)
            ret = fail_faiss("selector", frc);
    }
    float qv[DIM], dist[K];
    idx_t res[K];
    for (size_t i = 0; i < a->queries && !ret; i++) {
        synth_query_vector(i, qv);
        int frc = faiss_Index_search(ix, 1, qv, K, dist, res);
        if (!frc)
            frc = faiss_Index_search_with_params(ix, 1, qv, K, par[synth_query_group(i)], dist,
                                                 res);
        if (frc)
            ret = fail_faiss("search", frc);
    }
    uint64_t kib = vm_hwm_kib();
    uint64_t anon = bench_proc_status_kib("RssAnon:"), file = bench_proc_status_kib("RssFile:");
    for (unsigned g = 0; g < SYNTH_GROUPS; g++) {
        faiss_SearchParameters_free(par[g]);
        faiss_IDSelector_free(sel[g]);
    }
    faiss_Index_free(ix);
    free(ids);
    free(upd_of_doc);
    free(first);
    free(cnt);
    free(v);
    free(lab);
    free(pl);
    synth_corpus_free(&c);
    return ret ? ret : write_result(a->out, kib, anon, file);
}

/* Run this program again as an RSS child; its VmHWM in MiB goes to *mib. */
static int rss_nosync_flag; /* --rss-nosync: the ragcore RSS child runs without fsync */

static int spawn_child(const char *side, const work *w, size_t queries, const char *plan,
                       double *mib, double *anon_mib, double *file_mib)
{
    char out[4200], docs[32], upd[32], q[32], batch[32];
    snprintf(out, sizeof out, "%s.%s.rss", plan, side);
    snprintf(docs, sizeof docs, "%zu", w->n_docs);
    snprintf(upd, sizeof upd, "%zu", w->n_upd);
    snprintf(q, sizeof q, "%zu", queries);
    snprintf(batch, sizeof batch, "%zu", w->batch);
    char *argv[] = {"bench_synth", "--rss-child", (char *)side, "--docs", docs, "--updates", upd,
                    "--queries",   q,             "--batch",    batch,    "--plan", (char *)plan,
                    "--out",       out,           NULL,        NULL};
    if (rss_nosync_flag)
        argv[sizeof argv / sizeof *argv - 2] = "--rss-nosync";
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return bench_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return bench_fail("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return bench_fail("RSS child (%s) failed (status %d)", side, status);
    FILE *f = fopen(out, "r");
    unsigned long long kib = 0, anon = 0, file = 0;
    int ok = f && fscanf(f, "%llu %llu %llu", &kib, &anon, &file) == 3;
    if (f)
        fclose(f);
    unlink(out);
    if (!ok)
        return bench_fail("RSS child (%s) left no result", side);
    *mib = (double)kib / 1024.0;
    *anon_mib = (double)anon / 1024.0;
    *file_mib = (double)file / 1024.0;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * The sweep (smallest size): index types, batched raw search, concurrent ragcore queries
 * ---------------------------------------------------------------------------------------- */

typedef struct conc_arg {
    rag_ctx *ctx;
    const work *w;
    int raw;
    size_t off, from, n, step;
    int err;
} conc_arg;

static void *conc_main(void *p)
{
    conc_arg *a = p;
    for (size_t i = a->from; i < a->n && !a->err; i += a->step) {
        if (a->raw) {
            float dist[K];
            idx_t lab[K];
            float q[DIM];
            synth_query_vector(a->off + i, q);
            int frc = faiss_Index_search(a->w->raw, 1, q, K, dist, lab);
            if (frc)
                a->err = fail_faiss("faiss search (concurrent)", frc);
        } else {
            a->err = rag_one(a->ctx, a->off + i, 0, RAG_MODE_VECTOR, NULL, NULL);
        }
    }
    return NULL;
}

/* Wall time of n queries (text numbers off..off+n-1) spread over T threads. */
static int conc_run(rag_ctx *ctx, const work *w, int raw, size_t off, size_t n, int T,
                    double *secs)
{
    pthread_t th[8];
    conc_arg a[8];
    double t0 = bench_now_s();
    for (int t = 0; t < T; t++) {
        a[t] = (conc_arg){ctx, w, raw, off, (size_t)t, n, (size_t)T, 0};
        if (pthread_create(&th[t], NULL, conc_main, &a[t]) != 0)
            return bench_fail("pthread_create");
    }
    int err = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        err |= a[t].err;
    }
    *secs += bench_now_s() - t0;
    return err;
}

/* Queries/s of ragcore and raw FAISS from 1 and 2 threads, n queries each, run in 8 rounds
 * that cycle through the four configurations so that they share the machine's load. */
static int conc_qps(const work *w, size_t n, double qps[4])
{
    const size_t rounds = 8, per = (n + rounds - 1) / rounds;
    double secs[4] = {0, 0, 0, 0};
    size_t done[4] = {0, 0, 0, 0};
    for (size_t r = 0; r < rounds; r++)
        for (int c = 0; c < 4; c++) {
            size_t m = n - done[c] < per ? n - done[c] : per;
            if (m == 0)
                continue;
            /* ragcore: fresh texts for each configuration, so each query is a cache miss */
            size_t off = (c & 1 ? QOFF_CONC2 : QOFF_CONC1) + (c >> 1) * 100000u + done[c];
            if (conc_run(c < 2 ? w->ctx : NULL, w, c >= 2, off, m, (c & 1) + 1, &secs[c]))
                return 1;
            done[c] += m;
        }
    for (int c = 0; c < 4; c++)
        qps[c] = (double)done[c] / secs[c];
    return 0;
}

static int sweep_batching(work *w)
{
    /* raw FAISS batched: all queries in one call, and calls of 32 */
    float *dist = xmalloc(w->nq * K * sizeof *dist);
    idx_t *lab = xmalloc(w->nq * K * sizeof *lab);
    double t0 = bench_now_s();
    int frc = faiss_Index_search(w->raw, (idx_t)w->nq, w->qv, K, dist, lab);
    double all_ms = (bench_now_s() - t0) * TSCALE;
    if (frc) {
        free(dist);
        free(lab);
        return fail_faiss("batched search", frc);
    }
    t0 = bench_now_s();
    for (size_t q0 = 0; q0 < w->nq && !frc; q0 += 32) {
        size_t nb = w->nq - q0 < 32 ? w->nq - q0 : 32;
        frc = faiss_Index_search(w->raw, (idx_t)nb, w->qv + q0 * DIM, K, dist + q0 * K,
                                 lab + q0 * K);
    }
    double b32_ms = (bench_now_s() - t0) * TSCALE;
    free(dist);
    free(lab);
    if (frc)
        return fail_faiss("batched search (32)", frc);

    /* ragcore and raw FAISS from 1 and 2 threads: queries/s (distinct texts per pass: every
     * ragcore query is a cache miss) */
    size_t nc = w->nq < CONC_QUERIES ? w->nq : CONC_QUERIES;
    double qps[4];
    if (conc_qps(w, nc, qps))
        return 1;
    double rag1 = qps[0], rag2 = qps[1], raw1 = qps[2], raw2 = qps[3];

    json_t *o = fig_new("synth_sweep", w->n_docs, w->st_end.chunks);
    fig_str(o, "figure", "batching");
    fig_int(o, "queries", w->nq);
    fig_num(o, "raw_single_p50_ms", w->vplain.raw_p50);
    fig_num(o, "raw_batch_all_per_query_ms", all_ms / (double)w->nq);
    fig_num(o, "raw_batch32_per_query_ms", b32_ms / (double)w->nq);
    fig_num(o, "ragcore_p50_ms", w->vplain.p50);
    fig_num(o, "batch_all_speedup_vs_raw_single_p50", w->vplain.raw_p50 / (all_ms / (double)w->nq));
    fig_num(o, "batch32_speedup_vs_raw_single_p50", w->vplain.raw_p50 / (b32_ms / (double)w->nq));
    fig_int(o, "concurrent_queries", nc);
    fig_num(o, "ragcore_qps_1thread", rag1);
    fig_num(o, "ragcore_qps_2threads", rag2);
    fig_num(o, "raw_qps_1thread", raw1);
    fig_num(o, "raw_qps_2threads", raw2);
    fig_num(o, "ragcore_2thread_speedup", rag2 / rag1);
    fig_num(o, "ragcore_2threads_to_raw_1thread_qps", rag2 / raw1);
    fig_emit(o);
    fprintf(stderr,
            "batching (%zu queries, IDMap2,Flat): raw single p50 %.3f ms; batched all %.3f ms/q, "
            "nq=32 %.3f ms/q\n  queries/s: ragcore 1 thread %.0f, 2 threads %.0f; raw 1 thread "
            "%.0f, 2 threads %.0f\n",
            w->nq, w->vplain.raw_p50, all_ms / (double)w->nq, b32_ms / (double)w->nq, rag1, rag2,
            raw1, raw2);
    return 0;
}

/* ragcore on another index type: fresh root, same documents and replacements (batched), the
 * same timed queries interleaved with raw FAISS Flat, recall against the same exact scan. */
static int sweep_index(work *w, const char *factory)
{
    char root[4096];
    rag_ctx *ctx = NULL;
    if (make_root(root, sizeof root, "sweep"))
        return 1;
    int ret = open_root_rc(&ctx, root, NULL, factory, 0);
    if (ret) {
        note("index type %s skipped: %s (%d): %s", factory, rag_strerror(ret), ret,
             rag_error_last());
        json_t *o = fig_new("synth_sweep", w->n_docs, 0);
        fig_str(o, "figure", "index_type");
        fig_str(o, "index_factory", factory);
        fig_str(o, "skipped", rag_error_last());
        fig_emit(o);
        rag_close(ctx);
        bench_rm_tree(root);
        return 0; /* unsupported: reported, not fatal */
    }
    double put_s = 0, all_s = 0, upd_s = 0;
    ret = put_all(ctx, w->c.docs, w->n_docs, w->batch, &put_s, &all_s);
    if (!ret)
        ret = put_all(ctx, w->c.updates, w->n_upd, w->batch, NULL, &upd_s);
    rag_status_info st;
    if (!ret)
        ret = read_status(ctx, &st);
    size_t nq = w->nq < SWEEP_QUERIES ? w->nq : SWEEP_QUERIES;
    lat_fig fp, fa;
    if (!ret)
        ret = warm_up(w, ctx, 0);
    if (!ret)
        ret = timed_pass(w, ctx, RAG_MODE_VECTOR, 0, 1, nq, &fp);
    if (!ret)
        ret = timed_pass(w, ctx, RAG_MODE_VECTOR, 1, 1, nq, &fa);
    rag_close(ctx);
    bench_rm_tree(root);
    if (ret)
        return ret;
    json_t *o = fig_new("synth_sweep", w->n_docs, st.chunks);
    fig_str(o, "figure", "index_type");
    fig_str(o, "index_factory", factory);
    fig_int(o, "vectors", st.vectors);
    fig_int(o, "queries", nq);
    fig_num(o, "ingest_chunks_per_s", (double)st.chunks / all_s);
    fig_num(o, "updates_batch_s", upd_s);
    fig_num(o, "p50_ms", fp.p50);
    fig_num(o, "p99_ms", fp.p99);
    fig_num(o, "recall_at_10", fp.recall);
    fig_num(o, "raw_flat_p50_ms", fp.raw_p50);
    fig_num(o, "raw_flat_p99_ms", fp.raw_p99);
    fig_num(o, "p50_ratio_to_raw_flat", fp.p50 / fp.raw_p50);
    fig_num(o, "acl_p50_ms", fa.p50);
    fig_num(o, "acl_p99_ms", fa.p99);
    fig_num(o, "acl_recall_at_10", fa.recall);
    fig_num(o, "acl_results_per_query", fa.results_per_query);
    fig_num(o, "raw_flat_acl_p50_ms", fa.raw_p50);
    fig_num(o, "acl_p50_ratio_to_raw_flat", fa.p50 / fa.raw_p50);
    fig_emit(o);
    fprintf(stderr,
            "index %-20s ingest %8.0f chunks/s  plain p50 %7.3f p99 %7.3f ms (%.2fx raw flat) "
            "recall %.4f | ACL p50 %7.3f ms (%.2fx) recall %.4f (%.1f results)\n",
            factory, (double)st.chunks / all_s, fp.p50, fp.p99, fp.p50 / fp.raw_p50, fp.recall,
            fa.p50, fa.p50 / fa.raw_p50, fa.recall, fa.results_per_query);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * One workload size
 * ---------------------------------------------------------------------------------------- */

static void disk_measure(const char *root, double *out)
{
    char dir[4200];
    for (size_t i = 0; i < NMODULES; i++) {
        snprintf(dir, sizeof dir, "%s/%s", root, MODULES[i]);
        out[i] = bench_dir_bytes(dir);
    }
    out[NMODULES] = bench_dir_bytes(root);
}

static void emit_disk(const work *w, const char *phase, const double *d, uint64_t chunks)
{
    json_t *o = fig_new("synth_disk", w->n_docs, chunks);
    fig_str(o, "phase", phase);
    json_t *m = json_object();
    for (size_t i = 0; i < NMODULES; i++)
        if (d[i] >= 0)
            json_object_set_new(m, MODULES[i], json_integer((json_int_t)d[i]));
    json_object_set_new(o, "bytes", m);
    fig_int(o, "total_bytes", (uint64_t)d[NMODULES]);
    fig_num(o, "bytes_per_chunk", d[NMODULES] / (double)(chunks ? chunks : 1));
    fig_int(o, "raw_flat_memory_bytes", (uint64_t)chunks * (DIM * 4 + 8));
    fig_emit(o);
}

static void emit_query(const work *w, const char *mode, const char *acl, const lat_fig *f,
                       int with_raw)
{
    json_t *o = fig_new("synth_query", w->n_docs, w->st_end.chunks);
    fig_str(o, "mode", mode);
    fig_str(o, "acl", acl);
    fig_int(o, "queries", f->n);
    fig_int(o, "k", K);
    fig_num(o, "p50_ms", f->p50);
    fig_num(o, "p99_ms", f->p99);
    fig_num(o, "results_per_query", f->results_per_query);
    if (strcmp(mode, "vector") == 0)
        fig_num(o, "recall_at_10", f->recall);
    if (with_raw) {
        fig_num(o, "raw_p50_ms", f->raw_p50);
        fig_num(o, "raw_p99_ms", f->raw_p99);
        fig_num(o, "raw_recall_at_10", f->raw_recall);
        fig_num(o, "p50_ratio", f->p50 / f->raw_p50);
        fig_num(o, "p99_ratio", f->p99 / f->raw_p99);
    }
    if (strcmp(acl, "group") == 0)
        fig_num(o, "readable_share", w->acl_share);
    fig_int(o, "cache_hits", w->cache_hits_timed);
    if (with_raw && strcmp(acl, "none") == 0)
        fig_target(o, "p50 and p99 <= 1.1x raw FAISS",
                   f->p50 <= 1.1 * f->raw_p50 && f->p99 <= 1.1 * f->raw_p99);
    else if (with_raw)
        fig_target(o, "p50 <= 1.2x raw FAISS, recall@10 = 1.0",
                   f->p50 <= 1.2 * f->raw_p50 && f->recall >= 1.0 - 1e-9);
    fig_emit(o);
}

static void work_free(work *w)
{
    rag_close(w->ctx);
    w->ctx = NULL;
    raw_free_selectors(w);
    faiss_Index_free(w->raw);
    w->raw = NULL;
    synth_recorder_free(w->rec);
    synth_corpus_free(&w->c);
    free(w->occ);
    free(w->doc_first);
    free(w->doc_n);
    free(w->upd_first);
    free(w->upd_n);
    free(w->upd_of_doc);
    free(w->rec_occ);
    free(w->hm_key);
    free(w->hm_val);
    free(w->qv);
    free(w->ref_plain);
    free(w->ref_acl);
    if (w->root[0])
        bench_rm_tree(w->root);
}

/* The replacements on the raw index: see run_size. */
static int raw_updates(work *w, size_t n_live)
{
    size_t timed = w->n_docs > SMALL_DOCS && w->n_upd > RAW_UPD_SAMPLE ? RAW_UPD_SAMPLE : w->n_upd;
    double *lat = xmalloc(w->n_upd * sizeof *lat);
    float *v = NULL;
    idx_t *rm = NULL, *add = NULL;
    size_t vcap = 0, rcap = 0;
    int ret = 0;
    for (size_t u = 0; u < timed && !ret; u++) {
        size_t d = w->c.update_of[u];
        size_t nr = w->doc_n[d], na = w->upd_n[u];
        if (na > vcap) {
            vcap = na;
            v = xrealloc(v, vcap * DIM * sizeof *v);
            add = xrealloc(add, vcap * sizeof *add);
        }
        if (nr > rcap) {
            rcap = nr;
            rm = xrealloc(rm, rcap * sizeof *rm);
        }
        for (size_t i = 0; i < nr; i++)
            rm[i] = (idx_t)(w->doc_first[d] + i);
        for (size_t i = 0; i < na; i++) {
            add[i] = (idx_t)(w->upd_first[u] + i);
            memcpy(v + i * DIM, rec_vec(w, w->occ[w->upd_first[u] + i].rec), DIM * sizeof *v);
        }
        double t0 = bench_now_s();
        ret = raw_remove(w->raw, rm, nr);
        int frc = ret ? 0 : faiss_Index_add_with_ids(w->raw, (idx_t)na, v, add);
        lat[u] = (bench_now_s() - t0) * TSCALE;
        if (frc)
            ret = fail_faiss("add_with_ids (update)", frc);
    }
    if (!ret && timed < w->n_upd) {
        /* the rest in one batch, untimed */
        size_t nr = 0, na = 0;
        for (size_t u = timed; u < w->n_upd; u++) {
            nr += w->doc_n[w->c.update_of[u]];
            na += w->upd_n[u];
        }
        rm = xrealloc(rm, (nr + 1) * sizeof *rm);
        add = xrealloc(add, (na + 1) * sizeof *add);
        v = xrealloc(v, (na + 1) * DIM * sizeof *v);
        nr = na = 0;
        for (size_t u = timed; u < w->n_upd; u++) {
            size_t d = w->c.update_of[u];
            for (size_t i = 0; i < w->doc_n[d]; i++)
                rm[nr++] = (idx_t)(w->doc_first[d] + i);
            for (size_t i = 0; i < w->upd_n[u]; i++, na++) {
                add[na] = (idx_t)(w->upd_first[u] + i);
                memcpy(v + na * DIM, rec_vec(w, w->occ[w->upd_first[u] + i].rec),
                       DIM * sizeof *v);
            }
        }
        ret = raw_remove(w->raw, rm, nr);
        int frc = ret ? 0 : faiss_Index_add_with_ids(w->raw, (idx_t)na, v, add);
        if (frc)
            ret = fail_faiss("add_with_ids (updates)", frc);
    }
    if (!ret) {
        w->upd_raw_timed = timed;
        w->upd_raw_all_s = sum(lat, timed) / TSCALE * ((double)w->n_upd / (double)timed);
        w->upd_raw_p50 = pct(lat, timed, 50);
        w->upd_raw_p99 = pct(lat, timed, 99);
    }
    free(lat);
    free(v);
    free(rm);
    free(add);
    if (!ret && (size_t)faiss_Index_ntotal(w->raw) != n_live)
        ret = bench_fail("raw index holds %lld vectors, %zu expected",
                   (long long)faiss_Index_ntotal(w->raw), n_live);
    return ret;
}

static int run_size(work *w, int do_sweep, int do_rss)
{
    int ret = 0;
    double t_start = bench_now_s();
    note("== %zu documents, %zu replacements, %zu queries ==", w->n_docs, w->n_upd, w->nq);
    if (synth_corpus_make(&w->c, SEED, w->n_docs, w->n_upd) != 0)
        return bench_fail("synth_corpus_make(%zu)", w->n_docs);
    w->rec = synth_recorder_new();
    if (!w->rec)
        return bench_fail("synth_recorder_new");
    synth_recorder_keep_texts(w->rec, 1);
    if (make_root(w->root, sizeof w->root, "main"))
        return 1;
    w->qv = xmalloc(w->nq * DIM * sizeof *w->qv);
    for (size_t i = 0; i < w->nq; i++)
        synth_query_vector(i, w->qv + i * DIM);

    /* ---- 1. ingest ---- */
    if (open_root(&w->ctx, w->root, w->rec, NULL, 0))
        return 1;
    note("ingesting %zu documents (%.1f MB, batches of %zu, fsync on)...", w->n_docs,
         (double)w->c.bytes / 1e6, w->batch);
    if (put_all(w->ctx, w->c.docs, w->n_docs, w->batch, &w->put_s, &w->ingest_s))
        return 1;
    if (read_status(w->ctx, &w->st_ingest))
        return 1;
    if (w->st_ingest.dead_letters)
        return bench_fail("%llu dead letter(s) after ingest",
                    (unsigned long long)w->st_ingest.dead_letters);
    if (w->st_ingest.documents != w->n_docs)
        return bench_fail("%llu documents after ingest, expected %zu",
                    (unsigned long long)w->st_ingest.documents, w->n_docs);
    w->chunks_per_s = (double)w->st_ingest.chunks / w->ingest_s;
    w->docs_per_s = (double)w->n_docs / w->ingest_s;
    disk_measure(w->root, w->disk_ingest);
    synth_recorder_view(w->rec, NULL, NULL, &w->n_rec_ingest);
    double len_sum = 0;
    for (size_t r = 0; r < w->n_rec_ingest; r++) {
        size_t len;
        synth_recorder_text(w->rec, r, &len);
        len_sum += (double)len;
    }
    w->mean_chunk_chars = len_sum / (double)(w->n_rec_ingest ? w->n_rec_ingest : 1);
    note("ingest: %llu chunks in %.2f s (%.0f chunks/s); attributing vectors...",
         (unsigned long long)w->st_ingest.chunks, w->ingest_s, w->chunks_per_s);

    if (attribute(w, 0, w->n_rec_ingest, 0))
        return 1;
    occ_finish(w);
    if (w->n_occ0 != w->st_ingest.chunks)
        return bench_fail("attribution found %zu chunk occurrences, rag_status reports %llu chunks",
                    w->n_occ0, (unsigned long long)w->st_ingest.chunks);

    /* raw FAISS insert of the same vectors (gathered in label order beforehand, untimed) */
    if (raw_new(&w->raw))
        return 1;
    {
        float *v = xmalloc(w->n_occ0 * DIM * sizeof *v);
        idx_t *lab = xmalloc(w->n_occ0 * sizeof *lab);
        for (size_t o = 0; o < w->n_occ0; o++) {
            memcpy(v + o * DIM, rec_vec(w, w->occ[o].rec), DIM * sizeof *v);
            lab[o] = (idx_t)o;
        }
        double t0 = bench_now_s();
        int frc = faiss_Index_add_with_ids(w->raw, (idx_t)w->n_occ0, v, lab);
        w->raw_add_s = bench_now_s() - t0;
        free(v);
        free(lab);
        if (frc)
            return fail_faiss("add_with_ids", frc);
        w->raw_chunks_per_s = (double)w->n_occ0 / w->raw_add_s;
    }
    {
        json_t *o = fig_new("synth_ingest", w->n_docs, w->st_ingest.chunks);
        fig_int(o, "vectors", w->st_ingest.vectors);
        fig_int(o, "bytes", w->c.bytes);
        fig_num(o, "mean_chunk_chars", w->mean_chunk_chars);
        fig_int(o, "batch", w->batch);
        fig_int(o, "fsync", 1);
        fig_num(o, "put_s", w->put_s);
        fig_num(o, "wall_s", w->ingest_s);
        fig_num(o, "chunks_per_s", w->chunks_per_s);
        fig_num(o, "docs_per_s", w->docs_per_s);
        fig_num(o, "raw_add_s", w->raw_add_s);
        fig_num(o, "raw_chunks_per_s", w->raw_chunks_per_s);
        fig_num(o, "ratio_to_raw", w->chunks_per_s / w->raw_chunks_per_s);
        fig_int(o, "recorded_vectors", w->n_rec_ingest);
        fig_int(o, "attributed", w->n_occ0);
        fig_int(o, "attributed_by_scan", w->by_scan);
        fig_int(o, "duplicate_texts", w->dup_texts);
        fig_target(o, "chunks_per_s >= 64000", w->chunks_per_s >= 64000.0);
        fig_emit(o);
    }
    emit_disk(w, "after_ingest", w->disk_ingest, w->st_ingest.chunks);

    /* ---- 2. updates ---- */
    note("updates: %zu replacements, one rag_doc_put each...", w->n_upd);
    if (run_updates(w))
        return 1;
    {
        /* everything applied?  one session-consistent search */
        char text[32];
        synth_query_text(QOFF_SESSION, text, sizeof text);
        rag_query q = RAG_QUERY_INIT;
        q.text = text;
        q.unrestricted = 1;
        q.mode = RAG_MODE_VECTOR;
        q.consistency = RAG_CONSISTENCY_SESSION;
        q.timeout_ms = 60000;
        rag_results *res = NULL;
        int rc = rag_search(w->ctx, &q, &res);
        rag_results_free(res);
        if (rc != RAG_OK)
            return bench_fail_rag("session-consistent search after the updates", rc);
    }
    w->upd_of_doc = xmalloc(w->n_docs * sizeof *w->upd_of_doc);
    for (size_t d = 0; d < w->n_docs; d++)
        w->upd_of_doc[d] = -1;
    for (size_t u = 0; u < w->n_upd; u++)
        w->upd_of_doc[w->c.update_of[u]] = (long)u;
    synth_recorder_view(w->rec, NULL, NULL, &w->n_rec);
    if (attribute(w, w->n_rec_ingest, w->n_rec, 1))
        return 1;
    occ_finish(w);
    for (size_t u = 0; u < w->n_upd; u++)
        if (w->upd_n[u] == 0)
            return bench_fail("replacement %zu (%s) has no recorded chunk (embed cache hit?)", u,
                        w->c.updates[u].id);
    if (read_status(w->ctx, &w->st_end))
        return 1;
    size_t n_live = 0;
    for (size_t o = 0; o < w->n_occ; o++)
        n_live += occ_live(w, o);
    if (n_live != w->st_end.vectors)
        return bench_fail("%zu live chunk occurrences, rag_status reports %llu vectors", n_live,
                    (unsigned long long)w->st_end.vectors);
    hm_build(w);

    /* raw FAISS: the same replacements, remove_ids + add_with_ids each (vectors gathered
     * beforehand; the selector is built inside the timed region).  IDMap2,Flat removal is
     * linear in the index size, so above SMALL_DOCS only the first RAW_UPD_SAMPLE are timed
     * one by one and the rest applied in one untimed batch: raw_all_s is then the sample's
     * mean times the number of updates (flagged in the output). */
    if (raw_updates(w, n_live))
        return 1;
    {
        json_t *o = fig_new("synth_update", w->n_docs, w->st_end.chunks);
        fig_int(o, "updates", w->n_upd);
        fig_num(o, "all_visible_s", w->upd_all_s);
        fig_num(o, "updates_per_s", (double)w->n_upd / w->upd_all_s);
        fig_num(o, "put_p50_ms", w->upd_put_p50);
        fig_num(o, "put_p99_ms", w->upd_put_p99);
        fig_num(o, "visible_p50_ms", w->upd_vis_p50);
        fig_num(o, "visible_p99_ms", w->upd_vis_p99);
        fig_num(o, "total_p50_ms", w->upd_tot_p50);
        fig_num(o, "total_p99_ms", w->upd_tot_p99);
        fig_num(o, "polls_per_update", w->upd_polls);
        fig_str(o, "session_check", "ok");
        fig_num(o, "raw_all_s", w->upd_raw_all_s);
        fig_int(o, "raw_timed_updates", w->upd_raw_timed);
        json_object_set_new(o, "raw_all_s_estimated", json_boolean(w->upd_raw_timed < w->n_upd));
        fig_num(o, "raw_p50_ms", w->upd_raw_p50);
        fig_num(o, "raw_p99_ms", w->upd_raw_p99);
        fig_num(o, "ratio_to_raw", w->upd_all_s / w->upd_raw_all_s);
        fig_int(o, "update_chunks", w->n_occ - w->n_occ0);
        fig_target(o, "all_visible_s <= 1.0", w->upd_all_s <= 1.0);
        fig_emit(o);
    }

    /* ---- 3. queries ---- */
    note("exact scan of %zu queries over %zu live chunks...", w->nq, n_live);
    compute_refs(w);
    if (raw_make_selectors(w))
        return 1;
    note("queries: warm-up %zu, then %zu timed per pass...", w->n_warm, w->nq);
    if (warm_up(w, w->ctx, 1))
        return 1;
    rag_status_info c0, c1;
    size_t hyb_max = w->large ? HYBRID_QUERIES_LARGE : HYBRID_QUERIES;
    size_t n_hyb = w->nq < hyb_max ? w->nq : hyb_max;
    if (read_status(w->ctx, &c0))
        return 1;
    if (timed_pass(w, w->ctx, RAG_MODE_VECTOR, 0, 1, w->nq, &w->vplain) ||
        timed_pass(w, w->ctx, RAG_MODE_VECTOR, 1, 1, w->nq, &w->vacl) ||
        timed_pass(w, w->ctx, RAG_MODE_DEFAULT, 0, 0, n_hyb, &w->hplain) ||
        timed_pass(w, w->ctx, RAG_MODE_DEFAULT, 1, 0, n_hyb, &w->hacl))
        return 1;
    if (read_status(w->ctx, &c1))
        return 1;
    w->cache_hits_timed = c1.cache_hits - c0.cache_hits;
    if (w->cache_hits_timed)
        note("warning: %llu timed searches were answered by the result cache",
             (unsigned long long)w->cache_hits_timed);
    emit_query(w, "vector", "none", &w->vplain, 1);
    emit_query(w, "vector", "group", &w->vacl, 1);
    emit_query(w, "hybrid", "none", &w->hplain, 0);
    emit_query(w, "hybrid", "group", &w->hacl, 0);

    /* ---- sweep: batching and concurrency on this root, then other index types ---- */
    if (do_sweep) {
        note("sweep: batching and concurrency...");
        if (sweep_batching(w))
            return 1;
    }
    rag_close(w->ctx);
    w->ctx = NULL;
    disk_measure(w->root, w->disk_end);
    emit_disk(w, "end", w->disk_end, w->st_end.chunks);
    if (do_sweep) {
        static const char *const factories[] = {"IDMap2,HNSW32", "IVF256,Flat"};
        for (size_t i = 0; i < sizeof factories / sizeof *factories; i++) {
            note("sweep: index type %s...", factories[i]);
            if (sweep_index(w, factories[i]))
                return 1;
        }
    }

    /* ---- 4. peak RSS, each side alone in a fresh process ---- */
    w->rss_main_mib = (double)vm_hwm_kib() / 1024.0;
    if (do_rss) {
        char plan[4200];
        snprintf(plan, sizeof plan, "%s.plan", w->root);
        size_t qr_max = w->large ? RSS_QUERIES_LARGE : RSS_QUERIES;
        size_t qr = w->nq < qr_max ? w->nq : qr_max;
        note("peak RSS: ragcore alone, then raw FAISS alone (%zu queries each)...", qr);
        ret = write_plan(w, plan);
        if (!ret)
            ret = spawn_child("rag", w, qr, plan, &w->rss_rag_mib, &w->rss_rag_anon,
                              &w->rss_rag_file);
        if (!ret)
            ret = spawn_child("raw", w, qr, plan, &w->rss_raw_mib, &w->rss_raw_anon,
                              &w->rss_raw_file);
        unlink(plan);
        if (ret)
            return ret;
        w->have_rss = 1;
        json_t *o = fig_new("synth_rss", w->n_docs, w->st_end.chunks);
        fig_num(o, "ragcore_peak_mib", w->rss_rag_mib);
        fig_num(o, "raw_peak_mib", w->rss_raw_mib);
        fig_num(o, "rss_ratio", w->rss_rag_mib / w->rss_raw_mib);
        fig_num(o, "ragcore_end_anon_mib", w->rss_rag_anon);
        fig_num(o, "ragcore_end_file_mib", w->rss_rag_file);
        fig_num(o, "raw_end_anon_mib", w->rss_raw_anon);
        fig_num(o, "raw_end_file_mib", w->rss_raw_file);
        fig_num(o, "corpus_mib", (double)w->c.bytes / 1048576.0);
        fig_int(o, "queries", qr);
        fig_str(o, "method", "VmHWM of a freshly exec'd child running one side alone: corpus "
                             "generated in both; ingest+updates+queries");
        json_object_set_new(o, "ragcore_fsync", json_boolean(!rss_nosync_flag));
        fig_num(o, "bench_process_peak_mib", w->rss_main_mib);
        fig_target(o, "rss_ratio <= 1.3", w->rss_rag_mib <= 1.3 * w->rss_raw_mib);
        fig_emit(o);
    }

    /* ---- table ---- */
    fprintf(stderr, "\n== bench_synth: %zu documents, %llu chunks (%.0f chars mean), %zu-d ==\n",
            w->n_docs, (unsigned long long)w->st_ingest.chunks, w->mean_chunk_chars,
            (size_t)DIM);
    fprintf(stderr, "%-34s %14s %14s %8s  %s\n", "figure", "ragcore", "raw FAISS", "ratio",
            "target");
    fprintf(stderr, "%-34s %14.0f %14.0f %8.3f  >= 64000 %s\n", "ingest chunks/s (durable)",
            w->chunks_per_s, w->raw_chunks_per_s, w->chunks_per_s / w->raw_chunks_per_s,
            w->chunks_per_s >= 64000 ? "MET" : "missed");
    fprintf(stderr, "%-34s %14.0f %14s\n", "ingest docs/s", w->docs_per_s, "");
    char upd_label[64];
    snprintf(upd_label, sizeof upd_label, "%zu updates: all visible s", w->n_upd);
    fprintf(stderr, "%-34s %14.3f %14.3f %8.3f  <= 1.0 s %s%s\n", upd_label, w->upd_all_s,
            w->upd_raw_all_s, w->upd_all_s / w->upd_raw_all_s,
            w->upd_all_s <= 1.0 ? "MET" : "missed",
            w->upd_raw_timed < w->n_upd ? " (raw: estimated from a sample)" : "");
    fprintf(stderr, "%-34s %7.2f/%-7.2f %14s\n", "  put p50/p99 ms", w->upd_put_p50,
            w->upd_put_p99, "");
    fprintf(stderr, "%-34s %7.2f/%-7.2f %7.3f/%-6.3f\n", "  visible p50/p99 ms (raw: update)",
            w->upd_vis_p50, w->upd_vis_p99, w->upd_raw_p50, w->upd_raw_p99);
    fprintf(stderr, "%-34s %7.3f/%-7.3f %7.3f/%-6.3f %4.2f/%-4.2f <= 1.1x %s\n",
            "query p50/p99 ms (vector)", w->vplain.p50, w->vplain.p99, w->vplain.raw_p50,
            w->vplain.raw_p99, w->vplain.p50 / w->vplain.raw_p50,
            w->vplain.p99 / w->vplain.raw_p99,
            (w->vplain.p50 <= 1.1 * w->vplain.raw_p50 && w->vplain.p99 <= 1.1 * w->vplain.raw_p99)
                ? "MET"
                : "missed");
    fprintf(stderr, "%-34s %14.4f %14.4f\n", "  recall@10", w->vplain.recall,
            w->vplain.raw_recall);
    fprintf(stderr, "%-34s %7.3f/%-7.3f %7.3f/%-6.3f %4.2f/%-4.2f <= 1.2x, recall 1 %s\n",
            "ACL query p50/p99 ms (vector)", w->vacl.p50, w->vacl.p99, w->vacl.raw_p50,
            w->vacl.raw_p99, w->vacl.p50 / w->vacl.raw_p50, w->vacl.p99 / w->vacl.raw_p99,
            (w->vacl.p50 <= 1.2 * w->vacl.raw_p50 && w->vacl.recall >= 1.0 - 1e-9) ? "MET"
                                                                                   : "missed");
    fprintf(stderr, "%-34s %14.4f %14.4f  (readable share %.3f)\n", "  recall@10",
            w->vacl.recall, w->vacl.raw_recall, w->acl_share);
    fprintf(stderr, "%-34s %7.3f/%-7.3f\n", "hybrid p50/p99 ms", w->hplain.p50, w->hplain.p99);
    fprintf(stderr, "%-34s %7.3f/%-7.3f\n", "hybrid ACL p50/p99 ms", w->hacl.p50, w->hacl.p99);
    if (w->have_rss)
        fprintf(stderr, "%-34s %14.1f %14.1f %8.3f  <= 1.3x %s\n", "peak RSS MiB", w->rss_rag_mib,
                w->rss_raw_mib, w->rss_rag_mib / w->rss_raw_mib,
                w->rss_rag_mib <= 1.3 * w->rss_raw_mib ? "MET" : "missed");
    fprintf(stderr, "%-34s", "disk MiB after ingest / end");
    for (size_t i = 0; i < NMODULES; i++)
        if (w->disk_end[i] >= 0)
            fprintf(stderr, " %s %.1f/%.1f", MODULES[i], w->disk_ingest[i] / 1048576.0,
                    w->disk_end[i] / 1048576.0);
    fprintf(stderr, " total %.1f/%.1f\n", w->disk_ingest[NMODULES] / 1048576.0,
            w->disk_end[NMODULES] / 1048576.0);
    note("%zu documents done in %.1f s\n", w->n_docs, bench_now_s() - t_start);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Growth: each headline figure of the first size against the last
 * ---------------------------------------------------------------------------------------- */

static void growth_line(const work *a, const work *b, const char *figure, double va, double vb)
{
    json_t *o = fig_new("synth_growth", b->n_docs, b->st_end.chunks);
    fig_str(o, "figure", figure);
    fig_int(o, "base_docs", a->n_docs);
    fig_int(o, "base_chunks", a->st_end.chunks);
    fig_num(o, "base", va);
    fig_num(o, "value", vb);
    fig_num(o, "growth", vb / va);
    fig_num(o, "chunks_growth", (double)b->st_end.chunks / (double)a->st_end.chunks);
    fig_emit(o);
    fprintf(stderr, "  %-30s %12.4g -> %12.4g  (x%.2f)\n", figure, va, vb, vb / va);
}

static void growth(const work *a, const work *b)
{
    fprintf(stderr, "\n== growth %zu -> %zu documents (chunks x%.2f) ==\n", a->n_docs, b->n_docs,
            (double)b->st_end.chunks / (double)a->st_end.chunks);
    growth_line(a, b, "ingest_chunks_per_s", a->chunks_per_s, b->chunks_per_s);
    growth_line(a, b, "ingest_docs_per_s", a->docs_per_s, b->docs_per_s);
    growth_line(a, b, "raw_add_chunks_per_s", a->raw_chunks_per_s, b->raw_chunks_per_s);
    growth_line(a, b, "update_all_visible_s", a->upd_all_s, b->upd_all_s);
    growth_line(a, b, "update_visible_p50_ms", a->upd_vis_p50, b->upd_vis_p50);
    growth_line(a, b, "update_visible_p99_ms", a->upd_vis_p99, b->upd_vis_p99);
    growth_line(a, b, "raw_update_all_s", a->upd_raw_all_s, b->upd_raw_all_s);
    growth_line(a, b, "query_p50_ms", a->vplain.p50, b->vplain.p50);
    growth_line(a, b, "query_p99_ms", a->vplain.p99, b->vplain.p99);
    growth_line(a, b, "raw_query_p50_ms", a->vplain.raw_p50, b->vplain.raw_p50);
    growth_line(a, b, "query_p50_ratio", a->vplain.p50 / a->vplain.raw_p50,
                b->vplain.p50 / b->vplain.raw_p50);
    growth_line(a, b, "acl_query_p50_ms", a->vacl.p50, b->vacl.p50);
    growth_line(a, b, "raw_acl_query_p50_ms", a->vacl.raw_p50, b->vacl.raw_p50);
    growth_line(a, b, "acl_query_p50_ratio", a->vacl.p50 / a->vacl.raw_p50,
                b->vacl.p50 / b->vacl.raw_p50);
    growth_line(a, b, "recall_at_10", a->vplain.recall, b->vplain.recall);
    growth_line(a, b, "acl_recall_at_10", a->vacl.recall, b->vacl.recall);
    growth_line(a, b, "hybrid_p50_ms", a->hplain.p50, b->hplain.p50);
    if (a->have_rss && b->have_rss) {
        growth_line(a, b, "ragcore_peak_rss_mib", a->rss_rag_mib, b->rss_rag_mib);
        growth_line(a, b, "raw_peak_rss_mib", a->rss_raw_mib, b->rss_raw_mib);
        growth_line(a, b, "rss_ratio", a->rss_rag_mib / a->rss_raw_mib,
                    b->rss_rag_mib / b->rss_raw_mib);
    }
    growth_line(a, b, "disk_total_bytes", a->disk_end[NMODULES], b->disk_end[NMODULES]);
}

/* ------------------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_synth [--docs N[,N...]]... [--queries Q] [--updates U] [--no-sweep]\n"
            "                   [--no-rss] [--rss-nosync]\n"
            "  default: --docs 10000,100000; Q = %d up to %d documents, else %d;\n"
            "  U = docs/10, at most 1000; --rss-nosync: fsync off in the ragcore RSS child\n"
            "  env: RAG_BENCH_TMPDIR (root's file system), RAG_BENCH_BATCH (put batch, %d)\n",
            SMALL_QUERIES, SMALL_DOCS, LARGE_QUERIES, DEFAULT_BATCH);
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || v == 0)
        return 1;
    *out = (size_t)v;
    return (*end == 0 || *end == ',') ? 0 : 1;
}

int main(int argc, char **argv)
{
    size_t sizes[MAX_SIZES], n_sizes = 0, queries = 0, updates = 0;
    int do_sweep = 1, do_rss = 1, rss_nosync = 0;
    child_args ca;
    memset(&ca, 0, sizeof ca);
    size_t batch = DEFAULT_BATCH;
    const char *eb = getenv("RAG_BENCH_BATCH");
    if (eb && *eb && (parse_size(eb, &batch) || batch == 0)) {
        usage();
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--docs") == 0 && v) {
            for (const char *p = v; *p;) {
                if (n_sizes == MAX_SIZES || parse_size(p, &sizes[n_sizes])) {
                    usage();
                    return 2;
                }
                n_sizes++;
                p = strchr(p, ',');
                if (!p)
                    break;
                p++;
            }
            i++;
        } else if (strcmp(a, "--queries") == 0 && v) {
            if (parse_size(v, &queries)) {
                usage();
                return 2;
            }
            i++;
        } else if (strcmp(a, "--updates") == 0 && v) {
            if (parse_size(v, &updates)) {
                usage();
                return 2;
            }
            i++;
        } else if (strcmp(a, "--batch") == 0 && v) {
            if (parse_size(v, &batch)) {
                usage();
                return 2;
            }
            i++;
        } else if (strcmp(a, "--rss-child") == 0 && v) {
            ca.side = v;
            i++;
        } else if (strcmp(a, "--plan") == 0 && v) {
            ca.plan = v;
            i++;
        } else if (strcmp(a, "--out") == 0 && v) {
            ca.out = v;
            i++;
        } else if (strcmp(a, "--rss-nosync") == 0) {
            rss_nosync = 1;
        } else if (strcmp(a, "--no-sweep") == 0) {
            do_sweep = 0;
        } else if (strcmp(a, "--no-rss") == 0) {
            do_rss = 0;
        } else {
            usage();
            return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 ? 0 : 2;
        }
    }

    if (ca.side) { /* an RSS child: one side of the workload alone */
        if (n_sizes != 1 || !ca.out || (strcmp(ca.side, "raw") == 0 && !ca.plan)) {
            usage();
            return 2;
        }
        ca.docs = sizes[0];
        ca.updates = updates;
        ca.queries = queries;
        ca.batch = batch;
        ca.no_sync = rss_nosync;
        if (strcmp(ca.side, "rag") == 0)
            return child_rag(&ca);
        if (strcmp(ca.side, "raw") == 0)
            return child_raw(&ca);
        usage();
        return 2;
    }

    rss_nosync_flag = rss_nosync;
    if (n_sizes == 0) {
        sizes[n_sizes++] = 10000;
        sizes[n_sizes++] = 100000;
    }
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    {
        json_t *o = json_object();
        fig_str(o, "bench", "synth_machine");
        fig_int(o, "nproc", (uint64_t)(nproc > 0 ? nproc : 0));
        fig_str(o, "cpu", cpu);
        fig_str(o, "build", RAG_BENCH_BUILD_TYPE);
        fig_str(o, "tmpdir", tmp_dir());
        fig_int(o, "seed", SEED);
        fig_int(o, "dim", DIM);
        fig_emit(o);
    }
    fprintf(stderr, "bench_synth: %ld CPU(s), %s; build %s; roots under %s\n", nproc, cpu,
            RAG_BENCH_BUILD_TYPE, tmp_dir());

    work *ws = xcalloc(n_sizes, sizeof *ws);
    int ret = 0;
    size_t smallest = 0;
    for (size_t i = 1; i < n_sizes; i++)
        if (sizes[i] < sizes[smallest])
            smallest = i;
    for (size_t i = 0; i < n_sizes && !ret; i++) {
        work *w = &ws[i];
        w->n_docs = sizes[i];
        w->n_upd = updates ? updates : (sizes[i] / 10 < MAX_UPDATES ? sizes[i] / 10 : MAX_UPDATES);
        if (w->n_upd == 0)
            w->n_upd = 1;
        if (w->n_upd > w->n_docs)
            w->n_upd = w->n_docs;
        w->nq = queries ? queries : (sizes[i] <= SMALL_DOCS ? SMALL_QUERIES : LARGE_QUERIES);
        w->large = sizes[i] > SMALL_DOCS;
        w->n_warm = w->nq < WARM_QUERIES ? w->nq : WARM_QUERIES;
        if (w->large && w->n_warm > WARM_QUERIES_LARGE)
            w->n_warm = WARM_QUERIES_LARGE;
        w->batch = batch;
        if (w->nq != SMALL_QUERIES)
            note("%zu documents: %zu queries per pass (not %d)%s", sizes[i], w->nq,
                 SMALL_QUERIES, queries ? "" : " to keep the run short");
        int sweep = do_sweep && i == smallest && sizes[i] <= SMALL_DOCS;
        ret = run_size(w, sweep, do_rss);
        /* keep the figures, drop the data */
        rag_close(w->ctx);
        w->ctx = NULL;
        work tmp = *w;
        work_free(&tmp);
        w->root[0] = 0;
        w->occ = NULL;
        w->rec = NULL;
        memset(&w->c, 0, sizeof w->c);
        w->doc_first = w->doc_n = w->upd_first = w->upd_n = NULL;
        w->upd_of_doc = NULL;
        w->rec_occ = NULL;
        w->hm_key = NULL;
        w->hm_val = NULL;
        w->qv = NULL;
        w->ref_plain = w->ref_acl = NULL;
        w->raw = NULL;
        memset(w->grp_sel, 0, sizeof w->grp_sel);
        memset(w->grp_par, 0, sizeof w->grp_par);
    }
    if (!ret && n_sizes > 1)
        growth(&ws[0], &ws[n_sizes - 1]);
    free(ws);
    return ret;
}
