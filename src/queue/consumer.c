/*
 * Consumers: idempotent inbox, retries with capped full-jitter backoff, dead letters.
 *
 * Tables (in the consumer's env)
 *   "__inbox"  message id -> be64 time applied (ms)
 *   "__dead"   message id -> {str topic, i32 code, u32 attempts, u64 when_ms, str reason,
 *                             payload bytes}
 *
 * Order of one batch, and why each step is where it is:
 *   fetch (lease) -> one write txn { per message a nested txn: inbox check, handle, inbox
 *   record } -> commit -> end_batch -> relay the module's outbox -> ack/nak -> release.
 * A crash before the commit leaves nothing applied and the leases expire (or are released by
 * the next process); a crash after it leaves the inbox records, so redeliveries are acked
 * without effect; the outbox rows committed with the effects are relayed by whoever runs
 * next.  The nested txn lets one message fail without discarding its batch-mates' work.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rag_queue.h"
#include "rag_queue_internal.h"

/* OUT_DEAD: acknowledged as dead-lettered (the transport's `term` where it has one).
 * OUT_DUP: acknowledged without effect (the inbox knew it); acked like OUT_ACK, counted apart. */
enum { OUT_ACK = 1, OUT_NAK = 2, OUT_DEAD = 3, OUT_DUP = 4 };

/* Why a message was nak'ed or dead-lettered, kept until the batch's outcome is known: the
 * log events are emitted only for what was committed. */
typedef struct msg_note {
    int code;
    char reason[256];
} msg_note;

static const char inbox_name[] = "__inbox", dead_name[] = "__dead";

int rag_consumer_init(rag_consumer *c)
{
    if (!c || !c->env || !c->handle || !c->topic || !*c->topic)
        return rag_error_set(RAG_EINVAL, "consumer: init needs env, topic and handle");
    if (strlen(c->topic) >= RAG_QUEUE_TOPIC_MAX)
        return rag_error_set(RAG_EINVAL, "consumer: topic '%s' too long", c->topic);
    atomic_store(&c->n_handled, 0);
    atomic_store(&c->n_retried, 0);
    atomic_store(&c->n_dead, 0);
    atomic_store(&c->n_duplicates, 0);
    atomic_store(&c->relay_failing, 0);
    int rc = rag_dbi_open(c->env, inbox_name, 0, &c->inbox_dbi);
    if (!rc)
        rc = rag_dbi_open(c->env, dead_name, 0, &c->dead_dbi);
    return rc;
}

static int inbox_put(rag_consumer *c, MDB_txn *txn, const rag_queue_message *m)
{
    uint8_t ts[8];
    rag_be64_put(ts, rag_now_ms());
    MDB_val k = {strlen(m->id), (void *)m->id}, v = {8, ts};
    int mrc = mdb_put(txn, c->inbox_dbi, &k, &v, MDB_NOOVERWRITE);
    if (mrc == MDB_KEYEXIST)
        return RAG_OK; /* recorded already: same outcome */
    return mrc ? rag_mdb_error(mrc, "consumer: inbox record") : RAG_OK;
}

/* Dead-letter `m` in a nested txn of the batch: the "__dead" row, the inbox record (so that a
 * redelivery is skipped) and whatever on_dead() adds commit together or not at all. */
static int dead_letter(rag_consumer *c, MDB_txn *parent, const rag_queue_message *m, int code,
                       const char *reason)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(c->env, parent, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "consumer: dead-letter txn");
    rag_wbuf w;
    rag_wbuf_init(&w);
    rag_wbuf_cstr(&w, m->topic);
    rag_wbuf_i32(&w, code);
    rag_wbuf_u32(&w, m->attempts);
    rag_wbuf_u64(&w, rag_now_ms());
    rag_wbuf_cstr(&w, reason);
    rag_wbuf_bytes(&w, m->data, m->size);
    int rc = w.err ? rag_error_set(w.err, "consumer: encode dead letter") : RAG_OK;
    if (!rc) {
        MDB_val k = {strlen(m->id), (void *)m->id}, v = {w.len, w.data};
        mrc = mdb_put(txn, c->dead_dbi, &k, &v, 0);
        if (mrc)
            rc = rag_mdb_error(mrc, "consumer: dead-letter row");
    }
    rag_wbuf_free(&w);
    if (!rc)
        rc = inbox_put(c, txn, m);
    if (!rc && c->on_dead)
        rc = c->on_dead(c->self, txn, m, code, reason);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "consumer: dead-letter commit") : RAG_OK;
}

/* Outcome of one message inside the batch txn: OUT_ACK (applied or duplicate), OUT_DEAD
 * (dead-lettered) or OUT_NAK (retry later).  A nonzero return is fatal for the whole batch. */
static int process_one(rag_consumer *c, MDB_txn *batch, const rag_queue_policy *p,
                       const rag_queue_message *m, int *outcome, msg_note *note)
{
    MDB_val k = {strlen(m->id), (void *)m->id}, v;
    int mrc = mdb_get(batch, c->inbox_dbi, &k, &v);
    if (mrc == 0) {
        *outcome = OUT_DUP; /* applied before (redelivery): acknowledge, apply nothing */
        return RAG_OK;
    }
    if (mrc != MDB_NOTFOUND)
        return rag_mdb_error(mrc, "consumer: inbox lookup");
    if (m->attempts > p->max_attempts) {
        /* Delivered more often than allowed without any recorded outcome: earlier deliveries
         * crashed the process or failed whole batches. Handling it again could crash again,
         * so it goes to the dead letters instead of looping forever. */
        char reason[256];
        snprintf(reason, sizeof reason, "delivered %u times without an outcome (limit %u)",
                 m->attempts, p->max_attempts);
        int drc = dead_letter(c, batch, m, RAG_ETRANSIENT, reason);
        *outcome = drc ? OUT_NAK : OUT_DEAD;
        note->code = RAG_ETRANSIENT;
        snprintf(note->reason, sizeof note->reason, "%s", reason);
        return RAG_OK;
    }

    MDB_txn *txn;
    mrc = mdb_txn_begin(c->env, batch, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "consumer: nested txn");
    rag_error_clear();
    int hrc = c->handle(c->self, txn, m);
    if (hrc == RAG_OK) {
        hrc = inbox_put(c, txn, m);
        if (hrc == RAG_OK) {
            mrc = rag_txn_commit(txn);
            if (mrc == 0) {
                *outcome = OUT_ACK;
                return RAG_OK;
            }
            txn = NULL; /* a failed commit has aborted the nested txn */
            hrc = rag_mdb_error(mrc, "consumer: nested commit");
        }
        /* The effects could not be recorded (e.g. map full): retry like a transient error
         * rather than dead-lettering a message that did nothing wrong. */
        if (hrc != RAG_ETRANSIENT) {
            char why[256];
            snprintf(why, sizeof why, "%s", rag_error_last());
            hrc = rag_error_set(RAG_ETRANSIENT, "consumer: effects not recorded: %s", why);
        }
    }
    char reason[256];
    const char *detail = rag_error_last();
    snprintf(reason, sizeof reason, "%s", *detail ? detail : rag_strerror(hrc));
    if (txn)
        mdb_txn_abort(txn);
    note->code = hrc;
    snprintf(note->reason, sizeof note->reason, "%s", reason);

    if (hrc == RAG_ETRANSIENT && m->attempts < p->max_attempts) {
        *outcome = OUT_NAK;
        return RAG_OK;
    }
    int drc = dead_letter(c, batch, m, hrc, reason);
    /* If the dead letter itself cannot be written (or on_dead failed), keep the message:
     * it comes back after a backoff and is dead-lettered then. */
    *outcome = drc ? OUT_NAK : OUT_DEAD;
    return RAG_OK;
}

/* A failed relay is logged once, when the outbox starts failing, and its recovery once:
 * workers retry every idle poll, and an unreachable broker must not flood the log. */
static void relay_note(rag_consumer *c, int rc)
{
    if (rc) {
        if (!atomic_exchange(&c->relay_failing, 1))
            rag_log(RAG_LOG_WARN, c->module, "relay_failed",
                    "outbox relay failed (rows stay in the outbox and are sent again): %s (%s)",
                    rag_error_last(), rag_strerror(rc));
    } else if (atomic_exchange(&c->relay_failing, 0)) {
        rag_log(RAG_LOG_INFO, c->module, "relay_recovered", "outbox relay works again");
    }
}

/* Outcome counters and log events of a committed batch. */
static void batch_report(rag_consumer *c, const rag_queue_policy *p,
                         const rag_queue_message *msgs, const int *outcome,
                         const msg_note *notes, size_t n)
{
    uint64_t handled = 0, retried = 0, dead = 0, dup = 0;
    for (size_t i = 0; i < n; i++) {
        const rag_queue_message *m = &msgs[i];
        switch (outcome[i]) {
        case OUT_ACK: handled++; break;
        case OUT_DUP: dup++; break;
        case OUT_DEAD:
            dead++;
            rag_log(RAG_LOG_WARN, c->module, "dead_letter",
                    "message %s of topic %s dead-lettered after %u attempt(s): code %s (%d): %s",
                    m->id, m->topic, m->attempts, rag_strerror(notes[i].code), notes[i].code,
                    notes[i].reason);
            break;
        case OUT_NAK:
            retried++;
            if (rag_log_enabled(RAG_LOG_DEBUG))
                rag_log(RAG_LOG_DEBUG, c->module, "retry",
                        "message %s of topic %s: attempt %u of %u failed (%s), retried later: %s",
                        m->id, m->topic, m->attempts, p->max_attempts,
                        rag_strerror(notes[i].code), notes[i].reason);
            break;
        default: break;
        }
    }
    atomic_fetch_add(&c->n_handled, handled);
    atomic_fetch_add(&c->n_retried, retried);
    atomic_fetch_add(&c->n_dead, dead);
    atomic_fetch_add(&c->n_duplicates, dup);
}

static void nak_all(const rag_queue_transport *t, const rag_queue_policy *p,
                    rag_queue_message *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        t->nak(t->state, &msgs[i],
               rag_backoff_ms(msgs[i].attempts, p->retry_base_ms, p->retry_cap_ms));
}

int rag_consumer_run_once(rag_consumer *c, const rag_queue_transport *t,
                          const rag_queue_policy *p, size_t *processed)
{
    if (processed)
        *processed = 0;
    if (!c || !c->env || !c->handle || !t || !t->fetch || !t->ack || !t->nak || !p)
        return rag_error_set(RAG_EINVAL, "consumer: run_once needs consumer, transport, policy");
    size_t max = p->batch_size ? p->batch_size : 1;
    rag_queue_message *msgs = calloc(max, sizeof *msgs);
    rag_queue_message *done = calloc(max, sizeof *done);
    int *outcome = calloc(max, sizeof *outcome);
    if (!msgs || !done || !outcome) {
        free(msgs);
        free(done);
        free(outcome);
        return rag_error_set(RAG_ENOMEM, "consumer: batch of %zu", max);
    }
    msg_note *notes = NULL;
    size_t n = 0;
    int rc = t->fetch(t->state, c->topic, max, p->lease_ms, msgs, &n);
    if (rc || n == 0)
        goto out;
    /* allocated only for a non-empty batch: idle polls stay cheap */
    notes = calloc(n, sizeof *notes);
    if (!notes) {
        rc = rag_error_set(RAG_ENOMEM, "consumer: notes of a batch of %zu", n);
        nak_all(t, p, msgs, n);
        atomic_fetch_add(&c->n_retried, (uint64_t)n);
        goto out_release;
    }

    MDB_txn *txn;
    int mrc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (mrc) {
        rc = rag_mdb_error(mrc, "consumer: batch txn");
        nak_all(t, p, msgs, n);
        goto out_release;
    }
    if (c->begin_batch)
        rc = c->begin_batch(c->self, txn);
    /* A long batch keeps its leases: past half the lease, the messages not yet handled are
     * reported in progress (transports that can extend a lease: JetStream's InProgress). */
    const int can_progress = t->version >= 2 && t->progress && p->lease_ms;
    uint64_t lease_mark = can_progress ? rag_mono_ms() + p->lease_ms / 2 : 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (can_progress && rag_mono_ms() >= lease_mark) {
            t->progress(t->state, msgs + i, n - i);
            lease_mark = rag_mono_ms() + p->lease_ms / 2;
        }
        rc = process_one(c, txn, p, &msgs[i], &outcome[i], &notes[i]);
    }
    if (!rc) {
        mrc = rag_txn_commit(txn);
        if (mrc)
            rc = rag_mdb_error(mrc, "consumer: batch commit");
    } else {
        mdb_txn_abort(txn);
    }
    if (rc) {
        /* Nothing of this batch was applied: every message comes back after a backoff. */
        char saved[512];
        snprintf(saved, sizeof saved, "%s", rag_error_last());
        if (c->end_batch)
            c->end_batch(c->self, 0);
        nak_all(t, p, msgs, n);
        atomic_fetch_add(&c->n_retried, (uint64_t)n);
        rag_log(RAG_LOG_WARN, c->module, "batch_failed",
                "batch of %zu message(s) of topic %s not applied, retried later: %s (%s)", n,
                c->topic, saved, rag_strerror(rc));
        rag_error_set(rc, "%s", saved);
        goto out_release;
    }
    if (c->end_batch)
        c->end_batch(c->self, 1);
    if (c->outbox) {
        /* Not fatal: the rows are committed and the next relay (ours or another's) moves them.
         * Before the ack: while a message is in flight, either it or the events it produced
         * are always visible to rag_drain's quiet check (outbox, then queues); acking first
         * opened a moment where neither was, and drain could return early. */
        size_t moved;
        relay_note(c, rag_outbox_relay(c->outbox, t, 0, &moved));
        rag_error_clear();
    }
    batch_report(c, p, msgs, outcome, notes, n);
    size_t nd = 0;
    for (size_t i = 0; i < n; i++)
        if (outcome[i] == OUT_ACK || outcome[i] == OUT_DUP ||
            (outcome[i] == OUT_DEAD && !(t->version >= 2 && t->term)))
            done[nd++] = msgs[i];
    /* An ack that fails leaves the leases to expire: the redeliveries hit the inbox. */
    rc = t->ack(t->state, done, nd);
    if (t->version >= 2 && t->term) {
        size_t ndead = 0;
        for (size_t i = 0; i < n; i++)
            if (outcome[i] == OUT_DEAD)
                done[ndead++] = msgs[i];
        int trc = t->term(t->state, done, ndead);
        if (!rc)
            rc = trc;
    }
    for (size_t i = 0; i < n; i++)
        if (outcome[i] == OUT_NAK)
            t->nak(t->state, &msgs[i],
                   rag_backoff_ms(msgs[i].attempts, p->retry_base_ms, p->retry_cap_ms));

out_release:
    if (processed)
        *processed = n;
    if (t->release)
        t->release(t->state, msgs, n);
out:
    free(notes);
    free(msgs);
    free(done);
    free(outcome);
    return rc;
}

/* ---- dead letters ------------------------------------------------------------------------ */

static int decode_dead(const MDB_val *k, const MDB_val *v, rag_dead_letter *dl,
                       const void **payload, size_t *plen)
{
    memset(dl, 0, sizeof *dl);
    if (k->mv_size == 0 || k->mv_size >= sizeof dl->id)
        return rag_error_set(RAG_ECORRUPT, "dead letter: bad id");
    memcpy(dl->id, k->mv_data, k->mv_size);
    rag_rbuf r;
    rag_rbuf_init(&r, v->mv_data, v->mv_size);
    size_t tl, rl;
    const char *topic = rag_rbuf_str(&r, &tl);
    dl->code = rag_rbuf_i32(&r);
    dl->attempts = rag_rbuf_u32(&r);
    dl->when_ms = rag_rbuf_u64(&r);
    const char *reason = rag_rbuf_str(&r, &rl);
    if (r.err || tl >= sizeof dl->topic)
        return rag_error_set(RAG_ECORRUPT, "dead letter %s: malformed row", dl->id);
    memcpy(dl->topic, topic, tl + 1);
    snprintf(dl->reason, sizeof dl->reason, "%s", reason);
    if (payload)
        *payload = (const uint8_t *)r.data + r.off;
    if (plen)
        *plen = r.len - r.off;
    return RAG_OK;
}

/* Open "__dead" and a read txn on it. The table is opened in a write txn (rag_dbi_open):
 * LMDB forbids concurrent mdb_dbi_open calls, and write txns are serialised, so this cannot
 * race another module's opens. */
static int dead_read_begin(MDB_env *env, MDB_dbi *dbi, MDB_txn **txn)
{
    int rc = rag_dbi_open(env, dead_name, 0, dbi);
    if (rc)
        return rc;
    int mrc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
    return mrc ? rag_mdb_error(mrc, "dead letters: read txn") : RAG_OK;
}

int rag_dead_count(MDB_env *env, uint64_t *count)
{
    if (!env || !count)
        return rag_error_set(RAG_EINVAL, "dead_count needs env and count");
    *count = 0;
    MDB_dbi dbi;
    MDB_txn *txn;
    int rc = dead_read_begin(env, &dbi, &txn);
    if (rc)
        return rc;
    MDB_stat st;
    int mrc = mdb_stat(txn, dbi, &st);
    mdb_txn_abort(txn);
    if (mrc)
        return rag_mdb_error(mrc, "dead_count stat");
    *count = st.ms_entries;
    return RAG_OK;
}

int rag_dead_list(MDB_env *env, int (*fn)(void *arg, const rag_dead_letter *dl), void *arg)
{
    if (!env || !fn)
        return rag_error_set(RAG_EINVAL, "dead_list needs env and fn");
    MDB_dbi dbi;
    MDB_txn *txn;
    int rc = dead_read_begin(env, &dbi, &txn);
    if (rc)
        return rc;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, dbi, &cur);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, "dead_list cursor");
    }
    MDB_val k, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == 0) {
        rag_dead_letter dl;
        rc = decode_dead(&k, &v, &dl, &dl.payload, &dl.payload_len);
        if (rc || fn(arg, &dl))
            break;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "dead_list scan");
    return rc;
}

int rag_dead_drop(MDB_env *env, const char *id)
{
    if (!env || !id || !*id)
        return rag_error_set(RAG_EINVAL, "dead_drop needs env and id");
    MDB_dbi dbi;
    int rc = rag_dbi_open(env, dead_name, 0, &dbi);
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "dead_drop txn");
    MDB_val k = {strlen(id), (void *)id};
    mrc = mdb_del(txn, dbi, &k, NULL);
    if (mrc) {
        mdb_txn_abort(txn);
        if (mrc == MDB_NOTFOUND)
            return rag_error_set(RAG_ENOTFOUND, "no dead letter %s", id);
        return rag_mdb_error(mrc, "dead_drop delete");
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "dead_drop commit") : RAG_OK;
}

int rag_dead_retry(rag_outbox *ob, const char *id, char new_id[RAG_QUEUE_MSGID_MAX])
{
    MDB_env *env = rag_queue__outbox_env(ob);
    if (!env || !id || !*id)
        return rag_error_set(RAG_EINVAL, "dead_retry needs an outbox and an id");
    MDB_dbi dbi;
    int rc = rag_dbi_open(env, dead_name, 0, &dbi);
    if (rc)
        return rc;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "dead_retry txn");
    MDB_val k = {strlen(id), (void *)id}, v;
    mrc = mdb_get(txn, dbi, &k, &v);
    if (mrc) {
        mdb_txn_abort(txn);
        if (mrc == MDB_NOTFOUND)
            return rag_error_set(RAG_ENOTFOUND, "no dead letter %s", id);
        return rag_mdb_error(mrc, "dead_retry read");
    }
    rag_dead_letter dl;
    const void *payload;
    size_t plen;
    rc = decode_dead(&k, &v, &dl, &payload, &plen);
    /* Values read in a write txn are only valid until the next update: copy first. */
    void *copy = rc ? NULL : malloc(plen ? plen : 1);
    if (!rc && !copy)
        rc = rag_error_set(RAG_ENOMEM, "dead_retry payload");
    if (!rc) {
        memcpy(copy, payload, plen);
        rc = rag_outbox_add(ob, txn, dl.topic, copy, plen, new_id);
    }
    if (!rc) {
        mrc = mdb_del(txn, dbi, &k, NULL);
        if (mrc)
            rc = rag_mdb_error(mrc, "dead_retry delete");
    }
    free(copy);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    mrc = rag_txn_commit(txn);
    return mrc ? rag_mdb_error(mrc, "dead_retry commit") : RAG_OK;
}
