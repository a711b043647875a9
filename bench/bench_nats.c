/*
 * Scale-out on NATS JetStream: SciFact ingest throughput with the embed module in 1, 2 and 4
 * worker processes, against the embedded LMDB transport with every module in one process; and
 * the end-to-end latency the broker adds per hop of an update.
 *
 * 1. Ingest throughput, durable (fsync on everywhere), through the full pipeline: every
 *    document put (batches of 256, workers started) and the pipeline drained; the time from
 *    the first put to the drain's return.
 *      lmdb    one process, all modules, the embedded LMDB broker (the baseline, same run)
 *      nats-N  the primary (ingest, index, retrieve: this process) and N embed workers
 *              (`rag serve --modules embed`, exec'd from the build dir), each with a fresh
 *              root, on a fresh stream prefix per configuration
 *    After each run the counts are checked (every document stored once, one vector per chunk,
 *    no saga running, no dead letter); a run that lost something is reported "complete":
 *    false and its figures are not throughput.
 * 2. Latency of an update, LMDB (one process) vs NATS (primary + 1 worker): ~200 updates of
 *    one document, each a new version with a new marker word; per update the time from
 *    rag_doc_put() to a session-consistent search that returns it ("visible": the hops
 *    doc.chunked and doc.embedded) and to rag_drain()'s return ("settled": doc.indexed too,
 *    the 3 hops of docs/update-flow.md).  The broker's share per hop is the difference of the
 *    two transports divided by the hops (2 for visible, 3 for settled).  Measured durable
 *    (what the LMDB broker adds includes the fsync of its queue env on every enqueue and ack,
 *    which nats-server does not do synchronously) and again with no_sync in every process
 *    (the messaging cost alone).
 *
 * The bench starts its own nats-server (tests/support/nats_server.c, compiled in) with a
 * store dir under its work dir.  Without nats-server or libnats only the LMDB figures are
 * made.  One JSON line per figure, then a short table.  Usage:
 *   bench_nats [DATA_DIR] [--docs N] [--updates N]
 *     DATA_DIR: the folder holding scifact/ (default $RAG_SHARED_DATA, else
 *     <source>/../shared/data); the rag binary: $RAG_BIN, else <build dir>/rag.
 */
#define _GNU_SOURCE
#include <fcntl.h>
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
#include "bench_docs.h"
#include "nats_server.h"

#ifndef RAG_BENCH_SOURCE_DIR
#define RAG_BENCH_SOURCE_DIR "."
#endif
#ifndef RAG_BENCH_BINARY_DIR
#define RAG_BENCH_BINARY_DIR "."
#endif

#define BATCH 256
#define MAX_WORKERS 4
#define HOST_PRIMARY (RAG_HOST_INGEST | RAG_HOST_INDEX | RAG_HOST_RETRIEVE)


static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}


/* ---- processes -------------------------------------------------------------------------- */

static char g_rag_bin[4096];
static rag_nats_server g_srv;
static int g_have_nats;

typedef struct worker {
    pid_t pid;
    char root[600], log[640];
} worker;

/* `rag serve --modules embed` on its own root; returns once it serves. */
static int worker_start(worker *w, const char *prefix, int no_sync)
{
    const char *argv[] = {g_rag_bin, "--root", w->root, "--transport", g_srv.url,
                          "--transport-prefix", prefix, "--modules", "embed", "serve", NULL,
                          NULL};
    if (no_sync) { /* a global option: before the command */
        argv[9] = "--no-sync";
        argv[10] = "serve";
    }
    int fd = open(w->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int nul = open("/dev/null", O_RDONLY);
    if (fd < 0 || nul < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 1);
        dup2(fd, 2);
        dup2(nul, 0);
        execv(g_rag_bin, (char *const *)argv);
        _exit(127);
    }
    close(fd);
    close(nul);
    w->pid = pid;
    double t0 = now_s();
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "bench_nats: worker exited at start (see %s)\n", w->log);
            w->pid = 0;
            return -1;
        }
        char buf[2048] = "";
        FILE *f = fopen(w->log, "rb");
        if (f) {
            buf[fread(buf, 1, sizeof buf - 1, f)] = 0;
            fclose(f);
        }
        if (strstr(buf, "rag: serving"))
            return 0;
        if (now_s() - t0 > 20) {
            fprintf(stderr, "bench_nats: worker not serving after 20 s (see %s)\n", w->log);
            return -1;
        }
        sleep_ms(5);
    }
}

static void worker_stop(worker *w)
{
    if (w->pid <= 0)
        return;
    kill(w->pid, SIGTERM);
    int status = 0;
    double t0 = now_s();
    while (waitpid(w->pid, &status, WNOHANG) != w->pid) {
        if (now_s() - t0 > 30) {
            kill(w->pid, SIGKILL);
            waitpid(w->pid, &status, 0);
            break;
        }
        sleep_ms(5);
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        fprintf(stderr, "bench_nats: worker ended with status 0x%x (see %s)\n", status, w->log);
    w->pid = 0;
}

static void rmtree(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_nats: could not remove %s\n", path);
}

/* A configuration: the handle of the primary (or of the single process) and its workers. */
typedef struct config {
    const char *name; /* "lmdb", "nats-2" ... */
    int workers;      /* 0: LMDB, all modules in this process */
    char root[600];
    char prefix[32];
    worker w[MAX_WORKERS];
    rag_ctx *ctx;
} config;

static int config_open(config *c, const char *work, const char *name, int workers, int no_sync)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    c->workers = workers;
    snprintf(c->root, sizeof c->root, "%s/%s", work, name);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = no_sync; /* 0: durable, fsync on commit */
    rag_queue_transport t;
    if (workers) {
        /* a fresh prefix per configuration (and per run): no stream is shared */
        snprintf(c->prefix, sizeof c->prefix, "BN%d_%s", (int)getpid(), name);
        for (char *p = c->prefix; *p; p++)
            if (*p == '-')
                *p = '_';
        for (int i = 0; i < workers; i++) {
            snprintf(c->w[i].root, sizeof c->w[i].root, "%s/%s-w%d", work, name, i);
            snprintf(c->w[i].log, sizeof c->w[i].log, "%s/%s-w%d.log", work, name, i);
            if (worker_start(&c->w[i], c->prefix, no_sync))
                return -1;
        }
        rag_queue_nats_options no = RAG_QUEUE_NATS_OPTIONS_INIT;
        no.urls = g_srv.url;
        no.prefix = c->prefix;
        int rc = rag_queue_nats_new(&t, &no);
        if (rc) {
            fprintf(stderr, "bench_nats: transport: %s\n", rag_error_last());
            return -1;
        }
        o.transport = &t;
        o.modules = HOST_PRIMARY;
    }
    int rc = rag_open(&c->ctx, c->root, &o);
    if (!rc)
        rc = rag_start(c->ctx);
    if (rc) {
        fprintf(stderr, "bench_nats: %s: open: %s\n", name, rag_error_last());
        return -1;
    }
    return 0;
}

static void config_close(config *c)
{
    rag_close(c->ctx);
    c->ctx = NULL;
    for (int i = 0; i < c->workers; i++) {
        worker_stop(&c->w[i]);
        rmtree(c->w[i].root);
        remove(c->w[i].log);
    }
    rmtree(c->root);
}

/* ---- 1. ingest throughput ------------------------------------------------------------------ */

typedef struct ingest_fig {
    double seconds;
    uint64_t docs, chunks;
    int complete;
} ingest_fig;

static int run_ingest(config *c, const bench_doc *docs, size_t n, ingest_fig *f)
{
    memset(f, 0, sizeof *f);
    rag_doc *rd = calloc(BATCH, sizeof *rd);
    rag_put_result *res = calloc(BATCH, sizeof *res);
    double t0 = now_s();
    for (size_t i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        for (size_t j = 0; j < m; j++) {
            memset(&rd[j], 0, sizeof rd[j]);
            rd[j].id = docs[i + j].id;
            rd[j].title = docs[i + j].title;
            rd[j].data = docs[i + j].text;
            rd[j].size = strlen(docs[i + j].text);
            rd[j].mime = "text/plain";
        }
        if (rag_doc_put_batch(c->ctx, rd, m, res)) {
            fprintf(stderr, "bench_nats: %s: put: %s\n", c->name, rag_error_last());
            free(rd);
            free(res);
            return -1;
        }
    }
    free(rd);
    free(res);
    if (rag_drain(c->ctx, 600000)) {
        fprintf(stderr, "bench_nats: %s: drain: %s\n", c->name, rag_error_last());
        return -1;
    }
    f->seconds = now_s() - t0;
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    if (rag_status(c->ctx, &st))
        return -1;
    f->docs = st.documents;
    f->chunks = st.chunks;
    f->complete = st.documents == n && st.versions == n && st.chunks == st.vectors &&
                  st.sagas_running == 0 && st.dead_letters == 0;
    if (!f->complete)
        fprintf(stderr, "bench_nats: %s: INCOMPLETE after the drain: %llu documents, %llu "
                "versions, %llu chunks, %llu vectors, %llu sagas running, %llu dead letters\n",
                c->name, (unsigned long long)st.documents, (unsigned long long)st.versions,
                (unsigned long long)st.chunks, (unsigned long long)st.vectors,
                (unsigned long long)st.sagas_running, (unsigned long long)st.dead_letters);
    return 0;
}

/* ---- 2. update latency ------------------------------------------------------------------- */

typedef struct lat_fig {
    size_t n;
    double vis_p50, vis_p99, set_p50, set_p99; /* ms */
} lat_fig;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

/* `updates` new versions of one document (plus 10 not measured); each time the put, a
 * session search for its marker until it returns the new version, and a drain. */
static int run_latency(config *c, const bench_doc *base, size_t updates, lat_fig *f)
{
    memset(f, 0, sizeof *f);
    double *vis = calloc(updates, sizeof *vis), *set = calloc(updates, sizeof *set);
    size_t cap = strlen(base->text) + 64;
    char *text = malloc(cap);
    int rc = 0;
    for (size_t u = 0; u < updates + 10 && !rc; u++) {
        char marker[32];
        snprintf(marker, sizeof marker, "zq%zuw", u);
        snprintf(text, cap, "%s Marker %s.", base->text, marker);
        rag_doc d = {0};
        d.id = "latency-doc";
        d.title = base->title;
        d.data = text;
        d.size = strlen(text);
        d.mime = "text/plain";
        uint64_t version = 0;
        double t0 = now_s();
        rc = rag_doc_put(c->ctx, &d, &version);
        if (rc)
            break;
        rag_query q = RAG_QUERY_INIT;
        q.text = marker;
        q.k = 3;
        q.mode = RAG_MODE_LEXICAL;
        q.consistency = RAG_CONSISTENCY_SESSION;
        q.timeout_ms = 30000;
        int seen = 0;
        double t_vis = 0;
        while (!seen && !rc) {
            rag_results *r = NULL;
            rc = rag_search(c->ctx, &q, &r);
            if (rc)
                break;
            for (size_t j = 0; j < r->count; j++)
                seen |= r->items[j].version == version;
            rag_results_free(r);
            t_vis = now_s();
            if (!seen && t_vis - t0 > 30) {
                fprintf(stderr, "bench_nats: %s: v%llu not visible after 30 s\n", c->name,
                        (unsigned long long)version);
                rc = -1;
            }
        }
        if (!rc)
            rc = rag_drain(c->ctx, 30000);
        double t_set = now_s();
        if (!rc && u >= 10) {
            vis[u - 10] = (t_vis - t0) * 1e3;
            set[u - 10] = (t_set - t0) * 1e3;
        }
    }
    if (rc) {
        fprintf(stderr, "bench_nats: %s: latency run: %s\n", c->name, rag_error_last());
    } else {
        qsort(vis, updates, sizeof *vis, cmp_double);
        qsort(set, updates, sizeof *set, cmp_double);
        f->n = updates;
        f->vis_p50 = pct(vis, updates, 0.50);
        f->vis_p99 = pct(vis, updates, 0.99);
        f->set_p50 = pct(set, updates, 0.50);
        f->set_p99 = pct(set, updates, 0.99);
    }
    free(vis);
    free(set);
    free(text);
    return rc ? -1 : 0;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void emit_ingest(const config *c, const ingest_fig *f)
{
    printf("{\"bench\":\"nats\",\"figure\":\"ingest\",\"config\":\"%s\",\"transport\":\"%s\","
           "\"embed_workers\":%d,\"docs\":%llu,\"chunks\":%llu,\"seconds\":%.3f,"
           "\"docs_per_s\":%.1f,\"chunks_per_s\":%.1f,\"complete\":%s}\n",
           c->name, c->workers ? "nats" : "lmdb", c->workers, (unsigned long long)f->docs,
           (unsigned long long)f->chunks, f->seconds, (double)f->docs / f->seconds,
           (double)f->chunks / f->seconds, f->complete ? "true" : "false");
}

static void emit_latency(const char *transport, int durable, const lat_fig *f)
{
    printf("{\"bench\":\"nats\",\"figure\":\"update_latency\",\"transport\":\"%s\","
           "\"durable\":%s,\"updates\":%zu,\"visible_p50_ms\":%.3f,\"visible_p99_ms\":%.3f,"
           "\"settled_p50_ms\":%.3f,\"settled_p99_ms\":%.3f}\n",
           transport, durable ? "true" : "false", f->n, f->vis_p50, f->vis_p99, f->set_p50,
           f->set_p99);
}

int main(int argc, char **argv)
{
    const char *data_dir = NULL;
    size_t limit = 0, updates = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--docs") && i + 1 < argc)
            limit = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--updates") && i + 1 < argc)
            updates = strtoul(argv[++i], NULL, 10);
        else
            data_dir = argv[i];
    }
    if (updates < 2)
        updates = 2;
    if (!data_dir || !*data_dir)
        data_dir = getenv("RAG_SHARED_DATA");
    char def[4096], path[4200];
    if (!data_dir || !*data_dir) {
        snprintf(def, sizeof def, "%s/../shared/data", RAG_BENCH_SOURCE_DIR);
        data_dir = def;
    }
    snprintf(path, sizeof path, "%s/scifact/docs.jsonl", data_dir);
    bench_doc *docs = NULL;
    size_t n = 0;
    if (bench_docs_load("bench_nats", path, limit, &docs, &n))
        return 1;
    const char *bin = getenv("RAG_BIN");
    snprintf(g_rag_bin, sizeof g_rag_bin, "%s", bin && *bin ? bin : RAG_BENCH_BINARY_DIR "/rag");
    char work[] = "/tmp/bench_nats_XXXXXX";
    if (!mkdtemp(work)) {
        perror("mkdtemp");
        return 1;
    }

    /* nats-server and the transport, when both are there */
    rag_queue_transport probe;
    rag_queue_nats_options po = RAG_QUEUE_NATS_OPTIONS_INIT;
    po.urls = "nats://127.0.0.1:1";
    po.connect_timeout_ms = 200;
    const char *why_not = NULL;
    if (rag_queue_nats_new(&probe, &po) == RAG_EUNSUPPORTED) {
        why_not = "ragcore was built without libnats";
    } else if (access(g_rag_bin, X_OK) != 0) {
        why_not = "no rag binary (set RAG_BIN)";
    } else {
        char store[700];
        snprintf(store, sizeof store, "%s/nats-store", work);
        int rc = rag_nats_server_start(&g_srv, store);
        if (rc == RAG_NATS_SERVER_MISSING)
            why_not = "nats-server is not installed";
        else if (rc)
            why_not = "nats-server did not start";
        else
            g_have_nats = 1;
    }
    fprintf(stderr, "bench_nats: %zu SciFact documents, work dir %s; %s%s\n", n, work,
            g_have_nats ? "nats-server at " : "NATS figures skipped: ",
            g_have_nats ? g_srv.url : why_not);

    static const struct {
        const char *name;
        int workers;
    } cfgs[] = {{"lmdb", 0}, {"nats-1", 1}, {"nats-2", 2}, {"nats-4", 4}};
    const size_t ncfg = g_have_nats ? 4 : 1;
    ingest_fig fig[4];
    int ok[4] = {0};
    for (size_t i = 0; i < ncfg; i++) {
        config c;
        if (config_open(&c, work, cfgs[i].name, cfgs[i].workers, 0) == 0 &&
            run_ingest(&c, docs, n, &fig[i]) == 0) {
            ok[i] = 1;
            emit_ingest(&c, &fig[i]);
        }
        config_close(&c);
    }

    /* [durable][transport]: durable as everywhere else, then without fsync (no_sync in every
     * process), which leaves the messaging cost alone */
    lat_fig lat[2][2];
    int lat_ok[2][2] = {{0}};
    for (int durable = 1; durable >= 0; durable--)
        for (int i = 0; i < (g_have_nats ? 2 : 1); i++) {
            config c;
            char name[32];
            snprintf(name, sizeof name, "lat-%s-%s", i ? "nats" : "lmdb",
                     durable ? "sync" : "nosync");
            if (config_open(&c, work, name, i, !durable) == 0 &&
                run_latency(&c, &docs[0], updates, &lat[durable][i]) == 0) {
                lat_ok[durable][i] = 1;
                emit_latency(i ? "nats" : "lmdb", durable, &lat[durable][i]);
            }
            config_close(&c);
        }
    for (int durable = 1; durable >= 0; durable--)
        if (lat_ok[durable][0] && lat_ok[durable][1]) {
            const lat_fig *l = &lat[durable][0], *b = &lat[durable][1];
            printf("{\"bench\":\"nats\",\"figure\":\"broker_per_hop\",\"durable\":%s,"
                   "\"from\":\"settled\",\"hops\":3,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                   "\"visible_hops\":2,\"visible_p50_ms\":%.3f,\"visible_p99_ms\":%.3f}\n",
                   durable ? "true" : "false", (b->set_p50 - l->set_p50) / 3,
                   (b->set_p99 - l->set_p99) / 3, (b->vis_p50 - l->vis_p50) / 2,
                   (b->vis_p99 - l->vis_p99) / 2);
        }

    printf("\nSciFact ingest, durable, full pipeline (%zu documents)\n", n);
    printf("  %-8s %-28s %9s %10s %11s %s\n", "config", "processes", "seconds", "docs/s",
           "chunks/s", "");
    for (size_t i = 0; i < ncfg; i++) {
        if (!ok[i])
            continue;
        char procs[64];
        if (cfgs[i].workers)
            snprintf(procs, sizeof procs, "primary + %d embed worker%s", cfgs[i].workers,
                     cfgs[i].workers > 1 ? "s" : "");
        else
            snprintf(procs, sizeof procs, "one process, LMDB broker");
        printf("  %-8s %-28s %9.2f %10.1f %11.1f %s\n", cfgs[i].name, procs, fig[i].seconds,
               (double)fig[i].docs / fig[i].seconds, (double)fig[i].chunks / fig[i].seconds,
               fig[i].complete ? "" : "INCOMPLETE (documents lost)");
    }
    for (int durable = 1; durable >= 0; durable--) {
        if (!lat_ok[durable][0])
            continue;
        printf("\nUpdate of one document, %s, %zu updates: put -> visible (session search), "
               "put -> settled (drain)\n", durable ? "durable" : "no fsync", updates);
        printf("  %-6s %12s %12s %12s %12s\n", "", "visible p50", "visible p99", "settled p50",
               "settled p99");
        for (int i = 0; i < 2; i++)
            if (lat_ok[durable][i])
                printf("  %-6s %9.2f ms %9.2f ms %9.2f ms %9.2f ms\n", i ? "nats" : "lmdb",
                       lat[durable][i].vis_p50, lat[durable][i].vis_p99,
                       lat[durable][i].set_p50, lat[durable][i].set_p99);
        if (lat_ok[durable][1]) {
            const lat_fig *l = &lat[durable][0], *b = &lat[durable][1];
            printf("  broker per hop: p50 %.2f ms, p99 %.2f ms (settled / 3 hops); p50 %.2f ms, "
                   "p99 %.2f ms (visible / 2 hops)\n",
                   (b->set_p50 - l->set_p50) / 3, (b->set_p99 - l->set_p99) / 3,
                   (b->vis_p50 - l->vis_p50) / 2, (b->vis_p99 - l->vis_p99) / 2);
        }
    }
    if (g_have_nats)
        rag_nats_server_cleanup(&g_srv);
    rmtree(work);
    bench_docs_free(docs, n);
    return 0;
}
