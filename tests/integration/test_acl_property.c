/*
 * Multi-tenant ACL property test (issue 5), public API only.
 *
 * A randomized, seeded run (the seed prints; RAG_TEST_SEED=N replays it):
 *
 *   - 30 principals, 400 documents with random ACLs (about 15% public, the others readable by
 *     1-3 principals), workers started (rag_start);
 *   - a writer thread updates documents (new text), changes ACLs (re-put with another ACL,
 *     sometimes public), deletes them and puts deleted ones back, while two reader threads run
 *     thousands of searches as random principal subsets (none = public only) in every mode
 *     (vector, lexical, hybrid, default) with random k, and pass every fifth result list to
 *     rag_assemble();
 *   - every result must be readable by the query's principals under the ACL of the version
 *     it came from.  The model: every put's text carries a tag naming its ACL set (written to
 *     an append-only table before the put is made), and documents are one chunk long, so the
 *     text a search returns names the ACL it was stored with; the tag must also be one a put
 *     of that (document, version) really used;
 *   - a document whose delete returned before the search began, and that no put has touched
 *     since, must not come back;
 *   - an assembled prompt may contain no document marker except those of its own results;
 *   - zero leaks are asserted, and every check's count is printed.
 *
 * Then, quiescent (writer done, pipeline drained): for 300 more random queries the results
 * are exactly the latest live versions, and a query gets min(k, matching readable documents)
 * results.  A second test checks that filtered search is a pre-filter: at 1% and 0.1%
 * selectivity of 2,000 documents, k results come back whenever k readable matching documents
 * exist.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define NPRINC 30
#define NDOCS 400
#define WRITER_OPS 700    /* at least this many changes ... */
#define MIN_QUERIES 4000  /* ... and the writer goes on until the readers made this many */
#define MAX_OPS 20000     /* searches, all of them while documents change */
#define NREADERS 2
#define MAX_SETS (NDOCS + MAX_OPS + 16)
#define MAX_ACL 3
#define MAX_PUTS (NDOCS + MAX_OPS + 16)
#define QUIESCENT_QUERIES 300

/* Words of the documents and queries: plain nouns that are no stopwords and whose Snowball
 * stems are all different, so "a document matches a query" is "shares a word with it". */
static const char *const VOCAB[] = {
    "harbor", "lantern", "meadow", "copper", "violin", "glacier", "orchard", "falcon",
    "canyon", "marble", "tundra", "saddle", "pepper", "walnut", "beacon", "quartz",
    "ribbon", "thistle", "cobalt", "maple", "anchor", "bison", "cactus", "dolphin",
    "ember", "fjord", "garnet", "hazel", "igloo", "jasmine", "kettle", "lagoon",
    "magnet", "nectar", "oyster", "parrot", "quiver", "raven", "sequoia", "tulip"};
#define NVOCAB (sizeof VOCAB / sizeof *VOCAB)

/* ---- random numbers (one stream per thread, all derived from the seed) -------------------- */

static uint64_t rnd_next(uint64_t *s)
{
    /* splitmix64: good enough, and identical on every platform for a given seed */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static unsigned rnd(uint64_t *s, unsigned n) { return (unsigned)(rnd_next(s) % n); }

/* ---- the model ---------------------------------------------------------------------------- */

typedef struct acl_set {
    int n;           /* 0: public */
    int p[MAX_ACL];  /* principal numbers */
} acl_set;

typedef struct put_rec {
    int doc;
    uint64_t version;
    int tag;
} put_rec;

typedef struct model {
    const char *princ[NPRINC];
    char princ_buf[NPRINC][16];
    /* ACL sets, append-only: entry i is complete before nsets exceeds i */
    acl_set sets[MAX_SETS];
    _Atomic int nsets;
    /* Per document (written by the writer; read by readers through atomics) */
    _Atomic int cur_tag[NDOCS];        /* tag of the latest put */
    _Atomic int live[NDOCS];           /* 1: not deleted */
    _Atomic uint64_t del_done[NDOCS];  /* sequence number when the last delete returned */
    _Atomic uint64_t put_start[NDOCS]; /* sequence number when the last put began */
    _Atomic uint64_t seq;
    unsigned words[NDOCS][64];         /* writer-only (and quiescent phase): latest words */
    int nwords[NDOCS];
    uint64_t latest[NDOCS];
    /* Puts that returned: (doc, version, tag) */
    pthread_mutex_t mu;
    put_rec puts[MAX_PUTS];
    size_t nputs;
    /* Observations not yet confirmed by a returned put (the put was in flight) */
    put_rec *deferred;
    size_t ndeferred, deferred_cap;
} model;

static int readable(const acl_set *a, const int *qp, int nq)
{
    if (a->n == 0)
        return 1;
    for (int i = 0; i < a->n; i++)
        for (int j = 0; j < nq; j++)
            if (a->p[i] == qp[j])
                return 1;
    return 0;
}

static int new_set(model *m, uint64_t *rs)
{
    int i = atomic_load(&m->nsets);
    assert_true(i < MAX_SETS);
    acl_set *a = &m->sets[i];
    memset(a, 0, sizeof *a);
    if (rnd(rs, 100) >= 15) {
        a->n = 1 + (int)rnd(rs, MAX_ACL);
        for (int j = 0; j < a->n; j++)
            a->p[j] = (int)rnd(rs, NPRINC);
    }
    atomic_store(&m->nsets, i + 1); /* publish after the entry is written */
    return i;
}

/* Fill one document's text: its marker, its ACL tag, then random words.  About 250 bytes:
 * one chunk (chunk_target 800), so every chunk carries the marker and the tag. */
static size_t doc_text(model *m, int doc, int tag, uint64_t *rs, char *buf, size_t size)
{
    int n = 20 + (int)rnd(rs, 12);
    size_t len = (size_t)snprintf(buf, size, "zqd%03d zqa%05d", doc, tag);
    m->nwords[doc] = n;
    for (int i = 0; i < n; i++) {
        unsigned w = rnd(rs, NVOCAB);
        m->words[doc][i] = w;
        len += (size_t)snprintf(buf + len, size - len, " %s", VOCAB[w]);
    }
    len += (size_t)snprintf(buf + len, size - len, ".");
    return len;
}

static void fill_acl(const model *m, int tag, const char **acl, size_t *n)
{
    const acl_set *a = &m->sets[tag];
    for (int i = 0; i < a->n; i++)
        acl[i] = m->princ[a->p[i]];
    *n = (size_t)a->n;
}

static void record_put(model *m, int doc, uint64_t version, int tag)
{
    pthread_mutex_lock(&m->mu);
    assert_true(m->nputs < MAX_PUTS);
    m->puts[m->nputs++] = (put_rec){doc, version, tag};
    pthread_mutex_unlock(&m->mu);
}

/* 1: some returned put of `doc` made `version` with `tag`; 0: none (yet). */
static int put_known(model *m, int doc, uint64_t version, int tag)
{
    int found = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = m->nputs; i-- > 0 && !found;)
        found = m->puts[i].doc == doc && m->puts[i].version == version && m->puts[i].tag == tag;
    if (!found) {
        if (m->ndeferred == m->deferred_cap) {
            m->deferred_cap = m->deferred_cap ? m->deferred_cap * 2 : 64;
            m->deferred = realloc(m->deferred, m->deferred_cap * sizeof *m->deferred);
        }
        m->deferred[m->ndeferred++] = (put_rec){doc, version, tag};
    }
    pthread_mutex_unlock(&m->mu);
    return found;
}

/* ---- shared state of a run ---------------------------------------------------------------- */

typedef struct run {
    rag_ctx *ctx;
    model *m;
    uint64_t seed;
    atomic_int writer_done;
    atomic_long queries, results, assembled, leaks, stale_deleted, bad_tag, bad_chunk,
        prompt_leaks, errors, empty_results;
    atomic_long per_mode[4];
    pthread_mutex_t msg_mu;
    char first_failure[512];
} run;

static void failure(run *r, atomic_long *counter, const char *fmt, ...)
{
    atomic_fetch_add(counter, 1);
    pthread_mutex_lock(&r->msg_mu);
    if (!r->first_failure[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->first_failure, sizeof r->first_failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&r->msg_mu);
}

/* Parse "zqdNNN zqaNNNNN" at the start of a result's text. */
static int parse_head(const char *text, int *doc, int *tag)
{
    return sscanf(text, "zqd%3d zqa%5d", doc, tag) == 2 ? 0 : -1;
}

static int doc_of_id(const char *id)
{
    int d;
    return sscanf(id, "doc-%3d", &d) == 1 ? d : -1;
}

/* One random query, checked.  Called by the readers. */
static void one_query(run *r, uint64_t *rs)
{
    model *m = r->m;
    int qp[3], nq = (int)rnd(rs, 4);
    const char *princ[3];
    for (int i = 0; i < nq; i++) {
        qp[i] = (int)rnd(rs, NPRINC);
        princ[i] = m->princ[qp[i]];
    }
    char text[128];
    int nw = 1 + (int)rnd(rs, 3);
    size_t tl = 0;
    for (int i = 0; i < nw; i++)
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%s%s", i ? " " : "",
                               VOCAB[rnd(rs, NVOCAB)]);
    static const size_t ks[] = {1, 3, 10, 25, 60};
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = ks[rnd(rs, 5)];
    q.principals = nq ? princ : NULL;
    q.principal_count = (size_t)nq;
    q.mode = (rag_search_mode)rnd(rs, 4);
    uint64_t s0 = atomic_load(&m->seq);
    rag_results *res = NULL;
    int rc = rag_search(r->ctx, &q, &res);
    if (rc) {
        failure(r, &r->errors, "rag_search: %s (%s)", rag_strerror(rc), rag_error_last());
        return;
    }
    atomic_fetch_add(&r->queries, 1);
    atomic_fetch_add(&r->per_mode[q.mode], 1);
    atomic_fetch_add(&r->results, (long)res->count);
    if (res->count == 0)
        atomic_fetch_add(&r->empty_results, 1);
    int nsets = atomic_load(&m->nsets);
    for (size_t i = 0; i < res->count; i++) {
        const rag_result *h = &res->items[i];
        int doc, tag;
        if (h->chunk != 0) {
            failure(r, &r->bad_chunk, "%s chunk %u: documents are one chunk", h->doc_id,
                    h->chunk);
            continue;
        }
        if (parse_head(h->text, &doc, &tag) || tag < 0 || tag >= nsets ||
            doc != doc_of_id(h->doc_id)) {
            failure(r, &r->bad_tag, "%s@%llu: text does not name its document and ACL: %.40s",
                    h->doc_id, (unsigned long long)h->version, h->text);
            continue;
        }
        if (!readable(&m->sets[tag], qp, nq))
            failure(r, &r->leaks,
                    "LEAK: %s@%llu (ACL set %d, %d principals) returned to %d principal(s)%s%s",
                    h->doc_id, (unsigned long long)h->version, tag, m->sets[tag].n, nq,
                    nq ? ", first " : "", nq ? princ[0] : "");
        put_known(m, doc, h->version, tag);
        /* deleted before the search began and not put since (put_start read after the
         * search: a later put only widens what is allowed) */
        uint64_t dd = atomic_load(&m->del_done[doc]);
        if (dd && dd < s0 && atomic_load(&m->put_start[doc]) < dd)
            failure(r, &r->stale_deleted, "%s returned after its delete had returned",
                    h->doc_id);
    }
    if (atomic_fetch_add(&r->assembled, 0) * 5 < atomic_load(&r->queries) && res->count) {
        atomic_fetch_add(&r->assembled, 1);
        rag_assemble_opts ao = RAG_ASSEMBLE_INIT;
        ao.question = text;
        ao.token_budget = 8192;
        ao.format = rnd(rs, 2) ? RAG_PROMPT_JSON : RAG_PROMPT_TEXT;
        char *prompt = NULL;
        rc = rag_assemble(r->ctx, res, &ao, &prompt);
        if (rc) {
            failure(r, &r->errors, "rag_assemble: %s (%s)", rag_strerror(rc), rag_error_last());
        } else {
            for (const char *p = prompt; (p = strstr(p, "zqd")); p += 3) {
                /* a whole marker only: a block cut at the budget may end in "zqd1…" */
                if (!(p[3] >= '0' && p[3] <= '9' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' &&
                      p[5] <= '9' && p[6] == ' '))
                    continue;
                int d = (p[3] - '0') * 100 + (p[4] - '0') * 10 + (p[5] - '0');
                char id[16];
                snprintf(id, sizeof id, "doc-%03d", d);
                size_t j = 0;
                while (j < res->count && strcmp(res->items[j].doc_id, id))
                    j++;
                if (j == res->count) {
                    const char *from = p - prompt > 60 ? p - 60 : prompt;
                    failure(r, &r->prompt_leaks,
                            "prompt holds text of %s, not a result (%zu results): ...%.120s",
                            id, res->count, from);
                    if (getenv("ACL_DEBUG")) {
                        fprintf(stderr, "PROMPT:\n%s\nRESULTS:\n", prompt);
                        for (size_t x = 0; x < res->count; x++)
                            fprintf(stderr, "  %s@%llu c%u [%s] %s\n", res->items[x].doc_id,
                                    (unsigned long long)res->items[x].version,
                                    res->items[x].chunk, res->items[x].title,
                                    res->items[x].text);
                    }
                }
            }
            rag_free(prompt);
        }
    }
    rag_results_free(res);
}

static void *reader_main(void *arg)
{
    run *r = arg;
    static atomic_int next_id;
    uint64_t rs = r->seed ^ (0x1000u + (uint64_t)atomic_fetch_add(&next_id, 1));
    while (!atomic_load(&r->writer_done)) {
        if (atomic_load(&r->errors) > 20)
            break;
        one_query(r, &rs);
    }
    return NULL;
}

static int put_doc(run *r, int doc, int tag, uint64_t *rs)
{
    model *m = r->m;
    char id[16], text[1024];
    const char *acl[MAX_ACL];
    size_t nacl;
    snprintf(id, sizeof id, "doc-%03d", doc);
    size_t len = doc_text(m, doc, tag, rs, text, sizeof text);
    fill_acl(m, tag, acl, &nacl);
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = len;
    d.mime = "text/plain";
    d.acl = nacl ? acl : NULL;
    d.acl_count = nacl;
    atomic_store(&m->put_start[doc], atomic_fetch_add(&m->seq, 1) + 1);
    uint64_t v = 0;
    int rc = rag_doc_put(r->ctx, &d, &v);
    if (rc) {
        failure(r, &r->errors, "put %s: %s (%s)", id, rag_strerror(rc), rag_error_last());
        return rc;
    }
    record_put(m, doc, v, tag);
    m->latest[doc] = v;
    atomic_store(&m->cur_tag[doc], tag);
    atomic_store(&m->live[doc], 1);
    return 0;
}

static void *writer_main(void *arg)
{
    run *r = arg;
    model *m = r->m;
    uint64_t rs = r->seed ^ 0x77u;
    long updates = 0, acl_changes = 0, deletes = 0, reputs = 0;
    int op = 0;
    for (; (op < WRITER_OPS || atomic_load(&r->queries) < MIN_QUERIES) && op < MAX_OPS &&
           atomic_load(&r->errors) == 0;
         op++) {
        int doc = (int)rnd(&rs, NDOCS);
        unsigned kind = rnd(&rs, 100);
        if (!atomic_load(&m->live[doc])) {
            reputs++;
            put_doc(r, doc, new_set(m, &rs), &rs);
        } else if (kind < 40) {
            updates++;
            put_doc(r, doc, atomic_load(&m->cur_tag[doc]), &rs);
        } else if (kind < 80) {
            acl_changes++;
            put_doc(r, doc, new_set(m, &rs), &rs);
        } else {
            char id[16];
            snprintf(id, sizeof id, "doc-%03d", doc);
            atomic_store(&m->live[doc], 0);
            int rc = rag_doc_delete(r->ctx, id);
            if (rc) {
                failure(r, &r->errors, "delete %s: %s (%s)", id, rag_strerror(rc),
                        rag_error_last());
                break;
            }
            atomic_store(&m->del_done[doc], atomic_fetch_add(&m->seq, 1) + 1);
            deletes++;
        }
        /* pace the writer so that its changes spread over the readers' searches */
        if (op % 4 == 0)
            usleep(500);
    }
    printf("{\"test\":\"acl_property\",\"writer\":{\"ops\":%d,\"updates\":%ld,"
           "\"acl_changes\":%ld,\"deletes\":%ld,\"reputs\":%ld}}\n",
           op, updates, acl_changes, deletes, reputs);
    atomic_store(&r->writer_done, 1);
    return NULL;
}

static uint64_t pick_seed(void)
{
    const char *env = getenv("RAG_TEST_SEED");
    if (env && *env)
        return strtoull(env, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
}

static rag_ctx *open_root(const char *root)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.embed_dim = 64; /* ACLs, not embedding quality, are under test */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    return ctx;
}

/* Quiescent: results are the latest live versions, readable, and there are exactly
 * min(k, readable documents that match) of them (vector/hybrid: every readable document
 * matches; lexical: those sharing a word with the query). */
static void quiescent_checks(run *r, uint64_t *rs)
{
    model *m = r->m;
    long checked = 0;
    for (int qi = 0; qi < QUIESCENT_QUERIES; qi++) {
        int qp[3], nq = (int)rnd(rs, 4);
        const char *princ[3];
        for (int i = 0; i < nq; i++) {
            qp[i] = (int)rnd(rs, NPRINC);
            princ[i] = m->princ[qp[i]];
        }
        unsigned w = rnd(rs, NVOCAB);
        rag_query q = RAG_QUERY_INIT;
        q.text = VOCAB[w];
        q.k = (size_t)(1 + rnd(rs, 80));
        q.principals = nq ? princ : NULL;
        q.principal_count = (size_t)nq;
        q.mode = (rag_search_mode)(1 + rnd(rs, 3));
        size_t readable_n = 0, matching_n = 0;
        for (int d = 0; d < NDOCS; d++) {
            if (!m->live[d] || !readable(&m->sets[m->cur_tag[d]], qp, nq))
                continue;
            readable_n++;
            for (int i = 0; i < m->nwords[d]; i++)
                if (m->words[d][i] == w) {
                    matching_n++;
                    break;
                }
        }
        size_t expect = q.mode == RAG_MODE_LEXICAL ? matching_n : readable_n;
        if (expect > q.k)
            expect = q.k;
        rag_results *res = NULL;
        int rc = rag_search(r->ctx, &q, &res);
        assert_int_equal(rc, RAG_OK);
        if (res->count != expect)
            fprintf(stderr,
                    "quiescent query \"%s\" mode %d k %zu as %d principal(s): %zu results, "
                    "expected %zu (%zu readable, %zu matching)\n",
                    q.text, (int)q.mode, q.k, nq, res->count, expect, readable_n, matching_n);
        assert_int_equal(res->count, expect);
        for (size_t i = 0; i < res->count; i++) {
            const rag_result *h = &res->items[i];
            int doc, tag;
            assert_int_equal(parse_head(h->text, &doc, &tag), 0);
            assert_int_equal(doc, doc_of_id(h->doc_id));
            assert_true(m->live[doc]);
            assert_int_equal(h->version, m->latest[doc]);
            assert_int_equal(tag, m->cur_tag[doc]);
            assert_true(readable(&m->sets[tag], qp, nq));
            if (q.mode == RAG_MODE_LEXICAL) {
                int has = 0;
                for (int j = 0; j < m->nwords[doc]; j++)
                    has |= m->words[doc][j] == w;
                assert_true(has);
            }
            checked++;
        }
        rag_results_free(res);
    }
    printf("{\"test\":\"acl_property\",\"quiescent_queries\":%d,\"quiescent_results\":%ld}\n",
           QUIESCENT_QUERIES, checked);
}

static void test_acl_property(void **state)
{
    (void)state;
    run *r = calloc(1, sizeof *r);
    model *m = calloc(1, sizeof *m);
    r->m = m;
    r->seed = pick_seed();
    printf("acl_property: seed %llu (replay with RAG_TEST_SEED=%llu)\n",
           (unsigned long long)r->seed, (unsigned long long)r->seed);
    fflush(stdout);
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&r->msg_mu, NULL);
    for (int i = 0; i < NPRINC; i++) {
        /* users and groups: names are opaque strings to the library either way */
        snprintf(m->princ_buf[i], sizeof m->princ_buf[i], i % 3 ? "user:u%02d" : "group:g%02d",
                 i);
        m->princ[i] = m->princ_buf[i];
    }
    char *root = rag_test_tmpdir("acl-property");
    r->ctx = open_root(root);
    uint64_t rs = r->seed;

    /* Initial corpus, in batches, drained before the workers start. */
    for (int off = 0; off < NDOCS; off += 100) {
        rag_doc docs[100];
        rag_put_result res[100];
        static char texts[100][1024];
        char ids[100][16];
        const char *acls[100][MAX_ACL];
        int tags[100];
        for (int i = 0; i < 100; i++) {
            int doc = off + i;
            tags[i] = new_set(m, &rs);
            snprintf(ids[i], sizeof ids[i], "doc-%03d", doc);
            size_t len = doc_text(m, doc, tags[i], &rs, texts[i], sizeof texts[i]);
            size_t nacl;
            fill_acl(m, tags[i], acls[i], &nacl);
            memset(&docs[i], 0, sizeof docs[i]);
            docs[i].id = ids[i];
            docs[i].data = texts[i];
            docs[i].size = len;
            docs[i].mime = "text/plain";
            docs[i].acl = nacl ? acls[i] : NULL;
            docs[i].acl_count = nacl;
        }
        assert_int_equal(rag_doc_put_batch(r->ctx, docs, 100, res), RAG_OK);
        for (int i = 0; i < 100; i++) {
            assert_int_equal(res[i].code, RAG_OK);
            record_put(m, off + i, res[i].version, tags[i]);
            m->latest[off + i] = res[i].version;
            m->cur_tag[off + i] = tags[i];
            m->live[off + i] = 1;
        }
    }
    assert_int_equal(rag_drain(r->ctx, 0), RAG_OK);
    assert_int_equal(rag_start(r->ctx), RAG_OK);

    pthread_t writer, readers[NREADERS];
    assert_int_equal(pthread_create(&writer, NULL, writer_main, r), 0);
    for (int i = 0; i < NREADERS; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, reader_main, r), 0);
    pthread_join(writer, NULL);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(readers[i], NULL);
    assert_int_equal(rag_drain(r->ctx, 0), RAG_OK);

    /* Observations made while their put was in flight: that put must have returned since. */
    long unconfirmed = 0;
    for (size_t i = 0; i < m->ndeferred; i++) {
        put_rec o = m->deferred[i];
        int found = 0;
        for (size_t j = 0; j < m->nputs && !found; j++)
            found = m->puts[j].doc == o.doc && m->puts[j].version == o.version &&
                    m->puts[j].tag == o.tag;
        if (!found) {
            unconfirmed++;
            fprintf(stderr, "doc-%03d@%llu came back with ACL tag %d, which no put of that "
                            "version used\n",
                    o.doc, (unsigned long long)o.version, o.tag);
        }
    }

    printf("{\"test\":\"acl_property\",\"seed\":%llu,\"queries\":%ld,\"by_mode\":{\"default\":"
           "%ld,\"vector\":%ld,\"lexical\":%ld,\"hybrid\":%ld},\"results_checked\":%ld,"
           "\"empty_results\":%ld,\"assembled\":%ld,\"leaks\":%ld,\"prompt_leaks\":%ld,"
           "\"deleted_returned\":%ld,\"bad_tag\":%ld,\"bad_chunk\":%ld,\"unconfirmed\":%ld,"
           "\"in_flight_observations\":%zu,\"errors\":%ld}\n",
           (unsigned long long)r->seed, atomic_load(&r->queries),
           atomic_load(&r->per_mode[0]), atomic_load(&r->per_mode[1]),
           atomic_load(&r->per_mode[2]), atomic_load(&r->per_mode[3]),
           atomic_load(&r->results), atomic_load(&r->empty_results),
           atomic_load(&r->assembled), atomic_load(&r->leaks), atomic_load(&r->prompt_leaks),
           atomic_load(&r->stale_deleted), atomic_load(&r->bad_tag),
           atomic_load(&r->bad_chunk), unconfirmed, m->ndeferred, atomic_load(&r->errors));
    if (r->first_failure[0])
        fprintf(stderr, "first failure (seed %llu): %s\n", (unsigned long long)r->seed,
                r->first_failure);
    fflush(stdout);
    assert_int_equal(atomic_load(&r->errors), 0);
    assert_int_equal(atomic_load(&r->leaks), 0);
    assert_int_equal(atomic_load(&r->prompt_leaks), 0);
    assert_int_equal(atomic_load(&r->stale_deleted), 0);
    assert_int_equal(atomic_load(&r->bad_tag), 0);
    assert_int_equal(atomic_load(&r->bad_chunk), 0);
    assert_int_equal(unconfirmed, 0);
    assert_true(atomic_load(&r->queries) >= MIN_QUERIES);
    /* the run must have searched something: most queries find readable documents */
    assert_true(atomic_load(&r->results) > atomic_load(&r->queries));

    quiescent_checks(r, &rs);

    rag_close(r->ctx);
    rag_test_rmtree(root);
    free(root);
    free(m->deferred);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&r->msg_mu);
    free(m);
    free(r);
}

/* ---- selectivity: filtered search is a pre-filter --------------------------------------- */

#define SEL_DOCS 2000

static void test_k_at_low_selectivity(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("acl-selectivity");
    rag_ctx *ctx = open_root(root);
    /* 1% of the documents are readable by group:one (every 100th), 0.1% by group:tenth
     * (every 1000th); all others by one of 50 other principals, never public.  Every document
     * holds the word "harbor"; the readable ones sit anywhere in the id order. */
    static char texts[SEL_DOCS][160];
    static char ids[SEL_DOCS][16];
    static char others[50][16];
    for (int i = 0; i < 50; i++)
        snprintf(others[i], sizeof others[i], "user:o%02d", i);
    const char *one[] = {"group:one"}, *tenth[] = {"group:one", "group:tenth"};
    rag_doc *docs = calloc(SEL_DOCS, sizeof *docs);
    rag_put_result *res = calloc(SEL_DOCS, sizeof *res);
    const char *other_acl[SEL_DOCS][1];
    for (int i = 0; i < SEL_DOCS; i++) {
        snprintf(ids[i], sizeof ids[i], "sel-%04d", i);
        int n = snprintf(texts[i], sizeof texts[i],
                         "harbor lantern meadow document %d copper violin glacier orchard", i);
        docs[i].id = ids[i];
        docs[i].data = texts[i];
        docs[i].size = (size_t)n;
        docs[i].mime = "text/plain";
        if (i % 1000 == 537) {
            docs[i].acl = tenth;
            docs[i].acl_count = 2;
        } else if (i % 100 == 37) {
            docs[i].acl = one;
            docs[i].acl_count = 1;
        } else {
            other_acl[i][0] = others[i % 50];
            docs[i].acl = other_acl[i];
            docs[i].acl_count = 1;
        }
    }
    assert_int_equal(rag_doc_put_batch(ctx, docs, SEL_DOCS, res), RAG_OK);
    for (int i = 0; i < SEL_DOCS; i++)
        assert_int_equal(res[i].code, RAG_OK);
    assert_int_equal(rag_drain(ctx, 0), RAG_OK);

    static const struct {
        const char *principal;
        size_t readable;
    } cases[] = {{"group:one", SEL_DOCS / 100}, {"group:tenth", SEL_DOCS / 1000}};
    long queries = 0;
    for (size_t c = 0; c < 2; c++) {
        const char *princ[] = {cases[c].principal};
        static const size_t ks[] = {1, 2, 5, 10, 20, 50};
        for (int mode = 0; mode < 4; mode++)
            for (size_t ki = 0; ki < 6; ki++) {
                rag_query q = RAG_QUERY_INIT;
                q.text = "harbor";
                q.k = ks[ki];
                q.principals = princ;
                q.principal_count = 1;
                q.mode = (rag_search_mode)mode;
                rag_results *r = NULL;
                assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
                size_t expect = q.k < cases[c].readable ? q.k : cases[c].readable;
                if (r->count != expect)
                    fprintf(stderr, "%s mode %d k %zu: %zu results, expected %zu\n",
                            cases[c].principal, mode, q.k, r->count, expect);
                assert_int_equal(r->count, expect);
                for (size_t i = 0; i < r->count; i++) {
                    int d = atoi(r->items[i].doc_id + 4);
                    int ok = d % 1000 == 537 || (c == 0 && d % 100 == 37);
                    if (!ok)
                        fprintf(stderr, "LEAK: %s returned to %s\n", r->items[i].doc_id,
                                cases[c].principal);
                    assert_true(ok);
                }
                rag_results_free(r);
                queries++;
            }
    }
    printf("{\"test\":\"acl_selectivity\",\"docs\":%d,\"selectivity\":[0.01,0.001],"
           "\"queries\":%ld,\"all_k_returned\":true}\n",
           SEL_DOCS, queries);
    free(docs);
    free(res);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acl_property),
        cmocka_unit_test(test_k_at_low_selectivity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
