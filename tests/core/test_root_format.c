/*
 * The root's on-disk format version (<root>/FORMAT): a root of another format is refused with
 * RAG_EVERSION naming both formats, a FORMAT file that is not ours with RAG_ECORRUPT, and
 * neither refusal changes the root.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "ragcore/rag.h"
#include "test_support.h"

static void write_format(const char *root, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/FORMAT", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int open_root(const char *root, rag_ctx **ctx)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.embed_dim = 32;
    return rag_open(ctx, root, &o);
}

static void test_format_mismatch(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("root-format");
    rag_ctx *ctx = NULL;
    assert_int_equal(open_root(root, &ctx), RAG_OK);
    rag_doc d = {0};
    d.id = "a";
    d.data = "Text about ferries and harbours.";
    d.size = strlen(d.data);
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_OK);
    assert_int_equal(rag_drain(ctx, 10000), RAG_OK);
    rag_close(ctx);

    write_format(root, "ragcore-root 99\n");
    assert_int_equal(open_root(root, &ctx), RAG_EVERSION);
    assert_null(ctx);
    assert_non_null(strstr(rag_error_last(), "format 99"));
    char want[64];
    snprintf(want, sizeof want, "reads format %d", RAG_ROOT_FORMAT);
    assert_non_null(strstr(rag_error_last(), want));

    write_format(root, "something else\n");
    assert_int_equal(open_root(root, &ctx), RAG_ECORRUPT);

    /* the refusals left the data alone: the right format opens it again */
    char fmt[32];
    snprintf(fmt, sizeof fmt, "ragcore-root %d\n", RAG_ROOT_FORMAT);
    write_format(root, fmt);
    assert_int_equal(open_root(root, &ctx), RAG_OK);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 1);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_format_mismatch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
