/*
 * Session consistency through the public API (rag_query.consistency).
 *
 *   - with workers: a put followed at once by a SESSION search finds the new version, every
 *     time (200 updates of one document); an EVENTUAL search right after the put may not;
 *   - a delete followed by a SESSION search never returns the document;
 *   - a poisoned version (the provider rejects it with RAG_EPROVIDER) settles as failed: the
 *     SESSION search returns long before its timeout, with the previous version;
 *   - without workers nothing is applied, so a SESSION search ends in RAG_ETIMEOUT naming the
 *     document and the cure; after rag_drain() it returns at once;
 *   - more writes than the handle tracks one by one: the search waits for a quiet pipeline
 *     instead, and everything is indexed when it returns;
 *   - several threads, each reading its own writes;
 *   - version-1 query and version-2 status structs of their exact old sizes still work, and
 *     rag_status v3 reports the result cache's hits and misses.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define DIM 64
#define MARKER "POISONED"
/* RAG_SESSION_MAX of src/core/core_internal.h (writes tracked one by one) */
#define SESSION_TRACKED 4096

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
} fixture;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void open_root(fixture *f, int workers)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.retry_base_ms = 1;
    o.retry_cap_ms = 10;
    rag_fake_provider_state *fs = NULL;
    rag_embed_provider *p = rag_fake_provider_new(DIM, &fs);
    fs->fail_marker = MARKER;
    fs->fail_code = RAG_EPROVIDER;
    o.provider = p;
    int rc = rag_open(&f->ctx, f->root, &o);
    free(p); /* rag_open copied the struct and owns the state */
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    if (workers)
        assert_int_equal(rag_start(f->ctx), RAG_OK);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("session");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_close(f->ctx);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static int put_text(rag_ctx *ctx, const char *id, const char *text, uint64_t *version)
{
    rag_doc d;
    memset(&d, 0, sizeof d);
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    return rag_doc_put(ctx, &d, version);
}

static rag_query query(const char *text, rag_consistency c, uint32_t timeout_ms)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = 20;
    q.unrestricted = 1;
    q.consistency = c;
    q.timeout_ms = timeout_ms;
    return q;
}

/* The version of `doc` among the results, 0 if absent. */
static uint64_t found_version(const rag_results *r, const char *doc)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->items[i].doc_id, doc) == 0)
            return r->items[i].version;
    return 0;
}

static void put_background(rag_ctx *ctx)
{
    static const char *texts[] = {
        "Rivers carry water and boats from the mountains down to the sea.",
        "Sourdough bread needs flour, water, salt and a lively starter.",
        "Jazz musicians improvise over chord changes and rhythm sections.",
        "Migrating birds navigate by the stars and the magnetic field.",
    };
    char id[32];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "background-%d", i);
        assert_int_equal(put_text(ctx, id, texts[i], NULL), RAG_OK);
    }
}

/* ---------------------------------------------------------------------------------------- */

static void test_read_your_writes(void **state)
{
    fixture *f = *state;
    open_root(f, 1);
    put_background(f->ctx);
    int eventual_missed = 0;
    char text[256], term[64];
    for (int i = 0; i < 200; i++) {
        snprintf(term, sizeof term, "quokka%03d", i);
        snprintf(text, sizeof text,
                 "Probe document, revision %d. The marker word of this revision is %s and it "
                 "changes every time.", i, term);
        uint64_t v = 0;
        assert_int_equal(put_text(f->ctx, "probe", text, &v), RAG_OK);
        assert_int_equal(v, (uint64_t)i + 1);
        rag_results *r = NULL;
        /* EVENTUAL right away: may or may not see the new version yet */
        rag_query q = query(term, RAG_CONSISTENCY_EVENTUAL, 0);
        assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
        eventual_missed += found_version(r, "probe") != v;
        rag_results_free(r);
        /* SESSION: must see it, every time */
        q = query(term, RAG_CONSISTENCY_SESSION, 10000);
        int rc = rag_search(f->ctx, &q, &r);
        if (rc)
            fprintf(stderr, "iteration %d: %s (%s)\n", i, rag_strerror(rc), rag_error_last());
        assert_int_equal(rc, RAG_OK);
        assert_true(r->count > 0);
        assert_string_equal(r->items[0].doc_id, "probe");
        assert_int_equal(r->items[0].version, v);
        assert_non_null(strstr(r->items[0].text, term));
        rag_results_free(r);
    }
    print_message("EVENTUAL searches that missed the version just put: %d of 200\n",
                  eventual_missed);
}

static void test_delete_then_session_search(void **state)
{
    fixture *f = *state;
    open_root(f, 1);
    put_background(f->ctx);
    char id[32], text[256], term[64];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof id, "victim-%d", i);
        snprintf(term, sizeof term, "wombat%03d", i);
        snprintf(text, sizeof text, "Victim %d is about the %s and nothing else.", i, term);
        uint64_t v = 0;
        assert_int_equal(put_text(f->ctx, id, text, &v), RAG_OK);
        rag_results *r = NULL;
        rag_query q;
        /* half of them are deleted right after the put, before it was applied */
        if (i % 2 == 0) {
            q = query(term, RAG_CONSISTENCY_SESSION, 10000);
            assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
            assert_int_equal(found_version(r, id), v);
            rag_results_free(r);
        }
        assert_int_equal(rag_doc_delete(f->ctx, id), RAG_OK);
        q = query(term, RAG_CONSISTENCY_SESSION, 10000);
        assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
        assert_int_equal(found_version(r, id), 0);
        rag_results_free(r);
    }
    /* a put immediately followed by its delete: the session search waits for both */
    assert_int_equal(put_text(f->ctx, "ephemeral", "An ephemeral note about the numbat.", NULL),
                     RAG_OK);
    assert_int_equal(rag_doc_delete(f->ctx, "ephemeral"), RAG_OK);
    rag_results *r = NULL;
    rag_query q = query("numbat", RAG_CONSISTENCY_SESSION, 10000);
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    assert_int_equal(found_version(r, "ephemeral"), 0);
    rag_results_free(r);
    /* and the index really applied the deletes by then: nothing left of the victims */
    assert_int_equal(rag_drain(f->ctx, 10000), RAG_OK);
    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 4);
}

static void test_poisoned_version_does_not_block(void **state)
{
    fixture *f = *state;
    open_root(f, 1);
    put_background(f->ctx);
    uint64_t v1 = 0, v2 = 0;
    assert_int_equal(put_text(f->ctx, "doc", "The first version talks about the platypus.", &v1),
                     RAG_OK);
    rag_results *r = NULL;
    rag_query q = query("platypus", RAG_CONSISTENCY_SESSION, 10000);
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    assert_int_equal(found_version(r, "doc"), v1);
    rag_results_free(r);

    /* an update the provider rejects for good: it fails and is compensated */
    assert_int_equal(put_text(f->ctx, "doc", "The second version is " MARKER " platypus.", &v2),
                     RAG_OK);
    assert_int_equal(v2, v1 + 1);
    uint64_t t0 = mono_ms();
    q = query("platypus", RAG_CONSISTENCY_SESSION, 20000);
    int rc = rag_search(f->ctx, &q, &r);
    uint64_t took = mono_ms() - t0;
    if (rc)
        fprintf(stderr, "%s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    assert_true(took < 10000); /* settled as failed, not waited out */
    assert_int_equal(found_version(r, "doc"), v1); /* the previous version stays */
    rag_results_free(r);

    /* a poisoned first version: no document, no waiting */
    assert_int_equal(put_text(f->ctx, "bad", "Only " MARKER " content about the echidna.", NULL),
                     RAG_OK);
    t0 = mono_ms();
    q = query("echidna", RAG_CONSISTENCY_SESSION, 20000);
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    assert_true(mono_ms() - t0 < 10000);
    assert_int_equal(found_version(r, "bad"), 0);
    rag_results_free(r);

    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_true(st.dead_letters >= 2);
}

static void test_without_workers_times_out(void **state)
{
    fixture *f = *state;
    open_root(f, 0);
    uint64_t v = 0;
    assert_int_equal(put_text(f->ctx, "lonely", "A document about the lonely kakapo.", &v),
                     RAG_OK);
    rag_results *r = (rag_results *)1;
    rag_query q = query("kakapo", RAG_CONSISTENCY_SESSION, 150);
    uint64_t t0 = mono_ms();
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_ETIMEOUT);
    uint64_t took = mono_ms() - t0;
    assert_null(r);
    assert_true(took >= 150 && took < 5000);
    assert_non_null(strstr(rag_error_last(), "'lonely'"));
    assert_non_null(strstr(rag_error_last(), "rag_start"));

    /* EVENTUAL does not wait: the document is simply not there yet */
    q = query("kakapo", RAG_CONSISTENCY_EVENTUAL, 150);
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    assert_int_equal(found_version(r, "lonely"), 0);
    rag_results_free(r);

    /* the caller pumps the pipeline: the session search then returns at once */
    assert_int_equal(rag_drain(f->ctx, 10000), RAG_OK);
    q = query("kakapo", RAG_CONSISTENCY_SESSION, 150);
    t0 = mono_ms();
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    assert_true(mono_ms() - t0 < 150);
    assert_int_equal(found_version(r, "lonely"), v);
    rag_results_free(r);

    /* an unknown consistency level */
    q = query("kakapo", (rag_consistency)7, 0);
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_EINVAL);
}

static void test_more_writes_than_tracked(void **state)
{
    fixture *f = *state;
    open_root(f, 0);
    enum { N = SESSION_TRACKED + 100 };
    rag_doc *docs = calloc(N, sizeof *docs);
    rag_put_result *res = calloc(N, sizeof *res);
    char (*ids)[16] = calloc(N, sizeof *ids);
    char (*texts)[64] = calloc(N, sizeof *texts);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "bulk-%05d", i);
        snprintf(texts[i], sizeof texts[i], "Bulk document %d mentions bulkterm%05d.", i, i);
        docs[i].id = ids[i];
        docs[i].data = texts[i];
        docs[i].size = strlen(texts[i]);
        docs[i].mime = "text/plain";
    }
    /* without workers nothing is applied, so the handle's list overflows */
    assert_int_equal(rag_doc_put_batch(f->ctx, docs, N, res), RAG_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(res[i].code, RAG_OK);
    rag_results *r = NULL;
    rag_query q = query("bulkterm04150", RAG_CONSISTENCY_SESSION, 100);
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_ETIMEOUT);
    assert_int_equal(rag_start(f->ctx), RAG_OK);
    q.timeout_ms = 120000;
    int rc = rag_search(f->ctx, &q, &r);
    if (rc)
        fprintf(stderr, "%s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    assert_int_equal(found_version(r, "bulk-04150"), 1);
    rag_results_free(r);
    /* everything was indexed by the time the session search returned, tracked or not */
    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.vectors, (uint64_t)N);
    free(docs);
    free(res);
    free(ids);
    free(texts);
}

typedef struct writer_arg {
    rag_ctx *ctx;
    int id;
    int failures;
} writer_arg;

static void *writer_thread(void *p)
{
    writer_arg *a = p;
    char id[32], text[256], term[64];
    snprintf(id, sizeof id, "writer-%d", a->id);
    for (int i = 0; i < 30; i++) {
        snprintf(term, sizeof term, "bilby%dx%03d", a->id, i);
        snprintf(text, sizeof text, "Writer %d, revision %d, says %s.", a->id, i, term);
        uint64_t v = 0;
        if (put_text(a->ctx, id, text, &v) != RAG_OK) {
            a->failures++;
            continue;
        }
        rag_results *r = NULL;
        rag_query q = query(term, RAG_CONSISTENCY_SESSION, 20000);
        if (rag_search(a->ctx, &q, &r) != RAG_OK || found_version(r, id) != v)
            a->failures++;
        rag_results_free(r);
    }
    return NULL;
}

static void test_concurrent_sessions(void **state)
{
    fixture *f = *state;
    open_root(f, 1);
    pthread_t th[4];
    writer_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (writer_arg){f->ctx, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
}

static void test_old_structs_and_cache_status(void **state)
{
    fixture *f = *state;
    open_root(f, 1);
    put_background(f->ctx);
    assert_int_equal(rag_drain(f->ctx, 10000), RAG_OK);

    /* a version-1 query, allocated to its exact size: never read past it */
    size_t v1 = offsetof(rag_query, consistency);
    rag_query init = RAG_QUERY_INIT;
    init.version = 1;
    init.text = "sourdough bread";
    init.k = 3;
    init.unrestricted = 1;
    rag_query *q1 = malloc(v1);
    memcpy(q1, &init, v1);
    rag_results *r = NULL;
    assert_int_equal(rag_search(f->ctx, q1, &r), RAG_OK);
    assert_true(r->count > 0);
    assert_string_equal(r->items[0].doc_id, "background-1");
    rag_results_free(r);

    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.cache_hits, 0);
    assert_int_equal(st.cache_misses, 1);
    assert_int_equal(rag_search(f->ctx, q1, &r), RAG_OK); /* same query: from the cache */
    rag_results_free(r);
    rag_query q = query("sourdough bread", RAG_CONSISTENCY_EVENTUAL, 0);
    q.k = 3;
    q.mode = RAG_MODE_HYBRID; /* what DEFAULT means: the same entry */
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    rag_results_free(r);
    q.mode = RAG_MODE_LEXICAL; /* another mode, another entry */
    assert_int_equal(rag_search(f->ctx, &q, &r), RAG_OK);
    rag_results_free(r);
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.cache_hits, 2);
    assert_int_equal(st.cache_misses, 2);
    free(q1);

    /* a version-2 status struct, allocated to its exact size: the v3 fields are not
     * written */
    for (unsigned int ver = 1; ver <= 2; ver++) {
        /* ... nor the v2 ones for a version-1 caller (fields accessed through memcpy: the
         * compiler rightly refuses member access into a short object) */
        size_t size = ver == 2 ? offsetof(rag_status_info, cache_hits)
                               : offsetof(rag_status_info, sagas_running);
        unsigned char *old = malloc(size);
        memset(old, 0xAB, size);
        memcpy(old + offsetof(rag_status_info, version), &ver, sizeof ver);
        assert_int_equal(rag_status(f->ctx, (rag_status_info *)old), RAG_OK);
        uint64_t docs = 0;
        memcpy(&docs, old + offsetof(rag_status_info, documents), sizeof docs);
        assert_int_equal(docs, 4);
        free(old);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_your_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_then_session_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poisoned_version_does_not_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_workers_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_more_writes_than_tracked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_structs_and_cache_status, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
