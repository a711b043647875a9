/*
 * Consistency checks of the index module (rag_fsck's index part): scans of the "docs" and
 * "labels" tables, and rag_index_check, which compares the tables with each other and the
 * in-memory view and backend with the tables, and repairs what it finds.
 *
 * The tables are the truth, so a repair only ever removes: a labels row no document lists
 * (and its vector and lexical terms), a label a document lists without a row of its own, a
 * live label whose vector or lexical terms are gone (it cannot be searched on that side;
 * neither can be recomputed here, the index keeps no chunk text outside the "lex" rows, so
 * the label goes and ingest's fsck sees the chunk without a label and re-drives the saga), a
 * lexical row of no label.  The removals are one index write txn with a log entry and
 * epoch++, applied to the view and the backend through the same ordered path as consumer
 * batches, so a repair running beside the consumer workers is just one more change in log
 * order.  A view or backend that disagrees with the tables afterwards is rebuilt from them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index_internal.h"

/* Waiting for committed batches to be applied before the view can be compared: 1 ms steps. */
#define CK_SETTLE_TRIES 5000

static char *key_dup(const MDB_val *k)
{
    char *s = malloc(k->mv_size + 1);
    if (s) {
        memcpy(s, k->mv_data, k->mv_size);
        s[k->mv_size] = '\0';
    }
    return s;
}

static void sleep_1ms(void)
{
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- scans --------------------------------------------------------------------------------- */

int rag_index_scan_docs(rag_index *ix, int (*fn)(void *arg, const rag_index_doc_state *d),
                        void *arg)
{
    if (!ix || !fn)
        return rag_error_set(RAG_EINVAL, "rag_index_scan_docs: NULL argument");
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "index scan docs: txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(rt, ix->docs, &cur);
    if (mrc) {
        mdb_txn_abort(rt);
        return rag_mdb_error(mrc, "index scan docs: cursor");
    }
    int rc = RAG_OK;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char *id = key_dup(&k);
        if (!id) {
            rc = rag_error_set(RAG_ENOMEM, "index scan docs");
            break;
        }
        ix_docrec d;
        int drc = rag_index__doc_decode(v.mv_data, v.mv_size, &d);
        if (drc) {
            rc = drc == RAG_ENOMEM ? rag_error_set(RAG_ENOMEM, "index scan docs")
                                   : rag_error_set(RAG_ECORRUPT,
                                                   "index: document record of '%s' is malformed",
                                                   id);
        } else {
            rag_index_doc_state st = {id, d.active, d.deleted_through, d.n, d.labels};
            rc = fn(arg, &st);
        }
        rag_index__doc_clear(&d);
        free(id);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index scan docs");
    mdb_cursor_close(cur);
    mdb_txn_abort(rt);
    return rc;
}

typedef struct ck_labelrow {
    uint64_t version;
    uint32_t chunk_no, acl;
    const char *doc; /* points into the LMDB value */
} ck_labelrow;

static int labelrow_decode(const MDB_val *k, const MDB_val *v, ck_labelrow *out)
{
    rag_rbuf r;
    rag_rbuf_init(&r, v->mv_data, v->mv_size);
    out->version = rag_rbuf_u64(&r);
    out->chunk_no = rag_rbuf_u32(&r);
    out->acl = rag_rbuf_u32(&r);
    out->doc = rag_rbuf_str(&r, NULL);
    if (r.err || k->mv_size != 8)
        return rag_error_set(RAG_ECORRUPT, "index: malformed labels row");
    return RAG_OK;
}

static int row_exists(MDB_txn *txn, MDB_dbi dbi, int64_t label, int *exists)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    MDB_val k = {8, key}, v;
    int mrc = mdb_get(txn, dbi, &k, &v);
    *exists = mrc == 0;
    return mrc && mrc != MDB_NOTFOUND ? rag_mdb_error(mrc, "index check: lookup") : RAG_OK;
}

int rag_index_scan_labels(rag_index *ix,
                          int (*fn)(void *arg, const rag_index_label_state *l), void *arg)
{
    if (!ix || !fn)
        return rag_error_set(RAG_EINVAL, "rag_index_scan_labels: NULL argument");
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "index scan labels: txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(rt, ix->labels, &cur);
    if (mrc) {
        mdb_txn_abort(rt);
        return rag_mdb_error(mrc, "index scan labels: cursor");
    }
    int rc = RAG_OK;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ck_labelrow lr;
        rc = labelrow_decode(&k, &v, &lr);
        if (rc)
            break;
        rag_index_label_state st;
        st.label = (int64_t)rag_be64_get(k.mv_data);
        st.doc_id = lr.doc;
        st.version = lr.version;
        st.chunk_no = lr.chunk_no;
        rc = row_exists(rt, ix->vectors, st.label, &st.has_vector);
        if (!rc)
            rc = fn(arg, &st);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index scan labels");
    mdb_cursor_close(cur);
    mdb_txn_abort(rt);
    return rc;
}

/* ---- check state ------------------------------------------------------------------------- */

typedef struct ck_problem {
    const char *what;
    char *doc;
    int64_t label;
    char *detail;
} ck_problem;

typedef struct ck_doc {
    char *id;
    ix_docrec rec;
    uint8_t *drop; /* per listed label: 1 = drop it from the row */
    int dirty;
} ck_doc;

typedef struct ck_ref {
    int64_t label;
    size_t doc, pos;
    uint8_t seen;      /* its labels row names this document */
    uint8_t row_other; /* a labels row exists but names another document */
} ck_ref;

typedef struct ck_i64s {
    int64_t *v;
    size_t n, cap;
} ck_i64s;

typedef struct ck_state {
    ck_problem *probs;
    size_t n_probs, cap_probs;
    ck_doc *docs;
    size_t n_docs, cap_docs;
    ck_ref *refs;
    size_t n_refs;
    ck_i64s del_rows; /* labels whose labels + vectors rows go */
    ck_i64s del_vecs; /* vectors rows without a labels row */
    ck_i64s del_lex;  /* lex rows without a labels row */
    ck_i64s rm;       /* labels to remove from the view and the backend */
} ck_state;

static void ck_free(ck_state *st)
{
    for (size_t i = 0; i < st->n_probs; i++) {
        free(st->probs[i].doc);
        free(st->probs[i].detail);
    }
    free(st->probs);
    for (size_t i = 0; i < st->n_docs; i++) {
        free(st->docs[i].id);
        free(st->docs[i].drop);
        rag_index__doc_clear(&st->docs[i].rec);
    }
    free(st->docs);
    free(st->refs);
    free(st->del_rows.v);
    free(st->del_vecs.v);
    free(st->del_lex.v);
    free(st->rm.v);
    memset(st, 0, sizeof *st);
}

static int i64s_push(ck_i64s *a, int64_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        int64_t *p = realloc(a->v, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index check");
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return RAG_OK;
}

static int problem_add(ck_state *st, const char *what, const char *doc, int64_t label,
                       const char *fmt, ...)
{
    if (st->n_probs == st->cap_probs) {
        size_t cap = st->cap_probs ? st->cap_probs * 2 : 16;
        ck_problem *p = realloc(st->probs, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index check: problems");
        st->probs = p;
        st->cap_probs = cap;
    }
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    ck_problem *p = &st->probs[st->n_probs];
    p->what = what;
    p->label = label;
    p->doc = rag_strdup(doc ? doc : "");
    p->detail = rag_strdup(detail);
    if (!p->doc || !p->detail) {
        free(p->doc);
        free(p->detail);
        return rag_error_set(RAG_ENOMEM, "index check: problem");
    }
    st->n_probs++;
    return RAG_OK;
}

static int cmp_ref(const void *a, const void *b)
{
    const ck_ref *x = a, *y = b;
    if (x->label != y->label)
        return (x->label > y->label) - (x->label < y->label);
    return (x->doc > y->doc) - (x->doc < y->doc);
}

/* First ref of `label` (refs sorted), or n_refs. */
static size_t ref_lower(const ck_state *st, int64_t label)
{
    size_t lo = 0, hi = st->n_refs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->refs[mid].label < label)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Every docs row, and the sorted list of the labels they name. */
static int load_docs(rag_index *ix, MDB_txn *txn, ck_state *st)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ix->docs, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "index check: docs cursor");
    int rc = RAG_OK;
    size_t total = 0;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (st->n_docs == st->cap_docs) {
            size_t cap = st->cap_docs ? st->cap_docs * 2 : 64;
            ck_doc *p = realloc(st->docs, cap * sizeof *p);
            if (!p) {
                rc = rag_error_set(RAG_ENOMEM, "index check: documents");
                break;
            }
            st->docs = p;
            st->cap_docs = cap;
        }
        ck_doc *d = &st->docs[st->n_docs];
        memset(d, 0, sizeof *d);
        d->id = key_dup(&k);
        if (!d->id) {
            rc = rag_error_set(RAG_ENOMEM, "index check: document id");
            break;
        }
        st->n_docs++; /* counted now so that ck_free releases it */
        int drc = rag_index__doc_decode(v.mv_data, v.mv_size, &d->rec);
        if (drc) {
            rc = drc == RAG_ENOMEM ? rag_error_set(RAG_ENOMEM, "index check")
                                   : rag_error_set(RAG_ECORRUPT,
                                                   "index: document record of '%s' is malformed",
                                                   d->id);
            break;
        }
        d->drop = calloc(d->rec.n ? d->rec.n : 1, 1);
        if (!d->drop) {
            rc = rag_error_set(RAG_ENOMEM, "index check");
            break;
        }
        total += d->rec.n;
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index check: docs scan");
    mdb_cursor_close(cur);
    if (rc)
        return rc;
    st->refs = malloc((total ? total : 1) * sizeof *st->refs);
    if (!st->refs)
        return rag_error_set(RAG_ENOMEM, "index check: label references");
    for (size_t i = 0; i < st->n_docs; i++)
        for (size_t j = 0; j < st->docs[i].rec.n; j++) {
            ck_ref *r = &st->refs[st->n_refs++];
            r->label = st->docs[i].rec.labels[j];
            r->doc = i;
            r->pos = j;
            r->seen = 0;
            r->row_other = 0;
        }
    qsort(st->refs, st->n_refs, sizeof *st->refs, cmp_ref);
    return RAG_OK;
}

static void drop_ref(ck_state *st, const ck_ref *r)
{
    st->docs[r->doc].drop[r->pos] = 1;
    st->docs[r->doc].dirty = 1;
}

/* Labels rows against the docs rows and the vectors table. */
static int check_labels(rag_index *ix, MDB_txn *txn, ck_state *st)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ix->labels, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "index check: labels cursor");
    int rc = RAG_OK;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ck_labelrow lr;
        rc = labelrow_decode(&k, &v, &lr);
        if (rc)
            break;
        int64_t label = (int64_t)rag_be64_get(k.mv_data);
        int referenced = 0;
        for (size_t i = ref_lower(st, label); i < st->n_refs && st->refs[i].label == label;
             i++) {
            if (strcmp(st->docs[st->refs[i].doc].id, lr.doc) == 0) {
                st->refs[i].seen = 1;
                referenced = 1;
            } else {
                st->refs[i].row_other = 1;
            }
        }
        if (!referenced) {
            rc = problem_add(st, "unreferenced_label", lr.doc, label,
                             "labels row of '%s' v%llu chunk %u is not listed by its document",
                             lr.doc, (unsigned long long)lr.version, lr.chunk_no);
            if (!rc)
                rc = i64s_push(&st->del_rows, label);
            if (!rc)
                rc = i64s_push(&st->rm, label);
            continue;
        }
        int has_vec = 0, has_lex = 0;
        rc = row_exists(txn, ix->vectors, label, &has_vec);
        if (!rc)
            rc = row_exists(txn, ix->lex_dbi, label, &has_lex);
        if (!rc && !has_lex)
            rc = problem_add(st, "missing_lexical", lr.doc, label,
                             "live label of '%s' v%llu chunk %u has no lex row", lr.doc,
                             (unsigned long long)lr.version, lr.chunk_no);
        if (!rc && !has_vec)
            rc = problem_add(st, "missing_vector", lr.doc, label,
                             "live label of '%s' v%llu chunk %u has no vectors row", lr.doc,
                             (unsigned long long)lr.version, lr.chunk_no);
        if (!rc && (!has_vec || !has_lex)) {
            /* Unsearchable on one side; without the vector or the chunk text it cannot be
             * restored here. */
            for (size_t i = ref_lower(st, label);
                 !rc && i < st->n_refs && st->refs[i].label == label; i++)
                if (st->refs[i].seen)
                    drop_ref(st, &st->refs[i]);
            if (!rc)
                rc = i64s_push(&st->del_rows, label);
            if (!rc)
                rc = i64s_push(&st->rm, label);
        }
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index check: labels scan");
    mdb_cursor_close(cur);
    if (rc)
        return rc;

    /* Listed labels without a labels row of their own document. */
    for (size_t i = 0; i < st->n_refs && !rc; i++) {
        ck_ref *r = &st->refs[i];
        if (r->seen)
            continue;
        const char *doc = st->docs[r->doc].id;
        if (r->row_other) {
            rc = problem_add(st, "missing_label", doc, r->label,
                             "'%s' lists label %lld whose labels row names another document",
                             doc, (long long)r->label);
        } else {
            rc = problem_add(st, "missing_label", doc, r->label,
                             "'%s' lists label %lld that has no labels row", doc,
                             (long long)r->label);
            /* No row: nobody owns it, so the view, the backend and any vector row lose it
             * too (a row of another document keeps its label). */
            if (!rc)
                rc = i64s_push(&st->rm, r->label);
            if (!rc)
                rc = i64s_push(&st->del_vecs, r->label);
            if (!rc)
                rc = i64s_push(&st->del_lex, r->label);
        }
        drop_ref(st, r);
    }
    return rc;
}

/*
 * Rows of a per-label table ("vectors", "lex") that belong to no label at all (no labels row,
 * no docs row listing it): each is reported as `what` and queued on `del`; a stray vector is
 * also removed from the view and the backend (`in_backend`).
 */
static int check_label_rows(rag_index *ix, MDB_txn *txn, ck_state *st, MDB_dbi dbi,
                            const char *table, const char *what, ck_i64s *del, int in_backend)
{
    char where[64];
    snprintf(where, sizeof where, "index check: %s table", table);
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, dbi, &cur);
    if (mrc)
        return rag_mdb_error(mrc, where);
    int rc = RAG_OK;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            rc = rag_error_set(RAG_ECORRUPT, "index: malformed %s key", table);
            break;
        }
        int64_t label = (int64_t)rag_be64_get(k.mv_data);
        size_t i = ref_lower(st, label);
        if (i < st->n_refs && st->refs[i].label == label)
            continue; /* reported (if at all) as a missing label */
        int has_row = 0;
        rc = row_exists(txn, ix->labels, label, &has_row);
        if (!rc && !has_row) {
            rc = problem_add(st, what, "", label, "%s row of label %lld without a labels row",
                             table, (long long)label);
            if (!rc)
                rc = i64s_push(del, label);
            if (!rc && in_backend)
                rc = i64s_push(&st->rm, label);
        }
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, where);
    mdb_cursor_close(cur);
    return rc;
}

static int check_tables(rag_index *ix, MDB_txn *txn, ck_state *st)
{
    int rc = load_docs(ix, txn, st);
    if (!rc)
        rc = check_labels(ix, txn, st);
    if (!rc)
        rc = check_label_rows(ix, txn, st, ix->vectors, "vectors", "unreferenced_label",
                              &st->del_vecs, 1);
    if (!rc)
        rc = check_label_rows(ix, txn, st, ix->lex_dbi, "lex", "unreferenced_lexical",
                              &st->del_lex, 0);
    return rc;
}

/* ---- view and backend ------------------------------------------------------------------ */

/* Compare the view and the backend with the tables at a point where every committed change
 * has been applied (a batch committed but not yet applied would look like a mismatch).
 * *settled = 0 when that point did not come in time (nothing compared). */
static int check_view(rag_index *ix, ck_state *st, int *settled)
{
    *settled = 0;
    for (int tries = 0; tries < CK_SETTLE_TRIES; tries++) {
        pthread_rwlock_rdlock(&ix->lock);
        MDB_txn *rt;
        int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
        if (mrc) {
            pthread_rwlock_unlock(&ix->lock);
            return rag_mdb_error(mrc, "index check: txn");
        }
        uint64_t seq = 0;
        int rc = rag_index__meta_get(rt, ix->meta, "log_seq", &seq);
        MDB_stat ls;
        memset(&ls, 0, sizeof ls);
        if (!rc && seq == ix->applied_seq) {
            mrc = mdb_stat(rt, ix->labels, &ls);
            if (mrc)
                rc = rag_mdb_error(mrc, "index check: stat");
        }
        uint64_t live = ix->mem.live, held = ix->backend->count(ix->backend->state);
        uint64_t lex_live = ix->lex.live;
        int degraded = ix->degraded, same = seq == ix->applied_seq;
        mdb_txn_abort(rt);
        pthread_rwlock_unlock(&ix->lock);
        if (rc)
            return rc;
        if (!same) {
            sleep_1ms();
            continue;
        }
        *settled = 1;
        if (degraded)
            rc = problem_add(st, "view_mismatch", "", -1,
                             "the vector backend failed to apply a change (degraded)");
        if (!rc && (uint64_t)ls.ms_entries != live)
            rc = problem_add(st, "view_mismatch", "", -1,
                             "in-memory view has %llu live labels, labels table %llu",
                             (unsigned long long)live, (unsigned long long)ls.ms_entries);
        else if (!rc && lex_live != live) /* one report: a rebuild fixes both */
            rc = problem_add(st, "view_mismatch", "", -1,
                             "lexical index has %llu live labels, the view %llu",
                             (unsigned long long)lex_live, (unsigned long long)live);
        /* More vectors than live labels is normal where the index type keeps tombstones
         * (HNSW); fewer means some live label cannot be found. */
        if (!rc && held < live)
            rc = problem_add(st, "view_mismatch", "", -1,
                             "vector backend holds %llu vectors for %llu live labels",
                             (unsigned long long)held, (unsigned long long)live);
        return rc;
    }
    return RAG_OK;
}

/* Replace the view with one loaded from the tables and rebuild the backend from it. */
static int rebuild_view(rag_index *ix)
{
    for (int tries = 0; tries < CK_SETTLE_TRIES; tries++) {
        /* apply_mu first, as the appliers take it: no batch is applied meanwhile, and the
         * tables must hold exactly what has been applied (nothing committed is pending),
         * or that batch would be applied a second time on top of the new view. */
        pthread_mutex_lock(&ix->apply_mu);
        pthread_rwlock_wrlock(&ix->lock);
        MDB_txn *rt;
        int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
        int rc = mrc ? rag_mdb_error(mrc, "index check: txn") : RAG_OK;
        uint64_t seq = 0;
        if (!rc)
            rc = rag_index__meta_get(rt, ix->meta, "log_seq", &seq);
        if (!rc && seq != ix->applied_seq) {
            mdb_txn_abort(rt);
            pthread_rwlock_unlock(&ix->lock);
            pthread_mutex_unlock(&ix->apply_mu);
            sleep_1ms();
            continue;
        }
        ix_mem nm;
        ix_lex nl;
        rag_index__mem_init(&nm);
        rag_index__lex_init(&nl);
        if (!rc)
            rc = rag_index__load_view(ix, rt, &nm);
        if (!rc)
            rc = rag_index__lex_load(ix, rt, &nm, &nl);
        if (!mrc)
            mdb_txn_abort(rt);
        if (!rc) {
            rag_index__mem_free(&ix->mem);
            rag_index__lex_free(&ix->lex);
            ix->mem = nm;
            ix->lex = nl;
            rc = rag_index__rebuild_locked(ix);
            ix->degraded = rc != RAG_OK;
        } else {
            rag_index__mem_free(&nm);
            rag_index__lex_free(&nl);
        }
        pthread_rwlock_unlock(&ix->lock);
        pthread_mutex_unlock(&ix->apply_mu);
        return rc;
    }
    return rag_error_set(RAG_ETIMEOUT, "index check: committed changes were not applied in time");
}

/* ---- repair ------------------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void i64s_unique(ck_i64s *a)
{
    if (!a->n)
        return;
    qsort(a->v, a->n, sizeof *a->v, cmp_i64);
    size_t u = 1;
    for (size_t i = 1; i < a->n; i++)
        if (a->v[i] != a->v[u - 1])
            a->v[u++] = a->v[i];
    a->n = u;
}

/* Detect again in one write txn (the state may have moved since the report) and remove
 * what is wrong; the backend and view follow once the txn committed. */
static int repair_tables(rag_index *ix)
{
    ck_state st;
    memset(&st, 0, sizeof st);
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "index repair: txn");
    int rc = check_tables(ix, txn, &st);
    if (rc || st.n_probs == 0) {
        mdb_txn_abort(txn);
        ck_free(&st);
        return rc;
    }
    i64s_unique(&st.del_rows);
    i64s_unique(&st.del_vecs);
    i64s_unique(&st.del_lex);
    i64s_unique(&st.rm);
    ix_batch *b = rag_index__batch_new(ix->dim);
    if (!b)
        rc = rag_error_set(RAG_ENOMEM, "index repair: batch");
    for (size_t i = 0; i < st.del_rows.n && !rc; i++)
        rc = rag_index__label_del(ix, txn, st.del_rows.v[i]);
    for (size_t i = 0; i < st.del_vecs.n && !rc; i++) {
        uint8_t key[8];
        rag_be64_put(key, (uint64_t)st.del_vecs.v[i]);
        MDB_val k = {8, key};
        mrc = mdb_del(txn, ix->vectors, &k, NULL);
        if (mrc && mrc != MDB_NOTFOUND)
            rc = rag_mdb_error(mrc, "index repair: delete vector");
    }
    for (size_t i = 0; i < st.del_lex.n && !rc; i++) {
        uint8_t key[8];
        rag_be64_put(key, (uint64_t)st.del_lex.v[i]);
        MDB_val k = {8, key};
        mrc = mdb_del(txn, ix->lex_dbi, &k, NULL);
        if (mrc && mrc != MDB_NOTFOUND)
            rc = rag_mdb_error(mrc, "index repair: delete lex row");
    }
    uint64_t seq = 0, epoch = 0;
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "log_seq", &seq);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "epoch", &epoch);
    seq++;
    epoch++;
    /* Rewrite the rows that lost labels, and recount: meta "live" is the number of labels
     * the docs rows list, "active_docs" the rows with an active version. */
    uint64_t live = 0, active_docs = 0;
    for (size_t i = 0; i < st.n_docs && !rc; i++) {
        ck_doc *d = &st.docs[i];
        if (d->dirty) {
            size_t keep = 0;
            for (size_t j = 0; j < d->rec.n; j++)
                if (!d->drop[j])
                    d->rec.labels[keep++] = d->rec.labels[j];
            d->rec.n = keep;
            d->rec.seq = seq;
            rc = rag_index__doc_put(ix, txn, d->id, &d->rec);
        }
        live += d->rec.n;
        active_docs += d->rec.active != 0;
    }
    for (size_t i = 0; i < st.rm.n && !rc; i++)
        rc = rag_index__batch_remove(b, st.rm.v[i]);
    const char *msg_id = "index-check-repair";
    if (!rc)
        rc = rag_index__log_put(ix, txn, seq, msg_id, 0, NULL, st.rm.n, st.rm.v);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "log_seq", seq);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "epoch", epoch);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "live", live);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "active_docs", active_docs);
    if (!rc)
        rc = rag_index__batch_group(b, seq, epoch, msg_id);
    if (rc) {
        mdb_txn_abort(txn);
        rag_index__batch_free(b);
    } else {
        mrc = rag_txn_commit(txn);
        if (mrc) {
            rc = rag_mdb_error(mrc, "index repair: commit");
            rag_index__batch_free(b);
        } else {
            /* In log order after any consumer batch that committed before this txn. */
            rag_index__batch_submit(ix, b);
        }
    }
    ck_free(&st);
    return rc;
}

int rag_index_check(rag_index *ix, int repair,
                    int (*fn)(void *arg, const rag_index_problem *p), void *arg,
                    uint64_t *found)
{
    if (found)
        *found = 0;
    if (!ix)
        return rag_error_set(RAG_EINVAL, "rag_index_check: ix is NULL");
    ck_state st;
    memset(&st, 0, sizeof st);
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "index check: txn");
    int rc = check_tables(ix, rt, &st);
    mdb_txn_abort(rt);
    size_t n_table = st.n_probs;
    int settled = 0;
    if (!rc)
        rc = check_view(ix, &st, &settled);
    if (rc) {
        ck_free(&st);
        return rc;
    }
    if (found)
        *found = st.n_probs;
    /* Reported outside any txn: the callback may use the index. */
    for (size_t i = 0; i < st.n_probs && fn && !rc; i++) {
        rag_index_problem p = {st.probs[i].what, st.probs[i].doc, st.probs[i].label,
                               st.probs[i].detail};
        rc = fn(arg, &p);
    }
    size_t n_view = st.n_probs - n_table;
    ck_free(&st);
    if (rc || !repair)
        return rc;
    if (n_table)
        rc = repair_tables(ix);
    if (rc || (!n_table && !n_view))
        return rc;
    /* The removals are applied like any change; whatever still disagrees afterwards (or
     * disagreed on its own) is rebuilt from the tables. */
    memset(&st, 0, sizeof st);
    rc = check_view(ix, &st, &settled);
    int rebuild = !rc && (st.n_probs || !settled);
    ck_free(&st);
    if (rebuild)
        rc = rebuild_view(ix);
    return rc;
}
