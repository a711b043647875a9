/* End-to-end tests of ingest -> embed -> index -> retrieve -> assemble through the public API,
 * with the built-in CPU provider and FAISS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

static rag_ctx *open_root(const char *root)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1; /* durability is covered by the crash test; keep this one fast */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    return ctx;
}

static int put_text(rag_ctx *ctx, const char *id, const char *text, const char *mime,
                    const char *const *acl, size_t acl_count, uint64_t *version)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = mime;
    d.acl = acl;
    d.acl_count = acl_count;
    char uri[300];
    snprintf(uri, sizeof uri, "test://%s", id);
    d.uri = uri;
    return rag_doc_put(ctx, &d, version);
}

/* Search as operator (or as the given principals) and return the rank (0-based) of doc_id in
 * the results, -1 if absent; *count gets the number of hits with that doc id. */
static int rank_of(rag_ctx *ctx, const char *query, const char *doc_id, const char *const *as,
                   size_t as_count, int *count, uint64_t *version)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = query;
    q.k = 10;
    q.unrestricted = as ? 0 : 1;
    q.principals = as;
    q.principal_count = as_count;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    assert_int_equal(rc, RAG_OK);
    int rank = -1, n = 0;
    for (size_t i = 0; i < r->count; i++) {
        if (strcmp(r->items[i].doc_id, doc_id) == 0) {
            if (rank < 0) {
                rank = (int)i;
                if (version)
                    *version = r->items[i].version;
            }
            n++;
            assert_non_null(r->items[i].text);
            assert_true(strlen(r->items[i].text) > 0);
        }
    }
    if (count)
        *count = n;
    rag_results_free(r);
    return rank;
}

static const char *doc_cats =
    "Cats are small carnivorous mammals. Domestic cats purr, hunt mice and sleep most of the "
    "day. A kitten is a young cat.";
static const char *doc_rockets =
    "# Rockets\n\nA rocket engine burns propellant and expels exhaust through a nozzle. "
    "Liquid hydrogen and liquid oxygen are common propellants for orbital launch vehicles.";
static const char *doc_bread =
    "<html><head><title>Baking bread</title><script>var secret='do not index';</script>"
    "</head><body><p>Knead the dough, let the yeast rise, then bake the loaf in a hot "
    "oven until the crust is brown.</p></body></html>";

static void test_put_drain_search(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("pipeline-basic");
    rag_ctx *ctx = open_root(root);
    uint64_t v = 0;
    assert_int_equal(put_text(ctx, "cats", doc_cats, "text/plain", NULL, 0, &v), RAG_OK);
    assert_int_equal(v, 1);
    assert_int_equal(put_text(ctx, "rockets", doc_rockets, "text/markdown", NULL, 0, &v), RAG_OK);
    assert_int_equal(put_text(ctx, "bread", doc_bread, NULL, NULL, 0, &v), RAG_OK);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);

    assert_int_equal(rank_of(ctx, "kitten purr mice", "cats", NULL, 0, NULL, NULL), 0);
    assert_int_equal(rank_of(ctx, "liquid oxygen propellant nozzle", "rockets", NULL, 0, NULL, NULL), 0);
    assert_int_equal(rank_of(ctx, "yeast dough oven", "bread", NULL, 0, NULL, NULL), 0);

    /* the HTML title is taken, the script is not indexed */
    rag_query q = RAG_QUERY_INIT;
    q.text = "bake the loaf";
    q.unrestricted = 1;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
    assert_true(r->count >= 1);
    assert_string_equal(r->items[0].doc_id, "bread");
    assert_string_equal(r->items[0].title, "Baking bread");
    assert_string_equal(r->items[0].uri, "test://bread");
    assert_null(strstr(r->items[0].text, "secret"));

    /* assembly cites the source */
    rag_assemble_opts ao = RAG_ASSEMBLE_INIT;
    ao.question = "How do I bake bread?";
    ao.token_budget = 512;
    char *prompt = NULL;
    assert_int_equal(rag_assemble(ctx, r, &ao, &prompt), RAG_OK);
    assert_non_null(strstr(prompt, "[1]"));
    assert_non_null(strstr(prompt, "Baking bread"));
    assert_non_null(strstr(prompt, "How do I bake bread?"));
    assert_true(strlen(prompt) / 4 <= 512 + 1);
    rag_free(prompt);
    rag_results_free(r);

    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 3);
    assert_true(st.chunks >= 3);
    assert_int_equal(st.vectors, st.chunks);
    assert_int_equal(st.dead_letters, 0);
    for (size_t i = 0; i < st.queue_count; i++)
        assert_int_equal(st.queues[i].ready + st.queues[i].delayed + st.queues[i].inflight, 0);

    rag_close(ctx);

    /* everything survives a reopen */
    ctx = open_root(root);
    assert_int_equal(rank_of(ctx, "kitten purr mice", "cats", NULL, 0, NULL, NULL), 0);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

static void test_update_and_delete(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("pipeline-update");
    rag_ctx *ctx = open_root(root);
    uint64_t v = 0, seen = 0;
    int count = 0;
    assert_int_equal(put_text(ctx, "doc", "Giraffes have long necks and eat acacia leaves.",
                              NULL, NULL, 0, &v), RAG_OK);
    assert_int_equal(put_text(ctx, "other", doc_cats, NULL, NULL, 0, NULL), RAG_OK);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    assert_int_equal(rank_of(ctx, "giraffe neck acacia", "doc", NULL, 0, &count, &seen), 0);
    assert_int_equal(seen, 1);

    /* update: the new version replaces the old one, no duplicate */
    assert_int_equal(put_text(ctx, "doc", "Penguins swim in cold Antarctic water and eat krill.",
                              NULL, NULL, 0, &v), RAG_OK);
    assert_int_equal(v, 2);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    assert_int_equal(rank_of(ctx, "penguins antarctic krill", "doc", NULL, 0, &count, &seen), 0);
    assert_int_equal(count, 1);
    assert_int_equal(seen, 2);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 2);
    assert_int_equal(st.vectors, st.chunks); /* old version's vectors and text are gone */

    /* delete: invisible at once, purged after drain */
    assert_int_equal(rag_doc_delete(ctx, "doc"), RAG_OK);
    assert_int_equal(rank_of(ctx, "penguins antarctic krill", "doc", NULL, 0, NULL, NULL), -1);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    assert_int_equal(rank_of(ctx, "penguins antarctic krill", "doc", NULL, 0, NULL, NULL), -1);
    assert_int_equal(rag_doc_delete(ctx, "doc"), RAG_ENOTFOUND);
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 1);
    assert_int_equal(st.vectors, st.chunks);

    /* delete, then put again before the index applied the delete: the deleted version's
     * text must not come back through the labels the index still holds */
    assert_int_equal(put_text(ctx, "again", "Walruses rest on Arctic ice floes.", NULL, NULL, 0,
                              NULL), RAG_OK);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    assert_int_equal(rank_of(ctx, "walruses arctic ice floes", "again", NULL, 0, NULL, NULL), 0);
    assert_int_equal(rag_doc_delete(ctx, "again"), RAG_OK);
    assert_int_equal(put_text(ctx, "again", "Camels store fat in their humps.", NULL, NULL, 0,
                              &v), RAG_OK);
    assert_int_equal(v, 2);
    assert_int_equal(rank_of(ctx, "walruses arctic ice floes", "again", NULL, 0, NULL, NULL), -1);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    /* a flat index returns every vector, so v2 may show up (with score 0); v1 never does */
    seen = 0;
    rank_of(ctx, "walruses arctic ice floes", "again", NULL, 0, NULL, &seen);
    assert_true(seen == 0 || seen == 2);
    assert_int_equal(rank_of(ctx, "camels fat humps", "again", NULL, 0, NULL, &seen), 0);
    assert_int_equal(seen, 2);
    assert_int_equal(rag_doc_delete(ctx, "again"), RAG_OK);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);

    /* a put after a delete continues the version numbers */
    assert_int_equal(put_text(ctx, "doc", "Owls hunt at night.", NULL, NULL, 0, &v), RAG_OK);
    assert_int_equal(v, 3);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    assert_int_equal(rank_of(ctx, "owls hunt night", "doc", NULL, 0, NULL, NULL), 0);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

static void test_acl(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("pipeline-acl");
    rag_ctx *ctx = open_root(root);
    const char *alice_only[] = {"user:alice"};
    const char *team[] = {"group:eng", "user:carol"};
    assert_int_equal(put_text(ctx, "secret", "The launch code for the volcano base is hidden.",
                              NULL, alice_only, 1, NULL), RAG_OK);
    assert_int_equal(put_text(ctx, "eng", "The volcano base cooling system runs on seawater.",
                              NULL, team, 2, NULL), RAG_OK);
    assert_int_equal(put_text(ctx, "public", "Volcanoes erupt lava and ash.", NULL, NULL, 0, NULL),
                     RAG_OK);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);

    const char *alice[] = {"user:alice"};
    const char *bob[] = {"user:bob", "group:eng"};
    const char *mallory[] = {"user:mallory"};
    assert_true(rank_of(ctx, "volcano base launch code", "secret", alice, 1, NULL, NULL) >= 0);
    assert_int_equal(rank_of(ctx, "volcano base launch code", "secret", bob, 2, NULL, NULL), -1);
    assert_int_equal(rank_of(ctx, "volcano base launch code", "secret", mallory, 1, NULL, NULL), -1);
    assert_true(rank_of(ctx, "volcano cooling seawater", "eng", bob, 2, NULL, NULL) >= 0);
    assert_int_equal(rank_of(ctx, "volcano cooling seawater", "eng", alice, 1, NULL, NULL), -1);
    assert_true(rank_of(ctx, "volcano lava ash", "public", mallory, 1, NULL, NULL) >= 0);
    assert_true(rank_of(ctx, "volcano base launch code", "secret", NULL, 0, NULL, NULL) >= 0);

    /* no principals at all: public documents only */
    rag_query q = RAG_QUERY_INIT;
    q.text = "volcano";
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
    for (size_t i = 0; i < r->count; i++)
        assert_string_equal(r->items[i].doc_id, "public");
    rag_results_free(r);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

static void test_errors(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("pipeline-errors");
    rag_ctx *ctx = open_root(root);

    /* invalid UTF-8 names the byte offset; repair mode accepts it */
    const char bad[] = "valid text then \xC0\x80 overlong";
    rag_doc d = {0};
    d.id = "bad";
    d.data = bad;
    d.size = sizeof bad - 1;
    d.mime = "text/plain";
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_EUTF8);
    assert_non_null(strstr(rag_error_last(), "16"));
    d.flags = RAG_PUT_REPAIR_UTF8;
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_OK);

    /* empty and oversized ids */
    d.flags = 0;
    d.data = "x";
    d.size = 1;
    d.id = "";
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_EINVAL);
    char longid[400];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    d.id = longid;
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_EINVAL);

    /* idempotency: same key + same bytes -> first version; other bytes -> error */
    d.id = "idem";
    d.data = "Hello idempotent world.";
    d.size = strlen(d.data);
    d.idempotency_key = "key-1";
    uint64_t v1 = 0, v2 = 0;
    assert_int_equal(rag_doc_put(ctx, &d, &v1), RAG_OK);
    assert_int_equal(rag_doc_put(ctx, &d, &v2), RAG_OK);
    assert_int_equal(v1, v2);
    d.data = "Different bytes.";
    d.size = strlen(d.data);
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_EIDEMPOTENCY);

    /* a second open of the same root fails while the first holds it */
    rag_ctx *second = NULL;
    rag_options o;
    rag_options_init(&o);
    assert_int_equal(rag_open(&second, root, &o), RAG_EBUSY);
    assert_null(second);

    /* bad options */
    o.embed_dim = 3;
    assert_int_equal(rag_open(&second, root, &o), RAG_EINVAL);

    rag_query q = RAG_QUERY_INIT;
    q.text = NULL;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_EINVAL);
    assert_int_equal(rag_doc_delete(ctx, "never-there"), RAG_ENOTFOUND);
    assert_string_equal(rag_strerror(RAG_ETOOBIG), "too big");
    assert_int_equal(rag_version_number(), RAG_VERSION_NUMBER);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

static void test_fingerprint_guard(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("pipeline-fingerprint");
    rag_ctx *ctx = open_root(root);
    rag_close(ctx);
    /* the same root with another model is refused */
    rag_options o;
    rag_options_init(&o);
    o.provider = rag_fake_provider_new(384, NULL);
    assert_int_equal(rag_open(&ctx, root, &o), RAG_EFINGERPRINT);
    free(o.provider);
    rag_test_rmtree(root);
    free(root);
}

static void test_workers_and_host_provider(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("pipeline-workers");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    rag_fake_provider_state *fs = NULL;
    rag_embed_provider *p = rag_fake_provider_new(64, &fs);
    o.provider = p;
    rag_ctx *ctx = NULL;
    assert_int_equal(rag_open(&ctx, root, &o), RAG_OK);
    free(p); /* rag_open copied the struct */
    assert_int_equal(rag_start(ctx), RAG_OK);
    assert_int_equal(rag_start(ctx), RAG_ESTATE);
    char id[32], text[128];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "w%03d", i);
        snprintf(text, sizeof text, "Document number %d about topic%d and marker%03d.", i, i % 7, i);
        assert_int_equal(put_text(ctx, id, text, NULL, NULL, 0, NULL), RAG_OK);
    }
    assert_int_equal(rag_drain(ctx, 60000), RAG_OK);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 200);
    assert_int_equal(st.vectors, st.chunks);
    assert_true(fs->texts_embedded >= 200);
    assert_int_equal(rank_of(ctx, "Document number 123 about topic4 and marker123.", "w123",
                             NULL, 0, NULL, NULL), 0);
    assert_int_equal(rag_stop(ctx), RAG_OK);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_drain_search),
        cmocka_unit_test(test_update_and_delete),
        cmocka_unit_test(test_acl),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fingerprint_guard),
        cmocka_unit_test(test_workers_and_host_provider),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
