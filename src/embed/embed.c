/*
 * The embed module: consumes doc.chunked, turns chunk texts into vectors through the host's
 * provider and emits doc.embedded.  A vector cache keyed by (provider fingerprint, chunk
 * content hash) makes re-ingesting an edited document cost only its changed chunks.
 *
 * Env `<root>/embed/`:
 *   "cache"  fp_hash[16] || chunk_hash[16] -> dim little-endian floats
 *   "meta"   "fingerprint" -> provider fingerprint recorded on first open
 *            "dim"         -> u32 (little-endian) dimension recorded on first open
 *            "model_gen"   -> u64 (little-endian) model generation: 0 for the first provider,
 *                             +1 at every re-embed (absent: 0).  Stamped on every
 *                             doc.embedded so the index can tell vectors of an older model.
 *   plus the outbox ("__outbox", "__outbox_meta") and consumer ("__inbox", "__dead") tables.
 *
 * Nothing is cached in memory across messages: a message's effects live only in its nested
 * txn, so an abort (retry, dead letter, failed batch commit) leaves no stale state behind.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rag_common.h"
#include "rag_embed_api.h"
#include "rag_events.h"
#include "rag_queue.h"

#define EMBED_MAX_DBS 8
#define EMBED_KEY_LEN 32

struct rag_embed {
    MDB_env *env;
    MDB_dbi cache_dbi, meta_dbi;
    rag_outbox *outbox;
    rag_consumer consumer;
    rag_embed_provider provider; /* copy of the vtable; the state stays the core's */
    unsigned int dim;
    char fingerprint[RAG_EMBED_FINGERPRINT_MAX];
    uint8_t fp_hash[16];
    uint64_t model_gen;
    _Atomic uint64_t hits, misses;
    rag_hist provider_latency; /* every rag_embed_texts call of the consumer, failed ones too */
};

/* ---- little-endian float rows (the codec's convention; a memcpy on LE hosts) ------------- */

static void f32_to_le(uint8_t *dst, const float *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, v, n * sizeof *v);
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        dst[4 * i] = (uint8_t)u;
        dst[4 * i + 1] = (uint8_t)(u >> 8);
        dst[4 * i + 2] = (uint8_t)(u >> 16);
        dst[4 * i + 3] = (uint8_t)(u >> 24);
    }
#endif
}

static void f32_from_le(float *v, const uint8_t *src, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(v, src, n * sizeof *v);
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 |
                     (uint32_t)src[4 * i + 2] << 16 | (uint32_t)src[4 * i + 3] << 24;
        memcpy(&v[i], &u, 4);
    }
#endif
}

/* ---- fingerprint ------------------------------------------------------------------------ */

/* Read the provider's fingerprint into em->fingerprint, insisting on a NUL-terminated,
 * non-empty string: it keys the cache, so a garbage fingerprint must never be accepted. */
static int read_fingerprint(rag_embed *em)
{
    char buf[RAG_EMBED_FINGERPRINT_MAX];
    memset(buf, 0, sizeof buf);
    int rc = em->provider.fingerprint(em->provider.state, buf, sizeof buf);
    if (rc != 0)
        return rag_error_set(RAG_EPROVIDER, "embedding provider: fingerprint failed with %d", rc);
    if (!memchr(buf, 0, sizeof buf))
        return rag_error_set(RAG_EPROVIDER, "embedding provider: fingerprint not NUL-terminated "
                                            "within %d bytes",
                             RAG_EMBED_FINGERPRINT_MAX);
    if (!buf[0])
        return rag_error_set(RAG_EINVAL, "embedding provider: empty fingerprint");
    memcpy(em->fingerprint, buf, sizeof buf);
    rag_hash128(buf, strlen(buf), em->fp_hash);
    return RAG_OK;
}

static void u32_le(uint8_t d[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        d[i] = (uint8_t)(v >> (8 * i));
}

static void u64_le(uint8_t d[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        d[i] = (uint8_t)(v >> (8 * i));
}

/* Record the provider (fingerprint, dimension, model generation) in `txn`. */
static int meta_record(rag_embed *em, MDB_txn *txn)
{
    uint8_t d[4], g[8];
    u32_le(d, em->dim);
    u64_le(g, em->model_gen);
    MDB_val k = {sizeof "fingerprint" - 1, "fingerprint"},
            v = {strlen(em->fingerprint), em->fingerprint};
    MDB_val kd = {sizeof "dim" - 1, "dim"}, vd = {4, d};
    MDB_val kg = {sizeof "model_gen" - 1, "model_gen"}, vg = {8, g};
    int mrc = mdb_put(txn, em->meta_dbi, &k, &v, 0);
    if (!mrc)
        mrc = mdb_put(txn, em->meta_dbi, &kd, &vd, 0);
    if (!mrc)
        mrc = mdb_put(txn, em->meta_dbi, &kg, &vg, 0);
    return mrc ? rag_mdb_error(mrc, "embed: record provider fingerprint") : RAG_OK;
}

/*
 * Record the provider on first open; later, refuse a provider of another fingerprint or
 * dimension (its vectors are not comparable with those already indexed) unless the caller
 * asked for a re-embed.  A re-embed records the new provider with the next model generation
 * and empties the vector cache (its rows are the old model's and keyed by its fingerprint:
 * never hit again), all in one txn; the core then has the index drop the old vectors and
 * ingest send every active version again.
 */
static int check_meta(rag_embed *em, int reembed)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(em->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "embed: begin meta txn");
    int rc = RAG_OK;
    MDB_val k = {sizeof "fingerprint" - 1, "fingerprint"}, v;
    MDB_val kd = {sizeof "dim" - 1, "dim"}, vd;
    MDB_val kg = {sizeof "model_gen" - 1, "model_gen"}, vg;
    mrc = mdb_get(txn, em->meta_dbi, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        em->model_gen = 0;
        rc = meta_record(em, txn);
        if (rc) {
            mdb_txn_abort(txn);
            return rc;
        }
        mrc = rag_txn_commit(txn);
        return mrc ? rag_mdb_error(mrc, "embed: commit provider fingerprint") : RAG_OK;
    }
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "embed: read provider fingerprint");
    }
    char recorded[RAG_EMBED_FINGERPRINT_MAX];
    size_t rlen = v.mv_size < sizeof recorded - 1 ? v.mv_size : sizeof recorded - 1;
    memcpy(recorded, v.mv_data, rlen);
    recorded[rlen] = 0;
    uint32_t dim = em->dim;
    if (mdb_get(txn, em->meta_dbi, &kd, &vd) == 0 && vd.mv_size == 4) {
        const uint8_t *d = vd.mv_data;
        dim = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 |
              (uint32_t)d[3] << 24;
    }
    em->model_gen = 0;
    if (mdb_get(txn, em->meta_dbi, &kg, &vg) == 0 && vg.mv_size == 8) {
        const uint8_t *g = vg.mv_data;
        for (int i = 7; i >= 0; i--)
            em->model_gen = em->model_gen << 8 | g[i];
    }
    int same = strcmp(recorded, em->fingerprint) == 0 && v.mv_size == rlen;
    if (same && dim == em->dim) {
        mdb_txn_abort(txn);
        return RAG_OK;
    }
    if (!reembed) {
        mdb_txn_abort(txn);
        if (!same)
            return rag_error_set(RAG_EFINGERPRINT,
                                 "embed: this root was built with embedding provider '%s' but "
                                 "the configured provider is '%s'; use the original provider, "
                                 "or re-embed the root with this one (rag_options.reembed = 1, "
                                 "rag --reembed)",
                                 recorded, em->fingerprint);
        return rag_error_set(RAG_EFINGERPRINT,
                             "embed: provider '%s' was recorded with dimension %u but now "
                             "reports %u; re-embed the root (rag_options.reembed = 1, "
                             "rag --reembed)",
                             em->fingerprint, dim, em->dim);
    }
    em->model_gen++;
    rc = meta_record(em, txn);
    if (!rc && (mrc = mdb_drop(txn, em->cache_dbi, 0)) != 0)
        rc = rag_mdb_error(mrc, "embed: empty the vector cache for a re-embed");
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "embed: commit the re-embed's provider") : RAG_OK;
}

/* ---- the consumer ---------------------------------------------------------------------- */

static void cache_key(const rag_embed *em, const uint8_t chunk_hash[16], uint8_t key[32])
{
    memcpy(key, em->fp_hash, 16);
    memcpy(key + 16, chunk_hash, 16);
}

/* Sort order for de-duplicating misses: by content hash, then chunk position. */
typedef struct miss_ref {
    const uint8_t *hash;
    size_t chunk; /* index into the event's chunks */
} miss_ref;

static int miss_cmp(const void *a, const void *b)
{
    const miss_ref *x = a, *y = b;
    int c = memcmp(x->hash, y->hash, 16);
    if (c)
        return c;
    return (x->chunk > y->chunk) - (x->chunk < y->chunk);
}

typedef struct handle_work {
    rag_ev_chunked ev;
    float *vecs;        /* chunk_count * dim: the vector of every chunk */
    miss_ref *miss;     /* cache misses */
    size_t *todo_of;    /* per miss (sorted order): index into the provider batch */
    const char **texts; /* provider batch (distinct misses) */
    size_t *lens;
    size_t *todo_chunk; /* provider batch row -> representative chunk */
    float *fresh;       /* n_todo * dim provider output */
    rag_ev_vector *out_vecs;
    rag_wbuf buf;
} handle_work;

static void work_free(handle_work *w)
{
    rag_ev_chunked_clear(&w->ev);
    free(w->vecs);
    free(w->miss);
    free(w->todo_of);
    free(w->texts);
    free(w->lens);
    free(w->todo_chunk);
    free(w->fresh);
    free(w->out_vecs);
    rag_wbuf_free(&w->buf);
}

/*
 * A doc.chunked given up on (the provider rejected a chunk, or attempts ran out): tell ingest,
 * in the dead-letter transaction, so that the saga compensates (marks the version failed and
 * keeps the previous one active).  A payload that cannot even be peeked at names no version:
 * nothing to compensate, the dead letter itself is the report.
 */
static int embed_on_dead(void *self, MDB_txn *txn, const rag_queue_message *msg, int code,
                         const char *reason)
{
    rag_embed *em = self;
    rag_ev_failed f;
    memset(&f, 0, sizeof f);
    rag_ev_chunked ev;
    int decoded = rag_ev_chunked_decode(msg->data, msg->size, &ev) == RAG_OK;
    if (decoded && (ev.flags & RAG_EV_REEMBED)) {
        /* A re-embed of an active version: nothing to compensate (the version stays active,
         * found by the lexical side); the dead letter is the report, `rag dlq retry` the fix. */
        rag_ev_chunked_clear(&ev);
        return RAG_OK;
    }
    if (decoded) {
        f.doc_id = ev.doc_id;
        f.version = ev.version;
        f.trail = ev.trail;
    } else if (rag_ev_peek(msg->topic, msg->data, msg->size, &f.doc_id, &f.version) != RAG_OK) {
        return RAG_OK;
    }
    f.stage = "embed";
    f.code = code;
    f.reason = reason ? reason : "";
    rag_ev_trail_add(&f.trail, "embed", RAG_TOPIC_CHUNKED, rag_now_ms(), msg->attempts, code);
    rag_wbuf b;
    rag_wbuf_init(&b);
    int rc = rag_ev_failed_encode(&f, &b);
    if (!rc)
        rc = rag_outbox_add(em->outbox, txn, RAG_TOPIC_FAILED, b.data, b.len, NULL);
    rag_wbuf_free(&b);
    if (decoded)
        rag_ev_chunked_clear(&ev);
    return rc;
}

static int embed_handle(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    rag_embed *em = self;
    const unsigned int dim = em->dim;
    const size_t row_bytes = (size_t)dim * sizeof(float);
    handle_work w;
    memset(&w, 0, sizeof w);
    rag_wbuf_init(&w.buf);

    int rc = rag_ev_chunked_decode(msg->data, msg->size, &w.ev);
    if (rc)
        return rc; /* corrupt payload: dead-lettered, never retried */
    const size_t n = w.ev.chunk_count;
    size_t n_miss = 0, n_todo = 0;
    uint64_t hits = 0;

    if (n) {
        w.vecs = malloc(n * row_bytes);
        w.miss = malloc(n * sizeof *w.miss);
        w.todo_of = malloc(n * sizeof *w.todo_of);
        w.texts = malloc(n * sizeof *w.texts);
        w.lens = malloc(n * sizeof *w.lens);
        w.todo_chunk = malloc(n * sizeof *w.todo_chunk);
        w.out_vecs = calloc(n, sizeof *w.out_vecs);
        if (!w.vecs || !w.miss || !w.todo_of || !w.texts || !w.lens || !w.todo_chunk ||
            !w.out_vecs) {
            rc = rag_error_set(RAG_ENOMEM, "embed: out of memory for %zu chunks", n);
            goto done;
        }
    }

    /* 1. cache lookups (the nested txn sees what earlier messages of the batch stored) */
    for (size_t i = 0; i < n; i++) {
        uint8_t key[EMBED_KEY_LEN];
        cache_key(em, w.ev.chunks[i].hash, key);
        MDB_val k = {sizeof key, key}, v;
        int mrc = mdb_get(txn, em->cache_dbi, &k, &v);
        if (mrc == 0 && v.mv_size == row_bytes) {
            f32_from_le(w.vecs + i * dim, v.mv_data, dim);
            hits++;
            continue;
        }
        if (mrc != 0 && mrc != MDB_NOTFOUND) {
            rc = rag_mdb_error(mrc, "embed: cache lookup");
            goto done;
        }
        /* not found, or a row of the wrong size (cannot happen with a recorded dim): embed
         * again and overwrite rather than dead-letter the document */
        w.miss[n_miss].hash = w.ev.chunks[i].hash;
        w.miss[n_miss].chunk = i;
        n_miss++;
    }

    /* 2. one provider call for the distinct missing texts */
    if (n_miss) {
        qsort(w.miss, n_miss, sizeof *w.miss, miss_cmp);
        for (size_t m = 0; m < n_miss; m++) {
            if (m == 0 || memcmp(w.miss[m].hash, w.miss[m - 1].hash, 16) != 0) {
                const rag_ev_chunk *c = &w.ev.chunks[w.miss[m].chunk];
                w.texts[n_todo] = c->text;
                w.lens[n_todo] = c->text_len;
                w.todo_chunk[n_todo] = w.miss[m].chunk;
                n_todo++;
            }
            w.todo_of[m] = n_todo - 1;
        }
        w.fresh = malloc(n_todo * row_bytes);
        if (!w.fresh) {
            rc = rag_error_set(RAG_ENOMEM, "embed: out of memory for %zu vectors", n_todo);
            goto done;
        }
        uint64_t t0 = rag_mono_us();
        rc = rag_embed_texts(&em->provider, w.texts, w.lens, n_todo, w.fresh);
        rag_hist_observe_us(&em->provider_latency, rag_mono_us() - t0);
        if (rc) {
            /* The detail is the provider's (status, error text), never the chunk texts. */
            rag_log(RAG_LOG_WARN, "embed", "provider_error",
                    "provider '%s' failed for %zu text(s) of %s@%llu: %s (%s)", em->fingerprint,
                    n_todo, w.ev.doc_id, (unsigned long long)w.ev.version, rag_error_last(),
                    rag_strerror(rc));
            goto done; /* RAG_ETRANSIENT: retried; RAG_EPROVIDER: dead-lettered */
        }
        /* A NaN or infinity would poison inner products in the index forever: treat it as
         * a permanent provider failure for this document. */
        for (size_t j = 0; j < n_todo * dim; j++)
            if (!isfinite(w.fresh[j])) {
                rc = rag_error_set(RAG_EPROVIDER,
                                   "embedding provider returned a non-finite value for chunk "
                                   "%u of %s@%llu",
                                   (unsigned)w.ev.chunks[w.todo_chunk[j / dim]].chunk_no,
                                   w.ev.doc_id, (unsigned long long)w.ev.version);
                goto done;
            }

        /* 3. store the new vectors and fill every missing chunk's row */
        for (size_t t = 0; t < n_todo; t++) {
            uint8_t key[EMBED_KEY_LEN];
            cache_key(em, w.ev.chunks[w.todo_chunk[t]].hash, key);
            MDB_val k = {sizeof key, key}, v = {row_bytes, NULL};
            int mrc = mdb_put(txn, em->cache_dbi, &k, &v, MDB_RESERVE);
            if (mrc) {
                rc = rag_mdb_error(mrc, "embed: cache store");
                goto done;
            }
            f32_to_le(v.mv_data, w.fresh + t * dim, dim);
        }
        for (size_t m = 0; m < n_miss; m++)
            memcpy(w.vecs + w.miss[m].chunk * dim, w.fresh + w.todo_of[m] * dim, row_bytes);
    }

    /* 4. doc.embedded, in the same txn */
    for (size_t i = 0; i < n; i++) {
        const rag_ev_chunk *c = &w.ev.chunks[i];
        rag_ev_vector *o = &w.out_vecs[i];
        o->chunk_no = c->chunk_no;
        memcpy(o->hash, c->hash, 16);
        o->text = c->text;
        o->text_len = c->text_len;
        o->vector = w.vecs + i * dim;
    }
    rag_ev_embedded out;
    memset(&out, 0, sizeof out);
    out.doc_id = w.ev.doc_id;
    out.version = w.ev.version;
    out.acl_count = w.ev.acl_count;
    out.acl = w.ev.acl;
    out.title = w.ev.title;
    out.dim = dim;
    out.vector_count = n;
    out.vectors = w.out_vecs;
    out.trail = w.ev.trail;
    out.model_gen = em->model_gen;
    out.flags = w.ev.flags & RAG_EV_REEMBED;
    rag_ev_trail_add(&out.trail, "embed", RAG_TOPIC_CHUNKED, rag_now_ms(), msg->attempts,
                     RAG_OK);
    rc = rag_ev_embedded_encode(&out, &w.buf);
    if (rc)
        goto done;
    rc = rag_outbox_add(em->outbox, txn, RAG_TOPIC_EMBEDDED, w.buf.data, w.buf.len, NULL);
    if (rc)
        goto done;

    atomic_fetch_add(&em->hits, hits);
    atomic_fetch_add(&em->misses, (uint64_t)n_miss);

done:
    work_free(&w);
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

void rag_embed_close(rag_embed *em)
{
    if (!em)
        return;
    rag_outbox_free(em->outbox);
    if (em->env)
        rag_env_close(em->env);
    free(em);
}

int rag_embed_open(rag_embed **out, const rag_config *cfg, const rag_embed_provider *provider)
{
    if (!out || !cfg)
        return rag_error_set(RAG_EINVAL, "rag_embed_open: NULL argument");
    *out = NULL;
    int rc = rag_embed_provider_check(provider);
    if (rc)
        return rc;
    rag_embed *em = calloc(1, sizeof *em);
    if (!em)
        return rag_error_set(RAG_ENOMEM, "embed: out of memory");
    em->provider = *provider;
    em->dim = provider->dim;
    atomic_init(&em->hits, 0);
    atomic_init(&em->misses, 0);

    if ((rc = read_fingerprint(em)) != RAG_OK ||
        (rc = rag_env_open(&em->env, cfg, "embed", EMBED_MAX_DBS)) != RAG_OK ||
        (rc = rag_dbi_open(em->env, "cache", 0, &em->cache_dbi)) != RAG_OK ||
        (rc = rag_dbi_open(em->env, "meta", 0, &em->meta_dbi)) != RAG_OK ||
        (rc = check_meta(em, cfg->reembed)) != RAG_OK ||
        (rc = rag_outbox_open(&em->outbox, em->env, "embed")) != RAG_OK)
        goto fail;

    em->consumer.module = "embed";
    em->consumer.topic = RAG_TOPIC_CHUNKED;
    em->consumer.env = em->env;
    em->consumer.outbox = em->outbox;
    em->consumer.self = em;
    em->consumer.handle = embed_handle;
    em->consumer.on_dead = embed_on_dead;
    if ((rc = rag_consumer_init(&em->consumer)) != RAG_OK)
        goto fail;
    *out = em;
    return RAG_OK;

fail:
    rag_embed_close(em);
    return rc;
}

rag_consumer *rag_embed_consumer(rag_embed *em) { return em ? &em->consumer : NULL; }
rag_outbox *rag_embed_outbox(rag_embed *em) { return em ? em->outbox : NULL; }
MDB_env *rag_embed_env(rag_embed *em) { return em ? em->env : NULL; }
const rag_hist *rag_embed_provider_latency(const rag_embed *em)
{
    return em ? &em->provider_latency : NULL;
}
uint64_t rag_embed_model_gen(const rag_embed *em) { return em ? em->model_gen : 0; }
const char *rag_embed_fingerprint(const rag_embed *em) { return em ? em->fingerprint : ""; }

int rag_embed_stats_get(rag_embed *em, rag_embed_stats *out)
{
    if (!em || !out)
        return rag_error_set(RAG_EINVAL, "rag_embed_stats_get: NULL argument");
    MDB_txn *txn;
    int mrc = mdb_txn_begin(em->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "embed: begin stats txn");
    MDB_stat st;
    mrc = mdb_stat(txn, em->cache_dbi, &st);
    mdb_txn_abort(txn);
    if (mrc)
        return rag_mdb_error(mrc, "embed: cache stat");
    out->cache_entries = st.ms_entries;
    out->cache_hits = atomic_load(&em->hits);
    out->cache_misses = atomic_load(&em->misses);
    return RAG_OK;
}
