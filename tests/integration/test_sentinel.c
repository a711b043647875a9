/*
 * Sentinel concurrency: with the workers running, one thread keeps updating a document whose
 * every version is one chunk holding the sentinel phrase and a version-specific tag, and two
 * multi-chunk documents; two threads search the sentinel phrase (k = 20) in a loop for about
 * three seconds.  The root holds fewer vectors than k, so every search returns every live
 * chunk, and every search must return each document as exactly one version, all of its chunks
 * once: never two versions (a duplicate), never none or part of one (a gap).  Each chunk's
 * text must be the text of the version the result names.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define RUN_MS 3000
#define K 20
#define NMULTI 2
#define NFILL 3
#define TEXT_MAX 2048
#define SENTINEL_PHRASE "lighthouse keeper sentinel watch"

static const char *const multi_ids[NMULTI] = {"multi-a", "multi-b"};
static const char *const fill_ids[NFILL] = {"fill-0", "fill-1", "fill-2"};

/* Texts are a function of (document, version), so a reader can rebuild what it must see. */
static void sentinel_text(char *buf, size_t n, uint64_t version)
{
    snprintf(buf, n, "The " SENTINEL_PHRASE " holds rev%06" PRIu64 ". Only rev%06" PRIu64
             " is current.", version, version);
}

static void multi_text(char *buf, size_t n, int which, uint64_t version)
{
    static const char *const things[] = {"copper kettle", "harbor crane", "meadow fence",
                                         "signal tower",  "orchard gate", "granite quarry",
                                         "violet lamp",   "compass rose"};
    size_t len = 0;
    for (int i = 0; i < 8; i++)
        len += (size_t)snprintf(buf + len, n - len,
                                "%sThe %s of %s rev%06" PRIu64 " stands by the " SENTINEL_PHRASE
                                " in row %d.",
                                i ? " " : "", things[i], multi_ids[which], version, i);
}

static void fill_text(char *buf, size_t n, int i)
{
    snprintf(buf, n, "Filler record %d about the " SENTINEL_PHRASE " and nothing else.", i);
}

typedef struct shared {
    rag_ctx *ctx;
    atomic_int stop;
    pthread_mutex_t lock;
    char failure[512];
    long searches;
    long sentinel_versions_seen; /* distinct changes of the sentinel version seen */
    uint64_t sentinel_puts, multi_puts;
} shared;

static void shared_fail(shared *s, const char *fmt, ...)
{
    pthread_mutex_lock(&s->lock);
    if (!s->failure[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->failure, sizeof s->failure, fmt, ap);
        va_end(ap);
    }
    s->stop = 1;
    pthread_mutex_unlock(&s->lock);
}

static int put(rag_ctx *ctx, const char *id, const char *text, uint64_t *v)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    return rag_doc_put(ctx, &d, v);
}

static void *updater(void *arg)
{
    shared *s = arg;
    char text[TEXT_MAX];
    uint64_t next_sentinel = 2, next_multi[NMULTI] = {2, 2};
    for (unsigned i = 0; !s->stop; i++) {
        uint64_t v = 0;
        sentinel_text(text, sizeof text, next_sentinel);
        int rc = put(s->ctx, "sentinel", text, &v);
        if (rc || v != next_sentinel) {
            shared_fail(s, "put sentinel: %s, v%" PRIu64 " (expected v%" PRIu64 ")",
                        rag_strerror(rc), v, next_sentinel);
            break;
        }
        next_sentinel++;
        s->sentinel_puts++;
        if (i % 3 == 0) {
            int w = (int)((i / 3) % NMULTI);
            multi_text(text, sizeof text, w, next_multi[w]);
            rc = put(s->ctx, multi_ids[w], text, &v);
            if (rc || v != next_multi[w]) {
                shared_fail(s, "put %s: %s, v%" PRIu64, multi_ids[w], rag_strerror(rc), v);
                break;
            }
            next_multi[w]++;
            s->multi_puts++;
        }
        /* a short pause: the pipeline switches versions all the time without the queue
         * growing without bound */
        struct timespec ts = {0, 300 * 1000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Check one document in a result set: one version, chunks 0..n-1 once each, together exactly
 * the text of that version.  Returns the version (0 on failure, with `why` set). */
static uint64_t check_doc(const rag_results *r, const char *id,
                          void (*text_of)(char *, size_t, int, uint64_t), int which, char *why,
                          size_t wl)
{
    const rag_result *by_chunk[64] = {0};
    uint64_t version = 0;
    uint32_t max = 0;
    size_t count = 0;
    for (size_t i = 0; i < r->count; i++) {
        const rag_result *x = &r->items[i];
        if (strcmp(x->doc_id, id) != 0)
            continue;
        if (count++ == 0)
            version = x->version;
        if (x->version != version) {
            snprintf(why, wl, "duplicate: %s returned in v%" PRIu64 " and v%" PRIu64, id,
                     version, x->version);
            return 0;
        }
        if (x->chunk >= 64 || by_chunk[x->chunk]) {
            snprintf(why, wl, "duplicate: %s v%" PRIu64 " chunk %u twice", id, version,
                     x->chunk);
            return 0;
        }
        by_chunk[x->chunk] = x;
        if (x->chunk > max)
            max = x->chunk;
    }
    if (!count) {
        snprintf(why, wl, "gap: %s not returned", id);
        return 0;
    }
    char text[TEXT_MAX];
    text_of(text, sizeof text, which, version);
    for (uint32_t c = 0; c <= max; c++) {
        if (!by_chunk[c]) {
            snprintf(why, wl, "gap: %s v%" PRIu64 " chunk %u missing", id, version, c);
            return 0;
        }
        if (!strstr(text, by_chunk[c]->text)) {
            snprintf(why, wl, "%s v%" PRIu64 " chunk %u is not that version's text: '%s'", id,
                     version, c, by_chunk[c]->text);
            return 0;
        }
    }
    size_t tl = strlen(text), fl = strlen(by_chunk[0]->text), ll = strlen(by_chunk[max]->text);
    if (strncmp(text, by_chunk[0]->text, fl) != 0 || ll > tl ||
        strcmp(text + tl - ll, by_chunk[max]->text) != 0) {
        snprintf(why, wl, "gap: %s v%" PRIu64 ": %u chunk(s) do not cover the text", id, version,
                 max + 1);
        return 0;
    }
    return version;
}

static void sentinel_of(char *buf, size_t n, int which, uint64_t v)
{
    (void)which;
    sentinel_text(buf, n, v);
}

static void fill_of(char *buf, size_t n, int which, uint64_t v)
{
    (void)v;
    fill_text(buf, n, which);
}

/* Every document of the root, each as one complete version.  Returns 1 when all is well;
 * *sentinel_version gets the sentinel's version. */
static int check_results(const rag_results *r, uint64_t *sentinel_version, char *why, size_t wl)
{
    size_t expected = 0;
    uint64_t v = check_doc(r, "sentinel", sentinel_of, 0, why, wl);
    if (!v)
        return 0;
    *sentinel_version = v;
    expected++;
    for (int i = 0; i < NMULTI; i++) {
        uint64_t mv = check_doc(r, multi_ids[i], multi_text, i, why, wl);
        if (!mv)
            return 0;
        /* count this version's chunks */
        for (size_t j = 0; j < r->count; j++)
            expected += strcmp(r->items[j].doc_id, multi_ids[i]) == 0;
    }
    for (int i = 0; i < NFILL; i++) {
        if (!check_doc(r, fill_ids[i], fill_of, i, why, wl))
            return 0;
        expected++;
    }
    if (r->count != expected) {
        snprintf(why, wl, "%zu results, %zu of the known documents", r->count, expected);
        return 0;
    }
    return 1;
}

static void *searcher(void *arg)
{
    shared *s = arg;
    uint64_t last = 0;
    long n = 0, changes = 0;
    char why[400];
    while (!s->stop) {
        rag_query q = RAG_QUERY_INIT;
        q.text = SENTINEL_PHRASE;
        q.k = K;
        q.unrestricted = 1;
        rag_results *r = NULL;
        int rc = rag_search(s->ctx, &q, &r);
        if (rc) {
            shared_fail(s, "rag_search: %s (%s)", rag_strerror(rc), rag_error_last());
            break;
        }
        uint64_t v = 0;
        if (!check_results(r, &v, why, sizeof why)) {
            /* what the search did return, for the report */
            char got[300] = "";
            size_t gl = 0;
            for (size_t i = 0; i < r->count && gl < sizeof got - 40; i++)
                gl += (size_t)snprintf(got + gl, sizeof got - gl, " %s@%" PRIu64 "#%u",
                                       r->items[i].doc_id, r->items[i].version,
                                       r->items[i].chunk);
            shared_fail(s, "search %ld (the sentinel was at v%" PRIu64 " before): %s; "
                        "results:%s", n, last, why, got);
            rag_results_free(r);
            break;
        }
        rag_results_free(r);
        if (v < last) {
            /* versions only move forward: the index never switches back */
            shared_fail(s, "search %ld: sentinel v%" PRIu64 " after v%" PRIu64, n, v, last);
            break;
        }
        changes += v != last;
        last = v;
        n++;
    }
    pthread_mutex_lock(&s->lock);
    s->searches += n;
    s->sentinel_versions_seen += changes;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void test_no_gap_no_duplicate(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("sentinel");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.embed_dim = 64;
    o.chunk_target = 200; /* the multi-chunk documents: several chunks per version */
    o.chunk_min = 64;
    o.chunk_max = 400;
    shared s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    assert_int_equal(rag_open(&s.ctx, root, &o), RAG_OK);
    assert_int_equal(rag_start(s.ctx), RAG_OK);

    char text[TEXT_MAX];
    uint64_t v = 0;
    sentinel_text(text, sizeof text, 1);
    assert_int_equal(put(s.ctx, "sentinel", text, &v), RAG_OK);
    for (int i = 0; i < NMULTI; i++) {
        multi_text(text, sizeof text, i, 1);
        assert_int_equal(put(s.ctx, multi_ids[i], text, &v), RAG_OK);
    }
    for (int i = 0; i < NFILL; i++) {
        fill_text(text, sizeof text, i);
        assert_int_equal(put(s.ctx, fill_ids[i], text, &v), RAG_OK);
    }
    assert_int_equal(rag_drain(s.ctx, 30000), RAG_OK);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(s.ctx, &st), RAG_OK);
    /* k must cover every vector, or "not returned" would not mean "gap" */
    printf("%" PRIu64 " vectors for k = %d\n", st.vectors, K);
    assert_true(st.vectors >= 1 + 2 * NMULTI + NFILL);
    assert_true(st.vectors <= K - 4);
    {
        rag_query q = RAG_QUERY_INIT;
        q.text = SENTINEL_PHRASE;
        q.k = K;
        q.unrestricted = 1;
        rag_results *r = NULL;
        assert_int_equal(rag_search(s.ctx, &q, &r), RAG_OK);
        char why[400] = "";
        uint64_t sv = 0;
        int ok = check_results(r, &sv, why, sizeof why);
        rag_results_free(r);
        if (!ok)
            fail_msg("before the run: %s", why);
        assert_int_equal(sv, 1);
    }

    pthread_t up, se[2];
    assert_int_equal(pthread_create(&up, NULL, updater, &s), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&se[i], NULL, searcher, &s), 0);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        usleep(20000);
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= RUN_MS || s.stop)
            break;
    }
    s.stop = 1;
    pthread_join(up, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(se[i], NULL);
    printf("%ld searches, %" PRIu64 " sentinel and %" PRIu64 " multi-chunk updates, the "
           "searchers saw the sentinel switch %ld times\n",
           s.searches, s.sentinel_puts, s.multi_puts, s.sentinel_versions_seen);
    if (s.failure[0]) {
        rag_close(s.ctx); /* fail without leaking the handle */
        pthread_mutex_destroy(&s.lock);
        rag_test_rmtree(root);
        free(root);
        fail_msg("%s", s.failure);
    }
    assert_true(s.searches > 100);
    assert_true(s.sentinel_versions_seen > 2); /* the searches ran while versions switched */

    /* settled: the newest versions, and a clean fsck */
    assert_int_equal(rag_drain(s.ctx, 60000), RAG_OK);
    rag_query q = RAG_QUERY_INIT;
    q.text = SENTINEL_PHRASE;
    q.k = K;
    q.unrestricted = 1;
    rag_results *r = NULL;
    assert_int_equal(rag_search(s.ctx, &q, &r), RAG_OK);
    char why[400] = "";
    uint64_t sv = 0;
    int ok = check_results(r, &sv, why, sizeof why);
    rag_results_free(r);
    if (!ok)
        fail_msg("after the drain: %s", why);
    assert_int_equal(sv, s.sentinel_puts + 1);
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(s.ctx, 0, 60000, &rep), RAG_OK);
    for (size_t i = 0; i < rep->count; i++)
        printf("  fsck: %s %s: %s\n", rag_fsck_kind_name(rep->issues[i].kind),
               rep->issues[i].doc_id, rep->issues[i].detail);
    assert_int_equal(rep->count, 0);
    rag_fsck_report_free(rep);
    assert_int_equal(rag_status(s.ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 1 + NMULTI + NFILL);
    assert_int_equal(st.versions, st.documents);
    assert_int_equal(st.chunks, st.vectors);
    assert_int_equal(st.dead_letters, 0);

    rag_close(s.ctx);
    pthread_mutex_destroy(&s.lock);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_gap_no_duplicate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
