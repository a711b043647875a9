/*
 * Poison input through the public API: a host provider that rejects, permanently
 * (RAG_EPROVIDER), every text containing a marker.  A version with such a chunk cannot be
 * embedded: its doc.chunked is dead-lettered in embed and the saga compensates.  Checked:
 *
 *   - rag_drain terminates, and every other document is indexed;
 *   - a poisoned update: rag_trace says "failed" (with a code), the PREVIOUS version stays
 *     the one searches return (all its chunks, once), nothing of the poisoned one;
 *   - a poisoned first version: "failed", and the document is not searchable;
 *   - rag_status v2 counts the failed sagas and the dead letters, rag_dlq_list shows them;
 *   - rag_fsck reports exactly the dead letters and nothing else, and is clean once they are
 *     dropped;
 *   - once the provider accepts the text, retrying the dead letter of a compensated version
 *     completes it forward (its data is still stored: it becomes the active version, the
 *     saga "done"; docs/update-flow.md), and a new put moves the document on either way.
 *
 * Searches enumerate: k exceeds the number of vectors, so one search returns every live
 * chunk and the checks can be exact.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define DIM 64
#define MARKER "POISONED"
#define NGOOD 6
#define TEXT_MAX 2048

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
    rag_fake_provider_state *fs; /* owned by ctx; the test may switch the marker off */
} fixture;

static void open_root(fixture *f, int workers)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.chunk_target = 200; /* several chunks per version of the multi-chunk texts */
    o.chunk_min = 64;
    o.chunk_max = 400;
    o.retry_base_ms = 1;
    o.retry_cap_ms = 10;
    rag_embed_provider *p = rag_fake_provider_new(DIM, &f->fs);
    f->fs->fail_marker = MARKER;
    f->fs->fail_code = RAG_EPROVIDER;
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
    f->root = rag_test_tmpdir("poison");
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

/* ---- texts ---------------------------------------------------------------------------------- */

/* Eight sentences naming `tag` (several chunks); with `poison`, the last one carries the
 * marker, so exactly one chunk of the version is rejected. */
static size_t long_text(char *buf, size_t n, const char *tag, int poison)
{
    static const char *const things[] = {"copper kettle", "harbor crane", "meadow fence",
                                         "signal tower", "orchard gate", "granite quarry",
                                         "violet lamp", "compass rose"};
    size_t len = 0;
    for (int i = 0; i < 8; i++)
        len += (size_t)snprintf(buf + len, n - len, "%sThe %s of %s stands in row %d today.",
                                i ? " " : "", things[i], tag, i);
    if (poison)
        len += (size_t)snprintf(buf + len, n - len, " This line is %s for the provider.",
                                MARKER);
    return len;
}

static size_t short_text(char *buf, size_t n, const char *tag, int poison)
{
    return (size_t)snprintf(buf, n, "Short record %s about the %s ledger%s.", tag, tag,
                            poison ? " " MARKER : "");
}

static void put(rag_ctx *ctx, const char *id, const char *text, uint64_t want_version)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    uint64_t v = 0;
    int rc = rag_doc_put(ctx, &d, &v);
    if (rc)
        fprintf(stderr, "put %s: %s (%s)\n", id, rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK); /* poison is found later, in embed: the put succeeds */
    assert_int_equal(v, want_version);
}

static void good_id(char *buf, size_t n, int i) { snprintf(buf, n, "good-%d", i); }

static void good_text(char *buf, size_t n, int i)
{
    char tag[16];
    snprintf(tag, sizeof tag, "good%d", i);
    short_text(buf, n, tag, 0);
}

/* ---- enumeration and checks ----------------------------------------------------------------- */

static rag_results *enumerate(rag_ctx *ctx)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = "record ledger stands row";
    q.k = 1000;
    q.unrestricted = 1;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc)
        fprintf(stderr, "rag_search: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    assert_true(r->count < 1000);
    return r;
}

/* `id` is returned as exactly `text` at `version`: chunks 0..n-1 once each, in one version,
 * each a piece of the text, together covering it from start to end. */
static void assert_doc_is(const rag_results *r, const char *id, uint64_t version,
                          const char *text)
{
    const rag_result *by_chunk[64] = {0};
    uint32_t max = 0;
    size_t count = 0;
    for (size_t i = 0; i < r->count; i++) {
        const rag_result *x = &r->items[i];
        if (strcmp(x->doc_id, id) != 0)
            continue;
        count++;
        if (x->version != version)
            fail_msg("%s: version %" PRIu64 " returned, expected %" PRIu64, id, x->version,
                     version);
        assert_true(x->chunk < 64);
        if (by_chunk[x->chunk])
            fail_msg("%s v%" PRIu64 ": chunk %u returned twice", id, version, x->chunk);
        by_chunk[x->chunk] = x;
        if (x->chunk > max)
            max = x->chunk;
        if (!strstr(text, x->text))
            fail_msg("%s v%" PRIu64 " chunk %u is not from the expected text: '%s'", id,
                     version, x->chunk, x->text);
    }
    if (!count)
        fail_msg("%s: not returned, expected v%" PRIu64, id, version);
    for (uint32_t c = 0; c <= max; c++)
        if (!by_chunk[c])
            fail_msg("%s v%" PRIu64 ": chunk %u missing", id, version, c);
    size_t tl = strlen(text), ll = strlen(by_chunk[max]->text);
    assert_int_equal(strncmp(text, by_chunk[0]->text, strlen(by_chunk[0]->text)), 0);
    assert_true(ll <= tl);
    assert_string_equal(text + tl - ll, by_chunk[max]->text);
}

static void assert_doc_absent(const rag_results *r, const char *id)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->items[i].doc_id, id) == 0)
            fail_msg("%s returned (v%" PRIu64 " chunk %u) but must not be searchable", id,
                     r->items[i].version, r->items[i].chunk);
}

/* No result may mention the marker: nothing of a poisoned version is ever searchable. */
static void assert_no_poison(const rag_results *r)
{
    for (size_t i = 0; i < r->count; i++)
        if (strstr(r->items[i].text, MARKER))
            fail_msg("%s v%" PRIu64 ": a poisoned chunk is searchable", r->items[i].doc_id,
                     r->items[i].version);
}

static void assert_trace(rag_ctx *ctx, const char *id, const char *state, uint64_t version,
                         uint64_t active)
{
    rag_trace_info *t = NULL;
    int rc = rag_trace(ctx, id, &t);
    if (rc)
        fail_msg("rag_trace(%s): %s (%s)", id, rag_strerror(rc), rag_error_last());
    if (strcmp(t->state, state) != 0 || t->version != version || t->active_version != active ||
        t->deleted || strcmp(t->kind, "put") != 0)
        fail_msg("rag_trace(%s): %s state '%s' v%" PRIu64 " active %" PRIu64 " deleted %d "
                 "(%s); expected put '%s' v%" PRIu64 " active %" PRIu64,
                 id, t->kind, t->state, t->version, t->active_version, t->deleted, t->reason,
                 state, version, active);
    if (strcmp(state, "failed") == 0) {
        assert_int_not_equal(t->code, RAG_OK);
        assert_true(t->reason[0] != 0);
    } else {
        assert_int_equal(t->code, RAG_OK);
    }
    assert_true(t->step_count >= 1);
    assert_non_null(t->steps);
    rag_trace_free(t);
}

static size_t fsck_count(rag_ctx *ctx, rag_fsck_kind only, size_t *of_kind)
{
    rag_fsck_report *rep = NULL;
    int rc = rag_fsck(ctx, 0, 30000, &rep);
    if (rc)
        fail_msg("rag_fsck: %s (%s)", rag_strerror(rc), rag_error_last());
    size_t n = rep->count, k = 0;
    for (size_t i = 0; i < n; i++) {
        printf("  fsck: %s %s v%" PRIu64 ": %s\n", rag_fsck_kind_name(rep->issues[i].kind),
               rep->issues[i].doc_id, rep->issues[i].version, rep->issues[i].detail);
        k += rep->issues[i].kind == only;
    }
    assert_int_equal(rep->drained, 1);
    rag_fsck_report_free(rep);
    if (of_kind)
        *of_kind = k;
    return n;
}

static rag_status_info status(rag_ctx *ctx)
{
    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    return st;
}

/* ---- the scenario -------------------------------------------------------------------------- */

typedef struct scenario {
    char upd_v1[TEXT_MAX], upd_v2[TEXT_MAX], first_v1[TEXT_MAX];
} scenario;

/* Six good documents and "upd" v1 indexed; then "upd" v2 (one poisoned chunk of several),
 * "first" v1 (poisoned), one more good document; drain.  Checks everything the compensation
 * promises and returns with the two dead letters in place. */
static void poison_scenario(fixture *f, scenario *s)
{
    char id[32], text[TEXT_MAX];
    for (int i = 0; i < NGOOD - 1; i++) {
        good_id(id, sizeof id, i);
        good_text(text, sizeof text, i);
        put(f->ctx, id, text, 1);
    }
    long_text(s->upd_v1, sizeof s->upd_v1, "updone", 0);
    put(f->ctx, "upd", s->upd_v1, 1);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    rag_results *r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 1, s->upd_v1);
    rag_results_free(r);

    long_text(s->upd_v2, sizeof s->upd_v2, "updtwo", 1);
    put(f->ctx, "upd", s->upd_v2, 2);
    short_text(s->first_v1, sizeof s->first_v1, "firstone", 1);
    put(f->ctx, "first", s->first_v1, 1);
    good_id(id, sizeof id, NGOOD - 1);
    good_text(text, sizeof text, NGOOD - 1);
    put(f->ctx, id, text, 1);
    /* a permanent failure must not keep the drain waiting */
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);

    r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 1, s->upd_v1); /* the previous version, all of it, only it */
    assert_doc_absent(r, "first");
    assert_no_poison(r);
    for (int i = 0; i < NGOOD; i++) {
        good_id(id, sizeof id, i);
        good_text(text, sizeof text, i);
        assert_doc_is(r, id, 1, text);
    }
    size_t hits = r->count;
    rag_results_free(r);

    assert_trace(f->ctx, "upd", "failed", 2, 1);
    assert_trace(f->ctx, "first", "failed", 1, 0);
    good_id(id, sizeof id, NGOOD - 1);
    assert_trace(f->ctx, id, "done", 1, 1);

    rag_status_info st = status(f->ctx);
    printf("after the poison: documents %" PRIu64 " versions %" PRIu64 " chunks %" PRIu64
           " vectors %" PRIu64 " dead %" PRIu64 " sagas running %" PRIu64 " failed %" PRIu64
           " compensating %" PRIu64 "\n",
           st.documents, st.versions, st.chunks, st.vectors, st.dead_letters, st.sagas_running,
           st.sagas_failed, st.sagas_compensating);
    assert_int_equal(st.dead_letters, 2);
    assert_int_equal(st.sagas_failed, 2);
    assert_int_equal(st.sagas_running, 0);
    assert_int_equal(st.sagas_compensating, 0);
    assert_int_equal(st.vectors, hits); /* no vector of a poisoned version is left */

    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(dl[i].topic, "doc.chunked");
        assert_string_equal(dl[i].module, "embed");
        assert_int_equal(dl[i].code, RAG_EPROVIDER);
        assert_int_equal(dl[i].attempts, 1); /* permanent: not retried */
    }
    rag_free(dl);

    /* fsck: the two dead letters, and nothing else (the failed sagas are not phantoms) */
    size_t dead = 0;
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, &dead), 2);
    assert_int_equal(dead, 2);
}

/* A new put after a failed version moves the document on; then all is clean. */
static void move_on(fixture *f, uint64_t upd_version, uint64_t first_version)
{
    char upd[TEXT_MAX], first[TEXT_MAX];
    long_text(upd, sizeof upd, "updthree", 0);
    short_text(first, sizeof first, "firsttwo", 0);
    put(f->ctx, "upd", upd, upd_version);
    put(f->ctx, "first", first, first_version);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    rag_results *r = enumerate(f->ctx);
    assert_doc_is(r, "upd", upd_version, upd);
    assert_doc_is(r, "first", first_version, first);
    assert_no_poison(r);
    rag_results_free(r);
    assert_trace(f->ctx, "upd", "done", upd_version, upd_version);
    assert_trace(f->ctx, "first", "done", first_version, first_version);
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, NULL), 0);
    rag_status_info st = status(f->ctx);
    assert_int_equal(st.dead_letters, 0);
    assert_int_equal(st.sagas_running, 0);
    assert_int_equal(st.documents, NGOOD + 2);
    assert_int_equal(st.chunks, st.vectors);
}

/* Poisoned update and poisoned first version; the dead letters dropped; new puts. */
static void test_poison_drop(void **state)
{
    fixture *f = *state;
    open_root(f, 0);
    scenario s;
    poison_scenario(f, &s);

    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rag_dlq_drop(f->ctx, dl[i].id), RAG_OK);
    rag_free(dl);
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, NULL), 0);
    assert_int_equal(status(f->ctx).dead_letters, 0);

    /* dropping changes nothing for the documents */
    rag_results *r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 1, s.upd_v1);
    assert_doc_absent(r, "first");
    rag_results_free(r);
    assert_trace(f->ctx, "upd", "failed", 2, 1);
    assert_trace(f->ctx, "first", "failed", 1, 0);

    /* ... and survives a reopen */
    rag_close(f->ctx);
    f->ctx = NULL;
    open_root(f, 0);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 1, s.upd_v1);
    assert_doc_absent(r, "first");
    rag_results_free(r);
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, NULL), 0);

    /* the marker still rejects nothing new: the next versions are clean texts */
    move_on(f, 3, 2);
}

/* The provider fixed, the dead letters retried: the compensated versions complete forward
 * (the poisoned update replaces the previous version, the poisoned first version becomes
 * searchable), nothing failed is left; then new puts. */
static void test_poison_retry_after_fix(void **state)
{
    fixture *f = *state;
    open_root(f, 0);
    scenario s;
    poison_scenario(f, &s);

    __atomic_store_n(&f->fs->fail_marker, NULL, __ATOMIC_SEQ_CST);
    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rag_dlq_retry(f->ctx, dl[i].id), RAG_OK);
    rag_free(dl);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_int_equal(status(f->ctx).dead_letters, 0);

    rag_results *r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 2, s.upd_v2);
    assert_doc_is(r, "first", 1, s.first_v1);
    rag_results_free(r);
    assert_trace(f->ctx, "upd", "done", 2, 2);
    assert_trace(f->ctx, "first", "done", 1, 1);
    rag_status_info st = status(f->ctx);
    assert_int_equal(st.sagas_failed, 0);
    assert_int_equal(st.sagas_running, 0);
    assert_int_equal(st.sagas_compensating, 0);
    assert_int_equal(st.versions, st.documents); /* v1 of "upd" freed by the switch */
    assert_int_equal(st.chunks, st.vectors);
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, NULL), 0);

    move_on(f, 3, 2);
}

/* With the workers running; and a poisoned version overtaken by a good one before the
 * pipeline ran: the newest version wins, only the dead letter is reported. */
static void test_poison_with_workers(void **state)
{
    fixture *f = *state;
    open_root(f, 1);
    scenario s;
    poison_scenario(f, &s);

    char v3[TEXT_MAX], v4[TEXT_MAX], v5[TEXT_MAX];
    long_text(v3, sizeof v3, "updthree", 0);
    long_text(v4, sizeof v4, "updfour", 1);
    long_text(v5, sizeof v5, "updfive", 0);
    put(f->ctx, "upd", v3, 3);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    put(f->ctx, "upd", v4, 4);
    put(f->ctx, "upd", v5, 5);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    rag_results *r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 5, v5);
    assert_no_poison(r);
    rag_results_free(r);
    assert_trace(f->ctx, "upd", "done", 5, 5);
    /* dead letters: the two of the scenario and v4's */
    rag_status_info st = status(f->ctx);
    assert_int_equal(st.dead_letters, 3);
    assert_int_equal(st.sagas_running, 0);
    size_t dead = 0;
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, &dead), 3);
    assert_int_equal(dead, 3);

    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f->ctx, &dl, &n), RAG_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rag_dlq_drop(f->ctx, dl[i].id), RAG_OK);
    rag_free(dl);
    assert_int_equal(fsck_count(f->ctx, RAG_FSCK_DEAD_LETTER, NULL), 0);
    r = enumerate(f->ctx);
    assert_doc_is(r, "upd", 5, v5);
    assert_doc_absent(r, "first");
    rag_results_free(r);
    assert_int_equal(rag_stop(f->ctx), RAG_OK);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_poison_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_retry_after_fix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_with_workers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
