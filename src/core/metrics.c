/*
 * rag_metrics_text: the handle's state in the Prometheus text exposition format 0.0.4.
 *
 * Gauges come from rag_status() (one consistent code path for depths, counts and sagas, so
 * `rag status` and a scrape never disagree about what they measure) plus per-module dead
 * letters; counters and histograms are the lock-free atomics kept by the consumers (queue),
 * the embed module (provider latency) and the handle (search latency).  Nothing here takes a
 * lock that the pipeline holds, so a scrape never stalls the workers.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "rag_events.h"

/* Label values are module and topic names today; escape anyway so that the text stays
 * parseable whatever a future topic is called. */
static void put_label_value(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(FILE *f, const char *name, const char *l1, const char *v1, const char *l2,
                       const char *v2, uint64_t value)
{
    fputs(name, f);
    if (l1) {
        fprintf(f, "{%s=\"", l1);
        put_label_value(f, v1);
        fputc('"', f);
        if (l2) {
            fprintf(f, ",%s=\"", l2);
            put_label_value(f, v2);
            fputc('"', f);
        }
        fputc('}', f);
    }
    fprintf(f, " %llu\n", (unsigned long long)value);
}

static void gauge1(FILE *f, const char *name, const char *help, uint64_t value)
{
    header(f, name, "gauge", help);
    sample_u64(f, name, NULL, NULL, NULL, NULL, value);
}

/* Buckets are kept per bucket; the exposition wants them cumulative, and _count equal to the
 * +Inf bucket: both come from one pass over one read of each bucket, so they always agree
 * (the sum is read separately and may run a few observations ahead; Prometheus allows it). */
static void histogram(FILE *f, const char *name, const char *help, const rag_hist *h)
{
    header(f, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t b = 0; b <= RAG_HIST_BOUNDS; b++) {
        cum += h ? atomic_load_explicit(&((rag_hist *)h)->bucket[b], memory_order_relaxed) : 0;
        if (b < RAG_HIST_BOUNDS)
            fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, rag_hist_bounds[b],
                    (unsigned long long)cum);
        else
            fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    uint64_t sum_us = h ? atomic_load_explicit(&((rag_hist *)h)->sum_us, memory_order_relaxed) : 0;
    fprintf(f, "%s_sum %.6f\n", name, (double)sum_us / 1e6);
    fprintf(f, "%s_count %llu\n", name, (unsigned long long)cum);
}

static int consumer_env_seen(const rag_ctx *ctx, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (ctx->consumers[j]->env == ctx->consumers[i]->env)
            return 1;
    return 0;
}

static const rag_status_queue *find_queue(const rag_status_info *st, const char *name)
{
    for (size_t i = 0; i < st->queue_count; i++)
        if (strcmp(st->queues[i].name, name) == 0)
            return &st->queues[i];
    return NULL;
}

static void consumer_counter(FILE *f, const rag_ctx *ctx, const char *name, const char *help,
                             size_t field)
{
    header(f, name, "counter", help);
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        rag_consumer *c = ctx->consumers[i];
        _Atomic uint64_t *ctr = (_Atomic uint64_t *)((char *)c + field);
        sample_u64(f, name, "module", c->module ? c->module : "", "topic", c->topic,
                   atomic_load(ctr));
    }
}

static int write_metrics(rag_ctx *ctx, FILE *f)
{
    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    int rc = rag_status(ctx, &st);
    if (rc)
        return rc;

    header(f, "ragcore_build_info", "gauge", "Library version of this process (always 1).");
    fprintf(f, "ragcore_build_info{version=\"%s\"} 1\n", rag_version_string());

    /* ---- queues ---- */
    header(f, "ragcore_queue_depth_messages", "gauge",
           "Messages in a pipeline topic by state (ready, delayed for a retry, inflight).");
    for (size_t i = 0; i < st.queue_count; i++) {
        const rag_status_queue *q = &st.queues[i];
        if (strncmp(q->name, "outbox:", 7) == 0)
            continue;
        sample_u64(f, "ragcore_queue_depth_messages", "topic", q->name, "state", "ready",
                   q->ready);
        sample_u64(f, "ragcore_queue_depth_messages", "topic", q->name, "state", "delayed",
                   q->delayed);
        sample_u64(f, "ragcore_queue_depth_messages", "topic", q->name, "state", "inflight",
                   q->inflight);
    }
    header(f, "ragcore_outbox_backlog_messages", "gauge",
           "Events committed in a module's outbox and not yet handed to the transport.");
    for (size_t i = 0; i < st.queue_count; i++)
        if (strncmp(st.queues[i].name, "outbox:", 7) == 0)
            sample_u64(f, "ragcore_outbox_backlog_messages", "module", st.queues[i].name + 7,
                       NULL, NULL, st.queues[i].ready);

    header(f, "ragcore_dead_letters", "gauge",
           "Messages parked in a module's dead-letter table (rag dlq list).");
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        if (consumer_env_seen(ctx, i))
            continue; /* the index's consumers share one env and one table */
        uint64_t dead = 0;
        rc = rag_dead_count(ctx->consumers[i]->env, &dead);
        if (rc)
            return rc;
        sample_u64(f, "ragcore_dead_letters", "module",
                   ctx->consumers[i]->module ? ctx->consumers[i]->module : "", NULL, NULL, dead);
    }

    /* Lag: what each hosted module still has to consume, all states of its topics summed.
     * Modules are listed in consumer order, each once. */
    header(f, "ragcore_consumer_lag_messages", "gauge",
           "Messages waiting in the topics a module consumes (ready, delayed and inflight).");
    for (size_t i = 0; i < ctx->consumer_count; i++) {
        const char *mod = ctx->consumers[i]->module ? ctx->consumers[i]->module : "";
        int listed = 0;
        for (size_t j = 0; j < i; j++)
            listed |= strcmp(ctx->consumers[j]->module ? ctx->consumers[j]->module : "", mod) == 0;
        if (listed)
            continue;
        uint64_t lag = 0;
        for (size_t j = i; j < ctx->consumer_count; j++) {
            if (strcmp(ctx->consumers[j]->module ? ctx->consumers[j]->module : "", mod) != 0)
                continue;
            const rag_status_queue *q = find_queue(&st, ctx->consumers[j]->topic);
            if (q)
                lag += q->ready + q->delayed + q->inflight;
        }
        sample_u64(f, "ragcore_consumer_lag_messages", "module", mod, NULL, NULL, lag);
    }

    consumer_counter(f, ctx, "ragcore_consumer_messages_handled_total",
                     "Messages a consumer applied since the handle was opened.",
                     offsetof(rag_consumer, n_handled));
    consumer_counter(f, ctx, "ragcore_consumer_messages_retried_total",
                     "Deliveries that failed transiently and were put back for a retry.",
                     offsetof(rag_consumer, n_retried));
    consumer_counter(f, ctx, "ragcore_consumer_messages_dead_lettered_total",
                     "Messages a consumer moved to its dead-letter table.",
                     offsetof(rag_consumer, n_dead));
    consumer_counter(f, ctx, "ragcore_consumer_duplicates_skipped_total",
                     "Redeliveries of messages already applied, skipped by the inbox.",
                     offsetof(rag_consumer, n_duplicates));

    /* ---- retrieve cache ---- */
    if (ctx->retrieve) {
        header(f, "ragcore_cache_hits_total", "counter",
               "Searches answered from the retrieve result cache.");
        sample_u64(f, "ragcore_cache_hits_total", NULL, NULL, NULL, NULL, st.cache_hits);
        header(f, "ragcore_cache_misses_total", "counter",
               "Searches that ran against the index.");
        sample_u64(f, "ragcore_cache_misses_total", NULL, NULL, NULL, NULL, st.cache_misses);
        uint64_t all = st.cache_hits + st.cache_misses;
        header(f, "ragcore_cache_hit_ratio", "gauge",
               "cache hits / (hits + misses); 0 before the first search.");
        fprintf(f, "ragcore_cache_hit_ratio %.6f\n", all ? (double)st.cache_hits / (double)all : 0.0);
    }

    /* ---- contents ---- */
    gauge1(f, "ragcore_documents", "Live (not deleted) documents.", st.documents);
    gauge1(f, "ragcore_document_versions", "Stored document versions.", st.versions);
    gauge1(f, "ragcore_chunks", "Stored chunks.", st.chunks);
    gauge1(f, "ragcore_vectors", "Vectors in the index.", st.vectors);
    header(f, "ragcore_sagas", "gauge",
           "Document sagas by state: running (on their way through the pipeline), failed "
           "(newest version compensated), compensating.");
    sample_u64(f, "ragcore_sagas", "state", "running", NULL, NULL, st.sagas_running);
    sample_u64(f, "ragcore_sagas", "state", "failed", NULL, NULL, st.sagas_failed);
    sample_u64(f, "ragcore_sagas", "state", "compensating", NULL, NULL, st.sagas_compensating);
    gauge1(f, "ragcore_reembed_pending_chunks",
           "Live chunks still without a vector of the current model (re-embed).",
           st.reembed_pending);

    /* ---- latency ---- */
    histogram(f, "ragcore_search_duration_seconds",
              "Duration of rag_search calls on this handle, session waits included.",
              &ctx->search_latency);
    histogram(f, "ragcore_embed_provider_duration_seconds",
              "Duration of the embed module's embedding provider calls.",
              ctx->embed ? rag_embed_provider_latency(ctx->embed) : NULL);
    return RAG_OK;
}

int rag_metrics_text(rag_ctx *ctx, char **out)
{
    rag_error_clear();
    if (out)
        *out = NULL;
    if (!ctx || !out)
        return rag_error_set(RAG_EINVAL, "ctx and out are required");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return rag_error_set(RAG_ENOMEM, "metrics: cannot open a memory stream");
    int rc = write_metrics(ctx, f);
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    if (!rc && bad)
        rc = rag_error_set(RAG_ENOMEM, "metrics: out of memory writing the text");
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf; /* malloc'ed by the stream: rag_free() is free() */
    return RAG_OK;
}
