/*
 * A broker outage of several seconds in the middle of an ingest run on NATS JetStream.
 *
 * This process is the primary (ingest, index, retrieve, with its workers started); one embed
 * worker runs as a separate process (`rag serve --modules embed`).  300 SciFact abstracts are
 * put in batches of 10: 100 before the outage; then nats-server is stopped and, for at least
 * OUTAGE_MS, rag_doc_put_batch() keeps being called -- 100 new documents and new versions of
 * 50 of the first ones -- and must succeed every time (the events wait in the outbox, and
 * rag_status() shows that backlog); then the server is restarted on the same port and store
 * dir and the last 100 documents are put.  rag_drain() must then finish within DRAIN_MS, and:
 * every document is found by its own marker word at the version its last put returned (an
 * updated document no longer by its old marker), every saga done, one version per document,
 * one vector per chunk, no dead letter (primary and worker), every queue and outbox empty,
 * rag_fsck() clean.
 *
 * Skipped when nats-server is not installed or ragcore was built without libnats.
 */
#define _GNU_SOURCE
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

#include "../support/nats_server.c"

#define NDOCS 300
#define BATCH 10
#define NUPDATES 50 /* documents 0..49 get a second version during the outage */
#define OUTAGE_MS 3500
#define DRAIN_MS 60000
#define DIM 64
#define PREFIX "OUTAGE"
/* The consumers' AckWait: messages delivered before the outage whose acks were lost in it come
 * back after it (see refresh_ack_wait). */
#define ACK_WAIT_MS 2000

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

static rag_nats_server g_srv;
static int g_skip; /* 1: no nats-server, 2: built without libnats, 3: no SciFact data */
static char g_self[4096];
static char g_rag_bin[4096];

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- SciFact: the string fields of one JSON line ------------------------------------------ */

static void put_utf8(char **o, unsigned cp)
{
    unsigned char *p = (unsigned char *)*o;
    if (cp < 0x80) {
        *p++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *p++ = (unsigned char)(0xc0 | cp >> 6);
        *p++ = (unsigned char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *p++ = (unsigned char)(0xe0 | cp >> 12);
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        *p++ = (unsigned char)(0x80 | (cp & 0x3f));
    } else {
        *p++ = (unsigned char)(0xf0 | cp >> 18);
        *p++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        *p++ = (unsigned char)(0x80 | (cp & 0x3f));
    }
    *o = (char *)p;
}

/* The value of the string field `key` of a flat JSON object (SciFact's docs.jsonl: "id",
 * "title", "text"), unescaped; NULL when absent.  Caller frees. */
static char *json_field(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p++ != '"')
        return NULL;
    char *out = malloc(strlen(p) + 1), *o = out;
    while (*p && *p != '"') {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        char c = *p++;
        switch (c) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            unsigned cp = 0;
            if (sscanf(p, "%4x", &cp) != 1)
                break;
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = 0;
                if (sscanf(p + 2, "%4x", &lo) == 1 && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                }
            }
            if (cp >= 0xd800 && cp < 0xe000)
                cp = 0xfffd; /* a lone surrogate */
            put_utf8(&o, cp);
            break;
        }
        default: *o++ = c; break; /* \" \\ \/ */
        }
    }
    *o = 0;
    return out;
}

typedef struct sdoc {
    char *id;
    char *title;
    char *abstract;
    char *text;       /* abstract + the marker of the version */
    uint64_t version; /* returned by its last put */
    int updated;      /* 1: its last put was the second version */
} sdoc;

/* Each version carries a word found nowhere else: "zq<i>x" (v1) or "zq<i>y" (v2). */
static char *with_marker(const char *abstract, int i, int v2)
{
    size_t n = strlen(abstract) + 64;
    char *t = malloc(n);
    snprintf(t, n, "%s Marker zq%d%c.", abstract, i, v2 ? 'y' : 'x');
    return t;
}

static void free_docs(sdoc *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].id);
        free(d[i].title);
        free(d[i].abstract);
        free(d[i].text);
    }
    free(d);
}

static sdoc *load_scifact(size_t want)
{
    char *path = rag_test_data_path("scifact/docs.jsonl");
    if (!path)
        return NULL;
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return NULL;
    sdoc *d = calloc(want, sizeof *d);
    size_t n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (n < want && getline(&line, &cap, f) > 0) {
        char *id = json_field(line, "id"), *title = json_field(line, "title");
        char *text = json_field(line, "text");
        if (id && text && *text) {
            d[n].id = id;
            d[n].title = title ? title : strdup("");
            d[n].abstract = text;
            d[n].text = with_marker(text, (int)n, 0);
            n++;
            id = title = text = NULL;
        }
        free(id);
        free(title);
        free(text);
    }
    free(line);
    fclose(f);
    if (n < want) {
        free_docs(d, n);
        return NULL;
    }
    return d;
}

static int transport_new(rag_queue_transport *t)
{
    rag_queue_nats_options no = RAG_QUEUE_NATS_OPTIONS_INIT;
    no.urls = g_srv.url;
    no.prefix = PREFIX;
    no.ack_wait_ms = ACK_WAIT_MS;
    no.reconnect_wait_ms = 100;
    no.publish_timeout_ms = 2000;
    return rag_queue_nats_new(t, &no);
}

/*
 * `rag serve` has no option for the AckWait and uses the transport's default (30 s), and the
 * process that (re)creates a durable last -- at its first use of a topic and after every
 * reconnect -- sets it for everyone.  With 30 s, the messages delivered before the outage
 * whose acks were lost in it make the drain after it last about 30 s.  So the test
 * re-asserts ACK_WAIT_MS (JetStream applies a changed AckWait to pending messages too) after
 * the worker starts and during the drain.  A broker that is down is no failure here.
 */
static void refresh_ack_wait(void)
{
    static const char *const topics[] = {"doc.chunked", "doc.embedded", "doc.deleted",
                                         "doc.revert",  "doc.indexed",  "doc.failed"};
    rag_queue_transport t;
    if (transport_new(&t) != RAG_OK)
        return;
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        rag_queue_depth dp;
        if (t.depth(t.state, topics[i], &dp) != RAG_OK)
            break;
    }
    t.free(t.state);
}

/* ---- the embed worker process ------------------------------------------------------------- */

static pid_t worker_start(const char *root, const char *log)
{
    struct stat st;
    off_t from = stat(log, &st) == 0 ? st.st_size : 0;
    const char *argv[] = {g_rag_bin, "--root", root, "--transport", g_srv.url,
                          "--transport-prefix", PREFIX, "--modules", "embed", "--dim", "64",
                          "serve", NULL};
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
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
    long long t0 = now_ms();
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            fail_msg("embed worker exited at start (status 0x%x), log %s", status, log);
        char buf[4096] = "";
        FILE *f = fopen(log, "rb");
        if (f) {
            fseek(f, (long)from, SEEK_SET);
            buf[fread(buf, 1, sizeof buf - 1, f)] = 0;
            fclose(f);
        }
        if (strstr(buf, "rag: serving")) {
            refresh_ack_wait(); /* it has just created the durables with 30 s */
            return pid;
        }
        if (now_ms() - t0 > 20000)
            fail_msg("embed worker not serving after 20 s, log %s", log);
        sleep_ms(5);
    }
}

static void worker_stop(pid_t pid, const char *log)
{
    kill(pid, SIGTERM);
    int status = 0;
    long long t0 = now_ms();
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (now_ms() - t0 > 30000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("embed worker did not stop within 30 s of SIGTERM, log %s", log);
        }
        sleep_ms(5);
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        fail_msg("embed worker ended with status 0x%x on SIGTERM, log %s", status, log);
}

/* ---- the primary ---------------------------------------------------------------------------- */

static rag_ctx *open_root(const char *root, unsigned int modules)
{
    rag_queue_transport t;
    OK(transport_new(&t));
    rag_options o;
    rag_options_init(&o);
    o.embed_dim = DIM;
    o.lease_ms = ACK_WAIT_MS; /* long batches report progress within the AckWait */
    o.modules = modules;
    o.transport = &t; /* copied; rag_open owns its state */
    rag_ctx *ctx = NULL;
    OK(rag_open(&ctx, root, &o));
    return ctx;
}

/* Put docs [from, to) in batches of BATCH; each call must succeed, for each document.
 * Returns the longest call in ms. */
static long long put_range(rag_ctx *ctx, sdoc *d, int from, int to)
{
    long long worst = 0;
    for (int b = from; b < to; b += BATCH) {
        int n = to - b < BATCH ? to - b : BATCH;
        rag_doc docs[BATCH];
        rag_put_result res[BATCH];
        memset(docs, 0, sizeof docs);
        for (int i = 0; i < n; i++) {
            docs[i].id = d[b + i].id;
            docs[i].data = d[b + i].text;
            docs[i].size = strlen(d[b + i].text);
            docs[i].title = d[b + i].title;
            docs[i].mime = "text/plain";
        }
        long long t0 = now_ms();
        OK(rag_doc_put_batch(ctx, docs, (size_t)n, res));
        long long took = now_ms() - t0;
        if (took > worst)
            worst = took;
        for (int i = 0; i < n; i++) {
            if (res[i].code != RAG_OK)
                fail_msg("put %s: %s", d[b + i].id, rag_strerror(res[i].code));
            d[b + i].version = res[i].version;
        }
    }
    return worst;
}

static uint64_t outbox_backlog(rag_ctx *ctx, uint64_t *queued)
{
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    OK(rag_status(ctx, &st));
    uint64_t out = 0, q = 0;
    for (size_t i = 0; i < st.queue_count; i++) {
        uint64_t n = st.queues[i].ready + st.queues[i].delayed + st.queues[i].inflight;
        if (strncmp(st.queues[i].name, "outbox:", 7) == 0)
            out += n;
        else
            q += n;
    }
    if (queued)
        *queued = q;
    return out;
}

/* The marker of document i finds it at `version` and nothing else; with version 0, finds
 * nothing (lexical search: the marker is in no other text). */
static void expect_marker(rag_ctx *ctx, const sdoc *d, int i, char kind, uint64_t version)
{
    char q[32];
    snprintf(q, sizeof q, "zq%d%c", i, kind);
    rag_query query = RAG_QUERY_INIT;
    query.text = q;
    query.k = 5;
    query.mode = RAG_MODE_LEXICAL;
    rag_results *r = NULL;
    OK(rag_search(ctx, &query, &r));
    size_t count = r->count;
    for (size_t j = 0; j < count; j++) {
        if (strcmp(r->items[j].doc_id, d[i].id) != 0)
            fail_msg("marker %s returned document %s", q, r->items[j].doc_id);
        if (r->items[j].version != version)
            fail_msg("marker %s: %s returned at v%" PRIu64 ", expected %s v%" PRIu64, q,
                     d[i].id, r->items[j].version, version ? "only" : "nothing, the old",
                     version ? version : r->items[j].version);
    }
    rag_results_free(r);
    if (version && count == 0)
        fail_msg("document %s (marker %s) not found, expected v%" PRIu64, d[i].id, q, version);
}

static void test_outage_during_ingest(void **state)
{
    (void)state;
    if (g_skip == 1)
        print_message("nats-server not installed: skipped\n");
    if (g_skip == 2)
        print_message("built without libnats: skipped\n");
    if (g_skip == 3)
        print_message("SciFact data (../shared/data/scifact) missing: skipped\n");
    if (g_skip)
        skip();
    sdoc *d = load_scifact(NDOCS);
    assert_non_null(d);
    char *root = rag_test_tmpdir("nats-outage");
    char *wroot = rag_test_tmpdir("nats-outage-w");
    char wlog[4200];
    snprintf(wlog, sizeof wlog, "%s.log", wroot);
    remove(wlog);
    pid_t worker = worker_start(wroot, wlog);

    rag_ctx *ctx = open_root(root, RAG_HOST_INGEST | RAG_HOST_INDEX | RAG_HOST_RETRIEVE);
    OK(rag_start(ctx));
    long long worst_before = put_range(ctx, d, 0, 100);

    /* The outage: the server stops (SIGTERM, as an operator would) while puts go on. */
    assert_int_equal(rag_nats_server_stop(&g_srv), 0);
    long long t_down = now_ms();
    int next = 100, upd = 0, calls = 0;
    long long worst_outage = 0;
    uint64_t min_backlog = UINT64_MAX, max_backlog = 0;
    while (next < 200 || upd < NUPDATES || now_ms() - t_down < OUTAGE_MS) {
        long long took;
        if (next < 200) {
            took = put_range(ctx, d, next, next + BATCH);
            next += BATCH;
        } else if (upd < NUPDATES) {
            /* new versions of documents stored (and maybe indexed) before the outage */
            for (int i = upd; i < upd + BATCH; i++) {
                free(d[i].text);
                d[i].text = with_marker(d[i].abstract, i, 1);
                d[i].updated = 1;
            }
            took = put_range(ctx, d, upd, upd + BATCH);
            for (int i = upd; i < upd + BATCH; i++)
                assert_int_equal(d[i].version, 2);
            upd += BATCH;
        } else {
            sleep_ms(50);
            continue;
        }
        calls++;
        if (took > worst_outage)
            worst_outage = took;
        /* rag_status works without the broker and shows the backlog in the outbox */
        uint64_t backlog = outbox_backlog(ctx, NULL);
        if (backlog < min_backlog)
            min_backlog = backlog;
        if (backlog > max_backlog)
            max_backlog = backlog;
        sleep_ms(100);
    }
    long long outage = now_ms() - t_down;
    assert_true(outage >= 3000);
    /* every put of the outage left its doc.chunked in the outbox */
    assert_true(min_backlog > 0);
    assert_true(max_backlog >= 100 + NUPDATES);

    assert_int_equal(rag_nats_server_restart(&g_srv), 0);
    long long t_up = now_ms();
    long long worst_after = put_range(ctx, d, 200, NDOCS);
    int rc;
    do {
        refresh_ack_wait();
        rc = rag_drain(ctx, 1000);
    } while (rc == RAG_ETIMEOUT && now_ms() - t_up < DRAIN_MS);
    long long drained = now_ms() - t_up;
    if (rc) {
        uint64_t queued = 0, backlog = outbox_backlog(ctx, &queued);
        fail_msg("drain after the outage: %s (%s); outbox %" PRIu64 ", queued %" PRIu64,
                 rag_strerror(rc), rag_error_last(), backlog, queued);
    }
    print_message("outage %lld ms: %d put_batch calls during it (longest %lld ms; before %lld, "
                  "after %lld), outbox backlog up to %" PRIu64 "; drained %lld ms after the "
                  "restart\n", outage, calls, worst_outage, worst_before, worst_after,
                  max_backlog, drained);

    /* Nothing lost: counts, every queue and outbox empty, each document at its version. */
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    OK(rag_status(ctx, &st));
    assert_int_equal(st.documents, NDOCS);
    assert_int_equal(st.versions, NDOCS);
    assert_true(st.chunks >= NDOCS);
    assert_int_equal(st.chunks, st.vectors);
    assert_int_equal(st.dead_letters, 0);
    assert_int_equal(st.sagas_running, 0);
    assert_int_equal(st.sagas_failed, 0);
    assert_int_equal(st.sagas_compensating, 0);
    uint64_t queued = 1;
    assert_int_equal(outbox_backlog(ctx, &queued), 0);
    assert_int_equal(queued, 0);
    for (int i = 0; i < NDOCS; i++) {
        rag_trace_info *t = NULL;
        OK(rag_trace(ctx, d[i].id, &t));
        if (t->active_version != d[i].version || strcmp(t->state, "done") != 0)
            fail_msg("%s: saga '%s' on v%" PRIu64 ", active v%" PRIu64 "; expected v%" PRIu64
                     " done (%s)", d[i].id, t->state, t->version, t->active_version,
                     d[i].version, t->reason);
        rag_trace_free(t);
        expect_marker(ctx, d, i, d[i].updated ? 'y' : 'x', d[i].version);
        if (d[i].updated)
            expect_marker(ctx, d, i, 'x', 0); /* the first version is gone */
    }
    rag_fsck_report *rep = NULL;
    OK(rag_fsck(ctx, 0, DRAIN_MS, &rep));
    for (size_t i = 0; i < rep->count; i++)
        print_message("fsck: %s %s v%" PRIu64 ": %s\n", rag_fsck_kind_name(rep->issues[i].kind),
                      rep->issues[i].doc_id, rep->issues[i].version, rep->issues[i].detail);
    assert_int_equal(rep->count, 0);
    rag_fsck_report_free(rep);
    rag_close(ctx);

    /* The worker went through the outage too: it stops cleanly and parked nothing. */
    worker_stop(worker, wlog);
    ctx = open_root(wroot, RAG_HOST_EMBED);
    rag_dead_letter_info *dl = NULL;
    size_t ndl = 0;
    OK(rag_dlq_list(ctx, &dl, &ndl));
    for (size_t i = 0; i < ndl; i++)
        print_message("worker dead letter %s %s %s: %s\n", dl[i].id, dl[i].topic, dl[i].doc_id,
                      dl[i].reason);
    assert_int_equal(ndl, 0);
    rag_free(dl);
    rag_close(ctx);

    free_docs(d, NDOCS);
    rag_test_rmtree(root);
    rag_test_rmtree(wroot);
    remove(wlog);
    free(root);
    free(wroot);
}

static int group_setup(void **state)
{
    (void)state;
    rag_queue_transport probe;
    rag_queue_nats_options o = RAG_QUEUE_NATS_OPTIONS_INIT;
    o.urls = "nats://127.0.0.1:1";
    o.connect_timeout_ms = 200;
    if (rag_queue_nats_new(&probe, &o) == RAG_EUNSUPPORTED) {
        g_skip = 2;
        return 0;
    }
    char *data = rag_test_data_path("scifact/docs.jsonl");
    if (!data) {
        g_skip = 3;
        return 0;
    }
    free(data);
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
    if (g_skip != 1 && g_skip != 2 && g_skip != 3)
        rag_nats_server_cleanup(&g_srv);
    return 0;
}

int main(void)
{
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0)
        return 1;
    g_self[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outage_during_ingest),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
