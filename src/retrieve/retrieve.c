/*
 * The retrieve module: vector, lexical (BM25) and hybrid search with ACL pre-filtering (inside
 * the index, on both sides), removal of documents deleted in ingest, chunk text through
 * ingest's reader, and a result cache in the module's own env `<root>/retrieve/`.
 *
 * Modes.  VECTOR embeds the query and asks the index's vector side; LEXICAL asks its BM25
 * side (no embedding); HYBRID (what DEFAULT means when the index has a lexical side) asks
 * both for max(4k, 50) candidates, divides each side's scores by that side's best score
 * (a side without hits contributes 0, negative similarities count as 0), and scores each
 * label (doc, version, chunk) of the union w * lexical + (1 - w) * vector with
 * w = cfg.hybrid_lexical_weight.  Max-normalisation keeps the fused score on the scale the
 * weight assumes (0..1 per side) whatever the BM25 magnitudes are; a convex combination lets
 * the stronger side dominate, which rank fusion (RRF) would not.  w = 0 and w = 1 are plain
 * VECTOR and LEXICAL searches (the other side would only pad the list with zero scores).
 * Every mode validates its candidates against ingest the same way and re-queries with a
 * bigger page when deletions leave fewer than k.
 *
 * The module never writes anyone else's data and never opens another module's env: it sees
 * ingest and index only through the rag_ingest_reader / rag_index_reader vtables.
 *
 * Result cache.  Key: XXH3-128 of (format, NFC query text, unrestricted flag, sorted unique
 * principals, effective mode, the parameters that shape that mode's scores (fusion weight,
 * BM25 k1 and b), k, index epoch).  Value: the key material (compared on a hit,
 * so a hash collision can never return someone else's results) followed by the final hit
 * list (doc id, version, chunk, score) -- not the texts.  Because the epoch is part of the
 * key, an index change makes every older entry unreachable.  Deletes become visible in ingest
 * before the index epoch moves, so a hit is re-validated exactly like a fresh search result
 * (doc_info + chunk_text in one ingest snapshot); if any cached hit was dropped, the cache
 * entry is ignored and a full search runs (it would otherwise return fewer than k results).
 *
 * Durability: the cache is derived data, so its env runs with MDB_NOSYNC (no fsync on the
 * query path).  NOSYNC may leave the file inconsistent after an OS crash, so a "clean" marker
 * is written after a final sync on close and removed (durably) on open; an env found without
 * the marker is wiped before it is opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rag_common.h"
#include "rag_readers.h"
#include "rag_retrieve_api.h"
#include "rag_text.h"
#include "retrieve_internal.h"

struct rag_retrieve {
    const rag_embed_provider *provider;
    const rag_ingest_reader *ingest;
    const rag_index_reader *index;
    MDB_env *env;
    MDB_dbi cache_dbi;
    MDB_dbi meta_dbi;
    char dir[RAG_PATH_MAX + 64];
    size_t cache_max; /* 0: cache disabled */
    float lexical_weight; /* hybrid fusion weight w (cfg.hybrid_lexical_weight) */
    float bm25_k1, bm25_b; /* only part of the cache key: the index applies them */
    rag_retrieve_stats stats;
    /* cache hits/misses of earlier handles of this root, added to the "meta" table at close
     * so that `rag status` in a fresh process still shows the hit rate */
    uint64_t earlier_hits, earlier_misses;
};

static uint64_t meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *name)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    if (mdb_get(txn, dbi, &k, &v) || v.mv_size != 8)
        return 0;
    rag_rbuf r;
    rag_rbuf_init(&r, v.mv_data, 8);
    return rag_rbuf_u64(&r);
}

static void counters_load(rag_retrieve *rt)
{
    MDB_txn *txn;
    if (mdb_txn_begin(rt->env, NULL, MDB_RDONLY, &txn))
        return;
    rt->earlier_hits = meta_u64(txn, rt->meta_dbi, "cache_hits");
    rt->earlier_misses = meta_u64(txn, rt->meta_dbi, "cache_misses");
    mdb_txn_abort(txn);
}

/* Best effort: the counters are statistics, and go with the cache if a crash wipes it. */
static void counters_save(rag_retrieve *rt)
{
    uint64_t hits = 0, misses = 0;
    rag_retrieve_stats_get(rt, &hits, &misses);
    MDB_txn *txn;
    if (mdb_txn_begin(rt->env, NULL, 0, &txn))
        return;
    const char *names[2] = {"cache_hits", "cache_misses"};
    uint64_t vals[2] = {hits, misses};
    int bad = 0;
    for (int i = 0; i < 2 && !bad; i++) {
        rag_wbuf b;
        rag_wbuf_init(&b);
        rag_wbuf_u64(&b, vals[i]);
        MDB_val k = {strlen(names[i]), (void *)names[i]}, v = {b.len, b.data};
        bad = b.err || mdb_put(txn, rt->meta_dbi, &k, &v, 0);
        rag_wbuf_free(&b);
    }
    if (bad)
        mdb_txn_abort(txn);
    else
        rag_txn_commit(txn);
}

#define STAT_INC(rt, field) __atomic_add_fetch(&(rt)->stats.field, 1, __ATOMIC_RELAXED)

/* ---- clean marker (see the file comment) ------------------------------------------------ */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return rag_error_set(RAG_EIO, "open %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc)
        return rag_error_set(RAG_EIO, "fsync %s: %s", dir, strerror(err));
    return RAG_OK;
}

static int prepare_dir(const char *dir)
{
    char marker[RAG_PATH_MAX + 128], data[RAG_PATH_MAX + 128], lock[RAG_PATH_MAX + 128];
    snprintf(marker, sizeof marker, "%s/clean", dir);
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    snprintf(lock, sizeof lock, "%s/lock.mdb", dir);
    int rc = rag_mkdir_p(dir);
    if (rc)
        return rc;
    struct stat st;
    if (stat(marker, &st) != 0) {
        /* No clean shutdown recorded: the cache may be torn.  It is only a cache. */
        if (unlink(data) != 0 && errno != ENOENT)
            return rag_error_set(RAG_EIO, "cannot remove %s: %s", data, strerror(errno));
        if (unlink(lock) != 0 && errno != ENOENT)
            return rag_error_set(RAG_EIO, "cannot remove %s: %s", lock, strerror(errno));
        return RAG_OK;
    }
    /* From now on the env is written without fsync: the marker must be durably gone first. */
    if (unlink(marker) != 0 && errno != ENOENT)
        return rag_error_set(RAG_EIO, "cannot remove %s: %s", marker, strerror(errno));
    return fsync_dir(dir);
}

static void write_clean_marker(const char *dir)
{
    char marker[RAG_PATH_MAX + 128];
    snprintf(marker, sizeof marker, "%s/clean", dir);
    int fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return; /* next open wipes the cache: harmless */
    int ok = fsync(fd) == 0;
    close(fd);
    if (ok)
        fsync_dir(dir);
}

/* ---- open / close ------------------------------------------------------------------------ */

static int check_readers(const rag_ingest_reader *ingest, const rag_index_reader *index)
{
    if (ingest->version == 0 || ingest->version > RAG_READER_VERSION)
        return rag_error_set(RAG_EVERSION, "ingest reader version %u not supported (max %u)",
                             ingest->version, RAG_READER_VERSION);
    if (index->version == 0 || index->version > RAG_READER_VERSION)
        return rag_error_set(RAG_EVERSION, "index reader version %u not supported (max %u)",
                             index->version, RAG_READER_VERSION);
    if (!ingest->begin || !ingest->end || !ingest->chunk_text || !ingest->doc_info)
        return rag_error_set(RAG_EINVAL, "ingest reader lacks a required slot");
    if (!index->search || !index->epoch)
        return rag_error_set(RAG_EINVAL, "index reader lacks a required slot");
    return RAG_OK;
}

static int check_format(rag_retrieve *rt)
{
    static const char key[] = "format";
    MDB_txn *txn;
    int mrc = mdb_txn_begin(rt->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "retrieve: mdb_txn_begin");
    MDB_val k = {sizeof key - 1, (void *)key}, v;
    mrc = mdb_get(txn, rt->meta_dbi, &k, &v);
    int need_write = 1;
    if (mrc == 0 && v.mv_size == 4) {
        need_write = rag_be32_get(v.mv_data) != RAG_RETRIEVE_FORMAT;
    } else if (mrc != 0 && mrc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "retrieve: read format");
    }
    if (need_write) {
        /* Missing or other format: the cached entries cannot be trusted to decode. */
        uint8_t buf[4];
        rag_be32_put(buf, RAG_RETRIEVE_FORMAT);
        v.mv_size = 4;
        v.mv_data = buf;
        mrc = mdb_drop(txn, rt->cache_dbi, 0);
        if (!mrc)
            mrc = mdb_put(txn, rt->meta_dbi, &k, &v, 0);
        if (mrc) {
            mdb_txn_abort(txn);
            return rag_mdb_error(mrc, "retrieve: write format");
        }
        mrc = rag_txn_commit(txn);
        if (mrc)
            return rag_mdb_error(mrc, "retrieve: commit format");
    } else {
        mdb_txn_abort(txn);
    }
    return RAG_OK;
}

int rag_retrieve_open(rag_retrieve **out, const rag_config *cfg,
                      const rag_embed_provider *provider, const rag_ingest_reader *ingest,
                      const rag_index_reader *index)
{
    if (!out || !cfg || !provider || !ingest || !index)
        return rag_error_set(RAG_EINVAL, "rag_retrieve_open: NULL argument");
    *out = NULL;
    int rc = rag_embed_provider_check(provider);
    if (rc)
        return rc;
    rc = check_readers(ingest, index);
    if (rc)
        return rc;
    rag_retrieve *rt = calloc(1, sizeof *rt);
    if (!rt)
        return rag_error_set(RAG_ENOMEM, "rag_retrieve_open: out of memory");
    rt->provider = provider;
    rt->ingest = ingest;
    rt->index = index;
    rt->cache_max = RAG_RETRIEVE_CACHE_MAX;
    rt->lexical_weight = cfg->hybrid_lexical_weight;
    rt->bm25_k1 = cfg->bm25_k1;
    rt->bm25_b = cfg->bm25_b;
    snprintf(rt->dir, sizeof rt->dir, "%s/retrieve", cfg->root);
    rc = prepare_dir(rt->dir);
    if (!rc)
        rc = rag_env_open(&rt->env, cfg, "retrieve", 4);
    if (rc) {
        free(rt);
        return rc;
    }
    int mrc = mdb_env_set_flags(rt->env, MDB_NOSYNC, 1);
    if (mrc) {
        rc = rag_mdb_error(mrc, "retrieve: mdb_env_set_flags");
        goto fail;
    }
    rc = rag_dbi_open(rt->env, "cache", 0, &rt->cache_dbi);
    if (!rc)
        rc = rag_dbi_open(rt->env, "meta", 0, &rt->meta_dbi);
    if (!rc)
        rc = check_format(rt);
    if (rc)
        goto fail;
    counters_load(rt);
    *out = rt;
    return RAG_OK;
fail:
    rag_env_close(rt->env);
    free(rt);
    return rc;
}

void rag_retrieve_close(rag_retrieve *rt)
{
    if (!rt)
        return;
    if (rt->env) {
        counters_save(rt);
        if (mdb_env_sync(rt->env, 1) == 0)
            write_clean_marker(rt->dir);
        rag_env_close(rt->env);
    }
    free(rt);
}

/* Re-raise a reader's failure with context.  The reader's detail lives in the same
 * thread-local buffer rag_error_set() writes, so it is copied first. */
static int reader_error(int rc, const char *fmt, ...) RAG_PRINTF(2, 3);
static int reader_error(int rc, const char *fmt, ...)
{
    char detail[256], what[320];
    snprintf(detail, sizeof detail, "%s", rag_error_last());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (rc >= 0)
        rc = RAG_ERROR; /* a reader must return a negative RAG_E* code */
    return rag_error_set(rc, "%s: %s", what, detail[0] ? detail : rag_strerror(rc));
}

/* ---- results ----------------------------------------------------------------------------- */

/* A hit that survived validation; pointers borrowed from the hit array and the ingest
 * snapshot, valid until the reader's end(). */
typedef struct pending {
    const char *doc_id;
    uint64_t version;
    uint32_t chunk;
    float score;
    const char *text;
    size_t text_len;
    const char *title;
    const char *uri;
} pending;

static int cmp_pending(const void *a, const void *b)
{
    const pending *x = a, *y = b;
    /* NaN sorts last so that a misbehaving index cannot scramble the order. */
    int xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn)
        return xn - yn;
    if (!xn && x->score != y->score)
        return x->score > y->score ? -1 : 1;
    int c = strcmp(x->doc_id, y->doc_id);
    if (c)
        return c;
    if (x->version != y->version)
        return x->version > y->version ? -1 : 1;
    return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

static int add_size(size_t *total, size_t n)
{
    if (*total > SIZE_MAX - n)
        return 0;
    *total += n;
    return 1;
}

/* Copy everything into ONE allocation: [rag_results][rag_result x n][strings...]. */
static int pack_results(const pending *p, size_t n, rag_results **out)
{
    size_t head = sizeof(rag_results);
    size_t align = _Alignof(rag_result);
    head = (head + align - 1) / align * align;
    size_t total = head;
    if (!add_size(&total, n * sizeof(rag_result)))
        return rag_error_set(RAG_ENOMEM, "results too large");
    for (size_t i = 0; i < n; i++) {
        if (!add_size(&total, strlen(p[i].doc_id) + 1) || !add_size(&total, p[i].text_len + 1) ||
            !add_size(&total, strlen(p[i].title) + 1) || !add_size(&total, strlen(p[i].uri) + 1))
            return rag_error_set(RAG_ENOMEM, "results too large");
    }
    char *mem = malloc(total);
    if (!mem)
        return rag_error_set(RAG_ENOMEM, "cannot allocate %zu bytes of results", total);
    rag_results *r = (rag_results *)mem;
    r->count = n;
    r->items = (rag_result *)(mem + head);
    char *s = mem + head + n * sizeof(rag_result);
#define COPY_STR(dst, src, len)            \
    do {                                   \
        memcpy(s, (src), (len));           \
        s[(len)] = 0;                      \
        (dst) = s;                         \
        s += (len) + 1;                    \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        rag_result *it = &r->items[i];
        it->version = p[i].version;
        it->chunk = p[i].chunk;
        it->score = p[i].score;
        COPY_STR(it->doc_id, p[i].doc_id, strlen(p[i].doc_id));
        COPY_STR(it->text, p[i].text, p[i].text_len);
        COPY_STR(it->title, p[i].title, strlen(p[i].title));
        COPY_STR(it->uri, p[i].uri, strlen(p[i].uri));
    }
#undef COPY_STR
    *out = r;
    return RAG_OK;
}

void rag_retrieve_results_free(rag_results *r) { free(r); }

/* Keep the hits whose document is live in ingest and whose chunk text still exists.
 * `kept` has room for n entries. */
static int validate_hits(rag_retrieve *rt, void *rtxn, const rag_index_hit *hits, size_t n,
                         pending *kept, size_t *n_kept, size_t *n_raced)
{
    *n_raced = 0;
    const rag_ingest_reader *ig = rt->ingest;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const rag_index_hit *h = &hits[i];
        rag_doc_view view;
        memset(&view, 0, sizeof view);
        int rc = ig->doc_info(ig->self, rtxn, h->doc_id, &view);
        if (rc == RAG_ENOTFOUND)
            continue; /* unknown to ingest: purged, or never committed there */
        if (rc)
            return reader_error(rc, "retrieve: doc_info(%s) failed", h->doc_id);
        if (view.deleted || h->version <= view.deleted_through)
            continue; /* tombstoned: deletes are visible before the index catches up, also
                         when the id was put again before the index applied the delete */
        const char *text = NULL;
        size_t len = 0;
        rc = ig->chunk_text(ig->self, rtxn, h->doc_id, h->version, h->chunk_no, &text, &len);
        if (rc == RAG_ENOTFOUND) {
            /* The index returned a version ingest no longer stores: it was superseded and
             * freed between the index search and this snapshot (the switch, its doc.indexed
             * and ingest's free all ran meanwhile).  Dropping it silently could hide the
             * document (its new version was not in this search): the caller searches again. */
            (*n_raced)++;
            continue;
        }
        if (rc)
            return reader_error(rc, "retrieve: chunk_text(%s@%llu#%u) failed", h->doc_id,
                                (unsigned long long)h->version, h->chunk_no);
        kept[m].doc_id = h->doc_id;
        kept[m].version = h->version;
        kept[m].chunk = h->chunk_no;
        kept[m].score = h->score;
        kept[m].text = text ? text : "";
        kept[m].text_len = text ? len : 0;
        kept[m].title = view.title ? view.title : "";
        kept[m].uri = view.uri ? view.uri : "";
        m++;
    }
    *n_kept = m;
    return RAG_OK;
}

/* Validate `hits` in one ingest snapshot.  When at least `need` survive (or `need` is 0),
 * build the results from the best `k` of them; otherwise report the shortfall through
 * *n_kept and leave *out NULL.  `final_hits` (may be NULL) receives the hits behind the
 * results, for the cache. */
static int finish(rag_retrieve *rt, const rag_index_hit *hits, size_t n, size_t k, size_t need,
                  rag_results **out, size_t *n_kept, size_t *n_raced, rag_index_hit *final_hits)
{
    *out = NULL;
    pending *kept = n ? malloc(n * sizeof *kept) : NULL;
    if (n && !kept)
        return rag_error_set(RAG_ENOMEM, "retrieve: out of memory");
    void *rtxn = NULL;
    int rc = rt->ingest->begin(rt->ingest->self, &rtxn);
    if (rc) {
        free(kept);
        return reader_error(rc, "retrieve: ingest reader begin failed");
    }
    size_t m = 0;
    rc = validate_hits(rt, rtxn, hits, n, kept, &m, n_raced);
    if (!rc) {
        *n_kept = m;
        if (m >= need) {
            if (m > 1)
                qsort(kept, m, sizeof *kept, cmp_pending);
            if (m > k)
                m = k;
            if (final_hits) {
                for (size_t i = 0; i < m; i++) {
                    rag_index_hit *f = &final_hits[i];
                    memset(f, 0, sizeof *f);
                    snprintf(f->doc_id, sizeof f->doc_id, "%s", kept[i].doc_id);
                    f->version = kept[i].version;
                    f->chunk_no = kept[i].chunk;
                    f->score = kept[i].score;
                }
            }
            rc = pack_results(kept, m, out);
        }
    }
    rt->ingest->end(rt->ingest->self, rtxn);
    free(kept);
    return rc;
}

/* ---- cache -------------------------------------------------------------------------------- */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Canonical key material: the cache must not distinguish queries that mean the same. */
static int key_material(const rag_retrieve *rt, const rag_query *q, const char *text,
                        size_t text_len, int mode, size_t k, uint64_t epoch, rag_wbuf *w)
{
    rag_wbuf_u32(w, RAG_RETRIEVE_FORMAT);
    rag_wbuf_str(w, text, text_len);
    rag_wbuf_u8(w, q->unrestricted ? 1 : 0);
    if (q->unrestricted || q->principal_count == 0) {
        rag_wbuf_u32(w, 0); /* principals do not change an unrestricted search */
    } else {
        const char **sorted = malloc(q->principal_count * sizeof *sorted);
        if (!sorted)
            return rag_error_set(RAG_ENOMEM, "retrieve: out of memory");
        memcpy(sorted, q->principals, q->principal_count * sizeof *sorted);
        qsort(sorted, q->principal_count, sizeof *sorted, cmp_cstr);
        size_t uniq = 0;
        for (size_t i = 0; i < q->principal_count; i++)
            if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0)
                sorted[uniq++] = sorted[i];
        rag_wbuf_u32(w, (uint32_t)uniq);
        for (size_t i = 0; i < uniq; i++)
            rag_wbuf_cstr(w, sorted[i]);
        free(sorted);
    }
    rag_wbuf_u32(w, (uint32_t)mode);
    /* The cache outlives the handle: a reopen with other scoring parameters must not be
     * answered with scores (and orders) computed under the old ones. */
    if (mode == RAG_MODE_HYBRID)
        rag_wbuf_f32s(w, &rt->lexical_weight, 1);
    if (mode == RAG_MODE_HYBRID || mode == RAG_MODE_LEXICAL) {
        rag_wbuf_f32s(w, &rt->bm25_k1, 1);
        rag_wbuf_f32s(w, &rt->bm25_b, 1);
    }
    rag_wbuf_u64(w, (uint64_t)k);
    rag_wbuf_u64(w, epoch);
    return w->err ? rag_error_set(RAG_ENOMEM, "retrieve: out of memory") : RAG_OK;
}

/* Decode a cached value into hits (malloc'd).  Returns 0 and *hits NULL on any mismatch. */
static void cache_get(rag_retrieve *rt, const uint8_t key[16], const rag_wbuf *mat,
                      rag_index_hit **hits_out, size_t *n_out)
{
    *hits_out = NULL;
    *n_out = 0;
    MDB_txn *txn;
    if (mdb_txn_begin(rt->env, NULL, MDB_RDONLY, &txn))
        return;
    MDB_val k = {16, (void *)key}, v;
    if (mdb_get(txn, rt->cache_dbi, &k, &v) == 0) {
        rag_rbuf r;
        rag_rbuf_init(&r, v.mv_data, v.mv_size);
        size_t mlen = 0;
        const char *m = rag_rbuf_str(&r, &mlen);
        uint32_t n = rag_rbuf_u32(&r);
        if (!r.err && mlen == mat->len && memcmp(m, mat->data, mlen) == 0 &&
            n <= RAG_RETRIEVE_K_MAX) {
            rag_index_hit *hits = calloc(n ? n : 1, sizeof *hits);
            for (uint32_t i = 0; hits && i < n && !r.err; i++) {
                size_t idlen = 0;
                const char *id = rag_rbuf_str(&r, &idlen);
                if (idlen > RAG_DOC_ID_MAX) {
                    r.err = RAG_ECORRUPT;
                    break;
                }
                memcpy(hits[i].doc_id, id, idlen);
                hits[i].doc_id[idlen] = 0;
                hits[i].version = rag_rbuf_u64(&r);
                hits[i].chunk_no = rag_rbuf_u32(&r);
                rag_rbuf_f32s(&r, &hits[i].score, 1);
            }
            if (hits && !r.err && r.off == r.len) {
                *hits_out = hits;
                *n_out = n;
            } else {
                free(hits);
            }
        }
    }
    mdb_txn_abort(txn);
}

/* Best effort: a cache that cannot be written must never fail a search. */
static void cache_put(rag_retrieve *rt, const uint8_t key[16], const rag_wbuf *mat,
                      const rag_index_hit *hits, size_t n)
{
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_str(&w, (const char *)mat->data, mat->len);
    rag_wbuf_u32(&w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        rag_wbuf_cstr(&w, hits[i].doc_id);
        rag_wbuf_u64(&w, hits[i].version);
        rag_wbuf_u32(&w, hits[i].chunk_no);
        rag_wbuf_f32s(&w, &hits[i].score, 1);
    }
    if (w.err) {
        rag_wbuf_free(&w);
        return;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        MDB_txn *txn;
        if (mdb_txn_begin(rt->env, NULL, 0, &txn))
            break;
        MDB_stat st;
        int mrc = mdb_stat(txn, rt->cache_dbi, &st);
        if (!mrc && (st.ms_entries >= rt->cache_max || attempt > 0)) {
            mrc = mdb_drop(txn, rt->cache_dbi, 0);
            if (!mrc)
                STAT_INC(rt, cache_drops);
        }
        MDB_val k = {16, (void *)key}, v = {w.len, w.data};
        if (!mrc)
            mrc = mdb_put(txn, rt->cache_dbi, &k, &v, 0);
        if (mrc) {
            mdb_txn_abort(txn);
            if (mrc == MDB_MAP_FULL)
                continue; /* retry once on an emptied table */
            break;
        }
        mrc = rag_txn_commit(txn);
        if (mrc != MDB_MAP_FULL)
            break;
    }
    rag_wbuf_free(&w);
}

/* ---- search -------------------------------------------------------------------------------- */

static int validate_query(const rag_query *q, size_t *k_out)
{
    if (q->version == 0 || q->version > RAG_QUERY_VERSION)
        return rag_error_set(RAG_EVERSION, "rag_query version %u not supported (expected %u)",
                             q->version, RAG_QUERY_VERSION);
    if (!q->text)
        return rag_error_set(RAG_EINVAL, "query text is NULL");
    size_t k = q->k ? q->k : RAG_RETRIEVE_K_DEFAULT;
    if (k > RAG_RETRIEVE_K_MAX)
        return rag_error_set(RAG_EINVAL, "k = %zu exceeds the maximum of %u", q->k,
                             RAG_RETRIEVE_K_MAX);
    if (q->principal_count > 0 && !q->principals)
        return rag_error_set(RAG_EINVAL, "principal_count is %zu but principals is NULL",
                             q->principal_count);
    for (size_t i = 0; i < q->principal_count; i++)
        if (!q->principals[i])
            return rag_error_set(RAG_EINVAL, "principal %zu is NULL", i);
    switch (q->mode) {
    case RAG_MODE_DEFAULT:
    case RAG_MODE_VECTOR:
    case RAG_MODE_LEXICAL:
    case RAG_MODE_HYBRID:
        break;
    default:
        return rag_error_set(RAG_EINVAL, "unknown search mode %d", (int)q->mode);
    }
    *k_out = k;
    return RAG_OK;
}

/* The index reader has a lexical side (a version-1 reader struct ends before the slot). */
static int has_lexical(const rag_retrieve *rt)
{
    return rt->index->version >= 2 && rt->index->search_lexical != NULL;
}

/* The mode a query really runs in: DEFAULT is HYBRID (VECTOR while the index has no lexical
 * side, so that plain searches keep working); HYBRID with w = 0 or 1 is the single side. */
static int effective_mode(const rag_retrieve *rt, rag_search_mode requested, int *mode)
{
    int m = requested;
    if (m == RAG_MODE_DEFAULT)
        m = has_lexical(rt) ? RAG_MODE_HYBRID : RAG_MODE_VECTOR;
    if ((m == RAG_MODE_LEXICAL || m == RAG_MODE_HYBRID) && !has_lexical(rt))
        return rag_error_set(RAG_EUNSUPPORTED,
                             "%s search needs the index's lexical (BM25) side, which this "
                             "index reader does not offer; use RAG_MODE_VECTOR",
                             m == RAG_MODE_LEXICAL ? "lexical" : "hybrid");
    if (m == RAG_MODE_HYBRID && rt->lexical_weight <= 0.0f)
        m = RAG_MODE_VECTOR;
    else if (m == RAG_MODE_HYBRID && rt->lexical_weight >= 1.0f)
        m = RAG_MODE_LEXICAL;
    *mode = m;
    return RAG_OK;
}

/* A side's score in 0..1: divided by the side's best; negative, NaN or infinite -> 0. */
static double side_norm(float s, double max)
{
    return isfinite(s) && s > 0 && max > 0 ? (double)s / max : 0.0;
}

static double side_max(const rag_index_hit *h, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(h[i].score) && h[i].score > m)
            m = h[i].score;
    return m;
}

typedef struct fuse_ref {
    const rag_index_hit *h;
    double part; /* this side's weighted, normalised score */
    int lexical;
} fuse_ref;

static int cmp_label(const void *a, const void *b)
{
    const rag_index_hit *x = ((const fuse_ref *)a)->h, *y = ((const fuse_ref *)b)->h;
    int c = strcmp(x->doc_id, y->doc_id);
    if (c)
        return c;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return x->chunk_no < y->chunk_no ? -1 : x->chunk_no > y->chunk_no;
}

/* Hybrid fusion: the union by label of the two candidate lists, each label scored
 * w * lex / max lex + (1 - w) * vec / max vec.  `out` has room for nv + nl hits; `refs` is
 * scratch of the same size.  Order of `out` is by label (finish() sorts by score). */
static size_t fuse(const rag_index_hit *vh, size_t nv, const rag_index_hit *lh, size_t nl,
                   double w, fuse_ref *refs, rag_index_hit *out)
{
    const double vmax = side_max(vh, nv), lmax = side_max(lh, nl);
    size_t n = 0;
    for (size_t i = 0; i < nv; i++)
        refs[n++] = (fuse_ref){&vh[i], (1.0 - w) * side_norm(vh[i].score, vmax), 0};
    for (size_t i = 0; i < nl; i++)
        refs[n++] = (fuse_ref){&lh[i], w * side_norm(lh[i].score, lmax), 1};
    if (n > 1)
        qsort(refs, n, sizeof *refs, cmp_label);
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        /* one label: the best part of each side (a side never lists a label twice, but a
         * misbehaving one must not count it twice) */
        double part[2] = {0, 0};
        size_t j = i;
        while (j < n && cmp_label(&refs[i], &refs[j]) == 0) {
            if (refs[j].part > part[refs[j].lexical])
                part[refs[j].lexical] = refs[j].part;
            j++;
        }
        out[m] = *refs[i].h;
        out[m].score = (float)(part[0] + part[1]);
        m++;
        i = j;
    }
    return m;
}

/* The two sides are two reader calls: an index switch between them can make the vector side
 * return version n of a document and the lexical side version n + 1.  Keep only each
 * document's newest version (active versions only grow), so a document never appears in two
 * versions.  `h` is ordered by label, as fuse() leaves it.  Returns the number of documents
 * that had more than one version. */
static size_t newest_versions_only(rag_index_hit *h, size_t *n)
{
    size_t mixed = 0, w = 0;
    for (size_t i = 0; i < *n;) {
        size_t j = i + 1;
        while (j < *n && strcmp(h[j].doc_id, h[i].doc_id) == 0)
            j++;
        uint64_t newest = h[j - 1].version; /* versions ascend within a document */
        mixed += h[i].version != newest;
        for (size_t x = i; x < j; x++)
            if (h[x].version == newest)
                h[w++] = h[x];
        i = j;
    }
    *n = w;
    return mixed;
}

/* Candidate page per side: a little headroom over k for a single side, so that a few deleted
 * documents do not force a second round trip; a wider net for hybrid, where a label's fused
 * rank can be far from its rank on either side. */
static size_t first_page(int mode, size_t k)
{
    size_t kp = mode == RAG_MODE_HYBRID ? (k * 4 > RAG_RETRIEVE_HYBRID_MIN ? k * 4
                                                                           : RAG_RETRIEVE_HYBRID_MIN)
                                        : k + k / 4 + 8;
    return kp > RAG_RETRIEVE_FETCH_MAX ? RAG_RETRIEVE_FETCH_MAX : kp;
}

/* Full search: index side(s) (with re-queries while deletions leave the page short), fusion
 * for hybrid, then ingest.  `vec` is NULL in lexical mode. */
static int search_index(rag_retrieve *rt, const rag_query *q, int mode, const char *text,
                        size_t tlen, const float *vec, size_t k, rag_results **out,
                        rag_index_hit *final_hits)
{
    const rag_acl_filter filter = {q->unrestricted ? 1 : 0, q->principals, q->principal_count};
    const int use_vec = mode != RAG_MODE_LEXICAL, use_lex = mode != RAG_MODE_VECTOR;
    size_t kp = first_page(mode, k);
    rag_index_hit *vh = NULL, *lh = NULL, *fused = NULL;
    fuse_ref *refs = NULL;
    int rc = RAG_OK;
    int races_left = 3; /* text freed under the search */
    int mixes_left = 3; /* hybrid: a switch between the two sides */
    for (;;) {
        int oom = 0;
        if (use_vec) {
            rag_index_hit *p = realloc(vh, kp * sizeof *vh);
            oom |= !p;
            vh = p ? p : vh;
        }
        if (use_lex) {
            rag_index_hit *p = realloc(lh, kp * sizeof *lh);
            oom |= !p;
            lh = p ? p : lh;
        }
        if (mode == RAG_MODE_HYBRID) {
            rag_index_hit *p = realloc(fused, 2 * kp * sizeof *fused);
            oom |= !p;
            fused = p ? p : fused;
            fuse_ref *r = realloc(refs, 2 * kp * sizeof *refs);
            oom |= !r;
            refs = r ? r : refs;
        }
        if (oom) {
            rc = rag_error_set(RAG_ENOMEM, "retrieve: cannot allocate %zu hits", kp);
            break;
        }
        size_t nv = 0, nl = 0;
        if (use_vec) {
            STAT_INC(rt, index_queries);
            rc = rt->index->search(rt->index->self, vec, kp, &filter, vh, &nv);
            if (rc) {
                rc = reader_error(rc, "retrieve: index search failed");
                break;
            }
            if (nv > kp)
                nv = kp; /* defensive: never trust a callee to respect the buffer */
        }
        if (use_lex) {
            STAT_INC(rt, lexical_queries);
            rc = rt->index->search_lexical(rt->index->self, text, tlen, kp, &filter, lh, &nl);
            if (rc) {
                rc = reader_error(rc, "retrieve: lexical search failed");
                break;
            }
            if (nl > kp)
                nl = kp;
        }
        /* Only a full page means a side may hold more candidates. */
        int more = ((use_vec && nv == kp) || (use_lex && nl == kp)) && kp < RAG_RETRIEVE_FETCH_MAX;
        const rag_index_hit *hits = use_vec ? vh : lh;
        size_t n = use_vec ? nv : nl;
        if (mode == RAG_MODE_HYBRID) {
            n = fuse(vh, nv, lh, nl, rt->lexical_weight, refs, fused);
            hits = fused;
            if (newest_versions_only(fused, &n) && mixes_left > 0) {
                /* a switch ran between the two sides: the new version's labels carry only
                 * one side's score, so ask both sides again (bounded, like the races below) */
                mixes_left--;
                continue;
            }
        }
        size_t kept = 0, raced = 0;
        rc = finish(rt, hits, n, k, more ? k : 0, out, &kept, &raced, final_hits);
        if (rc)
            break;
        if (raced && races_left > 0) {
            /* a version switched under this search: search again (bounded: a label whose
             * text is gone for good, which rag_fsck reports, cannot loop) */
            races_left--;
            rag_retrieve_results_free(*out);
            *out = NULL;
            continue;
        }
        if (*out)
            break;
        kp = kp * 2 > RAG_RETRIEVE_FETCH_MAX ? RAG_RETRIEVE_FETCH_MAX : kp * 2;
    }
    free(vh);
    free(lh);
    free(fused);
    free(refs);
    return rc;
}

int rag_retrieve_search(rag_retrieve *rt, const rag_query *q, rag_results **out)
{
    if (!rt || !q || !out)
        return rag_error_set(RAG_EINVAL, "rag_retrieve_search: NULL argument");
    *out = NULL;
    size_t k = 0;
    int rc = validate_query(q, &k);
    if (rc)
        return rc;
    size_t qlen = strlen(q->text), bad = 0;
    if (rag_utf8_check(q->text, qlen, &bad) != RAG_OK)
        return rag_error_set(RAG_EUTF8, "query text is not valid UTF-8 at byte offset %zu", bad);
    char *text = NULL;
    size_t tlen = 0;
    rc = rag_utf8_nfc(q->text, qlen, &text, &tlen);
    if (rc)
        return rc;
    if (tlen == 0) {
        free(text);
        return rag_error_set(RAG_EINVAL, "query text is empty");
    }
    int mode = 0;
    rc = effective_mode(rt, q->mode, &mode);
    if (rc) {
        free(text);
        return rc;
    }

    /* Cache lookup.  No epoch -> no cache: correctness first. */
    uint64_t epoch = 0;
    int use_cache = rt->cache_max > 0 && rt->index->epoch(rt->index->self, &epoch) == RAG_OK;
    rag_wbuf mat;
    rag_wbuf_init(&mat);
    uint8_t key[16];
    if (use_cache) {
        rc = key_material(rt, q, text, tlen, mode, k, epoch, &mat);
        if (rc)
            goto done;
        rag_hash128(mat.data, mat.len, key);
        rag_index_hit *cached = NULL;
        size_t n = 0;
        cache_get(rt, key, &mat, &cached, &n);
        if (cached) {
            size_t kept = 0, raced = 0;
            /* need = n: any dropped hit makes the entry unusable (it would return < k). */
            rc = finish(rt, cached, n, k, n, out, &kept, &raced, NULL);
            free(cached);
            if (rc)
                goto done;
            if (*out) {
                STAT_INC(rt, cache_hits);
                goto done;
            }
            STAT_INC(rt, cache_stale);
        } else {
            STAT_INC(rt, cache_misses);
        }
    } else {
        STAT_INC(rt, cache_bypass);
    }

    /* Lexical search needs no embedding: the provider is not called at all. */
    const int need_vec = mode != RAG_MODE_LEXICAL;
    float *vec = need_vec ? malloc((size_t)rt->provider->dim * sizeof *vec) : NULL;
    rag_index_hit *final_hits = use_cache ? malloc(k * sizeof *final_hits) : NULL;
    if ((need_vec && !vec) || (use_cache && !final_hits)) {
        free(vec);
        free(final_hits);
        rc = rag_error_set(RAG_ENOMEM, "retrieve: out of memory");
        goto done;
    }
    if (need_vec) {
        const char *texts[1] = {text};
        size_t lens[1] = {tlen};
        rc = rag_embed_texts(rt->provider, texts, lens, 1, vec);
    }
    if (!rc)
        rc = search_index(rt, q, mode, text, tlen, vec, k, out, final_hits);
    if (!rc && use_cache) {
        /* Store only when the index did not move during the search, so an entry never
         * mixes two epochs' contents under one key. */
        uint64_t after = 0;
        if (rt->index->epoch(rt->index->self, &after) == RAG_OK && after == epoch)
            cache_put(rt, key, &mat, final_hits, (*out)->count);
    }
    free(vec);
    free(final_hits);
done:
    if (!rc)
        STAT_INC(rt, searches);
    rag_wbuf_free(&mat);
    free(text);
    return rc;
}

/* ---- test hooks ----------------------------------------------------------------------------- */

void rag_retrieve__stats(const rag_retrieve *rt, rag_retrieve_stats *out)
{
    out->searches = __atomic_load_n(&rt->stats.searches, __ATOMIC_RELAXED);
    out->cache_hits = __atomic_load_n(&rt->stats.cache_hits, __ATOMIC_RELAXED);
    out->cache_misses = __atomic_load_n(&rt->stats.cache_misses, __ATOMIC_RELAXED);
    out->cache_stale = __atomic_load_n(&rt->stats.cache_stale, __ATOMIC_RELAXED);
    out->index_queries = __atomic_load_n(&rt->stats.index_queries, __ATOMIC_RELAXED);
    out->cache_drops = __atomic_load_n(&rt->stats.cache_drops, __ATOMIC_RELAXED);
    out->cache_bypass = __atomic_load_n(&rt->stats.cache_bypass, __ATOMIC_RELAXED);
    out->lexical_queries = __atomic_load_n(&rt->stats.lexical_queries, __ATOMIC_RELAXED);
}

void rag_retrieve_stats_get(rag_retrieve *rt, uint64_t *hits, uint64_t *misses)
{
    rag_retrieve_stats st;
    memset(&st, 0, sizeof st);
    if (rt)
        rag_retrieve__stats(rt, &st);
    /* A miss is a search that went to the index: no entry, an entry no longer valid, or no
     * cache to ask (disabled, or no index epoch). */
    if (hits)
        *hits = (rt ? rt->earlier_hits : 0) + st.cache_hits;
    if (misses)
        *misses = (rt ? rt->earlier_misses : 0) + st.cache_misses + st.cache_stale +
                  st.cache_bypass;
}

void rag_retrieve__set_cache_max(rag_retrieve *rt, size_t max_entries)
{
    rt->cache_max = max_entries;
}

int rag_retrieve__cache_entries(rag_retrieve *rt, size_t *out)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(rt->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "retrieve: mdb_txn_begin");
    MDB_stat st;
    mrc = mdb_stat(txn, rt->cache_dbi, &st);
    mdb_txn_abort(txn);
    if (mrc)
        return rag_mdb_error(mrc, "retrieve: mdb_stat");
    *out = st.ms_entries;
    return RAG_OK;
}
