/*
 * rag_index_scan_docs / rag_index_scan_labels / rag_index_check: scans report what the
 * consumers wrote; problems injected straight into the env's tables (or into the view and
 * backend) are found, repaired in one logged change, and gone on a second check; searches
 * stop returning what was removed, also after a restart.  On the fake backend and on FAISS.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static void t_reopen(tctx *c)
{
    rag_index__close_nosnap(c->ix);
    t_open(c);
}

static int setup(void **state)
{
    tctx *c = calloc(1, sizeof *c);
    char name[64];
    snprintf(name, sizeof name, "index-check-%s-%d", g_faiss ? "faiss" : "fake", ++g_counter);
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

/* ---- driving the index ------------------------------------------------------------------- */

static void publish(tctx *c, const char *topic, const rag_wbuf *w)
{
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    snprintf(m.id, sizeof m.id, "test-%d", __atomic_add_fetch(&c->msg_no, 1, __ATOMIC_RELAXED));
    m.data = w->data;
    m.size = w->len;
    OK(c->t->publish(c->t->state, &m, 1));
}

static void put_embedded(tctx *c, const char *doc, uint64_t version, size_t nvec)
{
    rag_ev_vector *vs = calloc(nvec + 1, sizeof *vs);
    float *vecs = calloc((nvec + 1) * DIM, sizeof *vecs);
    for (size_t i = 0; i < nvec; i++) {
        vs[i].chunk_no = (uint32_t)i;
        vs[i].text = "";
        vs[i].vector = vecs + i * DIM;
        chunk_vec(doc, version, (uint32_t)i, vs[i].vector);
    }
    rag_ev_embedded ev = {.doc_id = doc, .version = version, .dim = DIM,
                          .vector_count = nvec, .vectors = vs};
    rag_wbuf w;
    rag_wbuf_init(&w);
    OK(rag_ev_embedded_encode(&ev, &w));
    publish(c, RAG_TOPIC_EMBEDDED, &w);
    rag_wbuf_free(&w);
    free(vs);
    free(vecs);
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

/* Does a search with the exact vector of doc@version chunk return that chunk? */
static int findable(tctx *c, const char *doc, uint64_t version, uint32_t chunk)
{
    float q[DIM];
    chunk_vec(doc, version, chunk, q);
    rag_index_hit hits[32];
    size_t n = 0;
    const rag_index_reader *r = rag_index_reader_get(c->ix);
    OK(r->search(r->self, q, 32, NULL, hits, &n));
    for (size_t i = 0; i < n; i++)
        if (strcmp(hits[i].doc_id, doc) == 0 && hits[i].version == version &&
            hits[i].chunk_no == chunk)
            return 1;
    return 0;
}

/* ---- problems ----------------------------------------------------------------------------- */

typedef struct seen_problem {
    char what[32], doc[64], detail[256];
    int64_t label;
} seen_problem;

typedef struct problems {
    size_t n;
    seen_problem p[32];
    int stop_with; /* nonzero: the callback returns it */
} problems;

static int on_problem(void *arg, const rag_index_problem *p)
{
    problems *ps = arg;
    assert_non_null(p->what);
    assert_non_null(p->doc_id);
    assert_non_null(p->detail);
    if (ps->n < 32) {
        seen_problem *s = &ps->p[ps->n];
        snprintf(s->what, sizeof s->what, "%s", p->what);
        snprintf(s->doc, sizeof s->doc, "%s", p->doc_id);
        snprintf(s->detail, sizeof s->detail, "%s", p->detail);
        s->label = p->label;
    }
    ps->n++;
    return ps->stop_with;
}

static size_t count_what(const problems *ps, const char *what, const char *doc, int64_t label)
{
    size_t m = 0;
    for (size_t i = 0; i < ps->n && i < 32; i++)
        if (strcmp(ps->p[i].what, what) == 0 && (!doc || strcmp(ps->p[i].doc, doc) == 0) &&
            (label < 0 || ps->p[i].label == label))
            m++;
    return m;
}

static uint64_t check(tctx *c, int repair, problems *ps)
{
    problems local;
    if (!ps)
        ps = &local;
    memset(ps, 0, sizeof *ps);
    uint64_t found = 99;
    OK(rag_index_check(c->ix, repair, on_problem, ps, &found));
    assert_int_equal(found, ps->n);
    return found;
}

/* ---- injecting damage ---------------------------------------------------------------------- */

static MDB_txn *wtxn(tctx *c)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, 0, &txn), 0);
    return txn;
}

static void put_label_row(tctx *c, MDB_txn *txn, int64_t label, const char *doc,
                          uint64_t version, uint32_t chunk)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_u64(&w, version);
    rag_wbuf_u32(&w, chunk);
    rag_wbuf_u32(&w, 0);
    rag_wbuf_cstr(&w, doc);
    MDB_val k = {8, key}, v = {w.len, w.data};
    assert_int_equal(mdb_put(txn, c->ix->labels, &k, &v, 0), 0);
    rag_wbuf_free(&w);
}

static void put_vector_row(tctx *c, MDB_txn *txn, int64_t label, const float *vec)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_f32s(&w, vec, DIM);
    MDB_val k = {8, key}, v = {w.len, w.data};
    assert_int_equal(mdb_put(txn, c->ix->vectors, &k, &v, 0), 0);
    rag_wbuf_free(&w);
}

static void del_row(MDB_txn *txn, MDB_dbi dbi, int64_t label)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    MDB_val k = {8, key};
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
}

static int has_row(tctx *c, MDB_dbi dbi, int64_t label)
{
    MDB_txn *rt;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, MDB_RDONLY, &rt), 0);
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    MDB_val k = {8, key}, v;
    int found = mdb_get(rt, dbi, &k, &v) == 0;
    mdb_txn_abort(rt);
    return found;
}

static void doc_row(tctx *c, const char *doc, ix_docrec *d)
{
    MDB_txn *rt;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, MDB_RDONLY, &rt), 0);
    OK(rag_index__doc_get(c->ix, rt, doc, d));
    mdb_txn_abort(rt);
}

/* Label of doc's chunk `chunk` (per the labels table). */
static int64_t label_of(tctx *c, const char *doc, uint32_t chunk)
{
    ix_docrec d;
    doc_row(c, doc, &d);
    int64_t found = -1;
    MDB_txn *rt;
    assert_int_equal(mdb_txn_begin(rag_index_env(c->ix), NULL, MDB_RDONLY, &rt), 0);
    for (size_t i = 0; i < d.n && found < 0; i++) {
        uint8_t key[8];
        rag_be64_put(key, (uint64_t)d.labels[i]);
        MDB_val k = {8, key}, v;
        assert_int_equal(mdb_get(rt, c->ix->labels, &k, &v), 0);
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        rag_rbuf_u64(&r);
        if (rag_rbuf_u32(&r) == chunk)
            found = d.labels[i];
    }
    mdb_txn_abort(rt);
    rag_index__doc_clear(&d);
    assert_true(found >= 0);
    return found;
}

static rag_index_stats stats(tctx *c)
{
    rag_index_stats st;
    OK(rag_index_stats_get(c->ix, &st));
    return st;
}

/* ---- scans --------------------------------------------------------------------------------- */

typedef struct doc_seen {
    char id[64];
    uint64_t active, deleted_through;
    size_t n;
    int64_t labels[8];
} doc_seen;

typedef struct docs_acc {
    size_t n;
    doc_seen d[16];
    int stop_after;
} docs_acc;

static int on_doc(void *arg, const rag_index_doc_state *d)
{
    docs_acc *a = arg;
    assert_true(a->n < 16);
    doc_seen *s = &a->d[a->n++];
    snprintf(s->id, sizeof s->id, "%s", d->doc_id);
    s->active = d->active;
    s->deleted_through = d->deleted_through;
    s->n = d->label_count;
    for (size_t i = 0; i < d->label_count && i < 8; i++)
        s->labels[i] = d->labels[i];
    return a->stop_after && (int)a->n == a->stop_after ? 42 : 0;
}

typedef struct labels_acc {
    size_t n;
    rag_index_label_state l[32];
    char docs[32][64];
} labels_acc;

static int on_label(void *arg, const rag_index_label_state *l)
{
    labels_acc *a = arg;
    assert_true(a->n < 32);
    a->l[a->n] = *l;
    snprintf(a->docs[a->n], sizeof a->docs[0], "%s", l->doc_id);
    a->l[a->n].doc_id = a->docs[a->n];
    a->n++;
    return 0;
}

static const doc_seen *find_doc(const docs_acc *a, const char *id)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->d[i].id, id) == 0)
            return &a->d[i];
    return NULL;
}

static void test_scans(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, 3);
    put_embedded(c, "b", 1, 2);
    drain_all(c);
    put_embedded(c, "a", 2, 2);
    put_deleted(c, "b", 1);
    put_revert(c, "c", 4);
    drain_all(c);

    docs_acc da;
    memset(&da, 0, sizeof da);
    OK(rag_index_scan_docs(c->ix, on_doc, &da));
    assert_int_equal(da.n, 2); /* a revert of an unknown document leaves no row */
    const doc_seen *a = find_doc(&da, "a"), *b = find_doc(&da, "b"), *cc = find_doc(&da, "c");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(cc);
    assert_int_equal(a->active, 2);
    assert_int_equal(a->n, 2);
    assert_int_equal(b->active, 0);
    assert_int_equal(b->deleted_through, 1);
    assert_int_equal(b->n, 0);

    labels_acc la;
    memset(&la, 0, sizeof la);
    OK(rag_index_scan_labels(c->ix, on_label, &la));
    assert_int_equal(la.n, 2);
    for (size_t i = 0; i < la.n; i++) {
        assert_string_equal(la.l[i].doc_id, "a");
        assert_int_equal(la.l[i].version, 2);
        assert_int_equal(la.l[i].has_vector, 1);
        assert_true(la.l[i].label == a->labels[0] || la.l[i].label == a->labels[1]);
    }
    assert_true(la.l[0].chunk_no != la.l[1].chunk_no);

    /* a label whose vector is gone is reported as such */
    MDB_txn *txn = wtxn(c);
    del_row(txn, c->ix->vectors, la.l[0].label);
    assert_int_equal(mdb_txn_commit(txn), 0);
    memset(&la, 0, sizeof la);
    OK(rag_index_scan_labels(c->ix, on_label, &la));
    assert_int_equal(la.n, 2);
    assert_int_equal(la.l[0].has_vector + la.l[1].has_vector, 1);

    /* a nonzero callback return stops the scan and is returned */
    memset(&da, 0, sizeof da);
    da.stop_after = 1;
    assert_int_equal(rag_index_scan_docs(c->ix, on_doc, &da), 42);
    assert_int_equal(da.n, 1);
    assert_int_equal(rag_index_scan_docs(NULL, on_doc, &da), RAG_EINVAL);
}

/* ---- check and repair ------------------------------------------------------------------------ */

static void test_check_clean(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, 3);
    put_embedded(c, "b", 1, 2);
    drain_all(c);
    put_embedded(c, "a", 2, 4);
    put_deleted(c, "b", 1);
    put_revert(c, "a", 3);
    drain_all(c);
    rag_index_stats before = stats(c);
    assert_int_equal(check(c, 0, NULL), 0);
    assert_int_equal(check(c, 1, NULL), 0);
    rag_index_stats after = stats(c);
    assert_int_equal(after.epoch, before.epoch); /* nothing to repair: nothing written */
    assert_int_equal(after.log_seq, before.log_seq);
    uint64_t found = 5;
    OK(rag_index_check(c->ix, 0, NULL, NULL, &found)); /* no callback: just the count */
    assert_int_equal(found, 0);
    assert_int_equal(rag_index_check(NULL, 0, NULL, NULL, &found), RAG_EINVAL);
}

static void test_check_unreferenced(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, 3);
    drain_all(c);
    /* A labels + vectors row nobody lists (what a lost docs update would leave), and a
     * vectors row without any labels row. */
    float gv[DIM], ov[DIM];
    chunk_vec("ghost", 1, 0, gv);
    chunk_vec("orphan", 1, 0, ov);
    MDB_txn *txn = wtxn(c);
    put_label_row(c, txn, 1000, "ghost", 1, 0);
    put_vector_row(c, txn, 1000, gv);
    put_vector_row(c, txn, 2000, ov);
    assert_int_equal(mdb_txn_commit(txn), 0);
    /* after a restart the view and the backend are derived from the tables: ghost is live */
    t_reopen(c);
    assert_true(findable(c, "ghost", 1, 0));

    problems ps;
    uint64_t found = check(c, 0, &ps);
    assert_int_equal(found, 2);
    assert_int_equal(count_what(&ps, "unreferenced_label", "ghost", 1000), 1);
    assert_int_equal(count_what(&ps, "unreferenced_label", "", 2000), 1);
    assert_true(findable(c, "ghost", 1, 0)); /* a check alone changes nothing */

    /* a callback that stops the report stops the repair too */
    problems stop;
    memset(&stop, 0, sizeof stop);
    stop.stop_with = 7;
    assert_int_equal(rag_index_check(c->ix, 1, on_problem, &stop, &found), 7);
    assert_int_equal(stop.n, 1);
    assert_int_equal(found, 2);
    assert_true(has_row(c, c->ix->labels, 1000));

    rag_index_stats before = stats(c);
    assert_int_equal(check(c, 1, &ps), 2);
    rag_index_stats after = stats(c);
    assert_int_equal(after.epoch, before.epoch + 1);
    assert_int_equal(after.log_seq, before.log_seq + 1);
    assert_int_equal(after.vectors, 3);
    assert_false(findable(c, "ghost", 1, 0));
    assert_true(findable(c, "a", 1, 2));
    assert_false(has_row(c, c->ix->labels, 1000));
    assert_false(has_row(c, c->ix->vectors, 1000));
    assert_false(has_row(c, c->ix->vectors, 2000));
    assert_int_equal(rag_index__backend_count(c->ix), 3);
    assert_int_equal(check(c, 0, NULL), 0);

    /* the removal is in the log: a restart from the snapshot replays it */
    t_reopen(c);
    assert_false(findable(c, "ghost", 1, 0));
    assert_int_equal(check(c, 0, NULL), 0);
}

static void test_check_missing_label(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, 3);
    put_embedded(c, "b", 1, 2);
    drain_all(c);
    OK(rag_index_snapshot(c->ix));
    int64_t la1 = label_of(c, "a", 1), la0 = label_of(c, "a", 0);
    /* a's chunk 1 loses its labels row (the vector stays); b's row also lists a's chunk 0 */
    MDB_txn *txn = wtxn(c);
    del_row(txn, c->ix->labels, la1);
    ix_docrec d;
    OK(rag_index__doc_get(c->ix, txn, "b", &d));
    int64_t *grown = realloc(d.labels, (d.n + 1) * sizeof *grown);
    assert_non_null(grown);
    d.labels = grown;
    d.labels[d.n++] = la0;
    OK(rag_index__doc_put(c->ix, txn, "b", &d));
    assert_int_equal(mdb_txn_commit(txn), 0);
    rag_index__doc_clear(&d);
    assert_true(findable(c, "a", 1, 1)); /* still in the view and the backend */

    problems ps;
    uint64_t found = check(c, 0, &ps);
    assert_int_equal(count_what(&ps, "missing_label", "a", la1), 1);
    assert_int_equal(count_what(&ps, "missing_label", "b", la0), 1);
    /* the view still holds a's chunk 1, the labels table does not */
    assert_int_equal(count_what(&ps, "view_mismatch", NULL, -1), 1);
    assert_int_equal(found, 3);

    assert_int_equal(check(c, 1, NULL), 3);
    assert_false(findable(c, "a", 1, 1));
    assert_true(findable(c, "a", 1, 0)); /* b's bogus reference went, a's label stays */
    assert_true(findable(c, "a", 1, 2));
    assert_true(findable(c, "b", 1, 1));
    assert_false(has_row(c, c->ix->vectors, la1));
    doc_row(c, "a", &d);
    assert_int_equal(d.n, 2);
    rag_index__doc_clear(&d);
    doc_row(c, "b", &d);
    assert_int_equal(d.n, 2);
    rag_index__doc_clear(&d);
    assert_int_equal(stats(c).vectors, 4);
    assert_int_equal(rag_index__backend_count(c->ix), 4);
    assert_int_equal(check(c, 0, NULL), 0);

    t_reopen(c); /* snapshot (taken before the damage) + log replay */
    assert_false(findable(c, "a", 1, 1));
    assert_int_equal(rag_index__backend_count(c->ix), 4);
    assert_int_equal(check(c, 0, NULL), 0);
}

static void test_check_missing_vector(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, 3);
    put_embedded(c, "b", 1, 1);
    drain_all(c);
    int64_t l2 = label_of(c, "a", 2);
    MDB_txn *txn = wtxn(c);
    del_row(txn, c->ix->vectors, l2);
    assert_int_equal(mdb_txn_commit(txn), 0);
    assert_true(findable(c, "a", 1, 2)); /* the backend still has it */

    problems ps;
    assert_int_equal(check(c, 0, &ps), 1);
    assert_int_equal(count_what(&ps, "missing_vector", "a", l2), 1);
    assert_int_equal(check(c, 1, NULL), 1);
    assert_false(findable(c, "a", 1, 2));
    assert_true(findable(c, "a", 1, 0));
    assert_false(has_row(c, c->ix->labels, l2));
    assert_int_equal(stats(c).vectors, 3);
    assert_int_equal(stats(c).documents, 2);
    assert_int_equal(rag_index__backend_count(c->ix), 3);
    assert_int_equal(check(c, 0, NULL), 0);
    t_reopen(c); /* no snapshot: rebuilt from the vectors table */
    assert_false(findable(c, "a", 1, 2));
    assert_int_equal(check(c, 0, NULL), 0);
}

/* The view and backend out of line with correct tables: rebuilt. */
static void test_check_view_rebuild(void **state)
{
    tctx *c = *state;
    put_embedded(c, "a", 1, 3);
    put_embedded(c, "b", 1, 2);
    drain_all(c);
    int64_t l = label_of(c, "a", 1);
    /* the backend loses a vector behind the index's back */
    size_t removed = 0;
    OK(c->ix->backend->remove(c->ix->backend->state, 1, &l, &removed));
    assert_int_equal(removed, 1);
    assert_false(findable(c, "a", 1, 1));
    problems ps;
    assert_int_equal(check(c, 0, &ps), 1);
    assert_int_equal(count_what(&ps, "view_mismatch", "", -1), 1);
    assert_int_equal(ps.p[0].label, -1);
    assert_int_equal(check(c, 1, NULL), 1);
    assert_true(findable(c, "a", 1, 1));
    assert_int_equal(rag_index__backend_count(c->ix), 5);
    assert_int_equal(check(c, 0, NULL), 0);

    /* the view loses a label */
    rag_index__mem_kill_label(&c->ix->mem, l);
    assert_false(findable(c, "a", 1, 1));
    assert_int_equal(check(c, 0, &ps), 1);
    assert_int_equal(check(c, 1, NULL), 1);
    assert_true(findable(c, "a", 1, 1));

    /* a degraded backend (a failed apply) is rebuilt and searchable again */
    c->ix->degraded = 1;
    assert_int_equal(check(c, 0, &ps), 1);
    assert_int_equal(check(c, 1, NULL), 1);
    assert_int_equal(c->ix->degraded, 0);
    assert_true(findable(c, "b", 1, 0));
    assert_int_equal(check(c, 0, NULL), 0);
}

/* A repair while the doc.embedded consumer runs on another thread: the repair's change and the
 * consumer's batches are applied in log order. */
typedef struct worker_arg {
    tctx *c;
    int stop;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    rag_consumer *cons = rag_index_consumer_embedded(a->c->ix);
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        size_t n = 0;
        if (rag_consumer_run_once(cons, a->c->t, &a->c->pol, &n) != RAG_OK)
            break;
    }
    return NULL;
}

static void test_check_concurrent(void **state)
{
    tctx *c = *state;
    put_embedded(c, "hot", 1, 4);
    put_embedded(c, "cold", 1, 2);
    drain_all(c);
    float gv[DIM];
    chunk_vec("ghost", 1, 0, gv);
    MDB_txn *txn = wtxn(c);
    put_label_row(c, txn, 5000, "ghost", 1, 0);
    put_vector_row(c, txn, 5000, gv);
    del_row(txn, c->ix->vectors, label_of(c, "cold", 1));
    assert_int_equal(mdb_txn_commit(txn), 0);

    worker_arg a = {c, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, worker, &a), 0);
    uint64_t found = 0;
    for (uint64_t v = 2; v <= 30; v++) {
        put_embedded(c, "hot", v, 4);
        if (v == 10) {
            problems ps;
            memset(&ps, 0, sizeof ps);
            OK(rag_index_check(c->ix, 1, on_problem, &ps, &found));
            assert_true(found >= 2); /* unreferenced + missing vector (+ maybe view) */
            assert_int_equal(count_what(&ps, "unreferenced_label", "ghost", 5000), 1);
        }
    }
    /* let the worker finish the queue */
    for (int i = 0; i < 5000; i++) {
        rag_queue_depth d;
        OK(c->t->depth(c->t->state, RAG_TOPIC_EMBEDDED, &d));
        if (d.ready + d.delayed + d.inflight == 0)
            break;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    drain_all(c);
    assert_true(findable(c, "hot", 30, 3));
    assert_false(findable(c, "cold", 1, 1));
    assert_true(findable(c, "cold", 1, 0));
    assert_int_equal(check(c, 0, NULL), 0);
    assert_int_equal(stats(c).vectors, 5);
    assert_int_equal(rag_index__backend_count(c->ix), 5);
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
    cmocka_unit_test_setup_teardown(test_scans, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_check_clean, setup, teardown),                 \
        cmocka_unit_test_setup_teardown(test_check_unreferenced, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_check_missing_label, setup, teardown),         \
        cmocka_unit_test_setup_teardown(test_check_missing_vector, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_check_view_rebuild, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_check_concurrent, setup, teardown)

int main(void)
{
    const struct CMUnitTest fake[] = {TESTS};
    const struct CMUnitTest faiss[] = {TESTS};
    int failed = cmocka_run_group_tests_name("index check on the fake backend", fake,
                                             group_fake, NULL);
    failed += cmocka_run_group_tests_name("index check on FAISS IDMap2,Flat", faiss,
                                          group_faiss, NULL);
    return failed;
}
