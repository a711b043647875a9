/*
 * The ingest module: accepts documents, parses and chunks them, owns the document store and
 * the document lifecycle, and announces every new version with one doc.chunked event written
 * in the same LMDB transaction (transactional outbox).
 *
 * Tables of `<root>/ingest/`:
 *   docs       doc_id -> doc row (latest/active version, deleted flag, title, uri, mime, ACL)
 *   versions   doc\0be64 ver -> version row (state, chunk count, content hash, created)
 *   blobs      doc\0be64 ver -> the bytes as uploaded
 *   texts      doc\0be64 ver -> parsed NFC text (blocks joined by a blank line)
 *   chunks     doc\0be64 ver be32 chunk -> XXH3-128 of the text, text, NUL
 *   idem       idempotency key -> {payload hash, version, created ms, doc id}
 *   idem_time  be64 created ms, key -> "" (expiry order)
 *   sagas      doc\0be64 ver u8 kind -> saga row (state, started/updated/deadline ms, failure
 *              code and reason, the trail of hops the saga took); see "sagas" below
 *   meta       "format", "documents", "versions", "chunks" -> u64 (counters kept in the same
 *              transactions as the changes they count, so stats never scan)
 * A version's data (blob, text, chunks and version row) is freed once the index confirms a
 * newer version or the delete; the doc row stays as a tombstone so numbers keep increasing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_internal.h"
#include "rag_events.h"
#include "rag_ingest_api.h"
#include "rag_text.h"

#define INGEST_FORMAT 1u
#define DOC_ROW_FORMAT 1u
#define VERSION_ROW_FORMAT 1u
#define IDEM_ROW_FORMAT 1u
#define IDEM_KEY_MAX 255
#define IDEM_PURGE_PER_BATCH 256
#define TITLE_MAX 256        /* a title taken from the content is cut to this */
#define CALLER_TITLE_MAX 4096 /* titles and uris travel in every event of the document */
#define URI_MAX 8192
#define ACL_PRINCIPAL_MAX 256

#define SAGA_ROW_FORMAT 1u

enum { VERSION_PENDING = 1, VERSION_ACTIVE = 2, VERSION_FAILED = 3 };

struct rag_ingest {
    rag_config cfg;
    MDB_env *env;
    MDB_dbi docs, versions, blobs, texts, chunks, idem, idem_time, sagas, meta;
    rag_outbox *outbox;
    rag_consumer consumer;        /* doc.indexed */
    rag_consumer consumer_failed; /* doc.failed */
    rag_ingest_reader reader;
};

/* ---- rows ----------------------------------------------------------------------------- */

typedef struct doc_row {
    int deleted;
    uint64_t latest, active, deleted_at; /* deleted_at: latest version when deleted */
    uint64_t updated_ms;
    const char *title, *uri, *mime;
    size_t acl_count;
    const char **acl; /* allocated (pointers into the value) */
} doc_row;

static void doc_row_encode(rag_wbuf *b, const doc_row *d)
{
    rag_wbuf_u8(b, DOC_ROW_FORMAT);
    rag_wbuf_u8(b, d->deleted ? 1 : 0);
    rag_wbuf_u64(b, d->latest);
    rag_wbuf_u64(b, d->active);
    rag_wbuf_u64(b, d->deleted_at);
    rag_wbuf_u64(b, d->updated_ms);
    rag_wbuf_cstr(b, d->title);
    rag_wbuf_cstr(b, d->uri);
    rag_wbuf_cstr(b, d->mime);
    rag_wbuf_u32(b, (uint32_t)d->acl_count);
    for (size_t i = 0; i < d->acl_count; i++)
        rag_wbuf_cstr(b, d->acl[i]);
}

/* Decode; with `want_acl` the ACL array is allocated (free d->acl). */
static int doc_row_decode(const MDB_val *v, doc_row *d, int want_acl)
{
    rag_rbuf r;
    memset(d, 0, sizeof *d);
    rag_rbuf_init(&r, v->mv_data, v->mv_size);
    if (rag_rbuf_u8(&r) != DOC_ROW_FORMAT)
        return rag_error_set(RAG_ECORRUPT, "ingest: document row of unknown format");
    d->deleted = rag_rbuf_u8(&r);
    d->latest = rag_rbuf_u64(&r);
    d->active = rag_rbuf_u64(&r);
    d->deleted_at = rag_rbuf_u64(&r);
    d->updated_ms = rag_rbuf_u64(&r);
    d->title = rag_rbuf_str(&r, NULL);
    d->uri = rag_rbuf_str(&r, NULL);
    d->mime = rag_rbuf_str(&r, NULL);
    uint32_t n = rag_rbuf_u32(&r);
    if (r.err || n > v->mv_size)
        return rag_error_set(RAG_ECORRUPT, "ingest: truncated document row");
    d->acl_count = n;
    if (want_acl && n) {
        d->acl = calloc(n, sizeof *d->acl);
        if (!d->acl)
            return rag_error_set(RAG_ENOMEM, "ingest: out of memory");
        for (uint32_t i = 0; i < n; i++)
            d->acl[i] = rag_rbuf_str(&r, NULL);
        if (r.err) {
            free(d->acl);
            d->acl = NULL;
            return rag_error_set(RAG_ECORRUPT, "ingest: truncated document row");
        }
    }
    return RAG_OK;
}

typedef struct version_row {
    int state;
    uint32_t chunk_count;
    uint8_t hash[16];
    uint64_t created_ms, text_len, blob_len;
} version_row;

static void version_row_encode(rag_wbuf *b, const version_row *v)
{
    rag_wbuf_u8(b, VERSION_ROW_FORMAT);
    rag_wbuf_u8(b, (uint8_t)v->state);
    rag_wbuf_u32(b, v->chunk_count);
    rag_wbuf_bytes(b, v->hash, 16);
    rag_wbuf_u64(b, v->created_ms);
    rag_wbuf_u64(b, v->text_len);
    rag_wbuf_u64(b, v->blob_len);
}

static int version_row_decode(const MDB_val *val, version_row *v)
{
    rag_rbuf r;
    memset(v, 0, sizeof *v);
    rag_rbuf_init(&r, val->mv_data, val->mv_size);
    if (rag_rbuf_u8(&r) != VERSION_ROW_FORMAT)
        return rag_error_set(RAG_ECORRUPT, "ingest: version row of unknown format");
    v->state = rag_rbuf_u8(&r);
    v->chunk_count = rag_rbuf_u32(&r);
    const void *h = rag_rbuf_bytes(&r, 16);
    if (h)
        memcpy(v->hash, h, 16);
    v->created_ms = rag_rbuf_u64(&r);
    v->text_len = rag_rbuf_u64(&r);
    v->blob_len = rag_rbuf_u64(&r);
    return r.err ? rag_error_set(RAG_ECORRUPT, "ingest: truncated version row") : RAG_OK;
}

/* ---- small LMDB helpers --------------------------------------------------------------- */

static int put(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t kl, const void *v, size_t vl,
               const char *what)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    int mrc = mdb_put(txn, dbi, &key, &val, 0);
    return mrc ? rag_mdb_error(mrc, what) : RAG_OK;
}

static int del(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t kl, const char *what)
{
    MDB_val key = {kl, (void *)k};
    int mrc = mdb_del(txn, dbi, &key, NULL);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK;
    return mrc ? rag_mdb_error(mrc, what) : RAG_OK;
}

static int meta_add(rag_ingest *ig, MDB_txn *txn, const char *name, int64_t delta)
{
    if (!delta)
        return RAG_OK;
    MDB_val k = {strlen(name), (void *)name}, v;
    uint64_t cur = 0;
    int mrc = mdb_get(txn, ig->meta, &k, &v);
    if (mrc == 0 && v.mv_size == 8) {
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, 8);
        cur = rag_rbuf_u64(&r);
    } else if (mrc && mrc != MDB_NOTFOUND) {
        return rag_mdb_error(mrc, "ingest: read counter");
    }
    cur = delta < 0 && (uint64_t)(-delta) > cur ? 0 : cur + (uint64_t)delta;
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(cur >> (8 * i));
    return put(txn, ig->meta, name, strlen(name), b, 8, "ingest: write counter");
}

static uint64_t meta_get(rag_ingest *ig, MDB_txn *txn, const char *name)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    if (mdb_get(txn, ig->meta, &k, &v) || v.mv_size != 8)
        return 0;
    rag_rbuf r;
    rag_rbuf_init(&r, v.mv_data, 8);
    return rag_rbuf_u64(&r);
}

/* Read the doc row of `id` (ACL allocated). RAG_ENOTFOUND when absent. */
static int doc_get(rag_ingest *ig, MDB_txn *txn, const char *id, doc_row *d, int want_acl)
{
    MDB_val k = {strlen(id), (void *)id}, v;
    int mrc = mdb_get(txn, ig->docs, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        memset(d, 0, sizeof *d);
        return RAG_ENOTFOUND;
    }
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read document");
    return doc_row_decode(&v, d, want_acl);
}

static int doc_put(rag_ingest *ig, MDB_txn *txn, const char *id, const doc_row *d)
{
    rag_wbuf b;
    rag_wbuf_init(&b);
    doc_row_encode(&b, d);
    int rc = b.err ? rag_error_set(b.err, "ingest: encoding document row")
                   : put(txn, ig->docs, id, strlen(id), b.data, b.len, "ingest: write document");
    rag_wbuf_free(&b);
    return rc;
}

/* ---- freeing a version's data --------------------------------------------------------- */

static int free_version(rag_ingest *ig, MDB_txn *txn, const char *id, uint64_t ver)
{
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version(key, id, ver);
    MDB_val k = {kl, key}, v;
    int mrc = mdb_get(txn, ig->versions, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK; /* freed before: handlers are idempotent */
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read version");
    int rc = del(txn, ig->versions, key, kl, "ingest: delete version");
    if (!rc)
        rc = del(txn, ig->blobs, key, kl, "ingest: delete blob");
    if (!rc)
        rc = del(txn, ig->texts, key, kl, "ingest: delete text");
    /* chunks: every key with the doc\0ver prefix */
    int64_t removed = 0;
    MDB_cursor *cur = NULL;
    if (!rc) {
        mrc = mdb_cursor_open(txn, ig->chunks, &cur);
        if (mrc)
            rc = rag_mdb_error(mrc, "ingest: chunk cursor");
    }
    if (!rc) {
        MDB_val ck = {kl, key}, cv;
        mrc = mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE);
        while (mrc == 0 && ck.mv_size == kl + 4 && !memcmp(ck.mv_data, key, kl)) {
            mrc = mdb_cursor_del(cur, 0);
            if (mrc)
                break;
            removed++;
            /* re-seek: GET_CURRENT after deleting the table's last row is EINVAL */
            ck.mv_size = kl;
            ck.mv_data = key;
            mrc = mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE);
        }
        if (mrc && mrc != MDB_NOTFOUND)
            rc = rag_mdb_error(mrc, "ingest: delete chunks");
        mdb_cursor_close(cur);
    }
    if (!rc)
        rc = meta_add(ig, txn, "versions", -1);
    if (!rc)
        rc = meta_add(ig, txn, "chunks", -removed);
    return rc;
}

/* Free every stored version v of `id` with lo <= v <= hi. */
static int free_versions(rag_ingest *ig, MDB_txn *txn, const char *id, uint64_t lo, uint64_t hi)
{
    if (lo > hi)
        return RAG_OK;
    uint8_t key[RAG_KEY_MAX];
    size_t idl = strlen(id);
    size_t kl = rag_key_doc_version(key, id, lo);
    uint64_t *list = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ig->versions, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: version cursor");
    MDB_val k = {kl, key}, v;
    int rc = RAG_OK;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && k.mv_size == idl + 9 && !memcmp(k.mv_data, id, idl) &&
           ((const uint8_t *)k.mv_data)[idl] == 0) {
        uint64_t ver = rag_be64_get((const uint8_t *)k.mv_data + idl + 1);
        if (ver > hi)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            uint64_t *l = realloc(list, cap * sizeof *l);
            if (!l) {
                rc = rag_error_set(RAG_ENOMEM, "ingest: out of memory");
                break;
            }
            list = l;
        }
        list[n++] = ver;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "ingest: scan versions");
    mdb_cursor_close(cur);
    for (size_t i = 0; i < n && !rc; i++)
        rc = free_version(ig, txn, id, list[i]);
    free(list);
    return rc;
}

/* ---- sagas ------------------------------------------------------------------------------
 *
 * One row per version transition, written in the transaction that starts it (the put or
 * the delete, together with the event that is its first step), so a step is always on disk
 * before anybody attempts it.  Every event ingest receives about the transition updates the
 * row: its state, and the trail of hops the events carried (embed and index each append one),
 * which is what rag_trace() shows.  Rows older than a doc's newest finished saga are garbage
 * and are deleted with it (gc), so the table holds about one row per document.
 * Counters of the states worth reporting live in "meta" (sagas_running, ...), kept in the
 * same transactions. */

typedef struct saga_row {
    int kind, state;
    uint64_t started_ms, updated_ms, deadline_ms;
    int32_t code;
    const char *reason;
    rag_ev_trail trail; /* strings point into the row or the event being handled */
} saga_row;

const char *rag_saga_state_name(int state)
{
    switch (state) {
    case RAG_SAGA_RUNNING: return "running";
    case RAG_SAGA_DONE: return "done";
    case RAG_SAGA_SUPERSEDED: return "superseded";
    case RAG_SAGA_COMPENSATING: return "compensating";
    case RAG_SAGA_FAILED: return "failed";
    default: return "unknown";
    }
}

static const char *saga_counter(int state)
{
    switch (state) {
    case RAG_SAGA_RUNNING: return "sagas_running";
    case RAG_SAGA_COMPENSATING: return "sagas_compensating";
    case RAG_SAGA_FAILED: return "sagas_failed";
    default: return NULL;
    }
}

static size_t saga_key(uint8_t *out, const char *doc, uint64_t ver, int kind)
{
    size_t kl = rag_key_doc_version(out, doc, ver);
    out[kl] = (uint8_t)kind;
    return kl + 1;
}

/* Does `k` belong to document `doc` (idl bytes)? */
static int saga_key_of(const MDB_val *k, const char *doc, size_t idl)
{
    return k->mv_size == idl + 10 && !memcmp(k->mv_data, doc, idl) &&
           ((const uint8_t *)k->mv_data)[idl] == 0;
}

static int saga_decode(const MDB_val *v, saga_row *s)
{
    rag_rbuf r;
    memset(s, 0, sizeof *s);
    rag_rbuf_init(&r, v->mv_data, v->mv_size);
    if (rag_rbuf_u8(&r) != SAGA_ROW_FORMAT)
        return rag_error_set(RAG_ECORRUPT, "ingest: saga row of unknown format");
    s->kind = rag_rbuf_u8(&r);
    s->state = rag_rbuf_u8(&r);
    s->started_ms = rag_rbuf_u64(&r);
    s->updated_ms = rag_rbuf_u64(&r);
    s->deadline_ms = rag_rbuf_u64(&r);
    s->code = rag_rbuf_i32(&r);
    s->reason = rag_rbuf_str(&r, NULL);
    uint32_t n = rag_rbuf_u32(&r);
    if (r.err || n > RAG_EV_TRAIL_MAX)
        return rag_error_set(RAG_ECORRUPT, "ingest: truncated saga row");
    for (uint32_t i = 0; i < n; i++) {
        rag_ev_hop *h = &s->trail.hops[i];
        h->module = rag_rbuf_str(&r, NULL);
        h->event = rag_rbuf_str(&r, NULL);
        h->at_ms = rag_rbuf_u64(&r);
        h->attempts = rag_rbuf_u32(&r);
        h->code = rag_rbuf_i32(&r);
    }
    s->trail.count = n;
    return r.err ? rag_error_set(RAG_ECORRUPT, "ingest: truncated saga row") : RAG_OK;
}

static int saga_write(rag_ingest *ig, MDB_txn *txn, const uint8_t *key, size_t kl,
                      const saga_row *s, int old_state)
{
    rag_wbuf b;
    rag_wbuf_init(&b);
    rag_wbuf_u8(&b, SAGA_ROW_FORMAT);
    rag_wbuf_u8(&b, (uint8_t)s->kind);
    rag_wbuf_u8(&b, (uint8_t)s->state);
    rag_wbuf_u64(&b, s->started_ms);
    rag_wbuf_u64(&b, s->updated_ms);
    rag_wbuf_u64(&b, s->deadline_ms);
    rag_wbuf_i32(&b, s->code);
    rag_wbuf_cstr(&b, s->reason ? s->reason : "");
    rag_wbuf_u32(&b, (uint32_t)s->trail.count);
    for (size_t i = 0; i < s->trail.count; i++) {
        const rag_ev_hop *h = &s->trail.hops[i];
        rag_wbuf_cstr(&b, h->module);
        rag_wbuf_cstr(&b, h->event);
        rag_wbuf_u64(&b, h->at_ms);
        rag_wbuf_u32(&b, h->attempts);
        rag_wbuf_i32(&b, h->code);
    }
    /* the row is encoded before the put: `s` may point into the value being replaced */
    int rc = b.err ? rag_error_set(b.err, "ingest: encoding saga row")
                   : put(txn, ig->sagas, key, kl, b.data, b.len, "ingest: write saga");
    rag_wbuf_free(&b);
    if (!rc && old_state != s->state) {
        const char *was = saga_counter(old_state), *now = saga_counter(s->state);
        if (was)
            rc = meta_add(ig, txn, was, -1);
        if (!rc && now)
            rc = meta_add(ig, txn, now, 1);
    }
    return rc;
}

/* Start a saga: a RUNNING row whose trail is `trail`. */
static int saga_start(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t ver, int kind,
                      uint64_t now, const rag_ev_trail *trail)
{
    uint8_t key[RAG_KEY_MAX + 1];
    size_t kl = saga_key(key, doc, ver, kind);
    MDB_val k = {kl, key}, v;
    int old_state = 0;
    if (mdb_get(txn, ig->sagas, &k, &v) == 0) {
        saga_row old;
        if (saga_decode(&v, &old) == RAG_OK)
            old_state = old.state;
    }
    saga_row s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.state = RAG_SAGA_RUNNING;
    s.started_ms = s.updated_ms = now;
    s.deadline_ms = now + ig->cfg.saga_deadline_ms;
    s.reason = "";
    s.trail = *trail;
    return saga_write(ig, txn, key, kl, &s, old_state);
}

/*
 * Move saga (doc, ver, kind) to `state` with `trail` as its journey so far (NULL: keep).
 * code/reason are recorded for the failure states.  A saga without a row (collected, or older
 * than this release) is left alone: the event's effect on the document does not depend on it.
 */
static int saga_update(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t ver, int kind,
                       int state, int32_t code, const char *reason, const rag_ev_trail *trail)
{
    uint8_t key[RAG_KEY_MAX + 1];
    size_t kl = saga_key(key, doc, ver, kind);
    MDB_val k = {kl, key}, v;
    int mrc = mdb_get(txn, ig->sagas, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK;
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read saga");
    saga_row s;
    int rc = saga_decode(&v, &s);
    if (rc)
        return rc;
    int old_state = s.state;
    /* a finished saga stays finished, except that a failed version the index nevertheless
     * made active completes forward (see on_indexed) */
    if ((old_state == RAG_SAGA_DONE || old_state == RAG_SAGA_SUPERSEDED) && state != old_state)
        return RAG_OK;
    s.state = state;
    s.updated_ms = rag_now_ms();
    if (state == RAG_SAGA_COMPENSATING || state == RAG_SAGA_FAILED) {
        if (code) {
            s.code = code;
            s.reason = reason ? reason : "";
        }
    } else {
        s.code = 0;
        s.reason = "";
    }
    if (trail)
        s.trail = *trail;
    return saga_write(ig, txn, key, kl, &s, old_state);
}

/* Delete the saga rows of `doc` whose key sorts before (ver, kind) — everything older than a
 * saga that just finished — adjusting the state counters. */
static int saga_gc(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t ver, int kind)
{
    size_t idl = strlen(doc);
    uint8_t key[RAG_KEY_MAX + 1];
    size_t kl = saga_key(key, doc, 0, 0);
    uint8_t upto[RAG_KEY_MAX + 1];
    size_t ul = saga_key(upto, doc, ver, kind);
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ig->sagas, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: saga cursor");
    int rc = RAG_OK;
    MDB_val k = {kl, key}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && saga_key_of(&k, doc, idl) && memcmp(k.mv_data, upto, ul) < 0) {
        saga_row s;
        if (saga_decode(&v, &s) == RAG_OK && saga_counter(s.state))
            rc = meta_add(ig, txn, saga_counter(s.state), -1);
        if (rc)
            break;
        mrc = mdb_cursor_del(cur, 0);
        if (mrc)
            break;
        k.mv_size = kl; /* re-seek (see free_version) */
        k.mv_data = key;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "ingest: collect sagas");
    mdb_cursor_close(cur);
    return rc;
}

/* The newest saga of `doc`: 1 found (row and its version in *ver), 0 none, <0 error.
 * The row points into the txn's pages. */
static int saga_newest(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t *ver,
                       saga_row *s)
{
    size_t idl = strlen(doc);
    uint8_t key[RAG_KEY_MAX + 1];
    size_t kl = saga_key(key, doc, 0, 0);
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ig->sagas, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: saga cursor");
    MDB_val k = {kl, key}, v, last_v = {0, NULL};
    uint64_t last_ver = 0;
    int found = 0;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && saga_key_of(&k, doc, idl)) {
        found = 1;
        last_v = v;
        last_ver = rag_be64_get((const uint8_t *)k.mv_data + idl + 1);
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (mrc && mrc != MDB_NOTFOUND)
        return rag_mdb_error(mrc, "ingest: scan sagas");
    if (!found)
        return 0;
    int rc = saga_decode(&last_v, s);
    if (rc)
        return rc;
    *ver = last_ver;
    return 1;
}

static int set_version_state(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t ver,
                             int state)
{
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version(key, doc, ver);
    MDB_val k = {kl, key}, v;
    int mrc = mdb_get(txn, ig->versions, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return RAG_OK;
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read version");
    version_row vr;
    int rc = version_row_decode(&v, &vr);
    if (rc || vr.state == state)
        return rc;
    vr.state = state;
    rag_wbuf b;
    rag_wbuf_init(&b);
    version_row_encode(&b, &vr);
    rc = b.err ? rag_error_set(b.err, "ingest: encoding version row")
               : put(txn, ig->versions, key, kl, b.data, b.len, "ingest: write version");
    rag_wbuf_free(&b);
    return rc;
}

/* doc.revert or doc.deleted {doc, ver, trail} into ingest's outbox (the two events carry the
 * same fields). */
static int emit_doc_event(rag_ingest *ig, MDB_txn *txn, const char *topic, const char *doc,
                          uint64_t ver, const rag_ev_trail *trail)
{
    rag_wbuf b;
    rag_wbuf_init(&b);
    int rc;
    if (!strcmp(topic, RAG_TOPIC_REVERT)) {
        rag_ev_revert ev;
        memset(&ev, 0, sizeof ev);
        ev.doc_id = doc;
        ev.version = ver;
        if (trail)
            ev.trail = *trail;
        rc = rag_ev_revert_encode(&ev, &b);
    } else {
        rag_ev_deleted ev;
        memset(&ev, 0, sizeof ev);
        ev.doc_id = doc;
        ev.version = ver;
        if (trail)
            ev.trail = *trail;
        rc = rag_ev_deleted_encode(&ev, &b);
    }
    if (!rc)
        rc = rag_outbox_add(ig->outbox, txn, topic, b.data, b.len, NULL);
    rag_wbuf_free(&b);
    return rc;
}

/* ---- doc.indexed consumer ------------------------------------------------------------- */

/*
 * ACTIVE(v): the index switched to v: remember it, free every older version, close the saga.
 * SUPERSEDED(v): v reached the index after a newer version: free it (unless it is active).
 * DELETED(v): the index dropped every label: free every version up to v; the doc row stays
 * as a tombstone.
 * REVERTED(v): the compensation of a failed v is done; the previous version stays active.
 * All four are idempotent; unknown documents are ignored.
 */
/* Storage trouble inside a handler is retried with backoff (and dead-lettered only when the
 * attempts run out): the message did nothing wrong. */
static int handler_result(int rc)
{
    if (rc == RAG_ESTORAGE || rc == RAG_EIO || rc == RAG_EMAPFULL || rc == RAG_ENOMEM)
        return rag_error_set(RAG_ETRANSIENT, "%s", rag_error_last());
    return rc;
}

static int on_indexed_apply(void *self, MDB_txn *txn, const rag_queue_message *msg);
static int emit_reembed(rag_ingest *ig, MDB_txn *txn, const char *doc, const doc_row *d);
static int on_failed_apply(void *self, MDB_txn *txn, const rag_queue_message *msg);

static int on_indexed(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    return handler_result(on_indexed_apply(self, txn, msg));
}

static int on_failed(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    return handler_result(on_failed_apply(self, txn, msg));
}

static int on_indexed_apply(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    rag_ingest *ig = self;
    rag_ev_indexed ev;
    int rc = rag_ev_indexed_decode(msg->data, msg->size, &ev);
    if (rc)
        return rc; /* malformed: permanent, dead-lettered */
    if (rag_doc_id_check(ev.doc_id) != RAG_OK)
        return rag_error_set(RAG_ECORRUPT, "doc.indexed %s: bad document id", msg->id);
    doc_row d;
    rc = doc_get(ig, txn, ev.doc_id, &d, 1);
    if (rc == RAG_ENOTFOUND)
        return RAG_OK;
    if (rc)
        return rc;
    rag_ev_trail trail = ev.trail;
    rag_ev_trail_add(&trail, "ingest", RAG_TOPIC_INDEXED, rag_now_ms(), msg->attempts, RAG_OK);
    /* versions a delete covers are garbage whatever order the events arrive in */
    uint64_t dead_upto = d.deleted ? d.deleted_at : 0;
    switch (ev.status) {
    case RAG_INDEXED_ACTIVE:
        if (ev.version > d.active && !(d.deleted && ev.version <= d.deleted_at)) {
            d.active = ev.version;
            rc = doc_put(ig, txn, ev.doc_id, &d);
            /* the version is searchable: active, even if a (premature) failure had marked it
             * failed — the saga completes forward */
            if (!rc)
                rc = set_version_state(ig, txn, ev.doc_id, ev.version, VERSION_ACTIVE);
        }
        if (!rc && ev.version > 0)
            rc = free_versions(ig, txn, ev.doc_id, 1, ev.version - 1);
        if (!rc && dead_upto)
            rc = free_versions(ig, txn, ev.doc_id, 1, dead_upto);
        if (!rc)
            rc = saga_update(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT, RAG_SAGA_DONE, 0, NULL,
                             &trail);
        if (!rc)
            rc = saga_gc(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT);
        /* switched to with vectors of the model before a re-embed: send it to be embedded by
         * the current one (the index keeps it findable on the lexical side meanwhile) */
        if (!rc && (ev.flags & RAG_EV_STALE_VECTORS) && ev.version == d.active && !d.deleted)
            rc = emit_reembed(ig, txn, ev.doc_id, &d);
        break;
    case RAG_INDEXED_SUPERSEDED:
        if (ev.version != d.active || (d.deleted && ev.version <= d.deleted_at))
            rc = free_versions(ig, txn, ev.doc_id, ev.version, ev.version);
        if (!rc)
            rc = saga_update(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT, RAG_SAGA_SUPERSEDED,
                             0, NULL, &trail);
        break;
    case RAG_INDEXED_DELETED:
        /* A re-put after the delete keeps its newer versions. */
        rc = free_versions(ig, txn, ev.doc_id, 1, ev.version ? ev.version : d.latest);
        if (!rc)
            rc = saga_update(ig, txn, ev.doc_id, ev.version, RAG_SAGA_DELETE, RAG_SAGA_DONE, 0,
                             NULL, &trail);
        if (!rc)
            rc = saga_gc(ig, txn, ev.doc_id, ev.version, RAG_SAGA_DELETE);
        break;
    case RAG_INDEXED_REVERTED:
        /* v's data stays (state FAILED) until a newer version or a delete supersedes it:
         * `rag dlq retry` of its dead letter, once the cause is fixed, then completes the
         * saga forward like any late version */
        if (d.deleted && ev.version <= d.deleted_at)
            rc = free_versions(ig, txn, ev.doc_id, ev.version, ev.version);
        if (!rc)
            rc = saga_update(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT, RAG_SAGA_FAILED, 0,
                             NULL, &trail);
        if (!rc)
            rc = saga_gc(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT);
        break;
    default:
        rc = rag_error_set(RAG_ECORRUPT, "doc.indexed %s: unknown status %u", msg->id,
                           ev.status);
        break;
    }
    free(d.acl);
    return rc;
}

/* ---- doc.failed consumer: the saga's compensation ------------------------------------- */

/*
 * Version v failed permanently downstream (embed or index dead-lettered its event).  Before
 * the index switched to v nothing of v is searchable (the switch is atomic), so compensating
 * means: mark v failed — the previous version simply stays active and searchable — and send
 * doc.revert, which removes any label of v the index holds outside an active version (none,
 * unless a crash or a repair left some).  v's data stays until a newer version or a delete
 * supersedes it, so a dead letter retried once its cause is fixed completes the saga
 * forward (ACTIVE(v) turns a failed saga into a done one).  A v that is already active,
 * superseded or deleted needs no compensation.
 */
static int on_failed_apply(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    rag_ingest *ig = self;
    rag_ev_failed ev;
    int rc = rag_ev_failed_decode(msg->data, msg->size, &ev);
    if (rc)
        return rc;
    if (rag_doc_id_check(ev.doc_id) != RAG_OK)
        return rag_error_set(RAG_ECORRUPT, "doc.failed %s: bad document id", msg->id);
    doc_row d;
    rc = doc_get(ig, txn, ev.doc_id, &d, 0);
    if (rc == RAG_ENOTFOUND)
        return RAG_OK;
    if (rc)
        return rc;
    if (ev.version == d.active || ev.version > d.latest)
        return RAG_OK;
    rag_ev_trail trail = ev.trail;
    rag_ev_trail_add(&trail, "ingest", RAG_TOPIC_FAILED, rag_now_ms(), msg->attempts, ev.code);
    if (ev.version < d.active || (d.deleted && ev.version <= d.deleted_at))
        return saga_update(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT, RAG_SAGA_SUPERSEDED, 0,
                           NULL, &trail);
    rc = set_version_state(ig, txn, ev.doc_id, ev.version, VERSION_FAILED);
    if (!rc) {
        char reason[300];
        snprintf(reason, sizeof reason, "%s: %s", ev.stage, ev.reason);
        rc = saga_update(ig, txn, ev.doc_id, ev.version, RAG_SAGA_PUT, RAG_SAGA_COMPENSATING,
                         ev.code ? ev.code : RAG_ERROR, reason, &trail);
    }
    if (!rc)
        rc = emit_doc_event(ig, txn, RAG_TOPIC_REVERT, ev.doc_id, ev.version, &trail);
    return rc;
}

/* ---- reader --------------------------------------------------------------------------- */

static int rd_begin(void *self, void **rtxn)
{
    rag_ingest *ig = self;
    MDB_txn *t;
    int mrc = mdb_txn_begin(ig->env, NULL, MDB_RDONLY, &t);
    if (mrc)
        return rag_mdb_error(mrc, "ingest reader: begin");
    *rtxn = t;
    return RAG_OK;
}

static void rd_end(void *self, void *rtxn)
{
    (void)self;
    if (rtxn)
        mdb_txn_abort(rtxn);
}

static int rd_chunk_text(void *self, void *rtxn, const char *doc_id, uint64_t version,
                         uint32_t chunk_no, const char **text, size_t *len)
{
    rag_ingest *ig = self;
    if (!doc_id || !rtxn || !text || strlen(doc_id) > RAG_DOC_ID_MAX)
        return rag_error_set(RAG_EINVAL, "ingest reader: bad arguments");
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version_chunk(key, doc_id, version, chunk_no);
    MDB_val k = {kl, key}, v;
    int mrc = mdb_get(rtxn, ig->chunks, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return rag_error_set(RAG_ENOTFOUND, "chunk %s@%llu#%u not stored", doc_id,
                             (unsigned long long)version, chunk_no);
    if (mrc)
        return rag_mdb_error(mrc, "ingest reader: chunk");
    if (v.mv_size < 17 || ((const char *)v.mv_data)[v.mv_size - 1] != 0)
        return rag_error_set(RAG_ECORRUPT, "chunk %s@%llu#%u: malformed", doc_id,
                             (unsigned long long)version, chunk_no);
    *text = (const char *)v.mv_data + 16;
    if (len)
        *len = v.mv_size - 17;
    return RAG_OK;
}

static int rd_doc_info(void *self, void *rtxn, const char *doc_id, rag_doc_view *out)
{
    rag_ingest *ig = self;
    if (!doc_id || !rtxn || !out || !*doc_id || strlen(doc_id) > RAG_DOC_ID_MAX)
        return rag_error_set(RAG_EINVAL, "ingest reader: bad arguments");
    doc_row d;
    int rc = doc_get(ig, rtxn, doc_id, &d, 0);
    if (rc == RAG_ENOTFOUND)
        return rag_error_set(RAG_ENOTFOUND, "document '%s' unknown", doc_id);
    if (rc)
        return rc;
    out->latest_version = d.latest;
    out->deleted = d.deleted;
    out->deleted_through = d.deleted_at;
    out->title = d.title;
    out->uri = d.uri;
    return RAG_OK;
}

/* ---- open / close --------------------------------------------------------------------- */

int rag_ingest_open(rag_ingest **out, const rag_config *cfg)
{
    if (!out || !cfg)
        return rag_error_set(RAG_EINVAL, "rag_ingest_open: out and cfg are required");
    *out = NULL;
    rag_ingest__xml_init();
    rag_ingest *ig = calloc(1, sizeof *ig);
    if (!ig)
        return rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    ig->cfg = *cfg;
    int rc = rag_env_open(&ig->env, cfg, "ingest", 24);
    struct { const char *name; MDB_dbi *dbi; } tables[] = {
        {"docs", &ig->docs}, {"versions", &ig->versions}, {"blobs", &ig->blobs},
        {"texts", &ig->texts}, {"chunks", &ig->chunks}, {"idem", &ig->idem},
        {"idem_time", &ig->idem_time}, {"sagas", &ig->sagas}, {"meta", &ig->meta}};
    for (size_t i = 0; !rc && i < sizeof tables / sizeof tables[0]; i++)
        rc = rag_dbi_open(ig->env, tables[i].name, 0, tables[i].dbi);
    if (!rc) {
        /* on-disk format: written once, checked on every open */
        MDB_txn *txn;
        int mrc = mdb_txn_begin(ig->env, NULL, 0, &txn);
        if (mrc) {
            rc = rag_mdb_error(mrc, "ingest: begin");
        } else {
            MDB_val k = {6, "format"}, v;
            mrc = mdb_get(txn, ig->meta, &k, &v);
            if (mrc == MDB_NOTFOUND) {
                rc = meta_add(ig, txn, "format", INGEST_FORMAT);
                if (!rc && (mrc = rag_txn_commit(txn)) != 0)
                    rc = rag_mdb_error(mrc, "ingest: commit");
                else if (rc)
                    mdb_txn_abort(txn);
            } else {
                if (mrc)
                    rc = rag_mdb_error(mrc, "ingest: read format");
                else if (meta_get(ig, txn, "format") != INGEST_FORMAT)
                    rc = rag_error_set(RAG_EVERSION, "ingest: on-disk format %llu not supported",
                                       (unsigned long long)meta_get(ig, txn, "format"));
                mdb_txn_abort(txn);
            }
        }
    }
    if (!rc)
        rc = rag_outbox_open(&ig->outbox, ig->env, "ingest");
    if (!rc) {
        ig->consumer.module = "ingest";
        ig->consumer.topic = RAG_TOPIC_INDEXED;
        ig->consumer.env = ig->env;
        ig->consumer.outbox = ig->outbox;
        ig->consumer.self = ig;
        ig->consumer.handle = on_indexed;
        rc = rag_consumer_init(&ig->consumer);
    }
    if (!rc) {
        ig->consumer_failed.module = "ingest";
        ig->consumer_failed.topic = RAG_TOPIC_FAILED;
        ig->consumer_failed.env = ig->env;
        ig->consumer_failed.outbox = ig->outbox;
        ig->consumer_failed.self = ig;
        ig->consumer_failed.handle = on_failed;
        rc = rag_consumer_init(&ig->consumer_failed);
    }
    if (rc) {
        rag_ingest_close(ig);
        return rc;
    }
    ig->reader.version = RAG_READER_VERSION;
    ig->reader.self = ig;
    ig->reader.begin = rd_begin;
    ig->reader.end = rd_end;
    ig->reader.chunk_text = rd_chunk_text;
    ig->reader.doc_info = rd_doc_info;
    *out = ig;
    return RAG_OK;
}

void rag_ingest_close(rag_ingest *ig)
{
    if (!ig)
        return;
    rag_outbox_free(ig->outbox);
    if (ig->env)
        rag_env_close(ig->env);
    free(ig);
}

const rag_ingest_reader *rag_ingest_reader_get(rag_ingest *ig) { return ig ? &ig->reader : NULL; }
rag_consumer *rag_ingest_consumer(rag_ingest *ig) { return ig ? &ig->consumer : NULL; }
rag_consumer *rag_ingest_consumer_failed(rag_ingest *ig)
{
    return ig ? &ig->consumer_failed : NULL;
}
rag_outbox *rag_ingest_outbox(rag_ingest *ig) { return ig ? ig->outbox : NULL; }
MDB_env *rag_ingest_env(rag_ingest *ig) { return ig ? ig->env : NULL; }

int rag_ingest_stats_get(rag_ingest *ig, rag_ingest_stats *out)
{
    if (!ig || !out)
        return rag_error_set(RAG_EINVAL, "rag_ingest_stats_get: ig and out are required");
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin");
    out->documents = meta_get(ig, txn, "documents");
    out->versions = meta_get(ig, txn, "versions");
    out->chunks = meta_get(ig, txn, "chunks");
    out->sagas_running = meta_get(ig, txn, "sagas_running");
    out->sagas_compensating = meta_get(ig, txn, "sagas_compensating");
    out->sagas_failed = meta_get(ig, txn, "sagas_failed");
    mdb_txn_abort(txn);
    return RAG_OK;
}

/* ---- put ------------------------------------------------------------------------------ */

/* A document after the work that needs no transaction: validated, parsed, chunked. */
typedef struct prepared {
    int code;             /* RAG_OK or the per-document failure */
    char detail[256];     /* rag_error_last() of the failure */
    const char *mime;     /* static */
    char *title;          /* NFC, never NULL once prepared */
    char *text;           /* joined NFC text */
    size_t text_len;
    rag_ingest_chunks chunks;
    uint8_t payload_hash[16];
    uint8_t text_hash[16];
} prepared;

static void prepared_clear(prepared *p)
{
    free(p->title);
    free(p->text);
    rag_ingest__chunks_clear(&p->chunks);
}

static int fail(prepared *p, int code)
{
    p->code = code;
    snprintf(p->detail, sizeof p->detail, "%s", rag_error_last());
    return code;
}

/* A derived title: one line, at most TITLE_MAX bytes cut at a UTF-8 boundary. */
static char *derive_title(const rag_ingest_parsed *doc)
{
    const char *src = doc->title;
    size_t n = src ? strlen(src) : 0;
    if (!n) {
        const rag_ingest_block *b = NULL;
        for (size_t i = 0; i < doc->count && !b; i++)
            if (doc->blocks[i].kind == RAG_BLOCK_HEADING)
                b = &doc->blocks[i];
        if (!b && doc->count)
            b = &doc->blocks[0];
        src = b ? b->text : "";
        n = b ? strcspn(b->text, "\n") : 0;
    }
    if (n > TITLE_MAX) {
        n = TITLE_MAX;
        while (n && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    return rag_strndup(src, n);
}

static void payload_hash(const rag_doc *d, uint8_t out[16])
{
    /* the id takes part: the same key and bytes under another id is another request */
    size_t idl = strlen(d->id);
    size_t n = idl + 1 + d->size;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        /* fall back to hashing the bytes alone: still detects a changed payload */
        rag_hash128(d->data, d->size, out);
        return;
    }
    memcpy(buf, d->id, idl + 1);
    if (d->size)
        memcpy(buf + idl + 1, d->data, d->size);
    rag_hash128(buf, n, out);
    free(buf);
}

static int check_text_field(const char *what, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return rag_error_set(RAG_EINVAL, "%s longer than %zu bytes", what, max);
    size_t bad;
    if (rag_utf8_check(s, n, &bad))
        return rag_error_set(RAG_EUTF8, "%s: invalid UTF-8 at byte offset %zu", what, bad);
    return RAG_OK;
}

static int prepare(rag_ingest *ig, const rag_doc *d, prepared *p)
{
    memset(p, 0, sizeof *p);
    if (!d->id)
        return fail(p, rag_error_set(RAG_EINVAL, "document id is required"));
    if (rag_doc_id_check(d->id))
        return fail(p, RAG_EINVAL);
    if (!d->data && d->size)
        return fail(p, rag_error_set(RAG_EINVAL, "document '%s': data is NULL", d->id));
    if (d->size > ig->cfg.max_doc_bytes)
        return fail(p, rag_error_set(RAG_ETOOBIG, "document '%s' is %zu bytes; max_doc_bytes is %zu",
                                     d->id, d->size, ig->cfg.max_doc_bytes));
    if (d->idempotency_key) {
        size_t kl = strlen(d->idempotency_key);
        if (!kl || kl > IDEM_KEY_MAX)
            return fail(p, rag_error_set(RAG_EINVAL, "idempotency key must be 1..%d bytes",
                                         IDEM_KEY_MAX));
        payload_hash(d, p->payload_hash);
    }
    if (d->title && strlen(d->title) > CALLER_TITLE_MAX)
        return fail(p, rag_error_set(RAG_EINVAL, "document '%s': title longer than %d bytes",
                                     d->id, CALLER_TITLE_MAX));
    if (d->uri) {
        int rc = check_text_field("uri", d->uri, URI_MAX);
        if (rc)
            return fail(p, rc);
    }
    if (d->acl_count && !d->acl)
        return fail(p, rag_error_set(RAG_EINVAL, "document '%s': acl is NULL", d->id));
    for (size_t i = 0; i < d->acl_count; i++) {
        if (!d->acl[i] || !*d->acl[i])
            return fail(p, rag_error_set(RAG_EINVAL, "document '%s': empty ACL principal",
                                         d->id));
        int rc = check_text_field("ACL principal", d->acl[i], ACL_PRINCIPAL_MAX);
        if (rc)
            return fail(p, rc);
    }

    int fmt;
    uint64_t t_validate = rag_mono_us();
    rag_ingest__phase_doc(d->size);
    int rc = rag_ingest__detect(d->mime, d->data, d->size, d->uri, d->id, &fmt, &p->mime);
    if (rc)
        return fail(p, rc);

    const char *bytes = d->data ? d->data : "";
    size_t len = d->size;
    char *repaired = NULL;
    size_t bad;
    if (rag_utf8_check(bytes, len, &bad)) {
        if (!(d->flags & RAG_PUT_REPAIR_UTF8))
            return fail(p, rag_error_set(RAG_EUTF8,
                                         "document '%s': invalid UTF-8 at byte offset %zu",
                                         d->id, bad));
        rc = rag_utf8_repair(bytes, len, &repaired, &len);
        if (rc)
            return fail(p, rc);
        bytes = repaired;
    }

    rag_ingest__phase_add(RAG_PHASE_VALIDATE, rag_mono_us() - t_validate);
    rag_ingest_parsed doc;
    rag_ingest__parsed_init(&doc);
    rc = rag_ingest__parse(fmt, bytes, len, &doc); /* times its parse and normalise phases */
    free(repaired);
    if (!rc && doc.count == 0)
        rc = rag_error_set(RAG_EEMPTY, "document '%s' has no text", d->id);
    if (!rc && d->title) {
        char *t = NULL;
        size_t tl = strlen(d->title), tn;
        size_t tbad;
        if (rag_utf8_check(d->title, tl, &tbad)) {
            if (d->flags & RAG_PUT_REPAIR_UTF8) {
                rc = rag_utf8_repair(d->title, tl, &t, &tl);
            } else {
                rc = rag_error_set(RAG_EUTF8, "document '%s': title: invalid UTF-8 at byte offset %zu",
                                   d->id, tbad);
            }
        }
        if (!rc) {
            rc = rag_utf8_nfc(t ? t : d->title, tl, &p->title, &tn);
        }
        free(t);
    } else if (!rc) {
        p->title = derive_title(&doc);
        if (!p->title)
            rc = rag_error_set(RAG_ENOMEM, "out of memory");
    }
    uint64_t t_chunk = rag_mono_us();
    if (!rc)
        rc = rag_ingest__join(&doc, &p->text, &p->text_len);
    if (!rc) {
        rag_ingest_chunk_cfg cc = {ig->cfg.chunk_target, ig->cfg.chunk_min, ig->cfg.chunk_max,
                                   ig->cfg.chunk_overlap};
        rc = rag_ingest__chunk(&doc, &cc, &p->chunks);
    }
    if (!rc && p->chunks.count == 0)
        rc = rag_error_set(RAG_EEMPTY, "document '%s' has no text", d->id);
    if (!rc && p->chunks.count > UINT32_MAX)
        rc = rag_error_set(RAG_ETOOBIG, "document '%s' has too many chunks", d->id);
    rag_ingest__parsed_clear(&doc);
    if (rc)
        return fail(p, rc);
    rag_hash128(p->text, p->text_len, p->text_hash);
    rag_ingest__phase_add(RAG_PHASE_CHUNK, rag_mono_us() - t_chunk);
    return RAG_OK;
}

/* Idempotency lookup: 1 = same request seen (version in *ver), 0 = new key, <0 error. */
static int idem_lookup(rag_ingest *ig, MDB_txn *txn, const rag_doc *d, const prepared *p,
                       uint64_t now, uint64_t *ver)
{
    MDB_val k = {strlen(d->idempotency_key), (void *)d->idempotency_key}, v;
    int mrc = mdb_get(txn, ig->idem, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read idempotency key");
    rag_rbuf r;
    rag_rbuf_init(&r, v.mv_data, v.mv_size);
    uint8_t f = rag_rbuf_u8(&r);
    const uint8_t *h = rag_rbuf_bytes(&r, 16);
    uint64_t version = rag_rbuf_u64(&r);
    uint64_t created = rag_rbuf_u64(&r);
    if (r.err || f != IDEM_ROW_FORMAT || !h)
        return rag_error_set(RAG_ECORRUPT, "ingest: malformed idempotency row");
    if (created + ig->cfg.idempotency_ttl_ms < now)
        return 0; /* expired: a new request */
    if (memcmp(h, p->payload_hash, 16))
        return rag_error_set(RAG_EIDEMPOTENCY,
                             "idempotency key '%s' was used with a different payload",
                             d->idempotency_key);
    *ver = version;
    return 1;
}

static int idem_record(rag_ingest *ig, MDB_txn *txn, const rag_doc *d, const prepared *p,
                       uint64_t version, uint64_t now)
{
    const char *key = d->idempotency_key;
    size_t kl = strlen(key);
    /* an expired record being replaced: drop its expiry row */
    MDB_val k = {kl, (void *)key}, v;
    uint8_t tkey[8 + IDEM_KEY_MAX];
    if (mdb_get(txn, ig->idem, &k, &v) == 0 && v.mv_size >= 1 + 16 + 16) {
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        rag_rbuf_bytes(&r, 1 + 16 + 8);
        rag_be64_put(tkey, rag_rbuf_u64(&r));
        memcpy(tkey + 8, key, kl);
        int rc = del(txn, ig->idem_time, tkey, 8 + kl, "ingest: idempotency expiry");
        if (rc)
            return rc;
    }
    rag_wbuf b;
    rag_wbuf_init(&b);
    rag_wbuf_u8(&b, IDEM_ROW_FORMAT);
    rag_wbuf_bytes(&b, p->payload_hash, 16);
    rag_wbuf_u64(&b, version);
    rag_wbuf_u64(&b, now);
    rag_wbuf_cstr(&b, d->id);
    int rc = b.err ? rag_error_set(b.err, "ingest: encoding idempotency row")
                   : put(txn, ig->idem, key, kl, b.data, b.len, "ingest: write idempotency key");
    rag_wbuf_free(&b);
    if (rc)
        return rc;
    rag_be64_put(tkey, now);
    memcpy(tkey + 8, key, kl);
    return put(txn, ig->idem_time, tkey, 8 + kl, "", 0, "ingest: idempotency expiry");
}

/* Drop up to `max` idempotency records older than the TTL (oldest first). */
static int idem_purge(rag_ingest *ig, MDB_txn *txn, uint64_t now, size_t max)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ig->idem_time, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: idempotency cursor");
    MDB_val k, v;
    int rc = RAG_OK;
    size_t done = 0;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == 0 && done < max && k.mv_size > 8) {
        uint64_t created = rag_be64_get(k.mv_data);
        if (created + ig->cfg.idempotency_ttl_ms >= now)
            break;
        MDB_val ik = {k.mv_size - 8, (uint8_t *)k.mv_data + 8};
        mrc = mdb_del(txn, ig->idem, &ik, NULL);
        if (mrc && mrc != MDB_NOTFOUND)
            break;
        mrc = mdb_cursor_del(cur, 0);
        if (mrc)
            break;
        done++;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); /* re-seek (see free_version) */
    }
    if (mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "ingest: purge idempotency keys");
    mdb_cursor_close(cur);
    return rc;
}

/* Store one prepared document in a nested txn of `parent`. */
static int store_one(rag_ingest *ig, MDB_txn *parent, const rag_doc *d, prepared *p,
                     uint64_t now, const char *origin, uint64_t *version_out)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, parent, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin nested txn");
    doc_row old;
    int rc = doc_get(ig, txn, d->id, &old, 0);
    int existed = rc == RAG_OK;
    if (rc == RAG_ENOTFOUND)
        rc = RAG_OK;
    uint64_t ver = existed ? old.latest + 1 : 1;
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version(key, d->id, ver);
    rag_wbuf b;
    rag_wbuf_init(&b);
    if (!rc)
        rc = put(txn, ig->blobs, key, kl, d->size ? d->data : "", d->size, "ingest: write blob");
    if (!rc)
        rc = put(txn, ig->texts, key, kl, p->text, p->text_len, "ingest: write text");
    rag_ev_chunk *evc = NULL;
    if (!rc) {
        evc = calloc(p->chunks.count, sizeof *evc);
        if (!evc)
            rc = rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    }
    for (size_t i = 0; i < p->chunks.count && !rc; i++) {
        const rag_ingest_chunk *c = &p->chunks.items[i];
        evc[i].chunk_no = (uint32_t)i;
        rag_hash128(c->text, c->len, evc[i].hash);
        evc[i].text = c->text;
        evc[i].text_len = c->len;
        uint8_t ck[RAG_KEY_MAX];
        size_t ckl = rag_key_doc_version_chunk(ck, d->id, ver, (uint32_t)i);
        rag_wbuf_reset(&b);
        rag_wbuf_bytes(&b, evc[i].hash, 16);
        rag_wbuf_bytes(&b, c->text, c->len);
        rag_wbuf_u8(&b, 0);
        rc = b.err ? rag_error_set(b.err, "ingest: encoding chunk")
                   : put(txn, ig->chunks, ck, ckl, b.data, b.len, "ingest: write chunk");
    }
    if (!rc) {
        version_row vr = {VERSION_PENDING, (uint32_t)p->chunks.count, {0}, now, p->text_len,
                          d->size};
        memcpy(vr.hash, p->text_hash, 16);
        rag_wbuf_reset(&b);
        version_row_encode(&b, &vr);
        rc = b.err ? rag_error_set(b.err, "ingest: encoding version row")
                   : put(txn, ig->versions, key, kl, b.data, b.len, "ingest: write version");
    }
    if (!rc) {
        doc_row nd = {0};
        nd.deleted = 0;
        nd.latest = ver;
        nd.active = existed ? old.active : 0;
        nd.deleted_at = existed ? old.deleted_at : 0;
        nd.updated_ms = now;
        nd.title = p->title;
        nd.uri = d->uri ? d->uri : "";
        nd.mime = p->mime;
        nd.acl_count = d->acl_count;
        nd.acl = (const char **)d->acl;
        rc = doc_put(ig, txn, d->id, &nd);
    }
    if (!rc && (!existed || old.deleted))
        rc = meta_add(ig, txn, "documents", 1);
    if (!rc)
        rc = meta_add(ig, txn, "versions", 1);
    if (!rc)
        rc = meta_add(ig, txn, "chunks", (int64_t)p->chunks.count);
    if (!rc && d->idempotency_key)
        rc = idem_record(ig, txn, d, p, ver, now);
    /* the saga starts in the same transaction as its first step (the doc.chunked row) */
    rag_ev_trail trail = {0};
    rag_ev_trail_add(&trail, "ingest", origin, now, 1, RAG_OK);
    if (!rc)
        rc = saga_start(ig, txn, d->id, ver, RAG_SAGA_PUT, now, &trail);
    if (!rc) {
        rag_ev_chunked ev = {d->id, ver, p->title, d->uri ? d->uri : "", d->acl_count,
                             (const char **)d->acl, p->chunks.count, evc, trail, 0};
        rag_wbuf_reset(&b);
        rc = rag_ev_chunked_encode(&ev, &b);
        if (!rc)
            rc = rag_outbox_add(ig->outbox, txn, RAG_TOPIC_CHUNKED, b.data, b.len, NULL);
    }
    free(evc);
    rag_wbuf_free(&b);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: commit nested txn");
    *version_out = ver;
    return RAG_OK;
}

int rag_ingest_put_batch(rag_ingest *ig, const rag_doc *docs, size_t n, rag_put_result *results)
{
    if (!ig || (n && (!docs || !results)))
        return rag_error_set(RAG_EINVAL, "rag_ingest_put_batch: ig, docs and results are required");
    if (!n)
        return RAG_OK;
    /* Parse and chunk outside the write txn: writers of this env (other puts, the doc.indexed
     * consumer) wait only for the stores. */
    prepared *ps = calloc(n, sizeof *ps);
    if (!ps)
        return rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    for (size_t i = 0; i < n; i++) {
        prepare(ig, &docs[i], &ps[i]);
        results[i].code = ps[i].code;
        results[i].version = 0;
    }
    uint64_t now = rag_now_ms();
    uint64_t t_store = rag_mono_us();
    MDB_txn *txn = NULL;
    int rc = RAG_OK;
    int mrc = mdb_txn_begin(ig->env, NULL, 0, &txn);
    if (mrc)
        rc = rag_mdb_error(mrc, "ingest: begin");
    if (!rc)
        rc = idem_purge(ig, txn, now, IDEM_PURGE_PER_BATCH);
    for (size_t i = 0; i < n && !rc; i++) {
        const rag_doc *d = &docs[i];
        prepared *p = &ps[i];
        /* The idempotency check comes first: a repeat returns the first result even when
         * this attempt would not parse. Keys were validated by prepare(). */
        if (d->idempotency_key && d->id && (p->code == RAG_OK || p->code == RAG_EUTF8 ||
                                           p->code == RAG_EPARSE || p->code == RAG_EEMPTY ||
                                           p->code == RAG_EUNSUPPORTED)) {
            uint64_t ver = 0;
            int hit = idem_lookup(ig, txn, d, p, now, &ver);
            if (hit == 1) {
                results[i].code = RAG_OK;
                results[i].version = ver;
                continue;
            }
            if (hit < 0) {
                if (hit != RAG_EIDEMPOTENCY) {
                    rc = hit; /* storage failure: the whole batch fails */
                    break;
                }
                fail(p, hit);
                results[i].code = hit;
                continue;
            }
        }
        if (p->code != RAG_OK)
            continue;
        uint64_t ver = 0;
        int r = store_one(ig, txn, d, p, now, "put", &ver);
        if (r == RAG_OK) {
            results[i].version = ver;
        } else {
            fail(p, r);
            results[i].code = r;
        }
    }
    if (txn) {
        if (rc) {
            mdb_txn_abort(txn);
        } else if ((mrc = rag_txn_commit(txn)) != 0) {
            rc = rag_mdb_error(mrc, "ingest: commit");
        }
    }
    rag_ingest__phase_add(RAG_PHASE_STORE, rag_mono_us() - t_store);
    if (!rc) {
        /* leave the first document failure's detail for rag_error_last() */
        for (size_t i = 0; i < n; i++) {
            if (results[i].code != RAG_OK) {
                rag_error_set(results[i].code, "%s", ps[i].detail);
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        prepared_clear(&ps[i]);
    free(ps);
    return rc;
}

/* ---- delete --------------------------------------------------------------------------- */

int rag_ingest_delete(rag_ingest *ig, const char *doc_id)
{
    if (!ig || !doc_id)
        return rag_error_set(RAG_EINVAL, "rag_ingest_delete: ig and doc_id are required");
    int rc = rag_doc_id_check(doc_id);
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin");
    doc_row d;
    rc = doc_get(ig, txn, doc_id, &d, 1);
    if (rc == RAG_ENOTFOUND || (!rc && d.deleted))
        rc = rag_error_set(RAG_ENOTFOUND, "no live document '%s'", doc_id);
    if (!rc) {
        d.deleted = 1;
        d.deleted_at = d.latest;
        d.updated_ms = rag_now_ms();
        rc = doc_put(ig, txn, doc_id, &d);
    }
    if (!rc)
        rc = meta_add(ig, txn, "documents", -1);
    if (!rc) {
        uint64_t now = rag_now_ms();
        rag_ev_trail trail = {0};
        rag_ev_trail_add(&trail, "ingest", "delete", now, 1, RAG_OK);
        rc = saga_start(ig, txn, doc_id, d.latest, RAG_SAGA_DELETE, now, &trail);
        if (!rc)
            rc = emit_doc_event(ig, txn, RAG_TOPIC_DELETED, doc_id, d.latest, &trail);
    }
    free(d.acl);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "ingest: commit") : RAG_OK;
}

/* ---- sagas: trace, scan, repair ------------------------------------------------------- */

int rag_ingest_saga_get(rag_ingest *ig, const char *doc_id,
                        int (*fn)(void *arg, const rag_ingest_saga_view *s), void *arg)
{
    if (!ig || !doc_id || !fn)
        return rag_error_set(RAG_EINVAL, "rag_ingest_saga_get: bad arguments");
    int rc = rag_doc_id_check(doc_id);
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin");
    saga_row s;
    uint64_t ver = 0;
    int found = saga_newest(ig, txn, doc_id, &ver, &s);
    if (found == 0)
        rc = rag_error_set(RAG_ENOTFOUND, "no saga recorded for '%s'", doc_id);
    else if (found < 0)
        rc = found;
    doc_row d;
    if (!rc) {
        rc = doc_get(ig, txn, doc_id, &d, 0);
        if (rc == RAG_ENOTFOUND) {
            memset(&d, 0, sizeof d);
            rc = RAG_OK;
        }
    }
    if (!rc) {
        rag_ingest_saga_view v;
        memset(&v, 0, sizeof v);
        v.doc_id = doc_id;
        v.kind = s.kind;
        v.state = s.state;
        v.version = ver;
        v.started_ms = s.started_ms;
        v.updated_ms = s.updated_ms;
        v.deadline_ms = s.deadline_ms;
        v.code = s.code;
        v.reason = s.reason;
        v.trail = s.trail;
        v.deleted = d.deleted;
        v.latest = d.latest;
        v.active = d.active;
        rc = fn(arg, &v);
    }
    mdb_txn_abort(txn);
    return rc;
}

/* Versions of `doc` still stored, and the row of `want` when stored. */
static int stored_versions(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t want,
                           size_t *count, version_row *want_row, int *want_found)
{
    size_t idl = strlen(doc);
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version(key, doc, 0);
    *count = 0;
    *want_found = 0;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ig->versions, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: version cursor");
    MDB_val k = {kl, key}, v;
    int rc = RAG_OK;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && k.mv_size == idl + 9 && !memcmp(k.mv_data, doc, idl) &&
           ((const uint8_t *)k.mv_data)[idl] == 0) {
        (*count)++;
        if (rag_be64_get((const uint8_t *)k.mv_data + idl + 1) == want) {
            rc = version_row_decode(&v, want_row);
            if (rc)
                break;
            *want_found = 1;
        }
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "ingest: scan versions");
    mdb_cursor_close(cur);
    return rc;
}

int rag_ingest_scan(rag_ingest *ig, int (*fn)(void *arg, const rag_ingest_doc_state *d),
                    void *arg)
{
    if (!ig || !fn)
        return rag_error_set(RAG_EINVAL, "rag_ingest_scan: bad arguments");
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(txn, ig->docs, &cur);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "ingest: document cursor");
    }
    int rc = RAG_OK;
    char id[RAG_DOC_ID_MAX + 1];
    MDB_val k, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == 0 && !rc) {
        if (k.mv_size == 0 || k.mv_size > RAG_DOC_ID_MAX) {
            rc = rag_error_set(RAG_ECORRUPT, "ingest: document key of %zu bytes", k.mv_size);
            break;
        }
        memcpy(id, k.mv_data, k.mv_size);
        id[k.mv_size] = 0;
        doc_row d;
        rc = doc_row_decode(&v, &d, 0);
        if (rc)
            break;
        rag_ingest_doc_state st;
        memset(&st, 0, sizeof st);
        st.doc_id = id;
        st.deleted = d.deleted;
        st.latest = d.latest;
        st.active = d.active;
        st.deleted_at = d.deleted_at;
        version_row vr;
        rc = stored_versions(ig, txn, id, d.active, &st.stored_versions, &vr, &st.active_stored);
        if (rc)
            break;
        if (st.active_stored)
            st.active_chunks = vr.chunk_count;
        saga_row s;
        uint64_t sver = 0;
        int found = saga_newest(ig, txn, id, &sver, &s);
        if (found < 0) {
            rc = found;
            break;
        }
        if (found) {
            st.has_saga = 1;
            st.saga_kind = s.kind;
            st.saga_state = s.state;
            st.saga_version = sver;
            st.saga_deadline_ms = s.deadline_ms;
        }
        rc = fn(arg, &st);
        if (rc)
            break;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "ingest: scan documents");
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* Read the stored chunks of doc@ver into `out` (texts copied) and their hashes (allocated
 * array of 16-byte hashes). */
static int load_chunks(rag_ingest *ig, MDB_txn *txn, const char *doc, uint64_t ver,
                       uint32_t count, rag_ingest_chunks *out, uint8_t (**hashes)[16])
{
    memset(out, 0, sizeof *out);
    *hashes = NULL;
    if (!count)
        return rag_error_set(RAG_ECORRUPT, "ingest: %s@%llu has no chunks", doc,
                             (unsigned long long)ver);
    out->items = calloc(count, sizeof *out->items);
    *hashes = calloc(count, 16);
    if (!out->items || !*hashes) {
        free(out->items);
        free(*hashes);
        out->items = NULL;
        *hashes = NULL;
        return rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    }
    out->cap = count;
    for (uint32_t i = 0; i < count; i++) {
        uint8_t key[RAG_KEY_MAX];
        size_t kl = rag_key_doc_version_chunk(key, doc, ver, i);
        MDB_val k = {kl, key}, v;
        int mrc = mdb_get(txn, ig->chunks, &k, &v);
        if (mrc)
            return mrc == MDB_NOTFOUND
                       ? rag_error_set(RAG_ECORRUPT, "ingest: chunk %u of %s@%llu missing", i,
                                       doc, (unsigned long long)ver)
                       : rag_mdb_error(mrc, "ingest: read chunk");
        if (v.mv_size < 17)
            return rag_error_set(RAG_ECORRUPT, "ingest: chunk %u of %s malformed", i, doc);
        memcpy((*hashes)[i], v.mv_data, 16);
        out->items[i].text = rag_strndup((const char *)v.mv_data + 16, v.mv_size - 17);
        if (!out->items[i].text)
            return rag_error_set(RAG_ENOMEM, "ingest: out of memory");
        out->items[i].len = v.mv_size - 17;
        out->count = i + 1;
    }
    return RAG_OK;
}

/* doc.chunked of the stored version `ver` of `doc` (row `d`), with `flags` and `trail`: a
 * redrive of a running put, or a re-embed (RAG_EV_REEMBED) of the active version. */
static int emit_stored_chunked(rag_ingest *ig, MDB_txn *txn, const char *doc, const doc_row *d,
                               uint64_t ver, uint32_t flags, const rag_ev_trail *trail)
{
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version(key, doc, ver);
    MDB_val k = {kl, key}, v;
    int mrc = mdb_get(txn, ig->versions, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return rag_error_set(RAG_ENOTFOUND, "ingest: %s@%llu is no longer stored", doc,
                             (unsigned long long)ver);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read version");
    version_row vr;
    int rc = version_row_decode(&v, &vr);
    rag_ingest_chunks ch;
    memset(&ch, 0, sizeof ch);
    uint8_t(*hashes)[16] = NULL;
    if (!rc)
        rc = load_chunks(ig, txn, doc, ver, vr.chunk_count, &ch, &hashes);
    rag_ev_chunk *evc = NULL;
    if (!rc && !(evc = calloc(ch.count, sizeof *evc)))
        rc = rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    for (size_t i = 0; !rc && i < ch.count; i++) {
        evc[i].chunk_no = (uint32_t)i;
        memcpy(evc[i].hash, hashes[i], 16);
        evc[i].text = ch.items[i].text;
        evc[i].text_len = ch.items[i].len;
    }
    if (!rc) {
        rag_ev_chunked ev;
        memset(&ev, 0, sizeof ev);
        ev.doc_id = doc;
        ev.version = ver;
        ev.title = d->title;
        ev.uri = d->uri;
        ev.acl_count = d->acl_count;
        ev.acl = d->acl;
        ev.chunk_count = ch.count;
        ev.chunks = evc;
        if (trail)
            ev.trail = *trail;
        ev.flags = flags;
        rag_wbuf b;
        rag_wbuf_init(&b);
        rc = rag_ev_chunked_encode(&ev, &b);
        if (!rc)
            rc = rag_outbox_add(ig->outbox, txn, RAG_TOPIC_CHUNKED, b.data, b.len, NULL);
        rag_wbuf_free(&b);
    }
    free(evc);
    free(hashes);
    if (ch.items)
        rag_ingest__chunks_clear(&ch);
    return rc;
}

/* RESUME of a running put: doc.chunked of `ver` again, from what is stored. */
static int resume_put(rag_ingest *ig, MDB_txn *txn, const char *doc, const doc_row *d,
                      uint64_t ver, const saga_row *s)
{
    uint64_t now = rag_now_ms();
    saga_row ns = *s;
    rag_ev_trail_add(&ns.trail, "ingest", "redrive", now, 1, RAG_OK);
    ns.updated_ms = now;
    ns.deadline_ms = now + ig->cfg.saga_deadline_ms;
    int rc = emit_stored_chunked(ig, txn, doc, d, ver, 0, &ns.trail);
    if (!rc) {
        uint8_t skey[RAG_KEY_MAX + 1];
        size_t skl = saga_key(skey, doc, ver, RAG_SAGA_PUT);
        rc = saga_write(ig, txn, skey, skl, &ns, ns.state);
    }
    return rc;
}

/* ---- re-embed ------------------------------------------------------------------------- */

/* The re-embed of `doc`'s active version: a doc.chunked flagged RAG_EV_REEMBED, whose trail
 * starts with an ingest "reembed" hop (no saga: the version stays active throughout). */
static int emit_reembed(rag_ingest *ig, MDB_txn *txn, const char *doc, const doc_row *d)
{
    rag_ev_trail trail;
    memset(&trail, 0, sizeof trail);
    rag_ev_trail_add(&trail, "ingest", "reembed", rag_now_ms(), 1, RAG_OK);
    int rc = emit_stored_chunked(ig, txn, doc, d, d->active, RAG_EV_REEMBED, &trail);
    if (rc == RAG_ENOTFOUND) {
        rag_error_clear(); /* freed meanwhile: a newer version took over, nothing to do */
        rc = RAG_OK;
    }
    return rc;
}

#define REEMBED_CURSOR "reembed_cursor" /* be64 generation, then the last document id sent */

int rag_ingest_reembed_step(rag_ingest *ig, uint64_t gen, size_t max_docs, size_t *sent,
                            int *done)
{
    if (sent)
        *sent = 0;
    if (done)
        *done = 0;
    if (!ig || !done || max_docs == 0)
        return rag_error_set(RAG_EINVAL, "rag_ingest_reembed_step: bad argument");
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin re-embed txn");
    if (meta_get(ig, txn, "reembed_gen") >= gen) {
        mdb_txn_abort(txn);
        *done = 1;
        return RAG_OK;
    }
    /* Resume after the last document of an interrupted scan of the same generation. */
    char after[RAG_DOC_ID_MAX + 1] = "";
    MDB_val ck = {sizeof REEMBED_CURSOR - 1, REEMBED_CURSOR}, cv;
    if (mdb_get(txn, ig->meta, &ck, &cv) == 0 && cv.mv_size >= 8 &&
        cv.mv_size - 8 <= RAG_DOC_ID_MAX && rag_be64_get(cv.mv_data) == gen) {
        memcpy(after, (const char *)cv.mv_data + 8, cv.mv_size - 8);
        after[cv.mv_size - 8] = 0;
    }
    MDB_cursor *cur;
    mrc = mdb_cursor_open(txn, ig->docs, &cur);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "ingest: re-embed cursor");
    }
    int rc = RAG_OK;
    size_t n = 0;
    char last[RAG_DOC_ID_MAX + 1] = "";
    MDB_val k = {strlen(after), after}, v;
    mrc = after[0] ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                   : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (mrc == 0 && after[0] && k.mv_size == strlen(after) && !memcmp(k.mv_data, after, k.mv_size))
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    for (; mrc == 0 && !rc && n < max_docs; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 0 || k.mv_size > RAG_DOC_ID_MAX)
            continue;
        memcpy(last, k.mv_data, k.mv_size);
        last[k.mv_size] = 0;
        n++;
        doc_row d;
        rc = doc_row_decode(&v, &d, 1);
        if (rc)
            break;
        if (!d.deleted && d.active)
            rc = emit_reembed(ig, txn, last, &d);
        free(d.acl);
        if (!rc && sent && !d.deleted && d.active)
            (*sent)++;
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "ingest: re-embed scan");
    mdb_cursor_close(cur);
    int finished = !rc && mrc == MDB_NOTFOUND;
    if (!rc && finished) {
        uint8_t b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(gen >> (8 * i));
        rc = put(txn, ig->meta, "reembed_gen", sizeof "reembed_gen" - 1, b, 8,
                 "ingest: write re-embed generation");
        if (!rc && (mrc = mdb_del(txn, ig->meta, &ck, NULL)) != 0 && mrc != MDB_NOTFOUND)
            rc = rag_mdb_error(mrc, "ingest: clear re-embed cursor");
    } else if (!rc) {
        uint8_t buf[8 + RAG_DOC_ID_MAX];
        size_t ll = strlen(last);
        rag_be64_put(buf, gen);
        memcpy(buf + 8, last, ll);
        rc = put(txn, ig->meta, REEMBED_CURSOR, sizeof REEMBED_CURSOR - 1, buf, 8 + ll,
                 "ingest: write re-embed cursor");
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: commit re-embed step");
    *done = finished;
    return RAG_OK;
}

/* REINDEX: the active version's content stored again as a new version. */
static int reindex(rag_ingest *ig, MDB_txn *txn, const char *doc, const doc_row *d)
{
    if (d->deleted || !d->active)
        return rag_error_set(RAG_ENOTFOUND, "ingest: '%s' has no active version", doc);
    uint8_t key[RAG_KEY_MAX];
    size_t kl = rag_key_doc_version(key, doc, d->active);
    MDB_val k = {kl, key}, v, blob, text;
    int mrc = mdb_get(txn, ig->versions, &k, &v);
    if (!mrc)
        mrc = mdb_get(txn, ig->blobs, &k, &blob);
    if (!mrc)
        mrc = mdb_get(txn, ig->texts, &k, &text);
    if (mrc == MDB_NOTFOUND)
        return rag_error_set(RAG_ENOTFOUND, "ingest: %s@%llu is not stored", doc,
                             (unsigned long long)d->active);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: read version");
    version_row vr;
    int rc = version_row_decode(&v, &vr);
    if (rc)
        return rc;
    prepared p;
    memset(&p, 0, sizeof p);
    p.mime = d->mime;
    p.title = rag_strdup(d->title);
    p.text = rag_strndup(text.mv_data, text.mv_size);
    p.text_len = text.mv_size;
    memcpy(p.text_hash, vr.hash, 16);
    uint8_t(*hashes)[16] = NULL;
    if (!p.title || !p.text)
        rc = rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    if (!rc)
        rc = load_chunks(ig, txn, doc, d->active, vr.chunk_count, &p.chunks, &hashes);
    free(hashes);
    /* the blob must outlive the store, which writes into this same txn */
    void *bytes = NULL;
    if (!rc && !(bytes = malloc(blob.mv_size ? blob.mv_size : 1)))
        rc = rag_error_set(RAG_ENOMEM, "ingest: out of memory");
    if (!rc) {
        memcpy(bytes, blob.mv_data, blob.mv_size);
        rag_doc nd;
        memset(&nd, 0, sizeof nd);
        nd.id = doc;
        nd.data = bytes;
        nd.size = blob.mv_size;
        nd.uri = d->uri;
        nd.acl = d->acl;
        nd.acl_count = d->acl_count;
        uint64_t ver;
        rc = store_one(ig, txn, &nd, &p, rag_now_ms(), "reindex", &ver);
    }
    free(bytes);
    prepared_clear(&p);
    return rc;
}

int rag_ingest_redrive(rag_ingest *ig, const char *doc_id, int mode, uint64_t version)
{
    if (!ig || !doc_id)
        return rag_error_set(RAG_EINVAL, "rag_ingest_redrive: bad arguments");
    int rc = rag_doc_id_check(doc_id);
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin");
    doc_row d;
    rc = doc_get(ig, txn, doc_id, &d, 1);
    int known = rc == RAG_OK;
    if (rc == RAG_ENOTFOUND)
        rc = RAG_OK;
    rag_ev_trail trail = {0};
    if (!rc) {
        switch (mode) {
        case RAG_REDRIVE_PURGE:
            rag_ev_trail_add(&trail, "ingest", "purge", rag_now_ms(), 1, RAG_OK);
            rc = emit_doc_event(ig, txn, RAG_TOPIC_DELETED, doc_id,
                              known && d.deleted_at > version ? d.deleted_at : version, &trail);
            break;
        case RAG_REDRIVE_REINDEX:
            rc = known ? reindex(ig, txn, doc_id, &d)
                       : rag_error_set(RAG_ENOTFOUND, "no document '%s'", doc_id);
            break;
        case RAG_REDRIVE_RESUME: {
            saga_row s;
            uint64_t sver = 0;
            int found = known ? saga_newest(ig, txn, doc_id, &sver, &s) : 0;
            if (found < 0) {
                rc = found;
            } else if (!found) {
                rc = rag_error_set(RAG_ENOTFOUND, "no saga for '%s'", doc_id);
            } else if (s.state == RAG_SAGA_RUNNING && s.kind == RAG_SAGA_PUT) {
                rc = resume_put(ig, txn, doc_id, &d, sver, &s);
            } else if (s.state == RAG_SAGA_RUNNING && s.kind == RAG_SAGA_DELETE) {
                trail = s.trail;
                rag_ev_trail_add(&trail, "ingest", "redrive", rag_now_ms(), 1, RAG_OK);
                rc = emit_doc_event(ig, txn, RAG_TOPIC_DELETED, doc_id, sver, &trail);
            } else if (s.state == RAG_SAGA_COMPENSATING) {
                trail = s.trail;
                rag_ev_trail_add(&trail, "ingest", "redrive", rag_now_ms(), 1, RAG_OK);
                rc = emit_doc_event(ig, txn, RAG_TOPIC_REVERT, doc_id, sver, &trail);
            }
            break;
        }
        default:
            rc = rag_error_set(RAG_EINVAL, "rag_ingest_redrive: unknown mode %d", mode);
        }
    }
    free(d.acl);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "ingest: commit") : RAG_OK;
}

/* ---- session consistency: has a version failed for good? ------------------------------- */

/* Read-only.  *failed = 1 when version `version` of `doc_id` will never become searchable
 * because its saga failed: the version row is marked failed, or the put saga is compensating
 * or failed.  0 otherwise (running, done, superseded, or nothing known of it).  The core's
 * session wait uses it so that a poisoned version does not hold readers until they time
 * out. */
int rag_ingest_version_failed(rag_ingest *ig, const char *doc_id, uint64_t version, int *failed)
{
    if (failed)
        *failed = 0;
    if (!ig || !doc_id || !failed)
        return rag_error_set(RAG_EINVAL, "rag_ingest_version_failed: bad arguments");
    int rc = rag_doc_id_check(doc_id);
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ig->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "ingest: begin");
    uint8_t key[RAG_KEY_MAX + 1];
    size_t kl = rag_key_doc_version(key, doc_id, version);
    MDB_val k = {kl, key}, v;
    mrc = mdb_get(txn, ig->versions, &k, &v);
    if (mrc == 0) {
        version_row vr;
        rc = version_row_decode(&v, &vr);
        if (!rc && vr.state == VERSION_FAILED)
            *failed = 1;
    } else if (mrc != MDB_NOTFOUND) {
        rc = rag_mdb_error(mrc, "ingest: read version");
    }
    if (!rc && !*failed) {
        kl = saga_key(key, doc_id, version, RAG_SAGA_PUT);
        k.mv_size = kl;
        k.mv_data = key;
        mrc = mdb_get(txn, ig->sagas, &k, &v);
        if (mrc == 0) {
            saga_row s;
            rc = saga_decode(&v, &s);
            if (!rc && (s.state == RAG_SAGA_FAILED || s.state == RAG_SAGA_COMPENSATING))
                *failed = 1;
        } else if (mrc != MDB_NOTFOUND) {
            rc = rag_mdb_error(mrc, "ingest: read saga");
        }
    }
    mdb_txn_abort(txn);
    return rc;
}
