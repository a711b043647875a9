/*
 * Fault injection: a small fixed workload (4 puts, 2 updates, 1 delete, drains and a search,
 * from rag_open to rag_close) runs with the Nth LMDB commit failing -- once, or from the Nth
 * on -- for every N up to the number of commits the workload makes, and the same with the Nth
 * provider call.  Operations that return an error are not acknowledged (they may or may not
 * have happened); those that returned RAG_OK must be there.  After each faulted run the
 * faults are disarmed, the root reopened and drained, and then:
 *
 *   - each document is in a state the acknowledged operations allow: searches return its
 *     newest version exactly once (these texts are one chunk), nothing of older versions,
 *     nothing of deleted documents;
 *   - rag_status agrees (one stored version per live document, one vector per chunk, no dead
 *     letter, no saga running), the traces say "done", and rag_fsck finds nothing.
 *
 * Persistent provider faults dead-letter the doc.chunked messages after max_attempts; the
 * sagas compensate: the traces say "failed" and the previous version (or none) stays what
 * searches return.  After disarming, every dead letter is retried: each version completes
 * forward or is superseded, and then everything must be consistent.
 *
 * The workers are not started: rag_drain() pumps on this thread, so the count of commits and
 * provider calls is the same on every run and "the Nth" means the same operation each time.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragcore/ragcore.h"
#include "rag_common.h"
#include "test_support.h"

#define DIM 32
#define NDOC 4
#define MAX_CANDS 16
#define MAX_VERSIONS 16
#define TOKEN_MAX 24

static const char *const doc_ids[NDOC] = {"fa", "fb", "fc", "fd"};

typedef struct op {
    char kind; /* 'P' put, 'D' delete, 'W' drain, 'S' search */
    int doc;
    const char *token;
} op;

static const op workload[] = {
    {'P', 0, "alphaone"}, {'P', 1, "bravoone"}, {'P', 2, "charlieone"}, {'P', 3, "deltaone"},
    {'W', 0, NULL},       {'S', 0, NULL},       {'P', 0, "alphatwo"},   {'P', 1, "bravotwo"},
    {'D', 2, NULL},       {'W', 0, NULL},
};
#define NOPS (sizeof workload / sizeof workload[0])

static void doc_text(char *buf, size_t n, const char *token)
{
    snprintf(buf, n, "Fault test record %s. The %s ledger is kept in the harbor archive.", token,
             token);
}

static void fault_options(rag_options *o, rag_embed_provider **p)
{
    rag_options_init(o);
    o->no_sync = 1; /* the faults are injected at the commit call, durability is not the point */
    o->max_attempts = 3;
    o->retry_base_ms = 1;
    o->retry_cap_ms = 5;
    /* A failed broker ack leaves the message leased: come back to it soon (redeliveries of
     * applied messages are skipped by the inbox, which this also exercises). */
    o->lease_ms = 300;
    *p = rag_fake_provider_new(DIM, NULL);
    o->provider = *p;
}

static int open_root(const char *root, rag_ctx **ctx)
{
    rag_options o;
    rag_embed_provider *p = NULL;
    fault_options(&o, &p);
    int rc = rag_open(ctx, root, &o);
    free(p); /* rag_open copied the struct and owns (or released) the state */
    return rc;
}

/* ---- the model: per document, the states the acknowledged operations allow --------------- */

typedef struct cand {
    int live;
    uint64_t version; /* searchable version when live */
    uint64_t latest;  /* newest version number handed out */
    char token[TOKEN_MAX];
} cand;

typedef struct dmodel {
    cand c[MAX_CANDS];
    int n;
    /* token of each version (for the compensation checks, where puts never fail) */
    char vtoken[MAX_VERSIONS + 1][TOKEN_MAX];
} dmodel;

static char failure[512];

static void model_fail(const char *fmt, ...)
{
    if (failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof failure, fmt, ap);
    va_end(ap);
}

static void cand_add(dmodel *m, cand c)
{
    for (int i = 0; i < m->n; i++)
        if (!memcmp(&m->c[i], &c, sizeof c))
            return;
    if (m->n < MAX_CANDS)
        m->c[m->n++] = c;
    else
        model_fail("too many candidate states");
}

static void model_init(dmodel *ms)
{
    memset(ms, 0, NDOC * sizeof *ms);
    for (int d = 0; d < NDOC; d++)
        ms[d].n = 1; /* never put: not live, latest 0 */
}

static void apply_put(dmodel *m, int doc, const char *token, int rc, uint64_t v)
{
    dmodel old = *m;
    m->n = 0;
    for (int i = 0; i < old.n; i++) {
        cand c = old.c[i];
        cand after = {1, c.latest + 1, c.latest + 1, ""};
        snprintf(after.token, TOKEN_MAX, "%s", token);
        if (rc == RAG_OK) {
            if (v == after.version)
                cand_add(m, after);
        } else {
            cand_add(m, c); /* not acknowledged: it happened or it did not */
            cand_add(m, after);
        }
    }
    if (m->n == 0)
        model_fail("put %s returned v%" PRIu64 ", which no allowed state of %s explains", token,
                   v, doc_ids[doc]);
    if (rc == RAG_OK && v <= MAX_VERSIONS)
        snprintf(m->vtoken[v], TOKEN_MAX, "%s", token);
}

static void apply_delete(dmodel *m, int doc, int rc)
{
    dmodel old = *m;
    m->n = 0;
    for (int i = 0; i < old.n; i++) {
        cand c = old.c[i], after = c;
        after.live = 0;
        if (rc == RAG_OK) {
            if (c.live)
                cand_add(m, after);
        } else if (rc == RAG_ENOTFOUND) {
            if (!c.live)
                cand_add(m, c);
        } else {
            cand_add(m, c);
            cand_add(m, after);
        }
    }
    if (m->n == 0)
        model_fail("delete %s returned %s, which no allowed state explains", doc_ids[doc],
                   rag_strerror(rc));
}

/* ---- checks -------------------------------------------------------------------------------- */

typedef struct seen {
    int count;        /* results of the document */
    uint64_t version; /* of the last one */
    char text[256];
} seen;

/* One search whose k exceeds the number of vectors: every live chunk, as searches see them. */
static int enumerate(rag_ctx *ctx, seen *s, size_t *total)
{
    memset(s, 0, NDOC * sizeof *s);
    rag_query q = RAG_QUERY_INIT;
    q.text = "fault test record ledger";
    q.k = 1000;
    q.unrestricted = 1;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc) {
        model_fail("rag_search: %s (%s)", rag_strerror(rc), rag_error_last());
        return rc;
    }
    *total = r->count;
    for (size_t i = 0; i < r->count; i++) {
        int d = -1;
        for (int j = 0; j < NDOC; j++)
            if (strcmp(r->items[i].doc_id, doc_ids[j]) == 0)
                d = j;
        if (d < 0) {
            model_fail("search returned unknown document '%s'", r->items[i].doc_id);
            continue;
        }
        if (s[d].count && s[d].version != r->items[i].version)
            model_fail("%s returned in versions %" PRIu64 " and %" PRIu64, doc_ids[d],
                       s[d].version, r->items[i].version);
        if (r->items[i].chunk != 0)
            model_fail("%s v%" PRIu64 ": chunk %u of a one-chunk text", doc_ids[d],
                       r->items[i].version, r->items[i].chunk);
        s[d].count++;
        s[d].version = r->items[i].version;
        snprintf(s[d].text, sizeof s[d].text, "%s", r->items[i].text);
    }
    rag_results_free(r);
    return RAG_OK;
}

static int seen_is(const seen *s, int live, uint64_t version, const char *token)
{
    if (!live)
        return s->count == 0;
    char want[256];
    doc_text(want, sizeof want, token);
    return s->count == 1 && s->version == version && strcmp(s->text, want) == 0;
}

static void check_fsck(rag_ctx *ctx, const char *when)
{
    rag_fsck_report *rep = NULL;
    int rc = rag_fsck(ctx, 0, 30000, &rep);
    if (rc) {
        model_fail("%s: rag_fsck: %s (%s)", when, rag_strerror(rc), rag_error_last());
        return;
    }
    for (size_t i = 0; i < rep->count; i++)
        printf("  fsck: %s %s v%" PRIu64 ": %s\n", rag_fsck_kind_name(rep->issues[i].kind),
               rep->issues[i].doc_id, rep->issues[i].version, rep->issues[i].detail);
    if (rep->count)
        model_fail("%s: rag_fsck found %zu issue(s)", when, rep->count);
    rag_fsck_report_free(rep);
}

/* Status after a drain: one stored version per live document, one vector per chunk. */
static void check_status(rag_ctx *ctx, int live, size_t hits, const char *when)
{
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    int rc = rag_status(ctx, &st);
    if (rc) {
        model_fail("%s: rag_status: %s", when, rag_strerror(rc));
        return;
    }
    if (st.documents != (uint64_t)live || st.versions != (uint64_t)live ||
        st.chunks != st.vectors || st.vectors != hits || st.dead_letters != 0 ||
        st.sagas_running != 0 || st.sagas_compensating != 0)
        model_fail("%s: status documents %" PRIu64 " (expected %d) versions %" PRIu64
                   " chunks %" PRIu64 " vectors %" PRIu64 " (searches see %zu) dead %" PRIu64
                   " sagas running %" PRIu64 " compensating %" PRIu64,
                   when, st.documents, live, st.versions, st.chunks, st.vectors, hits,
                   st.dead_letters, st.sagas_running, st.sagas_compensating);
}

/* The last saga of a live document is done, on the version searches return. */
static void check_trace_done(rag_ctx *ctx, int d, uint64_t version, const char *when)
{
    rag_trace_info *t = NULL;
    int rc = rag_trace(ctx, doc_ids[d], &t);
    if (rc) {
        model_fail("%s: rag_trace(%s): %s (%s)", when, doc_ids[d], rag_strerror(rc),
                   rag_error_last());
        return;
    }
    if (strcmp(t->state, "done") != 0 || t->version != version ||
        t->active_version != version || t->deleted)
        model_fail("%s: rag_trace(%s): state '%s' v%" PRIu64 " active %" PRIu64
                   " deleted %d (%s); expected done v%" PRIu64,
                   when, doc_ids[d], t->state, t->version, t->active_version, t->deleted,
                   t->reason, version);
    rag_trace_free(t);
}

/* Reopen without faults, drain, and compare with the model.  On success the model collapses
 * to what was observed. */
static void recover_and_check(const char *root, dmodel *ms, const char *when)
{
    rag_ctx *ctx = NULL;
    int rc = open_root(root, &ctx);
    if (rc) {
        model_fail("%s: reopen: %s (%s)", when, rag_strerror(rc), rag_error_last());
        return;
    }
    rc = rag_drain(ctx, 30000);
    if (rc) {
        model_fail("%s: drain: %s (%s)", when, rag_strerror(rc), rag_error_last());
        rag_close(ctx);
        return;
    }
    seen s[NDOC];
    size_t total = 0;
    if (enumerate(ctx, s, &total) == RAG_OK) {
        int live = 0;
        for (int d = 0; d < NDOC; d++) {
            int match = -1;
            for (int i = 0; i < ms[d].n && match < 0; i++)
                if (seen_is(&s[d], ms[d].c[i].live, ms[d].c[i].version, ms[d].c[i].token))
                    match = i;
            if (match < 0) {
                model_fail("%s: %s: searches return %d result(s), v%" PRIu64 " '%s'; none of "
                           "the %d allowed states (first: live %d v%" PRIu64 " %s)",
                           when, doc_ids[d], s[d].count, s[d].version, s[d].text, ms[d].n,
                           ms[d].c[0].live, ms[d].c[0].version, ms[d].c[0].token);
                continue;
            }
            ms[d].c[0] = ms[d].c[match];
            ms[d].n = 1;
            live += ms[d].c[0].live;
            if (ms[d].c[0].live)
                check_trace_done(ctx, d, ms[d].c[0].version, when);
        }
        check_status(ctx, live, total, when);
    }
    check_fsck(ctx, when);
    rag_close(ctx);
}

/* ---- the workload ------------------------------------------------------------------------- */

typedef struct run_stats {
    int open_failed;
    int errors; /* operations that returned an error */
} run_stats;

/* Open, run the workload, close: tolerant of every error, recording what was acknowledged. */
static void run_workload(const char *root, dmodel *ms, uint32_t drain_ms, run_stats *rs)
{
    memset(rs, 0, sizeof *rs);
    rag_ctx *ctx = NULL;
    int rc = open_root(root, &ctx);
    if (rc) {
        rs->open_failed = 1;
        return;
    }
    char text[256];
    for (size_t i = 0; i < NOPS; i++) {
        const op *o = &workload[i];
        if (o->kind == 'P') {
            doc_text(text, sizeof text, o->token);
            rag_doc d = {0};
            d.id = doc_ids[o->doc];
            d.data = text;
            d.size = strlen(text);
            d.mime = "text/plain";
            uint64_t v = 0;
            rc = rag_doc_put(ctx, &d, &v);
            apply_put(&ms[o->doc], o->doc, o->token, rc, v);
        } else if (o->kind == 'D') {
            rc = rag_doc_delete(ctx, doc_ids[o->doc]);
            apply_delete(&ms[o->doc], o->doc, rc);
        } else if (o->kind == 'W') {
            rc = rag_drain(ctx, drain_ms);
        } else {
            rag_query q = RAG_QUERY_INIT;
            q.text = "harbor archive ledger";
            q.unrestricted = 1;
            rag_results *r = NULL;
            rc = rag_search(ctx, &q, &r);
            rag_results_free(r);
        }
        rs->errors += rc != RAG_OK && rc != RAG_ENOTFOUND;
    }
    rag_close(ctx);
}

/* Commits (or provider calls) of one clean run of the workload. */
static uint64_t count_ops(rag_fault_kind kind)
{
    char *root = rag_test_tmpdir("faults-count");
    dmodel ms[NDOC];
    model_init(ms);
    run_stats rs;
    failure[0] = 0;
    rag_fault_arm(kind, 0, 0); /* counts from here, injects nothing */
    run_workload(root, ms, 30000, &rs);
    uint64_t n = rag_fault_seen(kind);
    rag_fault_disarm_all();
    assert_int_equal(rs.open_failed, 0);
    assert_int_equal(rs.errors, 0);
    recover_and_check(root, ms, "clean run");
    if (failure[0])
        fail_msg("%s", failure);
    rag_test_rmtree(root);
    free(root);
    return n;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* ---- commit faults ------------------------------------------------------------------------ */

static void commit_faults(int persistent)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t commits = count_ops(RAG_FAULT_COMMIT);
    printf("%s commit faults: the workload makes %" PRIu64 " commits\n",
           persistent ? "persistent" : "one-off", commits);
    assert_true(commits >= 10);
    unsigned open_failures = 0, with_errors = 0;
    for (uint64_t n = 1; n <= commits; n++) {
        char name[48];
        snprintf(name, sizeof name, "faults-commit-%d-%" PRIu64, persistent, n);
        char *root = rag_test_tmpdir(name);
        dmodel ms[NDOC];
        model_init(ms);
        failure[0] = 0;
        run_stats rs;
        rag_fault_arm(RAG_FAULT_COMMIT, n, persistent);
        /* A persistent fault can never drain; a one-off one must be got over. */
        run_workload(root, ms, persistent ? 200 : 5000, &rs);
        uint64_t injected = rag_fault_injected(RAG_FAULT_COMMIT);
        rag_fault_disarm_all();
        if (injected == 0)
            model_fail("commit %" PRIu64 " of %" PRIu64 " was never reached", n, commits);
        open_failures += (unsigned)rs.open_failed;
        with_errors += rs.errors > 0 || rs.open_failed;
        char when[64];
        snprintf(when, sizeof when, "commit fault at %" PRIu64 "%s", n,
                 persistent ? " (persistent)" : "");
        if (!failure[0])
            recover_and_check(root, ms, when);
        if (failure[0])
            fail_msg("%s (%" PRIu64 " injected, open %s, %d failed operations): %s", when,
                     injected, rs.open_failed ? "failed" : "ok", rs.errors, failure);
        rag_test_rmtree(root);
        free(root);
    }
    printf("%s commit faults: %" PRIu64 " runs (%u with a failed open, %u with errors), all "
           "consistent after reopen, %ld ms\n",
           persistent ? "persistent" : "one-off", commits, open_failures, with_errors,
           ms_since(&t0));
}

static void test_commit_fault_once(void **state)
{
    (void)state;
    commit_faults(0);
}

static void test_commit_fault_persistent(void **state)
{
    (void)state;
    commit_faults(1);
}

/* ---- provider faults ---------------------------------------------------------------------- */

/* A one-off transient provider failure is retried: everything ends indexed, no dead letter. */
static void test_provider_fault_once(void **state)
{
    (void)state;
    uint64_t calls = count_ops(RAG_FAULT_PROVIDER);
    printf("one-off provider faults: the workload makes %" PRIu64 " provider calls\n", calls);
    assert_true(calls >= 2);
    for (uint64_t n = 1; n <= calls; n++) {
        char name[48];
        snprintf(name, sizeof name, "faults-provider-%" PRIu64, n);
        char *root = rag_test_tmpdir(name);
        dmodel ms[NDOC];
        model_init(ms);
        failure[0] = 0;
        run_stats rs;
        rag_fault_arm(RAG_FAULT_PROVIDER, n, 0);
        run_workload(root, ms, 30000, &rs);
        uint64_t injected = rag_fault_injected(RAG_FAULT_PROVIDER);
        rag_fault_disarm_all();
        if (injected != 1)
            model_fail("%" PRIu64 " faults injected", injected);
        /* only the search may see it; every drain gets over it */
        if (rs.open_failed || rs.errors > 1)
            model_fail("%d operations failed", rs.errors);
        char when[64];
        snprintf(when, sizeof when, "provider fault at call %" PRIu64, n);
        if (!failure[0])
            recover_and_check(root, ms, when);
        if (failure[0])
            fail_msg("%s: %s", when, failure);
        rag_test_rmtree(root);
        free(root);
    }
}

/* Each document's trace against what searches return: a deleted document is not
 * searchable; "done" means its newest version is; "failed" (allowed only with `allow_failed`)
 * means the version before it (or none) still is.  Returns the number of failed sagas; the
 * states go to `desc`. */
static unsigned check_traces(rag_ctx *ctx, const dmodel *ms, const char *when, int allow_failed,
                             char *desc, size_t dl)
{
    seen s[NDOC];
    size_t total = 0, len = 0;
    unsigned failed = 0;
    desc[0] = 0;
    if (enumerate(ctx, s, &total) != RAG_OK)
        return 0;
    for (int d = 0; d < NDOC; d++) {
        const cand *c = &ms[d].c[0];
        rag_trace_info *t = NULL;
        int rc = rag_trace(ctx, doc_ids[d], &t);
        if (rc) {
            model_fail("%s: rag_trace(%s): %s", when, doc_ids[d], rag_strerror(rc));
            continue;
        }
        len += (size_t)snprintf(desc + len, dl - len, " %s:%s/%s", doc_ids[d], t->kind,
                                t->state);
        if (!c->live) {
            if (!t->deleted || strcmp(t->kind, "delete") != 0 || s[d].count != 0)
                model_fail("%s: deleted %s: trace kind '%s' deleted %d state '%s', %d "
                           "results", when, doc_ids[d], t->kind, t->deleted, t->state,
                           s[d].count);
        } else if (strcmp(t->state, "done") == 0) {
            if (t->version != c->version || t->active_version != c->version ||
                !seen_is(&s[d], 1, c->version, c->token))
                model_fail("%s: %s done at v%" PRIu64 " but searches return %d result(s) "
                           "of v%" PRIu64 "; expected v%" PRIu64, when, doc_ids[d],
                           t->version, s[d].count, s[d].version, c->version);
        } else if (allow_failed && strcmp(t->state, "failed") == 0) {
            uint64_t a = t->active_version;
            failed++;
            if (t->code == RAG_OK || t->version != c->version || a >= c->version ||
                (a == 0 ? s[d].count != 0
                        : !seen_is(&s[d], 1, a, a <= MAX_VERSIONS ? ms[d].vtoken[a] : "")))
                model_fail("%s: %s failed (code %d) at v%" PRIu64 " active %" PRIu64
                           "; searches return %d result(s) of v%" PRIu64,
                           when, doc_ids[d], t->code, t->version, a, s[d].count,
                           s[d].version);
        } else {
            model_fail("%s: %s: saga state '%s' (v%" PRIu64 ", %s)", when, doc_ids[d],
                       t->state, t->version, t->reason);
        }
        rag_trace_free(t);
    }
    return failed;
}

/* Persistent transient provider failures: after max_attempts the doc.chunked messages are
 * dead-lettered and the sagas compensate; retried after the provider recovers, everything
 * completes. */
static void test_provider_fault_persistent(void **state)
{
    (void)state;
    uint64_t calls = count_ops(RAG_FAULT_PROVIDER);
    for (uint64_t n = 1; n <= calls; n++) {
        char name[48];
        snprintf(name, sizeof name, "faults-provider-p-%" PRIu64, n);
        char *root = rag_test_tmpdir(name);
        dmodel ms[NDOC];
        model_init(ms);
        failure[0] = 0;
        char when[64];
        snprintf(when, sizeof when, "persistent provider fault from call %" PRIu64, n);

        rag_fault_arm(RAG_FAULT_PROVIDER, n, 1);
        rag_ctx *ctx = NULL;
        assert_int_equal(open_root(root, &ctx), RAG_OK);
        char text[256];
        for (size_t i = 0; i < NOPS; i++) {
            const op *o = &workload[i];
            int rc = RAG_OK;
            if (o->kind == 'P') {
                doc_text(text, sizeof text, o->token);
                rag_doc d = {0};
                d.id = doc_ids[o->doc];
                d.data = text;
                d.size = strlen(text);
                d.mime = "text/plain";
                uint64_t v = 0;
                rc = rag_doc_put(ctx, &d, &v); /* puts never call the provider */
                assert_int_equal(rc, RAG_OK);
                apply_put(&ms[o->doc], o->doc, o->token, rc, v);
            } else if (o->kind == 'D') {
                rc = rag_doc_delete(ctx, doc_ids[o->doc]);
                assert_int_equal(rc, RAG_OK);
                apply_delete(&ms[o->doc], o->doc, rc);
            } else if (o->kind == 'W') {
                /* dead letters must not keep the drain waiting */
                rc = rag_drain(ctx, 30000);
                if (rc)
                    fail_msg("%s: drain: %s (%s)", when, rag_strerror(rc), rag_error_last());
            } else {
                rag_query q = RAG_QUERY_INIT;
                q.text = "harbor archive ledger";
                q.unrestricted = 1;
                rag_results *r = NULL;
                rc = rag_search(ctx, &q, &r); /* fails while the provider does */
                rag_results_free(r);
            }
        }
        uint64_t injected = rag_fault_injected(RAG_FAULT_PROVIDER);
        rag_fault_disarm_all();
        assert_true(injected >= 1);

        rag_dead_letter_info *dl = NULL;
        size_t ndl = 0;
        assert_int_equal(rag_dlq_list(ctx, &dl, &ndl), RAG_OK);
        rag_status_info st = {.version = RAG_STATUS_VERSION};
        assert_int_equal(rag_status(ctx, &st), RAG_OK);
        assert_true(ndl >= 1);
        assert_int_equal(st.dead_letters, ndl);
        assert_int_equal(st.sagas_running, 0);
        assert_int_equal(st.sagas_compensating, 0);
        for (size_t i = 0; i < ndl; i++) {
            assert_string_equal(dl[i].module, "embed");
            assert_string_equal(dl[i].topic, "doc.chunked");
            assert_int_equal(dl[i].code, RAG_ETRANSIENT);
            assert_int_equal(dl[i].attempts, 3);
        }

        /* Compensated: a failed version left the previous one (or none) searchable. */
        char before[128], after[128];
        unsigned failed = check_traces(ctx, ms, when, 1, before, sizeof before);
        printf("%s: %" PRIu64 " faults injected, %zu dead letters, %" PRIu64 " sagas failed;"
               " traces:%s\n", when, injected, ndl, st.sagas_failed, before);
        assert_true(failed >= 1);
        assert_int_equal(st.sagas_failed, failed);

        /* The provider works again: retried, every version completes forward (its data is
         * still stored), or ends superseded by the newer one (docs/update-flow.md). */
        for (size_t i = 0; i < ndl; i++)
            assert_int_equal(rag_dlq_retry(ctx, dl[i].id), RAG_OK);
        rag_free(dl);
        assert_int_equal(rag_drain(ctx, 30000), RAG_OK);
        assert_int_equal(rag_dlq_list(ctx, &dl, &ndl), RAG_OK);
        assert_int_equal(ndl, 0);
        assert_int_equal(check_traces(ctx, ms, when, 0, after, sizeof after), 0);
        printf("  after retrying the dead letters:%s\n", after);
        assert_int_equal(rag_status(ctx, &st), RAG_OK);
        assert_int_equal(st.sagas_failed, 0);
        rag_close(ctx);
        if (!failure[0])
            recover_and_check(root, ms, when);
        if (failure[0])
            fail_msg("%s", failure);
        rag_test_rmtree(root);
        free(root);
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_fault_once),
        cmocka_unit_test(test_commit_fault_persistent),
        cmocka_unit_test(test_provider_fault_once),
        cmocka_unit_test(test_provider_fault_persistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
