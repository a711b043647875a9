/*
 * The index side of the saga: doc.revert (a pending version is answered REVERTED but not
 * refused: its doc.embedded retried later still completes forward; an active one rolls
 * forward; idempotence; removal of stray labels of the reverted version), doc.failed from the
 * doc.embedded consumer's on_dead hook, and the trails every doc.indexed carries.
 * Driven through the real consumers on the LMDB broker, on the fake backend and on FAISS.
 */
#include <math.h>
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

#define DIM 8

#include "index_test_util.h"

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

static int g_faiss;
static int g_counter;

static void t_open(tctx *c)
{
    rag_vector_backend *b = NULL;
    if (g_faiss)
        OK(rag_vector_backend_faiss_new(&b, DIM, "IDMap2,Flat"));
    else
        OK(rag_fake_vector_backend_new(&b, DIM));
    OK(rag_index_open(&c->ix, &c->cfg, b));
}

static int setup(void **state)
{
    tctx *c = calloc(1, sizeof *c);
    char name[64];
    snprintf(name, sizeof name, "index-revert-%s-%d", g_faiss ? "faiss" : "fake", ++g_counter);
    c->root = rag_test_tmpdir(name);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 64;
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

/* ---- events ------------------------------------------------------------------------------ */

/* A trail of `hops` hops as an upstream module would have left it. */
static void make_trail(rag_ev_trail *t, size_t hops)
{
    memset(t, 0, sizeof *t);
    static const char *mods[] = {"ingest", "embed", "ingest", "embed"};
    static const char *evs[] = {"put", RAG_TOPIC_CHUNKED, RAG_TOPIC_FAILED, "retry"};
    for (size_t i = 0; i < hops; i++)
        rag_ev_trail_add(t, mods[i % 4], evs[i % 4], 1000 + i, 1, RAG_OK);
}

static void publish_id(tctx *c, const char *topic, const rag_wbuf *w, const char *id)
{
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    if (id)
        snprintf(m.id, sizeof m.id, "%s", id);
    else
        snprintf(m.id, sizeof m.id, "test-%d", ++c->msg_no);
    m.data = w->data;
    m.size = w->len;
    OK(c->t->publish(c->t->state, &m, 1));
}

static void encode_embedded(rag_wbuf *w, const char *doc, uint64_t version, size_t nvec,
                            size_t hops, uint32_t dim)
{
    rag_ev_vector *vs = calloc(nvec + 1, sizeof *vs);
    float *vecs = calloc((nvec + 1) * dim, sizeof *vecs);
    for (size_t i = 0; i < nvec; i++) {
        vs[i].chunk_no = (uint32_t)i;
        vs[i].text = "";
        vs[i].vector = vecs + i * dim;
        if (dim == DIM)
            chunk_vec(doc, version, (uint32_t)i, vs[i].vector);
    }
    rag_ev_embedded ev = {.doc_id = doc, .version = version, .dim = dim,
                          .vector_count = nvec, .vectors = vs};
    make_trail(&ev.trail, hops);
    rag_wbuf_init(w);
    OK(rag_ev_embedded_encode(&ev, w));
    free(vs);
    free(vecs);
}

static void put_embedded(tctx *c, const char *doc, uint64_t version, size_t nvec, size_t hops)
{
    rag_wbuf w;
    encode_embedded(&w, doc, version, nvec, hops, DIM);
    publish_id(c, RAG_TOPIC_EMBEDDED, &w, NULL);
    rag_wbuf_free(&w);
}

static void put_revert_id(tctx *c, const char *doc, uint64_t version, size_t hops,
                          const char *id)
{
    rag_ev_revert ev = {.doc_id = doc, .version = version};
    make_trail(&ev.trail, hops);
    rag_wbuf w;
    rag_wbuf_init(&w);
    OK(rag_ev_revert_encode(&ev, &w));
    publish_id(c, RAG_TOPIC_REVERT, &w, id);
    rag_wbuf_free(&w);
}

static void put_revert(tctx *c, const char *doc, uint64_t version)
{
    put_revert_id(c, doc, version, 3, NULL);
}

static void put_deleted(tctx *c, const char *doc, uint64_t version, size_t hops)
{
    rag_ev_deleted ev = {.doc_id = doc, .version = version};
    make_trail(&ev.trail, hops);
    rag_wbuf w;
    rag_wbuf_init(&w);
    OK(rag_ev_deleted_encode(&ev, &w));
    publish_id(c, RAG_TOPIC_DELETED, &w, NULL);
    rag_wbuf_free(&w);
}

typedef struct hop_copy {
    char module[16], event[32];
    uint32_t attempts;
    int32_t code;
} hop_copy;

typedef struct indexed_ev {
    char doc[64];
    uint64_t version;
    uint32_t status, count;
    size_t hops;
    hop_copy first, last;
} indexed_ev;

static void copy_hop(hop_copy *d, const rag_ev_hop *h)
{
    snprintf(d->module, sizeof d->module, "%s", h->module);
    snprintf(d->event, sizeof d->event, "%s", h->event);
    d->attempts = h->attempts;
    d->code = h->code;
}

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
            indexed_ev *o = &out[got++];
            memset(o, 0, sizeof *o);
            snprintf(o->doc, sizeof o->doc, "%s", ev.doc_id);
            o->version = ev.version;
            o->status = ev.status;
            o->count = ev.vector_count;
            o->hops = ev.trail.count;
            if (ev.trail.count) {
                copy_hop(&o->first, &ev.trail.hops[0]);
                copy_hop(&o->last, &ev.trail.hops[ev.trail.count - 1]);
            }
        }
        OK(c->t->ack(c->t->state, msgs, n));
        if (c->t->release)
            c->t->release(c->t->state, msgs, n);
    }
    return got;
}

/* ---- state ------------------------------------------------------------------------------ */

static size_t doc_hits(tctx *c, const char *doc, uint64_t version)
{
    float q[DIM];
    chunk_vec(doc, version, 0, q);
    rag_index_hit hits[64];
    rag_acl_filter all = {1, NULL, 0};
    const rag_index_reader *r = rag_index_reader_get(c->ix);
    size_t n = 0, m = 0;
    OK(r->search(r->self, q, 64, &all, hits, &n));
    for (size_t i = 0; i < n; i++)
        if (strcmp(hits[i].doc_id, doc) == 0) {
            assert_int_equal(hits[i].version, version);
            m++;
        }
    return m;
}

static rag_index_stats stats(tctx *c)
{
    rag_index_stats st;
    OK(rag_index_stats_get(c->ix, &st));
    return st;
}

/* The docs row of `doc` as stored (d->exists = 0 when there is none). */
static void doc_row(tctx *c, const char *doc, ix_docrec *d)
{
    MDB_txn *rt;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, MDB_RDONLY, &rt), 0);
    OK(rag_index__doc_get(c->ix, rt, doc, d));
    mdb_txn_abort(rt);
}

static uint64_t dead_count(tctx *c)
{
    uint64_t n = 0;
    OK(rag_dead_count(rag_index_env(c->ix), &n));
    return n;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* Revert of a version that never arrived: answered REVERTED, nothing recorded, and its
 * doc.embedded retried later (the dead letter, once the cause is fixed) is applied. */
static void test_revert_pending(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc", 1, 3, 2);
    drain_all(c);
    rag_index_stats before = stats(c);

    put_revert(c, "doc", 2);
    drain_all(c);
    ix_docrec d;
    doc_row(c, "doc", &d);
    assert_int_equal(d.active, 1);
    assert_int_equal(d.n, 3);
    rag_index__doc_clear(&d);
    rag_index_stats after = stats(c);
    assert_int_equal(after.epoch, before.epoch); /* nothing removed: no epoch, no log */
    assert_int_equal(after.log_seq, before.log_seq);
    assert_int_equal(doc_hits(c, "doc", 1), 3);

    /* the dead letter retried by hand after the fix: the saga completes forward */
    put_embedded(c, "doc", 2, 4, 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc", 2), 4); /* every hit of "doc" is of v2 */
    after = stats(c);
    assert_int_equal(after.vectors, 4);
    assert_int_equal(after.epoch, before.epoch + 1);
    assert_int_equal(after.log_seq, before.log_seq + 1);
    assert_int_equal(rag_index__backend_count(c->ix), 4);
    doc_row(c, "doc", &d);
    assert_int_equal(d.active, 2);
    assert_int_equal(d.n, 4);
    rag_index__doc_clear(&d);

    /* a revert of an older version removes nothing; its late doc.embedded is superseded */
    put_revert(c, "doc", 1);
    drain_all(c);
    put_embedded(c, "doc", 1, 3, 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc", 2), 4);
    assert_int_equal(stats(c).epoch, after.epoch);

    /* a document the index never saw: answered REVERTED, no row is created, and its
     * doc.embedded retried later is applied */
    put_revert(c, "fresh", 1);
    drain_all(c);
    doc_row(c, "fresh", &d);
    assert_false(d.exists);
    rag_index__doc_clear(&d);
    assert_int_equal(stats(c).documents, 1);
    put_embedded(c, "fresh", 1, 2, 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "fresh", 1), 2);
    assert_int_equal(stats(c).documents, 2);
    assert_int_equal(dead_count(c), 0);

    indexed_ev ev[16];
    size_t n = take_indexed(c, ev, 16);
    assert_int_equal(n, 7);
    assert_int_equal(ev[0].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(ev[1].status, RAG_INDEXED_REVERTED); /* the revert */
    assert_int_equal(ev[1].version, 2);
    assert_int_equal(ev[1].count, 0);
    assert_string_equal(ev[1].last.event, RAG_TOPIC_REVERT);
    assert_int_equal(ev[2].status, RAG_INDEXED_ACTIVE); /* the retried doc.embedded */
    assert_int_equal(ev[2].version, 2);
    assert_int_equal(ev[2].count, 4);
    assert_string_equal(ev[2].last.event, RAG_TOPIC_EMBEDDED);
    assert_int_equal(ev[3].status, RAG_INDEXED_REVERTED);
    assert_int_equal(ev[3].version, 1);
    assert_int_equal(ev[4].status, RAG_INDEXED_SUPERSEDED);
    assert_int_equal(ev[4].version, 1);
    assert_int_equal(ev[5].status, RAG_INDEXED_REVERTED);
    assert_string_equal(ev[5].doc, "fresh");
    assert_int_equal(ev[6].status, RAG_INDEXED_ACTIVE);
    assert_string_equal(ev[6].doc, "fresh");
    assert_int_equal(ev[6].version, 1);
}

/* Revert of the version that is active: nothing removed, the saga completes forward. */
static void test_revert_active(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc", 1, 3, 2);
    drain_all(c);
    put_embedded(c, "doc", 2, 4, 2);
    drain_all(c);
    rag_index_stats before = stats(c);
    put_revert(c, "doc", 2);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc", 2), 4);
    rag_index_stats after = stats(c);
    assert_int_equal(after.vectors, 4);
    assert_int_equal(after.epoch, before.epoch);
    assert_int_equal(after.log_seq, before.log_seq);
    ix_docrec d;
    doc_row(c, "doc", &d);
    assert_int_equal(d.active, 2);
    assert_int_equal(d.n, 4);
    rag_index__doc_clear(&d);

    /* an old version (already replaced): reverted, nothing to remove */
    put_revert(c, "doc", 1);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc", 2), 4);
    doc_row(c, "doc", &d);
    assert_int_equal(d.active, 2);
    assert_int_equal(d.n, 4);
    rag_index__doc_clear(&d);
    assert_int_equal(stats(c).epoch, before.epoch);

    indexed_ev ev[8];
    assert_int_equal(take_indexed(c, ev, 8), 4);
    assert_int_equal(ev[2].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(ev[2].version, 2);
    assert_int_equal(ev[2].count, 4);
    assert_string_equal(ev[2].last.event, RAG_TOPIC_REVERT);
    assert_int_equal(ev[3].status, RAG_INDEXED_REVERTED);
    assert_int_equal(ev[3].version, 1);
}

/* The same revert delivered twice, and two reverts of one version: one effect. */
static void test_revert_idempotent(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc", 1, 2, 1);
    drain_all(c);
    rag_index_stats before = stats(c);
    put_revert_id(c, "doc", 5, 1, "ingest-00000000000000aa");
    drain_all(c);
    put_revert_id(c, "doc", 5, 1, "ingest-00000000000000aa"); /* redelivery: inbox skips it */
    drain_all(c);
    put_revert(c, "doc", 5); /* a second compensation of the same version */
    drain_all(c);
    ix_docrec d;
    doc_row(c, "doc", &d);
    assert_int_equal(d.active, 1);
    assert_int_equal(d.n, 2);
    rag_index__doc_clear(&d);
    rag_index_stats after = stats(c);
    assert_int_equal(after.epoch, before.epoch);
    assert_int_equal(after.log_seq, before.log_seq);
    assert_int_equal(after.vectors, 2);
    indexed_ev ev[8];
    assert_int_equal(take_indexed(c, ev, 8), 3);
    assert_int_equal(ev[1].status, RAG_INDEXED_REVERTED);
    assert_int_equal(ev[2].status, RAG_INDEXED_REVERTED);
    assert_int_equal(ev[2].version, 5);
    assert_int_equal(dead_count(c), 0);

    /* reverts of a document the index never saw, twice: no row either time */
    put_revert(c, "none", 3);
    put_revert(c, "none", 3);
    drain_all(c);
    doc_row(c, "none", &d);
    assert_false(d.exists);
    rag_index__doc_clear(&d);
    assert_int_equal(stats(c).epoch, before.epoch);

    /* however many reverts came first, the retried doc.embedded of v5 is applied once, and
     * a further revert of it (now active) rolls forward */
    put_embedded(c, "doc", 5, 3, 1);
    drain_all(c);
    put_revert(c, "doc", 5);
    drain_all(c);
    assert_int_equal(doc_hits(c, "doc", 5), 3);
    after = stats(c);
    assert_int_equal(after.epoch, before.epoch + 1);
    assert_int_equal(after.vectors, 3);
    assert_int_equal(take_indexed(c, ev, 8), 4);
    assert_int_equal(ev[0].status, RAG_INDEXED_REVERTED);
    assert_string_equal(ev[0].doc, "none");
    assert_int_equal(ev[1].status, RAG_INDEXED_REVERTED);
    assert_int_equal(ev[2].status, RAG_INDEXED_ACTIVE);
    assert_string_equal(ev[2].last.event, RAG_TOPIC_EMBEDDED);
    assert_int_equal(ev[3].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(ev[3].version, 5);
    assert_int_equal(ev[3].count, 3);
    assert_string_equal(ev[3].last.event, RAG_TOPIC_REVERT);
}

/* Labels of the reverted version listed in the row are removed (logged, epoch++), once. */
static void test_revert_removes_labels(void **state)
{
    tctx *c = *state;
    put_embedded(c, "doc", 1, 3, 1);
    put_embedded(c, "other", 1, 2, 1);
    drain_all(c);
    /* Make one of doc's labels claim version 7, as a row listing two versions would. */
    ix_docrec d;
    doc_row(c, "doc", &d);
    assert_int_equal(d.n, 3);
    int64_t victim = d.labels[1];
    rag_index__doc_clear(&d);
    MDB_env *env = rag_index_env(c->ix);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)victim);
    MDB_val k = {8, key}, v;
    assert_int_equal(mdb_get(txn, c->ix->labels, &k, &v), 0);
    uint8_t *row = malloc(v.mv_size);
    memcpy(row, v.mv_data, v.mv_size);
    uint64_t seven = 7;
    memcpy(row, &seven, 8); /* u64 little-endian version first */
    MDB_val nv = {v.mv_size, row};
    assert_int_equal(mdb_put(txn, c->ix->labels, &k, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    free(row);

    rag_index_stats before = stats(c);
    put_revert(c, "doc", 7);
    drain_all(c);
    rag_index_stats after = stats(c);
    assert_int_equal(after.epoch, before.epoch + 1);
    assert_int_equal(after.log_seq, before.log_seq + 1);
    assert_int_equal(after.vectors, 4);
    assert_int_equal(doc_hits(c, "doc", 1), 2);
    assert_int_equal(doc_hits(c, "other", 1), 2);
    assert_int_equal(rag_index__backend_count(c->ix), 4);
    doc_row(c, "doc", &d);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.active, 1);
    for (size_t i = 0; i < d.n; i++)
        assert_true(d.labels[i] != victim);
    rag_index__doc_clear(&d);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_get(txn, c->ix->labels, &k, &v), MDB_NOTFOUND);
    assert_int_equal(mdb_get(txn, c->ix->vectors, &k, &v), MDB_NOTFOUND);
    mdb_txn_abort(txn);

    /* again: nothing left to remove */
    put_revert(c, "doc", 7);
    drain_all(c);
    assert_int_equal(stats(c).epoch, after.epoch);

    /* the removal survives a restart (log replay onto the snapshot) */
    OK(rag_index_snapshot(c->ix));
    put_embedded(c, "late", 1, 1, 1);
    drain_all(c);
    rag_index__close_nosnap(c->ix);
    t_open(c);
    assert_int_equal(doc_hits(c, "doc", 1), 2);
    assert_int_equal(rag_index__backend_count(c->ix), 5);
}

/* Permanent failures of doc.embedded report doc.failed with the trail; malformed payloads
 * fall back to a peek, or to nothing. */
static void test_on_dead_failed(void **state)
{
    tctx *c = *state;
    rag_wbuf w;
    encode_embedded(&w, "bad-dim", 4, 1, 2, DIM * 2); /* permanent: wrong dimension */
    publish_id(c, RAG_TOPIC_EMBEDDED, &w, NULL);
    rag_wbuf_free(&w);
    /* format byte, id and version, then garbage: not decodable, but peekable */
    rag_wbuf_init(&w);
    rag_wbuf_u8(&w, 1);
    rag_wbuf_cstr(&w, "peeky");
    rag_wbuf_u64(&w, 9);
    rag_wbuf_u32(&w, 0xffffffffu);
    publish_id(c, RAG_TOPIC_EMBEDDED, &w, NULL);
    rag_wbuf_free(&w);
    /* nothing recognisable: dead letter only */
    rag_wbuf_init(&w);
    rag_wbuf_cstr(&w, "junk");
    publish_id(c, RAG_TOPIC_EMBEDDED, &w, NULL);
    rag_wbuf_free(&w);
    /* decodable, but no document can have that id: dead letter only */
    encode_embedded(&w, "", 2, 1, 1, DIM);
    publish_id(c, RAG_TOPIC_EMBEDDED, &w, NULL);
    rag_wbuf_free(&w);
    drain_all(c);
    assert_int_equal(dead_count(c), 4);
    assert_int_equal(stats(c).vectors, 0);

    size_t got = 0;
    int seen_bad = 0, seen_peek = 0;
    rag_queue_message msgs[8];
    size_t n = 0;
    OK(c->t->fetch(c->t->state, RAG_TOPIC_FAILED, 8, 10000, msgs, &n));
    for (size_t i = 0; i < n; i++) {
        rag_ev_failed f;
        OK(rag_ev_failed_decode(msgs[i].data, msgs[i].size, &f));
        got++;
        assert_string_equal(f.stage, "index");
        assert_true(f.trail.count >= 1);
        const rag_ev_hop *last = &f.trail.hops[f.trail.count - 1];
        assert_string_equal(last->module, "index");
        assert_string_equal(last->event, RAG_TOPIC_EMBEDDED);
        assert_int_equal(last->attempts, 1);
        assert_int_equal(last->code, f.code);
        if (strcmp(f.doc_id, "bad-dim") == 0) {
            seen_bad = 1;
            assert_int_equal(f.version, 4);
            assert_int_equal(f.code, RAG_EINVAL);
            assert_non_null(strstr(f.reason, "dimension"));
            assert_int_equal(f.trail.count, 3); /* ingest, embed, index */
            assert_string_equal(f.trail.hops[0].module, "ingest");
            assert_string_equal(f.trail.hops[1].module, "embed");
        } else {
            assert_string_equal(f.doc_id, "peeky");
            seen_peek = 1;
            assert_int_equal(f.version, 9);
            assert_int_equal(f.code, RAG_ECORRUPT);
            assert_int_equal(f.trail.count, 1);
        }
    }
    OK(c->t->ack(c->t->state, msgs, n));
    if (c->t->release)
        c->t->release(c->t->state, msgs, n);
    assert_int_equal(got, 2);
    assert_true(seen_bad && seen_peek);
    indexed_ev ev[4];
    assert_int_equal(take_indexed(c, ev, 4), 0);

    /* the hook itself never fails on a malformed payload, and adds nothing for it */
    rag_consumer *cons = rag_index_consumer_embedded(c->ix);
    assert_non_null(cons->on_dead);
    uint64_t pending0 = 0, pending1 = 0;
    OK(rag_outbox_pending(rag_index_outbox(c->ix), &pending0));
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, 0, &txn), 0);
    const char junk[] = {0x01, 0x7f};
    rag_queue_message m = {RAG_TOPIC_EMBEDDED, "x-1", junk, sizeof junk, 3, 0};
    OK(cons->on_dead(cons->self, txn, &m, RAG_ECORRUPT, "bad"));
    rag_queue_message empty = {RAG_TOPIC_EMBEDDED, "x-2", NULL, 0, 1, 0};
    OK(cons->on_dead(cons->self, txn, &empty, RAG_ECORRUPT, NULL));
    assert_int_equal(mdb_txn_commit(txn), 0);
    OK(rag_outbox_pending(rag_index_outbox(c->ix), &pending1));
    assert_int_equal(pending1, pending0);
    /* the other consumers have no hook: nothing of a version to undo there */
    assert_null(rag_index_consumer_deleted(c->ix)->on_dead);
    assert_null(rag_index_consumer_revert(c->ix)->on_dead);
}

/* Every doc.indexed carries the handled event's trail plus one "index" hop. */
static void test_trails(void **state)
{
    tctx *c = *state;
    put_embedded(c, "t", 1, 2, 2);
    drain_all(c);
    put_embedded(c, "t", 1, 2, 3); /* the active version again: confirmed */
    put_embedded(c, "t", 1, 0, 0); /* no trail at all: still answered with one hop */
    drain_all(c);
    put_deleted(c, "t", 1, 1);
    drain_all(c);
    put_revert_id(c, "t", 4, 4, NULL);
    drain_all(c);
    put_embedded(c, "full", 1, 1, RAG_EV_TRAIL_MAX); /* a full trail keeps its length */
    drain_all(c);

    indexed_ev ev[8];
    size_t n = take_indexed(c, ev, 8);
    assert_int_equal(n, 6);
    const size_t want_hops[6] = {3, 4, 1, 2, 5, RAG_EV_TRAIL_MAX};
    const char *want_event[6] = {RAG_TOPIC_EMBEDDED, RAG_TOPIC_EMBEDDED, RAG_TOPIC_EMBEDDED,
                                 RAG_TOPIC_DELETED,  RAG_TOPIC_REVERT,   RAG_TOPIC_EMBEDDED};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ev[i].hops, want_hops[i]);
        assert_string_equal(ev[i].last.module, "index");
        assert_string_equal(ev[i].last.event, want_event[i]);
        assert_int_equal(ev[i].last.attempts, 1);
        assert_int_equal(ev[i].last.code, RAG_OK);
        if (want_hops[i] > 1)
            assert_string_equal(ev[i].first.module, "ingest"); /* upstream hops kept */
    }
    assert_int_equal(ev[0].status, RAG_INDEXED_ACTIVE);
    assert_int_equal(ev[3].status, RAG_INDEXED_DELETED);
    assert_int_equal(ev[4].status, RAG_INDEXED_REVERTED);
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
    cmocka_unit_test_setup_teardown(test_revert_pending, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_revert_active, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_revert_idempotent, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_revert_removes_labels, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_on_dead_failed, setup, teardown),              \
        cmocka_unit_test_setup_teardown(test_trails, setup, teardown)

int main(void)
{
    const struct CMUnitTest fake[] = {TESTS};
    const struct CMUnitTest faiss[] = {TESTS};
    int failed = cmocka_run_group_tests_name("index saga on the fake backend", fake,
                                             group_fake, NULL);
    failed += cmocka_run_group_tests_name("index saga on FAISS IDMap2,Flat", faiss, group_faiss,
                                          NULL);
    return failed;
}
