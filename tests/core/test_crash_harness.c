/*
 * Crash harness: a child process (this executable, re-executed) opens a root with durable
 * commits, starts the workers and runs a seeded random workload -- puts of ~20 ids with new
 * content each time, deletes, idempotent retries (same key and bytes: same version) and
 * searches.  It tells the parent over a pipe what it is about to do (intent) and what returned
 * RAG_OK (ack).  The parent SIGKILLs it a few ms to ~30 ms in, opens the root itself, drains,
 * and checks the contract against its model of the acknowledged operations:
 *
 *   - an acknowledged put is durable: its version (or a later one) survives;
 *   - after the drain each live document's newest version is what searches return, every
 *     chunk of it exactly once, nothing of an older version, nothing of a deleted document;
 *   - the one operation in flight at the kill either happened completely or not at all;
 *   - rag_status counts agree (one stored version per live document, one vector per chunk,
 *     no dead letter) and rag_fsck() finds nothing.
 *
 * A search with k larger than the number of vectors returns every live chunk, so one search
 * enumerates the whole index as searches see it; each chunk's text is checked against the
 * text that the model says its version has (every sentence carries a per-version token).
 *
 * The child is started with fork + exec: the parent has used LMDB and FAISS (whose OpenMP
 * pool must not be inherited by a forked child that runs parallel regions), and exec gives
 * the child a fresh process with only its own handle.
 *
 * Seeds: every root's seed is printed with each cycle; RAG_CRASH_SEED=<seed> replays one
 * root (the kill moments differ, the workload and the kill delays do not).
 *
 * The workload, the model and the check live in tests/support/crash_model.{c,h}, shared with
 * the same harness on NATS JetStream (tests/integration/test_nats_crash.c).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

/* The workload, the model and the check are shared with the NATS harness
 * (tests/integration/test_nats_crash.c). */
#include "../support/crash_model.c"

#define ROOTS 4
#define CYCLES_PER_ROOT 52 /* 4 x 52 = 208 kill cycles */

/* ---- child --------------------------------------------------------------------------------- */

static int child_main(const char *root, uint64_t seed, const char *retry_doc,
                      const char *retry_token)
{
    rag_options o;
    crash_harness_options(&o, 0); /* durable commits: the contract is about a crash */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc)
        crash_child_fail("rag_open: %s (%s)", rag_strerror(rc), rag_error_last());
    rc = rag_start(ctx);
    if (rc)
        crash_child_fail("rag_start: %s (%s)", rag_strerror(rc), rag_error_last());
    crash_say("R");
    crash_child_workload(ctx, seed, retry_doc, retry_token, NULL);
    rag_close(ctx);
    crash_say("X");
    return 0;
}

/* ---- parent ------------------------------------------------------------------------------- */

static char self_path[4096];

/* Run one child and kill it.  Returns 1 when it was killed, 0 when it finished by itself. */
static int run_child(crash_model *m, const char *root, uint64_t cycle_seed, long kill_ms,
                     int kill_before_ready, const char *retry_doc, const char *retry_token,
                     long *ran_ms)
{
    const char *extra[] = {retry_doc, retry_token, NULL};
    crash_child c;
    crash_child_spawn(&c, m, self_path, root, cycle_seed, retry_doc ? extra : NULL);
    struct timespec tr = c.t0;
    for (;;) {
        long now = crash_elapsed_ms(&c.t0);
        if (kill_before_ready) {
            if (now >= kill_ms)
                break;
        } else if (m->ready) {
            if (crash_elapsed_ms(&tr) >= kill_ms)
                break;
        } else if (now > 20000) {
            crash_model_fail(m, "child not ready after 20 s");
            break;
        }
        if (c.eof || m->error[0])
            break;
        int was_ready = m->ready;
        crash_child_pump(&c, m, 1);
        if (!was_ready && m->ready)
            clock_gettime(CLOCK_MONOTONIC, &tr);
    }
    *ran_ms = crash_elapsed_ms(&c.t0);
    return crash_child_kill(&c, m);
}

/* After the kill: open, drain, compare with the model (crash_model_check).  A new put that
 * was in flight comes back through retry_doc/retry_token for the next child. */
static void recover_and_check(crash_model *m, const char *root, crash_hits *hs, char *retry_doc,
                              char *retry_token)
{
    retry_doc[0] = retry_token[0] = 0;
    rag_options o;
    crash_harness_options(&o, 1); /* the checker is never killed: skip the fsyncs */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc) {
        crash_model_fail(m, "reopen: %s (%s)", rag_strerror(rc), rag_error_last());
        return;
    }
    rc = rag_drain(ctx, 60000);
    if (rc) {
        crash_model_fail(m, "drain after the crash: %s (%s)", rag_strerror(rc),
                         rag_error_last());
        rag_close(ctx);
        return;
    }
    crash_model_check(m, ctx, hs, retry_doc, retry_token);
    rag_close(ctx);
}

static unsigned run_root(uint64_t root_seed, int root_no)
{
    char name[32];
    snprintf(name, sizeof name, "crash-harness-%d", root_no);
    char *root = rag_test_tmpdir(name);
    crash_model *m = calloc(1, sizeof *m);
    crash_hits *hs = calloc(1, sizeof *hs);
    assert_non_null(m);
    assert_non_null(hs);
    char retry_doc[16] = "", retry_token[CRASH_TOKEN_LEN] = "";
    unsigned kills = 0;
    for (int cycle = 0; cycle < CYCLES_PER_ROOT; cycle++) {
        uint64_t cs = crash_mix64(root_seed ^ crash_mix64((uint64_t)cycle + 1));
        uint64_t ks = cs;
        /* One cycle in eight kills during rag_open (recovery of the previous crash); the
         * others 1..30 ms after the child is ready. */
        int early = crash_rnd(&ks) % 8 == 0;
        long kill_ms = early ? 2 + (long)(crash_rnd(&ks) % 14) : 1 + (long)(crash_rnd(&ks) % 30);
        m->puts = m->retries = m->deletes = m->searches = 0;
        long ran = 0;
        int killed = run_child(m, root, cs, kill_ms, early, retry_doc[0] ? retry_doc : NULL,
                               retry_token, &ran);
        kills += (unsigned)killed;
        char was[32] = "none";
        if (m->pending != CRASH_OP_NONE)
            snprintf(was, sizeof was, "%s doc-%02d",
                     m->pending == CRASH_OP_PUT ? "put" : "delete", m->pdoc);
        printf("seed %" PRIu64 " cycle %d: %s %ld ms after %s (ran %ld ms): acked %u puts, %u "
               "retries, %u deletes, %u searches; in flight: %s\n",
               root_seed, cycle, killed ? "killed" : "finished", kill_ms,
               early ? "start" : "ready", ran, m->puts, m->retries, m->deletes, m->searches,
               was);
        fflush(stdout);
        if (!m->error[0])
            recover_and_check(m, root, hs, retry_doc, retry_token);
        if (m->error[0]) {
            printf("FAILED: seed %" PRIu64 " cycle %d: %s\n(replay: RAG_CRASH_SEED=%" PRIu64
                   ")\n", root_seed, cycle, m->error, root_seed);
            fflush(stdout);
            fail_msg("seed %" PRIu64 " cycle %d: %s", root_seed, cycle, m->error);
        }
    }
    printf("seed %" PRIu64 ": %u kills; operations in flight at a kill: %u had happened, %u "
           "had not\n", root_seed, kills, m->inflight_applied, m->inflight_lost);
    crash_model_free(m);
    free(m);
    free(hs);
    rag_test_rmtree(root);
    free(root);
    return kills;
}

static void test_kill_cycles(void **state)
{
    (void)state;
    const char *env = getenv("RAG_CRASH_SEED");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned kills = 0;
    if (env && *env) {
        uint64_t seed = strtoull(env, NULL, 10);
        printf("replaying seed %" PRIu64 "\n", seed);
        kills = run_root(seed, 0);
    } else {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t base = crash_mix64((uint64_t)now.tv_sec * 1000000007ull ^
                                    (uint64_t)now.tv_nsec ^ (uint64_t)getpid());
        for (int r = 0; r < ROOTS; r++) {
            uint64_t seed = crash_mix64(base + (uint64_t)r) >> 1; /* < 2^63: prints as is */
            printf("root %d: seed %" PRIu64 " (RAG_CRASH_SEED=%" PRIu64 " replays it)\n", r,
                   seed, seed);
            kills += run_root(seed, r);
        }
        assert_true(kills >= 200);
    }
    printf("%u kill cycles in %ld ms\n", kills, crash_elapsed_ms(&t0));
}

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 7) && strcmp(argv[1], "--child") == 0) {
        crash_out_fd = atoi(argv[4]);
        signal(SIGPIPE, SIG_IGN);
        return child_main(argv[2], strtoull(argv[3], NULL, 10), argc == 7 ? argv[5] : NULL,
                          argc == 7 ? argv[6] : NULL);
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0)
        return 1;
    self_path[n] = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_cycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
