/*
 * Consumers of doc.embedded, doc.deleted and doc.revert.  Each message changes LMDB inside the
 * consumer's nested txn (labels, vectors, the document's row, a mutation-log entry, the
 * doc.indexed event in the outbox) and stages the matching backend changes in the consumer's
 * batch; end_batch() hands the batch to rag_index__apply() once the batch txn committed.
 *
 * Every doc.indexed carries the trail of the event it answers plus one "index" hop, so ingest
 * sees the whole journey of a version.
 *
 * doc.revert (the saga's compensation, sent by ingest after a doc.failed) is a cleanup of
 * strays: it removes whatever labels of a version that is not active the docs row still lists
 * (with the atomic switch a non-active version never has any, unless a crash or a repair left
 * some) and answers REVERTED.  It records nothing: ingest keeps the failed version's data, and
 * once the cause is fixed a retried dead letter (`rag dlq retry`) must complete the saga
 * forward, so a later doc.embedded of a reverted version follows the normal rules (newer than
 * active and deleted_through: switched to and answered ACTIVE, which turns the failed saga
 * into a done one; older: SUPERSEDED).  A revert of the active version changes nothing and
 * answers ACTIVE: the switch is atomic, so once a version is active it is complete, and the
 * saga completes forward.  The doc.embedded consumer's on_dead hook emits
 * doc.failed{stage "index"}, which starts that compensation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

/* LMDB trouble inside a handler is retried (with backoff) rather than dead-lettered: the
 * message itself did nothing wrong. */
static int storage_error(int mrc, const char *what)
{
    rag_mdb_error(mrc, what);
    return rag_error_set(RAG_ETRANSIENT, "index: %s: %s", what, mdb_strerror(mrc));
}

/* ---- documents ------------------------------------------------------------------------- */

void rag_index__doc_clear(ix_docrec *d)
{
    if (!d)
        return;
    free(d->labels);
    memset(d, 0, sizeof *d);
}

int rag_index__doc_decode(const void *data, size_t len, ix_docrec *d)
{
    memset(d, 0, sizeof *d);
    rag_rbuf r;
    rag_rbuf_init(&r, data, len);
    d->exists = 1;
    d->active = rag_rbuf_u64(&r);
    d->deleted_through = rag_rbuf_u64(&r);
    d->acl = rag_rbuf_u32(&r);
    uint32_t n = rag_rbuf_u32(&r);
    if (r.err || (size_t)n * 8 > r.len - r.off)
        return RAG_ECORRUPT;
    d->labels = malloc((n ? n : 1) * sizeof *d->labels);
    if (!d->labels)
        return RAG_ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        d->labels[i] = (int64_t)rag_rbuf_u64(&r);
    d->n = n;
    /* seq came later: rows written before it end here (seq 0: applied at open) */
    if (r.len - r.off >= 8)
        d->seq = rag_rbuf_u64(&r);
    return RAG_OK;
}

int rag_index__doc_get(rag_index *ix, MDB_txn *txn, const char *doc, ix_docrec *d)
{
    memset(d, 0, sizeof *d);
    MDB_val k = {strlen(doc), (void *)doc}, v;
    int mrc = mdb_get(txn, ix->docs, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK;
    if (mrc)
        return storage_error(mrc, "read document");
    int rc = rag_index__doc_decode(v.mv_data, v.mv_size, d);
    if (rc == RAG_ENOMEM)
        return rag_error_set(RAG_ETRANSIENT, "index: out of memory reading '%s'", doc);
    if (rc)
        return rag_error_set(RAG_ECORRUPT, "index: document record of '%s' is malformed", doc);
    return RAG_OK;
}

int rag_index__doc_put(rag_index *ix, MDB_txn *txn, const char *doc, ix_docrec *d)
{
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_u64(&w, d->active);
    rag_wbuf_u64(&w, d->deleted_through);
    rag_wbuf_u32(&w, d->acl);
    rag_wbuf_u32(&w, (uint32_t)d->n);
    for (size_t i = 0; i < d->n; i++)
        rag_wbuf_u64(&w, (uint64_t)d->labels[i]);
    rag_wbuf_u64(&w, d->seq);
    int rc = w.err ? rag_error_set(RAG_ETRANSIENT, "index: encode document") : RAG_OK;
    if (!rc) {
        MDB_val k = {strlen(doc), (void *)doc}, v = {w.len, w.data};
        int mrc = mdb_put(txn, ix->docs, &k, &v, 0);
        if (mrc)
            rc = storage_error(mrc, "write document");
    }
    rag_wbuf_free(&w);
    return rc;
}

/* ---- labels, vectors, log ----------------------------------------------------------------- */

/* Labels are allocated in increasing order and never reused, so a new label's rows go at the
 * end of their tables: MDB_APPEND skips the search and fills pages completely (a plain put
 * splits a full page in the middle, which left one 1.5 KB vector per 4 KB page).  A label
 * that is not the largest (none is expected) falls back to a normal put. */
static int put_label_row(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    int mrc = mdb_put(txn, dbi, k, v, MDB_APPEND);
    if (mrc == MDB_KEYEXIST)
        mrc = mdb_put(txn, dbi, k, v, 0);
    return mrc;
}

static int label_put(rag_index *ix, MDB_txn *txn, int64_t label, const char *doc,
                     uint64_t version, uint32_t chunk_no, uint32_t acl, const float *vec,
                     const rag_wbuf *lex)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_u64(&w, version);
    rag_wbuf_u32(&w, chunk_no);
    rag_wbuf_u32(&w, acl);
    rag_wbuf_cstr(&w, doc);
    int rc = w.err ? rag_error_set(RAG_ETRANSIENT, "index: encode label") : RAG_OK;
    if (!rc) {
        MDB_val k = {8, key}, v = {w.len, w.data};
        int mrc = put_label_row(txn, ix->labels, &k, &v);
        if (mrc)
            rc = storage_error(mrc, "write label");
    }
    if (!rc && vec) { /* NULL: a vector of an older model, left out until the re-embed */
        rag_wbuf_reset(&w);
        rag_wbuf_f32s(&w, vec, ix->dim);
        MDB_val k = {8, key}, v = {w.len, w.data};
        int mrc = w.err ? MDB_PANIC : put_label_row(txn, ix->vectors, &k, &v);
        if (mrc)
            rc = storage_error(mrc, "write vector");
    }
    if (!rc) {
        MDB_val k = {8, key}, v = {lex->len, lex->data};
        int mrc = put_label_row(txn, ix->lex_dbi, &k, &v);
        if (mrc)
            rc = storage_error(mrc, "write lexical terms");
    }
    rag_wbuf_free(&w);
    return rc;
}

int rag_index__label_del(rag_index *ix, MDB_txn *txn, int64_t label)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    MDB_val k = {8, key};
    int mrc = mdb_del(txn, ix->labels, &k, NULL);
    if (mrc && mrc != MDB_NOTFOUND)
        return storage_error(mrc, "delete label");
    mrc = mdb_del(txn, ix->vectors, &k, NULL);
    if (mrc && mrc != MDB_NOTFOUND)
        return storage_error(mrc, "delete vector");
    mrc = mdb_del(txn, ix->lex_dbi, &k, NULL);
    if (mrc && mrc != MDB_NOTFOUND)
        return storage_error(mrc, "delete lexical terms");
    return RAG_OK;
}

int rag_index__log_put(rag_index *ix, MDB_txn *txn, uint64_t seq, const char *msg_id,
                       size_t n_add, const int64_t *adds, size_t n_rm, const int64_t *rms)
{
    uint8_t key[8];
    rag_be64_put(key, seq);
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_cstr(&w, msg_id ? msg_id : "");
    rag_wbuf_u32(&w, (uint32_t)n_add);
    for (size_t i = 0; i < n_add; i++)
        rag_wbuf_u64(&w, (uint64_t)adds[i]);
    rag_wbuf_u32(&w, (uint32_t)n_rm);
    for (size_t i = 0; i < n_rm; i++)
        rag_wbuf_u64(&w, (uint64_t)rms[i]);
    int rc = w.err ? rag_error_set(RAG_ETRANSIENT, "index: encode log entry") : RAG_OK;
    if (!rc) {
        MDB_val k = {8, key}, v = {w.len, w.data};
        int mrc = mdb_put(txn, ix->log, &k, &v, MDB_APPEND);
        if (mrc)
            rc = storage_error(mrc, "append log entry");
    }
    rag_wbuf_free(&w);
    return rc;
}

/* doc.indexed answering `msg` (of `topic`, whose decoded trail is `in`): the trail goes on
 * with one "index" hop.  The trail's strings point into the message, which outlives this
 * call (the event is encoded here). */
static int emit_indexed_flags(rag_index *ix, MDB_txn *txn, const rag_queue_message *msg,
                              const char *topic, const rag_ev_trail *in, const char *doc,
                              uint64_t version, uint32_t status, uint32_t count, uint32_t flags)
{
    rag_ev_indexed ev;
    memset(&ev, 0, sizeof ev);
    ev.flags = flags;
    ev.doc_id = doc;
    ev.version = version;
    ev.status = status;
    ev.vector_count = count;
    if (in)
        ev.trail = *in;
    rag_ev_trail_add(&ev.trail, "index", topic, rag_now_ms(), msg->attempts, RAG_OK);
    rag_wbuf w;
    rag_wbuf_init(&w);
    int rc = rag_ev_indexed_encode(&ev, &w);
    if (!rc)
        rc = rag_outbox_add(ix->outbox, txn, RAG_TOPIC_INDEXED, w.data, w.len, NULL);
    rag_wbuf_free(&w);
    if (rc && rc != RAG_ETRANSIENT)
        rc = rag_error_set(RAG_ETRANSIENT, "index: doc.indexed not queued: %s", rag_error_last());
    return rc;
}

static int emit_indexed(rag_index *ix, MDB_txn *txn, const rag_queue_message *msg,
                        const char *topic, const rag_ev_trail *in, const char *doc,
                        uint64_t version, uint32_t status, uint32_t count)
{
    return emit_indexed_flags(ix, txn, msg, topic, in, doc, version, status, count, 0);
}

typedef struct ix_counters {
    uint64_t next_label, epoch, log_seq, live, active_docs;
} ix_counters;

static int counters_get(rag_index *ix, MDB_txn *txn, ix_counters *c)
{
    int rc = rag_index__meta_get(txn, ix->meta, "next_label", &c->next_label);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "epoch", &c->epoch);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "log_seq", &c->log_seq);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "live", &c->live);
    if (!rc)
        rc = rag_index__meta_get(txn, ix->meta, "active_docs", &c->active_docs);
    return rc ? rag_error_set(RAG_ETRANSIENT, "index: %s", rag_error_last()) : RAG_OK;
}

static int counters_put(rag_index *ix, MDB_txn *txn, const ix_counters *c)
{
    int rc = rag_index__meta_put(txn, ix->meta, "next_label", c->next_label);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "epoch", c->epoch);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "log_seq", c->log_seq);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "live", c->live);
    if (!rc)
        rc = rag_index__meta_put(txn, ix->meta, "active_docs", c->active_docs);
    return rc ? rag_error_set(RAG_ETRANSIENT, "index: %s", rag_error_last()) : RAG_OK;
}

/* ---- ACL sets ---------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Intern the principal list `acl` (any order, duplicates allowed) as an ACL-set id; 0 for
 * an empty list (public).  A set seen for the first time is staged for the view. */
static int acl_intern(rag_index *ix, ix_batch *b, MDB_txn *txn, const char *const *acl, size_t n,
                      uint32_t *id_out)
{
    *id_out = 0;
    if (n == 0)
        return RAG_OK;
    const char **s = malloc(n * sizeof *s);
    if (!s)
        return rag_error_set(RAG_ETRANSIENT, "index: out of memory (ACL)");
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (acl[i])
            s[m++] = acl[i];
    qsort(s, m, sizeof *s, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (u == 0 || strcmp(s[u - 1], s[i]) != 0)
            s[u++] = s[i];
    if (u == 0) {
        free(s);
        return RAG_OK;
    }
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_u32(&w, (uint32_t)u);
    for (size_t i = 0; i < u; i++)
        rag_wbuf_cstr(&w, s[i]);
    int rc = w.err ? rag_error_set(RAG_ETRANSIENT, "index: encode ACL") : RAG_OK;
    uint8_t hash[16];
    if (!rc)
        rag_hash128(w.data, w.len, hash);
    MDB_val hk = {16, hash}, v;
    int known = 0;
    uint32_t id = 0;
    if (!rc) {
        int mrc = mdb_get(txn, ix->acl_keys, &hk, &v);
        if (mrc == 0 && v.mv_size == 4) {
            id = rag_be32_get(v.mv_data);
            uint8_t ik[4];
            rag_be32_put(ik, id);
            MDB_val k = {4, ik}, sv;
            /* compare the stored set: a hash collision must not merge two ACLs */
            mrc = mdb_get(txn, ix->acl_sets, &k, &sv);
            if (mrc == 0 && sv.mv_size == w.len && memcmp(sv.mv_data, w.data, w.len) == 0)
                known = 1;
            else if (mrc && mrc != MDB_NOTFOUND)
                rc = storage_error(mrc, "read ACL set");
            else
                hk.mv_size = 0; /* collision: new id, not findable by hash */
        } else if (mrc && mrc != MDB_NOTFOUND) {
            rc = storage_error(mrc, "read ACL key");
        }
    }
    if (!rc && !known) {
        uint64_t next = 0;
        rc = rag_index__meta_get(txn, ix->meta, "next_acl", &next);
        if (!rc && next == 0)
            next = 1;
        if (!rc && next > UINT32_MAX - 1)
            rc = rag_error_set(RAG_ETRANSIENT, "index: ACL set ids exhausted");
        if (!rc) {
            id = (uint32_t)next;
            uint8_t ik[4];
            rag_be32_put(ik, id);
            MDB_val k = {4, ik}, sv = {w.len, w.data};
            int mrc = mdb_put(txn, ix->acl_sets, &k, &sv, 0);
            if (!mrc && hk.mv_size) {
                MDB_val iv = {4, ik};
                mrc = mdb_put(txn, ix->acl_keys, &hk, &iv, 0);
            }
            if (mrc)
                rc = storage_error(mrc, "write ACL set");
        }
        if (!rc)
            rc = rag_index__meta_put(txn, ix->meta, "next_acl", (uint64_t)id + 1);
        if (!rc)
            rc = rag_index__batch_acl(b, id, s, u);
        if (rc && rc != RAG_ETRANSIENT)
            rc = rag_error_set(RAG_ETRANSIENT, "index: %s", rag_error_last());
    }
    rag_wbuf_free(&w);
    free(s);
    if (!rc)
        *id_out = id;
    return rc;
}

/* ---- doc.embedded ------------------------------------------------------------------------ */

static int reembed_apply(rag_index *ix, ix_batch *b, MDB_txn *txn, const rag_queue_message *msg,
                         const rag_ev_embedded *ev);

static int embedded_apply(rag_index *ix, ix_batch *b, MDB_txn *txn, const rag_queue_message *msg,
                          const rag_ev_embedded *ev)
{
    int rc = rag_doc_id_check(ev->doc_id);
    if (rc)
        return rc;
    const char *doc = ev->doc_id;
    const rag_ev_trail *tr = &ev->trail;
    if (ev->version == 0)
        return rag_error_set(RAG_EINVAL, "doc.embedded '%s': version 0", doc);
    if (ev->model_gen > ix->model_gen)
        /* Only an index opened for that generation may take these vectors (the core opens
         * it so before any consumer runs); retried, the process that re-embeds takes it. */
        return rag_error_set(RAG_ETRANSIENT,
                             "doc.embedded '%s'@%llu: vectors of model generation %llu, the "
                             "index holds generation %llu (reopen the root with the new "
                             "provider)",
                             doc, (unsigned long long)ev->version,
                             (unsigned long long)ev->model_gen,
                             (unsigned long long)ix->model_gen);
    /* Vectors of an older model (embedded before a re-embed began): useless against queries
     * embedded by the new one, so the version is switched to without them (lexical side
     * only) and doc.indexed asks ingest for its re-embed. */
    const int stale = ev->model_gen < ix->model_gen;
    if (ev->flags & RAG_EV_REEMBED)
        return stale ? RAG_OK : reembed_apply(ix, b, txn, msg, ev);
    if (ev->vector_count && !stale && ev->dim != ix->dim)
        return rag_error_set(RAG_EINVAL, "doc.embedded '%s'@%llu: dimension %u, index has %u",
                             doc, (unsigned long long)ev->version, ev->dim, ix->dim);
    for (size_t i = 0; i < ev->vector_count && !stale; i++)
        for (unsigned int t = 0; t < ix->dim; t++)
            if (!isfinite(ev->vectors[i].vector[t]))
                return rag_error_set(RAG_EINVAL,
                                     "doc.embedded '%s'@%llu: chunk %u has a non-finite value",
                                     doc, (unsigned long long)ev->version,
                                     ev->vectors[i].chunk_no);
    ix_docrec d;
    rc = rag_index__doc_get(ix, txn, doc, &d);
    if (rc)
        return rc;
    int64_t *fresh = NULL;
    if (d.exists && (ev->version <= d.deleted_through || ev->version < d.active)) {
        /* Arrived after a newer version (or after a delete covering it): nothing added. */
        rc = emit_indexed(ix, txn, msg, RAG_TOPIC_EMBEDDED, tr, doc, ev->version,
                          RAG_INDEXED_SUPERSEDED, 0);
        goto out;
    }
    if (d.exists && ev->version == d.active) {
        /* The active version again under another message id (the embed step ran twice):
         * already applied; confirm it rather than calling it superseded, which would let
         * ingest collect the text of the version that is live. */
        rc = emit_indexed(ix, txn, msg, RAG_TOPIC_EMBEDDED, tr, doc, ev->version,
                          RAG_INDEXED_ACTIVE, (uint32_t)d.n);
        goto out;
    }
    ix_counters c;
    rc = counters_get(ix, txn, &c);
    if (rc)
        goto out;
    uint32_t acl = 0, di = 0;
    size_t n = ev->vector_count;
    if (n) {
        rc = acl_intern(ix, b, txn, ev->acl, ev->acl_count, &acl);
        if (!rc)
            rc = rag_index__batch_doc(b, doc, &di);
        if (rc)
            goto out;
    }
    fresh = malloc((n ? n : 1) * sizeof *fresh);
    if (!fresh) {
        rc = rag_error_set(RAG_ETRANSIENT, "index: out of memory");
        goto out;
    }
    /* Lexical terms of each chunk: its text plus the title (analysed once), counted with
     * every chunk as SciFact-style title + abstract collections expect. */
    ix_terms title, terms;
    memset(&title, 0, sizeof title);
    memset(&terms, 0, sizeof terms);
    rag_wbuf lw;
    rag_wbuf_init(&lw);
    if (n && ev->title && *ev->title)
        rc = rag_index__terms_analyze(&ix->stemmers, &title, ev->title, strlen(ev->title));
    for (size_t i = 0; i < n && !rc; i++) {
        const rag_ev_vector *vec = &ev->vectors[i];
        rag_index__terms_reset(&terms);
        rag_wbuf_reset(&lw);
        rc = rag_index__terms_analyze(&ix->stemmers, &terms, vec->text, vec->text_len);
        if (!rc)
            rc = rag_index__terms_append(&terms, &title);
        if (!rc)
            rc = rag_index__terms_finish(&terms);
        if (!rc)
            rc = rag_index__terms_encode(&terms, &lw);
        if (rc)
            break;
        fresh[i] = (int64_t)c.next_label++;
        const float *vv = stale ? NULL : vec->vector;
        rc = label_put(ix, txn, fresh[i], doc, ev->version, vec->chunk_no, acl, vv, &lw);
        if (!rc)
            rc = rag_index__batch_add(b, stale ? IX_ADD_LABEL_ONLY : IX_ADD_LABEL_VECTOR,
                                      fresh[i], di, ev->version, vec->chunk_no, acl, vv,
                                      lw.data, lw.len);
    }
    rag_index__terms_free(&title);
    rag_index__terms_free(&terms);
    rag_wbuf_free(&lw);
    /* The previous version goes in the same txn: a reader sees the old labels or the new
     * ones, never both and never neither. */
    for (size_t i = 0; i < d.n && !rc; i++) {
        rc = rag_index__label_del(ix, txn, d.labels[i]);
        if (!rc)
            rc = rag_index__batch_remove(b, d.labels[i]);
    }
    if (!rc) {
        c.log_seq++;
        c.epoch++;
        c.live = c.live + n - d.n;
        if (!d.active)
            c.active_docs++;
        rc = rag_index__log_put(ix, txn, c.log_seq, msg->id, n, fresh, d.n, d.labels);
    }
    if (!rc) {
        /* the row now lists the new labels */
        free(d.labels);
        d.labels = fresh;
        fresh = NULL;
        d.n = n;
        d.active = ev->version;
        d.acl = acl;
        d.seq = c.log_seq;
        rc = rag_index__doc_put(ix, txn, doc, &d);
    }
    if (!rc)
        rc = counters_put(ix, txn, &c);
    if (!rc)
        rc = emit_indexed_flags(ix, txn, msg, RAG_TOPIC_EMBEDDED, tr, doc, ev->version,
                                RAG_INDEXED_ACTIVE, (uint32_t)n,
                                stale && n ? RAG_EV_STALE_VECTORS : 0);
    if (!rc)
        rc = rag_index__batch_group(b, c.log_seq, c.epoch, msg->id);
    if (rc && rc != RAG_ETRANSIENT && rc != RAG_EINVAL)
        rc = rag_error_set(RAG_ETRANSIENT, "%s", rag_error_last());
out:
    free(fresh);
    rag_index__doc_clear(&d);
    return rc;
}

/* Chunk number of a label per its "labels" row; *found 0 when the row is missing. */
static int label_chunk(rag_index *ix, MDB_txn *txn, int64_t label, uint32_t *chunk, int *found)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    MDB_val k = {8, key}, v;
    *found = 0;
    int mrc = mdb_get(txn, ix->labels, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK;
    if (mrc)
        return storage_error(mrc, "read label");
    rag_rbuf r;
    rag_rbuf_init(&r, v.mv_data, v.mv_size);
    rag_rbuf_u64(&r);
    uint32_t c = rag_rbuf_u32(&r);
    if (!r.err) {
        *chunk = c;
        *found = 1;
    }
    return RAG_OK;
}

static int cmp_vec_chunk(const void *a, const void *b)
{
    uint32_t x = (*(const rag_ev_vector *const *)a)->chunk_no;
    uint32_t y = (*(const rag_ev_vector *const *)b)->chunk_no;
    return (x > y) - (x < y);
}

/*
 * A re-embed of `ev->version` (RAG_EV_REEMBED, of the index's model generation): if that
 * version is still the active one, give each of its live labels that has no vector yet the
 * vector of its chunk (a vector-only add, logged like any add so that snapshot recovery
 * replays it).  Anything else (a newer version became active, the document was deleted,
 * every label already has its vector: a duplicate) changes nothing.  No doc.indexed answers
 * it: ingest's saga of the version finished long ago.
 */
static int reembed_apply(rag_index *ix, ix_batch *b, MDB_txn *txn, const rag_queue_message *msg,
                         const rag_ev_embedded *ev)
{
    const char *doc = ev->doc_id;
    if (ev->vector_count && ev->dim != ix->dim)
        return rag_error_set(RAG_EINVAL, "re-embed of '%s'@%llu: dimension %u, index has %u",
                             doc, (unsigned long long)ev->version, ev->dim, ix->dim);
    for (size_t i = 0; i < ev->vector_count; i++)
        for (unsigned int t = 0; t < ix->dim; t++)
            if (!isfinite(ev->vectors[i].vector[t]))
                return rag_error_set(RAG_EINVAL,
                                     "re-embed of '%s'@%llu: chunk %u has a non-finite value",
                                     doc, (unsigned long long)ev->version,
                                     ev->vectors[i].chunk_no);
    ix_docrec d;
    int rc = rag_index__doc_get(ix, txn, doc, &d);
    if (rc || !d.exists || d.active != ev->version || d.n == 0 || ev->vector_count == 0) {
        rag_index__doc_clear(&d);
        return rc;
    }
    const rag_ev_vector **by_chunk = malloc(ev->vector_count * sizeof *by_chunk);
    int64_t *adds = malloc(d.n * sizeof *adds);
    size_t n_add = 0;
    uint32_t di = 0;
    if (!by_chunk || !adds)
        rc = rag_error_set(RAG_ETRANSIENT, "index: out of memory (re-embed)");
    for (size_t i = 0; i < ev->vector_count && !rc; i++)
        by_chunk[i] = &ev->vectors[i];
    if (!rc)
        qsort(by_chunk, ev->vector_count, sizeof *by_chunk, cmp_vec_chunk);
    for (size_t i = 0; i < d.n && !rc; i++) {
        uint8_t key[8];
        rag_be64_put(key, (uint64_t)d.labels[i]);
        MDB_val k = {8, key}, v;
        int mrc = mdb_get(txn, ix->vectors, &k, &v);
        if (mrc == 0)
            continue; /* has its vector of this generation already */
        if (mrc != MDB_NOTFOUND) {
            rc = storage_error(mrc, "read vector");
            break;
        }
        uint32_t chunk = 0;
        int found = 0;
        rc = label_chunk(ix, txn, d.labels[i], &chunk, &found);
        if (rc || !found)
            continue; /* a label without its row: rag_fsck reports it */
        rag_ev_vector probe, *pp = &probe;
        probe.chunk_no = chunk;
        const rag_ev_vector **hit =
            bsearch(&pp, by_chunk, ev->vector_count, sizeof *by_chunk, cmp_vec_chunk);
        if (!hit)
            continue;
        rag_wbuf w;
        rag_wbuf_init(&w);
        rag_wbuf_f32s(&w, (*hit)->vector, ix->dim);
        MDB_val vv = {w.len, w.data};
        mrc = w.err ? MDB_PANIC : mdb_put(txn, ix->vectors, &k, &vv, 0);
        rag_wbuf_free(&w);
        if (mrc) {
            rc = storage_error(mrc, "write vector");
            break;
        }
        if (n_add == 0)
            rc = rag_index__batch_doc(b, doc, &di);
        if (!rc)
            rc = rag_index__batch_add(b, IX_ADD_VECTOR_ONLY, d.labels[i], di, d.active, chunk,
                                      d.acl, (*hit)->vector, NULL, 0);
        if (!rc)
            adds[n_add++] = d.labels[i];
    }
    if (!rc && n_add) {
        ix_counters c;
        rc = counters_get(ix, txn, &c);
        if (!rc) {
            c.log_seq++;
            c.epoch++;
            rc = rag_index__log_put(ix, txn, c.log_seq, msg->id, n_add, adds, 0, NULL);
        }
        if (!rc) {
            d.seq = c.log_seq;
            rc = rag_index__doc_put(ix, txn, doc, &d);
        }
        if (!rc)
            rc = counters_put(ix, txn, &c);
        if (!rc)
            rc = rag_index__batch_group(b, c.log_seq, c.epoch, msg->id);
    }
    if (rc && rc != RAG_ETRANSIENT && rc != RAG_EINVAL)
        rc = rag_error_set(RAG_ETRANSIENT, "%s", rag_error_last());
    free(by_chunk);
    free(adds);
    rag_index__doc_clear(&d);
    return rc;
}

static int ensure_batch(ix_consumer *ic)
{
    if (!ic->batch)
        ic->batch = rag_index__batch_new(ic->ix->dim);
    return ic->batch ? RAG_OK : rag_error_set(RAG_ETRANSIENT, "index: out of memory (batch)");
}

int rag_index__handle_embedded(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    ix_consumer *ic = self;
    int rc = ensure_batch(ic);
    if (rc)
        return rc;
    rag_ev_embedded ev;
    rc = rag_ev_embedded_decode(msg->data, msg->size, &ev);
    if (rc)
        return rc; /* unparsable: permanent */
    ix_mark mk;
    rag_index__batch_mark(ic->batch, &mk);
    rc = embedded_apply(ic->ix, ic->batch, txn, msg, &ev);
    if (rc)
        rag_index__batch_truncate(ic->batch, &mk);
    rag_ev_embedded_clear(&ev);
    return rc;
}

/*
 * A doc.embedded given up on (malformed vectors, or attempts ran out on storage trouble):
 * tell ingest, in the dead-letter transaction, so that the saga compensates.  Only the id and
 * version are needed, so a payload that does not decode is peeked at; one that names no
 * version has nothing to compensate (the dead letter itself is the report).  Any failure
 * here keeps the message in the queue, so only a storage error may fail it.
 */
int rag_index__on_dead_embedded(void *self, MDB_txn *txn, const rag_queue_message *msg,
                                int code, const char *reason)
{
    ix_consumer *ic = self;
    rag_ev_failed f;
    memset(&f, 0, sizeof f);
    rag_ev_embedded ev;
    int decoded = rag_ev_embedded_decode(msg->data, msg->size, &ev) == RAG_OK;
    if (decoded && (ev.flags & RAG_EV_REEMBED)) {
        /* A re-embed: the version stays active (lexical side); the dead letter reports it. */
        rag_ev_embedded_clear(&ev);
        return RAG_OK;
    }
    if (decoded) {
        f.doc_id = ev.doc_id;
        f.version = ev.version;
        f.trail = ev.trail;
    } else if (rag_ev_peek(msg->topic, msg->data, msg->size, &f.doc_id, &f.version) != RAG_OK) {
        rag_error_clear();
        return RAG_OK;
    }
    int rc = RAG_OK;
    /* An id no document can have (empty, too long, not UTF-8) names nothing to undo. */
    if (rag_doc_id_check(f.doc_id) == RAG_OK) {
        f.stage = "index";
        f.code = code;
        f.reason = reason ? reason : "";
        rag_ev_trail_add(&f.trail, "index", RAG_TOPIC_EMBEDDED, rag_now_ms(), msg->attempts,
                         code);
        rag_wbuf w;
        rag_wbuf_init(&w);
        rc = rag_ev_failed_encode(&f, &w);
        if (!rc)
            rc = rag_outbox_add(ic->ix->outbox, txn, RAG_TOPIC_FAILED, w.data, w.len, NULL);
        rag_wbuf_free(&w);
    } else {
        rag_error_clear();
    }
    if (decoded)
        rag_ev_embedded_clear(&ev);
    return rc;
}

/* ---- doc.deleted -------------------------------------------------------------------------- */

static int deleted_apply(rag_index *ix, ix_batch *b, MDB_txn *txn, const rag_queue_message *msg,
                         const rag_ev_deleted *ev)
{
    int rc = rag_doc_id_check(ev->doc_id);
    if (rc)
        return rc;
    const char *doc = ev->doc_id;
    ix_docrec d;
    rc = rag_index__doc_get(ix, txn, doc, &d);
    if (rc)
        return rc;
    uint64_t dt = d.deleted_through > ev->version ? d.deleted_through : ev->version;
    /* A row written without a log entry of its own reflects changes up to the log's end. */
    rc = rag_index__meta_get(txn, ix->meta, "log_seq", &d.seq);
    if (rc) {
        rc = rag_error_set(RAG_ETRANSIENT, "index: %s", rag_error_last());
        goto emit;
    }
    if (d.active > ev->version) {
        /* The document came back with a newer version than the delete covers (the delete
         * and the new version's embedding crossed): that version stays. */
        d.deleted_through = dt;
        rc = rag_index__doc_put(ix, txn, doc, &d);
        goto emit;
    }
    if (d.n || d.active) {
        ix_counters c;
        rc = counters_get(ix, txn, &c);
        for (size_t i = 0; i < d.n && !rc; i++) {
            rc = rag_index__label_del(ix, txn, d.labels[i]);
            if (!rc)
                rc = rag_index__batch_remove(b, d.labels[i]);
        }
        if (!rc) {
            c.log_seq++;
            c.epoch++;
            c.live -= d.n;
            if (d.active && c.active_docs)
                c.active_docs--;
            rc = rag_index__log_put(ix, txn, c.log_seq, msg->id, 0, NULL, d.n, d.labels);
        }
        if (!rc)
            rc = counters_put(ix, txn, &c);
        if (!rc)
            rc = rag_index__batch_group(b, c.log_seq, c.epoch, msg->id);
        if (!rc)
            d.seq = c.log_seq;
    }
    /* The record stays as a tombstone so that a late doc.embedded of a covered version is
     * recognised as superseded. */
    if (!rc) {
        d.active = 0;
        d.deleted_through = dt;
        d.acl = 0;
        d.n = 0;
        rc = rag_index__doc_put(ix, txn, doc, &d);
    }
emit:
    if (!rc)
        rc = emit_indexed(ix, txn, msg, RAG_TOPIC_DELETED, &ev->trail, doc, ev->version,
                          RAG_INDEXED_DELETED, 0);
    if (rc && rc != RAG_ETRANSIENT)
        rc = rag_error_set(RAG_ETRANSIENT, "%s", rag_error_last());
    rag_index__doc_clear(&d);
    return rc;
}

int rag_index__handle_deleted(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    ix_consumer *ic = self;
    int rc = ensure_batch(ic);
    if (rc)
        return rc;
    rag_ev_deleted ev;
    rc = rag_ev_deleted_decode(msg->data, msg->size, &ev);
    if (rc)
        return rc;
    ix_mark mk;
    rag_index__batch_mark(ic->batch, &mk);
    rc = deleted_apply(ic->ix, ic->batch, txn, msg, &ev);
    if (rc)
        rag_index__batch_truncate(ic->batch, &mk);
    return rc;
}

/* ---- doc.revert --------------------------------------------------------------------------- */

/* Version of a label per its "labels" row; 0 when the row is missing or unreadable. */
static int label_version(rag_index *ix, MDB_txn *txn, int64_t label, uint64_t *version)
{
    uint8_t key[8];
    rag_be64_put(key, (uint64_t)label);
    MDB_val k = {8, key}, v;
    *version = 0;
    int mrc = mdb_get(txn, ix->labels, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK;
    if (mrc)
        return storage_error(mrc, "read label");
    rag_rbuf r;
    rag_rbuf_init(&r, v.mv_data, v.mv_size);
    uint64_t ver = rag_rbuf_u64(&r);
    if (!r.err)
        *version = ver;
    return RAG_OK;
}

static int revert_apply(rag_index *ix, ix_batch *b, MDB_txn *txn, const rag_queue_message *msg,
                        const rag_ev_revert *ev)
{
    int rc = rag_doc_id_check(ev->doc_id);
    if (rc)
        return rc;
    const char *doc = ev->doc_id;
    const uint64_t v = ev->version;
    if (v == 0)
        return rag_error_set(RAG_EINVAL, "doc.revert '%s': version 0", doc);
    ix_docrec d;
    rc = rag_index__doc_get(ix, txn, doc, &d);
    if (rc)
        return rc;
    int64_t *rm = NULL;
    size_t n_rm = 0;
    if (d.exists && v == d.active) {
        /* The version became active before the revert arrived.  The switch is atomic, so
         * all of its labels are there: removing them would leave the document unfindable
         * (a phantom).  Report it active; ingest then completes the saga forward. */
        rc = emit_indexed(ix, txn, msg, RAG_TOPIC_REVERT, &ev->trail, doc, v,
                          RAG_INDEXED_ACTIVE, (uint32_t)d.n);
        goto out;
    }
    /* Labels of `v` listed in the row: normally none (the row lists the active version's),
     * but whatever is there of `v` must go. */
    if (d.n) {
        rm = malloc(d.n * sizeof *rm);
        if (!rm) {
            rc = rag_error_set(RAG_ETRANSIENT, "index: out of memory (revert)");
            goto out;
        }
    }
    size_t keep = 0;
    for (size_t i = 0; i < d.n && !rc; i++) {
        uint64_t lv = 0;
        rc = label_version(ix, txn, d.labels[i], &lv);
        if (!rc && lv == v)
            rm[n_rm++] = d.labels[i];
        else
            d.labels[keep++] = d.labels[i];
    }
    if (rc)
        goto fail;
    if (n_rm) {
        ix_counters c;
        rc = counters_get(ix, txn, &c);
        for (size_t i = 0; i < n_rm && !rc; i++) {
            rc = rag_index__label_del(ix, txn, rm[i]);
            if (!rc)
                rc = rag_index__batch_remove(b, rm[i]);
        }
        if (!rc) {
            c.log_seq++;
            c.epoch++;
            c.live = c.live >= n_rm ? c.live - n_rm : 0;
            rc = rag_index__log_put(ix, txn, c.log_seq, msg->id, 0, NULL, n_rm, rm);
        }
        if (!rc)
            rc = counters_put(ix, txn, &c);
        if (!rc)
            rc = rag_index__batch_group(b, c.log_seq, c.epoch, msg->id);
        d.n = keep;
        if (!rc) {
            d.seq = c.log_seq;
            rc = rag_index__doc_put(ix, txn, doc, &d);
        }
    }
    /* Nothing else is written: no record of the revert (a retried doc.embedded of v must
     * still be able to complete the saga forward), no row for a document the index has
     * never seen, and nothing at all when there was nothing to remove (a repeated revert). */
    if (!rc)
        rc = emit_indexed(ix, txn, msg, RAG_TOPIC_REVERT, &ev->trail, doc, v,
                          RAG_INDEXED_REVERTED, 0);
fail:
    if (rc && rc != RAG_ETRANSIENT)
        rc = rag_error_set(RAG_ETRANSIENT, "%s", rag_error_last());
out:
    free(rm);
    rag_index__doc_clear(&d);
    return rc;
}

int rag_index__handle_revert(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    ix_consumer *ic = self;
    int rc = ensure_batch(ic);
    if (rc)
        return rc;
    rag_ev_revert ev;
    rc = rag_ev_revert_decode(msg->data, msg->size, &ev);
    if (rc)
        return rc; /* unparsable: permanent */
    ix_mark mk;
    rag_index__batch_mark(ic->batch, &mk);
    rc = revert_apply(ic->ix, ic->batch, txn, msg, &ev);
    if (rc)
        rag_index__batch_truncate(ic->batch, &mk);
    return rc;
}

/* ---- batch boundaries ----------------------------------------------------------------------- */

int rag_index__begin_batch(void *self, MDB_txn *txn)
{
    (void)txn;
    ix_consumer *ic = self;
    /* Leftovers of a batch whose end was never reported cannot be trusted. */
    rag_index__batch_free(ic->batch);
    ic->batch = NULL;
    return RAG_OK;
}

/* Keep only groups whose log entry committed under their message id (a nested txn can be
 * aborted after its handler succeeded, e.g. when the inbox record fails). */
static void verify_groups(rag_index *ix, ix_batch *b)
{
    MDB_txn *rt;
    if (mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &rt) != 0)
        return;
    for (size_t g = b->n_groups; g-- > 0;) {
        uint8_t key[8];
        rag_be64_put(key, b->groups[g].seq);
        MDB_val k = {8, key}, v;
        int ok = 0;
        if (mdb_get(rt, ix->log, &k, &v) == 0) {
            rag_rbuf r;
            rag_rbuf_init(&r, v.mv_data, v.mv_size);
            size_t len;
            const char *id = rag_rbuf_str(&r, &len);
            ok = !r.err && strcmp(id, b->groups[g].msg_id) == 0;
        }
        if (!ok)
            rag_index__batch_drop_group(b, g);
    }
    mdb_txn_abort(rt);
}

void rag_index__batch_submit(rag_index *ix, ix_batch *b)
{
    if (!b)
        return;
    if (b->n_groups == 0) {
        rag_index__batch_free(b);
        return;
    }
    /* Three consumers (and rag_index_check) share the env: their txns commit one after the
     * other, but their batches may be handed over in any order.  Apply strictly in log
     * order. */
    pthread_mutex_lock(&ix->apply_mu);
    while (b->n_groups && b->groups[0].seq <= ix->applied_seq)
        rag_index__batch_drop_group(b, 0); /* cannot happen; never apply twice */
    if (b->n_groups == 0) {
        rag_index__batch_free(b);
    } else {
        ix_batch **pp = &ix->waiting;
        while (*pp && (*pp)->groups[0].seq < b->groups[0].seq)
            pp = &(*pp)->next;
        b->next = *pp;
        *pp = b;
    }
    while (ix->waiting && ix->waiting->groups[0].seq == ix->applied_seq + 1) {
        ix_batch *h = ix->waiting;
        ix->waiting = h->next;
        rag_index__apply(ix, h);
        rag_index__batch_free(h);
    }
    pthread_mutex_unlock(&ix->apply_mu);
}

void rag_index__end_batch(void *self, int committed)
{
    ix_consumer *ic = self;
    rag_index *ix = ic->ix;
    ix_batch *b = ic->batch;
    ic->batch = NULL;
    if (!b)
        return;
    if (committed && b->n_groups)
        verify_groups(ix, b);
    if (!committed || b->n_groups == 0) {
        rag_index__batch_free(b);
        return;
    }
    rag_index__batch_submit(ix, b);
}
