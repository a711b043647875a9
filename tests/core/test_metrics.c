/*
 * rag_metrics_text and rag_log_set.
 *
 * The metrics text is parsed as a Prometheus scraper would: every line is a HELP/TYPE comment
 * or a sample of the exposition grammar (0.0.4), every sample belongs to a family declared
 * by a TYPE line, each histogram's buckets are cumulative, ordered, end with +Inf, and the
 * +Inf bucket equals _count.  Counters must move with the work done: puts handled by each
 * module, searches timed, provider calls timed, a transient failure retried, a poisoned
 * document dead-lettered.  The log sink must see a poisoned document's dead letter as a WARN
 * from embed (without the document's text), honour max_level, and be silent after NULL.
 */
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/rag.h"
#include "test_support.h"

/* ---- a small exposition-format parser ------------------------------------------------- */

#define MAX_FAMILIES 128
#define NAME_MAX_LEN 128

typedef struct family {
    char name[NAME_MAX_LEN];
    char type[32];
} family;

typedef struct parsed {
    family fam[MAX_FAMILIES];
    size_t nfam;
    size_t samples;
} parsed;

static int is_name_start(int c) { return isalpha(c) || c == '_' || c == ':'; }
static int is_name_char(int c) { return isalnum(c) || c == '_' || c == ':'; }

static const family *family_of(const parsed *p, const char *sample_name)
{
    for (size_t i = 0; i < p->nfam; i++) {
        const family *f = &p->fam[i];
        size_t n = strlen(f->name);
        if (strcmp(sample_name, f->name) == 0)
            return f;
        if (!strcmp(f->type, "histogram") && !strncmp(sample_name, f->name, n) &&
            (!strcmp(sample_name + n, "_bucket") || !strcmp(sample_name + n, "_sum") ||
             !strcmp(sample_name + n, "_count")))
            return f;
    }
    return NULL;
}

/* Parse a value: a float, or +Inf / -Inf / NaN.  Returns the end, NULL when malformed. */
static const char *parse_value(const char *s, double *v)
{
    if (!strncmp(s, "+Inf", 4)) {
        *v = INFINITY;
        return s + 4;
    }
    if (!strncmp(s, "-Inf", 4)) {
        *v = -INFINITY;
        return s + 4;
    }
    if (!strncmp(s, "NaN", 3)) {
        *v = NAN;
        return s + 3;
    }
    char *end = NULL;
    *v = strtod(s, &end);
    return end == s ? NULL : end;
}

/* One sample line: name, labels (copied verbatim into `labels`), value. */
static void parse_sample(const char *line, char *name, char *labels, double *value)
{
    const char *s = line;
    if (!is_name_start((unsigned char)*s))
        fail_msg("bad metric name in: %s", line);
    size_t n = 0;
    while (is_name_char((unsigned char)*s)) {
        assert_true(n < NAME_MAX_LEN - 1);
        name[n++] = *s++;
    }
    name[n] = 0;
    labels[0] = 0;
    if (*s == '{') {
        const char *lstart = s;
        s++;
        while (*s != '}') {
            if (!is_name_start((unsigned char)*s) || *s == ':')
                fail_msg("bad label name in: %s", line);
            while (is_name_char((unsigned char)*s) && *s != ':')
                s++;
            if (*s++ != '=' || *s++ != '"')
                fail_msg("label without =\"value\" in: %s", line);
            while (*s != '"') {
                if (!*s || *s == '\n')
                    fail_msg("unterminated label value in: %s", line);
                if (*s == '\\') {
                    s++;
                    if (*s != '\\' && *s != '"' && *s != 'n')
                        fail_msg("bad escape in: %s", line);
                }
                s++;
            }
            s++;
            if (*s == ',')
                s++;
            else if (*s != '}')
                fail_msg("labels not separated by ',' in: %s", line);
        }
        s++;
        size_t len = (size_t)(s - lstart);
        assert_true(len < 256);
        memcpy(labels, lstart, len);
        labels[len] = 0;
    }
    if (*s++ != ' ')
        fail_msg("no single space before the value in: %s", line);
    s = parse_value(s, value);
    if (!s)
        fail_msg("bad value in: %s", line);
    if (*s == ' ') { /* optional timestamp */
        char *end;
        strtoll(s + 1, &end, 10);
        if (end == s + 1)
            fail_msg("bad timestamp in: %s", line);
        s = end;
    }
    if (*s)
        fail_msg("trailing characters in: %s", line);
}

/* Histogram state while its lines go by. */
typedef struct hist_check {
    char name[NAME_MAX_LEN];
    double last_le, last_count, inf_count;
    int have_inf, buckets;
} hist_check;

/* Validate the whole text; fails the test on any violation. */
static void parse_text(const char *text, parsed *p)
{
    memset(p, 0, sizeof *p);
    assert_non_null(text);
    size_t tlen = strlen(text);
    assert_true(tlen > 0);
    assert_int_equal(text[tlen - 1], '\n');
    char *copy = strdup(text);
    hist_check h;
    memset(&h, 0, sizeof h);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# TYPE ", 7)) {
            char name[NAME_MAX_LEN], type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                        !strcmp(type, "histogram") || !strcmp(type, "summary") ||
                        !strcmp(type, "untyped"));
            for (size_t i = 0; i < p->nfam; i++)
                if (!strcmp(p->fam[i].name, name))
                    fail_msg("family %s declared twice", name);
            assert_true(p->nfam < MAX_FAMILIES);
            snprintf(p->fam[p->nfam].name, NAME_MAX_LEN, "%s", name);
            snprintf(p->fam[p->nfam].type, sizeof p->fam[p->nfam].type, "%s", type);
            p->nfam++;
            continue;
        }
        if (!strncmp(line, "# HELP ", 7)) {
            assert_true(is_name_start((unsigned char)line[7]));
            continue;
        }
        if (line[0] == '#')
            continue; /* other comments are allowed */
        char name[NAME_MAX_LEN], labels[256];
        double v;
        parse_sample(line, name, labels, &v);
        p->samples++;
        const family *f = family_of(p, name);
        if (!f)
            fail_msg("sample %s without a TYPE line before it", name);
        assert_true(strncmp(name, "ragcore_", 8) == 0);
        if (!strcmp(f->type, "counter") || !strcmp(f->type, "histogram"))
            assert_true(v >= 0);
        if (strcmp(f->type, "histogram"))
            continue;
        if (strcmp(h.name, f->name)) {
            memset(&h, 0, sizeof h);
            snprintf(h.name, sizeof h.name, "%s", f->name);
            h.last_le = -INFINITY;
        }
        size_t n = strlen(f->name);
        if (!strcmp(name + n, "_bucket")) {
            const char *le = strstr(labels, "le=\"");
            assert_non_null(le);
            double bound;
            const char *end = parse_value(le + 4, &bound);
            assert_non_null(end);
            assert_int_equal(*end, '"');
            assert_false(h.have_inf); /* +Inf is the last bucket */
            if (!(bound > h.last_le))
                fail_msg("%s: bucket bounds not increasing at %s", h.name, line);
            if (v < h.last_count)
                fail_msg("%s: buckets not cumulative at %s", h.name, line);
            h.last_le = bound;
            h.last_count = v;
            h.buckets++;
            if (isinf(bound)) {
                h.have_inf = 1;
                h.inf_count = v;
            }
        } else if (!strcmp(name + n, "_count")) {
            if (!h.have_inf)
                fail_msg("%s: _count before a +Inf bucket", h.name);
            if (v != h.inf_count)
                fail_msg("%s: +Inf bucket %g != _count %g", h.name, h.inf_count, v);
        }
    }
    free(copy);
    assert_true(p->samples > 0);
}

/* Value of the sample whose name+labels are exactly `key` (e.g. `a{b="c"}`); fails if absent. */
static double sample_value(const char *text, const char *key)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (!strncmp(line, key, klen) && line[klen] == ' ')
            return strtod(line + klen + 1, NULL);
        line = nl ? nl + 1 : NULL;
    }
    fail_msg("no sample %s in the metrics text", key);
    return 0;
}

static char *metrics(rag_ctx *ctx, parsed *p)
{
    char *text = NULL;
    assert_int_equal(rag_metrics_text(ctx, &text), RAG_OK);
    parse_text(text, p);
    return text;
}

/* ---- fixture -------------------------------------------------------------------------- */

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
    rag_fake_provider_state *fs;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("metrics");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.provider = rag_fake_provider_new(64, &f->fs);
    o.retry_base_ms = 1;
    o.retry_cap_ms = 2;
    assert_int_equal(rag_open(&f->ctx, f->root, &o), RAG_OK);
    free(o.provider); /* rag_open copied the struct and owns its state */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_log_set(NULL, NULL, 0);
    rag_close(f->ctx);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static int put_text(rag_ctx *ctx, const char *id, const char *text)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    return rag_doc_put(ctx, &d, NULL);
}

static void search(rag_ctx *ctx, const char *q)
{
    rag_query query = RAG_QUERY_INIT;
    query.text = q;
    query.unrestricted = 1;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &query, &r), RAG_OK);
    rag_results_free(r);
}

#define HANDLED(m, t) "ragcore_consumer_messages_handled_total{module=\"" m "\",topic=\"" t "\"}"

/* ---- metrics -------------------------------------------------------------------------- */

static void test_metrics_text(void **state)
{
    fixture *f = *state;
    parsed p;
    assert_int_equal(rag_metrics_text(NULL, NULL), RAG_EINVAL);

    char *t0 = metrics(f->ctx, &p);
    assert_true(sample_value(t0, "ragcore_search_duration_seconds_count") == 0);
    assert_true(sample_value(t0, HANDLED("embed", "doc.chunked")) == 0);
    /* every pipeline topic, each state */
    const char *topics[] = {"doc.chunked", "doc.embedded", "doc.deleted",
                            "doc.revert",  "doc.indexed",  "doc.failed"};
    const char *states[] = {"ready", "delayed", "inflight"};
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < 3; j++) {
            char key[160];
            snprintf(key, sizeof key, "ragcore_queue_depth_messages{topic=\"%s\",state=\"%s\"}",
                     topics[i], states[j]);
            assert_true(sample_value(t0, key) == 0);
        }
    rag_free(t0);

    /* three documents, not yet moved: visible as embed's lag and queue depth */
    assert_int_equal(put_text(f->ctx, "a", "the quick brown fox jumps over the lazy dog"), RAG_OK);
    assert_int_equal(put_text(f->ctx, "b", "lorem ipsum dolor sit amet consectetur"), RAG_OK);
    assert_int_equal(put_text(f->ctx, "c", "metrics are scraped by prometheus servers"), RAG_OK);
    char *t1 = metrics(f->ctx, &p);
    assert_true(sample_value(t1, "ragcore_consumer_lag_messages{module=\"embed\"}") == 3);
    assert_true(sample_value(t1, "ragcore_queue_depth_messages{topic=\"doc.chunked\",state=\"ready\"}") == 3);
    assert_true(sample_value(t1, "ragcore_sagas{state=\"running\"}") == 3);
    rag_free(t1);

    /* one transient provider failure: retried once, then handled */
    f->fs->transient_failures = 1;
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    search(f->ctx, "quick fox");
    search(f->ctx, "prometheus");
    search(f->ctx, "prometheus"); /* the cache answers the repeat */
    char *t2 = metrics(f->ctx, &p);
    assert_true(sample_value(t2, HANDLED("embed", "doc.chunked")) == 3);
    assert_true(sample_value(t2, HANDLED("index", "doc.embedded")) == 3);
    assert_true(sample_value(t2, HANDLED("ingest", "doc.indexed")) == 3);
    assert_true(sample_value(t2, "ragcore_consumer_messages_retried_total{module=\"embed\",topic=\"doc.chunked\"}") >= 1);
    assert_true(sample_value(t2, "ragcore_consumer_lag_messages{module=\"embed\"}") == 0);
    assert_true(sample_value(t2, "ragcore_documents") == 3);
    assert_true(sample_value(t2, "ragcore_vectors") >= 3);
    assert_true(sample_value(t2, "ragcore_sagas{state=\"running\"}") == 0);
    assert_true(sample_value(t2, "ragcore_search_duration_seconds_count") == 3);
    assert_true(sample_value(t2, "ragcore_search_duration_seconds_bucket{le=\"+Inf\"}") == 3);
    assert_true(sample_value(t2, "ragcore_search_duration_seconds_sum") > 0);
    /* provider calls: the failed one and the successful ones are all timed */
    assert_true(sample_value(t2, "ragcore_embed_provider_duration_seconds_count") >= 2);
    double hits = sample_value(t2, "ragcore_cache_hits_total");
    double misses = sample_value(t2, "ragcore_cache_misses_total");
    assert_true(hits >= 1 && misses >= 2);
    double ratio = sample_value(t2, "ragcore_cache_hit_ratio");
    assert_true(fabs(ratio - hits / (hits + misses)) < 1e-5);
    rag_free(t2);

    /* a poisoned document is dead-lettered by embed */
    f->fs->fail_marker = "POISON";
    f->fs->fail_code = RAG_EPROVIDER;
    assert_int_equal(put_text(f->ctx, "bad", "this text holds POISON for the provider"), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    char *t3 = metrics(f->ctx, &p);
    assert_true(sample_value(t3, "ragcore_consumer_messages_dead_lettered_total{module=\"embed\",topic=\"doc.chunked\"}") == 1);
    assert_true(sample_value(t3, "ragcore_dead_letters{module=\"embed\"}") == 1);
    assert_true(sample_value(t3, "ragcore_dead_letters{module=\"index\"}") == 0);
    assert_true(sample_value(t3, "ragcore_sagas{state=\"failed\"}") == 1);
    assert_true(sample_value(t3, HANDLED("ingest", "doc.failed")) == 1);
    assert_true(sample_value(t3, "ragcore_outbox_backlog_messages{module=\"ingest\"}") == 0);
    rag_free(t3);
}

/* ---- logging -------------------------------------------------------------------------- */

typedef struct log_event {
    int level;
    char module[32], event[64], message[1024];
} log_event;

typedef struct collector {
    pthread_mutex_t lock;
    log_event ev[256];
    size_t n, dropped;
} collector;

static void collect(void *user, int level, const char *module, const char *event,
                    const char *message)
{
    collector *c = user;
    pthread_mutex_lock(&c->lock);
    if (c->n < sizeof c->ev / sizeof c->ev[0]) {
        log_event *e = &c->ev[c->n++];
        e->level = level;
        snprintf(e->module, sizeof e->module, "%s", module);
        snprintf(e->event, sizeof e->event, "%s", event);
        snprintf(e->message, sizeof e->message, "%s", message);
    } else {
        c->dropped++;
    }
    pthread_mutex_unlock(&c->lock);
}

static const log_event *find_event(const collector *c, const char *event)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->ev[i].event, event))
            return &c->ev[i];
    return NULL;
}

static void collector_reset(collector *c)
{
    c->n = 0;
    c->dropped = 0;
}

static void test_log_callback(void **state)
{
    fixture *f = *state;
    collector col;
    memset(&col, 0, sizeof col);
    pthread_mutex_init(&col.lock, NULL);

    assert_int_equal(rag_log_set(collect, &col, 0), RAG_EINVAL);
    assert_int_equal(rag_log_set(collect, &col, RAG_LOG_DEBUG + 1), RAG_EINVAL);

    /* WARN: the dead letter and the provider error, nothing chattier */
    assert_int_equal(rag_log_set(collect, &col, RAG_LOG_WARN), RAG_OK);
    f->fs->fail_marker = "POISON";
    f->fs->fail_code = RAG_EPROVIDER;
    assert_int_equal(put_text(f->ctx, "poisoned", "a secret body with POISON inside"), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    const log_event *dl = find_event(&col, "dead_letter");
    assert_non_null(dl);
    assert_int_equal(dl->level, RAG_LOG_WARN);
    assert_string_equal(dl->module, "embed");
    assert_non_null(strstr(dl->message, "doc.chunked"));
    assert_non_null(strstr(dl->message, "ingest-")); /* the message id (ingest emitted it) */
    assert_non_null(strstr(dl->message, rag_strerror(RAG_EPROVIDER)));
    const log_event *pe = find_event(&col, "provider_error");
    assert_non_null(pe);
    assert_int_equal(pe->level, RAG_LOG_WARN);
    for (size_t i = 0; i < col.n; i++) {
        assert_true(col.ev[i].level <= RAG_LOG_WARN); /* max_level filters */
        assert_null(strstr(col.ev[i].message, "secret body")); /* never document text */
    }
    assert_null(find_event(&col, "retry"));

    /* DEBUG: a transient failure shows up as a retry */
    collector_reset(&col);
    assert_int_equal(rag_log_set(collect, &col, RAG_LOG_DEBUG), RAG_OK);
    f->fs->fail_marker = NULL;
    f->fs->transient_failures = 1;
    assert_int_equal(put_text(f->ctx, "retried", "a document that is retried once"), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    const log_event *re = find_event(&col, "retry");
    assert_non_null(re);
    assert_int_equal(re->level, RAG_LOG_DEBUG);
    assert_string_equal(re->module, "embed");
    assert_null(find_event(&col, "dead_letter"));

    /* NULL silences everything */
    collector_reset(&col);
    assert_int_equal(rag_log_set(NULL, NULL, 0), RAG_OK);
    f->fs->fail_marker = "POISON";
    assert_int_equal(put_text(f->ctx, "poisoned2", "more POISON here"), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(col.n, 0);

    /* INFO: close and open are lifecycle events */
    assert_int_equal(rag_log_set(collect, &col, RAG_LOG_INFO), RAG_OK);
    rag_close(f->ctx);
    f->ctx = NULL;
    const log_event *cl = find_event(&col, "close");
    assert_non_null(cl);
    assert_int_equal(cl->level, RAG_LOG_INFO);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.provider = rag_fake_provider_new(64, &f->fs);
    assert_int_equal(rag_open(&f->ctx, f->root, &o), RAG_OK);
    free(o.provider);
    const log_event *op = find_event(&col, "open");
    assert_non_null(op);
    assert_int_equal(op->level, RAG_LOG_INFO);
    assert_string_equal(op->module, "core");
    assert_int_equal(rag_log_set(NULL, NULL, 0), RAG_OK);
    assert_int_equal(col.dropped, 0);
    pthread_mutex_destroy(&col.lock);
}

/* Workers log from their own threads; setting and clearing the sink meanwhile is safe and,
 * once rag_log_set(NULL) returned, nothing reaches the old sink. */
static void test_log_from_workers(void **state)
{
    fixture *f = *state;
    collector col;
    memset(&col, 0, sizeof col);
    pthread_mutex_init(&col.lock, NULL);
    f->fs->fail_marker = "POISON";
    f->fs->fail_code = RAG_EPROVIDER;
    assert_int_equal(rag_start(f->ctx), RAG_OK);
    for (int round = 0; round < 20; round++) {
        assert_int_equal(rag_log_set(collect, &col, round % 2 ? RAG_LOG_DEBUG : RAG_LOG_WARN),
                         RAG_OK);
        char id[32];
        snprintf(id, sizeof id, "w%d", round);
        assert_int_equal(put_text(f->ctx, id, round % 3 ? "plain words" : "POISON words"),
                         RAG_OK);
    }
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(rag_log_set(NULL, NULL, 0), RAG_OK);
    pthread_mutex_lock(&col.lock);
    size_t seen = col.n;
    pthread_mutex_unlock(&col.lock);
    assert_non_null(find_event(&col, "dead_letter"));
    search(f->ctx, "plain");
    assert_int_equal(rag_stop(f->ctx), RAG_OK);
    assert_int_equal(col.n, seen); /* nothing after the sink was cleared */
    pthread_mutex_destroy(&col.lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_from_workers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
