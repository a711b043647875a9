/*
 * rag_backup while the root keeps working (workers running, a writer thread putting new
 * versions), then rag_restore into a fresh root: every put acknowledged before the backup
 * began is there at that version or a later one, the restored root is consistent (a second
 * fsck finds nothing), searchable, and the refusals (non-empty destination, no backup) hold.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "ragcore/rag.h"
#include "test_support.h"

#define N_DOCS 40

typedef struct writer {
    rag_ctx *ctx;
    atomic_int stop;
    int round;
} writer;

static void put_doc(rag_ctx *ctx, int i, int round, uint64_t *ver)
{
    char id[32], text[256];
    snprintf(id, sizeof id, "doc-%02d", i);
    snprintf(text, sizeof text,
             "Document %d in round %d tells of harbour%d and beacon%d along the shore.", i,
             round, i, i);
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    assert_int_equal(rag_doc_put(ctx, &d, ver), RAG_OK);
}

static void *write_loop(void *arg)
{
    writer *w = arg;
    while (!atomic_load(&w->stop)) {
        w->round++;
        for (int i = 0; i < N_DOCS && !atomic_load(&w->stop); i += 3)
            put_doc(w->ctx, i, w->round, NULL);
    }
    return NULL;
}

static int open_root(const char *root, rag_ctx **ctx)
{
    rag_options o;
    rag_options_init(&o);
    o.embed_dim = 64;
    return rag_open(ctx, root, &o);
}

static void test_backup_restore_under_load(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("backup-src");
    char *dest = rag_test_tmpdir("backup-dst");
    char *restored = rag_test_tmpdir("backup-restored");
    rag_test_rmtree(dest); /* rag_backup creates it */
    rag_test_rmtree(restored);

    rag_ctx *ctx = NULL;
    assert_int_equal(open_root(root, &ctx), RAG_OK);
    uint64_t before[N_DOCS];
    for (int i = 0; i < N_DOCS; i++)
        put_doc(ctx, i, 0, &before[i]);
    assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
    assert_int_equal(rag_start(ctx), RAG_OK);

    writer w = {ctx, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, write_loop, &w), 0);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(rag_backup(ctx, dest), RAG_OK);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    print_message("writer made %d rounds\n", w.round);
    /* a second backup into the same, now full, directory is refused */
    assert_int_equal(rag_backup(ctx, dest), RAG_EEXISTS);
    rag_close(ctx);

    rag_options o;
    rag_options_init(&o);
    o.embed_dim = 64;
    size_t found = 0;
    assert_int_equal(rag_restore(dest, restored, &o, &found), RAG_OK);
    print_message("restore repaired %zu inconsistencies\n", found);
    assert_int_equal(rag_restore(dest, restored, &o, &found), RAG_EEXISTS);
    assert_int_equal(rag_restore(root, dest, &o, &found), RAG_ENOTFOUND);

    assert_int_equal(open_root(restored, &ctx), RAG_OK);
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(ctx, 0, 30000, &rep), RAG_OK);
    for (size_t i = 0; i < rep->count; i++)
        print_message("finding: %s %s %s\n", rag_fsck_kind_name(rep->issues[i].kind),
                      rep->issues[i].doc_id, rep->issues[i].detail);
    assert_int_equal(rep->count, 0);
    rag_fsck_report_free(rep);
    for (int i = 0; i < N_DOCS; i++) {
        char q[64], id[32];
        snprintf(q, sizeof q, "harbour%d beacon%d", i, i);
        snprintf(id, sizeof id, "doc-%02d", i);
        rag_query query = RAG_QUERY_INIT;
        query.text = q;
        query.k = 3;
        query.unrestricted = 1;
        rag_results *r = NULL;
        assert_int_equal(rag_search(ctx, &query, &r), RAG_OK);
        assert_true(r->count >= 1);
        assert_string_equal(r->items[0].doc_id, id);
        assert_true(r->items[0].version >= before[i]);
        rag_results_free(r);
    }
    rag_close(ctx);

    rag_test_rmtree(root);
    rag_test_rmtree(dest);
    rag_test_rmtree(restored);
    free(root);
    free(dest);
    free(restored);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backup_restore_under_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
