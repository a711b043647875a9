/*
 * Re-embedding a root with a provider of another fingerprint (rag_options.reembed):
 *  - refused with RAG_EFINGERPRINT (naming the way out) unless asked for;
 *  - asked for: the old vectors are dropped at open, every document stays findable on the
 *    lexical side, rag_status counts the chunks still owed a vector, and after a drain every
 *    document is found by the vector side at the same version, fsck clean;
 *  - vectors of the old model still in flight at the switch (a doc.embedded queued for the
 *    index) are not indexed: the version is switched to lexically and re-embedded;
 *  - a repeated re-embed scan changes nothing; an interrupted re-embed (closed before
 *    draining) finishes after the next open;
 *  - a provider that rejects some texts during the re-embed: those versions stay active and
 *    lexically searchable (no compensation of a healthy version), the dead letters report it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core_internal.h"
#include "rag_events.h"
#include "rag_ingest_api.h"
#include "ragcore/rag.h"
#include "test_support.h"

#define N_DOCS 24

typedef struct fixture {
    char *root;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("reembed");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

/* Open with the fake provider of `dim` (its fingerprint names the dimension). */
static int open_with(const char *root, unsigned int dim, int reembed, const char *fail_marker,
                     rag_ctx **ctx)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.retry_base_ms = 1;
    o.retry_cap_ms = 4;
    o.max_attempts = 3;
    rag_fake_provider_state *fs = NULL;
    o.provider = rag_fake_provider_new(dim, &fs);
    if (fail_marker) {
        fs->fail_marker = fail_marker;
        fs->fail_code = RAG_EPROVIDER;
    }
    o.reembed = reembed;
    int rc = rag_open(ctx, root, &o);
    free(o.provider); /* copied; the state is owned by the handle (or freed on failure) */
    return rc;
}

static void doc_text(int i, char *buf, size_t size)
{
    snprintf(buf, size,
             "Document %d talks about topic%d and subject%d. It mentions lighthouse%d keepers "
             "and a harbour of number %d, with enough words to make one chunk of text.",
             i, i, i * 7, i, i * 13);
}

static void put_all(rag_ctx *ctx, const char *suffix)
{
    for (int i = 0; i < N_DOCS; i++) {
        char id[32], text[512];
        snprintf(id, sizeof id, "doc-%02d", i);
        doc_text(i, text, sizeof text);
        if (suffix)
            strncat(text, suffix, sizeof text - strlen(text) - 1);
        rag_doc d = {0};
        d.id = id;
        d.data = text;
        d.size = strlen(text);
        d.mime = "text/plain";
        assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_OK);
    }
}

/* Version of `id` the search in `mode` for its own words returns (0: not returned).  k covers
 * every chunk of the root, so the vector side returns a document exactly when it holds a
 * vector of it. */
static uint64_t found(rag_ctx *ctx, int i, int mode)
{
    char id[32], q[64];
    snprintf(id, sizeof id, "doc-%02d", i);
    snprintf(q, sizeof q, "topic%d lighthouse%d", i, i);
    rag_query query = RAG_QUERY_INIT;
    query.text = q;
    query.k = mode == RAG_MODE_VECTOR ? 4 * N_DOCS : 5;
    query.unrestricted = 1;
    query.mode = mode;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &query, &r), RAG_OK);
    uint64_t v = 0;
    for (size_t j = 0; j < r->count; j++)
        if (!strcmp(r->items[j].doc_id, id))
            v = r->items[j].version;
    rag_results_free(r);
    return v;
}

static size_t count_found(rag_ctx *ctx, int mode)
{
    size_t n = 0;
    for (int i = 0; i < N_DOCS; i++)
        n += found(ctx, i, mode) != 0;
    return n;
}

static rag_status_info status_of(rag_ctx *ctx)
{
    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    return st;
}

static void assert_fsck_clean(rag_ctx *ctx)
{
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(ctx, 0, 10000, &rep), RAG_OK);
    for (size_t i = 0; i < rep->count; i++)
        print_message("finding: %s %s %s\n", rag_fsck_kind_name(rep->issues[i].kind),
                      rep->issues[i].doc_id, rep->issues[i].detail);
    assert_int_equal(rep->count, 0);
    rag_fsck_report_free(rep);
}

static void build_root(const char *root, unsigned int dim)
{
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(root, dim, 0, NULL, &ctx), RAG_OK);
    put_all(ctx, NULL);
    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    assert_int_equal(count_found(ctx, RAG_MODE_VECTOR), N_DOCS);
    rag_close(ctx);
}

static void test_refused_without_reembed(void **state)
{
    fixture *f = *state;
    build_root(f->root, 64);
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(f->root, 96, 0, NULL, &ctx), RAG_EFINGERPRINT);
    assert_null(ctx);
    assert_non_null(strstr(rag_error_last(), "reembed"));
    /* the refusal changed nothing: the original provider still opens and finds everything */
    assert_int_equal(open_with(f->root, 64, 0, NULL, &ctx), RAG_OK);
    assert_int_equal(count_found(ctx, RAG_MODE_VECTOR), N_DOCS);
    rag_status_info st = status_of(ctx);
    assert_int_equal(st.model_generation, 0);
    assert_int_equal(st.reembed_pending, 0);
    rag_close(ctx);
}

static void test_reembed_new_dimension(void **state)
{
    fixture *f = *state;
    build_root(f->root, 64);
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(f->root, 96, 1, NULL, &ctx), RAG_OK);
    rag_status_info st = status_of(ctx);
    assert_int_equal(st.model_generation, 1);
    assert_int_equal(st.reembed_pending, st.vectors);
    assert_true(st.reembed_pending >= N_DOCS);
    assert_non_null(strstr(st.provider_fingerprint, "96"));
    /* before the drain: lexical (and hybrid) still find everything at version 1, the vector
     * side nothing (the old vectors are gone, the new ones not there yet) */
    assert_int_equal(count_found(ctx, RAG_MODE_LEXICAL), N_DOCS);
    assert_int_equal(count_found(ctx, RAG_MODE_HYBRID), N_DOCS);
    assert_int_equal(count_found(ctx, RAG_MODE_VECTOR), 0);

    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    st = status_of(ctx);
    assert_int_equal(st.reembed_pending, 0);
    for (int i = 0; i < N_DOCS; i++)
        assert_int_equal(found(ctx, i, RAG_MODE_VECTOR), 1); /* same version, new vectors */
    assert_int_equal(st.sagas_running, 0);
    assert_int_equal(st.dead_letters, 0);
    assert_fsck_clean(ctx);

    /* a second scan of the same generation (forced by hand) re-sends everything: the index
     * sees every vector present and changes nothing */
    rag_index_stats before;
    assert_int_equal(rag_index_stats_get(ctx->index, &before), RAG_OK);
    size_t sent = 0;
    int done = 0;
    while (!done)
        assert_int_equal(rag_ingest_reembed_step(ctx->ingest, 2, 5, &sent, &done), RAG_OK);
    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    rag_index_stats after;
    assert_int_equal(rag_index_stats_get(ctx->index, &after), RAG_OK);
    assert_int_equal(after.epoch, before.epoch);
    assert_int_equal(after.vectors, before.vectors);
    rag_close(ctx);

    /* the new provider is the root's provider now; the old one is refused */
    assert_int_equal(open_with(f->root, 96, 0, NULL, &ctx), RAG_OK);
    assert_int_equal(count_found(ctx, RAG_MODE_VECTOR), N_DOCS);
    rag_close(ctx);
    assert_int_equal(open_with(f->root, 64, 0, NULL, &ctx), RAG_EFINGERPRINT);
}

static void test_interrupted_reembed_resumes(void **state)
{
    fixture *f = *state;
    build_root(f->root, 64);
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(f->root, 80, 1, NULL, &ctx), RAG_OK);
    rag_close(ctx); /* before any consumer ran */
    /* the new provider matches the record now: no flag needed to finish */
    assert_int_equal(open_with(f->root, 80, 0, NULL, &ctx), RAG_OK);
    assert_true(status_of(ctx).reembed_pending > 0);
    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    assert_int_equal(status_of(ctx).reembed_pending, 0);
    assert_int_equal(count_found(ctx, RAG_MODE_VECTOR), N_DOCS);
    assert_fsck_clean(ctx);
    rag_close(ctx);
}

/* Version 2 of every document, embedded by the 64-d model, its doc.embedded left queued for
 * the index (the close relays it): old-model vectors in flight when a re-embed begins. */
static void embed_second_edition_only(const char *root)
{
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(root, 64, 0, NULL, &ctx), RAG_OK);
    put_all(ctx, " Second edition.");
    size_t moved = 0, processed = 0;
    assert_int_equal(rag_outbox_relay(rag_ingest_outbox(ctx->ingest), &ctx->transport, 0, &moved),
                     RAG_OK);
    do {
        assert_int_equal(rag_consumer_run_once(rag_embed_consumer(ctx->embed), &ctx->transport,
                                               &ctx->policy, &processed),
                         RAG_OK);
    } while (processed);
    rag_close(ctx);
}

/* Version 2 of every document is embedded by the old model but its doc.embedded has not
 * reached the index when the re-embed begins. */
static void test_old_vectors_in_flight(void **state)
{
    fixture *f = *state;
    build_root(f->root, 64);
    embed_second_edition_only(f->root);
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(f->root, 72, 1, NULL, &ctx), RAG_OK);
    uint64_t in_flight = 0;
    assert_int_equal(rag_queue_total_depth(&ctx->transport, RAG_TOPIC_EMBEDDED, &in_flight),
                     RAG_OK);
    assert_int_equal(in_flight, N_DOCS); /* 64-d vectors the 72-d index must not take */
    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    rag_status_info st = status_of(ctx);
    assert_int_equal(st.reembed_pending, 0);
    assert_int_equal(st.dead_letters, 0);
    for (int i = 0; i < N_DOCS; i++)
        assert_int_equal(found(ctx, i, RAG_MODE_VECTOR), 2);
    assert_fsck_clean(ctx);
    rag_close(ctx);
}

/*
 * Recovery from a snapshot taken while a re-embed was pending: the log after it lists the
 * labels of a version switched to without vectors and, later, the same labels given their
 * vectors.  A process that dies without closing leaves both entries to replay; each label
 * must reach the vector index once.
 */
static void test_replay_after_crash(void **state)
{
    fixture *f = *state;
    build_root(f->root, 64);
    embed_second_edition_only(f->root);
    rag_ctx *ctx = NULL;
    /* the re-embed starts; the close writes a snapshot before any of it is applied */
    assert_int_equal(open_with(f->root, 72, 1, NULL, &ctx), RAG_OK);
    rag_close(ctx);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        rag_ctx *c = NULL;
        if (open_with(f->root, 72, 0, NULL, &c) != RAG_OK || rag_drain(c, 20000) != RAG_OK)
            _exit(1);
        _exit(0); /* no rag_close: no snapshot, the log holds everything since */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    assert_int_equal(open_with(f->root, 72, 0, NULL, &ctx), RAG_OK);
    rag_status_info st = status_of(ctx);
    assert_int_equal(st.reembed_pending, 0);
    rag_query q = RAG_QUERY_INIT;
    q.text = "topic3 lighthouse3";
    q.k = 4 * N_DOCS;
    q.unrestricted = 1;
    q.mode = RAG_MODE_VECTOR;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
    assert_int_equal(r->count, st.vectors); /* every chunk once, none twice */
    for (size_t i = 0; i < r->count; i++)
        for (size_t j = i + 1; j < r->count; j++)
            assert_false(!strcmp(r->items[i].doc_id, r->items[j].doc_id) &&
                         r->items[i].chunk == r->items[j].chunk);
    rag_results_free(r);
    assert_fsck_clean(ctx);
    rag_close(ctx);
}

static void test_reembed_rejected_texts(void **state)
{
    fixture *f = *state;
    rag_ctx *ctx = NULL;
    assert_int_equal(open_with(f->root, 64, 0, NULL, &ctx), RAG_OK);
    put_all(ctx, NULL);
    rag_doc d = {0};
    d.id = "poisoned";
    d.data = "A text about topic999 lighthouse999 with the word POISON inside.";
    d.size = strlen(d.data);
    d.mime = "text/plain";
    assert_int_equal(rag_doc_put(ctx, &d, NULL), RAG_OK);
    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    rag_close(ctx);

    /* the new provider rejects that one text for good */
    assert_int_equal(open_with(f->root, 48, 1, "POISON", &ctx), RAG_OK);
    assert_int_equal(rag_drain(ctx, 20000), RAG_OK);
    rag_status_info st = status_of(ctx);
    assert_int_equal(st.dead_letters, 1);
    assert_true(st.reembed_pending >= 1);
    assert_int_equal(st.sagas_failed, 0); /* a healthy active version is not compensated */
    assert_int_equal(count_found(ctx, RAG_MODE_VECTOR), N_DOCS);
    rag_query q = RAG_QUERY_INIT;
    q.text = "topic999 lighthouse999";
    q.k = 3;
    q.unrestricted = 1;
    q.mode = RAG_MODE_LEXICAL;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
    assert_true(r->count >= 1);
    assert_string_equal(r->items[0].doc_id, "poisoned");
    assert_int_equal(r->items[0].version, 1);
    rag_results_free(r);
    rag_close(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refused_without_reembed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reembed_new_dimension, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_reembed_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_vectors_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_after_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reembed_rejected_texts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
