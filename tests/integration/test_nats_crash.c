/*
 * The lifecycle crash harness (tests/core/test_crash_harness.c) on NATS JetStream, with the
 * embed module in separate worker processes:
 *
 *   nats-server (private, 127.0.0.1, file storage, its own store dir)
 *   2 embed workers: `rag serve --modules embed`, each its own root, durable commits
 *   the primary: a child (this executable, re-executed) that opens the primary root with
 *     modules ingest,index,retrieve and the NATS transport, starts its workers and runs the
 *     seeded workload of tests/support/crash_model.c, reporting intents and acks on a pipe.
 *
 * At a random moment the parent SIGKILLs one of them -- the primary, an embed worker or
 * nats-server itself (seeded choice; every target several times per root) -- and restarts
 * what it killed: nats-server on the same port and store dir, a worker on the same root.  When
 * the victim was not the primary, the primary goes on working through the restart (during a
 * broker outage its puts go to its outbox) and is then stopped (SIGTERM: it closes its handle).
 * The parent then opens the primary root itself (same modules and transport, the workers
 * running), drains (bounded) and runs the LMDB harness's checks (crash_model_check): every
 * acknowledged document at its newest version, each chunk exactly once, no orphan, no
 * phantom, no duplicate, traces done, status counts, no dead letter in the primary, rag_fsck
 * clean.  At the end of each root the workers are stopped (they must exit 0) and their roots
 * opened with modules=embed: no dead letters there either.
 *
 * AckWait.  A message delivered to a process that is then killed comes back after the
 * consumer's AckWait.  `rag serve` has no option for it and uses the transport's default
 * (30 s), and the process that creates a durable last sets its AckWait for everyone (see
 * backends/queue-nats/queue_nats.c); JetStream applies a changed AckWait to messages already
 * pending.  So every handle of this test uses ACK_WAIT_MS, and the parent re-asserts it
 * (refresh_ack_wait) after each start or reconnect of a worker and during every drain.
 *
 * Seeds: every root's seed is printed; RAG_CRASH_SEED=<seed> replays one root (the kill
 * delays, targets and the workload are the seed's; the moments they land on differ).
 * Skipped when nats-server is not installed or ragcore was built without libnats.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#include "../support/crash_model.c"
#include "../support/nats_server.c"

#define ROOTS 2
#define CYCLES_PER_ROOT 8
#define WORKERS 2
#define ACK_WAIT_MS 1500
#define DRAIN_MS 60000
#define READY_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 30000

enum { T_PRIMARY, T_WORKER, T_BROKER, T_COUNT };

static const char *const pipeline_topics[] = {"doc.chunked", "doc.embedded", "doc.deleted",
                                              "doc.revert",  "doc.indexed",  "doc.failed"};

static rag_nats_server g_srv;
static int g_skip; /* 1: no nats-server, 2: built without libnats */
static char g_self[4096];
static char g_rag_bin[4096];
static char g_prefix[32]; /* stream prefix of the root under test */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int transport_new(rag_queue_transport *t, const char *url, const char *prefix)
{
    rag_queue_nats_options no = RAG_QUEUE_NATS_OPTIONS_INIT;
    no.urls = url;
    no.prefix = prefix;
    no.ack_wait_ms = ACK_WAIT_MS;
    no.connect_timeout_ms = 2000;
    no.reconnect_wait_ms = 100;
    no.publish_timeout_ms = 2000;
    return rag_queue_nats_new(t, &no);
}

/* The primary's options: the harness's, on NATS, without embed. */
static void primary_options(rag_options *o, int no_sync, rag_queue_transport *t)
{
    crash_harness_options(o, no_sync);
    o->modules = RAG_HOST_INGEST | RAG_HOST_INDEX | RAG_HOST_RETRIEVE;
    o->lease_ms = ACK_WAIT_MS; /* long batches report progress within the AckWait */
    o->transport = t;          /* copied; rag_open owns its state */
}

/* Re-create every durable with ACK_WAIT_MS (see the file comment).  A broker that is down
 * now is no failure: the next call catches up. */
static void refresh_ack_wait(void)
{
    rag_queue_transport t;
    if (transport_new(&t, g_srv.url, g_prefix) != RAG_OK)
        return;
    for (size_t i = 0; i < sizeof pipeline_topics / sizeof pipeline_topics[0]; i++) {
        rag_queue_depth d;
        if (t.depth(t.state, pipeline_topics[i], &d) != RAG_OK)
            break;
    }
    t.free(t.state);
}

/* ---- child: the primary ------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int child_main(const char *root, uint64_t seed, const char *url, const char *prefix,
                      const char *retry_doc, const char *retry_token)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    rag_queue_transport t;
    int rc = transport_new(&t, url, prefix);
    if (rc)
        crash_child_fail("rag_queue_nats_new: %s (%s)", rag_strerror(rc), rag_error_last());
    rag_options o;
    primary_options(&o, 0, &t); /* durable commits: the contract is about a crash */
    rag_ctx *ctx = NULL;
    rc = rag_open(&ctx, root, &o);
    if (rc)
        crash_child_fail("rag_open: %s (%s)", rag_strerror(rc), rag_error_last());
    rc = rag_start(ctx);
    if (rc)
        crash_child_fail("rag_start: %s (%s)", rag_strerror(rc), rag_error_last());
    crash_say("R");
    crash_child_workload(ctx, seed, retry_doc, retry_token, &g_stop);
    rag_close(ctx);
    crash_say("X");
    return 0;
}

/* ---- embed workers ------------------------------------------------------------------------ */

typedef struct worker {
    int no;
    pid_t pid;
    char root[512];
    char log[600];
    off_t log_from; /* where the output of the current start begins */
} worker;

static void print_tail(const char *what, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char buf[2049];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > 2048 ? size - 2048 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    printf("---- %s (%s), last %zu bytes:\n%s\n----\n", what, path, n, buf);
}

/* Does the worker's log show "rag: serving" since its current start? */
static int worker_serving(const worker *w)
{
    FILE *f = fopen(w->log, "rb");
    if (!f)
        return 0;
    fseek(f, (long)w->log_from, SEEK_SET);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return strstr(buf, "rag: serving") != NULL;
}

/* Start `rag serve --modules embed` on the worker's root and wait until it serves (its open
 * relayed what its outbox held).  The primary child, when given, is kept reading meanwhile.
 * Returns 0, or -1 with the reason in m->error. */
static int worker_start(worker *w, crash_child *c, crash_model *m)
{
    struct stat st;
    w->log_from = stat(w->log, &st) == 0 ? st.st_size : 0;
    /* everything the child needs is made before the fork: it only execs */
    const char *argv[] = {g_rag_bin, "--root", w->root, "--transport", g_srv.url,
                          "--transport-prefix", g_prefix, "--modules", "embed", "--dim", "64",
                          "serve", NULL};
    int fd = open(w->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int nul = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0 && nul >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(fd, 1);
        dup2(fd, 2);
        dup2(nul, 0);
        execv(g_rag_bin, (char *const *)argv);
        _exit(127);
    }
    close(fd);
    close(nul);
    w->pid = pid;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            w->pid = 0;
            crash_model_fail(m, "embed worker %d exited at start (status 0x%x)", w->no, status);
            print_tail("worker log", w->log);
            return -1;
        }
        if (worker_serving(w))
            break;
        if (crash_elapsed_ms(&t0) > READY_TIMEOUT_MS) {
            crash_model_fail(m, "embed worker %d not serving after %d ms", w->no,
                             READY_TIMEOUT_MS);
            print_tail("worker log", w->log);
            return -1;
        }
        if (c && c->pid)
            crash_child_pump(c, m, 5);
        else
            sleep_ms(5);
    }
    /* it has just (re)created the durables with the default AckWait */
    refresh_ack_wait();
    return 0;
}

static void worker_kill(worker *w)
{
    if (w->pid <= 0)
        return;
    kill(w->pid, SIGKILL);
    waitpid(w->pid, NULL, 0);
    w->pid = 0;
}

/* SIGTERM: it must stop and exit 0 (under ASan: with no leak). */
static void worker_stop(worker *w, crash_model *m)
{
    if (w->pid <= 0)
        return;
    kill(w->pid, SIGTERM);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = 0;
    while (waitpid(w->pid, &status, WNOHANG) != w->pid) {
        if (crash_elapsed_ms(&t0) > STOP_TIMEOUT_MS) {
            crash_model_fail(m, "embed worker %d did not stop within %d ms of SIGTERM", w->no,
                             STOP_TIMEOUT_MS);
            kill(w->pid, SIGKILL);
            waitpid(w->pid, &status, 0);
            break;
        }
        sleep_ms(5);
    }
    w->pid = 0;
    if (!m->error[0] && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        crash_model_fail(m, "embed worker %d ended with status 0x%x on SIGTERM", w->no, status);
        print_tail("worker log", w->log);
    }
}

/* A worker that ended by itself is a finding. */
static void worker_check_alive(worker *w, crash_model *m)
{
    int status;
    if (w->pid > 0 && waitpid(w->pid, &status, WNOHANG) == w->pid) {
        w->pid = 0;
        crash_model_fail(m, "embed worker %d ended by itself (status 0x%x)", w->no, status);
        print_tail("worker log", w->log);
    }
}

/* With the worker stopped: no dead letter in its root. */
static void worker_check_dead_letters(const worker *w, crash_model *m)
{
    rag_queue_transport t;
    int rc = transport_new(&t, g_srv.url, g_prefix);
    if (rc) {
        crash_model_fail(m, "worker %d root: transport: %s (%s)", w->no, rag_strerror(rc),
                         rag_error_last());
        return;
    }
    rag_options o;
    crash_harness_options(&o, 1);
    o.modules = RAG_HOST_EMBED;
    o.lease_ms = ACK_WAIT_MS;
    o.transport = &t;
    rag_ctx *ctx = NULL;
    rc = rag_open(&ctx, w->root, &o);
    if (rc) {
        crash_model_fail(m, "open worker %d root: %s (%s)", w->no, rag_strerror(rc),
                         rag_error_last());
        return;
    }
    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    rc = rag_dlq_list(ctx, &dl, &n);
    if (rc)
        crash_model_fail(m, "rag_dlq_list(worker %d): %s (%s)", w->no, rag_strerror(rc),
                         rag_error_last());
    for (size_t i = 0; i < n; i++)
        printf("  worker %d dead letter %s %s %s v%" PRIu64 " after %u attempts: %s\n", w->no,
               dl[i].id, dl[i].topic, dl[i].doc_id, dl[i].version, dl[i].attempts,
               dl[i].reason);
    if (n)
        crash_model_fail(m, "embed worker %d holds %zu dead letter(s)", w->no, n);
    rag_free(dl);
    rag_close(ctx);
}

/* ---- parent ------------------------------------------------------------------------------- */

/* Read the child's lines for `ms` (or until it ends). */
static void run_for(crash_child *c, crash_model *m, long ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (crash_elapsed_ms(&t0) < ms && !c->eof && !m->error[0])
        crash_child_pump(c, m, 1);
}

/* Open the primary root with its modules and the transport, drain (re-asserting the AckWait
 * between slices), check. */
static void recover_and_check(crash_model *m, const char *root, crash_hits *hs, char *retry_doc,
                              char *retry_token)
{
    retry_doc[0] = retry_token[0] = 0;
    rag_queue_transport t;
    int rc = transport_new(&t, g_srv.url, g_prefix);
    if (rc) {
        crash_model_fail(m, "transport: %s (%s)", rag_strerror(rc), rag_error_last());
        return;
    }
    rag_options o;
    primary_options(&o, 1, &t); /* the checker is never killed: skip the fsyncs */
    rag_ctx *ctx = NULL;
    rc = rag_open(&ctx, root, &o);
    if (rc) {
        crash_model_fail(m, "reopen: %s (%s)", rag_strerror(rc), rag_error_last());
        return;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        refresh_ack_wait();
        rc = rag_drain(ctx, 1000);
    } while (rc == RAG_ETIMEOUT && crash_elapsed_ms(&t0) < DRAIN_MS);
    if (rc) {
        rag_status_info st = {.version = RAG_STATUS_VERSION};
        if (rag_status(ctx, &st) == RAG_OK)
            for (size_t i = 0; i < st.queue_count; i++)
                printf("  queue %s: ready %" PRIu64 " delayed %" PRIu64 " inflight %" PRIu64
                       "\n", st.queues[i].name, st.queues[i].ready, st.queues[i].delayed,
                       st.queues[i].inflight);
        crash_model_fail(m, "drain after the crash: %s (%s) after %ld ms", rag_strerror(rc),
                         rag_error_last(), crash_elapsed_ms(&t0));
        rag_close(ctx);
        return;
    }
    crash_model_check(m, ctx, hs, retry_doc, retry_token);
    rag_close(ctx);
}

typedef struct root_stats {
    unsigned kills[T_COUNT];
    unsigned cycles;
} root_stats;

static void run_root(uint64_t root_seed, int root_no, root_stats *rs)
{
    snprintf(g_prefix, sizeof g_prefix, "NC%d_%d", (int)getpid(), root_no);
    char name[48];
    snprintf(name, sizeof name, "nats-crash-%d", root_no);
    char *root = rag_test_tmpdir(name);
    worker w[WORKERS];
    char *wroot[WORKERS];
    crash_model *m = calloc(1, sizeof *m);
    crash_hits *hs = calloc(1, sizeof *hs);
    assert_non_null(m);
    assert_non_null(hs);
    for (int i = 0; i < WORKERS; i++) {
        snprintf(name, sizeof name, "nats-crash-%d-w%d", root_no, i);
        wroot[i] = rag_test_tmpdir(name);
        memset(&w[i], 0, sizeof w[i]);
        w[i].no = i;
        snprintf(w[i].root, sizeof w[i].root, "%s", wroot[i]);
        snprintf(w[i].log, sizeof w[i].log, "%s.log", wroot[i]);
        remove(w[i].log);
    }
    for (int i = 0; i < WORKERS && !m->error[0]; i++)
        worker_start(&w[i], NULL, m);

    /* Kill targets: each block of three cycles is a seeded permutation of the three. */
    int targets[CYCLES_PER_ROOT + 3];
    uint64_t ps = crash_mix64(root_seed ^ 0x7461726765747321ull);
    for (int b = 0; b < CYCLES_PER_ROOT; b += 3) {
        int p[T_COUNT] = {T_PRIMARY, T_WORKER, T_BROKER};
        for (int i = T_COUNT - 1; i > 0; i--) {
            int j = (int)(crash_rnd(&ps) % (uint64_t)(i + 1));
            int x = p[i];
            p[i] = p[j];
            p[j] = x;
        }
        for (int i = 0; i < T_COUNT; i++)
            targets[b + i] = p[i];
    }

    char retry_doc[16] = "", retry_token[CRASH_TOKEN_LEN] = "";
    for (int cycle = 0; cycle < CYCLES_PER_ROOT && !m->error[0]; cycle++) {
        uint64_t cs = crash_mix64(root_seed ^ crash_mix64((uint64_t)cycle + 1));
        uint64_t ks = cs;
        int target = targets[cycle];
        /* The primary is killed during rag_open (its recovery) one time in four, else 1..300 ms
         * after it is ready; the others 1..300 ms after the primary is ready. */
        int early = target == T_PRIMARY && crash_rnd(&ks) % 4 == 0;
        long kill_ms = early ? 5 + (long)(crash_rnd(&ks) % 60) : 1 + (long)(crash_rnd(&ks) % 300);
        int wk = (int)(crash_rnd(&ks) % WORKERS);
        long outage_ms = 300 + (long)(crash_rnd(&ks) % 1200); /* broker down */
        long after_ms = 50 + (long)(crash_rnd(&ks) % 400);    /* primary runs on after */
        m->puts = m->retries = m->deletes = m->searches = 0;

        const char *extra[] = {g_srv.url, g_prefix, retry_doc, retry_token, NULL};
        if (!retry_doc[0])
            extra[2] = NULL;
        crash_child c;
        crash_child_spawn(&c, m, g_self, root, cs, extra);
        struct timespec tr = c.t0;
        for (;;) {
            long now = crash_elapsed_ms(&c.t0);
            if (early) {
                if (now >= kill_ms)
                    break;
            } else if (m->ready) {
                if (crash_elapsed_ms(&tr) >= kill_ms)
                    break;
            } else if (now > READY_TIMEOUT_MS) {
                crash_model_fail(m, "primary not ready after %d ms", READY_TIMEOUT_MS);
                break;
            }
            if (c.eof || m->error[0])
                break;
            int was_ready = m->ready;
            crash_child_pump(&c, m, 1);
            if (!was_ready && m->ready)
                clock_gettime(CLOCK_MONOTONIC, &tr);
        }
        char what[160];
        int killed = 1;
        if (target == T_PRIMARY) {
            killed = crash_child_kill(&c, m);
            snprintf(what, sizeof what, "%s the primary %ld ms after %s",
                     killed ? "killed" : "(finished)", kill_ms, early ? "start" : "ready");
        } else if (target == T_WORKER) {
            worker_kill(&w[wk]);
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (!m->error[0])
                worker_start(&w[wk], &c, m);
            long restart = crash_elapsed_ms(&t1);
            run_for(&c, m, after_ms);
            crash_child_stop(&c, m, STOP_TIMEOUT_MS);
            snprintf(what, sizeof what, "killed embed worker %d %ld ms after ready, serving "
                     "again %ld ms later; primary stopped %ld ms after", wk, kill_ms, restart,
                     after_ms);
        } else {
            rag_nats_server_kill(&g_srv);
            run_for(&c, m, outage_ms);
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (rag_nats_server_restart(&g_srv) != 0) {
                crash_model_fail(m, "nats-server did not restart");
                print_tail("nats-server log", g_srv.log_path);
            }
            long restart = crash_elapsed_ms(&t1);
            run_for(&c, m, after_ms);
            if (c.pid)
                crash_child_stop(&c, m, STOP_TIMEOUT_MS);
            snprintf(what, sizeof what, "killed nats-server %ld ms after ready, down %ld ms "
                     "(+%ld ms restart); primary stopped %ld ms after", kill_ms, outage_ms,
                     restart, after_ms);
        }
        if (c.pid) /* a failure above left it running */
            crash_child_kill(&c, m);
        rs->kills[target] += (unsigned)killed;
        rs->cycles++;
        char was[32] = "none";
        if (m->pending != CRASH_OP_NONE)
            snprintf(was, sizeof was, "%s doc-%02d",
                     m->pending == CRASH_OP_PUT ? "put" : "delete", m->pdoc);
        printf("seed %" PRIu64 " cycle %d: %s: acked %u puts, %u retries, %u deletes, %u "
               "searches; in flight: %s\n",
               root_seed, cycle, what, m->puts, m->retries, m->deletes, m->searches, was);
        fflush(stdout);
        for (int i = 0; i < WORKERS; i++)
            worker_check_alive(&w[i], m);
        if (!m->error[0])
            recover_and_check(m, root, hs, retry_doc, retry_token);
    }
    for (int i = 0; i < WORKERS; i++)
        worker_stop(&w[i], m);
    for (int i = 0; i < WORKERS && !m->error[0]; i++)
        worker_check_dead_letters(&w[i], m);
    if (m->error[0]) {
        for (int i = 0; i < WORKERS; i++)
            print_tail("worker log", w[i].log);
        print_tail("nats-server log", g_srv.log_path);
        printf("FAILED: seed %" PRIu64 ": %s\n(replay: RAG_CRASH_SEED=%" PRIu64 ")\n",
               root_seed, m->error, root_seed);
        fflush(stdout);
        fail_msg("seed %" PRIu64 ": %s", root_seed, m->error);
    }
    printf("seed %" PRIu64 ": operations in flight at a kill of the primary: %u had happened, "
           "%u had not\n", root_seed, m->inflight_applied, m->inflight_lost);
    crash_model_free(m);
    free(m);
    free(hs);
    for (int i = 0; i < WORKERS; i++) {
        remove(w[i].log);
        rag_test_rmtree(wroot[i]);
        free(wroot[i]);
    }
    rag_test_rmtree(root);
    free(root);
}

static void test_nats_kill_cycles(void **state)
{
    (void)state;
    if (g_skip == 1)
        print_message("nats-server not installed: skipped\n");
    if (g_skip == 2)
        print_message("built without libnats: skipped\n");
    if (g_skip)
        skip();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    root_stats rs;
    memset(&rs, 0, sizeof rs);
    const char *env = getenv("RAG_CRASH_SEED");
    if (env && *env) {
        uint64_t seed = strtoull(env, NULL, 10);
        printf("replaying seed %" PRIu64 "\n", seed);
        run_root(seed, 0, &rs);
    } else {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t base = crash_mix64((uint64_t)now.tv_sec * 1000000007ull ^
                                    (uint64_t)now.tv_nsec ^ (uint64_t)getpid());
        for (int r = 0; r < ROOTS; r++) {
            uint64_t seed = crash_mix64(base + (uint64_t)r) >> 1; /* < 2^63: prints as is */
            printf("root %d: seed %" PRIu64 " (RAG_CRASH_SEED=%" PRIu64 " replays it)\n", r,
                   seed, seed);
            run_root(seed, r, &rs);
        }
        /* every target several times */
        for (int t = 0; t < T_COUNT; t++)
            assert_true(rs.kills[t] >= 4);
    }
    printf("%u cycles in %ld ms; killed the primary %u, an embed worker %u, nats-server %u "
           "times\n", rs.cycles, crash_elapsed_ms(&t0), rs.kills[T_PRIMARY], rs.kills[T_WORKER],
           rs.kills[T_BROKER]);
}

static int group_setup(void **state)
{
    (void)state;
    /* A build without libnats reports RAG_EUNSUPPORTED whatever the options. */
    rag_queue_transport probe;
    rag_queue_nats_options o = RAG_QUEUE_NATS_OPTIONS_INIT;
    o.urls = "nats://127.0.0.1:1";
    o.connect_timeout_ms = 200;
    if (rag_queue_nats_new(&probe, &o) == RAG_EUNSUPPORTED) {
        g_skip = 2;
        return 0;
    }
    int rc = rag_nats_server_start(&g_srv, NULL);
    if (rc == RAG_NATS_SERVER_MISSING) {
        g_skip = 1;
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "cannot start nats-server (log: %s)\n", g_srv.log_path);
        return -1;
    }
    return rag_nats_rag_binary(g_rag_bin, sizeof g_rag_bin, g_self);
}

static int group_teardown(void **state)
{
    (void)state;
    if (!g_skip)
        rag_nats_server_cleanup(&g_srv);
    return 0;
}

int main(int argc, char **argv)
{
    /* --child <root> <seed> <fd> <url> <prefix> [<retry doc> <retry token>] */
    if ((argc == 7 || argc == 9) && strcmp(argv[1], "--child") == 0) {
        crash_out_fd = atoi(argv[4]);
        signal(SIGPIPE, SIG_IGN);
        return child_main(argv[2], strtoull(argv[3], NULL, 10), argv[5], argv[6],
                          argc == 9 ? argv[7] : NULL, argc == 9 ? argv[8] : NULL);
    }
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0)
        return 1;
    g_self[n] = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nats_kill_cycles),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
