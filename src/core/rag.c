/*
 * The public API façade.  It owns nothing but wiring: it opens each module (each opens its own
 * env), hands retrieve the read interfaces of ingest and index, registers the consumers with
 * the queue, and runs them on worker threads (rag_start) or on the caller's thread
 * (rag_drain without workers).  It never touches a module's tables.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/providers.h"
#include "rag_assemble_api.h"
#include "rag_common.h"
#include "rag_embed_api.h"
#include "rag_events.h"
#include "rag_index_api.h"
#include "rag_ingest_api.h"
#include "rag_queue.h"
#include "rag_retrieve_api.h"
#include "core_internal.h"

/* ---- root directory: lock and format version ------------------------------------------- */

static int root_lock(rag_ctx *ctx)
{
    char path[RAG_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/LOCK", ctx->cfg.root);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return rag_error_set(RAG_EIO, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return rag_error_set(RAG_EBUSY, "root %s is open in another process", ctx->cfg.root);
        return rag_error_set(RAG_EIO, "cannot lock %s: %s", path, strerror(e));
    }
    ctx->lock_fd = fd;
    return RAG_OK;
}

static int root_format_check(rag_ctx *ctx)
{
    char path[RAG_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/FORMAT", ctx->cfg.root);
    FILE *f = fopen(path, "r");
    if (f) {
        int v = 0;
        int ok = fscanf(f, "ragcore-root %d", &v) == 1;
        fclose(f);
        if (!ok)
            return rag_error_set(RAG_ECORRUPT, "%s is not a ragcore format file", path);
        if (v != RAG_ROOT_FORMAT)
            return rag_error_set(RAG_EVERSION,
                                 "root %s has format %d; this library reads format %d",
                                 ctx->cfg.root, v, RAG_ROOT_FORMAT);
        return RAG_OK;
    }
    /* New root: write the format file durably before any module creates data. */
    char tmp[RAG_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f)
        return rag_error_set(RAG_EIO, "cannot create %s: %s", tmp, strerror(errno));
    fprintf(f, "ragcore-root %d\n", RAG_ROOT_FORMAT);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0)
        return rag_error_set(RAG_EIO, "cannot write %s: %s", path, strerror(errno));
    return RAG_OK;
}

/* ---- session consistency (see core_internal.h) ---------------------------------------------- */

/* Default bound of a session wait when the query leaves timeout_ms at 0. */
#define SESSION_TIMEOUT_DEFAULT_MS 5000u
/* Poll interval of a session wait: starts short (the common case is one pipeline hop away)
 * and doubles up to a cap, so a long wait costs little CPU. */
#define SESSION_POLL_MIN_US 200u
#define SESSION_POLL_MAX_US 5000u

static void session_init(rag_session *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->writes_since_prune = RAG_SESSION_PRUNE_EVERY; /* the first full list is checked */
}

static void session_destroy(rag_session *s)
{
    for (size_t i = 0; i < s->count; i++)
        free(s->items[i].doc_id);
    free(s->items);
    pthread_mutex_destroy(&s->lock);
}

/* 0: appended; 1: no room (full, or out of memory: the caller counts an overflow). */
static int session_append_locked(rag_session *s, const char *doc_id, uint64_t version)
{
    if (s->count >= RAG_SESSION_MAX)
        return 1;
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        if (cap > RAG_SESSION_MAX)
            cap = RAG_SESSION_MAX;
        rag_session_entry *p = realloc(s->items, cap * sizeof *p);
        if (!p)
            return 1;
        s->items = p;
        s->cap = cap;
    }
    char *d = strdup(doc_id);
    if (!d)
        return 1;
    s->items[s->count++] = (rag_session_entry){d, version, ++s->next_seq};
    return 0;
}

typedef struct session_check {
    uint64_t seq, version;
    size_t name; /* offset in the names buffer */
    int settled;
} session_check;

/*
 * Check the entries with seq <= upto (a prefix: entries are in seq order) and remove those
 * that are settled: applied by the index, or failed for good.  The checks run outside the
 * lock (they read the index's and ingest's envs); writers append meanwhile, and entries
 * another thread removed meanwhile are simply not found again.  With `stop_at_pending` the
 * checks stop at the first entry still pending (a waiting search needs no more: entries
 * settle about in order).  *left: entries with seq <= upto still listed; `pending_doc` gets
 * the first one's id.
 */
static int session_settle(rag_ctx *ctx, uint64_t upto, int stop_at_pending, size_t *left,
                          char *pending_doc, size_t pending_size)
{
    rag_session *s = &ctx->session;
    *left = 0;
    pthread_mutex_lock(&s->lock);
    size_t n = 0, bytes = 0;
    while (n < s->count && s->items[n].seq <= upto)
        bytes += strlen(s->items[n++].doc_id) + 1;
    if (n == 0) {
        pthread_mutex_unlock(&s->lock);
        return RAG_OK;
    }
    session_check *chk = malloc(n * sizeof *chk);
    char *names = malloc(bytes);
    if (!chk || !names) {
        pthread_mutex_unlock(&s->lock);
        free(chk);
        free(names);
        return rag_error_set(RAG_ENOMEM, "session consistency: out of memory");
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(s->items[i].doc_id) + 1;
        memcpy(names + off, s->items[i].doc_id, len);
        chk[i] = (session_check){s->items[i].seq, s->items[i].version, off, 0};
        off += len;
    }
    pthread_mutex_unlock(&s->lock);

    int rc = RAG_OK;
    for (size_t i = 0; i < n; i++) {
        const char *doc = names + chk[i].name;
        int settled = 0;
        rc = rag_index_applied(ctx->index, doc, chk[i].version, &settled);
        if (!rc && !settled)
            rc = rag_ingest_version_failed(ctx->ingest, doc, chk[i].version, &settled);
        if (rc)
            break;
        chk[i].settled = settled;
        if (!settled && stop_at_pending)
            break;
    }
    if (!rc) {
        pthread_mutex_lock(&s->lock);
        size_t w = 0, j = 0;
        for (size_t r = 0; r < s->count; r++) {
            rag_session_entry *e = &s->items[r];
            while (j < n && chk[j].seq < e->seq)
                j++;
            if (j < n && chk[j].seq == e->seq && chk[j].settled) {
                free(e->doc_id);
                continue;
            }
            s->items[w++] = *e;
        }
        s->count = w;
        size_t p = 0;
        while (p < s->count && s->items[p].seq <= upto)
            p++;
        *left = p;
        if (p && pending_doc)
            snprintf(pending_doc, pending_size, "%s", s->items[0].doc_id);
        pthread_mutex_unlock(&s->lock);
    }
    free(chk);
    free(names);
    return rc;
}

/* Record committed writes of this handle (best effort: what cannot be recorded is counted as
 * an overflow, which session searches cover by waiting for a quiet pipeline). */
static void session_note(rag_ctx *ctx, const char *const *ids, const uint64_t *versions,
                         size_t n)
{
    rag_session *s = &ctx->session;
    /* the caller's rag_error_last() (e.g. a batch's first per-document failure) survives */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", rag_error_last());
    size_t i = 0;
    int pruned = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (i < n && session_append_locked(s, ids[i], versions[i]) == 0)
            i++;
        if (i == n)
            break;
        if (!pruned && s->count >= RAG_SESSION_MAX &&
            s->writes_since_prune >= RAG_SESSION_PRUNE_EVERY) {
            /* Full: drop what is settled by now (nobody may have run a session search in a
             * while), then try again. */
            s->writes_since_prune = 0;
            pthread_mutex_unlock(&s->lock);
            size_t left = 0;
            session_settle(ctx, UINT64_MAX, 0, &left, NULL, 0);
            pthread_mutex_lock(&s->lock);
            pruned = 1;
            continue;
        }
        s->overflow_gen += n - i;
        s->writes_since_prune += n - i;
        break;
    }
    pthread_mutex_unlock(&s->lock);
    rag_error_set(RAG_OK, "%s", detail);
}

/* The version a committed delete of `doc_id` covered (ingest's deleted_through); 0 if it
 * cannot be read. */
static uint64_t deleted_version(rag_ctx *ctx, const char *doc_id)
{
    const rag_ingest_reader *rd = rag_ingest_reader_get(ctx->ingest);
    void *txn = NULL;
    uint64_t v = 0;
    if (rd->begin(rd->self, &txn) != RAG_OK)
        return 0;
    rag_doc_view view;
    memset(&view, 0, sizeof view);
    if (rd->doc_info(rd->self, txn, doc_id, &view) == RAG_OK)
        v = view.deleted_through;
    rd->end(rd->self, txn);
    return v;
}

static int pending_work(rag_ctx *ctx, uint64_t *total);

/*
 * Wait until every write this handle recorded before the call is applied or failed for
 * good.  Without workers nothing moves unless another thread runs rag_drain(), so the wait
 * ends in RAG_ETIMEOUT and says so.
 */
static int session_wait(rag_ctx *ctx, uint32_t timeout_ms)
{
    rag_session *s = &ctx->session;
    pthread_mutex_lock(&s->lock);
    const uint64_t upto = s->next_seq;
    const uint64_t overflow = s->overflow_gen;
    int need_quiet = overflow > s->quiet_gen;
    pthread_mutex_unlock(&s->lock);
    const uint32_t bound = timeout_ms ? timeout_ms : SESSION_TIMEOUT_DEFAULT_MS;
    const uint64_t deadline = rag_mono_ms() + bound;
    unsigned int sleep_us = SESSION_POLL_MIN_US;
    int quiet_seen = 0;
    char pending[RAG_DOC_ID_MAX + 1] = "";
    for (;;) {
        size_t left = 0;
        int rc = session_settle(ctx, upto, 1, &left, pending, sizeof pending);
        if (rc)
            return rc;
        if (need_quiet) {
            /* Untracked writes: every outbox and queue empty means each of them was applied
             * or dead-lettered (a message is always in an outbox or a queue until the index
             * applied it).  The counts are not one atomic snapshot, so two quiet looks in a
             * row are required before believing it. */
            uint64_t work = 0;
            rc = pending_work(ctx, &work);
            if (rc)
                return rc;
            quiet_seen = work == 0 ? quiet_seen + 1 : 0;
            if (quiet_seen >= 2) {
                need_quiet = 0;
                pthread_mutex_lock(&s->lock);
                if (s->quiet_gen < overflow)
                    s->quiet_gen = overflow;
                pthread_mutex_unlock(&s->lock);
            }
        }
        if (!left && !need_quiet)
            return RAG_OK;
        uint64_t now = rag_mono_ms();
        if (now >= deadline) {
            const char *why = ctx->started ? ""
                                           : "; the workers are not running: call rag_start(), "
                                             "or rag_drain() before a session search";
            if (left)
                return rag_error_set(RAG_ETIMEOUT,
                                     "session consistency: document '%s' (and %zu more "
                                     "writes of this handle) not applied by the index after "
                                     "%u ms%s",
                                     pending, left - 1, bound, why);
            return rag_error_set(RAG_ETIMEOUT,
                                 "session consistency: more than %u writes of this handle were "
                                 "pending, and the pipeline was still busy after %u ms%s",
                                 RAG_SESSION_MAX, bound, why);
        }
        uint64_t rest_us = (deadline - now) * 1000u;
        struct timespec ts = {0, (long)(rest_us < sleep_us ? rest_us : sleep_us) * 1000L};
        nanosleep(&ts, NULL);
        sleep_us = sleep_us * 2 > SESSION_POLL_MAX_US ? SESSION_POLL_MAX_US : sleep_us * 2;
    }
}

/* ---- open / close ------------------------------------------------------------------------ */

int rag_core__hosted_error(const char *call, const char *module)
{
    return rag_error_set(RAG_ESTATE,
                         "%s needs the %s module, which this handle does not host "
                         "(rag_options.modules)",
                         call, module);
}

static void add_consumer(rag_ctx *ctx, rag_consumer *c)
{
    if (c && ctx->consumer_count < RAG_MAX_CONSUMERS)
        ctx->consumers[ctx->consumer_count++] = c;
}

/* A failed relay is logged when relays start failing and once more when they work again:
 * workers and drains retry every few ms, and an unreachable broker must not flood the log. */
static void relay_note(rag_ctx *ctx, const char *module, int rc)
{
    if (rc) {
        if (!atomic_exchange(&ctx->relay_failing, 1))
            rag_log(RAG_LOG_WARN, module, "relay_failed",
                    "outbox relay failed (rows stay in the outbox and are sent again): %s (%s)",
                    rag_error_last(), rag_strerror(rc));
    } else if (atomic_exchange(&ctx->relay_failing, 0)) {
        rag_log(RAG_LOG_INFO, module, "relay_recovered", "outbox relay works again");
    }
}

static int relay_all(rag_ctx *ctx)
{
    int first = RAG_OK;
    for (size_t i = 0; i < ctx->outbox_count; i++) {
        size_t moved = 0;
        int rc = rag_outbox_relay(ctx->outboxes[i], &ctx->transport, 0, &moved);
        if (rc && !first)
            first = rc;
        if (rc)
            relay_note(ctx, rag_outbox_module(ctx->outboxes[i]), rc);
    }
    if (!first && ctx->outbox_count)
        relay_note(ctx, "core", RAG_OK);
    return first;
}

/* Documents sent per re-embed step: one ingest txn each, relayed before the next, so the
 * outbox never holds more than this many documents' chunks. */
#define REEMBED_STEP_DOCS 256

/*
 * After a re-embed began (or at every open while one is unfinished): ingest sends the active
 * version of every document, flagged as a re-embed, in resumable steps.  The work itself is
 * done by the consumers, like any other (rag_drain, or the workers).  A generation whose scan
 * finished returns at once.
 */
static int reembed_scan(rag_ctx *ctx)
{
    uint64_t gen = ctx->cfg.model_gen;
    if (gen == 0)
        return RAG_OK;
    uint64_t total = 0;
    for (int step = 0;; step++) {
        size_t sent = 0;
        int done = 0;
        int rc = rag_ingest_reembed_step(ctx->ingest, gen, REEMBED_STEP_DOCS, &sent, &done);
        if (!rc && step == 0 && !(done && sent == 0))
            rag_log(RAG_LOG_INFO, "core", "reembed_started",
                    "re-embedding for model generation %llu with provider '%s': sending every "
                    "active document version to embed again",
                    (unsigned long long)gen, rag_embed_fingerprint(ctx->embed));
        total += sent;
        if (!rc && (rc = relay_all(ctx)) == RAG_ETRANSIENT) {
            /* broker unreachable: the rows wait in the outbox for the workers' relay */
            rag_error_clear();
            rc = RAG_OK;
        }
        if (rc)
            rag_log(RAG_LOG_ERROR, "core", "reembed_failed",
                    "re-embed scan for model generation %llu stopped (resumed at the next "
                    "open): %s (%s)",
                    (unsigned long long)gen, rag_error_last(), rag_strerror(rc));
        else if (done && !(step == 0 && sent == 0))
            rag_log(RAG_LOG_INFO, "core", "reembed_finished",
                    "re-embed scan for model generation %llu finished: %llu document(s) queued "
                    "(rag_status reembed_pending counts the chunks still waiting)",
                    (unsigned long long)gen, (unsigned long long)total);
        if (rc || done)
            return rc;
    }
}

static int open_modules(rag_ctx *ctx)
{
    const unsigned int m = ctx->cfg.modules;
    int rc;
    if ((m & RAG_HOST_INGEST) && (rc = rag_ingest_open(&ctx->ingest, &ctx->cfg)) != RAG_OK)
        return rc;
    if (m & RAG_HOST_EMBED) {
        rc = rag_embed_open(&ctx->embed, &ctx->cfg, &ctx->provider);
        if (rc)
            return rc;
        /* The embed module owns the record of the provider; a re-embed has just advanced its
         * model generation, and the index drops the older generation's vectors as it opens. */
        ctx->cfg.model_gen = rag_embed_model_gen(ctx->embed);
    } else {
        ctx->cfg.model_gen_unknown = 1; /* embed runs elsewhere: the index keeps its record */
    }
    if (m & RAG_HOST_INDEX) {
        rag_vector_backend *backend = NULL;
        rc = rag_vector_backend_faiss_new(&backend, ctx->provider.dim, ctx->cfg.index_factory);
        if (rc)
            return rc;
        rc = rag_index_open(&ctx->index, &ctx->cfg, backend);
        if (rc)
            return rc;
    }
    if (m & RAG_HOST_RETRIEVE) {
        rc = rag_retrieve_open(&ctx->retrieve, &ctx->cfg, &ctx->provider,
                               rag_ingest_reader_get(ctx->ingest),
                               rag_index_reader_get(ctx->index));
        if (rc)
            return rc;
    }
    rc = rag_assembler_open(&ctx->assembler, &ctx->cfg);
    if (rc)
        return rc;

    if (ctx->embed)
        add_consumer(ctx, rag_embed_consumer(ctx->embed));
    if (ctx->index) {
        add_consumer(ctx, rag_index_consumer_embedded(ctx->index));
        add_consumer(ctx, rag_index_consumer_deleted(ctx->index));
        add_consumer(ctx, rag_index_consumer_revert(ctx->index));
    }
    if (ctx->ingest) {
        add_consumer(ctx, rag_ingest_consumer(ctx->ingest));
        add_consumer(ctx, rag_ingest_consumer_failed(ctx->ingest));
    }
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        rc = rag_consumer_init(ctx->consumers[i]);
        if (rc)
            return rc;
    }
    if (ctx->ingest)
        ctx->outboxes[ctx->outbox_count++] = rag_ingest_outbox(ctx->ingest);
    if (ctx->embed)
        ctx->outboxes[ctx->outbox_count++] = rag_embed_outbox(ctx->embed);
    if (ctx->index)
        ctx->outboxes[ctx->outbox_count++] = rag_index_outbox(ctx->index);
    /* Rows a crashed process committed but never relayed go out now.  A transport that is
     * unreachable right now (a broker outage) is not fatal: the rows wait in the outboxes and
     * the workers relay them once it is back. */
    rc = relay_all(ctx);
    if (rc == RAG_ETRANSIENT) {
        rag_error_clear();
        rc = RAG_OK;
    }
    if (rc || !ctx->ingest)
        return rc;
    return reembed_scan(ctx);
}

int rag_open(rag_ctx **out, const char *root, const rag_options *opts)
{
    rag_error_clear();
    if (!out)
        return rag_error_set(RAG_EINVAL, "out is NULL");
    *out = NULL;
    rag_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return rag_error_set(RAG_ENOMEM, "out of memory");
    ctx->lock_fd = -1;
    pthread_mutex_init(&ctx->pump_lock, NULL);
    pthread_mutex_init(&ctx->relay_mu, NULL);
    pthread_cond_init(&ctx->relay_cv, NULL);
    session_init(&ctx->session);
    atomic_init(&ctx->stopping, 0);

    /* Take ownership of caller-supplied vtables first, so that every failure path below
     * releases their state exactly once (as documented). */
    if (opts && opts->version >= 1 && opts->provider) {
        /* Only the slots of the provider's own version exist in the caller's struct. */
        unsigned int pv = opts->provider->version;
        memcpy(&ctx->provider, opts->provider,
               pv >= 1 && pv <= RAG_EMBED_PROVIDER_VERSION ? rag_embed_provider_size(pv)
                                                           : rag_embed_provider_size(1));
        ctx->have_provider = 1;
    }
    if (opts && opts->version >= 1 && opts->transport) {
        unsigned int tv = opts->transport->version;
        memcpy(&ctx->transport, opts->transport,
               tv >= 1 && tv <= RAG_QUEUE_TRANSPORT_VERSION ? RAG_QUEUE_TRANSPORT_SIZE(tv)
                                                            : RAG_QUEUE_TRANSPORT_SIZE(1));
        ctx->have_transport = 1;
    }

    int rc = rag_config_init(&ctx->cfg, root, opts);
    if (rc)
        goto fail;
    if (ctx->have_provider) {
        rc = rag_embed_provider_check(&ctx->provider);
        if (rc)
            goto fail;
    } else {
        if (strcmp(ctx->cfg.embed_mode, "hash") != 0) {
            rc = rag_error_set(RAG_EINVAL,
                               "embed_mode \"%s\": the built-in provider without a table "
                               "supports \"hash\" (use rag_embed_cpu_table_init for tables)",
                               ctx->cfg.embed_mode);
            goto fail;
        }
        rc = rag_embed_cpu_hash_init(&ctx->provider, ctx->cfg.embed_dim);
        if (rc)
            goto fail;
        ctx->have_provider = 1;
    }
    if (ctx->have_transport) {
        if (ctx->transport.version == 0 || ctx->transport.version > RAG_QUEUE_TRANSPORT_VERSION) {
            rc = rag_error_set(RAG_EVERSION, "queue transport version %u not supported",
                               ctx->transport.version);
            goto fail;
        }
        if (!ctx->transport.publish || !ctx->transport.fetch || !ctx->transport.ack ||
            !ctx->transport.nak || !ctx->transport.release || !ctx->transport.depth) {
            rc = rag_error_set(RAG_EINVAL, "queue transport lacks a required slot");
            goto fail;
        }
    }

    rc = rag_mkdir_p(ctx->cfg.root);
    if (rc)
        goto fail;
    rc = root_lock(ctx);
    if (rc)
        goto fail;
    rc = root_format_check(ctx);
    if (rc)
        goto fail;
    if (!ctx->have_transport) {
        rag_queue_transport *t = NULL;
        rc = rag_queue_lmdb_transport_new(&t, &ctx->cfg);
        if (rc)
            goto fail;
        ctx->transport = *t;
        free(t);
        ctx->have_transport = 1;
    }
    rag_queue_policy_from_config(&ctx->policy, &ctx->cfg);
    rc = open_modules(ctx);
    if (rc)
        goto fail;
    rag_log(RAG_LOG_INFO, "core", "open", "opened root %s (modules 0x%x, provider '%s')",
            ctx->cfg.root, ctx->cfg.modules, ctx->embed ? rag_embed_fingerprint(ctx->embed) : "");
    ctx->opened = 1;
    *out = ctx;
    return RAG_OK;
fail:
    {
        /* keep the detail of the first failure across the cleanup */
        char detail[512];
        snprintf(detail, sizeof detail, "%s", rag_error_last());
        rag_close(ctx);
        rag_log(RAG_LOG_ERROR, "core", "open_failed", "cannot open root %s: %s (%s)",
                root ? root : "(null)", detail, rag_strerror(rc));
        return rag_error_set(rc, "%s", detail);
    }
}

void rag_close(rag_ctx *ctx)
{
    if (!ctx)
        return;
    rag_stop(ctx);
    if (ctx->have_transport && ctx->consumer_count)
        relay_all(ctx);
    if (ctx->opened)
        rag_log(RAG_LOG_INFO, "core", "close", "closing root %s", ctx->cfg.root);
    rag_assembler_close(ctx->assembler);
    rag_retrieve_close(ctx->retrieve);
    rag_index_close(ctx->index);
    rag_embed_close(ctx->embed);
    rag_ingest_close(ctx->ingest);
    if (ctx->have_transport && ctx->transport.free)
        ctx->transport.free(ctx->transport.state);
    if (ctx->have_provider && ctx->provider.free)
        ctx->provider.free(ctx->provider.state);
    if (ctx->lock_fd >= 0)
        close(ctx->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&ctx->pump_lock);
    pthread_cond_destroy(&ctx->relay_cv);
    pthread_mutex_destroy(&ctx->relay_mu);
    session_destroy(&ctx->session);
    free(ctx);
}

/* ---- workers ------------------------------------------------------------------------------ */

#define RARE_TOPIC_POLL_MS 50u

static void *worker_main(void *arg)
{
    rag_worker *w = arg;
    rag_ctx *ctx = w->ctx;
    while (!atomic_load(&ctx->stopping)) {
        size_t processed = 0;
        int failed = 0;
        for (size_t i = 0; i < w->count; i++) {
            size_t n = 0;
            failed |= rag_consumer_run_once(w->consumers[i], &ctx->transport, &ctx->policy, &n) != 0;
            processed += n;
        }
        if (processed > 0)
            continue;
        /* Idle (or failing): push any outbox rows a failed relay left behind, then wait for a
         * publish instead of spinning. */
        for (size_t i = 0; i < w->count; i++) {
            if (w->consumers[i]->outbox) {
                size_t moved = 0;
                int rrc = rag_outbox_relay(w->consumers[i]->outbox, &ctx->transport, 0, &moved);
                if (rrc)
                    relay_note(ctx, w->consumers[i]->module, rrc);
                break; /* consumers of one env share its outbox */
            }
        }
        /* Wait for a publish on the worker's main topic (the first registered: doc.chunked,
         * doc.embedded, doc.indexed), so the common path wakes at once.  The rare topics of
         * the same env (deletes, compensations) are polled by the loop above at least every
         * RARE_TOPIC_POLL_MS. */
        if (ctx->transport.wait) {
            ctx->transport.wait(ctx->transport.state, w->consumers[0]->topic,
                                failed ? 100u : (w->count > 1 ? RARE_TOPIC_POLL_MS : 250u));
        } else {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* The ingest outbox's relay while workers run.  A put only sets relay_pending: the rows are
 * durable in ingest's env already, and moving them to the broker costs a broker commit (the
 * publish) that the caller need not wait for.  Puts arriving during a relay are moved
 * together by the next one. */
static void *relay_main(void *arg)
{
    rag_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->relay_mu);
    while (!atomic_load(&ctx->stopping)) {
        if (!ctx->relay_pending) {
            pthread_cond_wait(&ctx->relay_cv, &ctx->relay_mu);
            continue;
        }
        ctx->relay_pending = 0;
        pthread_mutex_unlock(&ctx->relay_mu);
        size_t moved = 0;
        int rc = rag_outbox_relay(rag_ingest_outbox(ctx->ingest), &ctx->transport, 0, &moved);
        if (rc)
            relay_note(ctx, "ingest", rc); /* the rows stay; the ingest worker retries when idle */
        pthread_mutex_lock(&ctx->relay_mu);
    }
    pthread_mutex_unlock(&ctx->relay_mu);
    return NULL;
}

/* Hand a put's (or delete's) committed events to the broker: the relay thread while workers
 * run, else the calling thread.  A relay failure is not the caller's failure: the rows stay
 * and the next relay (workers, drain, open) sends them. */
static void relay_ingest(rag_ctx *ctx)
{
    pthread_mutex_lock(&ctx->relay_mu);
    int async = ctx->relay_running;
    if (async) {
        ctx->relay_pending = 1;
        pthread_cond_signal(&ctx->relay_cv);
    }
    pthread_mutex_unlock(&ctx->relay_mu);
    if (!async) {
        size_t moved = 0;
        rag_outbox_relay(rag_ingest_outbox(ctx->ingest), &ctx->transport, 0, &moved);
    }
}

int rag_start(rag_ctx *ctx)
{
    if (!ctx)
        return rag_error_set(RAG_EINVAL, "ctx is NULL");
    if (ctx->started)
        return rag_error_set(RAG_ESTATE, "workers already started");
    atomic_store(&ctx->stopping, 0);
    ctx->worker_count = 0;
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        rag_worker *w = NULL;
        for (size_t j = 0; j < ctx->worker_count; j++)
            if (ctx->workers[j].consumers[0]->env == ctx->consumers[i]->env)
                w = &ctx->workers[j];
        if (!w) {
            w = &ctx->workers[ctx->worker_count++];
            memset(w, 0, sizeof *w);
            w->ctx = ctx;
        }
        w->consumers[w->count++] = ctx->consumers[i];
    }
    for (size_t i = 0; i < ctx->worker_count; i++) {
        if (pthread_create(&ctx->workers[i].thread, NULL, worker_main, &ctx->workers[i]) != 0) {
            atomic_store(&ctx->stopping, 1);
            if (ctx->transport.wake_all)
                ctx->transport.wake_all(ctx->transport.state);
            for (size_t j = 0; j < i; j++)
                pthread_join(ctx->workers[j].thread, NULL);
            return rag_error_set(RAG_ERROR, "cannot start worker thread");
        }
    }
    if (ctx->ingest) {
        pthread_mutex_lock(&ctx->relay_mu);
        ctx->relay_pending = 1; /* rows a put left before the start */
        ctx->relay_running =
            pthread_create(&ctx->relay_thread, NULL, relay_main, ctx) == 0; /* else inline */
        pthread_mutex_unlock(&ctx->relay_mu);
    }
    ctx->started = 1;
    return RAG_OK;
}

int rag_stop(rag_ctx *ctx)
{
    if (!ctx)
        return rag_error_set(RAG_EINVAL, "ctx is NULL");
    if (!ctx->started)
        return RAG_OK;
    atomic_store(&ctx->stopping, 1);
    if (ctx->transport.wake_all)
        ctx->transport.wake_all(ctx->transport.state);
    for (size_t i = 0; i < ctx->worker_count; i++)
        pthread_join(ctx->workers[i].thread, NULL);
    pthread_mutex_lock(&ctx->relay_mu);
    int relay = ctx->relay_running;
    ctx->relay_running = 0; /* puts from now on relay inline */
    pthread_cond_broadcast(&ctx->relay_cv);
    pthread_mutex_unlock(&ctx->relay_mu);
    if (relay) {
        pthread_join(ctx->relay_thread, NULL);
        /* what the thread had not taken yet */
        size_t moved = 0;
        rag_outbox_relay(rag_ingest_outbox(ctx->ingest), &ctx->transport, 0, &moved);
    }
    ctx->started = 0;
    return RAG_OK;
}

static const char *const pipeline_topics[] = {RAG_TOPIC_CHUNKED, RAG_TOPIC_EMBEDDED,
                                               RAG_TOPIC_DELETED, RAG_TOPIC_REVERT,
                                               RAG_TOPIC_INDEXED, RAG_TOPIC_FAILED};

/* Work left anywhere: outbox rows not yet relayed, or messages in any topic. */
static int pending_work(rag_ctx *ctx, uint64_t *total)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < ctx->outbox_count; i++) {
        uint64_t n = 0;
        int rc = rag_outbox_pending(ctx->outboxes[i], &n);
        if (rc)
            return rc;
        sum += n;
    }
    /* Every topic of the pipeline, hosted here or not: with modules in other processes
     * (an embed worker elsewhere), "drained" still means the whole pipeline is quiet. */
    for (size_t i = 0; i < sizeof pipeline_topics / sizeof pipeline_topics[0]; i++) {
        uint64_t n = 0;
        int rc = rag_queue_total_depth(&ctx->transport, pipeline_topics[i], &n);
        if (rc == RAG_ETRANSIENT) {
            /* the broker is unreachable right now: its queues are unknown, so not empty */
            rag_error_clear();
            n = 1;
        } else if (rc) {
            return rc;
        }
        sum += n;
    }
    *total = sum;
    return RAG_OK;
}

int rag_drain(rag_ctx *ctx, uint32_t timeout_ms)
{
    if (!ctx)
        return rag_error_set(RAG_EINVAL, "ctx is NULL");
    uint64_t deadline = timeout_ms ? rag_mono_ms() + timeout_ms : 0;
    for (;;) {
        int progressed = 0;
        if (!ctx->started) {
            /* No workers: do the work on this thread, one batch per consumer per round. */
            pthread_mutex_lock(&ctx->pump_lock);
            relay_all(ctx);
            for (size_t i = 0; i < ctx->consumer_count; i++) {
                size_t processed = 0;
                int rc = rag_consumer_run_once(ctx->consumers[i], &ctx->transport, &ctx->policy,
                                               &processed);
                if (rc && rc != RAG_ETRANSIENT) {
                    pthread_mutex_unlock(&ctx->pump_lock);
                    return rc;
                }
                progressed |= processed > 0;
            }
            pthread_mutex_unlock(&ctx->pump_lock);
        }
        uint64_t left = 0;
        int rc = pending_work(ctx, &left);
        if (rc)
            return rc;
        if (left == 0)
            return RAG_OK;
        if (deadline && rag_mono_ms() >= deadline)
            return rag_error_set(RAG_ETIMEOUT, "%llu queue entries still pending after %u ms",
                                 (unsigned long long)left, timeout_ms);
        if (!progressed) {
            /* Nothing visible yet (retry backoff or workers busy): don't spin. */
            struct timespec ts = {0, 2 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* ---- documents ------------------------------------------------------------------------------ */

int rag_doc_put_batch(rag_ctx *ctx, const rag_doc *docs, size_t n, rag_put_result *results)
{
    rag_error_clear();
    if (!ctx || (!docs && n) || !results)
        return rag_error_set(RAG_EINVAL, "ctx, docs and results are required");
    if (!ctx->ingest)
        return rag_core__hosted_error("rag_doc_put", "ingest");
    if (n == 0)
        return RAG_OK;
    int rc = rag_ingest_put_batch(ctx->ingest, docs, n, results);
    if (rc)
        return rc;
    /* Committed: remember the new versions for session reads. */
    const char **ids = malloc(n * sizeof *ids);
    uint64_t *vers = malloc(n * sizeof *vers);
    size_t m = 0;
    if (ids && vers) {
        for (size_t i = 0; i < n; i++) {
            if (results[i].code == RAG_OK && results[i].version) {
                ids[m] = docs[i].id;
                vers[m++] = results[i].version;
            }
        }
        session_note(ctx, ids, vers, m);
    } else {
        pthread_mutex_lock(&ctx->session.lock);
        ctx->session.overflow_gen += n; /* untracked: covered by a quiet-pipeline wait */
        pthread_mutex_unlock(&ctx->session.lock);
    }
    free(ids);
    free(vers);
    /* The events are durable in ingest's outbox; hand them to the broker now so workers see
     * them at once. */
    relay_ingest(ctx);
    return RAG_OK;
}

int rag_doc_put(rag_ctx *ctx, const rag_doc *doc, uint64_t *version_out)
{
    if (!doc)
        return rag_error_set(RAG_EINVAL, "doc is NULL");
    rag_put_result r = {0, 0};
    int rc = rag_doc_put_batch(ctx, doc, 1, &r);
    if (rc)
        return rc;
    if (r.code == RAG_OK && version_out)
        *version_out = r.version;
    return r.code;
}

int rag_doc_delete(rag_ctx *ctx, const char *doc_id)
{
    rag_error_clear();
    if (!ctx)
        return rag_error_set(RAG_EINVAL, "ctx is NULL");
    if (!ctx->ingest)
        return rag_core__hosted_error("rag_doc_delete", "ingest");
    int rc = rag_doc_id_check(doc_id);
    if (rc)
        return rc;
    rc = rag_ingest_delete(ctx->ingest, doc_id);
    if (rc)
        return rc;
    /* Searches hide the document at once (ingest's tombstone); the session entry waits for
     * the index to apply the delete of the version it covered, like any other write. */
    uint64_t covered = deleted_version(ctx, doc_id);
    if (covered) {
        const char *ids[1] = {doc_id};
        session_note(ctx, ids, &covered, 1);
    } else {
        pthread_mutex_lock(&ctx->session.lock);
        ctx->session.overflow_gen++;
        pthread_mutex_unlock(&ctx->session.lock);
    }
    rag_error_clear();
    relay_ingest(ctx);
    return RAG_OK;
}

/* ---- search, assembly, status ------------------------------------------------------------------ */

static int search_call(rag_ctx *ctx, const rag_query *query, rag_results **out);

int rag_search(rag_ctx *ctx, const rag_query *query, rag_results **out)
{
    rag_error_clear();
    if (!ctx)
        return rag_error_set(RAG_EINVAL, "ctx, query and out are required");
    /* the whole call, session wait included: what the caller waited for */
    uint64_t t0 = rag_mono_us();
    int rc = search_call(ctx, query, out);
    rag_hist_observe_us(&ctx->search_latency, rag_mono_us() - t0);
    return rc;
}

static int search_call(rag_ctx *ctx, const rag_query *query, rag_results **out)
{
    if (!query || !out)
        return rag_error_set(RAG_EINVAL, "ctx, query and out are required");
    *out = NULL;
    /* Version-1 queries end before `consistency`: they are eventual. */
    if (query->version >= 2 && query->version <= RAG_QUERY_VERSION) {
        if (query->consistency != RAG_CONSISTENCY_EVENTUAL &&
            query->consistency != RAG_CONSISTENCY_SESSION)
            return rag_error_set(RAG_EINVAL, "unknown consistency %d", (int)query->consistency);
        if (query->consistency == RAG_CONSISTENCY_SESSION) {
            int rc = session_wait(ctx, query->timeout_ms);
            if (rc)
                return rc;
        }
    }
    if (!ctx->retrieve)
        return rag_core__hosted_error("rag_search", "retrieve");
    return rag_retrieve_search(ctx->retrieve, query, out);
}

void rag_results_free(rag_results *results) { rag_retrieve_results_free(results); }

int rag_assemble(rag_ctx *ctx, const rag_results *results, const rag_assemble_opts *opts,
                 char **prompt_out)
{
    rag_error_clear();
    if (!ctx || !results || !opts || !prompt_out)
        return rag_error_set(RAG_EINVAL, "ctx, results, opts and prompt_out are required");
    *prompt_out = NULL;
    return rag_assembler_build(ctx->assembler, results, opts, prompt_out);
}

static void status_queue(rag_status_info *out, const char *name, uint64_t ready, uint64_t delayed,
                         uint64_t inflight)
{
    if (out->queue_count >= RAG_STATUS_MAX_QUEUES)
        return;
    rag_status_queue *q = &out->queues[out->queue_count++];
    snprintf(q->name, sizeof q->name, "%s", name);
    q->ready = ready;
    q->delayed = delayed;
    q->inflight = inflight;
}

int rag_status(rag_ctx *ctx, rag_status_info *out)
{
    rag_error_clear();
    if (!ctx || !out)
        return rag_error_set(RAG_EINVAL, "ctx and out are required");
    if (out->version == 0 || out->version > RAG_STATUS_VERSION)
        return rag_error_set(RAG_EVERSION, "rag_status_info version %u not supported",
                             out->version);
    unsigned int version = out->version;
    /* Clear only what a caller of this version has: an older caller's struct ends before
     * the fields added later. */
    size_t size = version >= 4   ? sizeof *out
                  : version == 3 ? offsetof(rag_status_info, model_generation)
                  : version == 2 ? offsetof(rag_status_info, cache_hits)
                                 : offsetof(rag_status_info, sagas_running);
    memset(out, 0, size);
    out->version = version;

    /* Only the modules this handle hosts are counted (the others report in their process). */
    rag_ingest_stats is;
    rag_index_stats xs;
    memset(&is, 0, sizeof is);
    memset(&xs, 0, sizeof xs);
    int rc = ctx->ingest ? rag_ingest_stats_get(ctx->ingest, &is) : RAG_OK;
    if (rc)
        return rc;
    rc = ctx->index ? rag_index_stats_get(ctx->index, &xs) : RAG_OK;
    if (rc)
        return rc;
    out->documents = is.documents;
    out->versions = is.versions;
    out->chunks = is.chunks;
    out->vectors = xs.vectors;
    out->index_epoch = xs.epoch;
    if (version >= 2) {
        out->sagas_running = is.sagas_running;
        out->sagas_compensating = is.sagas_compensating;
        out->sagas_failed = is.sagas_failed;
    }
    if (version >= 3 && ctx->retrieve)
        rag_retrieve_stats_get(ctx->retrieve, &out->cache_hits, &out->cache_misses);
    if (version >= 4) {
        out->model_generation = ctx->index ? xs.model_gen : rag_embed_model_gen(ctx->embed);
        out->reembed_pending = xs.without_vector;
        snprintf(out->provider_fingerprint, sizeof out->provider_fingerprint, "%s",
                 rag_embed_fingerprint(ctx->embed));
    }
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        uint64_t dead = 0;
        rc = rag_dead_count(ctx->consumers[i]->env, &dead);
        if (rc)
            return rc;
        /* Two consumers may share an env (index): count each env once. */
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= ctx->consumers[j]->env == ctx->consumers[i]->env;
        if (!seen)
            out->dead_letters += dead;
    }
    /* Every topic of the pipeline, consumed here or in another process.  An unreachable
     * broker is reported by the outbox backlog, not as a failure of rag_status. */
    for (size_t i = 0; i < sizeof pipeline_topics / sizeof pipeline_topics[0]; i++) {
        rag_queue_depth d;
        memset(&d, 0, sizeof d);
        rc = ctx->transport.depth(ctx->transport.state, pipeline_topics[i], &d);
        if (rc == RAG_ETRANSIENT) {
            rag_error_clear();
            continue;
        }
        if (rc)
            return rc;
        status_queue(out, pipeline_topics[i], d.ready, d.delayed, d.inflight);
    }
    for (size_t i = 0; i < ctx->outbox_count; i++) {
        uint64_t n = 0;
        rc = rag_outbox_pending(ctx->outboxes[i], &n);
        if (rc)
            return rc;
        char name[RAG_QUEUE_TOPIC_MAX];
        snprintf(name, sizeof name, "outbox:%s", rag_outbox_module(ctx->outboxes[i]));
        status_queue(out, name, n, 0, 0);
    }
    return RAG_OK;
}

/* ---- dead letters ------------------------------------------------------------------------------ */

/* Dead letters live in the consuming module's env ("__dead"), next to its inbox.  The façade
 * only walks the registered consumers; the two index consumers share one env (and so one
 * table), which must be visited once or every index dead letter would be listed twice. */
static int consumer_env_seen_before(const rag_ctx *ctx, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (ctx->consumers[j]->env == ctx->consumers[i]->env)
            return 1;
    return 0;
}

typedef struct dlq_collect {
    rag_dead_letter_info *items;
    size_t n, cap;
    const char *module;
    int err;
} dlq_collect;

static int dlq_collect_one(void *arg, const rag_dead_letter *dl)
{
    dlq_collect *col = arg;
    if (col->n == col->cap) {
        size_t cap = col->cap ? col->cap * 2 : 16;
        rag_dead_letter_info *p = realloc(col->items, cap * sizeof *p);
        if (!p) {
            col->err = rag_error_set(RAG_ENOMEM, "dlq: out of memory listing dead letters");
            return 1; /* stop the scan */
        }
        col->items = p;
        col->cap = cap;
    }
    rag_dead_letter_info *o = &col->items[col->n++];
    memset(o, 0, sizeof *o);
    snprintf(o->id, sizeof o->id, "%s", dl->id);
    snprintf(o->topic, sizeof o->topic, "%s", dl->topic);
    snprintf(o->module, sizeof o->module, "%s", col->module);
    o->code = dl->code;
    o->attempts = dl->attempts;
    o->when_ms = dl->when_ms;
    snprintf(o->reason, sizeof o->reason, "%s", dl->reason);
    /* every event starts with its document and version: name them, so an operator (and
     * rag_fsck) can tell which document a dead letter holds back */
    const char *doc = NULL;
    uint64_t ver = 0;
    if (dl->payload &&
        rag_ev_peek(dl->topic, dl->payload, dl->payload_len, &doc, &ver) == RAG_OK) {
        snprintf(o->doc_id, sizeof o->doc_id, "%s", doc);
        o->version = ver;
    }
    rag_error_clear(); /* a payload that is not an event is not the listing's failure */
    return 0;
}

int rag_dlq_list(rag_ctx *ctx, rag_dead_letter_info **out, size_t *count)
{
    rag_error_clear();
    if (out)
        *out = NULL;
    if (count)
        *count = 0;
    if (!ctx || !out || !count)
        return rag_error_set(RAG_EINVAL, "ctx, out and count are required");
    dlq_collect col = {NULL, 0, 0, NULL, RAG_OK};
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        if (consumer_env_seen_before(ctx, i))
            continue;
        col.module = ctx->consumers[i]->module ? ctx->consumers[i]->module : "";
        int rc = rag_dead_list(ctx->consumers[i]->env, dlq_collect_one, &col);
        if (!rc)
            rc = col.err;
        if (rc) {
            free(col.items);
            return rc;
        }
    }
    if (col.n == 0) {
        free(col.items);
        col.items = NULL;
    }
    *out = col.items; /* plain malloc: rag_free() is free() */
    *count = col.n;
    return RAG_OK;
}

static int dlq_id_check(rag_ctx *ctx, const char *id)
{
    if (!ctx || !id || !*id)
        return rag_error_set(RAG_EINVAL, "ctx and a dead letter id are required");
    if (strlen(id) >= RAG_QUEUE_MSGID_MAX)
        return rag_error_set(RAG_ENOTFOUND, "no dead letter %.80s...: id too long", id);
    return RAG_OK;
}

int rag_dlq_retry(rag_ctx *ctx, const char *id)
{
    rag_error_clear();
    int rc = dlq_id_check(ctx, id);
    if (rc)
        return rc;
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        rag_consumer *c = ctx->consumers[i];
        if (consumer_env_seen_before(ctx, i))
            continue;
        if (!c->outbox)
            continue; /* every module's consumer has one; a retry needs its env's outbox */
        /* The payload goes into the outbox of the env holding the dead letter, i.e. the
         * consuming module's own outbox, with its topic unchanged: routing is by topic, so
         * the same consumer (and no other) gets it again.  The new id is needed because the
         * old one is in this module's inbox and would be skipped as a duplicate. */
        char new_id[RAG_QUEUE_MSGID_MAX];
        rc = rag_dead_retry(c->outbox, id, new_id);
        if (rc == RAG_ENOTFOUND)
            continue;
        if (rc)
            return rc;
        /* Committed: a relay failure is not the caller's failure (the row stays and the next
         * relay by a worker, rag_drain() or rag_open() sends it). */
        size_t moved = 0;
        rag_outbox_relay(c->outbox, &ctx->transport, 0, &moved);
        rag_error_clear();
        return RAG_OK;
    }
    return rag_error_set(RAG_ENOTFOUND, "no dead letter %s", id);
}

int rag_dlq_drop(rag_ctx *ctx, const char *id)
{
    rag_error_clear();
    int rc = dlq_id_check(ctx, id);
    if (rc)
        return rc;
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        if (consumer_env_seen_before(ctx, i))
            continue;
        rc = rag_dead_drop(ctx->consumers[i]->env, id);
        if (rc != RAG_ENOTFOUND)
            return rc;
    }
    return rag_error_set(RAG_ENOTFOUND, "no dead letter %s", id);
}
