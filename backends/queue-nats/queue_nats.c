/*
 * The NATS JetStream queue transport (ragcore/transports.h, rag_queue_nats_new()).
 *
 * Layout on the broker, per ragcore topic T (e.g. "doc.chunked") and prefix P (e.g. "RAG"):
 *   stream    P_T'         (T' = T upper-cased, '.' -> '_': "RAG_DOC_CHUNKED")
 *             subject "P.T", WorkQueue retention (a message lives until one consumer acks it),
 *             file storage (memory when asked), duplicate window = duplicate_window_ms
 *   consumer  P_T'_W       durable pull consumer, explicit acks, AckWait = ack_wait_ms,
 *             MaxDeliver = max_deliver.  Every process consuming T binds to this one durable,
 *             so they split the work instead of each getting a copy.
 * Both are created lazily, the first time this process touches T, and again after every
 * reconnect (cheap and idempotent: js_AddStream/js_AddConsumer accept an identical config),
 * so that a broker that lost its state (memory storage, a fresh node) gets them back.
 *
 * Why each slot does what it does:
 *   publish   Async publishes with Nats-Msg-Id = the outbox id, then wait for every PubAck
 *             (a duplicate PubAck counts: the broker holds the message already).  Only then
 *             does the relay delete its outbox rows; on any failure the rows stay and the next
 *             relay re-publishes the same ids, which the broker drops within its duplicate
 *             window and the consumers' inboxes drop beyond it.  A pool of JetStream contexts
 *             gives each concurrent publish call its own pending-ack set and error count.
 *   fetch     A pull request {"batch": max, "no_wait": true} on the JetStream API, answered
 *             at once: the ready messages (due redeliveries included), or "404 No Messages".
 *             nats.c's own fetch cannot send a no-wait pull without an expiry, and nats-server
 *             2.9 holds a no-wait pull that has one until it expires, so an empty fetch would
 *             cost the expiry; hence the pull protocol is spoken here, on a plain subscription
 *             to a per-topic inbox.  The payload is not copied: data points into the natsMsg,
 *             whose pointer is the handle.
 *   ack       "+ACK" on the delivery's reply subject.  The server processes the acks of one
 *             consumer in order, so all but the last are published and the last is a request
 *             (AckSync): its confirmation covers the batch, one round trip per batch.
 *   nak       "-NAK {"delay": ns}" (the consumer's capped full-jitter backoff).
 *   term      "+TERM", progress "+WPI" (InProgress: AckWait starts again), both confirmed like
 *             ack.  release: natsMsg_Destroy.
 *   depth     The consumer's info: ready = NumPending (not yet delivered), inflight =
 *             NumAckPending (delivered, not acked; messages nak'ed with a delay are among
 *             them: JetStream does not report them apart, so delayed is 0).
 *   wait      A long poll: a pull of one message with the wait's timeout (at most
 *             WAIT_POLL_MAX_MS per request).  A message that arrives is kept in a per-topic
 *             prefetch slot that the next fetch returns first (it is delivered, so its AckWait
 *             runs).  wake_all posts a token into every topic's inbox, which ends the poll.
 * While the connection is down every slot that needs the broker fails with RAG_ETRANSIENT at
 * once (no request is queued into the client's reconnect buffer and left to time out), and
 * the client reconnects in the background, forever, with the jittered, doubling delay.
 *
 * The library is never closed (nats_Close() is process-global and other handles, or the
 * host, may still use nats.c); free() closes this transport's connection only.
 *
 * Thread-safety: every slot may be called concurrently.  `mu` guards the topic list and the
 * publish-context pool; per topic, `setup_mu` guards stream/consumer creation and `fetch_mu`
 * the inbox subscription and its prefetch slot.  Lock order: fetch_mu before setup_mu; `mu`
 * is never held while another lock is taken.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

#include <nats/nats.h>

#include "ragcore/transports.h"
#include "rag_common.h"

#define PREFIX_MAX 32
#define NAME_MAX_LEN (PREFIX_MAX + RAG_QUEUE_TOPIC_MAX + 8)
#define MSGID_HEADER "Nats-Msg-Id"
/* wait(): longest long-poll request, and how long past its expiry we wait for the server's
 * answer; while the broker is unreachable it sleeps in slices and checks for wake_all(). */
#define WAIT_POLL_MAX_MS 1000
#define WAIT_GRACE_MS 500
#define WAIT_SLICE_MS 50
#define PREFETCH_MAX 16
/* Largest pull batch we ask for (the consumer's batch is far below). */
#define FETCH_BATCH_MAX 4096
#define MAX_ACK_PENDING 65536
/* How long free() waits for the library to report the connection closed. */
#define CLOSE_WAIT_MS 5000

/* ---- connection events (shared with nats.c's callback thread) ----------------------------- */

/* Allocated apart from the transport because nats.c calls the connection handlers on its own
 * thread, possibly after natsConnection_Destroy() returned: free() waits for `closed` (the
 * last callback of a connection) before releasing it. */
typedef struct conn_events {
    atomic_uint reconnect_gen; /* bumped on every reconnect: topics are re-created lazily */
    atomic_uint disconnects;
    atomic_uint async_errors;
    atomic_uint jitter_seed;
    unsigned int reconnect_base_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closed; /* under mu */
} conn_events;

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    atomic_fetch_add(&((conn_events *)closure)->disconnects, 1u);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    atomic_fetch_add(&((conn_events *)closure)->reconnect_gen, 1u);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    conn_events *ev = closure;
    pthread_mutex_lock(&ev->mu);
    ev->closed = 1;
    pthread_cond_broadcast(&ev->cv);
    pthread_mutex_unlock(&ev->mu);
}

/* Asynchronous errors (e.g. a slow consumer): counted, never printed. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
                           void *closure)
{
    (void)nc;
    (void)sub;
    (void)err;
    atomic_fetch_add(&((conn_events *)closure)->async_errors, 1u);
}

/* Delay before the next pass over the server list: base doubled per failed pass up to 8x,
 * then jittered to [d/2, d] so that many clients of a restarted broker spread out. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    conn_events *ev = closure;
    uint64_t d = ev->reconnect_base_ms;
    int shift = attempts > 1 ? attempts - 1 : 0;
    if (shift > 3)
        shift = 3;
    d <<= shift;
    /* xorshift on a shared seed: a lost update only repeats a jitter value */
    unsigned int x = atomic_load(&ev->jitter_seed);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    atomic_store(&ev->jitter_seed, x);
    uint64_t half = d / 2;
    return (int64_t)(half + (half ? x % (half + 1) : 0));
}

/* ---- state -------------------------------------------------------------------------------- */

typedef struct topic_ent {
    char topic[RAG_QUEUE_TOPIC_MAX];
    char stream[NAME_MAX_LEN];
    char subject[NAME_MAX_LEN];
    char durable[NAME_MAX_LEN];
    pthread_mutex_t setup_mu;
    int ensured;               /* under setup_mu: stream and consumer exist ... */
    unsigned int ensured_gen;  /* ... as of this reconnect generation */
    char next_subject[NAME_MAX_LEN * 2 + 32]; /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> */
    pthread_mutex_t fetch_mu;
    natsSubscription *sub;     /* under fetch_mu: receives on "<inbox>.*" */
    char inbox[64];            /* set once before inbox_ready */
    atomic_int inbox_ready;
    uint64_t req_seq;          /* under fetch_mu: names pull requests "<inbox>.<seq>" */
    natsMsg *pre[PREFETCH_MAX]; /* under fetch_mu: delivered by wait(), returned by fetch() */
    size_t n_pre;
    struct topic_ent *next;
} topic_ent;

/* One JetStream context per concurrent publish call: its pending-ack set and its error
 * handler's counters belong to that call alone. */
typedef struct pub_ctx {
    jsCtx *js;
    atomic_int errors;
    atomic_int no_responders;
    atomic_int first_claimed;
    char first_error[160];
    struct pub_ctx *next_all, *next_free;
} pub_ctx;

typedef struct nats_tp {
    natsConnection *conn;
    jsCtx *js; /* management and info requests (thread-safe in nats.c) */
    conn_events *ev;
    pthread_mutex_t mu;
    topic_ent *topics;
    pub_ctx *pub_all, *pub_free;
    atomic_uint wake_gen;
    char prefix[PREFIX_MAX];
    unsigned int connect_timeout_ms, publish_timeout_ms, ack_wait_ms, max_deliver;
    unsigned int duplicate_window_ms;
    int memory_storage;
} nats_tp;

/* ---- helpers ------------------------------------------------------------------------------ */

static void sleep_ms(unsigned int ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static const char *conn_status_name(natsConnStatus st)
{
    switch (st) {
    case NATS_CONN_STATUS_DISCONNECTED: return "disconnected";
    case NATS_CONN_STATUS_CONNECTING: return "connecting";
    case NATS_CONN_STATUS_CONNECTED: return "connected";
    case NATS_CONN_STATUS_CLOSED: return "closed";
    case NATS_CONN_STATUS_RECONNECTING: return "reconnecting";
    default: return "draining";
    }
}

/* RAG_ETRANSIENT unless connected: while nats.c reconnects it would buffer requests and let
 * them time out; failing at once lets the caller keep its outbox rows / leases and move on. */
static int require_connected(nats_tp *t, const char *what)
{
    natsConnStatus st = natsConnection_Status(t->conn);
    if (st == NATS_CONN_STATUS_CONNECTED)
        return RAG_OK;
    return rag_error_set(RAG_ETRANSIENT, "nats: %s: broker unreachable (connection %s)", what,
                         conn_status_name(st));
}

/* Status of a nats.c call as a ragcore error (RAG_ETRANSIENT: the broker may recover). */
static int nats_fail(natsStatus s, jsErrCode jerr, const char *what, const char *name)
{
    const char *detail = nats_GetLastError(NULL);
    if (jerr)
        return rag_error_set(RAG_ETRANSIENT, "nats: %s %s: %s (JetStream error %d)%s%s", what,
                             name ? name : "", natsStatus_GetText(s), (int)jerr,
                             detail && *detail ? ": " : "", detail ? detail : "");
    return rag_error_set(RAG_ETRANSIENT, "nats: %s %s: %s%s%s", what, name ? name : "",
                         natsStatus_GetText(s), detail && *detail ? ": " : "",
                         detail ? detail : "");
}

/* Topics become subject tokens and stream names: letters, digits, '_', '-' and single dots
 * between tokens. */
static int check_topic(const char *topic)
{
    if (!topic || !*topic || strnlen(topic, RAG_QUEUE_TOPIC_MAX) >= RAG_QUEUE_TOPIC_MAX)
        return rag_error_set(RAG_EINVAL, "nats: topic missing or longer than %d bytes",
                             RAG_QUEUE_TOPIC_MAX - 1);
    size_t n = strlen(topic);
    if (topic[0] == '.' || topic[n - 1] == '.')
        return rag_error_set(RAG_EINVAL, "nats: topic '%s' starts or ends with '.'", topic);
    for (size_t i = 0; i < n; i++) {
        char c = topic[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || (c == '.' && topic[i + 1] != '.');
        if (!ok)
            return rag_error_set(RAG_EINVAL, "nats: topic '%s' has a character not allowed in "
                                 "a subject token or stream name", topic);
    }
    return RAG_OK;
}

static int check_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n >= PREFIX_MAX)
        return rag_error_set(RAG_EINVAL, "nats: prefix must have 1..%d characters",
                             PREFIX_MAX - 1);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return rag_error_set(RAG_EINVAL, "nats: prefix '%s' may hold only letters, digits, "
                                 "'_' and '-'", p);
    }
    return RAG_OK;
}

/* Find or create the entry of `topic` (entries live until free()). */
static int topic_get(nats_tp *t, const char *topic, topic_ent **out)
{
    int rc = check_topic(topic);
    if (rc)
        return rc;
    pthread_mutex_lock(&t->mu);
    for (topic_ent *e = t->topics; e; e = e->next) {
        if (strcmp(e->topic, topic) == 0) {
            pthread_mutex_unlock(&t->mu);
            *out = e;
            return RAG_OK;
        }
    }
    topic_ent *e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&t->mu);
        return rag_error_set(RAG_ENOMEM, "nats: topic entry");
    }
    snprintf(e->topic, sizeof e->topic, "%s", topic);
    char upper[RAG_QUEUE_TOPIC_MAX];
    size_t i = 0;
    for (; topic[i]; i++) {
        char c = topic[i];
        upper[i] = c == '.' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    upper[i] = 0;
    snprintf(e->stream, sizeof e->stream, "%s_%s", t->prefix, upper);
    snprintf(e->subject, sizeof e->subject, "%s.%s", t->prefix, topic);
    snprintf(e->durable, sizeof e->durable, "%s_%s_W", t->prefix, upper);
    snprintf(e->next_subject, sizeof e->next_subject, "$JS.API.CONSUMER.MSG.NEXT.%s.%s",
             e->stream, e->durable);
    pthread_mutex_init(&e->setup_mu, NULL);
    pthread_mutex_init(&e->fetch_mu, NULL);
    e->next = t->topics;
    t->topics = e;
    pthread_mutex_unlock(&t->mu);
    *out = e;
    return RAG_OK;
}

/* After a failure that may mean the stream or consumer is gone: re-create on next use. */
static void topic_forget(topic_ent *e)
{
    pthread_mutex_lock(&e->setup_mu);
    e->ensured = 0;
    pthread_mutex_unlock(&e->setup_mu);
}

static int stream_compatible(const jsStreamInfo *si, const topic_ent *e, char *why, size_t len)
{
    if (!si || !si->Config) {
        snprintf(why, len, "no configuration returned");
        return 0;
    }
    if (si->Config->Retention != js_WorkQueuePolicy) {
        snprintf(why, len, "retention is not WorkQueue");
        return 0;
    }
    for (int i = 0; i < si->Config->SubjectsLen; i++)
        if (si->Config->Subjects[i] && strcmp(si->Config->Subjects[i], e->subject) == 0)
            return 1;
    snprintf(why, len, "its subjects do not include %s", e->subject);
    return 0;
}

/* Make sure the topic's stream and durable consumer exist (once per reconnect generation). */
static int topic_ensure(nats_tp *t, topic_ent *e)
{
    unsigned int gen = atomic_load(&t->ev->reconnect_gen);
    pthread_mutex_lock(&e->setup_mu);
    if (e->ensured && e->ensured_gen == gen) {
        pthread_mutex_unlock(&e->setup_mu);
        return RAG_OK;
    }
    int rc = require_connected(t, "create stream");
    if (rc) {
        pthread_mutex_unlock(&e->setup_mu);
        return rc;
    }

    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {e->subject};
    sc.Name = e->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_WorkQueuePolicy;
    sc.Storage = t->memory_storage ? js_MemoryStorage : js_FileStorage;
    sc.Duplicates = (int64_t)t->duplicate_window_ms * 1000000; /* ns */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, t->js, &sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    si = NULL;
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
        /* Exists with another configuration (another duplicate window, storage, or made by
         * an operator): use it if it still is a work queue on our subject. */
        jerr = 0;
        s = js_GetStreamInfo(&si, t->js, e->stream, NULL, &jerr);
        if (s == NATS_OK) {
            char why[128];
            int ok = stream_compatible(si, e, why, sizeof why);
            jsStreamInfo_Destroy(si);
            if (!ok) {
                pthread_mutex_unlock(&e->setup_mu);
                return rag_error_set(RAG_EINVAL, "nats: stream %s exists and is not usable: %s "
                                     "(delete it or choose another prefix)", e->stream, why);
            }
        }
    }
    if (s != NATS_OK) {
        rc = nats_fail(s, jerr, "create stream", e->stream);
        pthread_mutex_unlock(&e->setup_mu);
        return rc;
    }

    /* Creating a durable that exists updates its configuration (nats-server 2.9): the process
     * that started last decides AckWait and MaxDeliver, so keep them equal everywhere. */
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = e->durable;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckWait = (int64_t)t->ack_wait_ms * 1000000; /* ns */
    cc.MaxDeliver = (int64_t)t->max_deliver;
    cc.MaxAckPending = MAX_ACK_PENDING;
    jsConsumerInfo *ci = NULL;
    jerr = 0;
    s = js_AddConsumer(&ci, t->js, e->stream, &cc, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        rc = nats_fail(s, jerr, "create consumer", e->durable);
        pthread_mutex_unlock(&e->setup_mu);
        return rc;
    }
    e->ensured = 1;
    e->ensured_gen = gen;
    pthread_mutex_unlock(&e->setup_mu);
    return RAG_OK;
}

/* The topic's private inbox: pull requests ask for deliveries to "<inbox>.<request>", and
 * one synchronous subscription on "<inbox>.*" receives them.  Caller holds e->fetch_mu. */
static int topic_subscribe(nats_tp *t, topic_ent *e)
{
    int rc = topic_ensure(t, e);
    if (rc || e->sub)
        return rc;
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s == NATS_OK) {
        snprintf(e->inbox, sizeof e->inbox, "%s", (const char *)inbox);
        natsInbox_Destroy(inbox);
        char wild[sizeof e->inbox + 4];
        snprintf(wild, sizeof wild, "%s.*", e->inbox);
        s = natsConnection_SubscribeSync(&e->sub, t->conn, wild);
    }
    if (s != NATS_OK) {
        e->sub = NULL;
        return nats_fail(s, 0, "subscribe to the delivery inbox of", e->durable);
    }
    atomic_store(&e->inbox_ready, 1); /* wake_all may post to it from now on */
    return RAG_OK;
}

/* A JetStream delivery: its reply subject is the ack subject. */
static int is_delivery(natsMsg *m)
{
    const char *r = natsMsg_GetReply(m);
    return r && strncmp(r, "$JS.ACK.", 8) == 0;
}

/*
 * One pull request for up to `batch` messages, collected into got[] (capacity `batch`).
 * expires_ms 0: a no-wait pull, answered at once (404: nothing ready; 408 after a partial
 * batch); otherwise a long poll that the server ends after expires_ms (408) or at the first
 * delivery (batch 1).  Deliveries queued by earlier requests (whose caller stopped waiting)
 * are taken first.  The wait ends early on a wake token (wake_all) when `wake_gen0` is set
 * and the generation moved.  Caller holds e->fetch_mu and has subscribed.
 */
static int pull(nats_tp *t, topic_ent *e, size_t batch, uint32_t expires_ms,
                uint32_t client_wait_ms, natsMsg **got, size_t *n_got,
                const unsigned int *wake_gen0)
{
    size_t n = 0;
    *n_got = 0;
    int queued = 0;
    if (natsSubscription_GetPending(e->sub, &queued, NULL) != NATS_OK)
        queued = 0;
    while (queued-- > 0 && n < batch) {
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, e->sub, 0) != NATS_OK)
            break;
        if (is_delivery(m))
            got[n++] = m;
        else
            natsMsg_Destroy(m); /* a stale status or wake token */
    }
    if (n == batch) {
        *n_got = n;
        return RAG_OK;
    }

    char reply[sizeof e->inbox + 24];
    snprintf(reply, sizeof reply, "%s.%llu", e->inbox, (unsigned long long)++e->req_seq);
    char body[96];
    if (expires_ms)
        snprintf(body, sizeof body, "{\"batch\":%zu,\"expires\":%llu}", batch - n,
                 (unsigned long long)expires_ms * 1000000ULL);
    else
        snprintf(body, sizeof body, "{\"batch\":%zu,\"no_wait\":true}", batch - n);
    natsStatus s = natsConnection_PublishRequest(t->conn, e->next_subject, reply, body,
                                                 (int)strlen(body));
    int rc = RAG_OK;
    if (s != NATS_OK) {
        *n_got = n;
        return nats_fail(s, 0, "pull request to", e->durable);
    }
    uint64_t deadline = rag_mono_ms() + client_wait_ms;
    while (n < batch) {
        uint64_t now = rag_mono_ms();
        if (now >= deadline)
            break; /* what still comes is taken by the next pull */
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, e->sub, (int64_t)(deadline - now));
        if (s == NATS_TIMEOUT)
            break;
        if (s == NATS_NO_RESPONDERS) { /* no consumer behind the API subject */
            topic_forget(e);
            rc = rag_error_set(RAG_ETRANSIENT, "nats: pull from %s: no responders (stream or "
                               "consumer missing; re-created on the next call)", e->durable);
            break;
        }
        if (s != NATS_OK) {
            rc = nats_fail(s, 0, "pull from", e->durable);
            break;
        }
        if (is_delivery(m)) {
            got[n++] = m;
            continue;
        }
        const char *status = NULL;
        int mine = strcmp(natsMsg_GetSubject(m), reply) == 0;
        if (natsMsgHeader_Get(m, "Status", &status) != NATS_OK)
            status = NULL;
        if (!status) {
            /* wake token from wake_all() */
            natsMsg_Destroy(m);
            if (wake_gen0 && atomic_load(&t->wake_gen) != *wake_gen0)
                break;
            continue;
        }
        int code = atoi(status);
        natsMsg_Destroy(m);
        if (!mine || code == 100)
            continue; /* an earlier request's end, or a heartbeat */
        if (code == 409)
            topic_forget(e); /* e.g. the consumer was deleted or changed: re-create */
        break; /* 404 no messages, 408 expired or partial batch done, 409 ... */
    }
    *n_got = n;
    return n > 0 ? RAG_OK : rc;
}

static void fill_message(rag_queue_message *m, const topic_ent *e, natsMsg *msg)
{
    memset(m, 0, sizeof *m);
    snprintf(m->topic, sizeof m->topic, "%s", e->topic);
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) != NATS_OK)
        meta = NULL;
    const char *id = NULL;
    if (natsMsgHeader_Get(msg, MSGID_HEADER, &id) == NATS_OK && id && *id &&
        strlen(id) < sizeof m->id) {
        memcpy(m->id, id, strlen(id) + 1);
    } else {
        /* Published by something else than ragcore: the stream sequence is unique too. */
        snprintf(m->id, sizeof m->id, "%.40s-%llu", e->stream,
                 meta ? (unsigned long long)meta->Sequence.Stream : 0ULL);
    }
    m->attempts = meta && meta->NumDelivered > 0
                      ? (meta->NumDelivered > UINT32_MAX ? UINT32_MAX
                                                         : (uint32_t)meta->NumDelivered)
                      : 1u;
    jsMsgMetaData_Destroy(meta);
    m->data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    m->size = len > 0 ? (size_t)len : 0;
    m->handle = (uint64_t)(uintptr_t)msg;
}

static natsMsg *msg_of(const rag_queue_message *m)
{
    return (natsMsg *)(uintptr_t)m->handle;
}

/* ---- publish ------------------------------------------------------------------------------ */

static void pub_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    pub_ctx *pc = closure;
    atomic_fetch_add(&pc->errors, 1);
    if (pae->Err == NATS_NO_RESPONDERS)
        atomic_store(&pc->no_responders, 1);
    if (atomic_exchange(&pc->first_claimed, 1) == 0)
        snprintf(pc->first_error, sizeof pc->first_error, "%s (JetStream error %d)",
                 pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), (int)pae->ErrCode);
    /* the library destroys pae->Msg after we return */
}

static void pub_reset(pub_ctx *pc)
{
    atomic_store(&pc->errors, 0);
    atomic_store(&pc->no_responders, 0);
    atomic_store(&pc->first_claimed, 0);
    pc->first_error[0] = 0;
}

/* A publish context for this call alone, its counters reset. */
static int pub_take(nats_tp *t, pub_ctx **out)
{
    pthread_mutex_lock(&t->mu);
    pub_ctx *pc = t->pub_free;
    if (pc) {
        t->pub_free = pc->next_free;
        pthread_mutex_unlock(&t->mu);
        pub_reset(pc);
        *out = pc;
        return RAG_OK;
    }
    pthread_mutex_unlock(&t->mu);
    pc = calloc(1, sizeof *pc);
    if (!pc)
        return rag_error_set(RAG_ENOMEM, "nats: publish context");
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = t->publish_timeout_ms;
    /* The relay bounds a batch (512 rows, 8 MiB); never stall inside one. */
    jo.PublishAsync.MaxPending = 1 << 20;
    jo.PublishAsync.StallWait = t->publish_timeout_ms;
    jo.PublishAsync.ErrHandler = pub_error;
    jo.PublishAsync.ErrHandlerClosure = pc;
    natsStatus s = natsConnection_JetStream(&pc->js, t->conn, &jo);
    if (s != NATS_OK) {
        free(pc);
        return nats_fail(s, 0, "JetStream context", NULL);
    }
    pthread_mutex_lock(&t->mu);
    pc->next_all = t->pub_all;
    t->pub_all = pc;
    pthread_mutex_unlock(&t->mu);
    *out = pc;
    return RAG_OK;
}

static void pub_put(nats_tp *t, pub_ctx *pc)
{
    pthread_mutex_lock(&t->mu);
    pc->next_free = t->pub_free;
    t->pub_free = pc;
    pthread_mutex_unlock(&t->mu);
}

static int nt_publish(void *state, const rag_queue_message *msgs, size_t n)
{
    nats_tp *t = state;
    if (n == 0)
        return RAG_OK;
    if (!msgs)
        return rag_error_set(RAG_EINVAL, "nats: publish of NULL messages");
    int64_t max_payload = natsConnection_GetMaxPayload(t->conn);
    for (size_t i = 0; i < n; i++) {
        int rc = check_topic(msgs[i].topic);
        if (rc)
            return rc;
        if (!msgs[i].id[0] || strnlen(msgs[i].id, RAG_QUEUE_MSGID_MAX) >= RAG_QUEUE_MSGID_MAX)
            return rag_error_set(RAG_EINVAL, "nats: message id missing or longer than %d bytes",
                                 RAG_QUEUE_MSGID_MAX - 1);
        if (msgs[i].size && !msgs[i].data)
            return rag_error_set(RAG_EINVAL, "nats: message %s has no data", msgs[i].id);
        /* Retrying cannot help a message the broker refuses by size: say so instead of
         * failing transiently forever. */
        if (msgs[i].size > (size_t)INT32_MAX ||
            (max_payload > 0 && (int64_t)msgs[i].size + 256 > max_payload))
            return rag_error_set(RAG_ETOOBIG, "nats: message %s of %zu bytes exceeds the "
                                 "broker's max_payload (%lld bytes): raise max_payload in the "
                                 "nats-server configuration", msgs[i].id, msgs[i].size,
                                 (long long)max_payload);
    }
    int rc = require_connected(t, "publish");
    if (rc)
        return rc;

    topic_ent **ents = malloc(n * sizeof *ents);
    if (!ents)
        return rag_error_set(RAG_ENOMEM, "nats: publish of %zu messages", n);
    for (size_t i = 0; i < n && !rc; i++) {
        if (i > 0 && strcmp(msgs[i].topic, msgs[i - 1].topic) == 0) {
            ents[i] = ents[i - 1];
            continue;
        }
        rc = topic_get(t, msgs[i].topic, &ents[i]);
        if (!rc)
            rc = topic_ensure(t, ents[i]);
    }
    pub_ctx *pc = NULL;
    if (!rc)
        rc = pub_take(t, &pc);
    if (rc) {
        free(ents);
        return rc;
    }
    natsStatus s = NATS_OK;
    size_t sent = 0;
    for (; sent < n; sent++) {
        natsMsg *m = NULL;
        s = natsMsg_Create(&m, ents[sent]->subject, NULL, (const char *)msgs[sent].data,
                           (int)msgs[sent].size);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, MSGID_HEADER, msgs[sent].id);
        if (s == NATS_OK)
            s = js_PublishMsgAsync(pc->js, &m, NULL);
        natsMsg_Destroy(m); /* NULL (a no-op) once the library took it */
        if (s != NATS_OK)
            break;
    }
    if (s != NATS_OK)
        rc = nats_fail(s, 0, "publish", msgs[sent].id);

    /* Wait for the PubAcks of what was sent, in slices: a connection lost meanwhile ends the
     * wait at once (the acks, if any, come after the reconnect; the outbox retries). */
    uint64_t deadline = rag_mono_ms() + t->publish_timeout_ms;
    int complete = 0;
    for (;;) {
        uint64_t now = rag_mono_ms();
        uint64_t left = deadline > now ? deadline - now : 0;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = (int64_t)(left < 100 ? (left ? left : 1) : 100);
        natsStatus cs = js_PublishAsyncComplete(pc->js, &po);
        if (cs == NATS_OK) {
            complete = 1;
            break;
        }
        if (cs != NATS_TIMEOUT) {
            if (!rc)
                rc = nats_fail(cs, 0, "publish: waiting for acknowledgements", NULL);
            break;
        }
        if (natsConnection_Status(t->conn) != NATS_CONN_STATUS_CONNECTED) {
            if (!rc)
                rc = rag_error_set(RAG_ETRANSIENT, "nats: publish: connection lost before "
                                   "every message was acknowledged");
            break;
        }
        if (rag_mono_ms() >= deadline) {
            if (!rc)
                rc = rag_error_set(RAG_ETRANSIENT, "nats: publish: no acknowledgement within "
                                   "%u ms", t->publish_timeout_ms);
            break;
        }
    }
    if (!complete) {
        /* Take the unacknowledged messages back so that the context starts clean; a late
         * PubAck for one of them is then ignored by the library. */
        natsMsgList pending;
        memset(&pending, 0, sizeof pending);
        if (js_PublishAsyncGetPendingList(&pending, pc->js) == NATS_OK)
            natsMsgList_Destroy(&pending);
    }
    int errors = atomic_load(&pc->errors);
    if (!rc && errors)
        rc = rag_error_set(RAG_ETRANSIENT, "nats: publish: %d of %zu messages refused: %s",
                           errors, n, pc->first_error[0] ? pc->first_error : "error");
    if (atomic_load(&pc->no_responders)) {
        /* Nothing listens on the subject: the stream is gone (e.g. a broker restarted with
         * memory storage).  Re-create it on the next attempt. */
        for (size_t i = 0; i < n; i++)
            if (i == 0 || ents[i] != ents[i - 1])
                topic_forget(ents[i]);
    }
    pub_put(t, pc);
    free(ents);
    return rc;
}

/* ---- fetch / wait ------------------------------------------------------------------------- */

static int nt_fetch(void *state, const char *topic, size_t max, uint32_t lease_ms,
                    rag_queue_message *out, size_t *n_out)
{
    nats_tp *t = state;
    (void)lease_ms; /* the lease is the consumer's AckWait */
    if (n_out)
        *n_out = 0;
    if (!out || !n_out)
        return rag_error_set(RAG_EINVAL, "nats: fetch needs out and n_out");
    topic_ent *e;
    int rc = topic_get(t, topic, &e);
    if (rc || max == 0)
        return rc;

    pthread_mutex_lock(&e->fetch_mu);
    size_t n = 0;
    while (n < max && e->n_pre > 0) {
        fill_message(&out[n++], e, e->pre[0]);
        memmove(e->pre, e->pre + 1, (e->n_pre - 1) * sizeof e->pre[0]);
        e->n_pre--;
    }
    if (n < max) {
        rc = require_connected(t, "fetch");
        if (!rc)
            rc = topic_subscribe(t, e);
        size_t want = max - n, got = 0;
        if (want > FETCH_BATCH_MAX)
            want = FETCH_BATCH_MAX;
        natsMsg **msgs = rc ? NULL : malloc(want * sizeof *msgs);
        if (!rc && !msgs)
            rc = rag_error_set(RAG_ENOMEM, "nats: fetch of %zu messages", want);
        if (!rc)
            rc = pull(t, e, want, 0, t->connect_timeout_ms, msgs, &got, NULL);
        for (size_t i = 0; i < got; i++)
            fill_message(&out[n++], e, msgs[i]);
        free(msgs);
        if (rc && n > 0)
            rc = RAG_OK; /* deliver what arrived; a persistent error comes back next time */
    }
    pthread_mutex_unlock(&e->fetch_mu);
    *n_out = n;
    return rc;
}

static int nt_wait(void *state, const char *topic, uint32_t timeout_ms)
{
    nats_tp *t = state;
    topic_ent *e;
    int rc = topic_get(t, topic, &e);
    if (rc)
        return rc;
    unsigned int w0 = atomic_load(&t->wake_gen);
    uint64_t deadline = rag_mono_ms() + timeout_ms;
    pthread_mutex_lock(&e->fetch_mu);
    while (e->n_pre == 0 && atomic_load(&t->wake_gen) == w0) {
        uint64_t now = rag_mono_ms();
        if (now >= deadline)
            break;
        uint64_t left = deadline - now;
        rc = require_connected(t, "wait");
        if (!rc)
            rc = topic_subscribe(t, e);
        if (!rc) {
            /* A long poll for one message: enough to know the topic has work, and a batch
             * would make the server hold it until the batch filled.  The request is bounded
             * so that one left behind by a waiter that stopped (wake_all, shutdown) expires
             * soon at the server. */
            uint32_t poll = (uint32_t)(left > WAIT_POLL_MAX_MS ? WAIT_POLL_MAX_MS : left);
            size_t got = 0;
            rc = pull(t, e, 1, poll, poll + WAIT_GRACE_MS, &e->pre[e->n_pre], &got, &w0);
            e->n_pre += got;
            if (got || !rc)
                continue; /* delivered, expired (poll again), or woken */
        }
        /* Broker unreachable or the pull failed: do not spin, let others fetch meanwhile;
         * the generation is checked every slice. */
        pthread_mutex_unlock(&e->fetch_mu);
        sleep_ms((unsigned int)(left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS));
        pthread_mutex_lock(&e->fetch_mu);
    }
    pthread_mutex_unlock(&e->fetch_mu);
    return rc;
}

/* Bump the generation and post a wake token into the inbox of every topic, which ends a
 * waiter's long poll at once. */
static void nt_wake_all(void *state)
{
    nats_tp *t = state;
    atomic_fetch_add(&t->wake_gen, 1u);
    if (natsConnection_Status(t->conn) != NATS_CONN_STATUS_CONNECTED)
        return; /* waiters sleep in slices and see the generation */
    pthread_mutex_lock(&t->mu);
    for (topic_ent *e = t->topics; e; e = e->next) {
        if (!atomic_load(&e->inbox_ready))
            continue;
        char subj[sizeof e->inbox + 8];
        snprintf(subj, sizeof subj, "%s.wake", e->inbox);
        natsConnection_Publish(t->conn, subj, "", 0);
    }
    pthread_mutex_unlock(&t->mu);
}

/* ---- acknowledgements --------------------------------------------------------------------- */

/* Deliveries are acknowledged with the JetStream ack protocol on their reply subject
 * ("+ACK", "-NAK", "+TERM", "+WPI"); a request instead of a publish makes the server confirm
 * it after processing ("AckSync"). */

/* "$JS.ACK.<stream>.<consumer>." prefix length of an ack subject, 0 if not one. */
static size_t ack_prefix_len(const char *reply)
{
    if (!reply || strncmp(reply, "$JS.ACK.", 8) != 0)
        return 0;
    const char *p = reply + 8;
    for (int dots = 0; *p; p++)
        if (*p == '.' && ++dots == 2)
            return (size_t)(p - reply) + 1;
    return 0;
}

/* Send `verb` for each message.  The server processes the acks of one consumer in order, so
 * only the last message of each consumer is sent as a request, whose confirmation covers the
 * ones before it: one round trip per batch instead of one per message. */
static int ack_protocol(nats_tp *t, const rag_queue_message *msgs, size_t n, const char *verb,
                        const char *what)
{
    if (n == 0)
        return RAG_OK;
    if (!msgs)
        return rag_error_set(RAG_EINVAL, "nats: %s of NULL messages", what);
    for (size_t i = 0; i < n; i++)
        if (!msg_of(&msgs[i]) || !ack_prefix_len(natsMsg_GetReply(msg_of(&msgs[i]))))
            return rag_error_set(RAG_EINVAL, "nats: %s of message %s without a delivery", what,
                                 msgs[i].id);
    int rc = require_connected(t, what);
    if (rc)
        return rc;
    int len = (int)strlen(verb);
    for (size_t i = 0; i < n; i++) {
        const char *reply = natsMsg_GetReply(msg_of(&msgs[i]));
        size_t plen = ack_prefix_len(reply);
        int confirm = 1;
        for (size_t j = i + 1; j < n && confirm; j++)
            confirm = strncmp(natsMsg_GetReply(msg_of(&msgs[j])), reply, plen) != 0;
        natsStatus s;
        if (confirm) {
            natsMsg *resp = NULL;
            s = natsConnection_Request(&resp, t->conn, reply, verb, len,
                                       (int64_t)t->publish_timeout_ms);
            natsMsg_Destroy(resp);
        } else {
            s = natsConnection_Publish(t->conn, reply, verb, len);
        }
        if (s != NATS_OK && !rc)
            rc = nats_fail(s, 0, what, msgs[i].id);
    }
    return rc;
}

static int nt_ack(void *state, const rag_queue_message *msgs, size_t n)
{
    return ack_protocol(state, msgs, n, "+ACK", "ack");
}

static int nt_nak(void *state, const rag_queue_message *msg, uint32_t delay_ms)
{
    nats_tp *t = state;
    if (!msg || !msg_of(msg) || !ack_prefix_len(natsMsg_GetReply(msg_of(msg))))
        return rag_error_set(RAG_EINVAL, "nats: nak of a message without a delivery");
    int rc = require_connected(t, "nak");
    if (rc)
        return rc;
    char verb[64] = "-NAK";
    if (delay_ms)
        snprintf(verb, sizeof verb, "-NAK {\"delay\":%llu}",
                 (unsigned long long)delay_ms * 1000000ULL);
    /* Not confirmed: a lost nak only means the message comes back after AckWait. */
    natsStatus s = natsConnection_Publish(t->conn, natsMsg_GetReply(msg_of(msg)), verb,
                                          (int)strlen(verb));
    return s == NATS_OK ? RAG_OK : nats_fail(s, 0, "nak", msg->id);
}

static int nt_term(void *state, const rag_queue_message *msgs, size_t n)
{
    return ack_protocol(state, msgs, n, "+TERM", "term");
}

static int nt_progress(void *state, const rag_queue_message *msgs, size_t n)
{
    return ack_protocol(state, msgs, n, "+WPI", "progress");
}


static void nt_release(void *state, rag_queue_message *msgs, size_t n)
{
    (void)state;
    if (!msgs)
        return;
    for (size_t i = 0; i < n; i++) {
        natsMsg_Destroy(msg_of(&msgs[i]));
        msgs[i].handle = 0;
        msgs[i].data = NULL;
        msgs[i].size = 0;
    }
}

static int nt_depth(void *state, const char *topic, rag_queue_depth *out)
{
    nats_tp *t = state;
    if (!out)
        return rag_error_set(RAG_EINVAL, "nats: depth needs out");
    memset(out, 0, sizeof *out);
    topic_ent *e;
    int rc = topic_get(t, topic, &e);
    if (!rc)
        rc = require_connected(t, "depth");
    if (!rc)
        rc = topic_ensure(t, e);
    if (rc)
        return rc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, t->js, e->stream, e->durable, NULL, &jerr);
    if (s != NATS_OK) {
        topic_forget(e);
        return nats_fail(s, jerr, "consumer info", e->durable);
    }
    out->ready = ci->NumPending;
    out->inflight = ci->NumAckPending > 0 ? (uint64_t)ci->NumAckPending : 0;
    out->delayed = 0;
    jsConsumerInfo_Destroy(ci);
    return RAG_OK;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void nt_free(void *state)
{
    nats_tp *t = state;
    if (!t)
        return;
    int connected = t->conn && natsConnection_Status(t->conn) == NATS_CONN_STATUS_CONNECTED;
    for (topic_ent *e = t->topics, *next; e; e = next) {
        next = e->next;
        if (e->sub) {
            /* Hand back what was delivered but not fetched (by wait(), or to a request whose
             * caller stopped waiting) at once rather than after AckWait. */
            natsMsg *m = NULL;
            while (e->n_pre < PREFETCH_MAX &&
                   natsSubscription_NextMsg(&m, e->sub, 0) == NATS_OK) {
                if (is_delivery(m))
                    e->pre[e->n_pre++] = m;
                else
                    natsMsg_Destroy(m);
            }
            natsSubscription_Unsubscribe(e->sub);
        }
        for (size_t i = 0; i < e->n_pre; i++) {
            if (connected)
                natsConnection_PublishString(t->conn, natsMsg_GetReply(e->pre[i]), "-NAK");
            natsMsg_Destroy(e->pre[i]);
        }
        natsSubscription_Destroy(e->sub);
        pthread_mutex_destroy(&e->setup_mu);
        pthread_mutex_destroy(&e->fetch_mu);
        free(e);
    }
    for (pub_ctx *pc = t->pub_all, *next; pc; pc = next) {
        next = pc->next_all;
        jsCtx_Destroy(pc->js);
        free(pc);
    }
    jsCtx_Destroy(t->js);
    if (t->conn) {
        if (connected)
            natsConnection_FlushTimeout(t->conn, 1000);
        natsConnection_Close(t->conn);
        natsConnection_Destroy(t->conn);
    }
    conn_events *ev = t->ev;
    if (ev) {
        int closed = !t->conn;
        if (t->conn) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += CLOSE_WAIT_MS / 1000;
            pthread_mutex_lock(&ev->mu);
            while (!ev->closed)
                if (pthread_cond_timedwait(&ev->cv, &ev->mu, &ts) != 0)
                    break;
            closed = ev->closed;
            pthread_mutex_unlock(&ev->mu);
        }
        /* If the library never reported the close, a callback may still come: leaving
         * these few bytes allocated is safer than freeing them under it. */
        if (closed) {
            pthread_mutex_destroy(&ev->mu);
            pthread_cond_destroy(&ev->cv);
            free(ev);
        }
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Split "a, b,c" into trimmed, non-empty URLs (strdup'ed into one buffer). */
static int split_urls(const char *urls, char **buf_out, const char ***list_out, int *count_out)
{
    size_t len = strlen(urls);
    char *buf = malloc(len + 1);
    const char **list = calloc(len / 2 + 2, sizeof *list);
    if (!buf || !list) {
        free(buf);
        free(list);
        return rag_error_set(RAG_ENOMEM, "nats: server list");
    }
    memcpy(buf, urls, len + 1);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = 0;
        if (*tok)
            list[n++] = tok;
    }
    if (n == 0) {
        free(buf);
        free(list);
        return rag_error_set(RAG_EINVAL, "nats: no server URL in \"%s\"", urls);
    }
    *buf_out = buf;
    *list_out = list;
    *count_out = n;
    return RAG_OK;
}

/* Connection options from `o`; on failure `*out` is NULL. */
static int make_options(natsOptions **out, const rag_queue_nats_options *o, nats_tp *t,
                        const char **urls, int n_urls)
{
    *out = NULL;
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s != NATS_OK)
        return rag_error_set(s == NATS_NO_MEMORY ? RAG_ENOMEM : RAG_ERROR,
                             "nats: cannot create options: %s", natsStatus_GetText(s));
    int tls = o->tls_ca_file || o->tls_cert_file || o->tls_key_file;
    for (int i = 0; i < n_urls; i++)
        if (strncmp(urls[i], "tls://", 6) == 0)
            tls = 1;
    const char *step = "servers";
    s = natsOptions_SetServers(no, urls, n_urls);
    if (s == NATS_OK) {
        step = "name";
        s = natsOptions_SetName(no, "ragcore");
    }
    if (s == NATS_OK) {
        step = "connect timeout";
        s = natsOptions_SetTimeout(no, (int64_t)t->connect_timeout_ms);
    }
    if (s == NATS_OK) {
        step = "reconnect";
        s = natsOptions_SetMaxReconnect(no, -1);
    }
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, (int64_t)t->ev->reconnect_base_ms);
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(no, reconnect_delay, t->ev);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(no, false, NULL, NULL);
    if (s == NATS_OK) {
        /* Write each protocol message at once instead of leaving it to nats.c's flusher
         * thread, which pauses about a millisecond before it writes: that pause would be
         * paid by every pull request, relay batch and ack, i.e. on every hop. */
        step = "send asap";
        s = natsOptions_SetSendAsap(no, true);
    }
    if (s == NATS_OK) {
        /* A broker that vanished without closing the socket is noticed within ~15 s. */
        step = "pings";
        s = natsOptions_SetPingInterval(no, 5000);
    }
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(no, 3);
    if (s == NATS_OK) {
        step = "handlers";
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, t->ev);
    }
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, t->ev);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, t->ev);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(no, on_async_error, t->ev);
    if (s == NATS_OK && o->creds_file) {
        step = "credentials file";
        s = natsOptions_SetUserCredentialsFromFiles(no, o->creds_file, NULL);
    }
    if (s == NATS_OK && tls) {
        step = "TLS";
        s = natsOptions_SetSecure(no, true);
        if (s == NATS_OK && o->tls_ca_file) {
            step = "TLS CA file";
            s = natsOptions_LoadCATrustedCertificates(no, o->tls_ca_file);
        }
        if (s == NATS_OK && (o->tls_cert_file || o->tls_key_file)) {
            step = "TLS client certificate";
            if (!o->tls_cert_file || !o->tls_key_file) {
                natsOptions_Destroy(no);
                return rag_error_set(RAG_EINVAL, "nats: tls_cert_file and tls_key_file go "
                                     "together");
            }
            s = natsOptions_LoadCertificatesChain(no, o->tls_cert_file, o->tls_key_file);
        }
    }
    if (s != NATS_OK) {
        const char *detail = nats_GetLastError(NULL);
        int code = s == NATS_NO_MEMORY ? RAG_ENOMEM
                   : s == NATS_ILLEGAL_STATE ? RAG_EUNSUPPORTED /* e.g. libnats without TLS */
                                             : RAG_EINVAL;
        natsOptions_Destroy(no);
        return rag_error_set(code, "nats: option %s: %s%s%s", step, natsStatus_GetText(s),
                             detail && *detail ? ": " : "", detail ? detail : "");
    }
    *out = no;
    return RAG_OK;
}

int rag_queue_nats_new(rag_queue_transport *out, const rag_queue_nats_options *opts)
{
    if (!out || !opts)
        return rag_error_set(RAG_EINVAL, "nats: transport_new needs out and opts");
    memset(out, 0, sizeof *out);
    if (opts->version == 0 || opts->version > RAG_QUEUE_NATS_OPTIONS_VERSION)
        return rag_error_set(RAG_EVERSION, "nats: options version %u not supported",
                             opts->version);
    if (!opts->urls || !*opts->urls)
        return rag_error_set(RAG_EINVAL, "nats: options need urls");
    const char *prefix = opts->prefix && *opts->prefix ? opts->prefix : "RAG";
    int rc = check_prefix(prefix);
    if (rc)
        return rc;

    nats_tp *t = calloc(1, sizeof *t);
    conn_events *ev = calloc(1, sizeof *ev);
    if (!t || !ev) {
        free(t);
        free(ev);
        return rag_error_set(RAG_ENOMEM, "nats: transport");
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->cv, NULL);
    t->ev = ev;
    snprintf(t->prefix, sizeof t->prefix, "%s", prefix);
    t->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 2000u;
    t->publish_timeout_ms = opts->publish_timeout_ms ? opts->publish_timeout_ms : 5000u;
    t->ack_wait_ms = opts->ack_wait_ms ? opts->ack_wait_ms : 30000u;
    t->max_deliver = opts->max_deliver ? opts->max_deliver : 11u;
    t->duplicate_window_ms = opts->duplicate_window_ms ? opts->duplicate_window_ms : 120000u;
    t->memory_storage = opts->memory_storage != 0;
    ev->reconnect_base_ms = opts->reconnect_wait_ms ? opts->reconnect_wait_ms : 250u;
    atomic_init(&ev->jitter_seed, (unsigned int)(rag_mono_us() ^ (uintptr_t)t) | 1u);

    char *url_buf = NULL;
    const char **urls = NULL;
    int n_urls = 0;
    natsOptions *no = NULL;
    rc = split_urls(opts->urls, &url_buf, &urls, &n_urls);
    if (!rc)
        rc = make_options(&no, opts, t, urls, n_urls);
    if (!rc) {
        natsStatus s = natsConnection_Connect(&t->conn, no);
        if (s != NATS_OK) {
            t->conn = NULL;
            const char *detail = nats_GetLastError(NULL);
            int code = (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED ||
                        s == NATS_SSL_ERROR)
                           ? RAG_EINVAL
                       : s == NATS_NO_MEMORY ? RAG_ENOMEM
                                             : RAG_ETRANSIENT;
            rc = rag_error_set(code, "nats: cannot connect to %s: %s%s%s", opts->urls,
                               natsStatus_GetText(s), detail && *detail ? ": " : "",
                               detail ? detail : "");
        }
    }
    natsOptions_Destroy(no);
    free(urls);
    free(url_buf);
    if (!rc) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = t->connect_timeout_ms;
        natsStatus s = natsConnection_JetStream(&t->js, t->conn, &jo);
        if (s != NATS_OK)
            rc = nats_fail(s, 0, "JetStream context", NULL);
    }
    if (!rc) {
        /* Fail here, with a useful message, rather than at the first publish. */
        jsAccountInfo *ai = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetAccountInfo(&ai, t->js, NULL, &jerr);
        jsAccountInfo_Destroy(ai);
        if (s == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr ||
            jerr == JSNotEnabledForAccountErr)
            rc = rag_error_set(RAG_ETRANSIENT, "nats: JetStream is not enabled on %s (start "
                               "nats-server with -js)", opts->urls);
        else if (s != NATS_OK)
            rc = nats_fail(s, jerr, "JetStream account info", NULL);
    }
    if (rc) {
        nt_free(t);
        return rc;
    }

    out->version = RAG_QUEUE_TRANSPORT_VERSION;
    out->state = t;
    out->publish = nt_publish;
    out->fetch = nt_fetch;
    out->ack = nt_ack;
    out->nak = nt_nak;
    out->release = nt_release;
    out->depth = nt_depth;
    out->wait = nt_wait;
    out->wake_all = nt_wake_all;
    out->free = nt_free;
    out->term = nt_term;
    out->progress = nt_progress;
    return RAG_OK;
}
