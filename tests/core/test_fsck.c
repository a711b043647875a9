/*
 * rag_fsck finds what it promises and repairs it through events: each test makes one kind of
 * inconsistency the way a bug or a lost message would (never by calling fsck's own helpers),
 * checks that a first run reports it, that --repair fixes it, and that a second run is clean
 * with the document searchable as it should be.  Also rag_trace on a finished, a running and
 * a failed saga.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "rag_events.h"
#include "ragcore/rag.h"
#include "test_support.h"

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
    rag_fake_provider_state *fs;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("fsck");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.provider = rag_fake_provider_new(64, &f->fs);
    o.retry_base_ms = 1;
    o.retry_cap_ms = 5;
    assert_int_equal(rag_open(&f->ctx, f->root, &o), RAG_OK);
    free(o.provider); /* rag_open copied the struct and owns its state */
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

static void put_text(rag_ctx *ctx, const char *id, const char *text, uint64_t *ver)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    assert_int_equal(rag_doc_put(ctx, &d, ver), RAG_OK);
}

/* Version of `id` the search for `q` returns (0: not returned); fails on two versions. */
static uint64_t found_version(rag_ctx *ctx, const char *q, const char *id)
{
    rag_query query = RAG_QUERY_INIT;
    query.text = q;
    query.k = 50;
    query.unrestricted = 1;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &query, &r), RAG_OK);
    uint64_t v = 0;
    for (size_t i = 0; i < r->count; i++) {
        if (strcmp(r->items[i].doc_id, id))
            continue;
        if (v && v != r->items[i].version)
            fail_msg("%s returned at versions %llu and %llu", id, (unsigned long long)v,
                     (unsigned long long)r->items[i].version);
        v = r->items[i].version;
    }
    rag_results_free(r);
    return v;
}

static size_t count_kind(const rag_fsck_report *rep, rag_fsck_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < rep->count; i++)
        n += rep->issues[i].kind == kind;
    return n;
}

static void print_report(const char *what, const rag_fsck_report *rep)
{
    for (size_t i = 0; i < rep->count; i++)
        printf("  %s: %s %s@%llu %s%s\n", what, rag_fsck_kind_name(rep->issues[i].kind),
               rep->issues[i].doc_id, (unsigned long long)rep->issues[i].version,
               rep->issues[i].detail, rep->issues[i].repaired ? " [repaired]" : "");
}

static void expect_clean(rag_ctx *ctx)
{
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(ctx, 0, 30000, &rep), RAG_OK);
    print_report("second run", rep);
    assert_int_equal(rep->count, 0);
    assert_true(rep->drained);
    rag_fsck_report_free(rep);
}

/* Take every message of `topic` off the broker without handling it: a lost message. */
static size_t lose_messages(rag_ctx *ctx, const char *topic)
{
    rag_queue_message m[16];
    size_t n = 0;
    assert_int_equal(ctx->transport.fetch(ctx->transport.state, topic, 16, 30000, m, &n), 0);
    if (n) {
        assert_int_equal(ctx->transport.ack(ctx->transport.state, m, n), 0);
        ctx->transport.release(ctx->transport.state, m, n);
    }
    return n;
}

static void test_clean_root(void **state)
{
    fixture *f = *state;
    put_text(f->ctx, "a", "Granite weathers slowly into sand along the coast.", NULL);
    put_text(f->ctx, "b", "Owls hunt at night with silent feathers.", NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    put_text(f->ctx, "a", "Granite weathers slowly into sand along the northern coast.", NULL);
    assert_int_equal(rag_doc_delete(f->ctx, "b"), RAG_OK);
    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(f->ctx, 0, 30000, &rep), RAG_OK);
    assert_int_equal(rep->count, 0); /* the drain inside fsck let the update land */
    assert_true(rep->drained);
    assert_int_equal(rep->documents_checked, 2);
    assert_true(rep->labels_checked >= 1);
    rag_fsck_report_free(rep);
    assert_int_equal(rag_fsck(f->ctx, 0x8, 0, &rep), RAG_EINVAL);
    assert_int_equal(rag_fsck(NULL, 0, 0, &rep), RAG_EINVAL);
}

/* A lost doc.chunked: the saga never moves.  Found as a stuck saga (and the document has no
 * searchable version); the repair re-sends the step from what ingest stored. */
static void test_lost_message_stuck_saga(void **state)
{
    fixture *f = *state;
    uint64_t v = 0;
    put_text(f->ctx, "lost", "Basalt columns form when thick lava cools evenly.", &v);
    assert_int_equal(lose_messages(f->ctx, RAG_TOPIC_CHUNKED), 1);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(found_version(f->ctx, "basalt columns lava", "lost"), 0);

    rag_trace_info *t = NULL;
    assert_int_equal(rag_trace(f->ctx, "lost", &t), RAG_OK);
    assert_string_equal(t->state, "running");
    assert_string_equal(t->kind, "put");
    assert_int_equal(t->step_count, 1);
    assert_string_equal(t->steps[0].event, "put");
    rag_trace_free(t);

    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(f->ctx, RAG_FSCK_REPAIR, 30000, &rep), RAG_OK);
    print_report("first run", rep);
    assert_int_equal(count_kind(rep, RAG_FSCK_STUCK_SAGA), 1);
    assert_string_equal(rep->issues[0].doc_id, "lost");
    assert_int_equal(rep->issues[0].version, v);
    assert_true(rep->issues[0].repaired);
    rag_fsck_report_free(rep);
    expect_clean(f->ctx);
    assert_int_equal(found_version(f->ctx, "basalt columns lava", "lost"), v);

    /* the trace shows the redrive and the journey that followed */
    assert_int_equal(rag_trace(f->ctx, "lost", &t), RAG_OK);
    assert_string_equal(t->state, "done");
    assert_int_equal(t->active_version, v);
    int redrive = 0, indexed = 0;
    for (size_t i = 0; i < t->step_count; i++) {
        redrive |= !strcmp(t->steps[i].event, "redrive");
        indexed |= !strcmp(t->steps[i].event, RAG_TOPIC_INDEXED);
    }
    assert_true(redrive && indexed);
    rag_trace_free(t);
}

/* A lost doc.deleted: the tombstone hides the document, but the index keeps its vectors. */
static void test_lost_delete_orphans(void **state)
{
    fixture *f = *state;
    put_text(f->ctx, "gone", "Tidal pools shelter anemones and small crabs.", NULL);
    put_text(f->ctx, "kept", "Lichens grow on bare rock in cold places.", NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(rag_doc_delete(f->ctx, "gone"), RAG_OK);
    assert_int_equal(lose_messages(f->ctx, RAG_TOPIC_DELETED), 1);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);

    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(f->ctx, 0, 30000, &rep), RAG_OK);
    print_report("check only", rep);
    assert_int_equal(count_kind(rep, RAG_FSCK_ORPHAN_VECTOR), 1);
    assert_int_equal(count_kind(rep, RAG_FSCK_STUCK_SAGA), 1);
    for (size_t i = 0; i < rep->count; i++) {
        assert_string_equal(rep->issues[i].doc_id, "gone");
        assert_false(rep->issues[i].repaired); /* check only */
    }
    rag_fsck_report_free(rep);

    assert_int_equal(rag_fsck(f->ctx, RAG_FSCK_REPAIR, 30000, &rep), RAG_OK);
    assert_true(rep->count >= 1);
    for (size_t i = 0; i < rep->count; i++)
        assert_true(rep->issues[i].repaired);
    rag_fsck_report_free(rep);
    expect_clean(f->ctx);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 1);
    assert_int_equal(st.vectors, st.chunks);
    assert_int_equal(st.sagas_running, 0);
    assert_true(found_version(f->ctx, "lichens rock cold", "kept") > 0);
}

/* Vectors of a document ingest has never heard of (a doc.embedded from nowhere). */
static void test_unknown_document_orphans(void **state)
{
    fixture *f = *state;
    put_text(f->ctx, "real", "Glaciers carve U-shaped valleys over millennia.", NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);

    float vec[64];
    for (int i = 0; i < 64; i++)
        vec[i] = 0.125f;
    rag_ev_vector ev_vec = {0};
    ev_vec.chunk_no = 0;
    ev_vec.text = "ghost text";
    ev_vec.text_len = 10;
    ev_vec.vector = vec;
    rag_ev_embedded ev = {0};
    ev.doc_id = "ghost";
    ev.version = 3;
    ev.dim = 64;
    ev.vector_count = 1;
    ev.vectors = &ev_vec;
    rag_wbuf b;
    rag_wbuf_init(&b);
    assert_int_equal(rag_ev_embedded_encode(&ev, &b), RAG_OK);
    rag_queue_message m = {0};
    snprintf(m.topic, sizeof m.topic, "%s", RAG_TOPIC_EMBEDDED);
    snprintf(m.id, sizeof m.id, "test-ghost-1");
    m.data = b.data;
    m.size = b.len;
    assert_int_equal(f->ctx->transport.publish(f->ctx->transport.state, &m, 1), 0);
    rag_wbuf_free(&b);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);

    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(f->ctx, RAG_FSCK_REPAIR, 30000, &rep), RAG_OK);
    print_report("first run", rep);
    assert_int_equal(rep->count, 1);
    assert_int_equal(rep->issues[0].kind, RAG_FSCK_ORPHAN_VECTOR);
    assert_string_equal(rep->issues[0].doc_id, "ghost");
    assert_int_equal(rep->issues[0].version, 3);
    assert_true(rep->issues[0].label >= 0);
    assert_true(rep->issues[0].repaired);
    rag_fsck_report_free(rep);
    expect_clean(f->ctx);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.vectors, st.chunks);
}

/* A label row lost inside the index: the index's own check reports it, and the document is
 * then short of a searchable chunk (a partial phantom) until it is re-indexed. */
static void test_lost_label_row_phantom(void **state)
{
    fixture *f = *state;
    /* two paragraphs far apart in content, small chunks: several chunks */
    char text[4096];
    size_t off = 0;
    for (int p = 0; p < 8; p++)
        off += (size_t)snprintf(text + off, sizeof text - off,
                                "Paragraph %d talks about topic%d with enough words to fill a "
                                "chunk of its own, repeated words word%d word%d word%d.\n\n",
                                p, p, p, p, p);
    uint64_t v = 0;
    put_text(f->ctx, "multi", text, &v);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_true(st.chunks >= 2);

    /* delete the first row of the index's "labels" table behind the module's back */
    MDB_env *env = rag_index_env(f->ctx->index);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "labels", 0, &dbi), 0);
    MDB_cursor *cur;
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    MDB_val k, val;
    assert_int_equal(mdb_cursor_get(cur, &k, &val, MDB_FIRST), 0);
    assert_int_equal(mdb_cursor_del(cur, 0), 0);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);

    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(f->ctx, RAG_FSCK_REPAIR, 30000, &rep), RAG_OK);
    print_report("first run", rep);
    assert_true(count_kind(rep, RAG_FSCK_INDEX_STATE) >= 1);
    assert_int_equal(count_kind(rep, RAG_FSCK_PHANTOM_DOCUMENT), 1);
    for (size_t i = 0; i < rep->count; i++)
        assert_true(rep->issues[i].repaired);
    rag_fsck_report_free(rep);
    expect_clean(f->ctx);
    /* re-indexed as a new version with every chunk searchable */
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.vectors, st.chunks);
    assert_int_equal(found_version(f->ctx, "topic0 word0", "multi"), v + 1);
}

/* A version the provider rejects: compensated, reported as a dead letter only; after the
 * dead letter is retried with the cause fixed, the saga completes forward. */
static void test_failed_saga_trace(void **state)
{
    fixture *f = *state;
    uint64_t v1 = 0, v2 = 0;
    put_text(f->ctx, "doc", "Coral reefs need warm clear shallow water.", &v1);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    f->fs->fail_marker = "POISON";
    f->fs->fail_code = RAG_EPROVIDER;
    put_text(f->ctx, "doc", "Coral reefs POISON need warm water.", &v2);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(found_version(f->ctx, "coral reefs warm water", "doc"), v1);

    rag_trace_info *t = NULL;
    assert_int_equal(rag_trace(f->ctx, "doc", &t), RAG_OK);
    assert_string_equal(t->state, "failed");
    assert_int_equal(t->version, v2);
    assert_int_equal(t->active_version, v1);
    assert_int_equal(t->code, RAG_EPROVIDER);
    assert_non_null(strstr(t->reason, "embed"));
    const char *want[] = {"put", RAG_TOPIC_CHUNKED, RAG_TOPIC_FAILED, RAG_TOPIC_REVERT,
                          RAG_TOPIC_INDEXED};
    assert_int_equal(t->step_count, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(t->steps[i].event, want[i]);
    assert_int_equal(t->steps[1].code, RAG_EPROVIDER); /* embed gave up */
    assert_string_equal(t->steps[1].module, "embed");
    rag_trace_free(t);

    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.sagas_failed, 1);
    assert_int_equal(st.sagas_running, 0);
    assert_int_equal(st.sagas_compensating, 0);

    rag_fsck_report *rep = NULL;
    assert_int_equal(rag_fsck(f->ctx, RAG_FSCK_REPAIR, 30000, &rep), RAG_OK);
    assert_int_equal(rep->count, 1);
    assert_int_equal(rep->issues[0].kind, RAG_FSCK_DEAD_LETTER);
    assert_string_equal(rep->issues[0].doc_id, "doc"); /* named from the payload */
    assert_int_equal(rep->issues[0].version, v2);
    assert_false(rep->issues[0].repaired); /* reported, never dropped */
    rag_fsck_report_free(rep);

    f->fs->fail_marker = NULL;
    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(dl[0].doc_id, "doc");
    assert_int_equal(dl[0].version, v2);
    assert_int_equal(rag_dlq_retry(f->ctx, dl[0].id), RAG_OK);
    rag_free(dl);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(found_version(f->ctx, "coral reefs warm water", "doc"), v2);
    assert_int_equal(rag_trace(f->ctx, "doc", &t), RAG_OK);
    assert_string_equal(t->state, "done");
    assert_int_equal(t->active_version, v2);
    rag_trace_free(t);
    expect_clean(f->ctx);
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.sagas_failed, 0);
    assert_int_equal(st.versions, 1);
    assert_int_equal(rag_trace(f->ctx, "nobody", &t), RAG_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_message_stuck_saga, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_delete_orphans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_document_orphans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_label_row_phantom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_saga_trace, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
