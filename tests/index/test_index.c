/*
 * The index module, driven through real consumers on the LMDB broker: version switches,
 * out-of-order and duplicate deliveries, deletes, ACL pre-filtering, recovery from the log
 * and from snapshots, batches whose nested txn aborts, and searches concurrent with updates.
 * Every test runs twice: on the brute-force fake backend and on FAISS ("IDMap2,Flat").
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test_support.h"
#include "fake_vector.h"
#include "index_internal.h"
#include "rag_common.h"
#include "rag_events.h"
#include "rag_index_api.h"
#include "rag_queue.h"

#define DIM 16

#include "index_test_util.h"

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

static int g_faiss; /* which backend the current group uses */
static int g_counter;

static rag_vector_backend *new_backend(void)
{
    rag_vector_backend *b = NULL;
    if (g_faiss)
        OK(rag_vector_backend_faiss_new(&b, DIM, "IDMap2,Flat"));
    else
        OK(rag_fake_vector_backend_new(&b, DIM));
    return b;
}

static void t_open(tctx *c) { OK(rag_index_open(&c->ix, &c->cfg, new_backend())); }

static int setup(void **state)
{
    tctx *c = calloc(1, sizeof *c);
    char name[64];
    snprintf(name, sizeof name, "index-%s-%d", g_faiss ? "faiss" : "fake", ++g_counter);
    c->root = rag_test_tmpdir(name);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 256;
    o.embed_dim = DIM;
    OK(rag_config_init(&c->cfg, c->root, &o));
    t_open(c);
    OK(rag_queue_lmdb_transport_new(&c->t, &c->cfg));
    rag_queue_policy_from_config(&c->pol, &c->cfg);
    c->pol.retry_base_ms = 1;
    c->pol.retry_cap_ms = 1;
    *state = c;
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

/* ---- events ----------------------------------------------------------------------------- */

static void publish(tctx *c, const char *topic, const rag_wbuf *w)
{
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    snprintf(m.id, sizeof m.id, "test-%d", ++c->msg_no);
    m.data = w->data;
    m.size = w->len;
    OK(c->t->publish(c->t->state, &m, 1));
}

static void encode_embedded(rag_wbuf *w, const char *doc, uint64_t version, const char **acl,
                            size_t nacl, size_t nvec)
{
    rag_ev_vector *vs = calloc(nvec + 1, sizeof *vs);
    float *vecs = calloc((nvec + 1) * DIM, sizeof *vecs);
    for (size_t i = 0; i < nvec; i++) {
        vs[i].chunk_no = (uint32_t)i;
        vs[i].text = "";
        vs[i].vector = vecs + i * DIM;
        chunk_vec(doc, version, (uint32_t)i, vs[i].vector);
    }
    rag_ev_embedded ev = {.doc_id = doc, .version = version, .acl_count = nacl, .acl = acl,
                          .dim = DIM, .vector_count = nvec, .vectors = vs};
    rag_wbuf_init(w);
    OK(rag_ev_embedded_encode(&ev, w));
    free(vs);
    free(vecs);
}

static void put_embedded(tctx *c, const char *doc, uint64_t version, const char **acl,
                         size_t nacl, size_t nvec)
{
    rag_wbuf w;
    encode_embedded(&w, doc, version, acl, nacl, nvec);
    publish(c, RAG_TOPIC_EMBEDDED, &w);
    rag_wbuf_free(&w);
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

typedef struct indexed_ev {
    char doc[64];
    uint64_t version;
    uint32_t status, count;
} indexed_ev;

/* Take every doc.indexed the index published so far. */
static size_t take_indexed(tctx *c, indexed_ev *out, size_t max)
{
    size_t got = 0;
    rag_queue_message msgs[16];
    for (;;) {
        size_t n = 0;
        OK(c->t->fetch(c->t->state, RAG_TOPIC_INDEXED, 16, 10000, msgs, &n));
        if (!n)
            break;
        for (size_t i = 0; i < n; i++) {
            rag_ev_indexed ev;
            OK(rag_ev_indexed_decode(msgs[i].data, msgs[i].size, &ev));
            assert_true(got < max);
            snprintf(out[got].doc, sizeof out[got].doc, "%s", ev.doc_id);
            out[got].version = ev.version;
            out[got].status = ev.status;
            out[got].count = ev.vector_count;
            got++;
        }
        OK(c->t->ack(c->t->state, msgs, n));
        if (c->t->release)
            c->t->release(c->t->state, msgs, n);
    }
    return got;
}

/* ---- searching -------------------------------------------------------------------------- */

static size_t search(tctx *c, const float *q, size_t k, const rag_acl_filter *f, rag_index_hit *hits)
{
    const rag_index_reader *r = rag_index_reader_get(c->ix);
    size_t n = 99;
    OK(r->search(r->self, q, k, f, hits, &n));
    assert_true(n <= k);
    return n;
}

/* Hits (unrestricted, k large) belonging to `doc`, all checked to be of `version`. */
static size_t doc_hits(tctx *c, const char *doc, uint64_t version)
{
    float q[DIM];
    chunk_vec(doc, version, 0, q);
    rag_index_hit hits[64];
    rag_acl_filter all = {1, NULL, 0};
    size_t n = search(c, q, 64, &all, hits), m = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(hits[i].doc_id, doc) == 0) {
            assert_int_equal(hits[i].version, version);
            m++;
        }
    return m;
}

static void expect_stats(tctx *c, uint64_t vectors, uint64_t documents)
{
    rag_index_stats st;
    OK(rag_index_stats_get(c->ix, &st));
    assert_int_equal(st.vectors, vectors);
    assert_int_equal(st.documents, documents);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_version_switch(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc-a", 1, NULL, 0, 3);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-a", 1), 3);
    uint64_t e1;
    const rag_index_reader *r = rag_index_reader_get(c->ix);
    OK(r->epoch(r->self, &e1));
    assert_true(e1 > 0);

    put_embedded(c, "doc-a", 2, NULL, 0, 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-a", 2), 2); /* and no v1 hit (checked inside) */
    uint64_t e2;
    OK(r->epoch(r->self, &e2));
    assert_true(e2 > e1);
    expect_stats(c, 2, 1);
    assert_int_equal(rag_index__backend_count(c->ix), 2);

    /* the top hit of a chunk's own vector is that chunk */
    float q[DIM];
    chunk_vec("doc-a", 2, 1, q);
    rag_index_hit hits[3];
    assert_int_equal(search(c, q, 3, NULL, hits), 2);
    assert_string_equal(hits[0].doc_id, "doc-a");
    assert_int_equal(hits[0].chunk_no, 1);
    assert_true(fabsf(hits[0].score - 1.0f) < 1e-4f);

    indexed_ev evs[8];
    assert_int_equal(take_indexed(c, evs, 8), 2);
    assert_int_equal(evs[0].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(evs[0].version, 1);
    assert_int_equal(evs[0].count, 3);
    assert_int_equal(evs[1].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(evs[1].version, 2);
    assert_int_equal(evs[1].count, 2);
}

static void test_out_of_order(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc-b", 2, NULL, 0, 4);
    put_embedded(c, "doc-b", 1, NULL, 0, 5);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-b", 2), 4);
    expect_stats(c, 4, 1);
    /* the active version delivered again under another id: confirmed, nothing added */
    put_embedded(c, "doc-b", 2, NULL, 0, 4);
    drain_all(c);
    expect_stats(c, 4, 1);
    assert_int_equal(rag_index__backend_count(c->ix), 4);

    indexed_ev evs[8];
    assert_int_equal(take_indexed(c, evs, 8), 3);
    assert_int_equal(evs[0].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(evs[1].status, RAG_INDEXED_SUPERSEDED);
    assert_int_equal(evs[1].version, 1);
    assert_int_equal(evs[1].count, 0);
    assert_int_equal(evs[2].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(evs[2].count, 4);

    /* v1 and v2 in one batch, in that order: only v2 survives */
    put_embedded(c, "doc-c", 1, NULL, 0, 3);
    put_embedded(c, "doc-c", 2, NULL, 0, 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-c", 2), 2);
    expect_stats(c, 6, 2);
    assert_int_equal(rag_index__backend_count(c->ix), 6);
}

static void test_delete(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc-d", 1, NULL, 0, 3);
    put_embedded(c, "keep", 1, NULL, 0, 2);
    drain_all(c);
    put_deleted(c, "doc-d", 1);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-d", 1), 0);
    assert_int_equal(doc_hits(c, "keep", 1), 2);
    expect_stats(c, 2, 1);
    assert_int_equal(rag_index__backend_count(c->ix), 2);
    /* a late copy of the deleted version is superseded; a newer version comes back */
    put_embedded(c, "doc-d", 1, NULL, 0, 3);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-d", 1), 0);
    put_embedded(c, "doc-d", 3, NULL, 0, 1);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc-d", 3), 1);
    /* deleting an unknown document is acknowledged */
    put_deleted(c, "never-seen", 4);
    drain_all(c);
    uint64_t dead = 9;
    OK(rag_dead_count(rag_index_env(c->ix), &dead));
    assert_int_equal(dead, 0);

    indexed_ev evs[16];
    size_t n = take_indexed(c, evs, 16);
    assert_int_equal(n, 6);
    assert_int_equal(evs[2].status, RAG_INDEXED_DELETED);
    assert_string_equal(evs[2].doc, "doc-d");
    assert_int_equal(evs[3].status, RAG_INDEXED_SUPERSEDED);
    assert_int_equal(evs[4].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(evs[4].version, 3);
    assert_int_equal(evs[5].status, RAG_INDEXED_DELETED);
    assert_string_equal(evs[5].doc, "never-seen");
}

static int has_doc(const rag_index_hit *h, size_t n, const char *doc)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(h[i].doc_id, doc) == 0)
            return 1;
    return 0;
}

static void test_acl(void **state)
{
    tctx *c = *state;
    const char *alice[] = {"alice"};
    const char *bob_carol[] = {"carol", "bob", "carol"}; /* order and duplicates do not matter */
    const char *alice_bob[] = {"bob", "alice"};
    put_embedded(c, "public", 1, NULL, 0, 1);
    put_embedded(c, "for-alice", 1, alice, 1, 1);
    put_embedded(c, "for-bob-carol", 1, bob_carol, 3, 1);
    put_embedded(c, "for-alice-bob", 1, alice_bob, 2, 1);
    drain_all(c);
    float q[DIM];
    chunk_vec("public", 1, 0, q);
    rag_index_hit hits[16];
    const char *p_alice[] = {"alice"}, *p_carol[] = {"carol"}, *p_both[] = {"zed", "bob"};
    rag_acl_filter f_alice = {0, p_alice, 1}, f_carol = {0, p_carol, 1}, f_none = {0, NULL, 0};
    rag_acl_filter f_both = {0, p_both, 2}, f_all = {1, NULL, 0};
    size_t n = search(c, q, 16, &f_alice, hits);
    assert_int_equal(n, 3);
    assert_true(has_doc(hits, n, "public") && has_doc(hits, n, "for-alice") &&
                has_doc(hits, n, "for-alice-bob"));
    n = search(c, q, 16, &f_carol, hits);
    assert_int_equal(n, 2);
    assert_true(has_doc(hits, n, "public") && has_doc(hits, n, "for-bob-carol"));
    n = search(c, q, 16, &f_none, hits);
    assert_int_equal(n, 1);
    assert_string_equal(hits[0].doc_id, "public");
    n = search(c, q, 16, &f_both, hits);
    assert_int_equal(n, 3);
    assert_false(has_doc(hits, n, "for-alice"));
    assert_int_equal(search(c, q, 16, &f_all, hits), 4);

    /* Pre-filter: 300 chunks only "x" may see, closer to the query than alice's 3; k=3
     * still yields alice's three. */
    const char *x[] = {"x"};
    put_embedded(c, "alice-many", 1, alice, 1, 3);
    for (int i = 0; i < 30; i++) {
        char doc[32];
        snprintf(doc, sizeof doc, "x-%d", i);
        put_embedded(c, doc, 1, x, 1, 10);
    }
    drain_all(c);
    float qa[DIM];
    chunk_vec("x-7", 1, 3, qa);
    rag_acl_filter f_only_alice_docs = {0, p_alice, 1};
    n = search(c, qa, 3, &f_only_alice_docs, hits);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_true(strncmp(hits[i].doc_id, "x-", 2) != 0);
    const char *p_x[] = {"x"};
    rag_acl_filter f_x = {0, p_x, 1};
    n = search(c, qa, 1, &f_x, hits);
    assert_int_equal(n, 1);
    assert_string_equal(hits[0].doc_id, "x-7");
    assert_int_equal(hits[0].chunk_no, 3);

    /* ACL sets survive a reopen */
    rag_index__close_nosnap(c->ix);
    t_open(c);
    n = search(c, q, 16, &f_alice, hits);
    assert_int_equal(n, 6); /* public, for-alice, for-alice-bob, alice-many x3 */
}

/* Query every document's chunk 0 and record the full result lists. */
typedef struct snapshot_view {
    size_t n[8];
    rag_index_hit hits[8][12];
} snapshot_view;

static const char *docs8[8] = {"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"};

static void view_take(tctx *c, snapshot_view *v, const uint64_t *versions)
{
    const char *p[] = {"g1"};
    rag_acl_filter f = {0, p, 1};
    for (int d = 0; d < 8; d++) {
        float q[DIM];
        chunk_vec(docs8[d], versions[d] ? versions[d] : 1, 0, q);
        v->n[d] = search(c, q, 12, (d & 1) ? &f : NULL, v->hits[d]);
    }
}

static void view_same(const snapshot_view *a, const snapshot_view *b)
{
    for (int d = 0; d < 8; d++) {
        assert_int_equal(a->n[d], b->n[d]);
        for (size_t i = 0; i < a->n[d]; i++) {
            assert_string_equal(a->hits[d][i].doc_id, b->hits[d][i].doc_id);
            assert_int_equal(a->hits[d][i].version, b->hits[d][i].version);
            assert_int_equal(a->hits[d][i].chunk_no, b->hits[d][i].chunk_no);
            assert_true(fabsf(a->hits[d][i].score - b->hits[d][i].score) < 1e-5f);
        }
    }
}

static void test_reopen_and_snapshots(void **state)
{
    tctx *c = *state;
    const char *g1[] = {"g1"}, *g2[] = {"g2"};
    uint64_t ver[8] = {0};
    for (int d = 0; d < 8; d++) {
        put_embedded(c, docs8[d], 1, (d % 3 == 0) ? g2 : g1, d % 4 ? 1 : 0, 3 + (size_t)d % 3);
        ver[d] = 1;
    }
    drain_all(c);
    snapshot_view before, after;
    view_take(c, &before, ver);

    /* 1: killed without a snapshot: rebuilt from the vectors table */
    rag_index__close_nosnap(c->ix);
    t_open(c);
    assert_int_equal(rag_index__recovery_info(c->ix)->rebuilt, 1);
    view_take(c, &after, ver);
    view_same(&before, &after);

    /* 2: snapshot, then more changes, killed: snapshot + replay of the log tail */
    OK(rag_index_snapshot(c->ix));
    char tmp[RAG_PATH_MAX + 80];
    snprintf(tmp, sizeof tmp, "%s/index/vectors.faiss.tmp", c->root);
    assert_int_not_equal(access(tmp, F_OK), 0);
    put_embedded(c, "r1", 2, g1, 1, 2);
    ver[1] = 2;
    put_embedded(c, "r2", 2, NULL, 0, 6);
    ver[2] = 2;
    /* r3 is deleted at v1 and comes back as v2; the consumers see v2 first (embedded runs
     * first in drain_all), so the delete must not remove v2 */
    put_deleted(c, "r3", 1);
    put_embedded(c, "r3", 2, NULL, 0, 3);
    ver[3] = 2;
    drain_all(c);
    put_deleted(c, "r5", 1);
    drain_all(c);
    ver[5] = 0;
    view_take(c, &before, ver);
    rag_index_stats st_before;
    OK(rag_index_stats_get(c->ix, &st_before));
    rag_index__close_nosnap(c->ix);
    t_open(c);
    const rag_index__recovery *rec = rag_index__recovery_info(c->ix);
    assert_int_equal(rec->snapshot_loaded, 1);
    assert_int_equal(rec->rebuilt, 0);
    assert_int_equal(rec->replayed_entries, 4);
    assert_int_equal(doc_hits(c, "r3", 2), 3);
    view_take(c, &after, ver);
    view_same(&before, &after);
    assert_int_equal(rag_index__backend_count(c->ix), st_before.vectors);
    assert_int_equal(doc_hits(c, "r5", 1), 0);
    assert_int_equal(doc_hits(c, "r2", 2), 6);

    /* 3: a regular close writes a snapshot: nothing left to replay */
    rag_index_close(c->ix);
    t_open(c);
    rec = rag_index__recovery_info(c->ix);
    assert_int_equal(rec->snapshot_loaded, 1);
    assert_int_equal(rec->replayed_entries, 0);
    view_take(c, &after, ver);
    view_same(&before, &after);
    rag_index_stats st;
    OK(rag_index_stats_get(c->ix, &st));
    assert_int_equal(st.vectors, st_before.vectors);
    assert_int_equal(st.documents, 7);
    assert_int_equal(st.epoch, st_before.epoch);
    assert_int_equal(st.log_seq, st_before.log_seq);

    /* 4: a corrupt snapshot file is not trusted */
    char path[RAG_PATH_MAX + 80];
    snprintf(path, sizeof path, "%s/index/vectors.faiss", c->root);
    rag_index__close_nosnap(c->ix);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("garbage", f);
    fclose(f);
    t_open(c);
    assert_int_equal(rag_index__recovery_info(c->ix)->rebuilt, 1);
    view_take(c, &after, ver);
    view_same(&before, &after);

    /* 5: a crash while a snapshot was being written (meta says INVALID) */
    OK(rag_index_snapshot(c->ix));
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, 0, &txn), 0);
    OK(rag_index__meta_put(txn, c->ix->meta, "snapshot_seq", IX_SNAPSHOT_INVALID));
    assert_int_equal(mdb_txn_commit(txn), 0);
    put_embedded(c, "r7", 2, g1, 1, 1);
    ver[7] = 2;
    drain_all(c);
    view_take(c, &before, ver);
    rag_index__close_nosnap(c->ix);
    t_open(c);
    assert_int_equal(rag_index__recovery_info(c->ix)->rebuilt, 1);
    view_take(c, &after, ver);
    view_same(&before, &after);
}

/* Drive handle() directly: a nested txn aborted after its handler succeeded must not reach
 * the backend, and the message after it reuses its log seq. */
static void test_aborted_nested_txn(void **state)
{
    tctx *c = *state;
    rag_consumer *cons = rag_index_consumer_embedded(c->ix);
    MDB_env *env = rag_index_env(c->ix);
    rag_wbuf wa, wb;
    encode_embedded(&wa, "lost", 1, NULL, 0, 2);
    encode_embedded(&wb, "kept", 1, NULL, 0, 3);
    rag_queue_message ma = {RAG_TOPIC_EMBEDDED, "m-a", wa.data, wa.len, 1, 0};
    rag_queue_message mb = {RAG_TOPIC_EMBEDDED, "m-b", wb.data, wb.len, 1, 0};
    MDB_txn *batch, *n1, *n2;
    OK(cons->begin_batch(cons->self, NULL));
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &batch), 0);
    assert_int_equal(mdb_txn_begin(env, batch, 0, &n1), 0);
    OK(cons->handle(cons->self, n1, &ma));
    mdb_txn_abort(n1);
    assert_int_equal(mdb_txn_begin(env, batch, 0, &n2), 0);
    OK(cons->handle(cons->self, n2, &mb));
    assert_int_equal(mdb_txn_commit(n2), 0);
    assert_int_equal(mdb_txn_commit(batch), 0);
    cons->end_batch(cons->self, 1);
    assert_int_equal(doc_hits(c, "lost", 1), 0);
    assert_int_equal(doc_hits(c, "kept", 1), 3);
    assert_int_equal(rag_index__backend_count(c->ix), 3);
    expect_stats(c, 3, 1);

    /* the last message aborted: found by its missing log entry */
    rag_wbuf wc;
    encode_embedded(&wc, "lost-too", 1, NULL, 0, 2);
    rag_queue_message mc = {RAG_TOPIC_EMBEDDED, "m-c", wc.data, wc.len, 1, 0};
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &batch), 0);
    assert_int_equal(mdb_txn_begin(env, batch, 0, &n1), 0);
    OK(cons->handle(cons->self, n1, &mc));
    mdb_txn_abort(n1);
    assert_int_equal(mdb_txn_commit(batch), 0);
    cons->end_batch(cons->self, 1);
    assert_int_equal(doc_hits(c, "lost-too", 1), 0);
    assert_int_equal(rag_index__backend_count(c->ix), 3);

    /* a batch whose commit failed: end_batch(0) drops everything */
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &batch), 0);
    OK(cons->handle(cons->self, batch, &mc));
    mdb_txn_abort(batch);
    cons->end_batch(cons->self, 0);
    assert_int_equal(doc_hits(c, "lost-too", 1), 0);
    assert_int_equal(rag_index__backend_count(c->ix), 3);

    /* the committed state is intact: a reopen agrees */
    rag_index__close_nosnap(c->ix);
    t_open(c);
    assert_int_equal(doc_hits(c, "kept", 1), 3);
    assert_int_equal(doc_hits(c, "lost", 1), 0);
    assert_int_equal(rag_index__backend_count(c->ix), 3);
    rag_wbuf_free(&wa);
    rag_wbuf_free(&wb);
    rag_wbuf_free(&wc);
}

/* The two consumers' batches commit in one order; their end_batch may come in the other. */
static void test_end_batch_order(void **state)
{
    tctx *c = *state;
    rag_consumer *ce = rag_index_consumer_embedded(c->ix);
    rag_consumer *cd = rag_index_consumer_deleted(c->ix);
    MDB_env *env = rag_index_env(c->ix);
    rag_wbuf we, wd;
    encode_embedded(&we, "flip", 1, NULL, 0, 2);
    rag_ev_deleted del = {.doc_id = "flip", .version = 1};
    rag_wbuf_init(&wd);
    OK(rag_ev_deleted_encode(&del, &wd));
    rag_queue_message me = {RAG_TOPIC_EMBEDDED, "e-1", we.data, we.len, 1, 0};
    rag_queue_message md = {RAG_TOPIC_DELETED, "d-1", wd.data, wd.len, 1, 0};
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(ce->handle(ce->self, txn, &me));
    assert_int_equal(mdb_txn_commit(txn), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    OK(cd->handle(cd->self, txn, &md));
    assert_int_equal(mdb_txn_commit(txn), 0);
    cd->end_batch(cd->self, 1); /* waits for its predecessor */
    assert_int_equal(rag_index__backend_count(c->ix), 0);
    ce->end_batch(ce->self, 1); /* applies both, in log order */
    assert_int_equal(doc_hits(c, "flip", 1), 0);
    assert_int_equal(rag_index__backend_count(c->ix), 0);
    expect_stats(c, 0, 0);
    rag_wbuf_free(&we);
    rag_wbuf_free(&wd);
}

static void test_bad_messages(void **state)
{
    tctx *c = *state;
    /* wrong dimension, non-finite values, an unparsable payload: dead letters, no effect */
    rag_ev_vector v = {0, {0}, "", 0, NULL};
    float big[DIM * 2] = {0};
    v.vector = big;
    rag_ev_embedded ev = {.doc_id = "wrong-dim", .version = 1, .dim = DIM * 2,
                          .vector_count = 1, .vectors = &v};
    rag_wbuf w;
    rag_wbuf_init(&w);
    OK(rag_ev_embedded_encode(&ev, &w));
    publish(c, RAG_TOPIC_EMBEDDED, &w);
    rag_wbuf_free(&w);
    float nan_vec[DIM];
    for (int i = 0; i < DIM; i++)
        nan_vec[i] = NAN;
    v.vector = nan_vec;
    rag_ev_embedded ev2 = {.doc_id = "nan", .version = 1, .dim = DIM, .vector_count = 1,
                           .vectors = &v};
    rag_wbuf_init(&w);
    OK(rag_ev_embedded_encode(&ev2, &w));
    publish(c, RAG_TOPIC_EMBEDDED, &w);
    rag_wbuf_free(&w);
    rag_wbuf_init(&w);
    rag_wbuf_cstr(&w, "not an event");
    publish(c, RAG_TOPIC_EMBEDDED, &w);
    publish(c, RAG_TOPIC_DELETED, &w);
    rag_wbuf_free(&w);
    put_embedded(c, "fine", 1, NULL, 0, 2);
    drain_all(c);
    uint64_t dead = 0;
    OK(rag_dead_count(rag_index_env(c->ix), &dead));
    assert_int_equal(dead, 4);
    assert_int_equal(doc_hits(c, "fine", 1), 2);
    expect_stats(c, 2, 1);
    assert_int_equal(rag_index__backend_count(c->ix), 2);

    /* another backend dimension cannot open this root */
    rag_index__close_nosnap(c->ix);
    rag_vector_backend *b = NULL;
    OK(rag_fake_vector_backend_new(&b, DIM * 2));
    assert_int_equal(rag_index_open(&c->ix, &c->cfg, b), RAG_EINVAL);
    assert_null(c->ix);
    t_open(c);
}

/* Readers during a stream of version switches see exactly one version of the document. */
typedef struct reader_arg {
    tctx *c;
    int stop;
    int bad, searches;
} reader_arg;

static void *reader_thread(void *p)
{
    reader_arg *a = p;
    const rag_index_reader *r = rag_index_reader_get(a->c->ix);
    float q[DIM];
    chunk_vec("hot", 1, 0, q);
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        rag_index_hit hits[16];
        size_t n = 0;
        if (r->search(r->self, q, 16, NULL, hits, &n) != RAG_OK) {
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
        if (m != 4)
            __atomic_add_fetch(&a->bad, 1, __ATOMIC_RELAXED); /* a gap or a duplicate */
        __atomic_add_fetch(&a->searches, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_concurrent_switch(void **state)
{
    tctx *c = *state;
    put_embedded(c, "hot", 1, NULL, 0, 4);
    put_embedded(c, "cold", 1, NULL, 0, 4);
    drain_all(c);
    reader_arg a = {c, 0, 0, 0};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader_thread, &a), 0);
    for (uint64_t v = 2; v <= 40; v++) {
        put_embedded(c, "hot", v, NULL, 0, 4);
        if (v % 5 == 0)
            OK(rag_index_snapshot(c->ix));
        drain_all(c);
    }
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(a.bad, 0);
    assert_true(a.searches > 0);
    assert_int_equal(doc_hits(c, "hot", 40), 4);
    expect_stats(c, 8, 2);
}

/* An index type that cannot remove ids (HNSW): old versions stay in FAISS as tombstones
 * that every search filters out, across snapshots and log replay. */
static void test_hnsw_tombstones(void **state)
{
    tctx *c = *state;
    if (!g_faiss)
        skip();
    rag_index__close_nosnap(c->ix);
    rag_vector_backend *b = NULL;
    OK(rag_vector_backend_faiss_new(&b, DIM, "HNSW32"));
    OK(rag_index_open(&c->ix, &c->cfg, b));
    const char *g[] = {"g"};
    put_embedded(c, "h", 1, NULL, 0, 4);
    put_embedded(c, "other", 1, g, 1, 4);
    drain_all(c);
    put_embedded(c, "h", 2, NULL, 0, 4);
    drain_all(c);
    assert_int_equal(rag_index__backend_count(c->ix), 12); /* 4 tombstones */
    assert_int_equal(doc_hits(c, "h", 2), 4);
    expect_stats(c, 8, 2);
    rag_index_close(c->ix); /* snapshot with the tombstones in it */
    OK(rag_vector_backend_faiss_new(&b, DIM, "HNSW32"));
    OK(rag_index_open(&c->ix, &c->cfg, b));
    assert_int_equal(rag_index__recovery_info(c->ix)->snapshot_loaded, 1);
    put_deleted(c, "h", 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "h", 2), 0);
    const char *p[] = {"g"};
    rag_acl_filter f = {0, p, 1};
    float q[DIM];
    chunk_vec("other", 1, 2, q);
    rag_index_hit hits[8];
    size_t n = search(c, q, 8, &f, hits);
    assert_int_equal(n, 4);
    assert_string_equal(hits[0].doc_id, "other");
    assert_int_equal(hits[0].chunk_no, 2);
    rag_index__close_nosnap(c->ix); /* replay: a remove the index cannot do */
    OK(rag_vector_backend_faiss_new(&b, DIM, "HNSW32"));
    OK(rag_index_open(&c->ix, &c->cfg, b));
    assert_int_equal(rag_index__recovery_info(c->ix)->replayed_entries, 1);
    assert_int_equal(doc_hits(c, "h", 2), 0);
    assert_int_equal(search(c, q, 8, &f, hits), 4);
    assert_int_equal(search(c, q, 8, NULL, hits), 4);
}

/* ---- deferred removal (issue 9) ------------------------------------------------------------
 * A removal waits in ix->rm_pending until IX_RM_BATCH (1024) labels and a sixteenth of the
 * backend are pending; searches filter those labels out, a snapshot flushes them first and
 * rag_index__backend_count does not count them (it flushes to know).  Pending state is
 * asserted before any call of rag_index__backend_count. */

#define RM_BATCH 1024

static uint64_t raw_count(tctx *c) { return c->ix->backend->count(c->ix->backend->state); }

/* Every search (no filter, a reader "g" who sees all, a reader "nobody" who sees the public
 * documents only, the unrestricted filter; k below and above what may be seen) returns only
 * current versions of documents the reader may see, and as many hits as there are: the
 * tombstones are filtered inside the search, not after it.  Documents have CH chunks;
 * acl[d] 1: readable by "g" only. */
static void expect_current(tctx *c, const char *const *docs, const uint64_t *ver, size_t nd,
                           const int *acl, size_t per_doc)
{
    const char *pg[] = {"g"}, *pn[] = {"nobody"};
    rag_acl_filter fg = {0, pg, 1}, fn = {0, pn, 1}, fall = {1, NULL, 0};
    size_t live = nd * per_doc, live_public = 0;
    for (size_t d = 0; d < nd; d++)
        live_public += acl[d] ? 0 : per_doc;
    rag_index_hit hits[64];
    for (size_t d = 0; d < nd; d++) {
        for (uint64_t v = 1; v <= ver[d]; v++) {
            float q[DIM];
            chunk_vec(docs[d], v, 0, q); /* an old version's own vector: its exact match */
            for (int f = 0; f < 4; f++) {
                const rag_acl_filter *flt = f == 0 ? NULL : f == 1 ? &fg : f == 2 ? &fn : &fall;
                size_t visible = f == 2 ? live_public : live;
                size_t k = (d % 2) ? 8 : 64;
                size_t n = search(c, q, k, flt, hits);
                size_t want = k < visible ? k : visible;
                if (n != want)
                    fail_msg("search for %s v%llu (filter %d, k %zu): %zu hits, want %zu",
                             docs[d], (unsigned long long)v, f, k, n, want);
                for (size_t i = 0; i < n; i++) {
                    size_t e = 0;
                    while (e < nd && strcmp(hits[i].doc_id, docs[e]) != 0)
                        e++;
                    if (e == nd)
                        fail_msg("search returned %s, which is not live", hits[i].doc_id);
                    if (hits[i].version != ver[e])
                        fail_msg("search returned %s v%llu, current is v%llu", hits[i].doc_id,
                                 (unsigned long long)hits[i].version,
                                 (unsigned long long)ver[e]);
                    if (f == 2 && acl[e])
                        fail_msg("reader \"nobody\" got %s", hits[i].doc_id);
                }
            }
        }
    }
}

/* One search with k = every live label (and one more): each document shows exactly `per_doc`
 * hits, all of its current version (docs with ver 0 none). */
static void expect_all_live(tctx *c, const char *const *docs, const uint64_t *ver, size_t nd,
                            size_t per_doc, size_t live)
{
    float q[DIM];
    chunk_vec(docs[0], 1, 0, q);
    rag_index_hit *hits = calloc(live + 1, sizeof *hits);
    assert_non_null(hits);
    for (int f = 0; f < 2; f++) {
        rag_acl_filter fall = {1, NULL, 0};
        size_t n = search(c, q, live + 1, f ? &fall : NULL, hits);
        assert_int_equal(n, live);
        for (size_t d = 0; d < nd; d++) {
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (strcmp(hits[i].doc_id, docs[d]) == 0) {
                    assert_int_equal(hits[i].version, ver[d]);
                    m++;
                }
            assert_int_equal(m, ver[d] ? per_doc : 0);
        }
    }
    free(hits);
}

static void check_no_problems(tctx *c)
{
    uint64_t found = 99;
    OK(rag_index_check(c->ix, 0, NULL, NULL, &found));
    assert_int_equal(found, 0);
}

static void test_deferred_removal(void **state)
{
    tctx *c = *state;
    enum { ND = 10, CH = 8 };
    const char *docs[ND] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"};
    const char *g[] = {"g"};
    uint64_t ver[ND];
    int acl[ND];
    for (int d = 0; d < ND; d++) {
        acl[d] = d % 2;
        put_embedded(c, docs[d], 1, acl[d] ? g : NULL, acl[d] ? 1 : 0, CH);
        ver[d] = 1;
    }
    drain_all(c);
    assert_int_equal(raw_count(c), ND * CH);
    assert_int_equal(c->ix->rm_supported, -1); /* nothing removed yet */

    /* The first removal goes at once and shows the backend removes. */
    put_embedded(c, docs[0], 2, NULL, 0, CH);
    ver[0] = 2;
    drain_all(c);
    assert_int_equal(c->ix->rm_supported, 1);
    assert_int_equal(c->ix->rm_pending_n, 0);
    assert_int_equal(raw_count(c), ND * CH);

    /* Later ones wait (72 < 1024). */
    for (int d = 1; d < ND; d++) {
        put_embedded(c, docs[d], 2, acl[d] ? g : NULL, acl[d] ? 1 : 0, CH);
        ver[d] = 2;
        drain_all(c);
        assert_int_equal(c->ix->rm_pending_n, (size_t)d * CH);
    }
    assert_int_equal(raw_count(c), ND * CH + (ND - 1) * CH);
    expect_stats(c, ND * CH, ND);
    expect_current(c, docs, ver, ND, acl, CH);
    expect_all_live(c, docs, ver, ND, CH, ND * CH);
    check_no_problems(c);
    assert_int_equal(c->ix->rm_pending_n, (ND - 1) * CH); /* searches and checks wait too */

    /* A deletion waits as well, and its labels are never found. */
    put_deleted(c, docs[3], 2);
    drain_all(c);
    assert_int_equal(c->ix->rm_pending_n, ND * CH); /* 72 + 8 */
    ver[3] = 0;
    expect_all_live(c, docs, ver, ND, CH, (ND - 1) * CH);
    ver[3] = 2;
    assert_int_equal(c->ix->rm_pending_n, ND * CH);
    assert_int_equal(raw_count(c), (ND - 1) * CH + ND * CH);
    /* the count of what the backend holds for live labels (it may flush to know) */
    assert_int_equal(rag_index__backend_count(c->ix), (ND - 1) * CH);
    assert_int_equal(raw_count(c), (ND - 1) * CH + c->ix->rm_pending_n);
    const char *live_docs[ND - 1];
    uint64_t live_ver[ND - 1];
    int live_acl[ND - 1];
    for (int d = 0, j = 0; d < ND; d++)
        if (d != 3) {
            live_docs[j] = docs[d];
            live_acl[j] = acl[d];
            live_ver[j++] = ver[d];
        }
    expect_current(c, live_docs, live_ver, ND - 1, live_acl, CH);

    /* Killed with removals pending: the recovery derives the backend from the tables (no
     * snapshot yet) and holds no tombstone. */
    rag_index__close_nosnap(c->ix);
    t_open(c);
    assert_int_equal(rag_index__recovery_info(c->ix)->rebuilt, 1);
    assert_int_equal(c->ix->rm_pending_n, 0);
    assert_int_equal(raw_count(c), (ND - 1) * CH);
    assert_int_equal(rag_index__backend_count(c->ix), (ND - 1) * CH);
    expect_current(c, live_docs, live_ver, ND - 1, live_acl, CH);

    /* Pending again (the first removal after an open goes at once), then a clean close: the
     * snapshot flushes first, so the reopened index loads it and holds exactly the live. */
    for (int d = 0; d < ND; d++) {
        if (d == 3)
            continue;
        put_embedded(c, docs[d], 3, acl[d] ? g : NULL, acl[d] ? 1 : 0, CH);
        ver[d] = 3;
        drain_all(c);
    }
    assert_int_equal(c->ix->rm_pending_n, (ND - 2) * CH);
    assert_int_equal(raw_count(c), (ND - 1) * CH + (ND - 2) * CH);
    rag_index_close(c->ix);
    t_open(c);
    const rag_index__recovery *rec = rag_index__recovery_info(c->ix);
    assert_int_equal(rec->snapshot_loaded, 1);
    assert_int_equal(rec->rebuilt, 0);
    assert_int_equal(rec->replayed_entries, 0);
    assert_int_equal(c->ix->rm_pending_n, 0);
    assert_int_equal(raw_count(c), (ND - 1) * CH);
    assert_int_equal(rag_index__backend_count(c->ix), (ND - 1) * CH);
    for (int d = 0, j = 0; d < ND; d++)
        if (d != 3)
            live_ver[j++] = ver[d];
    expect_current(c, live_docs, live_ver, ND - 1, live_acl, CH);
    check_no_problems(c);

    /* An explicit snapshot flushes too; replaying the log after it removes at once. */
    put_embedded(c, docs[0], 4, NULL, 0, CH); /* the first after the open: at once */
    drain_all(c);
    assert_int_equal(c->ix->rm_pending_n, 0);
    put_embedded(c, docs[1], 4, g, 1, CH);
    drain_all(c);
    ver[0] = ver[1] = 4;
    assert_int_equal(c->ix->rm_pending_n, CH);
    OK(rag_index_snapshot(c->ix));
    assert_int_equal(c->ix->rm_pending_n, 0);
    assert_int_equal(raw_count(c), (ND - 1) * CH);
    put_embedded(c, docs[2], 4, NULL, 0, CH);
    drain_all(c);
    ver[2] = 4;
    assert_int_equal(c->ix->rm_pending_n, CH);
    rag_index__close_nosnap(c->ix);
    t_open(c);
    rec = rag_index__recovery_info(c->ix);
    assert_int_equal(rec->snapshot_loaded, 1);
    assert_int_equal(rec->replayed_entries, 1);
    assert_int_equal(c->ix->rm_pending_n, 0);
    assert_int_equal(raw_count(c), (ND - 1) * CH);
    for (int d = 0, j = 0; d < ND; d++)
        if (d != 3)
            live_ver[j++] = ver[d];
    expect_current(c, live_docs, live_ver, ND - 1, live_acl, CH);
}

/* The flush: once 1024 labels and a sixteenth of what the backend holds are pending, one
 * remove_ids takes them all, without a close or a snapshot. */
static void test_deferred_removal_threshold(void **state)
{
    tctx *c = *state;
    enum { NB = 10, BCH = 120 };
    char docs[NB][16];
    for (int d = 0; d < NB; d++) {
        snprintf(docs[d], sizeof docs[d], "b%d", d);
        put_embedded(c, docs[d], 1, NULL, 0, BCH);
    }
    drain_all(c);
    const uint64_t live = NB * BCH;
    assert_int_equal(raw_count(c), live);
    put_embedded(c, docs[0], 2, NULL, 0, BCH); /* the first removal: at once */
    drain_all(c);
    assert_int_equal(c->ix->rm_pending_n, 0);
    size_t pending = 0;
    int flushed = 0;
    for (int d = 1; d < NB; d++) {
        put_embedded(c, docs[d], 2, NULL, 0, BCH);
        drain_all(c);
        pending += BCH;
        uint64_t held = live + pending;
        if (!flushed && pending >= RM_BATCH && pending >= held / 16) {
            flushed = 1;
            assert_int_equal(c->ix->rm_pending_n, 0); /* 9 x 120 = 1080 >= 1024 */
            assert_int_equal(raw_count(c), live);
            pending = 0;
        } else {
            assert_int_equal(c->ix->rm_pending_n, pending);
            assert_int_equal(raw_count(c), live + pending);
        }
    }
    assert_int_equal(flushed, 1);
    assert_int_equal(rag_index__backend_count(c->ix), live);
    assert_int_equal(c->ix->rm_pending_n, 0);
    const char *dp[NB];
    uint64_t vv[NB];
    for (int d = 0; d < NB; d++) {
        dp[d] = docs[d];
        vv[d] = 2;
    }
    expect_all_live(c, dp, vv, NB, BCH, live);
    expect_stats(c, live, NB);
}

/* A big backend: 1024 pending is not enough, a sixteenth of what it holds is needed. */
static void test_deferred_removal_sixteenth(void **state)
{
    tctx *c = *state;
    enum { NBIG = 16, BIGCH = 1250, NSMALL = 8, SCH = 100 };
    for (int d = 0; d < NBIG; d++) {
        char doc[16];
        snprintf(doc, sizeof doc, "big%d", d);
        put_embedded(c, doc, 1, NULL, 0, BIGCH);
        drain_all(c);
    }
    char small[NSMALL][16];
    for (int d = 0; d < NSMALL; d++) {
        snprintf(small[d], sizeof small[d], "s%d", d);
        put_embedded(c, small[d], 1, NULL, 0, SCH);
    }
    drain_all(c);
    const uint64_t live = NBIG * BIGCH + NSMALL * SCH; /* 20,800 */
    assert_int_equal(raw_count(c), live);
    uint64_t ver = 2;
    put_embedded(c, small[0], ver, NULL, 0, SCH); /* at once */
    drain_all(c);
    size_t pending = 0;
    int seen_wait_over_batch = 0, flushed = 0;
    for (int round = 0; !flushed && round < 40; round++) {
        int d = 1 + round % (NSMALL - 1);
        if (d == 1)
            ver++;
        put_embedded(c, small[d], ver, NULL, 0, SCH);
        drain_all(c);
        pending += SCH;
        if (pending >= RM_BATCH && pending >= (live + pending) / 16) {
            assert_int_equal(c->ix->rm_pending_n, 0);
            assert_int_equal(raw_count(c), live);
            flushed = 1;
        } else {
            if (pending >= RM_BATCH)
                seen_wait_over_batch = 1; /* 1024 reached, but not held/16 */
            assert_int_equal(c->ix->rm_pending_n, pending);
            assert_int_equal(raw_count(c), live + pending);
        }
    }
    assert_true(seen_wait_over_batch);
    assert_true(flushed);
    assert_int_equal(rag_index__backend_count(c->ix), live);
}

/* HNSW cannot remove: removals are never pending, the tombstones stay counted. */
static void test_hnsw_never_pending(void **state)
{
    tctx *c = *state;
    if (!g_faiss)
        skip();
    rag_index__close_nosnap(c->ix);
    rag_vector_backend *b = NULL;
    OK(rag_vector_backend_faiss_new(&b, DIM, "HNSW32"));
    OK(rag_index_open(&c->ix, &c->cfg, b));
    put_embedded(c, "h", 1, NULL, 0, 4);
    drain_all(c);
    for (uint64_t v = 2; v <= 5; v++) {
        put_embedded(c, "h", v, NULL, 0, 4);
        drain_all(c);
        assert_int_equal(c->ix->rm_supported, 0);
        assert_int_equal(c->ix->rm_pending_n, 0);
        assert_int_equal(raw_count(c), 4 * v);
        assert_int_equal(rag_index__backend_count(c->ix), 4 * v); /* tombstones held */
        assert_int_equal(doc_hits(c, "h", v), 4);
    }
    OK(rag_index_snapshot(c->ix));
    assert_int_equal(c->ix->rm_pending_n, 0);
}

/* A removal of a label the backend never held (here: an unreferenced labels row that
 * rag_index_check's repair deletes) must not make rag_index__backend_count undercount, as
 * subtracting the number of pending labels did (test_check_concurrent failed now and then
 * for this reason: its "ghost" label's removal is deferred whenever an earlier batch has
 * already shown that the backend removes). */
static void test_deferred_removal_unheld_label(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, NULL, 0, 4);
    drain_all(c);
    put_embedded(c, "a", 2, NULL, 0, 4); /* at once: rm_supported becomes 1 */
    drain_all(c);
    put_embedded(c, "a", 3, NULL, 0, 4); /* pending */
    drain_all(c);
    assert_int_equal(c->ix->rm_pending_n, 4);

    /* a labels row no docs row lists, for a label the backend never saw */
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, 0, &txn), 0);
    uint8_t key[8];
    rag_be64_put(key, 5000);
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_u64(&w, 1);
    rag_wbuf_u32(&w, 0);
    rag_wbuf_u32(&w, 0);
    rag_wbuf_cstr(&w, "ghost");
    MDB_val k = {8, key}, v = {w.len, w.data};
    assert_int_equal(mdb_put(txn, c->ix->labels, &k, &v, 0), 0);
    rag_wbuf_free(&w);
    assert_int_equal(mdb_txn_commit(txn), 0);
    uint64_t found = 0;
    OK(rag_index_check(c->ix, 1, NULL, NULL, &found));
    assert_true(found >= 1); /* unreferenced_label (and the view/table count mismatch) */
    check_no_problems(c);
    expect_stats(c, 4, 1);
    if (rag_index__backend_count(c->ix) != 4)
        fail_msg("rag_index__backend_count = %llu for 4 live labels (backend holds %llu, "
                 "%zu removals pending, one of them a label it never held)",
                 (unsigned long long)rag_index__backend_count(c->ix),
                 (unsigned long long)raw_count(c), c->ix->rm_pending_n);
    OK(rag_index_snapshot(c->ix)); /* flushes */
    assert_int_equal(c->ix->rm_pending_n, 0);
    assert_int_equal(raw_count(c), 4);
    assert_int_equal(rag_index__backend_count(c->ix), 4);
}

/* A snapshot taken while batches are applied must not hold tombstones: a batch applied
 * between the flush of the pending removals and the save would put removed vectors into the
 * file, where a reload cannot tell them from live ones (they would stay in the backend for
 * good).  Every document keeps 4 chunks, so every snapshot file must hold exactly the 16
 * live vectors.  A stress test (one apply per message on another thread, snapshots in a
 * loop): the first version of the flush (write lock, unlock, then read lock for the save)
 * failed it in most runs; a correct one never fails it. */
typedef struct drainer_arg {
    tctx *c;
    int done, rc;
} drainer_arg;

static void *drainer_thread(void *p)
{
    drainer_arg *a = p;
    size_t n;
    do {
        n = 0;
        a->rc = rag_consumer_run_once(rag_index_consumer_embedded(a->c->ix), a->c->t,
                                      &a->c->pol, &n);
    } while (n && !a->rc);
    __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_snapshot_during_apply(void **state)
{
    tctx *c = *state;
    enum { NDOC = 4, CHK = 4, ROUNDS = 1000, PER_ROUND = 40 };
    char docs[NDOC][8];
    for (int d = 0; d < NDOC; d++) {
        snprintf(docs[d], sizeof docs[d], "w%d", d);
        put_embedded(c, docs[d], 1, NULL, 0, CHK);
    }
    drain_all(c);
    put_embedded(c, docs[0], 2, NULL, 0, CHK); /* rm_supported becomes known */
    drain_all(c);
    OK(rag_index_snapshot(c->ix)); /* a reference file of the 16 live vectors */
    struct stat ref;
    assert_int_equal(stat(c->ix->snap_path, &ref), 0);
    const off_t ref_size = ref.st_size;
    c->pol.batch_size = 1; /* one apply per message: many windows */
    uint64_t v = 2;
    int bad = 0, snaps = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < ROUNDS && !bad; round++) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (round >= 20 && now.tv_sec - t0.tv_sec >= 4)
            break; /* enough tries for a slow (sanitized) build */
        for (int i = 0; i < PER_ROUND; i++) {
            v++;
            put_embedded(c, docs[i % NDOC], v, NULL, 0, CHK);
        }
        drainer_arg a = {c, 0, 0};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, drainer_thread, &a), 0);
        while (!__atomic_load_n(&a.done, __ATOMIC_ACQUIRE) && !bad) {
            OK(rag_index_snapshot(c->ix));
            snaps++;
            struct stat sb;
            assert_int_equal(stat(c->ix->snap_path, &sb), 0);
            if (sb.st_size == ref_size)
                continue; /* the size of a 16-vector file: cheap, so many snapshots fit */
            rag_vector_backend *b = new_backend();
            OK(b->load(b->state, c->ix->snap_path));
            uint64_t held = b->count(b->state);
            if (held != NDOC * CHK)
                bad = (int)held;
            b->free(b->state);
            free(b);
        }
        pthread_join(th, NULL);
        OK(a.rc);
    }
    if (bad)
        fail_msg("a snapshot written during applies holds %d vectors for %d live labels "
                 "(tombstones in the file)",
                 bad, NDOC * CHK);
    assert_true(snaps > 0);
}

static int group_fake(void **state)
{
    (void)state;
    g_faiss = 0;
    return 0;
}

static int group_faiss(void **state)
{
    (void)state;
    g_faiss = 1;
    return 0;
}

#define TESTS                                                                                \
    cmocka_unit_test_setup_teardown(test_version_switch, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_acl, setup, teardown),                         \
        cmocka_unit_test_setup_teardown(test_reopen_and_snapshots, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_aborted_nested_txn, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_end_batch_order, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_bad_messages, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_concurrent_switch, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_hnsw_tombstones, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_deferred_removal, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_deferred_removal_threshold, setup, teardown),  \
        cmocka_unit_test_setup_teardown(test_deferred_removal_sixteenth, setup, teardown),  \
        cmocka_unit_test_setup_teardown(test_hnsw_never_pending, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_deferred_removal_unheld_label, setup, teardown), \
        cmocka_unit_test_setup_teardown(test_snapshot_during_apply, setup, teardown)

int main(void)
{
    const struct CMUnitTest fake[] = {TESTS};
    const struct CMUnitTest faiss[] = {TESTS};
    int failed = cmocka_run_group_tests_name("index on the fake backend", fake, group_fake, NULL);
    failed += cmocka_run_group_tests_name("index on FAISS IDMap2,Flat", faiss, group_faiss, NULL);
    return failed;
}
