/*
 * The index module's BM25 lexical side, driven through the real consumers on the LMDB broker:
 * scores against a hand computation, the analysis (Snowball stems, stopwords, NFKC casefold,
 * title terms), version switches that move the lexical side with the vectors (also under
 * concurrent searches), deletes and reverts, the ACL filter inside the search, rebuilds after
 * a clean close and after a crash, rag_index_applied, rag_index_check's lexical problems, and
 * SciFact (quality and latency) when ../shared/data has it.
 */
#include <jansson.h>
#include <libstemmer.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"
#include "fake_vector.h"
#include "index_internal.h"
#include "rag_common.h"
#include "rag_events.h"
#include "rag_index_api.h"
#include "rag_queue.h"
#include "rag_text.h"

#define DIM 8

#define IXT_OWN_CHUNK_VEC
#include "index_test_util.h"

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

static int g_counter;

static void t_open(tctx *c)
{
    rag_vector_backend *b = NULL;
    OK(rag_fake_vector_backend_new(&b, DIM));
    OK(rag_index_open(&c->ix, &c->cfg, b));
}

static tctx *ctx_new(float k1, float b)
{
    tctx *c = calloc(1, sizeof *c);
    char name[64];
    snprintf(name, sizeof name, "index-lex-%d", ++g_counter);
    c->root = rag_test_tmpdir(name);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 256;
    o.embed_dim = DIM;
    o.bm25_k1 = k1;
    o.bm25_b = b;
    OK(rag_config_init(&c->cfg, c->root, &o));
    t_open(c);
    OK(rag_queue_lmdb_transport_new(&c->t, &c->cfg));
    rag_queue_policy_from_config(&c->pol, &c->cfg);
    c->pol.retry_base_ms = 1;
    c->pol.retry_cap_ms = 1;
    return c;
}

static int setup(void **state)
{
    *state = ctx_new(0, 0);
    return 0;
}

static int teardown(void **state)
{
    tctx *c = *state;
    rag_index_close(c->ix);
    c->t->free(c->t->state);
    free(c->t);
    rag_test_rmtree(c->root);
    free(c->root);
    free(c);
    return 0;
}

/* ---- events ------------------------------------------------------------------------------ */

static void chunk_vec(const char *doc, uint64_t version, uint32_t chunk, float *out)
{
    char key[512];
    int n = snprintf(key, sizeof key, "%s|%llu|%u", doc, (unsigned long long)version, chunk);
    uint8_t h[16];
    rag_hash128(key, (size_t)n, h);
    float norm = 0;
    for (int i = 0; i < DIM; i++) {
        out[i] = (float)h[i] - 127.5f;
        norm += out[i] * out[i];
    }
    for (int i = 0; i < DIM; i++)
        out[i] /= sqrtf(norm);
}

static void publish(tctx *c, const char *topic, const rag_wbuf *w)
{
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    snprintf(m.id, sizeof m.id, "lex-%d", __atomic_add_fetch(&c->msg_no, 1, __ATOMIC_RELAXED));
    m.data = w->data;
    m.size = w->len;
    OK(c->t->publish(c->t->state, &m, 1));
}

static void encode_doc(rag_wbuf *w, const char *doc, uint64_t version, const char **acl,
                       size_t nacl, const char *title, const char *const *texts, size_t n)
{
    rag_ev_vector *vs = calloc(n + 1, sizeof *vs);
    float *vecs = calloc((n + 1) * DIM, sizeof *vecs);
    for (size_t i = 0; i < n; i++) {
        vs[i].chunk_no = (uint32_t)i;
        vs[i].text = texts[i];
        vs[i].text_len = strlen(texts[i]);
        vs[i].vector = vecs + i * DIM;
        chunk_vec(doc, version, (uint32_t)i, vs[i].vector);
    }
    rag_ev_embedded ev = {.doc_id = doc, .version = version, .acl_count = nacl, .acl = acl,
                          .title = title, .dim = DIM, .vector_count = n, .vectors = vs};
    rag_wbuf_init(w);
    OK(rag_ev_embedded_encode(&ev, w));
    free(vs);
    free(vecs);
}

static void put_doc(tctx *c, const char *doc, uint64_t version, const char **acl, size_t nacl,
                    const char *title, const char *const *texts, size_t n)
{
    rag_wbuf w;
    encode_doc(&w, doc, version, acl, nacl, title, texts, n);
    publish(c, RAG_TOPIC_EMBEDDED, &w);
    rag_wbuf_free(&w);
}

/* One chunk, public, no title. */
static void put1(tctx *c, const char *doc, uint64_t version, const char *text)
{
    put_doc(c, doc, version, NULL, 0, "", &text, 1);
}

static void put_deleted(tctx *c, const char *doc, uint64_t version)
{
    rag_ev_deleted ev = {.doc_id = doc, .version = version};
    rag_wbuf w;
    rag_wbuf_init(&w);
    OK(rag_ev_deleted_encode(&ev, &w));
    publish(c, RAG_TOPIC_DELETED, &w);
    rag_wbuf_free(&w);
}

static void put_revert(tctx *c, const char *doc, uint64_t version)
{
    rag_ev_revert ev = {.doc_id = doc, .version = version};
    rag_wbuf w;
    rag_wbuf_init(&w);
    OK(rag_ev_revert_encode(&ev, &w));
    publish(c, RAG_TOPIC_REVERT, &w);
    rag_wbuf_free(&w);
}

/* ---- searching ---------------------------------------------------------------------------- */

static size_t lsearch(tctx *c, const char *q, size_t k, const rag_acl_filter *f,
                      rag_index_hit *hits)
{
    const rag_index_reader *r = rag_index_reader_get(c->ix);
    size_t n = 99;
    OK(r->search_lexical(r->self, q, strlen(q), k, f, hits, &n));
    assert_true(n <= k);
    for (size_t i = 1; i < n; i++)
        assert_true(hits[i - 1].score >= hits[i].score);
    return n;
}

static int has_hit(const rag_index_hit *h, size_t n, const char *doc, uint64_t version,
                   uint32_t chunk)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(h[i].doc_id, doc) == 0 && h[i].version == version && h[i].chunk_no == chunk)
            return 1;
    return 0;
}

/* Hits of `doc` for query `q` (k 64); each checked to be of `version`. */
static size_t doc_hits(tctx *c, const char *q, const char *doc, uint64_t version)
{
    rag_index_hit hits[64];
    size_t n = lsearch(c, q, 64, NULL, hits), m = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(hits[i].doc_id, doc) == 0) {
            assert_int_equal(hits[i].version, version);
            m++;
        }
    return m;
}

static void close_to(double got, double want)
{
    if (fabs(got - want) > 1e-5 * fabs(want))
        fail_msg("score %.9f, expected %.9f", got, want);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Three one-chunk documents (terms after stemming: appl, banana, cherri, date):
 *   d1 "apple banana apple"            |d1| = 3
 *   d2 "banana cherry"                 |d2| = 2
 *   d3 "cherry cherry cherry date"     |d3| = 4      N = 3, avgdl = 3
 * query "apple cherry": df(appl) = 1, df(cherri) = 2; the expected scores were computed by
 * hand (python) from idf = ln(1 + (N - df + 0.5) / (df + 0.5)) and
 * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl)). */
static void bm25_corpus(tctx *c)
{
    put1(c, "d1", 1, "apple banana apple");
    put1(c, "d2", 1, "banana cherry");
    put1(c, "d3", 1, "cherry cherry cherry date");
    drain_all(c);
}

static void test_bm25_hand(void **state)
{
    tctx *c = *state;
    bm25_corpus(c);
    rag_index_hit hits[8];
    /* defaults k1 0.9, b 0.4 */
    assert_int_equal(lsearch(c, "apple cherry", 8, NULL, hits), 3);
    assert_string_equal(hits[0].doc_id, "d1");
    assert_string_equal(hits[1].doc_id, "d3");
    assert_string_equal(hits[2].doc_id, "d2");
    close_to(hits[0].score, 1.2852245384291585);
    close_to(hits[1].score, 0.6664230563932072);
    close_to(hits[2].score, 0.5016892671724144);
    /* k limits the list to the best ones */
    assert_int_equal(lsearch(c, "apple cherry", 2, NULL, hits), 2);
    assert_string_equal(hits[1].doc_id, "d3");
    /* a repeated query term counts twice */
    assert_int_equal(lsearch(c, "apple apple", 8, NULL, hits), 1);
    close_to(hits[0].score, 2 * 1.2852245384291585);
    /* unknown terms add nothing; no term at all: no hits, not an error */
    assert_int_equal(lsearch(c, "zebra apple", 8, NULL, hits), 1);
    close_to(hits[0].score, 1.2852245384291585);
    assert_int_equal(lsearch(c, "zebra", 8, NULL, hits), 0);
    assert_int_equal(lsearch(c, "", 8, NULL, hits), 0);
    assert_int_equal(lsearch(c, "?! ...", 8, NULL, hits), 0);
    const rag_index_reader *r = rag_index_reader_get(c->ix);
    size_t n = 5;
    OK(r->search_lexical(r->self, "apple", 5, 0, NULL, NULL, &n)); /* k = 0 */
    assert_int_equal(n, 0);
    assert_int_equal(r->search_lexical(r->self, "apple", 5, 3, NULL, NULL, &n), RAG_EINVAL);
    assert_int_equal(r->search_lexical(r->self, NULL, 5, 3, NULL, hits, &n), RAG_EINVAL);
    /* ill-formed UTF-8 in a query is repaired, not fatal */
    assert_int_equal(lsearch(c, "apple \xff\xfe", 8, NULL, hits), 1);
}

static void test_bm25_params(void **state)
{
    (void)state;
    tctx *c = ctx_new(1.2f, 0.75f); /* configurable through rag_options version 3 */
    bm25_corpus(c);
    rag_index_hit hits[8];
    assert_int_equal(lsearch(c, "apple cherry", 8, NULL, hits), 3);
    close_to(hits[0].score, 1.3486402228911236);
    close_to(hits[1].score, 0.6893386562270789);
    close_to(hits[2].score, 0.5442147286003255);
    teardown((void **)&c);
}

typedef struct tokens {
    size_t n;
    char t[32][65];
} tokens;

static void analyze(tctx *c, const char *text, tokens *out)
{
    ix_terms t;
    memset(&t, 0, sizeof t);
    OK(rag_index__terms_analyze(&c->ix->stemmers, &t, text, strlen(text)));
    out->n = 0;
    for (size_t i = 0; i < t.n && i < 32; i++) {
        snprintf(out->t[i], sizeof out->t[i], "%.*s", (int)t.t[i].len, t.buf + t.t[i].off);
        out->n++;
    }
    assert_int_equal(t.length, t.n);
    rag_index__terms_free(&t);
}

static void test_analysis(void **state)
{
    tctx *c = *state;
    tokens tk;
    /* Porter2 stems, stopwords gone, NFKC casefold (full-width letters, case) */
    analyze(c, "The runners were running; she runs.", &tk);
    assert_int_equal(tk.n, 3);
    assert_string_equal(tk.t[0], "runner");
    assert_string_equal(tk.t[1], "run");
    assert_string_equal(tk.t[2], "run");
    analyze(c, "ＲＵＮＮＩＮＧ Ｃｅｌｌｓ", &tk);
    assert_int_equal(tk.n, 2);
    assert_string_equal(tk.t[0], "run");
    assert_string_equal(tk.t[1], "cell");
    analyze(c, "the of and is a", &tk);
    assert_int_equal(tk.n, 0);

    /* a finished list: sorted, unique, tf; its row */
    ix_terms t;
    memset(&t, 0, sizeof t);
    OK(rag_index__terms_analyze(&c->ix->stemmers, &t, "cells cell Cell the protein", 27));
    OK(rag_index__terms_finish(&t));
    assert_int_equal(t.length, 4);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.t[0].tf, 3);
    assert_memory_equal(t.buf + t.t[0].off, "cell", 4);
    assert_int_equal(t.t[1].tf, 1);
    rag_index__terms_free(&t);

    /* through the index: stems match across forms, stopwords never match, full-width and
     * case fold, title terms match every chunk of the document */
    const char *texts[] = {"The athletes were running fast.", "Nothing to see here at all."};
    put_doc(c, "race", 1, NULL, 0, "Marathon Results", texts, 2);
    put1(c, "wide", 1, "ＦＡＳＴ ｆｏｘｅｓ Jumping");
    put1(c, "stop", 1, "the and of");
    drain_all(c);
    rag_index_hit hits[8];
    size_t n = lsearch(c, "runs", 8, NULL, hits);
    assert_int_equal(n, 1);
    assert_true(has_hit(hits, n, "race", 1, 0));
    n = lsearch(c, "marathon", 8, NULL, hits); /* title: both chunks */
    assert_int_equal(n, 2);
    assert_true(has_hit(hits, n, "race", 1, 0) && has_hit(hits, n, "race", 1, 1));
    n = lsearch(c, "RESULT", 8, NULL, hits);
    assert_int_equal(n, 2);
    n = lsearch(c, "fast fox", 8, NULL, hits);
    assert_int_equal(n, 2);
    assert_string_equal(hits[0].doc_id, "wide"); /* both terms */
    assert_true(has_hit(hits, n, "race", 1, 0));
    n = lsearch(c, "ｊｕｍｐｓ", 8, NULL, hits);
    assert_int_equal(n, 1);
    assert_string_equal(hits[0].doc_id, "wide");
    assert_int_equal(lsearch(c, "the", 8, NULL, hits), 0);
    /* the stopword-only chunk is a document of length 0 all the same */
    assert_int_equal(c->ix->lex.live, 4);
}

static void test_update_delete_revert(void **state)
{
    tctx *c = *state;
    const char *v1[] = {"alpha shared", "alpha gamma shared"};
    const char *v2[] = {"beta shared"};
    put_doc(c, "doc", 1, NULL, 0, "", v1, 2);
    put1(c, "keep", 1, "shared keeper");
    drain_all(c);
    assert_int_equal(doc_hits(c, "alpha", "doc", 1), 2);
    assert_int_equal(doc_hits(c, "shared", "doc", 1), 2);
    put_doc(c, "doc", 2, NULL, 0, "", v2, 1);
    drain_all(c);
    assert_int_equal(doc_hits(c, "alpha", "doc", 2), 0); /* old terms are gone */
    assert_int_equal(doc_hits(c, "gamma", "doc", 2), 0);
    assert_int_equal(doc_hits(c, "beta", "doc", 2), 1);
    assert_int_equal(doc_hits(c, "shared", "doc", 2), 1); /* and never both versions */
    assert_int_equal(c->ix->lex.live, 2);
    /* a late copy of v1 adds nothing */
    put_doc(c, "doc", 1, NULL, 0, "", v1, 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "alpha", "doc", 2), 0);

    /* delete */
    put_deleted(c, "doc", 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "beta", "doc", 0), 0);
    assert_int_equal(doc_hits(c, "shared", "doc", 0), 0);
    assert_int_equal(doc_hits(c, "shared", "keep", 1), 1);
    assert_int_equal(c->ix->lex.live, 1);

    /* revert removes stray labels of a non-active version from the lexical side too: make
     * one of the labels claim version 7 (as a row listing two versions would) */
    const char *v3[] = {"delta one", "epsilon two", "zeta three"};
    put_doc(c, "doc", 3, NULL, 0, "", v3, 3);
    drain_all(c);
    ix_docrec d;
    MDB_env *env = rag_index_env(c->ix);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(rag_index__doc_get(c->ix, txn, "doc", &d));
    assert_int_equal(d.n, 3);
    int64_t victim = -1;
    for (size_t i = 0; i < d.n; i++) {
        uint8_t key[8];
        rag_be64_put(key, (uint64_t)d.labels[i]);
        MDB_val k = {8, key}, v;
        assert_int_equal(mdb_get(txn, c->ix->labels, &k, &v), 0);
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        rag_rbuf_u64(&r);
        if (rag_rbuf_u32(&r) != 1)
            continue;
        victim = d.labels[i];
        uint8_t *row = malloc(v.mv_size);
        memcpy(row, v.mv_data, v.mv_size);
        uint64_t seven = 7;
        memcpy(row, &seven, 8);
        MDB_val nv = {v.mv_size, row};
        assert_int_equal(mdb_put(txn, c->ix->labels, &k, &nv, 0), 0);
        free(row);
    }
    rag_index__doc_clear(&d);
    assert_int_equal(mdb_txn_commit(txn), 0);
    assert_true(victim >= 0);
    rag_index_hit hits[8];
    assert_int_equal(lsearch(c, "epsilon", 8, NULL, hits), 1);
    put_revert(c, "doc", 7);
    drain_all(c);
    assert_int_equal(lsearch(c, "epsilon", 8, NULL, hits), 0);
    assert_int_equal(lsearch(c, "delta zeta", 8, NULL, hits), 2);
    assert_int_equal(c->ix->lex.live, 3);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)victim);
    MDB_val k = {8, key}, v;
    assert_int_equal(mdb_get(txn, c->ix->lex_dbi, &k, &v), MDB_NOTFOUND);
    mdb_txn_abort(txn);
    uint64_t found = 9;
    OK(rag_index_check(c->ix, 0, NULL, NULL, &found));
    assert_int_equal(found, 0);
}

/* Postings of removed labels are compacted away once they outnumber half the live ones. */
static void test_compaction(void **state)
{
    tctx *c = *state;
    for (uint64_t v = 1; v <= 30; v++) {
        const char *texts[] = {"common word here", "common other text"};
        put_doc(c, "churn", v, NULL, 0, "", texts, 2);
        put1(c, v % 2 ? "odd" : "even", v, "common");
        drain_all(c);
    }
    rag_index_hit hits[8];
    assert_int_equal(lsearch(c, "common", 8, NULL, hits), 4);
    int64_t tid = -1;
    for (size_t i = 0; i < c->ix->lex.n_terms; i++)
        if (strcmp(c->ix->lex.terms[i].term, "common") == 0)
            tid = (int64_t)i;
    assert_true(tid >= 0);
    const ix_lterm *t = &c->ix->lex.terms[tid];
    assert_int_equal(t->df, 4);
    assert_true(t->n <= 4 + 4 / 2); /* dead <= live / 2 */
}

/* Readers during a stream of version switches see exactly one version of the document on the
 * lexical side, with all of its chunks. */
typedef struct reader_arg {
    tctx *c;
    int stop;
    int bad, searches;
} reader_arg;

static void *reader_thread(void *p)
{
    reader_arg *a = p;
    const rag_index_reader *r = rag_index_reader_get(a->c->ix);
    const char *q = "shared hotword";
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        rag_index_hit hits[16];
        size_t n = 0;
        if (r->search_lexical(r->self, q, strlen(q), 16, NULL, hits, &n) != RAG_OK) {
            __atomic_add_fetch(&a->bad, 1, __ATOMIC_RELAXED);
            continue;
        }
        uint64_t v = 0;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(hits[i].doc_id, "hot") != 0)
                continue;
            if (v && hits[i].version != v)
                __atomic_add_fetch(&a->bad, 1, __ATOMIC_RELAXED); /* two versions at once */
            v = hits[i].version;
            m++;
        }
        if (m != 4 || n != 6)
            __atomic_add_fetch(&a->bad, 1, __ATOMIC_RELAXED); /* a gap or a duplicate */
        __atomic_add_fetch(&a->searches, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_concurrent_switch(void **state)
{
    tctx *c = *state;
    const char *hot[] = {"hotword one shared", "hotword two", "hotword three", "hotword four"};
    const char *cold[] = {"shared cold", "shared colder"};
    put_doc(c, "hot", 1, NULL, 0, "", hot, 4);
    put_doc(c, "cold", 1, NULL, 0, "", cold, 2);
    drain_all(c);
    reader_arg a = {c, 0, 0, 0};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader_thread, &a), 0);
    for (uint64_t v = 2; v <= 40; v++) {
        put_doc(c, "hot", v, NULL, 0, "", hot, 4);
        if (v % 7 == 0)
            OK(rag_index_snapshot(c->ix));
        drain_all(c);
    }
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(a.bad, 0);
    assert_true(a.searches > 0);
    assert_int_equal(doc_hits(c, "hotword", "hot", 40), 4);
}

/* 1000 labels, a principal allowed on 1% of them, those scoring lowest: k = 10 still gives
 * ten, all allowed; more than exist gives all of them. */
static void test_acl_inside(void **state)
{
    tctx *c = *state;
    const char *mine[] = {"me"}, *theirs[] = {"them"};
    char doc[32], text[256];
    for (int i = 0; i < 1000; i++) {
        int allowed = i % 100 == 7;
        snprintf(doc, sizeof doc, "d%04d", i);
        /* allowed ones are long (length normalisation ranks them low), the rest short */
        if (allowed)
            snprintf(text, sizeof text, "needle padding filler words more filler words and "
                                        "still more words stretching it long %d", i);
        else
            snprintf(text, sizeof text, "needle needle %d", i);
        const char *t = text;
        put_doc(c, doc, 1, allowed ? mine : theirs, 1, "", &t, 1);
    }
    put1(c, "public", 1, "needle in a long public haystack of many many words indeed");
    drain_all(c);
    rag_index_hit hits[64];
    const char *p_me[] = {"me"};
    rag_acl_filter f = {0, p_me, 1}, all = {1, NULL, 0}, nobody = {0, NULL, 0};
    size_t n = lsearch(c, "needle", 10, &all, hits);
    assert_int_equal(n, 10);
    for (size_t i = 0; i < n; i++) /* unfiltered, the allowed ones are not near the top */
        assert_true(atoi(hits[i].doc_id + 1) % 100 != 7);
    n = lsearch(c, "needle", 10, &f, hits);
    assert_int_equal(n, 10);
    for (size_t i = 0; i < n; i++)
        assert_true(strcmp(hits[i].doc_id, "public") == 0 ||
                    atoi(hits[i].doc_id + 1) % 100 == 7);
    n = lsearch(c, "needle", 64, &f, hits);
    assert_int_equal(n, 11); /* ten allowed + the public one */
    n = lsearch(c, "needle", 64, &nobody, hits);
    assert_int_equal(n, 1);
    assert_string_equal(hits[0].doc_id, "public");
}

/* Results of a fixed query set, to compare before and after a reopen. */
#define NQ 6
static const char *queries[NQ] = {"alpha", "beta gamma", "delta", "title word", "shared",
                                  "epsilon zeta eta"};

typedef struct results {
    size_t n[NQ];
    rag_index_hit h[NQ][16];
} results;

static void take(tctx *c, results *r)
{
    const char *p[] = {"g1"};
    rag_acl_filter f = {0, p, 1};
    for (int i = 0; i < NQ; i++)
        r->n[i] = lsearch(c, queries[i], 16, (i & 1) ? &f : NULL, r->h[i]);
}

static void same(const results *a, const results *b)
{
    for (int i = 0; i < NQ; i++) {
        assert_int_equal(a->n[i], b->n[i]);
        for (size_t j = 0; j < a->n[i]; j++) {
            assert_string_equal(a->h[i][j].doc_id, b->h[i][j].doc_id);
            assert_int_equal(a->h[i][j].version, b->h[i][j].version);
            assert_int_equal(a->h[i][j].chunk_no, b->h[i][j].chunk_no);
            assert_true(a->h[i][j].score == b->h[i][j].score); /* bit for bit */
        }
    }
}

static void test_rebuild(void **state)
{
    tctx *c = *state;
    const char *g1[] = {"g1"};
    const char *words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"};
    for (int d = 0; d < 20; d++) {
        char doc[16], t0[128], t1[128];
        snprintf(doc, sizeof doc, "r%d", d);
        snprintf(t0, sizeof t0, "%s %s shared %s", words[d % 7], words[(d * 3) % 7],
                 words[(d + 2) % 7]);
        snprintf(t1, sizeof t1, "%s and more %s", words[(d * 5) % 7], words[d % 7]);
        const char *texts[] = {t0, t1};
        put_doc(c, doc, 1, d % 3 ? g1 : NULL, d % 3 ? 1 : 0, d % 2 ? "Title Word" : "",
                texts, 2);
    }
    drain_all(c);
    /* some churn, so that dead postings exist */
    const char *upd[] = {"alpha beta beta"};
    put_doc(c, "r4", 2, NULL, 0, "", upd, 1);
    put_deleted(c, "r5", 1);
    drain_all(c);
    results before, after;
    take(c, &before);
    assert_true(before.n[0] > 0 && before.n[4] > 0);

    rag_index__close_nosnap(c->ix); /* crash */
    t_open(c);
    take(c, &after);
    same(&before, &after);

    rag_index_close(c->ix); /* clean close, snapshot */
    t_open(c);
    take(c, &after);
    same(&before, &after);
    assert_int_equal(c->ix->lex.live, c->ix->mem.live);
}

/* Committed is not applied: rag_index_applied says 1 only once searches show the change. */
static void test_applied(void **state)
{
    tctx *c = *state;
    rag_consumer *ce = rag_index_consumer_embedded(c->ix);
    rag_consumer *cd = rag_index_consumer_deleted(c->ix);
    MDB_env *env = rag_index_env(c->ix);
    int applied = 7;
    OK(rag_index_applied(c->ix, "doc", 1, &applied));
    assert_int_equal(applied, 0); /* unknown */
    assert_int_equal(rag_index_applied(c->ix, "doc", 0, &applied), RAG_EINVAL);
    assert_int_equal(rag_index_applied(c->ix, NULL, 1, &applied), RAG_EINVAL);

    rag_wbuf w1, w2, wd;
    const char *t1 = "first words", *t2 = "second words";
    encode_doc(&w1, "doc", 1, NULL, 0, "", &t1, 1);
    encode_doc(&w2, "doc", 2, NULL, 0, "", &t2, 1);
    rag_ev_deleted del = {.doc_id = "doc", .version = 2};
    rag_wbuf_init(&wd);
    OK(rag_ev_deleted_encode(&del, &wd));
    rag_queue_message m1 = {RAG_TOPIC_EMBEDDED, "a-1", w1.data, w1.len, 1, 0};
    rag_queue_message m2 = {RAG_TOPIC_EMBEDDED, "a-2", w2.data, w2.len, 1, 0};
    rag_queue_message md = {RAG_TOPIC_DELETED, "a-3", wd.data, wd.len, 1, 0};
    rag_index_hit hits[4];

    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(ce->handle(ce->self, txn, &m1));
    assert_int_equal(mdb_txn_commit(txn), 0);
    OK(rag_index_applied(c->ix, "doc", 1, &applied));
    assert_int_equal(applied, 0); /* committed, not applied */
    assert_int_equal(lsearch(c, "first", 4, NULL, hits), 0);
    ce->end_batch(ce->self, 1);
    OK(rag_index_applied(c->ix, "doc", 1, &applied));
    assert_int_equal(applied, 1);
    assert_int_equal(lsearch(c, "first", 4, NULL, hits), 1);
    OK(rag_index_applied(c->ix, "doc", 2, &applied));
    assert_int_equal(applied, 0); /* not there yet */

    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(ce->handle(ce->self, txn, &m2));
    assert_int_equal(mdb_txn_commit(txn), 0);
    OK(rag_index_applied(c->ix, "doc", 1, &applied));
    assert_int_equal(applied, 0); /* the row moved on to v2, which is not applied yet */
    ce->end_batch(ce->self, 1);
    OK(rag_index_applied(c->ix, "doc", 1, &applied));
    assert_int_equal(applied, 1); /* older versions are covered by the newer one */
    OK(rag_index_applied(c->ix, "doc", 2, &applied));
    assert_int_equal(applied, 1);
    assert_int_equal(lsearch(c, "second", 4, NULL, hits), 1);

    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(cd->handle(cd->self, txn, &md));
    assert_int_equal(mdb_txn_commit(txn), 0);
    OK(rag_index_applied(c->ix, "doc", 2, &applied));
    assert_int_equal(applied, 0);
    assert_int_equal(lsearch(c, "second", 4, NULL, hits), 1); /* still visible */
    cd->end_batch(cd->self, 1);
    OK(rag_index_applied(c->ix, "doc", 2, &applied));
    assert_int_equal(applied, 1); /* the delete covering v2 is applied */
    assert_int_equal(lsearch(c, "second", 4, NULL, hits), 0);
    OK(rag_index_applied(c->ix, "doc", 3, &applied));
    assert_int_equal(applied, 0);

    /* after a reopen every committed change is applied */
    put1(c, "other", 5, "words");
    drain_all(c);
    rag_index__close_nosnap(c->ix);
    t_open(c);
    OK(rag_index_applied(c->ix, "other", 5, &applied));
    assert_int_equal(applied, 1);
    OK(rag_index_applied(c->ix, "doc", 2, &applied));
    assert_int_equal(applied, 1);
    rag_wbuf_free(&w1);
    rag_wbuf_free(&w2);
    rag_wbuf_free(&wd);
}

typedef struct problems {
    size_t n, missing, unreferenced;
} problems;

static int on_problem(void *arg, const rag_index_problem *p)
{
    problems *ps = arg;
    ps->n++;
    if (strcmp(p->what, "missing_lexical") == 0)
        ps->missing++;
    if (strcmp(p->what, "unreferenced_lexical") == 0)
        ps->unreferenced++;
    return 0;
}

static void test_check_lexical(void **state)
{
    tctx *c = *state;
    const char *texts[] = {"apple one", "apple two", "apple three"};
    put_doc(c, "a", 1, NULL, 0, "", texts, 3);
    put1(c, "b", 1, "apple banana");
    drain_all(c);
    ix_docrec d;
    MDB_env *env = rag_index_env(c->ix);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(rag_index__doc_get(c->ix, txn, "a", &d));
    int64_t gone = d.labels[1];
    rag_index__doc_clear(&d);
    /* a's chunk 1 loses its lex row; a lex row of no label appears */
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)gone);
    MDB_val k = {8, key};
    assert_int_equal(mdb_del(txn, c->ix->lex_dbi, &k, NULL), 0);
    uint8_t okey[8];
    rag_be64_put(okey, 4242);
    uint8_t row[8] = {0};
    MDB_val ok = {8, okey}, ov = {8, row};
    assert_int_equal(mdb_put(txn, c->ix->lex_dbi, &ok, &ov, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);

    problems ps = {0, 0, 0};
    uint64_t found = 0;
    OK(rag_index_check(c->ix, 0, on_problem, &ps, &found));
    assert_int_equal(found, 2);
    assert_int_equal(ps.missing, 1);
    assert_int_equal(ps.unreferenced, 1);
    rag_index_hit hits[8];
    assert_int_equal(lsearch(c, "apple", 8, NULL, hits), 4); /* a check changes nothing */

    memset(&ps, 0, sizeof ps);
    OK(rag_index_check(c->ix, 1, on_problem, &ps, &found));
    assert_int_equal(found, 2);
    /* the label without terms is removed from both sides */
    assert_int_equal(lsearch(c, "apple", 8, NULL, hits), 3);
    assert_false(has_hit(hits, 3, "a", 1, 1));
    assert_int_equal(c->ix->lex.live, 3);
    assert_int_equal(c->ix->mem.live, 3);
    OK(rag_index_check(c->ix, 0, NULL, NULL, &found));
    assert_int_equal(found, 0);

    /* the lexical index losing a label behind the index's back is a view mismatch, and a
     * repair rebuilds it */
    int64_t b0;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    OK(rag_index__doc_get(c->ix, txn, "b", &d));
    b0 = d.labels[0];
    rag_index__doc_clear(&d);
    mdb_txn_abort(txn);
    rag_index__lex_kill(&c->ix->lex, b0);
    assert_int_equal(lsearch(c, "banana", 8, NULL, hits), 0);
    memset(&ps, 0, sizeof ps);
    OK(rag_index_check(c->ix, 1, on_problem, &ps, &found));
    assert_int_equal(found, 1);
    assert_int_equal(lsearch(c, "banana", 8, NULL, hits), 1);
    OK(rag_index_check(c->ix, 0, NULL, NULL, &found));
    assert_int_equal(found, 0);
}

/* ---- SciFact ------------------------------------------------------------------------------ */

typedef struct qrel {
    char q[32], doc[32];
} qrel;

/* Split an abstract at sentence ends near 800 bytes, like ingest's chunker would. */
static size_t split_chunks(const char *text, char **out, size_t max)
{
    size_t n = 0, len = strlen(text), start = 0;
    while (start < len && n < max) {
        size_t end = len;
        if (len - start > 1000) {
            end = start + 800;
            while (end < len && !(text[end - 1] == '.' && text[end] == ' '))
                end++;
        }
        out[n++] = rag_strndup(text + start, end - start);
        start = end;
        while (start < len && text[start] == ' ')
            start++;
    }
    return n;
}

static void test_scifact(void **state)
{
    tctx *c = *state;
    char *docs_path = rag_test_data_path("scifact/docs.jsonl");
    char *q_path = rag_test_data_path("scifact/queries.jsonl");
    char *r_path = rag_test_data_path("scifact/qrels.tsv");
    if (!docs_path || !q_path || !r_path) {
        free(docs_path);
        free(q_path);
        free(r_path);
        skip();
    }
    FILE *f = fopen(docs_path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0, n_docs = 0, n_chunks = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        assert_non_null(o);
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *title = json_string_value(json_object_get(o, "title"));
        const char *text = json_string_value(json_object_get(o, "text"));
        char *chunks[64];
        size_t nc = split_chunks(text ? text : "", chunks, 64);
        if (nc == 0)
            chunks[nc++] = rag_strdup("");
        put_doc(c, id, 1, NULL, 0, title ? title : "", (const char *const *)chunks, nc);
        for (size_t i = 0; i < nc; i++)
            free(chunks[i]);
        n_chunks += nc;
        n_docs++;
        json_decref(o);
        if (n_docs % 1000 == 0)
            drain_all(c);
    }
    fclose(f);
    drain_all(c);
    assert_int_equal(c->ix->lex.live, n_chunks);

    /* qrels */
    size_t n_rel = 0, rel_cap = 2048;
    qrel *rels = malloc(rel_cap * sizeof *rels);
    f = fopen(r_path, "r");
    assert_non_null(f);
    while (getline(&line, &cap, f) > 0) {
        qrel r;
        int score = 0;
        if (sscanf(line, "%31s %31s %d", r.q, r.doc, &score) != 3 || score <= 0)
            continue; /* header */
        if (n_rel == rel_cap)
            rels = realloc(rels, (rel_cap *= 2) * sizeof *rels);
        rels[n_rel++] = r;
    }
    fclose(f);

    f = fopen(q_path, "r");
    assert_non_null(f);
    const rag_index_reader *rd = rag_index_reader_get(c->ix);
    double ndcg_sum = 0;
    size_t n_q = 0;
    uint64_t *lat = malloc(1024 * sizeof *lat);
    enum { K = 100 };
    rag_index_hit hits[K];
    while (getline(&line, &cap, f) > 0 && n_q < 1024) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        assert_non_null(o);
        const char *qid = json_string_value(json_object_get(o, "id"));
        const char *qt = json_string_value(json_object_get(o, "text"));
        size_t nrel_q = 0;
        for (size_t i = 0; i < n_rel; i++)
            nrel_q += strcmp(rels[i].q, qid) == 0;
        if (!nrel_q) {
            json_decref(o);
            continue;
        }
        size_t n = 0;
        uint64_t t0 = rag_mono_us();
        OK(rd->search_lexical(rd->self, qt, strlen(qt), K, NULL, hits, &n));
        lat[n_q] = rag_mono_us() - t0;
        /* documents by their best chunk, first ten */
        const char *ranked[10];
        size_t nr = 0;
        for (size_t i = 0; i < n && nr < 10; i++) {
            int dup = 0;
            for (size_t j = 0; j < nr; j++)
                dup |= strcmp(ranked[j], hits[i].doc_id) == 0;
            if (!dup)
                ranked[nr++] = hits[i].doc_id;
        }
        double dcg = 0, idcg = 0;
        for (size_t i = 0; i < nr; i++)
            for (size_t j = 0; j < n_rel; j++)
                if (strcmp(rels[j].q, qid) == 0 && strcmp(rels[j].doc, ranked[i]) == 0) {
                    dcg += 1.0 / log2((double)i + 2);
                    break;
                }
        for (size_t i = 0; i < nrel_q && i < 10; i++)
            idcg += 1.0 / log2((double)i + 2);
        ndcg_sum += dcg / idcg;
        n_q++;
        json_decref(o);
    }
    fclose(f);
    free(line);

    /* a crash and a reopen rebuild the same lexical index: same results, bit for bit */
    rag_index_hit again[K];
    const char *probe[] = {"cancer cells", "vitamin D deficiency", "gene expression in mice"};
    rag_index_hit first[3][K];
    size_t nfirst[3];
    for (int i = 0; i < 3; i++)
        OK(rd->search_lexical(rd->self, probe[i], strlen(probe[i]), K, NULL, first[i],
                              &nfirst[i]));
    rag_index__close_nosnap(c->ix);
    uint64_t t_open0 = rag_mono_us();
    t_open(c);
    uint64_t open_us = rag_mono_us() - t_open0;
    rd = rag_index_reader_get(c->ix);
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        OK(rd->search_lexical(rd->self, probe[i], strlen(probe[i]), K, NULL, again, &n));
        assert_int_equal(n, nfirst[i]);
        assert_true(n > 0);
        for (size_t j = 0; j < n; j++) {
            assert_string_equal(again[j].doc_id, first[i][j].doc_id);
            assert_int_equal(again[j].chunk_no, first[i][j].chunk_no);
            assert_true(again[j].score == first[i][j].score);
        }
    }
    print_message("scifact: reopen after a crash (view, lexical index, backend) %llu ms\n",
                  (unsigned long long)(open_us / 1000));

    for (size_t i = 1; i < n_q; i++) /* insertion sort of the latencies */
        for (size_t j = i; j > 0 && lat[j - 1] > lat[j]; j--) {
            uint64_t t = lat[j];
            lat[j] = lat[j - 1];
            lat[j - 1] = t;
        }
    double ndcg = ndcg_sum / (double)n_q;
    uint64_t p50 = lat[n_q / 2], p99 = lat[n_q * 99 / 100];
    print_message("scifact: %zu docs, %zu chunks, %zu terms; %zu queries: nDCG@10 %.4f, "
                  "search_lexical k=%d p50 %llu us, p99 %llu us\n",
                  n_docs, n_chunks, c->ix->lex.n_terms, n_q, ndcg, K,
                  (unsigned long long)p50, (unsigned long long)p99);
    assert_int_equal(n_q, 300);
    /* Anserini's BM25 on SciFact (whole abstracts, title + text) is 0.665 */
    assert_true(ndcg > 0.62);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__OPTIMIZE_SIZE__)
#if defined(__OPTIMIZE__)
    assert_true(p50 < 1000);
#endif
#endif
    free(lat);
    free(rels);
    free(docs_path);
    free(q_path);
    free(r_path);
}

/* ---- issue 9: stem cache and term_sort -------------------------------------------------- */

static uint64_t lx_rng(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* A term list as the analysis leaves it (text order, unfinished), copied out. */
typedef struct term_seq {
    size_t n, cap;
    char **t;
    size_t *len;
} term_seq;

static void seq_push(term_seq *q, const char *s, size_t len)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 64;
        q->t = realloc(q->t, q->cap * sizeof *q->t);
        q->len = realloc(q->len, q->cap * sizeof *q->len);
        assert_non_null(q->t);
        assert_non_null(q->len);
    }
    q->t[q->n] = malloc(len + 1);
    assert_non_null(q->t[q->n]);
    memcpy(q->t[q->n], s, len);
    q->t[q->n][len] = 0;
    q->len[q->n++] = len;
}

static void seq_free(term_seq *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->t[i]);
    free(q->t);
    free(q->len);
    memset(q, 0, sizeof *q);
}

/* The analysis without any cache: NFKC casefold, tokenize without stopwords, and a Snowball
 * stemmer of its own for every token (what lexical.c did before the cache). */
typedef struct ref_ctx {
    struct sb_stemmer *sb;
    term_seq *q;
} ref_ctx;

static int ref_on_token(void *arg, const char *tok, size_t len)
{
    ref_ctx *r = arg;
    const sb_symbol *s = sb_stemmer_stem(r->sb, (const sb_symbol *)tok, (int)len);
    assert_non_null(s);
    int sl = sb_stemmer_length(r->sb);
    if (sl <= 0)
        seq_push(r->q, tok, len);
    else
        seq_push(r->q, (const char *)s, (size_t)sl);
    return 0;
}

static void ref_analyze(const char *text, term_seq *out)
{
    char *f = NULL;
    size_t fl = 0;
    OK(rag_utf8_nfkc_casefold(text, strlen(text), &f, &fl));
    ref_ctx r = {sb_stemmer_new("english", "UTF_8"), out};
    assert_non_null(r.sb);
    OK(rag_tokenize(f, fl, 1, ref_on_token, &r));
    sb_stemmer_delete(r.sb);
    free(f);
}

static void pool_analyze(ix_stemmers *pool, const char *text, term_seq *out)
{
    ix_terms t;
    memset(&t, 0, sizeof t);
    OK(rag_index__terms_analyze(pool, &t, text, strlen(text)));
    assert_int_equal(t.length, t.n);
    for (size_t i = 0; i < t.n; i++)
        seq_push(out, t.buf + t.t[i].off, t.t[i].len);
    rag_index__terms_free(&t);
}

static void seq_same(const char *what, const char *text, const term_seq *a, const term_seq *b)
{
    if (a->n != b->n)
        fail_msg("%s: %zu terms vs %zu for \"%.200s\"", what, a->n, b->n, text);
    for (size_t i = 0; i < a->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->t[i], b->t[i], a->len[i]) != 0)
            fail_msg("%s: term %zu is \"%s\", want \"%s\" (text \"%.200s\")", what, i, a->t[i],
                     b->t[i], text);
}

/* Analyse `text` with `pool` and compare with the cache-free reference. */
static void check_analysis(ix_stemmers *pool, const char *text)
{
    term_seq got = {0}, want = {0};
    pool_analyze(pool, text, &got);
    ref_analyze(text, &want);
    seq_same("cached analysis vs reference", text, &got, &want);
    seq_free(&got);
    seq_free(&want);
}

static const char *const lx_suffixes[] = {"",     "s",    "es",     "ed",      "ing",  "ly",
                                          "ness", "ies",  "ation",  "ational", "izing", "y",
                                          "ful",  "ment", "ousness", "ically", "\xC3\xA9", "ers"};

/* A word made unique by `id` (4 letters), with a random middle and an English suffix; some
 * carry é, ß or capitals, which the casefold changes before stemming. */
static size_t lx_word(uint64_t *seed, unsigned id, char *out, size_t max_mid)
{
    size_t n = 0;
    for (int d = 0; d < 4; d++) {
        out[n++] = (char)('a' + id % 26);
        id /= 26;
    }
    size_t mid = lx_rng(seed) % (max_mid + 1);
    for (size_t i = 0; i < mid; i++) {
        uint64_t r = lx_rng(seed) % 60;
        if (r == 0) {
            memcpy(out + n, "\xC3\x9F", 2); /* ß -> ss */
            n += 2;
        } else if (r == 1) {
            out[n++] = (char)('A' + lx_rng(seed) % 26);
        } else {
            out[n++] = "aeiouaeiourstlnmcdpbgh"[lx_rng(seed) % 22];
        }
    }
    const char *suf = lx_suffixes[lx_rng(seed) % (sizeof lx_suffixes / sizeof lx_suffixes[0])];
    memcpy(out + n, suf, strlen(suf));
    n += strlen(suf);
    out[n] = 0;
    return n;
}

/* Same text, same pool, three times: identical terms, equal to the reference; then 20,000
 * distinct words (4096 direct-mapped slots: most of them collide and evict) and a Zipf-like
 * stream over a vocabulary (hits after evictions), every analysis checked against the
 * reference; then the first text again. */
static void test_stem_cache(void **state)
{
    tctx *c = *state;
    ix_stemmers *pool = &c->ix->stemmers;
    const char *first = "The runners were running; she runs. Connections connected, "
                        "CONNECTING connectivity. Generalizations generally generate "
                        "relational relativity. Caf\xC3\xA9s stra\xC3\x9F" "e STRASSE.";
    term_seq r1 = {0}, r2 = {0}, r3 = {0}, ref = {0};
    pool_analyze(pool, first, &r1);
    pool_analyze(pool, first, &r2);
    pool_analyze(pool, first, &r3);
    ref_analyze(first, &ref);
    assert_int_equal(ref.n, 15);
    seq_same("first pass", first, &r1, &ref);
    seq_same("second pass (cache hits)", first, &r2, &ref);
    seq_same("third pass", first, &r3, &ref);

    uint64_t seed = 0x5EEDULL;
    enum { WORDS = 20000, PER_TEXT = 100 };
    char *text = malloc(PER_TEXT * 80);
    assert_non_null(text);
    char (*vocab)[80] = malloc(8000 * sizeof *vocab);
    assert_non_null(vocab);
    for (unsigned w = 0; w < WORDS;) {
        size_t tl = 0;
        for (int i = 0; i < PER_TEXT && w < WORDS; i++, w++) {
            char word[80];
            size_t l = lx_word(&seed, w, word, 12);
            if (w < 8000)
                memcpy(vocab[w], word, l + 1);
            memcpy(text + tl, word, l);
            tl += l;
            text[tl++] = ' ';
        }
        text[tl] = 0;
        check_analysis(pool, text);
    }
    for (int round = 0; round < 300; round++) {
        size_t tl = 0;
        for (int i = 0; i < PER_TEXT; i++) {
            double u = (double)(lx_rng(&seed) % 1000000) / 1000000.0;
            size_t idx = (size_t)(8000.0 * u * u * u);
            size_t l = strlen(vocab[idx]);
            memcpy(text + tl, vocab[idx], l);
            tl += l;
            text[tl++] = (i % 7 == 6) ? '.' : ' ';
        }
        text[tl] = 0;
        check_analysis(pool, text);
    }
    term_seq again = {0};
    pool_analyze(pool, first, &again);
    seq_same("first text after 20,000 words", first, &again, &ref);
    seq_free(&again);
    free(vocab);
    free(text);
    seq_free(&r1);
    seq_free(&r2);
    seq_free(&r3);
    seq_free(&ref);
}

/* Words around the cache's 30-byte slot limit (and far beyond it) stem as with a fresh pool
 * and as Snowball itself, whether seen once or many times. */
static void test_stem_cache_long_words(void **state)
{
    tctx *c = *state;
    const char *words[] = {
        "antidisestablishmentarianism",                 /* 28 */
        "antidisestablishmentarianisms",                /* 29 */
        "antidisestablishmentarianismes",               /* 30 */
        "antidisestablishmentarianistic",               /* 30 */
        "antidisestablishmentarianistics",              /* 31 */
        "antidisestablishmentarianizations",            /* 33 */
        "pneumonoultramicroscopicsilicovolcanoconiosis", /* 45 */
        "internationalizationalizationalizationalizing", /* 45 */
        "supercalifragilisticexpialidocious",            /* 34 */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaing",
        "caf\xC3\xA9" "caf\xC3\xA9" "caf\xC3\xA9" "caf\xC3\xA9" "caf\xC3\xA9" "cafes", /* 30 */
        "caf\xC3\xA9" "caf\xC3\xA9" "caf\xC3\xA9" "caf\xC3\xA9" "caf\xC3\xA9" "cafess",
        "stra\xC3\x9F" "enbahnverwaltungsgesellschaften", /* ß folds to ss: 40 bytes */
    };
    ix_stemmers fresh;
    OK(rag_index__stemmers_init(&fresh));
    char text[2048];
    size_t tl = 0;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%s ", words[i]);
        /* a prefix of each word, which shares its hash slot with nothing in particular */
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%.29s ", words[i]);
    }
    for (int pass = 0; pass < 3; pass++) {
        term_seq got = {0}, fr = {0};
        pool_analyze(&c->ix->stemmers, text, &got);
        ix_stemmers once;
        OK(rag_index__stemmers_init(&once));
        pool_analyze(&once, text, &fr);
        rag_index__stemmers_free(&once);
        seq_same("long words vs a fresh pool", text, &got, &fr);
        check_analysis(&c->ix->stemmers, text);
        check_analysis(&fresh, text);
        seq_free(&got);
        seq_free(&fr);
    }
    /* Each word alone, repeated in one text: the cache (or its absence) answers each time. */
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        snprintf(text, sizeof text, "%s %s, %s. %s", words[i], words[i], words[i], words[i]);
        check_analysis(&c->ix->stemmers, text);
    }
    rag_index__stemmers_free(&fresh);
}

/* memcmp, then the shorter first: the order term lists are stored and merged in. */
static int ref_term_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return (al > bl) - (al < bl);
}

typedef struct ref_term {
    const char *s;
    size_t len;
    uint64_t tf;
} ref_term;

static int ref_term_qsort(const void *x, const void *y)
{
    const ref_term *a = x, *b = y;
    return ref_term_cmp(a->s, a->len, b->s, b->len);
}

/* Push `n` tokens (given by pointers into `pool_buf`) through rag_index__terms_append and
 * finish; check order, tf, length and keys against a qsort reference. */
static void check_finish(char **toks, const size_t *lens, const uint32_t *tfs, size_t n)
{
    /* the source list, built by hand as the analysis would (tf = given) */
    ix_terms src;
    memset(&src, 0, sizeof src);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i] + 1;
    src.buf = malloc(total ? total : 1);
    src.t = calloc(n ? n : 1, sizeof *src.t);
    assert_non_null(src.buf);
    assert_non_null(src.t);
    uint64_t tf_sum = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(src.buf + src.buf_len, toks[i], lens[i]);
        src.buf[src.buf_len + lens[i]] = 0;
        src.t[i].off = src.buf_len;
        src.t[i].len = (uint32_t)lens[i];
        src.t[i].tf = tfs[i];
        src.buf_len += lens[i] + 1;
        tf_sum += tfs[i];
    }
    src.n = src.cap = n;
    src.buf_cap = total;
    src.length = (uint32_t)n;

    ix_terms t;
    memset(&t, 0, sizeof t);
    OK(rag_index__terms_append(&t, &src));
    assert_int_equal(t.n, n);
    OK(rag_index__terms_finish(&t));
    assert_int_equal(t.length, n);

    /* reference: qsort and merge */
    ref_term *r = calloc(n ? n : 1, sizeof *r);
    assert_non_null(r);
    for (size_t i = 0; i < n; i++)
        r[i] = (ref_term){toks[i], lens[i], tfs[i]};
    qsort(r, n, sizeof *r, ref_term_qsort);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && ref_term_cmp(r[u - 1].s, r[u - 1].len, r[i].s, r[i].len) == 0)
            r[u - 1].tf += r[i].tf;
        else
            r[u++] = r[i];
    }
    assert_int_equal(t.n, u);
    uint64_t got_sum = 0;
    for (size_t i = 0; i < t.n; i++) {
        const char *s = t.buf + t.t[i].off;
        got_sum += t.t[i].tf;
        if (i)
            assert_true(ref_term_cmp(t.buf + t.t[i - 1].off, t.t[i - 1].len, s, t.t[i].len) <
                        0); /* strictly increasing: sorted and unique */
        if (t.t[i].len != r[i].len || memcmp(s, r[i].s, r[i].len) != 0 || t.t[i].tf != r[i].tf)
            fail_msg("term %zu of %zu: len %u tf %u, want len %zu tf %llu", i, t.n, t.t[i].len,
                     t.t[i].tf, r[i].len, (unsigned long long)r[i].tf);
        uint64_t key = 0;
        for (size_t b = 0; b < 8; b++)
            key = key << 8 | (b < t.t[i].len ? (unsigned char)s[b] : 0);
        assert_true(t.t[i].key == key); /* the documented prefix key */
    }
    assert_true(got_sum == tf_sum);
    free(r);
    rag_index__terms_free(&t);
    rag_index__terms_free(&src);
}

static void test_terms_finish_differential(void **state)
{
    (void)state;
    /* Prefixes that many terms share, so that most comparisons tie on the 8-byte key;
     * bytes 0x00 and >= 0x80 check that the key and the tail compare unsigned, like memcmp. */
    static const char *const prefixes[] = {"", "a", "abcdefgh", "abcdefgi", "abcdefg",
                                           "\xC3\xA9t\xC3\xA9", "zzzzzzzz", "\xFF\xFF\xFF\xFF",
                                           "ab\x00\x00", "ab"};
    static const size_t prefix_len[] = {0, 1, 8, 8, 7, 6, 8, 4, 4, 2};
    static const char alpha[] = {'a', 'b', 'z', 0x00, 0x7F, (char)0x80, (char)0xC3, (char)0xFF};
    uint64_t seed = 0xD1FFULL;
    enum { MAXN = 600 };
    char *store = malloc(MAXN * 48);
    char **toks = malloc(MAXN * sizeof *toks);
    size_t *lens = malloc(MAXN * sizeof *lens);
    uint32_t *tfs = malloc(MAXN * sizeof *tfs);
    assert_non_null(store);
    for (int iter = 0; iter < 1500; iter++) {
        size_t n;
        switch (iter) { /* the sizes around the insertion-sort cut-off, then random */
        case 0: n = 0; break;
        case 1: n = 1; break;
        case 2: n = 2; break;
        case 3: n = 16; break;
        case 4: n = 17; break;
        case 5: n = 500; break;
        default: n = lx_rng(&seed) % 501;
        }
        int shape = iter % 5; /* 0,1 random; 2 sorted; 3 reversed; 4 one term repeated */
        for (size_t i = 0; i < n; i++) {
            toks[i] = store + i * 48;
            tfs[i] = shape == 1 ? 1 + (uint32_t)(lx_rng(&seed) % 3) : 1;
            if (i && (lx_rng(&seed) % 4 == 0 || shape == 4)) { /* a duplicate */
                size_t j = shape == 4 ? 0 : lx_rng(&seed) % i;
                memcpy(toks[i], toks[j], lens[j]);
                lens[i] = lens[j];
                continue;
            }
            size_t p = lx_rng(&seed) % (sizeof prefixes / sizeof prefixes[0]);
            size_t l = 1 + lx_rng(&seed) % 40;
            size_t pl = prefix_len[p] < l ? prefix_len[p] : l;
            memcpy(toks[i], prefixes[p], pl);
            for (size_t b = pl; b < l; b++)
                toks[i][b] = alpha[lx_rng(&seed) % sizeof alpha];
            lens[i] = l;
        }
        if (shape == 2 || shape == 3) { /* already ordered input (quicksort's worst cases) */
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0; j--) {
                    int cmp = ref_term_cmp(toks[j - 1], lens[j - 1], toks[j], lens[j]);
                    if (shape == 2 ? cmp <= 0 : cmp >= 0)
                        break;
                    char *ts = toks[j];
                    toks[j] = toks[j - 1];
                    toks[j - 1] = ts;
                    size_t tl = lens[j];
                    lens[j] = lens[j - 1];
                    lens[j - 1] = tl;
                }
        }
        check_finish(toks, lens, tfs, n);
    }
    /* A long list (the recursion and the partition loop at depth): 20,000 tokens. */
    enum { BIG = 20000 };
    char *bstore = malloc(BIG * 24);
    char **btoks = malloc(BIG * sizeof *btoks);
    size_t *blens = malloc(BIG * sizeof *blens);
    uint32_t *btfs = malloc(BIG * sizeof *btfs);
    for (size_t i = 0; i < BIG; i++) {
        btoks[i] = bstore + i * 24;
        size_t l = 9 + lx_rng(&seed) % 12;
        memcpy(btoks[i], "samepref", 8);
        for (size_t b = 8; b < l; b++)
            btoks[i][b] = (char)('a' + lx_rng(&seed) % 3);
        blens[i] = l;
        btfs[i] = 1;
    }
    check_finish(btoks, blens, btfs, BIG);
    free(bstore);
    free(btoks);
    free(blens);
    free(btfs);
    free(store);
    free(toks);
    free(lens);
    free(tfs);
}

/* Synthetic text through the analysis, then finish: same checks on real stems. */
static void test_terms_finish_analyzed(void **state)
{
    tctx *c = *state;
    uint64_t seed = 99;
    char text[8192];
    for (int iter = 0; iter < 200; iter++) {
        size_t tl = 0;
        size_t words = lx_rng(&seed) % 120;
        for (size_t i = 0; i < words; i++) {
            char w[80];
            size_t l = lx_word(&seed, (unsigned)(lx_rng(&seed) % 40), w, 6);
            memcpy(text + tl, w, l);
            tl += l;
            text[tl++] = ' ';
        }
        text[tl] = 0;
        term_seq want = {0};
        ref_analyze(text, &want);
        ix_terms t;
        memset(&t, 0, sizeof t);
        OK(rag_index__terms_analyze(&c->ix->stemmers, &t, text, tl));
        OK(rag_index__terms_finish(&t));
        assert_int_equal(t.length, want.n);
        uint64_t sum = 0;
        for (size_t i = 0; i < t.n; i++) {
            sum += t.t[i].tf;
            if (i)
                assert_true(ref_term_cmp(t.buf + t.t[i - 1].off, t.t[i - 1].len,
                                         t.buf + t.t[i].off, t.t[i].len) < 0);
            /* tf = occurrences of this stem in the reference */
            uint32_t occ = 0;
            for (size_t j = 0; j < want.n; j++)
                occ += want.len[j] == t.t[i].len &&
                       memcmp(want.t[j], t.buf + t.t[i].off, t.t[i].len) == 0;
            assert_int_equal(occ, t.t[i].tf);
        }
        assert_true(sum == want.n);
        rag_index__terms_free(&t);
        seq_free(&want);
    }
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_bm25_hand),        T(test_bm25_params),       T(test_analysis),
        T(test_update_delete_revert), T(test_compaction),    T(test_concurrent_switch),
        T(test_acl_inside),       T(test_rebuild),           T(test_applied),
        T(test_check_lexical),    T(test_scifact),
        T(test_stem_cache),       T(test_stem_cache_long_words),
        cmocka_unit_test(test_terms_finish_differential),
        T(test_terms_finish_analyzed),
    };
    return cmocka_run_group_tests_name("index lexical side (BM25)", tests, NULL, NULL);
}
