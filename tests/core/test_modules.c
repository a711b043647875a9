/*
 * Modules per process (rag_options.modules): which sets rag_open accepts, and that a handle
 * refuses, with RAG_ESTATE naming the module, every call that needs a module it does not host
 * -- without creating that module's environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core_internal.h"
#include "ragcore/rag.h"
#include "test_support.h"

static int open_modules_set(const char *root, unsigned int modules, rag_ctx **ctx)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.embed_dim = 32;
    o.modules = modules;
    return rag_open(ctx, root, &o);
}

static int dir_exists(const char *root, const char *sub)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", root, sub);
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_invalid_sets(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("modules-invalid");
    rag_ctx *ctx = NULL;
    const unsigned int bad[] = {RAG_HOST_INGEST, RAG_HOST_INDEX, RAG_HOST_RETRIEVE,
                                RAG_HOST_INGEST | RAG_HOST_RETRIEVE,
                                RAG_HOST_EMBED | RAG_HOST_INDEX, 0x100u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(open_modules_set(root, bad[i], &ctx), RAG_EINVAL);
        assert_null(ctx);
    }
    rag_test_rmtree(root);
    free(root);
}

static void test_embed_only(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("modules-embed");
    rag_ctx *ctx = NULL;
    assert_int_equal(open_modules_set(root, RAG_HOST_EMBED, &ctx), RAG_OK);
    assert_true(dir_exists(root, "embed"));
    assert_false(dir_exists(root, "ingest"));
    assert_false(dir_exists(root, "index"));

    rag_doc d = {0};
    d.id = "a";
    d.data = "text";
    d.size = 4;
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_ESTATE);
    assert_non_null(strstr(rag_error_last(), "ingest"));
    assert_int_equal(rag_doc_delete(ctx, "a"), RAG_ESTATE);
    rag_query q = RAG_QUERY_INIT;
    q.text = "x";
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_ESTATE);
    assert_non_null(strstr(rag_error_last(), "retrieve"));
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(ctx, 0, 1000, &rep), RAG_ESTATE);
    rag_trace_info *t = NULL;
    assert_int_equal(rag_trace(ctx, "a", &t), RAG_ESTATE);

    /* status reports what is hosted: the provider, no documents */
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 0);
    assert_non_null(strstr(st.provider_fingerprint, "d32"));
    /* workers run the embed consumer alone; draining an empty pipeline returns */
    assert_int_equal(rag_start(ctx), RAG_OK);
    assert_int_equal(rag_drain(ctx, 2000), RAG_OK);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

static void test_primary_without_retrieve(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("modules-primary");
    rag_ctx *ctx = NULL;
    assert_int_equal(open_modules_set(root, RAG_HOST_INGEST | RAG_HOST_INDEX | RAG_HOST_EMBED,
                                      &ctx),
                     RAG_OK);
    assert_false(dir_exists(root, "retrieve"));
    rag_doc d = {0};
    d.id = "a";
    d.data = "Some text about lighthouses.";
    d.size = strlen(d.data);
    uint64_t v = 0;
    assert_int_equal(rag_doc_put(ctx, &d, &v), RAG_OK);
    assert_int_equal(rag_drain(ctx, 10000), RAG_OK);
    rag_query q = RAG_QUERY_INIT;
    q.text = "lighthouses";
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_ESTATE);
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(ctx, 0, 10000, &rep), RAG_OK);
    assert_int_equal(rep->count, 0);
    rag_fsck_report_free(rep);
    rag_close(ctx);

    /* the same root opened with every module serves the search */
    assert_int_equal(open_modules_set(root, 0, &ctx), RAG_OK);
    assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
    assert_int_equal(r->count, 1);
    assert_int_equal(r->items[0].version, v);
    rag_results_free(r);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_sets),
        cmocka_unit_test(test_embed_only),
        cmocka_unit_test(test_primary_without_retrieve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
