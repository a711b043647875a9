/*
 * The transactional outbox: events are rows of the producer's own env, written in the same
 * write txn as the state change they announce, and handed to the transport by a relay that
 * deletes them only after the transport accepted them.
 *
 * Tables (in the producer's env)
 *   "__outbox"       be64 seq -> {str topic, str id, payload bytes}
 *   "__outbox_meta"  "next" -> u64 next outbox sequence
 *                    "origin" -> u64 random, drawn when the env first opens its outbox
 *
 * Ids are "<module>-<16 hex origin>-<16 hex sequence>".  The sequence is persisted in the
 * caller's txn together with the row, so ids never repeat across restarts, even after every
 * row was relayed and deleted.  The origin makes them unique across roots: with modules in
 * several processes (embed workers on NATS, each with its own root), two workers' first
 * doc.embedded would otherwise share "embed-...01", and the broker's de-duplication and the
 * index's inbox would drop the second as a repeat.
 *
 * Relayed rows are deleted lazily: the relay remembers (in memory) the last sequence the
 * transport accepted and starts after it, and the next write txn of the env (the next
 * rag_outbox_add, i.e. the next put or consumer batch) deletes the rows up to it.  A delete
 * commit of its own per relay was one of ~16 durable commits per document update.  A process
 * that ends before that write re-publishes those rows at its next open, as a relay that
 * crashed between publish and delete always did: the broker drops ids it still holds and
 * consumers' inboxes drop the rest.  rag_outbox_free() deletes them when the env stays open.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "rag_queue.h"
#include "rag_queue_internal.h"

/* A relay batch: bounded so that one publish txn and the memory it pins stay modest. */
#define RELAY_MAX_ROWS 512
#define RELAY_MAX_BYTES ((size_t)8 * 1024 * 1024)
/* "-" + 16 hex digits, twice, + NUL */
#define MODULE_MAX (RAG_QUEUE_MSGID_MAX - 35)

struct rag_outbox {
    MDB_env *env;
    MDB_dbi rows, meta;
    char module[MODULE_MAX];
    uint64_t origin;
    pthread_mutex_t relay_mu; /* concurrent relays serialise: each row is published once */
    _Atomic uint64_t relayed; /* rows up to this sequence were accepted by the transport */
};

static const char next_key[] = "next";
static const char origin_key[] = "origin";

/* 64 random bits (the kernel's generator; a clock and pid mix if it is unavailable). */
static uint64_t random_origin(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) == (ssize_t)sizeof v && v)
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdULL;
    v ^= v >> 33;
    return v ? v : 1;
}

/* Read this env's origin, drawing and storing it on first use. */
static int load_origin(rag_outbox *ob)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ob->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: origin txn");
    MDB_val k = {sizeof origin_key - 1, (void *)origin_key}, v;
    mrc = mdb_get(txn, ob->meta, &k, &v);
    if (mrc == 0 && v.mv_size == 8) {
        memcpy(&ob->origin, v.mv_data, 8);
        mdb_txn_abort(txn);
        return RAG_OK;
    }
    if (mrc && mrc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "outbox: read origin");
    }
    ob->origin = random_origin();
    v.mv_size = 8;
    v.mv_data = &ob->origin;
    mrc = mdb_put(txn, ob->meta, &k, &v, 0);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "outbox: write origin");
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "outbox: commit origin") : RAG_OK;
}

int rag_outbox_open(rag_outbox **out, MDB_env *env, const char *module)
{
    if (!out || !env || !module || !*module)
        return rag_error_set(RAG_EINVAL, "outbox: open needs out, env and module");
    *out = NULL;
    if (strlen(module) >= MODULE_MAX)
        return rag_error_set(RAG_EINVAL, "outbox: module name '%s' longer than %d bytes",
                             module, MODULE_MAX - 1);
    rag_outbox *ob = calloc(1, sizeof *ob);
    if (!ob)
        return rag_error_set(RAG_ENOMEM, "outbox");
    ob->env = env;
    strcpy(ob->module, module);
    int rc = rag_dbi_open(env, "__outbox", 0, &ob->rows);
    if (!rc)
        rc = rag_dbi_open(env, "__outbox_meta", 0, &ob->meta);
    if (!rc)
        rc = load_origin(ob);
    if (rc) {
        free(ob);
        return rc;
    }
    pthread_mutex_init(&ob->relay_mu, NULL);
    *out = ob;
    return RAG_OK;
}

/* Delete the relayed rows (those up to ob->relayed) in the caller's write txn. */
static int outbox_gc(rag_outbox *ob, MDB_txn *txn)
{
    uint64_t upto = atomic_load(&ob->relayed);
    if (upto == 0)
        return RAG_OK;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ob->rows, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: gc cursor");
    MDB_val k, v;
    /* MDB_FIRST each time: the smallest row left is the next candidate (no reliance on the
     * cursor's position after a delete). */
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) {
        if (k.mv_size != 8 || rag_be64_get(k.mv_data) > upto)
            break;
        mrc = mdb_cursor_del(cur, 0);
        if (mrc)
            break;
    }
    mdb_cursor_close(cur);
    return mrc && mrc != MDB_NOTFOUND ? rag_mdb_error(mrc, "outbox: gc") : RAG_OK;
}

void rag_outbox_free(rag_outbox *ob)
{
    if (!ob)
        return;
    if (atomic_load(&ob->relayed)) { /* best effort: else the next open re-publishes them */
        MDB_txn *txn;
        if (mdb_txn_begin(ob->env, NULL, 0, &txn) == 0) {
            if (outbox_gc(ob, txn) == RAG_OK)
                rag_txn_commit(txn);
            else
                mdb_txn_abort(txn);
        }
    }
    pthread_mutex_destroy(&ob->relay_mu);
    free(ob);
}

const char *rag_outbox_module(const rag_outbox *ob) { return ob ? ob->module : ""; }

MDB_env *rag_queue__outbox_env(const rag_outbox *ob) { return ob ? ob->env : NULL; }

int rag_outbox_add(rag_outbox *ob, MDB_txn *txn, const char *topic, const void *data,
                   size_t len, char id_out[RAG_QUEUE_MSGID_MAX])
{
    if (!ob || !txn || !topic || (len && !data))
        return rag_error_set(RAG_EINVAL, "outbox: add needs ob, txn, topic and data");
    if (!*topic || strlen(topic) >= RAG_QUEUE_TOPIC_MAX)
        return rag_error_set(RAG_EINVAL, "outbox: topic missing or longer than %d bytes",
                             RAG_QUEUE_TOPIC_MAX - 1);
    int rc = outbox_gc(ob, txn);
    if (rc)
        return rc;
    MDB_val mk = {sizeof next_key - 1, (void *)next_key}, mv;
    uint64_t seq = 1;
    int mrc = mdb_get(txn, ob->meta, &mk, &mv);
    if (mrc == 0 && mv.mv_size == 8)
        memcpy(&seq, mv.mv_data, 8);
    else if (mrc && mrc != MDB_NOTFOUND)
        return rag_mdb_error(mrc, "outbox: read sequence");
    uint64_t next = seq + 1;
    mv.mv_size = 8;
    mv.mv_data = &next;
    mrc = mdb_put(txn, ob->meta, &mk, &mv, 0);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: write sequence");

    char id[RAG_QUEUE_MSGID_MAX];
    snprintf(id, sizeof id, "%s-%016llx-%016llx", ob->module, (unsigned long long)ob->origin,
             (unsigned long long)seq);
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_cstr(&w, topic);
    rag_wbuf_cstr(&w, id);
    rag_wbuf_bytes(&w, data, len);
    if (w.err) {
        int e = w.err;
        rag_wbuf_free(&w);
        return rag_error_set(e, "outbox: cannot encode a %zu-byte event", len);
    }
    uint8_t k[8];
    rag_be64_put(k, seq);
    MDB_val key = {8, k}, val = {w.len, w.data};
    /* Sequences only grow: append (full pages, no search); an existing key is an error. */
    mrc = mdb_put(txn, ob->rows, &key, &val, MDB_APPEND);
    if (mrc == MDB_KEYEXIST)
        mrc = mdb_put(txn, ob->rows, &key, &val, MDB_NOOVERWRITE);
    rag_wbuf_free(&w);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: write row");
    if (id_out)
        memcpy(id_out, id, sizeof id);
    return RAG_OK;
}

static int decode_row(const MDB_val *v, rag_queue_message *m)
{
    rag_rbuf r;
    rag_rbuf_init(&r, v->mv_data, v->mv_size);
    size_t tl, il;
    const char *t = rag_rbuf_str(&r, &tl);
    const char *id = rag_rbuf_str(&r, &il);
    if (r.err || tl == 0 || tl >= sizeof m->topic || il == 0 || il >= sizeof m->id)
        return rag_error_set(RAG_ECORRUPT, "outbox: malformed row");
    memset(m, 0, sizeof *m);
    memcpy(m->topic, t, tl + 1);
    memcpy(m->id, id, il + 1);
    m->size = r.len - r.off;
    m->data = (const uint8_t *)r.data + r.off;
    return RAG_OK;
}

/* One batch: read the rows after the last relayed one (payloads point into the read txn's
 * map, valid until it ends) and publish them; they are deleted later (outbox_gc). */
static int relay_batch(rag_outbox *ob, const rag_queue_transport *t, size_t limit,
                       rag_queue_message *msgs, uint64_t *seqs, size_t *n_out)
{
    *n_out = 0;
    MDB_txn *rtxn;
    int mrc = mdb_txn_begin(ob->env, NULL, MDB_RDONLY, &rtxn);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: relay read txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(rtxn, ob->rows, &cur);
    if (mrc) {
        mdb_txn_abort(rtxn);
        return rag_mdb_error(mrc, "outbox: relay cursor");
    }
    int rc = RAG_OK;
    size_t n = 0, bytes = 0;
    uint8_t start[8];
    rag_be64_put(start, atomic_load(&ob->relayed) + 1);
    MDB_val key = {8, start}, val;
    mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (mrc == 0 && n < limit && (n == 0 || bytes + val.mv_size <= RELAY_MAX_BYTES)) {
        if (key.mv_size != 8) {
            rc = rag_error_set(RAG_ECORRUPT, "outbox: malformed key");
            break;
        }
        rc = decode_row(&val, &msgs[n]);
        if (rc)
            break;
        seqs[n++] = rag_be64_get(key.mv_data);
        bytes += val.mv_size;
        mrc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "outbox: relay scan");
    if (!rc && n)
        rc = t->publish(t->state, msgs, n);
    mdb_txn_abort(rtxn);
    if (rc || !n)
        return rc;
    atomic_store(&ob->relayed, seqs[n - 1]);
    *n_out = n;
    return RAG_OK;
}

int rag_outbox_relay(rag_outbox *ob, const rag_queue_transport *t, size_t max, size_t *moved)
{
    if (moved)
        *moved = 0;
    if (!ob || !t || !t->publish)
        return rag_error_set(RAG_EINVAL, "outbox: relay needs an outbox and a transport");
    rag_queue_message *msgs = malloc(RELAY_MAX_ROWS * sizeof *msgs);
    uint64_t *seqs = malloc(RELAY_MAX_ROWS * sizeof *seqs);
    if (!msgs || !seqs) {
        free(msgs);
        free(seqs);
        return rag_error_set(RAG_ENOMEM, "outbox: relay");
    }
    int rc = RAG_OK;
    size_t total = 0;
    pthread_mutex_lock(&ob->relay_mu);
    for (;;) {
        size_t limit = RELAY_MAX_ROWS;
        if (max && max - total < limit)
            limit = max - total;
        if (limit == 0)
            break;
        size_t n;
        rc = relay_batch(ob, t, limit, msgs, seqs, &n);
        total += n;
        if (rc || n == 0)
            break;
    }
    pthread_mutex_unlock(&ob->relay_mu);
    free(msgs);
    free(seqs);
    if (moved)
        *moved = total;
    return rc;
}

int rag_outbox_pending(rag_outbox *ob, uint64_t *count)
{
    if (!ob || !count)
        return rag_error_set(RAG_EINVAL, "outbox: pending needs ob and count");
    *count = 0;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(ob->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: pending txn");
    MDB_stat st;
    mrc = mdb_stat(txn, ob->rows, &st);
    /* Rows relayed but not deleted yet (outbox_gc) are not pending: count them off. */
    uint64_t upto = atomic_load(&ob->relayed), done = 0;
    MDB_cursor *cur = NULL;
    if (!mrc && upto && st.ms_entries)
        mrc = mdb_cursor_open(txn, ob->rows, &cur);
    if (cur) {
        MDB_val k, v;
        int g;
        for (g = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
             g == 0 && k.mv_size == 8 && rag_be64_get(k.mv_data) <= upto;
             g = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
            done++;
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    if (mrc)
        return rag_mdb_error(mrc, "outbox: stat");
    *count = st.ms_entries - done;
    return RAG_OK;
}
