/* Dead letters through the public API: a host provider that rejects some texts permanently
 * parks their doc.chunked messages in embed's dead-letter table; rag_dlq_list shows them,
 * rag_dlq_retry re-drives them once the cause is fixed, rag_dlq_drop discards them; transient
 * provider failures are retried and never dead-lettered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define DIM 64

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
    rag_fake_provider_state *fs; /* owned by ctx once rag_open returned */
} fixture;

static void open_with_provider(fixture *f, const char *fail_marker, int transient_failures)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.retry_base_ms = 2; /* transient retries come back quickly */
    o.retry_cap_ms = 20;
    rag_embed_provider *p = rag_fake_provider_new(DIM, &f->fs);
    f->fs->fail_marker = fail_marker;
    f->fs->fail_code = RAG_EPROVIDER;
    f->fs->transient_failures = transient_failures;
    o.provider = p;
    int rc = rag_open(&f->ctx, f->root, &o);
    free(p); /* rag_open copied the struct and owns the state */
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("dlq");
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

static void put_text(rag_ctx *ctx, const char *id, const char *text)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    uint64_t v = 0;
    assert_int_equal(rag_doc_put(ctx, &d, &v), RAG_OK);
    assert_true(v >= 1);
}

/* 1 when doc_id is among the top-3 hits of `query`. */
static int searchable(rag_ctx *ctx, const char *query, const char *doc_id)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = query;
    q.k = 3;
    q.unrestricted = 1;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc)
        fprintf(stderr, "rag_search: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    int found = 0;
    for (size_t i = 0; i < r->count; i++)
        found |= strcmp(r->items[i].doc_id, doc_id) == 0;
    rag_results_free(r);
    return found;
}

static uint64_t dead_count(rag_ctx *ctx)
{
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    return st.dead_letters;
}

static const char *good_a = "Alpine lakes freeze in winter; skaters glide across the clear ice.";
static const char *good_b = "Sourdough bread rises slowly because wild yeast ferments the dough.";
static const char *poisoned =
    "Volcanic basalt cools into hexagonal columns. POISON marker for the host provider.";
static const char *poisoned2 = "Tidal pools hold anemones and crabs. POISON again, never wanted.";

static void test_poisoned_doc_dead_lettered_then_retried(void **state)
{
    fixture *f = *state;
    open_with_provider(f, "POISON", 0);

    /* nothing dead yet: an empty list is NULL/0 */
    rag_dead_letter_info *dl = (rag_dead_letter_info *)1;
    size_t n = 99;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_null(dl);
    assert_int_equal(n, 0);

    put_text(f->ctx, "lakes", good_a);
    put_text(f->ctx, "basalt", poisoned);
    put_text(f->ctx, "bread", good_b);
    /* The permanent failure must not keep the drain waiting. */
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);

    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.dead_letters, 1);
    assert_int_equal(st.documents, 3);
    assert_true(searchable(f->ctx, "frozen alpine lake ice skating", "lakes"));
    assert_true(searchable(f->ctx, "sourdough yeast dough", "bread"));
    assert_false(searchable(f->ctx, "volcanic basalt hexagonal columns", "basalt"));

    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    assert_non_null(dl);
    assert_string_equal(dl[0].topic, "doc.chunked");
    assert_string_equal(dl[0].module, "embed");
    assert_int_equal(dl[0].code, RAG_EPROVIDER);
    assert_int_equal(dl[0].attempts, 1); /* permanent: no retries */
    assert_true(dl[0].when_ms > 0);
    assert_true(strlen(dl[0].id) > 0);
    char old_id[64];
    snprintf(old_id, sizeof old_id, "%s", dl[0].id);
    rag_free(dl);

    /* Retrying before the cause is fixed dead-letters it again, under a new id (the old id
     * is in embed's inbox and could never be applied again). */
    assert_int_equal(rag_dlq_retry(f->ctx, old_id), RAG_OK);
    assert_int_equal(rag_dlq_retry(f->ctx, old_id), RAG_ENOTFOUND);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(dl[0].topic, "doc.chunked");
    assert_string_equal(dl[0].module, "embed");
    assert_string_not_equal(dl[0].id, old_id);
    snprintf(old_id, sizeof old_id, "%s", dl[0].id);
    rag_free(dl);

    /* Fix the cause (the test still holds the provider's state), then retry. */
    f->fs->fail_marker = NULL;
    assert_int_equal(rag_dlq_retry(f->ctx, old_id), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_true(searchable(f->ctx, "volcanic basalt hexagonal columns", "basalt"));
    assert_true(searchable(f->ctx, "frozen alpine lake ice skating", "lakes"));
    assert_int_equal(dead_count(f->ctx), 0);
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 0);
    assert_null(dl);

    /* the whole pipeline settled: versions freed back to one per document */
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 3);
    assert_int_equal(st.versions, 3);
    assert_int_equal(st.vectors, st.chunks);
}

static void test_drop(void **state)
{
    fixture *f = *state;
    open_with_provider(f, "POISON", 0);
    put_text(f->ctx, "lakes", good_a);
    put_text(f->ctx, "basalt", poisoned);
    put_text(f->ctx, "pools", poisoned2);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(dead_count(f->ctx), 2);

    assert_int_equal(rag_dlq_drop(f->ctx, "embed-00000000deadbeef"), RAG_ENOTFOUND);
    assert_int_equal(rag_dlq_drop(f->ctx, "no-such-id"), RAG_ENOTFOUND);
    assert_int_equal(rag_dlq_retry(f->ctx, "no-such-id"), RAG_ENOTFOUND);
    assert_int_equal(rag_dlq_drop(f->ctx, ""), RAG_EINVAL);
    assert_int_equal(rag_dlq_drop(f->ctx, NULL), RAG_EINVAL);
    assert_int_equal(rag_dlq_retry(f->ctx, NULL), RAG_EINVAL);
    assert_int_equal(rag_dlq_list(f->ctx, NULL, NULL), RAG_EINVAL);
    assert_int_equal(rag_dlq_list(NULL, NULL, NULL), RAG_EINVAL);

    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 2);
    char drop_id[64], keep_id[64];
    snprintf(drop_id, sizeof drop_id, "%s", dl[0].id);
    snprintf(keep_id, sizeof keep_id, "%s", dl[1].id);
    rag_free(dl);

    assert_int_equal(rag_dlq_drop(f->ctx, drop_id), RAG_OK);
    assert_int_equal(rag_dlq_drop(f->ctx, drop_id), RAG_ENOTFOUND);
    assert_int_equal(rag_dlq_retry(f->ctx, drop_id), RAG_ENOTFOUND);
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(dl[0].id, keep_id);
    rag_free(dl);
    assert_int_equal(dead_count(f->ctx), 1);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_true(searchable(f->ctx, "frozen alpine lake ice skating", "lakes"));

    /* Dead letters are durable: after a reopen with a healthy provider (same fingerprint)
     * the remaining one is still listed and can be re-driven. */
    rag_close(f->ctx);
    f->ctx = NULL;
    open_with_provider(f, NULL, 0);
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(dl[0].id, keep_id);
    rag_free(dl);
    assert_int_equal(rag_dlq_retry(f->ctx, keep_id), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(dead_count(f->ctx), 0);
    const char *who[2] = {"basalt", "pools"};
    int found[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        found[i] = searchable(f->ctx, i ? "tidal pools anemones crabs"
                                        : "volcanic basalt hexagonal columns",
                              who[i]);
    /* exactly one of the two came back: the dropped one stays unindexed */
    assert_int_equal(found[0] + found[1], 1);
}

static void test_transient_failures_are_retried(void **state)
{
    fixture *f = *state;
    open_with_provider(f, NULL, 3);
    put_text(f->ctx, "lakes", good_a);
    put_text(f->ctx, "bread", good_b);
    put_text(f->ctx, "basalt", "Volcanic basalt cools into hexagonal columns.");
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(f->fs->transient_failures, 0); /* all three were used up */
    assert_true(f->fs->calls >= 3 + 3);
    assert_int_equal(dead_count(f->ctx), 0);
    rag_dead_letter_info *dl = NULL;
    size_t n = 7;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 0);
    assert_true(searchable(f->ctx, "frozen alpine lake ice skating", "lakes"));
    assert_true(searchable(f->ctx, "sourdough yeast dough", "bread"));
    assert_true(searchable(f->ctx, "volcanic basalt hexagonal columns", "basalt"));
}

/* Same retry path with the background workers running. */
static void test_retry_with_workers(void **state)
{
    fixture *f = *state;
    open_with_provider(f, "POISON", 0);
    assert_int_equal(rag_start(f->ctx), RAG_OK);
    put_text(f->ctx, "lakes", good_a);
    put_text(f->ctx, "basalt", poisoned);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    char id[64];
    snprintf(id, sizeof id, "%s", dl[0].id);
    rag_free(dl);
    __atomic_store_n(&f->fs->fail_marker, NULL, __ATOMIC_SEQ_CST);
    assert_int_equal(rag_dlq_retry(f->ctx, id), RAG_OK);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(dead_count(f->ctx), 0);
    assert_true(searchable(f->ctx, "volcanic basalt hexagonal columns", "basalt"));
    assert_int_equal(rag_stop(f->ctx), RAG_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_poisoned_doc_dead_lettered_then_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_failures_are_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_with_workers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
