/*
 * The index module: open/recovery, batch application, snapshots, the reader, stats.
 *
 * Recovery on open: the view comes from the labels and ACL tables, the BM25 inverted index
 * from the "lex" rows of the labels the view holds; the backend from the
 * snapshot file `<root>/index/vectors.faiss` plus the mutation-log entries after the seq the
 * snapshot covers (meta "snapshot_seq"), or, when there is no usable snapshot, from the
 * vectors table.  Snapshot protocol: meta snapshot_seq := INVALID (committed), write the file
 * (temp, fsync, rename, fsync dir), meta snapshot_seq := S and trim the log up to S.  A crash
 * anywhere in between leaves INVALID, and the next open rebuilds from the vectors table
 * instead of replaying a log onto a file that may already contain those entries.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np: writers must not starve */
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index_internal.h"

#define IX_REBUILD_CHUNK 1024

/* ---- meta ---------------------------------------------------------------------------------- */

int rag_index__meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int mrc = mdb_get(txn, dbi, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        *out = 0;
        return RAG_OK;
    }
    if (mrc)
        return rag_mdb_error(mrc, key);
    if (v.mv_size != 8)
        return rag_error_set(RAG_ECORRUPT, "index meta '%s' has %zu bytes", key, v.mv_size);
    *out = rag_be64_get(v.mv_data);
    return RAG_OK;
}

int rag_index__meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t val)
{
    uint8_t b[8];
    rag_be64_put(b, val);
    MDB_val k = {strlen(key), (void *)key}, v = {8, b};
    int mrc = mdb_put(txn, dbi, &k, &v, 0);
    return mrc ? rag_mdb_error(mrc, key) : RAG_OK;
}

/* ---- backend maintenance ---------------------------------------------------------------- */

static int backend_add(rag_index *ix, size_t n, const float *v, const int64_t *labels)
{
    if (n == 0)
        return RAG_OK;
    int rc = ix->backend->add(ix->backend->state, n, v, labels);
    return rc ? rag_error_set(rc, "index: vector backend add of %zu: %s", n, rag_error_last())
              : RAG_OK;
}

/* Removal that the index type cannot do leaves tombstones: the view marks those labels dead
 * and every search filters on it. */
static int backend_remove(rag_index *ix, size_t n, const int64_t *labels)
{
    if (n == 0)
        return RAG_OK;
    size_t removed = 0;
    int rc = ix->backend->remove(ix->backend->state, n, labels, &removed);
    if (rc == RAG_EUNSUPPORTED)
        return RAG_OK;
    return rc ? rag_error_set(rc, "index: vector backend remove: %s", rag_error_last()) : RAG_OK;
}

/* Apply the deferred removals now (write lock held). */
static int flush_removals_locked(rag_index *ix)
{
    int rc = backend_remove(ix, ix->rm_pending_n, ix->rm_pending);
    if (!rc)
        ix->rm_pending_n = 0;
    return rc;
}

/* Flush the deferred removals (write lock held); a backend that fails them is out of line
 * with the view: searches then report the index degraded until it is reopened. */
static void flush_or_degrade(rag_index *ix)
{
    if (!ix->degraded && ix->rm_pending_n && flush_removals_locked(ix))
        ix->degraded = 1;
}

/* Removal of `n` labels (write lock held).  Every search filters out labels the view holds
 * dead, so a removed vector need not leave the backend at once: the labels wait until they
 * are a sixteenth of the backend (at least IX_RM_BATCH), and one remove_ids then compacts
 * once for all of them.  Before, 1,000 single-document updates of a 36k-vector flat index
 * spent a third of the index worker in remove_ids. */
#define IX_RM_BATCH 1024
static int defer_remove(rag_index *ix, size_t n, const int64_t *labels)
{
    if (n == 0)
        return RAG_OK;
    if (ix->rm_supported != 1) {
        /* Until a removal has shown that the backend removes at all, remove at once: a
         * backend that cannot keeps its tombstones anyway, and they count as held. */
        size_t removed = 0;
        int rc = ix->backend->remove(ix->backend->state, n, labels, &removed);
        if (rc == RAG_EUNSUPPORTED) {
            ix->rm_supported = 0;
            return RAG_OK;
        }
        if (rc)
            return rag_error_set(rc, "index: vector backend remove: %s", rag_error_last());
        if (removed)
            ix->rm_supported = 1;
        return RAG_OK;
    }
    if (ix->rm_pending_n + n > ix->rm_pending_cap) {
        size_t cap = (ix->rm_pending_n + n) * 2;
        int64_t *p = realloc(ix->rm_pending, cap * sizeof *p);
        if (!p) { /* no room to wait: remove now */
            int rc = flush_removals_locked(ix);
            return rc ? rc : backend_remove(ix, n, labels);
        }
        ix->rm_pending = p;
        ix->rm_pending_cap = cap;
    }
    memcpy(ix->rm_pending + ix->rm_pending_n, labels, n * sizeof *labels);
    ix->rm_pending_n += n;
    uint64_t held = ix->backend->count(ix->backend->state);
    if (ix->rm_pending_n >= IX_RM_BATCH && ix->rm_pending_n >= held / 16)
        return flush_removals_locked(ix);
    return RAG_OK;
}

int rag_index__rebuild_locked(rag_index *ix)
{
    ix->rm_pending_n = 0; /* the rebuild adds live labels only */
    int rc = ix->backend->reset(ix->backend->state);
    if (rc)
        return rag_error_set(rc, "index: backend reset: %s", rag_error_last());
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "index rebuild: txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(rt, ix->vectors, &cur);
    if (mrc) {
        mdb_txn_abort(rt);
        return rag_mdb_error(mrc, "index rebuild: cursor");
    }
    int64_t *labels = malloc(IX_REBUILD_CHUNK * sizeof *labels);
    float *vecs = malloc((size_t)IX_REBUILD_CHUNK * ix->dim * sizeof *vecs);
    if (!labels || !vecs)
        rc = rag_error_set(RAG_ENOMEM, "index rebuild");
    size_t n = 0;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size != (size_t)ix->dim * 4) {
            rc = rag_error_set(RAG_ECORRUPT, "index rebuild: malformed vector row");
            break;
        }
        int64_t label = (int64_t)rag_be64_get(k.mv_data);
        /* Rows of batches committed but not applied yet come with their own apply. */
        if (!rag_index__mem_is_live(&ix->mem, label))
            continue;
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        rag_rbuf_f32s(&r, vecs + n * ix->dim, ix->dim);
        labels[n++] = label;
        if (n == IX_REBUILD_CHUNK) {
            rc = backend_add(ix, n, vecs, labels);
            n = 0;
        }
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index rebuild: scan");
    if (!rc)
        rc = backend_add(ix, n, vecs, labels);
    mdb_cursor_close(cur);
    mdb_txn_abort(rt);
    free(labels);
    free(vecs);
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void rag_index__apply(rag_index *ix, ix_batch *b)
{
    /* Labels are never reused, so per label the batch holds at most one add followed by at
     * most one remove (a re-embed's vector-only add of a live label likewise precedes any
     * removal of it): applying all adds, then all removes, equals applying in order, and a
     * label added and removed within the batch need not reach the backend at all. */
    int64_t *rm = NULL, *add_l = NULL, *added = NULL;
    float *add_v = NULL;
    size_t n_rm = 0, n_add = 0;
    int rc = RAG_OK;
    if (b->n_rm) {
        rm = malloc(b->n_rm * sizeof *rm);
        if (!rm)
            rc = RAG_ENOMEM;
        else {
            memcpy(rm, b->rm_labels, b->n_rm * sizeof *rm);
            qsort(rm, b->n_rm, sizeof *rm, cmp_i64);
        }
    }
    uint8_t *skip = calloc(b->n_add + 1, 1);
    if (b->n_add && !rc) {
        add_l = malloc(b->n_add * sizeof *add_l);
        add_v = malloc((size_t)b->n_add * ix->dim * sizeof *add_v);
        added = malloc(b->n_add * sizeof *added);
    }
    if (!skip || (b->n_add && (!add_l || !add_v || !added)))
        rc = RAG_ENOMEM;
    if (!rc) {
        for (size_t i = 0; i < b->n_add; i++) {
            if (rm && bsearch(&b->add_labels[i], rm, b->n_rm, sizeof *rm, cmp_i64)) {
                skip[i] = 1;
                continue;
            }
            if (b->add_kind[i] == IX_ADD_LABEL_ONLY)
                continue; /* a vector of an older model: the backend does not get it */
            add_l[n_add] = b->add_labels[i];
            memcpy(add_v + n_add * ix->dim, b->add_vecs + i * ix->dim, ix->dim * sizeof(float));
            n_add++;
        }
        /* Removals of labels the backend never got are dropped. */
        if (b->n_add) {
            memcpy(added, b->add_labels, b->n_add * sizeof *added);
            qsort(added, b->n_add, sizeof *added, cmp_i64);
        }
        for (size_t i = 0; i < b->n_rm; i++)
            if (!b->n_add || !bsearch(&rm[i], added, b->n_add, sizeof *rm, cmp_i64))
                rm[n_rm++] = rm[i];
    }

    pthread_rwlock_wrlock(&ix->lock);
    int brc = rc;
    for (size_t i = 0; i < b->n_acl && !rc; i++)
        rc = rag_index__mem_add_acl(&ix->mem, b->acls[i].id,
                                    (const char *const *)b->acls[i].principals, b->acls[i].n);
    for (size_t i = 0; i < b->n_add && !rc; i++) {
        if (skip[i] || b->add_kind[i] == IX_ADD_VECTOR_ONLY)
            continue; /* skipped, or a re-embedded vector of a label the view has live */
        rc = rag_index__mem_set_label(&ix->mem, b->add_labels[i], b->docs[b->add_doc[i]],
                                      b->add_version[i], b->add_chunk[i], b->add_acl[i]);
        if (!rc)
            rc = rag_index__lex_add(&ix->lex, b->add_labels[i],
                                    b->add_lex_len[i] ? b->lex_buf + b->add_lex_off[i] : NULL,
                                    b->add_lex_len[i]);
    }
    for (size_t i = 0; i < n_rm && !rc; i++) {
        rag_index__mem_kill_label(&ix->mem, rm[i]);
        rag_index__lex_kill(&ix->lex, rm[i]);
    }
    if (!brc && !rc) {
        brc = backend_add(ix, n_add, add_v, add_l);
        if (!brc)
            brc = defer_remove(ix, n_rm, rm);
        if (brc) /* the backend is out of line with the view: derive it again */
            brc = rag_index__rebuild_locked(ix);
    }
    if (rc || brc)
        ix->degraded = 1; /* searches report it; reopening recovers from LMDB */
    ix->applied_seq = b->groups[b->n_groups - 1].seq;
    ix->applied_epoch = b->groups[b->n_groups - 1].epoch;
    pthread_rwlock_unlock(&ix->lock);
    free(rm);
    free(skip);
    free(add_l);
    free(add_v);
    free(added);
}

/* ---- reader ---------------------------------------------------------------------------------- */

static int reader_search(void *self, const float *query, size_t k, const rag_acl_filter *filter,
                         rag_index_hit *hits, size_t *n_hits)
{
    rag_index *ix = self;
    if (n_hits)
        *n_hits = 0;
    if (!query || !n_hits || (k && !hits))
        return rag_error_set(RAG_EINVAL, "index search: NULL argument");
    if (k == 0)
        return RAG_OK;
    float *scores = malloc(k * sizeof *scores);
    int64_t *labels = malloc(k * sizeof *labels);
    if (!scores || !labels) {
        free(scores);
        free(labels);
        return rag_error_set(RAG_ENOMEM, "index search: k=%zu", k);
    }
    pthread_rwlock_rdlock(&ix->lock);
    int rc = RAG_OK;
    ix_query_filter qf = {0};
    if (ix->degraded)
        rc = rag_error_set(RAG_EINDEX, "index: the vector backend could not apply a change; "
                                       "reopen the index to rebuild it");
    if (!rc)
        rc = rag_index__filter_prepare(&ix->mem, filter, &qf);
    if (!rc) {
        /* Without an ACL restriction and without tombstones every held label qualifies:
         * skip the per-label callback. */
        int all = !qf.allowed && ix->backend->count(ix->backend->state) == ix->mem.live;
        rc = ix->backend->search(ix->backend->state, query, k,
                                 all ? NULL : rag_index__filter_fn, all ? NULL : &qf, scores,
                                 labels);
        if (rc)
            rc = rag_error_set(rc, "index search: %s", rag_error_last());
    }
    size_t n = 0;
    for (size_t i = 0; i < k && !rc; i++) {
        if (!rag_index__mem_is_live(&ix->mem, labels[i]))
            continue;
        const ix_label *e = &ix->mem.labels[labels[i]];
        rag_index_hit *h = &hits[n++];
        snprintf(h->doc_id, sizeof h->doc_id, "%s", ix->mem.doc_names[e->doc]);
        h->version = e->version;
        h->chunk_no = e->chunk_no;
        h->score = scores[i];
    }
    pthread_rwlock_unlock(&ix->lock);
    rag_index__filter_release(&qf);
    free(scores);
    free(labels);
    *n_hits = n;
    return rc;
}

static int reader_search_lexical(void *self, const char *query, size_t len, size_t k,
                                 const rag_acl_filter *filter, rag_index_hit *hits,
                                 size_t *n_hits)
{
    rag_index *ix = self;
    if (n_hits)
        *n_hits = 0;
    if (!n_hits || (k && !hits) || (len && !query))
        return rag_error_set(RAG_EINVAL, "index lexical search: NULL argument");
    if (k == 0)
        return RAG_OK;
    /* Analysed before the lock: stemming needs no index state. */
    ix_terms q;
    memset(&q, 0, sizeof q);
    int rc = rag_index__terms_analyze(&ix->stemmers, &q, query, len);
    if (!rc)
        rc = rag_index__terms_finish(&q);
    float *scores = NULL;
    int64_t *labels = NULL;
    if (!rc && q.n) {
        scores = malloc(k * sizeof *scores);
        labels = malloc(k * sizeof *labels);
        if (!scores || !labels)
            rc = rag_error_set(RAG_ENOMEM, "index lexical search: k=%zu", k);
    }
    if (rc || q.n == 0) { /* no indexable term: no hits */
        rag_index__terms_free(&q);
        free(scores);
        free(labels);
        return rc;
    }
    pthread_rwlock_rdlock(&ix->lock);
    ix_query_filter qf = {0};
    size_t n = 0, m = 0;
    if (ix->degraded)
        rc = rag_error_set(RAG_EINDEX, "index: a change could not be applied; reopen the index "
                                       "to rebuild it");
    if (!rc)
        rc = rag_index__filter_prepare(&ix->mem, filter, &qf);
    if (!rc)
        rc = rag_index__lex_search(&ix->lex, &q, ix->cfg.bm25_k1, ix->cfg.bm25_b, &qf, k,
                                   labels, scores, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!rag_index__mem_is_live(&ix->mem, labels[i]))
            continue; /* cannot happen: both sides hold the same labels */
        const ix_label *e = &ix->mem.labels[labels[i]];
        rag_index_hit *h = &hits[m++];
        snprintf(h->doc_id, sizeof h->doc_id, "%s", ix->mem.doc_names[e->doc]);
        h->version = e->version;
        h->chunk_no = e->chunk_no;
        h->score = scores[i];
    }
    pthread_rwlock_unlock(&ix->lock);
    rag_index__filter_release(&qf);
    rag_index__terms_free(&q);
    free(scores);
    free(labels);
    *n_hits = rc ? 0 : m;
    return rc;
}

static int reader_epoch(void *self, uint64_t *out)
{
    rag_index *ix = self;
    if (!out)
        return rag_error_set(RAG_EINVAL, "index epoch: out is NULL");
    pthread_rwlock_rdlock(&ix->lock);
    *out = ix->applied_epoch;
    pthread_rwlock_unlock(&ix->lock);
    return RAG_OK;
}

/* ---- open ------------------------------------------------------------------------------------- */

int rag_index__load_view(rag_index *ix, MDB_txn *txn, ix_mem *m)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, ix->acl_sets, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "index open: ACL cursor");
    int rc = RAG_OK;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4) {
            rc = rag_error_set(RAG_ECORRUPT, "index open: malformed ACL key");
            break;
        }
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        uint32_t n = rag_rbuf_u32(&r);
        if (r.err || n > v.mv_size) {
            rc = rag_error_set(RAG_ECORRUPT, "index open: malformed ACL set");
            break;
        }
        const char **p = malloc((n ? n : 1) * sizeof *p);
        if (!p) {
            rc = rag_error_set(RAG_ENOMEM, "index open: ACL set");
            break;
        }
        for (uint32_t i = 0; i < n; i++)
            p[i] = rag_rbuf_str(&r, NULL);
        if (r.err)
            rc = rag_error_set(RAG_ECORRUPT, "index open: malformed ACL set");
        else
            rc = rag_index__mem_add_acl(m, rag_be32_get(k.mv_data), p, n);
        free(p);
    }
    mdb_cursor_close(cur);
    if (rc)
        return rc;

    mrc = mdb_cursor_open(txn, ix->labels, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "index open: label cursor");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        uint64_t version = rag_rbuf_u64(&r);
        uint32_t chunk = rag_rbuf_u32(&r);
        uint32_t acl = rag_rbuf_u32(&r);
        const char *doc = rag_rbuf_str(&r, NULL);
        if (r.err || k.mv_size != 8) {
            rc = rag_error_set(RAG_ECORRUPT, "index open: malformed label row");
            break;
        }
        rc = rag_index__mem_set_label(m, (int64_t)rag_be64_get(k.mv_data), doc, version,
                                      chunk, acl);
    }
    mdb_cursor_close(cur);
    return rc;
}

/* Replay log entries after `from` onto the loaded snapshot. */
static int replay_log(rag_index *ix, uint64_t from)
{
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "index replay: txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(rt, ix->log, &cur);
    if (mrc) {
        mdb_txn_abort(rt);
        return rag_mdb_error(mrc, "index replay: cursor");
    }
    /* Every add whose label is still live, every remove: the two sets are disjoint (labels
     * are never reused), so they can be applied as two batches. */
    size_t n_add = 0, cap_add = 0, n_rm = 0, cap_rm = 0;
    int64_t *adds = NULL, *rms = NULL;
    int rc = RAG_OK;
    uint8_t key[8];
    rag_be64_put(key, from + 1);
    MDB_val k = {8, key}, v;
    uint64_t expect = from + 1;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || rag_be64_get(k.mv_data) != expect) {
            rc = rag_error_set(RAG_ECORRUPT, "index replay: log entry %llu missing",
                               (unsigned long long)expect);
            break;
        }
        expect++;
        ix->recovery.replayed_entries++;
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        rag_rbuf_str(&r, NULL);
        for (int pass = 0; pass < 2 && !rc; pass++) {
            uint32_t n = rag_rbuf_u32(&r);
            if (r.err || (size_t)n * 8 > r.len - r.off) {
                rc = rag_error_set(RAG_ECORRUPT, "index replay: malformed log entry");
                break;
            }
            size_t *cnt = pass ? &n_rm : &n_add, *cap = pass ? &cap_rm : &cap_add;
            int64_t **arr = pass ? &rms : &adds;
            if (*cnt + n > *cap) {
                size_t nc = (*cnt + n) * 2 + 64;
                int64_t *p = realloc(*arr, nc * sizeof *p);
                if (!p) {
                    rc = rag_error_set(RAG_ENOMEM, "index replay");
                    break;
                }
                *arr = p;
                *cap = nc;
            }
            for (uint32_t i = 0; i < n; i++) {
                int64_t label = (int64_t)rag_rbuf_u64(&r);
                if (pass || rag_index__mem_is_live(&ix->mem, label))
                    (*arr)[(*cnt)++] = label;
            }
        }
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index replay: scan");
    if (!rc && expect - 1 != ix->applied_seq)
        rc = rag_error_set(RAG_ECORRUPT, "index replay: log ends at %llu, meta says %llu",
                           (unsigned long long)(expect - 1),
                           (unsigned long long)ix->applied_seq);
    /* A label can be listed as added twice: switched to without a vector (its version was
     * embedded by an older model) and given its vector by the re-embed.  Add it once. */
    if (!rc && n_add > 1) {
        qsort(adds, n_add, sizeof *adds, cmp_i64);
        size_t u = 1;
        for (size_t i = 1; i < n_add; i++)
            if (adds[i] != adds[u - 1])
                adds[u++] = adds[i];
        n_add = u;
    }
    if (!rc)
        rc = backend_remove(ix, n_rm, rms);
    float *vecs = NULL;
    if (!rc && n_add) {
        vecs = malloc((size_t)IX_REBUILD_CHUNK * ix->dim * sizeof *vecs);
        if (!vecs)
            rc = rag_error_set(RAG_ENOMEM, "index replay");
    }
    for (size_t i = 0; i < n_add && !rc; i += IX_REBUILD_CHUNK) {
        size_t m = n_add - i < IX_REBUILD_CHUNK ? n_add - i : IX_REBUILD_CHUNK;
        for (size_t j = 0; j < m && !rc; j++) {
            uint8_t lk[8];
            rag_be64_put(lk, (uint64_t)adds[i + j]);
            MDB_val kk = {8, lk}, vv;
            mrc = mdb_get(rt, ix->vectors, &kk, &vv);
            if (mrc || vv.mv_size != (size_t)ix->dim * 4) {
                rc = rag_error_set(RAG_ECORRUPT, "index replay: vector of label %lld missing",
                                   (long long)adds[i + j]);
                break;
            }
            rag_rbuf r;
            rag_rbuf_init(&r, vv.mv_data, vv.mv_size);
            rag_rbuf_f32s(&r, vecs + j * ix->dim, ix->dim);
        }
        if (!rc)
            rc = backend_add(ix, m, vecs, adds + i);
    }
    free(vecs);
    free(adds);
    free(rms);
    mdb_cursor_close(cur);
    mdb_txn_abort(rt);
    return rc;
}

static int recover_backend(rag_index *ix)
{
    if (ix->snapshot_seq != IX_SNAPSHOT_INVALID && ix->snapshot_seq <= ix->applied_seq &&
        access(ix->snap_path, F_OK) == 0) {
        int rc = ix->backend->load(ix->backend->state, ix->snap_path);
        if (!rc) {
            ix->recovery.snapshot_loaded = 1;
            rc = replay_log(ix, ix->snapshot_seq);
        }
        /* Fewer vectors than live labels: the snapshot does not match the tables. */
        if (!rc && ix->backend->count(ix->backend->state) >= ix->mem.live)
            return RAG_OK;
        ix->recovery.snapshot_loaded = 0;
        ix->recovery.replayed_entries = 0;
    }
    ix->recovery.rebuilt = 1;
    return rag_index__rebuild_locked(ix);
}

static int check_backend(const rag_vector_backend *b)
{
    if (!b)
        return rag_error_set(RAG_EINVAL, "index: backend is NULL");
    if (b->version == 0 || b->version > RAG_VECTOR_BACKEND_VERSION)
        return rag_error_set(RAG_EVERSION, "index: vector backend version %u not supported",
                             b->version);
    if (!b->add || !b->remove || !b->search || !b->count || !b->save || !b->load ||
        !b->reset || !b->free || b->dim == 0)
        return rag_error_set(RAG_EINVAL, "index: vector backend lacks a required slot or dim");
    return RAG_OK;
}

static void free_backend(rag_vector_backend *b)
{
    if (!b)
        return;
    if (b->free)
        b->free(b->state);
    free(b);
}

static void ix_free(rag_index *ix)
{
    if (!ix)
        return;
    while (ix->waiting) {
        ix_batch *b = ix->waiting;
        ix->waiting = b->next;
        rag_index__batch_free(b);
    }
    rag_index__batch_free(ix->cons_embedded.batch);
    rag_index__batch_free(ix->cons_deleted.batch);
    rag_index__batch_free(ix->cons_revert.batch);
    rag_outbox_free(ix->outbox);
    if (ix->env)
        rag_env_close(ix->env);
    free_backend(ix->backend);
    rag_index__mem_free(&ix->mem);
    rag_index__lex_free(&ix->lex);
    rag_index__stemmers_free(&ix->stemmers);
    free(ix->rm_pending);
    if (ix->locks_ready) {
        pthread_rwlock_destroy(&ix->lock);
        pthread_mutex_destroy(&ix->apply_mu);
        pthread_mutex_destroy(&ix->snap_mu);
    }
    free(ix);
}

static void consumer_setup(rag_index *ix, ix_consumer *ic, const char *topic,
                           int (*handle)(void *, MDB_txn *, const rag_queue_message *))
{
    memset(&ic->c, 0, sizeof ic->c);
    ic->ix = ix;
    ic->c.module = "index";
    ic->c.topic = topic;
    ic->c.env = ix->env;
    ic->c.outbox = ix->outbox;
    ic->c.self = ic;
    ic->c.begin_batch = rag_index__begin_batch;
    ic->c.handle = handle;
    ic->c.end_batch = rag_index__end_batch;
}

int rag_index_open(rag_index **out, const rag_config *cfg, rag_vector_backend *backend)
{
    if (!out || !cfg) {
        free_backend(backend);
        return rag_error_set(RAG_EINVAL, "rag_index_open: out and cfg are required");
    }
    *out = NULL;
    int rc = check_backend(backend);
    if (rc) {
        free_backend(backend);
        return rc;
    }
    rag_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        free_backend(backend);
        return rag_error_set(RAG_ENOMEM, "rag_index_open");
    }
    ix->rm_supported = -1;
    ix->cfg = *cfg;
    ix->backend = backend;
    ix->dim = backend->dim;
    rag_index__mem_init(&ix->mem);
    rag_index__lex_init(&ix->lex);
    snprintf(ix->snap_path, sizeof ix->snap_path, "%s/index/vectors.faiss", cfg->root);

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&ix->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&ix->apply_mu, NULL);
    pthread_mutex_init(&ix->snap_mu, NULL);
    ix->locks_ready = 1;

    rc = rag_index__stemmers_init(&ix->stemmers);
    if (!rc)
        rc = rag_env_open(&ix->env, cfg, "index", 16);
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {{"meta", &ix->meta},         {"labels", &ix->labels},
               {"vectors", &ix->vectors},   {"docs", &ix->docs},
               {"acl_sets", &ix->acl_sets}, {"acl_keys", &ix->acl_keys},
               {"log", &ix->log},           {"lex", &ix->lex_dbi}};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0] && !rc; i++)
        rc = rag_dbi_open(ix->env, dbs[i].name, 0, dbs[i].dbi);
    if (!rc)
        rc = rag_outbox_open(&ix->outbox, ix->env, "index");
    if (!rc) {
        consumer_setup(ix, &ix->cons_embedded, RAG_TOPIC_EMBEDDED, rag_index__handle_embedded);
        consumer_setup(ix, &ix->cons_deleted, RAG_TOPIC_DELETED, rag_index__handle_deleted);
        consumer_setup(ix, &ix->cons_revert, RAG_TOPIC_REVERT, rag_index__handle_revert);
        /* Only a version that never made it into the index needs compensating: a dead
         * doc.deleted or doc.revert leaves nothing of a version behind to undo. */
        ix->cons_embedded.c.on_dead = rag_index__on_dead_embedded;
        rc = rag_consumer_init(&ix->cons_embedded.c);
        if (!rc)
            rc = rag_consumer_init(&ix->cons_deleted.c);
        if (!rc)
            rc = rag_consumer_init(&ix->cons_revert.c);
    }

    /* Format and dimension are fixed at creation: vectors of another size cannot mix.  The
     * one exception is a re-embed (cfg->model_gen above the generation recorded here): the
     * stored vectors belong to the old model, so they are dropped in this txn, together with
     * the new dimension and generation; labels, documents and lexical rows stay, so every
     * document remains findable on the lexical side while its re-embed travels. */
    MDB_txn *txn = NULL;
    if (!rc) {
        int mrc = mdb_txn_begin(ix->env, NULL, 0, &txn);
        if (mrc)
            rc = rag_mdb_error(mrc, "index open: txn");
    }
    uint64_t format = 0, dim = 0, gen = 0;
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "format", &format);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "dim", &dim);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "model_gen", &gen);
    if (!rc && format == 0) {
        rc = rag_index__meta_put(txn, ix->meta, "format", IX_FORMAT);
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "dim", ix->dim);
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "model_gen", cfg->model_gen);
        dim = ix->dim;
        gen = cfg->model_gen;
    } else if (!rc && format != IX_FORMAT) {
        rc = rag_error_set(RAG_EVERSION, "index: on-disk format %llu not supported",
                           (unsigned long long)format);
    }
    /* Without an embed module in this process (it runs elsewhere) the recorded generation
     * stands. */
    const uint64_t want_gen = cfg->model_gen_unknown ? gen : cfg->model_gen;
    if (!rc && gen > want_gen)
        rc = rag_error_set(RAG_EFINGERPRINT,
                           "index: holds vectors of model generation %llu but the embed "
                           "module is at %llu",
                           (unsigned long long)gen, (unsigned long long)want_gen);
    if (!rc && gen < want_gen) {
        int mrc = mdb_drop(txn, ix->vectors, 0);
        if (mrc)
            rc = rag_mdb_error(mrc, "index open: drop the old model's vectors");
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "dim", ix->dim);
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "model_gen", want_gen);
        /* the snapshot file holds the old vectors: never load it again */
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "snapshot_seq", IX_SNAPSHOT_INVALID);
        /* a new epoch: results cached (by retrieve, keyed by the epoch) under the old vectors
         * must not be served again */
        uint64_t epoch = 0;
        if (!rc)
            rc = rag_index__meta_get(txn, ix->meta, "epoch", &epoch);
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "epoch", epoch + 1);
        dim = ix->dim;
        gen = want_gen;
    }
    ix->model_gen = gen;
    if (!rc && dim != ix->dim)
        rc = rag_error_set(RAG_EINVAL, "index: stored vectors have dimension %llu, backend %u",
                           (unsigned long long)dim, ix->dim);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "log_seq", &ix->applied_seq);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "epoch", &ix->applied_epoch);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "snapshot_seq", &ix->snapshot_seq);
    if (!rc)
        rc = rag_index__load_view(ix, txn, &ix->mem);
    if (!rc)
        rc = rag_index__lex_load(ix, txn, &ix->mem, &ix->lex);
    if (txn) {
        int mrc = rc ? (mdb_txn_abort(txn), 0) : rag_txn_commit(txn);
        if (mrc)
            rc = rag_mdb_error(mrc, "index open: commit");
    }
    if (!rc)
        rc = recover_backend(ix);
    if (rc) {
        char saved[512];
        snprintf(saved, sizeof saved, "%s", rag_error_last());
        ix_free(ix);
        return rag_error_set(rc, "%s", saved);
    }

    ix->reader.version = RAG_READER_VERSION;
    ix->reader.self = ix;
    ix->reader.search = reader_search;
    ix->reader.epoch = reader_epoch;
    ix->reader.search_lexical = reader_search_lexical;
    *out = ix;
    return RAG_OK;
}

/* ---- snapshots, close, accessors ----------------------------------------------------------- */

static int snapshot_seq_put(rag_index *ix, uint64_t seq, int trim)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "index snapshot: txn");
    int rc = rag_index__meta_put(txn, ix->meta, "snapshot_seq", seq);
    if (!rc && trim) {
        /* Entries the snapshot covers are no longer needed for recovery. */
        MDB_cursor *cur = NULL;
        mrc = mdb_cursor_open(txn, ix->log, &cur);
        if (mrc) {
            rc = rag_mdb_error(mrc, "index snapshot: cursor");
            cur = NULL;
        }
        MDB_val k, v;
        while (!rc && (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 && k.mv_size == 8 &&
               rag_be64_get(k.mv_data) <= seq) {
            mrc = mdb_cursor_del(cur, 0);
            if (mrc)
                rc = rag_mdb_error(mrc, "index snapshot: trim log");
        }
        if (!rc && mrc && mrc != MDB_NOTFOUND)
            rc = rag_mdb_error(mrc, "index snapshot: trim log");
        if (cur)
            mdb_cursor_close(cur);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "index snapshot: commit") : RAG_OK;
}

int rag_index_snapshot(rag_index *ix)
{
    if (!ix)
        return rag_error_set(RAG_EINVAL, "rag_index_snapshot: ix is NULL");
    pthread_mutex_lock(&ix->snap_mu);
    int rc = snapshot_seq_put(ix, IX_SNAPSHOT_INVALID, 0);
    if (!rc)
        ix->snapshot_seq = IX_SNAPSHOT_INVALID;
    uint64_t seq = 0;
    if (!rc) {
        /* The read side keeps batches from being applied while the file is written, so it
         * holds exactly the changes up to `seq`; searches go on. */
        /* The file must hold no tombstone (a reload could not tell them from live vectors):
         * deferred removals are flushed under the write lock, and an apply slipping in
         * before the read lock may defer new ones, so check again under the read lock
         * (which keeps applies out); after a few rounds the save runs under the write lock. */
        for (int round = 0;; round++) { /* ends holding either lock: both keep applies out */
            pthread_rwlock_wrlock(&ix->lock);
            flush_or_degrade(ix);
            if (round == 3)
                break;
            pthread_rwlock_unlock(&ix->lock);
            pthread_rwlock_rdlock(&ix->lock);
            if (ix->rm_pending_n == 0 || ix->degraded)
                break;
            pthread_rwlock_unlock(&ix->lock);
        }
        seq = ix->applied_seq;
        rc = ix->degraded ? rag_error_set(RAG_EINDEX, "index snapshot: backend degraded")
                          : ix->backend->save(ix->backend->state, ix->snap_path);
        if (rc && rc != RAG_EINDEX)
            rc = rag_error_set(rc, "index snapshot: %s", rag_error_last());
        pthread_rwlock_unlock(&ix->lock);
    }
    if (!rc)
        rc = snapshot_seq_put(ix, seq, 1);
    if (!rc)
        ix->snapshot_seq = seq;
    pthread_mutex_unlock(&ix->snap_mu);
    return rc;
}

void rag_index__close_nosnap(rag_index *ix) { ix_free(ix); }

void rag_index_close(rag_index *ix)
{
    if (!ix)
        return;
    /* A failed snapshot loses nothing: the log and the vectors table stay the truth. */
    if (ix->snapshot_seq != ix->applied_seq && !ix->degraded)
        (void)rag_index_snapshot(ix);
    ix_free(ix);
}

const rag_index_reader *rag_index_reader_get(rag_index *ix) { return ix ? &ix->reader : NULL; }

rag_consumer *rag_index_consumer_embedded(rag_index *ix)
{
    return ix ? &ix->cons_embedded.c : NULL;
}

rag_consumer *rag_index_consumer_deleted(rag_index *ix) { return ix ? &ix->cons_deleted.c : NULL; }

rag_consumer *rag_index_consumer_revert(rag_index *ix) { return ix ? &ix->cons_revert.c : NULL; }

rag_outbox *rag_index_outbox(rag_index *ix) { return ix ? ix->outbox : NULL; }

MDB_env *rag_index_env(rag_index *ix) { return ix ? ix->env : NULL; }

int rag_index_stats_get(rag_index *ix, rag_index_stats *out)
{
    if (!ix || !out)
        return rag_error_set(RAG_EINVAL, "rag_index_stats_get: NULL argument");
    memset(out, 0, sizeof *out);
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "index stats");
    int rc = rag_index__meta_get(rt, ix->meta, "live", &out->vectors);
    if (!rc)
        rc = rag_index__meta_get(rt, ix->meta, "active_docs", &out->documents);
    if (!rc)
        rc = rag_index__meta_get(rt, ix->meta, "epoch", &out->epoch);
    if (!rc)
        rc = rag_index__meta_get(rt, ix->meta, "log_seq", &out->log_seq);
    if (!rc) {
        /* vector rows exist only for live labels: the difference is what a re-embed owes */
        MDB_stat st;
        mrc = mdb_stat(rt, ix->vectors, &st);
        if (mrc)
            rc = rag_mdb_error(mrc, "index stats: vectors");
        else
            out->without_vector = out->vectors > st.ms_entries ? out->vectors - st.ms_entries : 0;
    }
    out->model_gen = ix->model_gen;
    mdb_txn_abort(rt);
    return rc;
}

int rag_index_applied(rag_index *ix, const char *doc_id, uint64_t version, int *applied)
{
    if (applied)
        *applied = 0;
    if (!ix || !doc_id || !applied)
        return rag_error_set(RAG_EINVAL, "rag_index_applied: NULL argument");
    if (version == 0)
        return rag_error_set(RAG_EINVAL, "rag_index_applied: version 0");
    int rc = rag_doc_id_check(doc_id);
    if (rc)
        return rc;
    MDB_txn *rt;
    int mrc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return rag_mdb_error(mrc, "rag_index_applied: txn");
    ix_docrec d;
    rc = rag_index__doc_get(ix, rt, doc_id, &d);
    mdb_txn_abort(rt);
    if (rc)
        return rc;
    /* Committed is not enough: the row's seq says which log entries it reflects, and the
     * searches show them once the applier got that far. */
    if (d.exists && ((d.active && d.active >= version) || d.deleted_through >= version)) {
        pthread_rwlock_rdlock(&ix->lock);
        *applied = ix->applied_seq >= d.seq;
        pthread_rwlock_unlock(&ix->lock);
    }
    rag_index__doc_clear(&d);
    return RAG_OK;
}

const rag_index__recovery *rag_index__recovery_info(const rag_index *ix)
{
    return ix ? &ix->recovery : NULL;
}

uint64_t rag_index__backend_count(rag_index *ix)
{
    /* Vectors held once the deferred removals are done: they are flushed first, since a
     * pending label need not be one the backend holds (a label switched to without a vector,
     * or one a repair removes), so subtracting their number would not be exact.  Tests and
     * diagnostics only: nothing on a hot path counts. */
    pthread_rwlock_wrlock(&ix->lock);
    flush_or_degrade(ix);
    uint64_t n = ix->backend->count(ix->backend->state);
    pthread_rwlock_unlock(&ix->lock);
    return n;
}
