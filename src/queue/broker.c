/*
 * The embedded LMDB broker: the default queue transport, an env of its own under
 * `<root>/queue/`.
 *
 * Tables
 *   "q_state"  be64 seq -> {u64 visible_at_ms, u8 leased, u32 attempts, u64 published_ms,
 *                           str topic, str id}
 *   "q_body"   be64 seq -> payload bytes
 *   "q_vis"    topic \0 be64 visible_at_ms be64 seq -> u8 leased
 *   "q_ids"    message id -> be64 seq                  (dedup of re-published ids)
 *   "q_meta"   "next_seq" -> u64
 *
 * Why a visibility index instead of scanning the messages in sequence order: a fetch then
 * costs O(batch · log n) whatever the number of in-flight or delayed messages ahead of the
 * first visible one (a queue of 100k messages whose head is leased is the common case while
 * consumers work).  The index orders a topic by (visible_at, seq): fresh messages are visible
 * from their publish time, so the order is FIFO; a retried message takes its place by the
 * time its backoff ends.  The first entry of a topic is also the earliest moment something
 * can become visible, which is what wait() sleeps until.
 *
 * State and body are split so that leasing/naking rewrites a few dozen bytes, never the
 * payload (doc.embedded messages carry vectors inline and may be large).
 *
 * A leased message keeps visible_at = lease deadline: once that passes, fetch() sees it
 * again without any sweeper.  The `leased` flag only distinguishes "in flight" from
 * "delayed" for depth() and lets a stale nak (from a consumer whose lease expired and whose
 * message was re-leased since) be recognised and ignored via the attempts counter.
 */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rag_queue.h"

#define VIS_KEY_MAX (RAG_QUEUE_TOPIC_MAX + 16)

typedef struct topic_gen {
    char topic[RAG_QUEUE_TOPIC_MAX];
    uint64_t gen;
} topic_gen;

/* An acknowledgement not yet written (see br_ack). */
typedef struct pending_ack {
    uint64_t handle;
    char id[RAG_QUEUE_MSGID_MAX];
} pending_ack;

typedef struct broker {
    MDB_env *env;
    MDB_dbi state, body, vis, ids, meta;
    pthread_mutex_t ack_mu; /* guards acks */
    pending_ack *acks;
    size_t n_acks, cap_acks;
    pthread_mutex_t mu;   /* guards gens / wake_gen */
    pthread_cond_t cv;    /* signalled on publish, nak and wake_all */
    topic_gen *gens;
    size_t n_gens, cap_gens;
    uint64_t wake_gen;
} broker;

typedef struct msg_state {
    uint64_t visible_at, published;
    uint8_t leased;
    uint32_t attempts;
    char topic[RAG_QUEUE_TOPIC_MAX];
    char id[RAG_QUEUE_MSGID_MAX];
} msg_state;

/* ---- encoding ----------------------------------------------------------------------------- */

static size_t vis_key(uint8_t *out, const char *topic, uint64_t visible_at, uint64_t seq)
{
    size_t n = strlen(topic);
    memcpy(out, topic, n);
    out[n] = 0;
    rag_be64_put(out + n + 1, visible_at);
    rag_be64_put(out + n + 9, seq);
    return n + 17;
}

static int state_encode(rag_wbuf *b, const msg_state *s)
{
    rag_wbuf_reset(b);
    rag_wbuf_u64(b, s->visible_at);
    rag_wbuf_u8(b, s->leased);
    rag_wbuf_u32(b, s->attempts);
    rag_wbuf_u64(b, s->published);
    rag_wbuf_cstr(b, s->topic);
    rag_wbuf_cstr(b, s->id);
    return b->err ? rag_error_set(b->err, "queue: cannot encode message state") : RAG_OK;
}

static int state_decode(const MDB_val *v, msg_state *s)
{
    rag_rbuf r;
    rag_rbuf_init(&r, v->mv_data, v->mv_size);
    s->visible_at = rag_rbuf_u64(&r);
    s->leased = rag_rbuf_u8(&r);
    s->attempts = rag_rbuf_u32(&r);
    s->published = rag_rbuf_u64(&r);
    size_t tl, il;
    const char *t = rag_rbuf_str(&r, &tl);
    const char *id = rag_rbuf_str(&r, &il);
    if (r.err || tl >= sizeof s->topic || il >= sizeof s->id)
        return rag_error_set(RAG_ECORRUPT, "queue: malformed message state record");
    memcpy(s->topic, t, tl + 1);
    memcpy(s->id, id, il + 1);
    return RAG_OK;
}

static int state_get(broker *b, MDB_txn *txn, uint64_t seq, msg_state *s)
{
    uint8_t k[8];
    rag_be64_put(k, seq);
    MDB_val key = {8, k}, val;
    int mrc = mdb_get(txn, b->state, &key, &val);
    if (mrc == MDB_NOTFOUND)
        return RAG_ENOTFOUND;
    if (mrc)
        return rag_mdb_error(mrc, "queue: read message state");
    return state_decode(&val, s);
}

static int state_put(broker *b, MDB_txn *txn, uint64_t seq, const msg_state *s, rag_wbuf *w)
{
    int rc = state_encode(w, s);
    if (rc)
        return rc;
    uint8_t k[8];
    rag_be64_put(k, seq);
    MDB_val key = {8, k}, val = {w->len, w->data};
    int mrc = mdb_put(txn, b->state, &key, &val, 0);
    return mrc ? rag_mdb_error(mrc, "queue: write message state") : RAG_OK;
}

static int vis_put(broker *b, MDB_txn *txn, const char *topic, uint64_t at, uint64_t seq,
                   uint8_t leased)
{
    uint8_t k[VIS_KEY_MAX];
    MDB_val key = {vis_key(k, topic, at, seq), k}, val = {1, &leased};
    int mrc = mdb_put(txn, b->vis, &key, &val, 0);
    return mrc ? rag_mdb_error(mrc, "queue: write visibility index") : RAG_OK;
}

static int vis_del(broker *b, MDB_txn *txn, const char *topic, uint64_t at, uint64_t seq)
{
    uint8_t k[VIS_KEY_MAX];
    MDB_val key = {vis_key(k, topic, at, seq), k};
    int mrc = mdb_del(txn, b->vis, &key, NULL);
    if (mrc && mrc != MDB_NOTFOUND)
        return rag_mdb_error(mrc, "queue: delete from visibility index");
    return RAG_OK;
}

static int check_topic(const char *topic)
{
    if (!topic || !*topic || strnlen(topic, RAG_QUEUE_TOPIC_MAX) >= RAG_QUEUE_TOPIC_MAX)
        return rag_error_set(RAG_EINVAL, "queue: topic missing or longer than %d bytes",
                             RAG_QUEUE_TOPIC_MAX - 1);
    return RAG_OK;
}

static int check_id(const char *id)
{
    if (!*id || strnlen(id, RAG_QUEUE_MSGID_MAX) >= RAG_QUEUE_MSGID_MAX)
        return rag_error_set(RAG_EINVAL, "queue: message id missing or longer than %d bytes",
                             RAG_QUEUE_MSGID_MAX - 1);
    return RAG_OK;
}

/* ---- waiters ---------------------------------------------------------------------------- */

/* Caller holds b->mu. Returns NULL only when out of memory. */
static topic_gen *gen_slot(broker *b, const char *topic)
{
    for (size_t i = 0; i < b->n_gens; i++)
        if (strcmp(b->gens[i].topic, topic) == 0)
            return &b->gens[i];
    if (b->n_gens == b->cap_gens) {
        size_t cap = b->cap_gens ? b->cap_gens * 2 : 8;
        topic_gen *g = realloc(b->gens, cap * sizeof *g);
        if (!g)
            return NULL;
        b->gens = g;
        b->cap_gens = cap;
    }
    topic_gen *g = &b->gens[b->n_gens++];
    snprintf(g->topic, sizeof g->topic, "%s", topic);
    g->gen = 0;
    return g;
}

/* Bump the generation of each topic (or of every topic when topics==NULL) and wake waiters. */
static void signal_topics(broker *b, const rag_queue_message *msgs, size_t n)
{
    pthread_mutex_lock(&b->mu);
    if (!msgs) {
        for (size_t i = 0; i < b->n_gens; i++)
            b->gens[i].gen++;
    } else {
        for (size_t i = 0; i < n; i++) {
            topic_gen *g = gen_slot(b, msgs[i].topic);
            if (g)
                g->gen++;
            else /* no memory for the slot: wake everyone rather than lose the signal */
                b->wake_gen++;
        }
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ---- slots -------------------------------------------------------------------------------- */

/* Delete acknowledged messages in `txn`. */
static int acks_apply(broker *b, MDB_txn *txn, const pending_ack *a, size_t n)
{
    int rc = RAG_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        msg_state s;
        rc = state_get(b, txn, a[i].handle, &s);
        if (rc == RAG_ENOTFOUND) { /* acked already (e.g. by a consumer that re-leased it) */
            rc = RAG_OK;
            continue;
        }
        if (rc)
            break;
        if (strcmp(s.id, a[i].id) != 0)
            continue; /* a handle that is not this message's: never delete someone else's */
        uint8_t sk[8];
        rag_be64_put(sk, a[i].handle);
        MDB_val k = {8, sk};
        int mrc = mdb_del(txn, b->state, &k, NULL);
        if (!mrc)
            mrc = mdb_del(txn, b->body, &k, NULL);
        if (mrc && mrc != MDB_NOTFOUND) {
            rc = rag_mdb_error(mrc, "queue: ack delete");
            break;
        }
        MDB_val ik = {strlen(s.id), s.id};
        mrc = mdb_del(txn, b->ids, &ik, NULL);
        if (mrc && mrc != MDB_NOTFOUND) {
            rc = rag_mdb_error(mrc, "queue: ack delete id");
            break;
        }
        rc = vis_del(b, txn, s.topic, s.visible_at, a[i].handle);
    }
    return rc;
}

/* Apply acks inside the caller's write txn, in a nested txn: acks that cannot be written
 * (a record that does not decode, a full map) are dropped, undone as a whole, instead of
 * failing the caller's publish or fetch, and of failing every later one with them.  A
 * dropped ack is a redelivery, which the consumer's inbox absorbs. */
static void acks_apply_in(broker *b, MDB_txn *txn, const pending_ack *a, size_t n)
{
    if (n == 0)
        return;
    MDB_txn *child;
    if (mdb_txn_begin(b->env, txn, 0, &child) != 0)
        return;
    int rc = acks_apply(b, child, a, n);
    if (rc == RAG_OK) {
        int mrc = mdb_txn_commit(child); /* a failed commit has aborted the child */
        if (mrc)
            rc = rag_mdb_error(mrc, "queue: ack commit");
    } else {
        mdb_txn_abort(child);
    }
    if (rc) {
        rag_log(RAG_LOG_WARN, "queue", "ack_dropped",
                "%zu acknowledgement(s) could not be written and were dropped (the messages "
                "will be redelivered and skipped by the inboxes): %s",
                n, rag_error_last());
        rag_error_clear();
    }
}

/* Take the pending acks (the caller applies them in its txn, or gives them back). */
static void acks_take(broker *b, pending_ack **a, size_t *n)
{
    pthread_mutex_lock(&b->ack_mu);
    *a = b->acks;
    *n = b->n_acks;
    b->acks = NULL;
    b->n_acks = b->cap_acks = 0;
    pthread_mutex_unlock(&b->ack_mu);
}

/* Give back acks whose txn did not commit; they go first again. */
static void acks_return(broker *b, pending_ack *a, size_t n)
{
    if (!a)
        return;
    pthread_mutex_lock(&b->ack_mu);
    if (n && b->n_acks) {
        pending_ack *m = realloc(a, (n + b->n_acks) * sizeof *m);
        if (m) {
            memcpy(m + n, b->acks, b->n_acks * sizeof *m);
            free(b->acks);
            b->acks = m;
            b->n_acks += n;
            b->cap_acks = b->n_acks;
            a = NULL;
        } /* else dropped: the leases expire and the inboxes absorb the redeliveries */
    } else if (n) {
        free(b->acks);
        b->acks = a;
        b->n_acks = b->cap_acks = n;
        a = NULL;
    }
    pthread_mutex_unlock(&b->ack_mu);
    free(a);
}

/* Write the pending acks in a txn of their own (before a depth count or an idle wait). */
static int acks_flush(broker *b)
{
    pending_ack *a;
    size_t n;
    acks_take(b, &a, &n);
    if (n == 0) {
        free(a);
        return RAG_OK;
    }
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, 0, &txn);
    int rc = mrc ? rag_mdb_error(mrc, "queue: ack txn") : RAG_OK;
    if (!rc) {
        acks_apply_in(b, txn, a, n); /* acks that cannot be written are dropped there */
        mrc = rag_txn_commit(txn);
        if (mrc)
            rc = rag_mdb_error(mrc, "queue: ack commit");
    }
    if (rc)
        acks_return(b, a, n);
    else
        free(a);
    return rc;
}

static int br_publish(void *state, const rag_queue_message *msgs, size_t n)
{
    broker *b = state;
    if (n == 0)
        return RAG_OK;
    if (!msgs)
        return rag_error_set(RAG_EINVAL, "queue: publish of NULL messages");
    for (size_t i = 0; i < n; i++) {
        int rc = check_topic(msgs[i].topic);
        if (!rc)
            rc = check_id(msgs[i].id);
        if (rc)
            return rc;
        if (msgs[i].size && !msgs[i].data)
            return rag_error_set(RAG_EINVAL, "queue: message %s has no data", msgs[i].id);
    }
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "queue: publish txn");
    pending_ack *acks;
    size_t n_acks;
    acks_take(b, &acks, &n_acks);
    acks_apply_in(b, txn, acks, n_acks);
    int rc = RAG_OK;
    rag_wbuf w;
    rag_wbuf_init(&w);
    static const char seq_name[] = "next_seq";
    MDB_val mk = {sizeof seq_name - 1, (void *)seq_name}, mv;
    uint64_t next = 1;
    mrc = mdb_get(txn, b->meta, &mk, &mv);
    if (mrc == 0 && mv.mv_size == 8)
        memcpy(&next, mv.mv_data, 8);
    else if (mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "queue: read sequence");
    uint64_t now = rag_now_ms();
    for (size_t i = 0; i < n && !rc; i++) {
        const rag_queue_message *m = &msgs[i];
        uint8_t sk[8];
        rag_be64_put(sk, next);
        /* The id index doubles as the dedup check: an id still present was published before
         * (typically by a relay that crashed before deleting its outbox rows). */
        MDB_val ik = {strlen(m->id), (void *)m->id}, iv = {8, sk};
        mrc = mdb_put(txn, b->ids, &ik, &iv, MDB_NOOVERWRITE);
        if (mrc == MDB_KEYEXIST)
            continue;
        if (mrc) {
            rc = rag_mdb_error(mrc, "queue: write id index");
            break;
        }
        msg_state s = {.visible_at = now, .published = now, .leased = 0, .attempts = 0};
        strcpy(s.topic, m->topic);
        strcpy(s.id, m->id);
        rc = state_put(b, txn, next, &s, &w);
        if (!rc) {
            MDB_val bk = {8, sk}, bv = {m->size, (void *)(m->size ? m->data : "")};
            mrc = mdb_put(txn, b->body, &bk, &bv, 0);
            if (mrc)
                rc = rag_mdb_error(mrc, "queue: write message body");
        }
        if (!rc)
            rc = vis_put(b, txn, m->topic, now, next, 0);
        next++;
    }
    if (!rc) {
        mv.mv_size = 8;
        mv.mv_data = &next;
        mrc = mdb_put(txn, b->meta, &mk, &mv, 0);
        if (mrc)
            rc = rag_mdb_error(mrc, "queue: write sequence");
    }
    rag_wbuf_free(&w);
    if (rc) {
        mdb_txn_abort(txn);
        acks_return(b, acks, n_acks);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    if (mrc) {
        acks_return(b, acks, n_acks);
        return rag_mdb_error(mrc, "queue: publish commit");
    }
    free(acks);
    signal_topics(b, msgs, n);
    return RAG_OK;
}

static void br_release(void *state, rag_queue_message *msgs, size_t n)
{
    (void)state;
    if (!msgs)
        return;
    for (size_t i = 0; i < n; i++) {
        free((void *)msgs[i].data);
        msgs[i].data = NULL;
        msgs[i].size = 0;
    }
}

static int br_fetch(void *state, const char *topic, size_t max, uint32_t lease_ms,
                    rag_queue_message *out, size_t *n_out)
{
    broker *b = state;
    if (n_out)
        *n_out = 0;
    int rc = check_topic(topic);
    if (rc)
        return rc;
    if (!out || !n_out)
        return rag_error_set(RAG_EINVAL, "queue: fetch needs out and n_out");
    if (max == 0)
        return RAG_OK;
    uint64_t *seqs = malloc(max * sizeof *seqs);
    if (!seqs)
        return rag_error_set(RAG_ENOMEM, "queue: fetch of %zu messages", max);
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (mrc) {
        free(seqs);
        return rag_mdb_error(mrc, "queue: fetch txn");
    }
    uint64_t now = rag_now_ms();
    size_t tlen = strlen(topic), n = 0;
    /* Acked messages leave before the scan, so none of them is leased again. */
    pending_ack *acks;
    size_t n_acks;
    acks_take(b, &acks, &n_acks);
    acks_apply_in(b, txn, acks, n_acks);

    /* Pass 1: the first `max` index entries of the topic that are visible now. */
    MDB_cursor *cur;
    mrc = mdb_cursor_open(txn, b->vis, &cur);
    if (mrc) {
        rc = rag_mdb_error(mrc, "queue: fetch cursor");
        goto out;
    }
    uint8_t k0[VIS_KEY_MAX];
    MDB_val key = {vis_key(k0, topic, 0, 0), k0}, val;
    mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (mrc == 0 && n < max) {
        const uint8_t *kp = key.mv_data;
        if (key.mv_size != tlen + 17 || memcmp(kp, topic, tlen) != 0 || kp[tlen] != 0)
            break;
        if (rag_be64_get(kp + tlen + 1) > now)
            break; /* ordered by visible_at: nothing further is visible */
        seqs[n++] = rag_be64_get(kp + tlen + 9);
        mrc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (mrc && mrc != MDB_NOTFOUND) {
        rc = rag_mdb_error(mrc, "queue: fetch scan");
        goto out;
    }

    /* Pass 2: lease each one and copy it out. */
    rag_wbuf w;
    rag_wbuf_init(&w);
    size_t filled = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        msg_state s;
        rc = state_get(b, txn, seqs[i], &s);
        if (rc)
            break;
        uint8_t sk[8];
        rag_be64_put(sk, seqs[i]);
        MDB_val bk = {8, sk}, bv;
        mrc = mdb_get(txn, b->body, &bk, &bv);
        if (mrc) {
            rc = rag_mdb_error(mrc, "queue: read message body");
            break;
        }
        void *copy = malloc(bv.mv_size ? bv.mv_size : 1);
        if (!copy) {
            rc = rag_error_set(RAG_ENOMEM, "queue: message of %zu bytes", bv.mv_size);
            break;
        }
        memcpy(copy, bv.mv_data, bv.mv_size);
        rag_queue_message *m = &out[filled++];
        memset(m, 0, sizeof *m);
        strcpy(m->topic, s.topic);
        strcpy(m->id, s.id);
        m->data = copy;
        m->size = bv.mv_size;
        rc = vis_del(b, txn, s.topic, s.visible_at, seqs[i]);
        s.visible_at = now + lease_ms;
        s.leased = 1;
        s.attempts++;
        m->attempts = s.attempts;
        m->handle = seqs[i];
        if (!rc)
            rc = vis_put(b, txn, s.topic, s.visible_at, seqs[i], 1);
        if (!rc)
            rc = state_put(b, txn, seqs[i], &s, &w);
    }
    rag_wbuf_free(&w);
    if (!rc) {
        mrc = rag_txn_commit(txn);
        txn = NULL;
        if (mrc)
            rc = rag_mdb_error(mrc, "queue: fetch commit");
    }
    if (rc) {
        br_release(state, out, filled);
        filled = 0;
    }
    *n_out = filled;
out:
    if (txn)
        mdb_txn_abort(txn);
    if (rc)
        acks_return(b, acks, n_acks);
    else
        free(acks);
    free(seqs);
    return rc;
}

/* Acknowledgements are not written at once: they ride in the broker's next write txn (the
 * next fetch or publish, usually the same consumer's relay right after) or are flushed before
 * a depth count or an idle wait.  A lost ack only means a redelivery, which the consumer's
 * inbox absorbs, so an ack needs no commit of its own: that was one of the three broker
 * commits per batch and hop. */
static int br_ack(void *state, const rag_queue_message *msgs, size_t n)
{
    broker *b = state;
    if (n == 0)
        return RAG_OK;
    if (!msgs)
        return rag_error_set(RAG_EINVAL, "queue: ack of NULL messages");
    pthread_mutex_lock(&b->ack_mu);
    if (b->n_acks + n > b->cap_acks) {
        size_t cap = (b->n_acks + n) * 2;
        pending_ack *m = realloc(b->acks, cap * sizeof *m);
        if (!m) {
            pthread_mutex_unlock(&b->ack_mu);
            return rag_error_set(RAG_ENOMEM, "queue: ack of %zu messages", n);
        }
        b->acks = m;
        b->cap_acks = cap;
    }
    for (size_t i = 0; i < n; i++) {
        b->acks[b->n_acks].handle = msgs[i].handle;
        snprintf(b->acks[b->n_acks].id, sizeof b->acks[b->n_acks].id, "%s", msgs[i].id);
        b->n_acks++;
    }
    pthread_mutex_unlock(&b->ack_mu);
    return RAG_OK;
}

static int br_nak(void *state, const rag_queue_message *msg, uint32_t delay_ms)
{
    broker *b = state;
    if (!msg)
        return rag_error_set(RAG_EINVAL, "queue: nak of NULL message");
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "queue: nak txn");
    msg_state s;
    int rc = state_get(b, txn, msg->handle, &s);
    /* Only the current delivery may return the message: after a lease expired and another
     * consumer leased it (attempts moved on), a late nak must not cut that lease short. */
    if (rc == RAG_ENOTFOUND || (!rc && (!s.leased || s.attempts != msg->attempts ||
                                        strcmp(s.id, msg->id) != 0))) {
        mdb_txn_abort(txn);
        return RAG_OK;
    }
    if (!rc)
        rc = vis_del(b, txn, s.topic, s.visible_at, msg->handle);
    if (!rc) {
        s.visible_at = rag_now_ms() + delay_ms;
        s.leased = 0;
        rc = vis_put(b, txn, s.topic, s.visible_at, msg->handle, 0);
    }
    if (!rc) {
        rag_wbuf w;
        rag_wbuf_init(&w);
        rc = state_put(b, txn, msg->handle, &s, &w);
        rag_wbuf_free(&w);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    if (mrc)
        return rag_mdb_error(mrc, "queue: nak commit");
    /* Waiters may be sleeping until a later lease deadline: let them recompute. */
    rag_queue_message sig;
    memset(&sig, 0, sizeof sig);
    strcpy(sig.topic, s.topic);
    signal_topics(b, &sig, 1);
    return RAG_OK;
}

static int br_depth(void *state, const char *topic, rag_queue_depth *out)
{
    broker *b = state;
    int rc = check_topic(topic);
    if (rc)
        return rc;
    if (!out)
        return rag_error_set(RAG_EINVAL, "queue: depth needs out");
    memset(out, 0, sizeof *out);
    rc = acks_flush(b); /* an acked message is not in flight */
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "queue: depth txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(txn, b->vis, &cur);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "queue: depth cursor");
    }
    uint64_t now = rag_now_ms();
    size_t tlen = strlen(topic);
    uint8_t k0[VIS_KEY_MAX];
    MDB_val key = {vis_key(k0, topic, 0, 0), k0}, val;
    mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (mrc == 0) {
        const uint8_t *kp = key.mv_data;
        if (key.mv_size != tlen + 17 || memcmp(kp, topic, tlen) != 0 || kp[tlen] != 0)
            break;
        uint64_t at = rag_be64_get(kp + tlen + 1);
        int leased = val.mv_size == 1 && *(const uint8_t *)val.mv_data;
        if (at <= now)
            out->ready++; /* includes expired leases: they are visible again */
        else if (leased)
            out->inflight++;
        else
            out->delayed++;
        mrc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (mrc && mrc != MDB_NOTFOUND)
        return rag_mdb_error(mrc, "queue: depth scan");
    return RAG_OK;
}

/* Earliest visible_at of the topic's index (UINT64_MAX when the topic is empty). */
static int head_visible_at(broker *b, const char *topic, uint64_t *at)
{
    *at = UINT64_MAX;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "queue: wait txn");
    MDB_cursor *cur;
    mrc = mdb_cursor_open(txn, b->vis, &cur);
    if (!mrc) {
        size_t tlen = strlen(topic);
        uint8_t k0[VIS_KEY_MAX];
        MDB_val key = {vis_key(k0, topic, 0, 0), k0}, val;
        mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
        if (mrc == 0) {
            const uint8_t *kp = key.mv_data;
            if (key.mv_size == tlen + 17 && memcmp(kp, topic, tlen) == 0 && kp[tlen] == 0)
                *at = rag_be64_get(kp + tlen + 1);
        }
        if (mrc == MDB_NOTFOUND)
            mrc = 0;
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return mrc ? rag_mdb_error(mrc, "queue: wait scan") : RAG_OK;
}

static int br_wait(void *state, const char *topic, uint32_t timeout_ms)
{
    broker *b = state;
    int rc = check_topic(topic);
    if (rc)
        return rc;
    /* Read the generations before looking at the table, so that a publish committed after
     * the look is seen as a changed generation below (no lost wake-up). */
    pthread_mutex_lock(&b->mu);
    topic_gen *g = gen_slot(b, topic);
    uint64_t g0 = g ? g->gen : 0, w0 = b->wake_gen;
    pthread_mutex_unlock(&b->mu);
    if (!g)
        return rag_error_set(RAG_ENOMEM, "queue: wait slot");
    acks_flush(b); /* going idle: write what is acked (a failure retries at the next call) */
    rag_error_clear();

    uint64_t head;
    rc = head_visible_at(b, topic, &head);
    if (rc)
        return rc;
    uint64_t now = rag_now_ms();
    if (head <= now)
        return RAG_OK;
    uint64_t wait_ms = timeout_ms;
    if (head != UINT64_MAX && head - now < wait_ms)
        wait_ms = head - now;

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(wait_ms / 1000);
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->mu);
    for (;;) {
        g = gen_slot(b, topic); /* the array may have moved */
        if (!g || g->gen != g0 || b->wake_gen != w0)
            break;
        if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&b->mu);
    return RAG_OK;
}

static void br_wake_all(void *state)
{
    broker *b = state;
    pthread_mutex_lock(&b->mu);
    b->wake_gen++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void br_free(void *state)
{
    broker *b = state;
    if (!b)
        return;
    if (b->env) {
        acks_flush(b);
        rag_env_close(b->env);
    }
    free(b->acks);
    pthread_mutex_destroy(&b->ack_mu);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->gens);
    free(b);
}

/* A previous process may have died holding leases: make those messages visible again at
 * their original place in the order (their publish time), keeping `attempts`. */
static int release_stale_leases(broker *b)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "queue: recovery txn");
    int rc = RAG_OK;
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    mrc = mdb_cursor_open(txn, b->vis, &cur);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "queue: recovery cursor");
    }
    MDB_val key, val;
    mrc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (mrc == 0) {
        if (val.mv_size == 1 && *(const uint8_t *)val.mv_data && key.mv_size >= 17) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                uint64_t *p = realloc(seqs, cap * sizeof *p);
                if (!p) {
                    rc = rag_error_set(RAG_ENOMEM, "queue: recovery");
                    break;
                }
                seqs = p;
            }
            seqs[n++] = rag_be64_get((const uint8_t *)key.mv_data + key.mv_size - 8);
        }
        mrc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (!rc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "queue: recovery scan");
    rag_wbuf w;
    rag_wbuf_init(&w);
    for (size_t i = 0; i < n && !rc; i++) {
        msg_state s;
        rc = state_get(b, txn, seqs[i], &s);
        if (rc)
            break;
        rc = vis_del(b, txn, s.topic, s.visible_at, seqs[i]);
        s.visible_at = s.published;
        s.leased = 0;
        if (!rc)
            rc = vis_put(b, txn, s.topic, s.visible_at, seqs[i], 0);
        if (!rc)
            rc = state_put(b, txn, seqs[i], &s, &w);
    }
    rag_wbuf_free(&w);
    free(seqs);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "queue: recovery commit") : RAG_OK;
}

int rag_queue_lmdb_transport_new(rag_queue_transport **out, const rag_config *cfg)
{
    if (!out || !cfg)
        return rag_error_set(RAG_EINVAL, "queue: transport_new needs out and cfg");
    *out = NULL;
    broker *b = calloc(1, sizeof *b);
    rag_queue_transport *t = calloc(1, sizeof *t);
    if (!b || !t) {
        free(b);
        free(t);
        return rag_error_set(RAG_ENOMEM, "queue: transport");
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->ack_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);

    int rc = rag_env_open(&b->env, cfg, "queue", 8);
    if (!rc)
        rc = rag_dbi_open(b->env, "q_state", 0, &b->state);
    if (!rc)
        rc = rag_dbi_open(b->env, "q_body", 0, &b->body);
    if (!rc)
        rc = rag_dbi_open(b->env, "q_vis", 0, &b->vis);
    if (!rc)
        rc = rag_dbi_open(b->env, "q_ids", 0, &b->ids);
    if (!rc)
        rc = rag_dbi_open(b->env, "q_meta", 0, &b->meta);
    if (!rc)
        rc = release_stale_leases(b);
    if (rc) {
        br_free(b);
        free(t);
        return rc;
    }
    t->version = RAG_QUEUE_TRANSPORT_VERSION;
    t->state = b;
    t->publish = br_publish;
    t->fetch = br_fetch;
    t->ack = br_ack;
    t->nak = br_nak;
    t->release = br_release;
    t->depth = br_depth;
    t->wait = br_wait;
    t->wake_all = br_wake_all;
    t->free = br_free;
    *out = t;
    return RAG_OK;
}

int rag_queue_total_depth(const rag_queue_transport *t, const char *topic, uint64_t *total)
{
    if (!t || !t->depth || !total)
        return rag_error_set(RAG_EINVAL, "queue: total_depth needs a transport and total");
    *total = 0;
    rag_queue_depth d;
    int rc = t->depth(t->state, topic, &d);
    if (rc)
        return rc;
    *total = d.ready + d.delayed + d.inflight;
    return RAG_OK;
}

void rag_queue_policy_from_config(rag_queue_policy *p, const rag_config *cfg)
{
    if (!p || !cfg)
        return;
    p->max_attempts = cfg->max_attempts;
    p->retry_base_ms = cfg->retry_base_ms;
    p->retry_cap_ms = cfg->retry_cap_ms;
    p->lease_ms = cfg->lease_ms;
    p->batch_size = cfg->batch_size;
}

MDB_env *rag_queue_lmdb_transport_env(const rag_queue_transport *t)
{
    /* Only a transport made by rag_queue_lmdb_transport_new has this fetch slot. */
    if (!t || t->fetch != br_fetch || !t->state)
        return NULL;
    return ((const broker *)t->state)->env;
}
