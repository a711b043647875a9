/*
 * rag: the command-line tool over the public API (nothing here reaches inside the library).
 *
 *   rag --root DIR ingest PATH... | ingest --jsonl FILE   [--no-wait] [--acl P,...]
 *   rag --root DIR put ID FILE [--acl P,...] [--mime M] [--title T] [--uri U] [--key K]
 *   rag --root DIR delete ID
 *   rag --root DIR search "QUERY" [-k N] [--as P,...] [--json]
 *   rag --root DIR search --jsonl QUERIES.jsonl [-k N] [--as P,...] --json
 *   rag --root DIR ask "QUESTION" [--budget TOKENS] [-k N] [--as P,...] [--json]
 *   rag --root DIR status [--json]
 *   rag --root DIR metrics
 *   rag --root DIR drain [--timeout MS]
 *   rag --root DIR dlq list [--json]
 *   rag --root DIR dlq retry ID [--no-wait] [--timeout MS]
 *   rag --root DIR dlq drop ID
 *   rag --root DIR fsck [--repair] [--json] [--timeout MS]
 *   rag --root DIR trace ID [--json]
 *   rag --root DIR eval --docs D.jsonl --queries Q.jsonl --qrels R.tsv
 *                       [--mode vector|lexical|hybrid|default|all] [-k N] [--as P,...] [--json]
 *   rag --version
 *   Any command: --log-level error|warn|info|debug prints the library's log events to stderr
 *   as "<UTC time> <level> <module> <event>: <message>".
 *
 * Errors go to stderr as "rag: <what>: <code text> (<detail>)" with exit status 1 (usage: 2).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"

typedef struct cli {
    const char *root;
    rag_options opts;
    rag_ctx *ctx;
    /* common flags */
    size_t k;
    int json;
    int no_wait;
    uint32_t timeout_ms;
    size_t budget;
    char *acl_buf, *as_buf;
    const char *acl[64];
    size_t acl_count;
    const char *as[64];
    size_t as_count;
    const char *mime, *title, *uri, *key, *jsonl;
    rag_search_mode mode;
    int all_files;
    int repair;
    /* eval */
    const char *docs, *queries, *qrels;
    int k_set;    /* -k given (eval's default depth differs from search's) */
    int mode_all; /* --mode all: eval every mode */
    /* embedding provider (global options) */
    const char *transport; /* NULL/"lmdb": embedded broker; "nats://..."/"tls://...": NATS */
    rag_queue_nats_options nats;
    const char *provider; /* "cpu" (default), "cuda", "remote" */
    unsigned int dim;     /* cpu/cuda: hash dimension */
    rag_embed_remote_options remote;
} cli;

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Where the value of a global option that takes a plain string goes (NULL: not one of them). */
static const char **string_option(cli *c, const char *flag)
{
    const struct {
        const char *flag;
        const char **dst;
    } opts[] = {
        {"--transport", &c->transport},
        {"--transport-creds", &c->nats.creds_file},
        {"--transport-ca", &c->nats.tls_ca_file},
        {"--transport-cert", &c->nats.tls_cert_file},
        {"--transport-key", &c->nats.tls_key_file},
        {"--transport-prefix", &c->nats.prefix},
        {"--provider", &c->provider},
        {"--remote-url", &c->remote.base_url},
        {"--remote-model", &c->remote.model},
        {"--remote-key-env", &c->remote.api_key_env},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!strcmp(flag, opts[i].flag))
            return opts[i].dst;
    return NULL;
}

/* "embed,ingest,..." -> RAG_HOST_* bits. */
static int parse_modules(const char *list, unsigned int *out)
{
    unsigned int m = 0;
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 6 && !strncmp(p, "ingest", n))
            m |= RAG_HOST_INGEST;
        else if (n == 5 && !strncmp(p, "embed", n))
            m |= RAG_HOST_EMBED;
        else if (n == 5 && !strncmp(p, "index", n))
            m |= RAG_HOST_INDEX;
        else if (n == 8 && !strncmp(p, "retrieve", n))
            m |= RAG_HOST_RETRIEVE;
        else if (n == 3 && !strncmp(p, "all", n))
            m |= RAG_HOST_ALL;
        else
            return -1;
        p += n;
        if (*p == ',')
            p++;
    }
    if (!m)
        return -1;
    *out = m;
    return 0;
}

static int fail(int code, const char *what)
{
    const char *detail = rag_error_last();
    if (detail && *detail)
        fprintf(stderr, "rag: %s: %s (%s)\n", what, rag_strerror(code), detail);
    else
        fprintf(stderr, "rag: %s: %s\n", what, rag_strerror(code));
    return 1;
}

/* ---- logging (--log-level) --------------------------------------------------------------------- */

static const char *const log_level_names[] = {"", "error", "warn", "info", "debug"};

static int parse_log_level(const char *s)
{
    for (int l = RAG_LOG_ERROR; l <= RAG_LOG_DEBUG; l++)
        if (!strcmp(s, log_level_names[l]))
            return l;
    return 0;
}

/* One line per event, written with a single call so that lines of worker threads do not
 * interleave. */
static void log_to_stderr(void *user, int level, const char *module, const char *event,
                          const char *message)
{
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s %s %s: %s\n", when, ts.tv_nsec / 1000000L,
            level >= RAG_LOG_ERROR && level <= RAG_LOG_DEBUG ? log_level_names[level] : "?",
            module, event, message);
}

static int usage(void)
{
    fputs("usage: rag [--root DIR] [--no-sync] [--hybrid-weight W] [--bm25-k1 K] [--bm25-b B]\n"
          "           [--provider cpu|cuda|remote] [--dim N] [--reembed]\n"
          "           [--transport lmdb|nats://HOST:PORT[,nats://...]] [--transport-creds FILE]\n"
          "           [--transport-ca FILE] [--transport-cert FILE --transport-key FILE]\n"
          "           [--transport-prefix NAME] [--transport-ack-wait MS]\n"
          "           [--modules ingest,embed,index,retrieve] [--log-level error|warn|info|debug]\n"
          "           [--remote-url URL --remote-model M --remote-dim N [--remote-key-env VAR]\n"
          "            [--remote-batch N]]\n"
          "           COMMAND [ARGS]\n"
          "  ingest PATH... | ingest --jsonl FILE   [--no-wait] [--acl P,...] [--all]\n"
          "  put ID FILE [--acl P,...] [--mime M] [--title T] [--uri U] [--key K]\n"
          "  delete ID\n"
          "  search \"QUERY\" [-k N] [--as P,...] [--json]\n"
          "  search --jsonl QUERIES.jsonl [-k N] [--as P,...] --json\n"
          "  ask \"QUESTION\" [--budget TOKENS] [-k N] [--as P,...] [--json]\n"
          "  status [--json]\n"
          "  metrics                                Prometheus text exposition of the root\n"
          "  drain [--timeout MS]\n"
          "  dlq list [--json] | dlq retry ID [--no-wait] | dlq drop ID\n"
          "  fsck [--repair] [--json] [--timeout MS]   (exit 3 when inconsistencies remain)\n"
          "  trace ID [--json]\n"
          "  eval --docs D.jsonl --queries Q.jsonl --qrels R.tsv [--mode M|all] [-k N] [--json]\n"
          "       (ingests D unless stored, reports nDCG@10 and recall@N, N default 100)\n"
          "  backup DEST                            consistent copy of the root while it runs\n"
          "  restore BACKUP                         restore into --root (empty), drain, repair\n"
          "  serve                                  run the --modules of this process until\n"
          "                                         SIGINT/SIGTERM (e.g. --modules embed)\n"
          "  --version\n"
          "The provider must be the one the root was built with (its fingerprint is recorded);\n"
          "--reembed re-embeds every document with the given provider instead of refusing.\n"
          "DIR defaults to $RAG_ROOT. Without --as, search and ask run with operator access\n"
          "(every document); with --as only public documents and those the principals may read.\n",
          stderr);
    return 2;
}

static size_t split_list(char *buf, const char **out, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save))
        if (*tok)
            out[n++] = tok;
    return n;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The provider the global options name; NULL in `*p` for the built-in default. */
static int make_provider(cli *c, rag_embed_provider *p, int *have)
{
    *have = 0;
    const char *name = c->provider ? c->provider : "cpu";
    int rc;
    if (!strcmp(name, "cpu")) {
        if (!c->dim)
            return 0; /* rag_open's default: cpu hash, 384-d */
        rc = rag_embed_cpu_hash_init(p, c->dim);
    } else if (!strcmp(name, "cuda")) {
        rag_embed_provider cpu;
        rc = rag_embed_cpu_hash_init(&cpu, c->dim);
        if (!rc) {
            rc = rag_embed_cuda_init(p, &cpu, NULL);
            if (rc)
                rag_embed_provider_release(&cpu);
        }
    } else if (!strcmp(name, "remote")) {
        rc = rag_embed_remote_init(p, &c->remote);
    } else {
        fprintf(stderr, "rag: --provider %s: expected cpu, cuda or remote\n", name);
        return 2;
    }
    if (rc)
        return fail(rc, "provider");
    *have = 1;
    return 0;
}

static int open_ctx(cli *c)
{
    if (!c->root) {
        fputs("rag: no root directory: pass --root DIR or set RAG_ROOT\n", stderr);
        return 2;
    }
    rag_embed_provider p;
    int have = 0;
    int prc = make_provider(c, &p, &have);
    if (prc)
        return prc;
    c->opts.provider = have ? &p : NULL; /* copied by rag_open, which owns its state */
    rag_queue_transport t;
    if (c->transport && strcmp(c->transport, "lmdb")) {
        if (strncmp(c->transport, "nats://", 7) && strncmp(c->transport, "tls://", 6)) {
            if (have && p.free)
                p.free(p.state);
            fprintf(stderr, "rag: --transport %s: expected lmdb, nats://HOST:PORT or "
                            "tls://HOST:PORT\n", c->transport);
            return 2;
        }
        c->nats.urls = c->transport;
        int trc = rag_queue_nats_new(&t, &c->nats);
        if (trc) {
            if (have && p.free)
                p.free(p.state);
            return fail(trc, "transport");
        }
        c->opts.transport = &t; /* copied by rag_open, which owns its state */
    }
    int rc = rag_open(&c->ctx, c->root, &c->opts);
    c->opts.provider = NULL;
    c->opts.transport = NULL;
    if (rc)
        return fail(rc, "open");
    return 0;
}

/* `serve`: run this process's modules until SIGINT or SIGTERM. */
static int cmd_serve(cli *c)
{
    int rc = rag_start(c->ctx);
    if (rc)
        return fail(rc, "start");
    unsigned int m = c->opts.modules ? c->opts.modules : RAG_HOST_ALL;
    fprintf(stderr, "rag: serving%s%s%s%s on %s (root %s); SIGINT or SIGTERM stops\n",
            m & RAG_HOST_INGEST ? " ingest" : "", m & RAG_HOST_EMBED ? " embed" : "",
            m & RAG_HOST_INDEX ? " index" : "", m & RAG_HOST_RETRIEVE ? " retrieve" : "",
            c->transport ? c->transport : "lmdb", c->root);
    while (!interrupted) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    rc = rag_stop(c->ctx);
    return rc ? fail(rc, "stop") : 0;
}

/* After a change: wait until it is searchable, unless --no-wait. */
static int wait_unless_no_wait(cli *c)
{
    if (c->no_wait)
        return 0;
    int rc = rag_drain(c->ctx, c->timeout_ms);
    return rc ? fail(rc, "drain") : 0;
}

/* Idempotency key binding a name to its exact bytes (FNV-1a 64 plus length), so that
 * re-running an interrupted ingest returns at once for everything already stored unchanged.
 * Caller frees. */
static char *content_key(const char *prefix, const char *name, const char *data, size_t len)
{
    unsigned long long h = 1469598103934665603ull;
    for (size_t j = 0; j < len; j++)
        h = (h ^ (unsigned char)data[j]) * 1099511628211ull;
    size_t n = strlen(prefix) + strlen(name) + 64;
    char *key = malloc(n);
    if (key)
        snprintf(key, n, "%s:%s:%zu:%016llx", prefix, name, len, h);
    return key;
}

/* ---- progress ------------------------------------------------------------------------------ */

typedef struct progress {
    int tty;
    double start, last;
    size_t done, total, failed;
    uint64_t bytes;
} progress;

static void progress_show(progress *p, int force, const char *phase)
{
    if (!p->tty)
        return;
    double t = now_s();
    if (!force && t - p->last < 0.1)
        return;
    p->last = t;
    int width = 30;
    int fill = p->total ? (int)((double)p->done / (double)p->total * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s [%s] %zu/%zu docs  %.1f MB  %.1f s%s   ", phase, bar, p->done, p->total,
            (double)p->bytes / 1e6, t - p->start, p->failed ? "  (some failed)" : "");
    fflush(stderr);
}

/* ---- ingest ------------------------------------------------------------------------------------ */

typedef struct doc_buf {
    rag_doc docs[64];
    char *owned[64][4]; /* data, id, title, uri/key */
    char *keys[64];
    const char *names[64];
    size_t n, bytes;
} doc_buf;

static int flush_docs(cli *c, doc_buf *b, progress *p, int *failures)
{
    if (b->n == 0)
        return 0;
    rag_put_result res[64];
    int rc = rag_doc_put_batch(c->ctx, b->docs, b->n, res);
    if (rc)
        return fail(rc, "ingest");
    for (size_t i = 0; i < b->n; i++) {
        if (res[i].code) {
            (*failures)++;
            p->failed++;
            if (p->tty)
                fputc('\n', stderr);
            fprintf(stderr, "rag: %s: %s\n", b->names[i], rag_strerror(res[i].code));
        }
        for (int j = 0; j < 4; j++)
            free(b->owned[i][j]);
        free(b->keys[i]);
    }
    p->done += b->n;
    b->n = 0;
    b->bytes = 0;
    progress_show(p, 0, "ingest");
    return 0;
}

static const char *mime_for(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot)
        return NULL;
    if (!strcasecmp(dot, ".html") || !strcasecmp(dot, ".htm") || !strcasecmp(dot, ".xhtml"))
        return "text/html";
    if (!strcasecmp(dot, ".md") || !strcasecmp(dot, ".markdown"))
        return "text/markdown";
    if (!strcasecmp(dot, ".txt") || !strcasecmp(dot, ".text") || !strcasecmp(dot, ".rst"))
        return "text/plain";
    return NULL;
}

typedef struct path_list {
    char **items;
    size_t n, cap;
} path_list;

static void path_add(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
    }
    l->items[l->n++] = strdup(p);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Directories named ".*" or "_*" (VCS data, Sphinx's _sources/_static) are skipped unless
 * --all: they hold copies or assets, not documents. */
static void walk(const char *path, path_list *out, int all, int top)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "rag: %s: %s\n", path, strerror(errno));
        return;
    }
    if (S_ISREG(st.st_mode)) {
        if (top || all || mime_for(path))
            path_add(out, path);
        return;
    }
    if (!S_ISDIR(st.st_mode))
        return;
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "rag: %s: %s\n", path, strerror(errno));
        return;
    }
    struct dirent *e;
    path_list children = {0};
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!all && (e->d_name[0] == '.' || e->d_name[0] == '_'))
            continue;
        char child[PATH_MAX];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        path_add(&children, child);
    }
    closedir(d);
    qsort(children.items, children.n, sizeof *children.items, cmp_str);
    for (size_t i = 0; i < children.n; i++) {
        walk(children.items[i], out, all, 0);
        free(children.items[i]);
    }
    free(children.items);
}

static int wait_searchable(cli *c, progress *p)
{
    if (c->no_wait)
        return 0;
    for (;;) {
        int rc = rag_drain(c->ctx, 200);
        rag_status_info st = {.version = RAG_STATUS_VERSION};
        if (p->tty && rag_status(c->ctx, &st) == 0) {
            uint64_t left = 0;
            for (size_t i = 0; i < st.queue_count; i++)
                left += st.queues[i].ready + st.queues[i].delayed + st.queues[i].inflight;
            fprintf(stderr, "\rindexing: %llu queued, %llu vectors   ", (unsigned long long)left,
                    (unsigned long long)st.vectors);
            fflush(stderr);
        }
        if (rc == RAG_OK)
            break;
        if (rc != RAG_ETIMEOUT)
            return fail(rc, "drain");
        if (interrupted)
            return 1;
    }
    if (p->tty)
        fputc('\n', stderr);
    return 0;
}

static int cmd_ingest_files(cli *c, int argc, char **argv)
{
    path_list files = {0};
    for (int i = 0; i < argc; i++)
        walk(argv[i], &files, c->all_files, 1);
    progress p = {.tty = isatty(2), .start = now_s(), .total = files.n};
    doc_buf *b = calloc(1, sizeof *b);
    int failures = 0, rc = 0;
    for (size_t i = 0; i < files.n && !interrupted && rc == 0; i++) {
        char real[PATH_MAX];
        if (!realpath(files.items[i], real))
            snprintf(real, sizeof real, "%s", files.items[i]);
        size_t len = 0;
        char *data = read_file(files.items[i], &len);
        if (!data) {
            fprintf(stderr, "rag: %s: %s\n", files.items[i], strerror(errno));
            failures++;
            continue;
        }
        size_t k = b->n;
        rag_doc *d = &b->docs[k];
        memset(d, 0, sizeof *d);
        char *uri = malloc(strlen(real) + 8);
        sprintf(uri, "file://%s", real);
        char *key = content_key("cli", real, data, len);
        b->owned[k][0] = data;
        b->owned[k][1] = strdup(real);
        b->owned[k][2] = NULL;
        b->owned[k][3] = uri;
        b->keys[k] = key;
        b->names[k] = files.items[i];
        d->id = b->owned[k][1];
        d->data = data;
        d->size = len;
        d->mime = mime_for(real);
        d->uri = uri;
        d->acl = c->acl_count ? c->acl : NULL;
        d->acl_count = c->acl_count;
        d->idempotency_key = key;
        b->n++;
        b->bytes += len;
        p.bytes += len;
        if (b->n == 64 || b->bytes > (8u << 20))
            rc = flush_docs(c, b, &p, &failures);
    }
    if (rc == 0)
        rc = flush_docs(c, b, &p, &failures);
    progress_show(&p, 1, "ingest");
    if (p.tty)
        fputc('\n', stderr);
    free(b);
    for (size_t i = 0; i < files.n; i++)
        free(files.items[i]);
    free(files.items);
    if (rc == 0 && !interrupted)
        rc = wait_searchable(c, &p);
    fprintf(stderr, "ingested %zu of %zu files in %.1f s%s\n", p.done - p.failed, p.total,
            now_s() - p.start, interrupted ? " (interrupted; run again to resume)" : "");
    if (interrupted)
        return 130;
    return rc ? rc : (failures ? 1 : 0);
}

static int cmd_ingest_jsonl(cli *c)
{
    FILE *f = fopen(c->jsonl, "r");
    if (!f) {
        fprintf(stderr, "rag: %s: %s\n", c->jsonl, strerror(errno));
        return 1;
    }
    progress p = {.tty = isatty(2), .start = now_s()};
    /* Count lines first so the bar knows its total. */
    for (int ch; (ch = fgetc(f)) != EOF;)
        p.total += ch == '\n';
    rewind(f);
    doc_buf *b = calloc(1, sizeof *b);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int failures = 0, rc = 0;
    size_t lineno = 0;
    while (rc == 0 && !interrupted && (got = getline(&line, &cap, f)) > 0) {
        lineno++;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)got, 0, &jerr);
        const char *id = o ? json_string_value(json_object_get(o, "id")) : NULL;
        const char *title = o ? json_string_value(json_object_get(o, "title")) : NULL;
        const char *text = o ? json_string_value(json_object_get(o, "text")) : NULL;
        if (!id || !text) {
            fprintf(stderr, "rag: %s:%zu: not a {\"id\",\"title\",\"text\"} object\n", c->jsonl,
                    lineno);
            failures++;
            p.total--;
            json_decref(o);
            continue;
        }
        /* Title and text are both searchable: the title opens the document's text. */
        size_t tl = title ? strlen(title) : 0, xl = strlen(text);
        char *data = malloc(tl + xl + 3);
        size_t len = 0;
        if (tl) {
            memcpy(data, title, tl);
            memcpy(data + tl, "\n\n", 2);
            len = tl + 2;
        }
        memcpy(data + len, text, xl);
        len += xl;
        size_t k = b->n;
        rag_doc *d = &b->docs[k];
        memset(d, 0, sizeof *d);
        char *key = content_key("cli-jsonl", id, data, len);
        b->owned[k][0] = data;
        b->owned[k][1] = strdup(id);
        b->owned[k][2] = strdup(title ? title : "");
        b->owned[k][3] = NULL;
        b->keys[k] = key;
        b->names[k] = b->owned[k][1];
        d->id = b->owned[k][1];
        d->data = data;
        d->size = len;
        d->mime = "text/plain";
        d->title = b->owned[k][2];
        d->acl = c->acl_count ? c->acl : NULL;
        d->acl_count = c->acl_count;
        d->idempotency_key = key;
        json_decref(o);
        b->n++;
        b->bytes += len;
        p.bytes += len;
        if (b->n == 64 || b->bytes > (8u << 20))
            rc = flush_docs(c, b, &p, &failures);
    }
    free(line);
    fclose(f);
    if (rc == 0)
        rc = flush_docs(c, b, &p, &failures);
    progress_show(&p, 1, "ingest");
    if (p.tty)
        fputc('\n', stderr);
    free(b);
    if (rc == 0 && !interrupted)
        rc = wait_searchable(c, &p);
    fprintf(stderr, "ingested %zu of %zu documents in %.1f s%s\n", p.done - p.failed, p.total,
            now_s() - p.start, interrupted ? " (interrupted; run again to resume)" : "");
    if (interrupted)
        return 130;
    return rc ? rc : (failures ? 1 : 0);
}

/* ---- put / delete ------------------------------------------------------------------------------ */

static int cmd_put(cli *c, int argc, char **argv)
{
    if (argc != 2)
        return usage();
    size_t len = 0;
    char *data = read_file(argv[1], &len);
    if (!data) {
        fprintf(stderr, "rag: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    rag_doc d = {0};
    d.id = argv[0];
    d.data = data;
    d.size = len;
    d.mime = c->mime ? c->mime : mime_for(argv[1]);
    d.title = c->title;
    d.uri = c->uri;
    d.acl = c->acl_count ? c->acl : NULL;
    d.acl_count = c->acl_count;
    d.idempotency_key = c->key;
    uint64_t version = 0;
    int rc = rag_doc_put(c->ctx, &d, &version);
    free(data);
    if (rc)
        return fail(rc, "put");
    printf("%s version %llu\n", argv[0], (unsigned long long)version);
    return wait_unless_no_wait(c);
}

static int cmd_delete(cli *c, int argc, char **argv)
{
    if (argc != 1)
        return usage();
    int rc = rag_doc_delete(c->ctx, argv[0]);
    if (rc)
        return fail(rc, "delete");
    rc = wait_unless_no_wait(c);
    if (rc)
        return rc;
    printf("%s deleted\n", argv[0]);
    return 0;
}

/* ---- search / ask ------------------------------------------------------------------------------ */

static json_t *results_json(const rag_results *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < r->count; i++) {
        const rag_result *h = &r->items[i];
        json_array_append_new(
            arr, json_pack("{s:s, s:I, s:i, s:f, s:s, s:s, s:s}", "doc_id", h->doc_id, "version",
                           (json_int_t)h->version, "chunk", (int)h->chunk, "score",
                           (double)h->score, "text", h->text, "title", h->title, "uri", h->uri));
    }
    return arr;
}

static void print_snippet(const char *text, size_t max)
{
    size_t n = 0;
    for (const char *s = text; *s && n < max; s++, n++)
        putchar(*s == '\n' || *s == '\t' ? ' ' : *s);
    /* finish a cut UTF-8 sequence so the terminal never sees half a character */
    for (const char *s = text + n; *s && ((unsigned char)*s & 0xC0) == 0x80; s++)
        putchar(*s);
    if (strlen(text) > max)
        fputs("...", stdout);
}

static rag_query make_query(cli *c, const char *text)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = c->k;
    q.mode = c->mode;
    if (c->as_count) {
        q.principals = c->as;
        q.principal_count = c->as_count;
    } else {
        q.unrestricted = 1;
    }
    return q;
}

static int search_one(cli *c, const char *text, const char *query_id)
{
    rag_query q = make_query(c, text);
    rag_results *r = NULL;
    int rc = rag_search(c->ctx, &q, &r);
    if (rc)
        return fail(rc, "search");
    if (c->json) {
        json_t *o = json_object();
        if (query_id)
            json_object_set_new(o, "query_id", json_string(query_id));
        else
            json_object_set_new(o, "query", json_string(text));
        json_object_set_new(o, "results", results_json(r));
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        puts(s);
        free(s);
        json_decref(o);
    } else {
        for (size_t i = 0; i < r->count; i++) {
            const rag_result *h = &r->items[i];
            printf("%2zu. %.4f  %s  (v%llu, chunk %u)\n", i + 1, h->score,
                   *h->title ? h->title : h->doc_id, (unsigned long long)h->version, h->chunk);
            printf("    %s\n    ", *h->uri ? h->uri : h->doc_id);
            print_snippet(h->text, 200);
            putchar('\n');
        }
        if (r->count == 0)
            puts("no results");
    }
    rag_results_free(r);
    return 0;
}

static int cmd_search(cli *c, int argc, char **argv)
{
    if (c->jsonl) {
        FILE *f = fopen(c->jsonl, "r");
        if (!f) {
            fprintf(stderr, "rag: %s: %s\n", c->jsonl, strerror(errno));
            return 1;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        int rc = 0;
        c->json = 1;
        while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
            json_error_t jerr;
            json_t *o = json_loadb(line, (size_t)got, 0, &jerr);
            json_t *idv = o ? json_object_get(o, "id") : NULL;
            const char *text = o ? json_string_value(json_object_get(o, "text")) : NULL;
            char idbuf[64];
            const char *id = json_string_value(idv);
            if (!id && json_is_integer(idv)) {
                snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(idv));
                id = idbuf;
            }
            if (!id || !text) {
                json_decref(o);
                continue;
            }
            rc = search_one(c, text, id);
            json_decref(o);
        }
        free(line);
        fclose(f);
        return rc;
    }
    if (argc != 1)
        return usage();
    return search_one(c, argv[0], NULL);
}

static int cmd_ask(cli *c, int argc, char **argv)
{
    if (argc != 1)
        return usage();
    rag_query q = make_query(c, argv[0]);
    rag_results *r = NULL;
    int rc = rag_search(c->ctx, &q, &r);
    if (rc)
        return fail(rc, "search");
    rag_assemble_opts ao = RAG_ASSEMBLE_INIT;
    ao.question = argv[0];
    ao.token_budget = c->budget;
    ao.format = c->json ? RAG_PROMPT_JSON : RAG_PROMPT_TEXT;
    char *prompt = NULL;
    rc = rag_assemble(c->ctx, r, &ao, &prompt);
    rag_results_free(r);
    if (rc)
        return fail(rc, "assemble");
    puts(prompt);
    rag_free(prompt);
    return 0;
}

/* ---- status / drain ----------------------------------------------------------------------------- */

static int cmd_status(cli *c)
{
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    int rc = rag_status(c->ctx, &st);
    if (rc)
        return fail(rc, "status");
    if (c->json) {
        json_t *queues = json_object();
        for (size_t i = 0; i < st.queue_count; i++)
            json_object_set_new(queues, st.queues[i].name,
                                json_pack("{s:I, s:I, s:I, s:I}", "depth",
                                          (json_int_t)(st.queues[i].ready + st.queues[i].delayed +
                                                       st.queues[i].inflight),
                                          "ready", (json_int_t)st.queues[i].ready, "delayed",
                                          (json_int_t)st.queues[i].delayed, "inflight",
                                          (json_int_t)st.queues[i].inflight));
        json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:{s:I, s:I, s:I}}",
                              "documents", (json_int_t)st.documents, "versions",
                              (json_int_t)st.versions, "chunks", (json_int_t)st.chunks,
                              "vectors", (json_int_t)st.vectors, "dead_letters",
                              (json_int_t)st.dead_letters, "index_epoch",
                              (json_int_t)st.index_epoch, "queues", queues, "sagas", "running",
                              (json_int_t)st.sagas_running, "compensating",
                              (json_int_t)st.sagas_compensating, "failed",
                              (json_int_t)st.sagas_failed);
        json_object_set_new(o, "cache", json_pack("{s:I, s:I}", "hits",
                                                  (json_int_t)st.cache_hits, "misses",
                                                  (json_int_t)st.cache_misses));
        json_object_set_new(o, "provider",
                            json_pack("{s:s, s:I, s:I}", "fingerprint", st.provider_fingerprint,
                                      "model_generation", (json_int_t)st.model_generation,
                                      "reembed_pending", (json_int_t)st.reembed_pending));
        char *s = json_dumps(o, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(o);
        return 0;
    }
    printf("documents     %llu\nversions      %llu\nchunks        %llu\nvectors       %llu\n"
           "dead letters  %llu\nindex epoch   %llu\nsagas         %llu running, %llu "
           "compensating, %llu failed\ncache         %llu hits, %llu misses "
           "(%.0f%% hit rate)\n",
           (unsigned long long)st.documents, (unsigned long long)st.versions,
           (unsigned long long)st.chunks, (unsigned long long)st.vectors,
           (unsigned long long)st.dead_letters, (unsigned long long)st.index_epoch,
           (unsigned long long)st.sagas_running, (unsigned long long)st.sagas_compensating,
           (unsigned long long)st.sagas_failed, (unsigned long long)st.cache_hits,
           (unsigned long long)st.cache_misses,
           st.cache_hits + st.cache_misses
               ? 100.0 * (double)st.cache_hits / (double)(st.cache_hits + st.cache_misses)
               : 0.0);
    printf("provider      %s (model generation %llu",
           *st.provider_fingerprint ? st.provider_fingerprint : "in the embed workers",
           (unsigned long long)st.model_generation);
    if (st.reembed_pending)
        printf("; re-embed: %llu chunks still without a vector", (unsigned long long)st.reembed_pending);
    puts(")");
    puts("queues:");
    for (size_t i = 0; i < st.queue_count; i++)
        printf("  %-16s ready %llu  delayed %llu  inflight %llu\n", st.queues[i].name,
               (unsigned long long)st.queues[i].ready, (unsigned long long)st.queues[i].delayed,
               (unsigned long long)st.queues[i].inflight);
    return 0;
}

static int cmd_drain(cli *c)
{
    int rc = rag_drain(c->ctx, c->timeout_ms);
    if (rc)
        return fail(rc, "drain");
    return 0;
}

/* ---- dead letters ------------------------------------------------------------------------------ */

static void print_time_utc(uint64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, size, "%llu", (unsigned long long)ms);
}

static int cmd_dlq(cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage();
    const char *sub = argv[0];
    if (!strcmp(sub, "list")) {
        if (argc != 1)
            return usage();
        rag_dead_letter_info *dl = NULL;
        size_t n = 0;
        int rc = rag_dlq_list(c->ctx, &dl, &n);
        if (rc)
            return fail(rc, "dlq list");
        if (c->json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(
                    arr, json_pack("{s:s, s:s, s:s, s:i, s:s, s:I, s:I, s:s, s:s, s:I}", "id",
                                   dl[i].id, "topic", dl[i].topic, "module", dl[i].module,
                                   "code", dl[i].code, "error", rag_strerror(dl[i].code),
                                   "attempts", (json_int_t)dl[i].attempts, "when_ms",
                                   (json_int_t)dl[i].when_ms, "reason", dl[i].reason, "doc_id",
                                   dl[i].doc_id, "version", (json_int_t)dl[i].version));
            char *s = json_dumps(arr, JSON_COMPACT);
            puts(s ? s : "[]");
            free(s);
            json_decref(arr);
        } else if (n == 0) {
            puts("no dead letters");
        } else {
            for (size_t i = 0; i < n; i++) {
                char when[32];
                print_time_utc(dl[i].when_ms, when, sizeof when);
                printf("%s  %s  %s  %s@%llu  %s  attempts %u  %s\n    %s\n", dl[i].id,
                       dl[i].module, dl[i].topic, dl[i].doc_id[0] ? dl[i].doc_id : "?",
                       (unsigned long long)dl[i].version, rag_strerror(dl[i].code),
                       (unsigned)dl[i].attempts, when, dl[i].reason);
            }
        }
        rag_free(dl);
        return 0;
    }
    if (!strcmp(sub, "retry")) {
        if (argc != 2)
            return usage();
        int rc = rag_dlq_retry(c->ctx, argv[1]);
        if (rc)
            return fail(rc, "dlq retry");
        rc = wait_unless_no_wait(c);
        if (rc)
            return rc;
        printf("%s requeued\n", argv[1]);
        return 0;
    }
    if (!strcmp(sub, "drop")) {
        if (argc != 2)
            return usage();
        int rc = rag_dlq_drop(c->ctx, argv[1]);
        if (rc)
            return fail(rc, "dlq drop");
        printf("%s dropped\n", argv[1]);
        return 0;
    }
    return usage();
}

/* ---- fsck and trace ---------------------------------------------------------------------------- */

static int cmd_fsck(cli *c)
{
    rag_fsck_report *rep = NULL;
    uint32_t timeout = c->timeout_ms ? c->timeout_ms : 60000u;
    int rc = rag_fsck(c->ctx, c->repair ? RAG_FSCK_REPAIR : 0, timeout, &rep);
    if (rc)
        return fail(rc, "fsck");
    size_t unrepaired = 0;
    for (size_t i = 0; i < rep->count; i++)
        unrepaired += !rep->issues[i].repaired;
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < rep->count; i++) {
            const rag_fsck_issue *is = &rep->issues[i];
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:I, s:I, s:b, s:s}", "kind",
                               rag_fsck_kind_name(is->kind), "doc_id", is->doc_id, "version",
                               (json_int_t)is->version, "label", (json_int_t)is->label,
                               "repaired", is->repaired, "detail", is->detail));
        }
        json_t *o = json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:o}", "clean", rep->count == 0,
                              "drained", rep->drained, "documents_checked",
                              (json_int_t)rep->documents_checked, "labels_checked",
                              (json_int_t)rep->labels_checked, "sagas_checked",
                              (json_int_t)rep->sagas_checked, "issues", (json_int_t)rep->count,
                              "findings", arr);
        char *s = json_dumps(o, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(o);
    } else {
        for (size_t i = 0; i < rep->count; i++) {
            const rag_fsck_issue *is = &rep->issues[i];
            char where[RAG_DOC_ID_MAX + 32];
            if (is->version)
                snprintf(where, sizeof where, "%s@%llu", is->doc_id,
                         (unsigned long long)is->version);
            else
                snprintf(where, sizeof where, "%s", is->doc_id[0] ? is->doc_id : "-");
            printf("%-17s %s  %s%s\n", rag_fsck_kind_name(is->kind), where, is->detail,
                   is->repaired ? "  [repaired]" : "");
        }
        printf("fsck: %llu documents, %llu labels, %llu sagas checked: %s\n",
               (unsigned long long)rep->documents_checked,
               (unsigned long long)rep->labels_checked, (unsigned long long)rep->sagas_checked,
               rep->count == 0 ? "clean"
               : unrepaired ? "inconsistencies found"
                            : "inconsistencies repaired (run again to confirm)");
    }
    rag_fsck_report_free(rep);
    return unrepaired ? 3 : 0;
}

static int cmd_trace(cli *c, int argc, char **argv)
{
    if (argc != 1)
        return usage();
    rag_trace_info *t = NULL;
    int rc = rag_trace(c->ctx, argv[0], &t);
    if (rc)
        return fail(rc, "trace");
    if (c->json) {
        json_t *steps = json_array();
        for (size_t i = 0; i < t->step_count; i++) {
            const rag_trace_step *st = &t->steps[i];
            json_array_append_new(steps, json_pack("{s:s, s:s, s:I, s:i, s:i, s:s}", "module",
                                                   st->module, "event", st->event, "at_ms",
                                                   (json_int_t)st->at_ms, "attempts",
                                                   (int)st->attempts, "code", st->code,
                                                   "status", rag_strerror(st->code)));
        }
        json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:i, s:s, s:o}",
                              "doc_id", t->doc_id, "version", (json_int_t)t->version, "kind",
                              t->kind, "state", t->state, "active_version",
                              (json_int_t)t->active_version, "deleted", t->deleted,
                              "started_ms", (json_int_t)t->started_ms, "updated_ms",
                              (json_int_t)t->updated_ms, "deadline_ms",
                              (json_int_t)t->deadline_ms, "code", t->code, "reason", t->reason,
                              "steps", steps);
        char *s = json_dumps(o, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s: %s of version %llu, %s; active version %llu%s\n", t->doc_id, t->kind,
               (unsigned long long)t->version, t->state, (unsigned long long)t->active_version,
               t->deleted ? " (deleted)" : "");
        if (t->reason[0])
            printf("  %s%s%s\n", t->code ? rag_strerror(t->code) : "", t->code ? ": " : "",
                   t->reason);
        uint64_t t0 = t->step_count ? t->steps[0].at_ms : 0;
        for (size_t i = 0; i < t->step_count; i++) {
            const rag_trace_step *st = &t->steps[i];
            char when[32];
            print_time_utc(st->at_ms, when, sizeof when);
            printf("  %s +%6llu ms  %-7s %-13s attempt %u  %s\n", when,
                   (unsigned long long)(st->at_ms - t0), st->module, st->event, st->attempts,
                   st->code ? rag_strerror(st->code) : "ok");
        }
    }
    rag_trace_free(t);
    return 0;
}

/* ---- eval -------------------------------------------------------------------------------------- */

/*
 * Retrieval quality against relevance judgements, the BEIR way: results are reduced to
 * documents in rank order (a document's best chunk counts), nDCG@10 uses the judged score as
 * a linear gain with a log2 discount and the ideal ranking of the judged documents, recall@N
 * is the share of relevant documents among the first N, and queries without a positive
 * judgement are left out of the averages.
 */

/* nDCG@10 looks at the first 10 documents of a search for this many chunks ... */
#define EVAL_NDCG_DEPTH 10
#define EVAL_NDCG_SEARCH_K 100
/* ... and recall@N at the first N documents of a search for N * EVAL_RECALL_CHUNKS_PER_DOC
 * chunks (capped by the API's k maximum): documents have several chunks, so N chunks cover
 * fewer than N documents. */
#define EVAL_RECALL_CHUNKS_PER_DOC 10
#define EVAL_K_MAX 1000

/* log2(rank + 1) for ranks 1..10, the nDCG discount (a table: the tool does not link libm). */
static const double eval_log2[EVAL_NDCG_DEPTH] = {
    1.0, 1.584962500721156, 2.0, 2.321928094887362, 2.584962500721156,
    2.807354922057604, 3.0, 3.169925001442312, 3.321928094887362, 3.459431618637297};

typedef struct eval_qrel {
    char *qid, *did;
    double gain;
} eval_qrel;

typedef struct eval_query {
    char *id, *text;
    size_t rel_lo, rel_hi; /* its judgements: qrels[rel_lo, rel_hi), sorted by document id */
    size_t relevant;       /* judgements with a positive gain */
} eval_query;

typedef struct eval_set {
    eval_query *q;
    size_t nq;
    eval_qrel *r;
    size_t nr;
} eval_set;

static void eval_set_free(eval_set *e)
{
    for (size_t i = 0; i < e->nq; i++) {
        free(e->q[i].id);
        free(e->q[i].text);
    }
    for (size_t i = 0; i < e->nr; i++) {
        free(e->r[i].qid);
        free(e->r[i].did);
    }
    free(e->q);
    free(e->r);
    memset(e, 0, sizeof *e);
}

/* A JSON id as text: BEIR files use strings, other exports plain integers. */
static const char *json_id(json_t *v, char *buf, size_t size)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

static int eval_load_queries(eval_set *e, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "rag: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0, have = 0;
    ssize_t got;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)got)
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)got, 0, &jerr);
        char idbuf[32];
        const char *id = o ? json_id(json_object_get(o, "id"), idbuf, sizeof idbuf) : NULL;
        const char *text = o ? json_string_value(json_object_get(o, "text")) : NULL;
        if (!id || !text) {
            fprintf(stderr, "rag: %s:%zu: not an {\"id\",\"text\"} object\n", path, lineno);
            rc = 1;
        } else {
            if (e->nq == have) {
                have = have ? have * 2 : 256;
                eval_query *p = realloc(e->q, have * sizeof *p);
                if (!p) {
                    json_decref(o);
                    rc = 1;
                    break;
                }
                e->q = p;
            }
            eval_query *q = &e->q[e->nq++];
            memset(q, 0, sizeof *q);
            q->id = strdup(id);
            q->text = strdup(text);
            if (!q->id || !q->text)
                rc = 1;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

static int cmp_qrel(const void *a, const void *b)
{
    const eval_qrel *x = a, *y = b;
    int c = strcmp(x->qid, y->qid);
    return c ? c : strcmp(x->did, y->did);
}

/* TREC/BEIR qrels: query id, document id, score, separated by tabs or blanks; a first line
 * whose score is not a number (BEIR's "query-id corpus-id score") is a header.  The 4-column
 * TREC form (query, iteration, document, score) is accepted too. */
static int eval_load_qrels(eval_set *e, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "rag: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0, have = 0;
    ssize_t got;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
        lineno++;
        char *field[5];
        size_t nf = 0;
        for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok && nf < 5;
             tok = strtok_r(NULL, " \t\r\n", &save))
            field[nf++] = tok;
        if (nf == 0)
            continue;
        if (nf != 3 && nf != 4) {
            fprintf(stderr, "rag: %s:%zu: expected query-id, doc-id, score\n", path, lineno);
            rc = 1;
            break;
        }
        char *end;
        double gain = strtod(field[nf - 1], &end);
        if (*end || end == field[nf - 1]) {
            if (lineno == 1)
                continue; /* header */
            fprintf(stderr, "rag: %s:%zu: score %s is not a number\n", path, lineno,
                    field[nf - 1]);
            rc = 1;
            break;
        }
        if (e->nr == have) {
            have = have ? have * 2 : 1024;
            eval_qrel *p = realloc(e->r, have * sizeof *p);
            if (!p) {
                rc = 1;
                break;
            }
            e->r = p;
        }
        eval_qrel *r = &e->r[e->nr++];
        r->qid = strdup(field[0]);
        r->did = strdup(field[nf - 2]);
        r->gain = gain;
        if (!r->qid || !r->did)
            rc = 1;
    }
    free(line);
    fclose(f);
    if (rc == 0 && e->nr)
        qsort(e->r, e->nr, sizeof *e->r, cmp_qrel);
    return rc;
}

/* Attach each query's judgements (a binary search into the sorted qrels). */
static void eval_link(eval_set *e)
{
    for (size_t i = 0; i < e->nq; i++) {
        eval_query *q = &e->q[i];
        size_t lo = 0, hi = e->nr;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(e->r[mid].qid, q->id) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        q->rel_lo = q->rel_hi = lo;
        while (q->rel_hi < e->nr && !strcmp(e->r[q->rel_hi].qid, q->id)) {
            q->relevant += e->r[q->rel_hi].gain > 0;
            q->rel_hi++;
        }
    }
}

static double eval_gain(const eval_set *e, const eval_query *q, const char *did)
{
    size_t lo = q->rel_lo, hi = q->rel_hi;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(e->r[mid].did, did);
        if (c == 0)
            return e->r[mid].gain;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0.0;
}

/* Document ids of `r` in rank order, each once; `out` borrows from `r`. */
static size_t eval_distinct(const rag_results *r, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->count && n < max; i++) {
        size_t j = 0;
        while (j < n && strcmp(out[j], r->items[i].doc_id))
            j++;
        if (j == n)
            out[n++] = r->items[i].doc_id;
    }
    return n;
}

static int cmp_double_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

typedef struct eval_score {
    double ndcg, recall, ms_per_query;
    size_t judged;
} eval_score;

static int eval_mode(cli *c, const eval_set *e, rag_search_mode mode, size_t depth,
                     eval_score *out)
{
    size_t recall_k = depth * EVAL_RECALL_CHUNKS_PER_DOC;
    if (recall_k > EVAL_K_MAX)
        recall_k = EVAL_K_MAX;
    if (recall_k < EVAL_NDCG_SEARCH_K)
        recall_k = EVAL_NDCG_SEARCH_K;
    const char **top = malloc((depth > EVAL_NDCG_DEPTH ? depth : EVAL_NDCG_DEPTH) * sizeof *top);
    double *ideal = malloc((e->nr + 1) * sizeof *ideal);
    double ndcg = 0, recall = 0, secs = 0;
    size_t judged = 0, searches = 0;
    if (!top || !ideal) {
        free(top);
        free(ideal);
        return RAG_ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < e->nq && rc == 0 && !interrupted; i++) {
        const eval_query *q = &e->q[i];
        if (q->relevant == 0)
            continue;
        judged++;
        rag_query rq = make_query(c, q->text);
        rq.mode = mode;
        rag_results *r = NULL;
        double t0 = now_s();
        rq.k = EVAL_NDCG_SEARCH_K;
        rc = rag_search(c->ctx, &rq, &r);
        secs += now_s() - t0;
        searches++;
        if (rc)
            break;
        size_t n = eval_distinct(r, top, EVAL_NDCG_DEPTH);
        double dcg = 0, idcg = 0;
        for (size_t j = 0; j < n; j++)
            dcg += eval_gain(e, q, top[j]) / eval_log2[j];
        size_t ni = 0;
        for (size_t j = q->rel_lo; j < q->rel_hi; j++)
            if (e->r[j].gain > 0)
                ideal[ni++] = e->r[j].gain;
        qsort(ideal, ni, sizeof *ideal, cmp_double_desc);
        for (size_t j = 0; j < ni && j < EVAL_NDCG_DEPTH; j++)
            idcg += ideal[j] / eval_log2[j];
        ndcg += dcg / idcg;
        rag_results_free(r);
        r = NULL;

        rq.k = recall_k;
        t0 = now_s();
        rc = rag_search(c->ctx, &rq, &r);
        secs += now_s() - t0;
        searches++;
        if (rc)
            break;
        n = eval_distinct(r, top, depth);
        size_t hit = 0;
        for (size_t j = 0; j < n; j++)
            hit += eval_gain(e, q, top[j]) > 0;
        recall += (double)hit / (double)q->relevant;
        rag_results_free(r);
    }
    free(top);
    free(ideal);
    if (rc)
        return rc;
    out->judged = judged;
    out->ndcg = judged ? ndcg / (double)judged : 0.0;
    out->recall = judged ? recall / (double)judged : 0.0;
    out->ms_per_query = searches ? secs * 1e3 / (double)searches : 0.0;
    return 0;
}

static const char *mode_name(rag_search_mode m)
{
    switch (m) {
    case RAG_MODE_VECTOR:
        return "vector";
    case RAG_MODE_LEXICAL:
        return "lexical";
    case RAG_MODE_HYBRID:
        return "hybrid";
    default:
        return "default";
    }
}

static int cmd_eval(cli *c, int argc)
{
    if (argc != 0 || !c->docs || !c->queries || !c->qrels) {
        fputs("rag: eval needs --docs D.jsonl --queries Q.jsonl --qrels R.tsv\n", stderr);
        return 2;
    }
    size_t depth = c->k_set ? c->k : 100;
    if (depth > EVAL_K_MAX) {
        fprintf(stderr, "rag: eval: -k is at most %d\n", EVAL_K_MAX);
        return 2;
    }
    eval_set e;
    memset(&e, 0, sizeof e);
    /* Read the judgements before ingesting, so that a typo costs nothing. */
    if (eval_load_queries(&e, c->queries) || eval_load_qrels(&e, c->qrels)) {
        eval_set_free(&e);
        return 1;
    }
    eval_link(&e);
    size_t judged = 0;
    for (size_t i = 0; i < e.nq; i++)
        judged += e.q[i].relevant > 0;
    if (judged == 0) {
        fprintf(stderr, "rag: eval: no query of %s has a positive judgement in %s\n", c->queries,
                c->qrels);
        eval_set_free(&e);
        return 1;
    }

    /* Ingest exactly as `ingest --jsonl` does (same content idempotency keys), so documents
     * already stored unchanged, by an earlier eval or ingest, are skipped, and a changed
     * document becomes a new version. */
    int ingest_rc = rag_start(c->ctx);
    if (ingest_rc) {
        eval_set_free(&e);
        return fail(ingest_rc, "start");
    }
    c->jsonl = c->docs;
    c->no_wait = 0;
    ingest_rc = cmd_ingest_jsonl(c);
    if (interrupted || ingest_rc == 130) {
        eval_set_free(&e);
        return 130;
    }
    if (ingest_rc)
        fprintf(stderr, "rag: eval: ingest reported errors (above); documents that failed "
                        "count as never retrieved\n");
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    if (rag_status(c->ctx, &st) == RAG_OK)
        fprintf(stderr, "eval: %llu documents, %llu chunks; %zu queries, %zu judged\n",
                (unsigned long long)st.documents, (unsigned long long)st.chunks, e.nq, judged);

    rag_search_mode modes[3] = {c->mode};
    size_t nmodes = 1;
    if (c->mode_all) {
        modes[0] = RAG_MODE_VECTOR;
        modes[1] = RAG_MODE_LEXICAL;
        modes[2] = RAG_MODE_HYBRID;
        nmodes = 3;
    }
    int rc = 0;
    char rhead[24];
    snprintf(rhead, sizeof rhead, "recall@%zu", depth);
    if (!c->json)
        printf("%-8s %8s %10s %8s %10s\n", "mode", "nDCG@10", rhead, "judged", "ms/search");
    for (size_t m = 0; m < nmodes && rc == 0; m++) {
        eval_score sc;
        memset(&sc, 0, sizeof sc);
        int src = eval_mode(c, &e, modes[m], depth, &sc);
        if (interrupted) {
            rc = 130;
            break;
        }
        if (src) {
            /* --mode all goes on past a mode this build lacks */
            fail(src, mode_name(modes[m]));
            if (!(c->mode_all && src == RAG_EUNSUPPORTED))
                rc = 1;
            continue;
        }
        if (c->json) {
            json_t *o = json_pack("{s:s, s:f, s:f, s:I, s:I, s:I, s:f}", "mode",
                                  mode_name(modes[m]), "ndcg_at_10", sc.ndcg, "recall_at_k",
                                  sc.recall, "k", (json_int_t)depth, "judged",
                                  (json_int_t)sc.judged, "queries", (json_int_t)e.nq,
                                  "ms_per_search", sc.ms_per_query);
            char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            puts(s);
            free(s);
            json_decref(o);
        } else {
            printf("%-8s %8.4f %10.4f %8zu %10.2f\n", mode_name(modes[m]), sc.ndcg, sc.recall,
                   sc.judged, sc.ms_per_query);
        }
    }
    eval_set_free(&e);
    if (rc)
        return rc;
    return ingest_rc ? 1 : 0;
}

/* ---- main -------------------------------------------------------------------------------------- */

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s)
        return -1;
    *out = (size_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    rag_options_init(&c.opts);
    c.root = getenv("RAG_ROOT");
    c.k = 10;
    c.budget = 2048;
    rag_embed_remote_options ro = RAG_EMBED_REMOTE_OPTIONS_INIT;
    c.remote = ro;
    rag_queue_nats_options no = RAG_QUEUE_NATS_OPTIONS_INIT;
    c.nats = no;
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Options may appear anywhere; the first non-option word is the command. */
    const char *cmd = NULL;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int nargs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_ARG()                                                                               \
    do {                                                                                         \
        if (!next) {                                                                             \
            fprintf(stderr, "rag: %s needs a value\n", a);                                     \
            free(args);                                                                          \
            return 2;                                                                            \
        }                                                                                        \
        i++;                                                                                     \
    } while (0)
        if (!strcmp(a, "--version")) {
            printf("rag %s (librag %s)\n", RAG_VERSION_STRING, rag_version_string());
            free(args);
            return 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            free(args);
            usage();
            return 0;
        } else if (!strcmp(a, "--root")) {
            NEED_ARG();
            c.root = next;
        } else if (!strcmp(a, "--no-sync")) {
            c.opts.no_sync = 1;
        } else if (!strcmp(a, "--log-level")) {
            NEED_ARG();
            int level = parse_log_level(next);
            if (!level) {
                fprintf(stderr, "rag: --log-level %s: use error, warn, info or debug\n", next);
                free(args);
                return 2;
            }
            rag_log_set(log_to_stderr, NULL, level);
        } else if (!strcmp(a, "--reembed")) {
            c.opts.reembed = 1;
        } else if (string_option(&c, a)) {
            NEED_ARG();
            *string_option(&c, a) = next;
        } else if (!strcmp(a, "--transport-ack-wait")) {
            NEED_ARG();
            size_t v = 0;
            if (parse_size(next, &v) || v < 100 || v > 86400000) {
                fprintf(stderr, "rag: --transport-ack-wait needs milliseconds (100..86400000)\n");
                free(args);
                return 2;
            }
            c.nats.ack_wait_ms = (unsigned int)v;
        } else if (!strcmp(a, "--modules")) {
            NEED_ARG();
            if (parse_modules(next, &c.opts.modules)) {
                fprintf(stderr, "rag: --modules is a comma-separated list of ingest, embed, "
                                "index, retrieve (or all)\n");
                free(args);
                return 2;
            }
        } else if (!strcmp(a, "--dim") || !strcmp(a, "--remote-dim") ||
                   !strcmp(a, "--remote-batch")) {
            NEED_ARG();
            size_t v = 0;
            if (parse_size(next, &v) || v == 0 || v > 65536) {
                fprintf(stderr, "rag: %s needs a number in 1..65536\n", a);
                free(args);
                return 2;
            }
            if (!strcmp(a, "--dim"))
                c.dim = (unsigned int)v;
            else if (!strcmp(a, "--remote-dim"))
                c.remote.dim = (unsigned int)v;
            else
                c.remote.batch_size = v;
        } else if (!strcmp(a, "--hybrid-weight") || !strcmp(a, "--bm25-k1") ||
                   !strcmp(a, "--bm25-b")) {
            NEED_ARG();
            char *end = NULL;
            float v = strtof(next, &end);
            if (!end || *end || v < 0 || v > 10) {
                fprintf(stderr, "rag: %s needs a number\n", a);
                free(args);
                return 2;
            }
            /* 0 means "the default" in rag_options: an explicit 0 weight is a tiny one */
            if (!strcmp(a, "--hybrid-weight"))
                c.opts.hybrid_lexical_weight = v > 0 ? v : -1.0f;
            else if (!strcmp(a, "--bm25-k1"))
                c.opts.bm25_k1 = v;
            else
                c.opts.bm25_b = v > 0 ? v : -1.0f;
        } else if (!strcmp(a, "-k")) {
            NEED_ARG();
            if (parse_size(next, &c.k) || c.k == 0) {
                fprintf(stderr, "rag: -k needs a positive number\n");
                free(args);
                return 2;
            }
            c.k_set = 1;
        } else if (!strcmp(a, "--budget")) {
            NEED_ARG();
            if (parse_size(next, &c.budget) || c.budget == 0) {
                fprintf(stderr, "rag: --budget needs a positive number\n");
                free(args);
                return 2;
            }
        } else if (!strcmp(a, "--timeout")) {
            NEED_ARG();
            size_t t;
            if (parse_size(next, &t)) {
                fprintf(stderr, "rag: --timeout needs milliseconds\n");
                free(args);
                return 2;
            }
            c.timeout_ms = (uint32_t)t;
        } else if (!strcmp(a, "--json")) {
            c.json = 1;
        } else if (!strcmp(a, "--repair")) {
            c.repair = 1;
        } else if (!strcmp(a, "--no-wait")) {
            c.no_wait = 1;
        } else if (!strcmp(a, "--all")) {
            c.all_files = 1;
        } else if (!strcmp(a, "--jsonl")) {
            NEED_ARG();
            c.jsonl = next;
        } else if (!strcmp(a, "--acl")) {
            NEED_ARG();
            free(c.acl_buf);
            c.acl_buf = strdup(next);
            c.acl_count = split_list(c.acl_buf, c.acl, 64);
        } else if (!strcmp(a, "--as")) {
            NEED_ARG();
            free(c.as_buf);
            c.as_buf = strdup(next);
            c.as_count = split_list(c.as_buf, c.as, 64);
        } else if (!strcmp(a, "--docs")) {
            NEED_ARG();
            c.docs = next;
        } else if (!strcmp(a, "--queries")) {
            NEED_ARG();
            c.queries = next;
        } else if (!strcmp(a, "--qrels")) {
            NEED_ARG();
            c.qrels = next;
        } else if (!strcmp(a, "--mime")) {
            NEED_ARG();
            c.mime = next;
        } else if (!strcmp(a, "--title")) {
            NEED_ARG();
            c.title = next;
        } else if (!strcmp(a, "--uri")) {
            NEED_ARG();
            c.uri = next;
        } else if (!strcmp(a, "--key")) {
            NEED_ARG();
            c.key = next;
        } else if (!strcmp(a, "--mode")) {
            NEED_ARG();
            if (!strcmp(next, "vector"))
                c.mode = RAG_MODE_VECTOR;
            else if (!strcmp(next, "lexical"))
                c.mode = RAG_MODE_LEXICAL;
            else if (!strcmp(next, "hybrid"))
                c.mode = RAG_MODE_HYBRID;
            else if (!strcmp(next, "default"))
                c.mode = RAG_MODE_DEFAULT;
            else if (!strcmp(next, "all"))
                c.mode_all = 1; /* eval only; checked once the command is known */
            else {
                fprintf(stderr, "rag: --mode is vector, lexical, hybrid, default (or all for "
                                "eval)\n");
                free(args);
                return 2;
            }
        } else if (a[0] == '-' && a[1] && !cmd) {
            fprintf(stderr, "rag: unknown option %s\n", a);
            free(args);
            return usage();
        } else if (!cmd) {
            cmd = a;
        } else {
            args[nargs++] = argv[i];
        }
#undef NEED_ARG
    }
    if (!cmd) {
        free(args);
        return usage();
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int known = !strcmp(cmd, "ingest") || !strcmp(cmd, "put") || !strcmp(cmd, "delete") ||
                !strcmp(cmd, "search") || !strcmp(cmd, "ask") || !strcmp(cmd, "status") ||
                !strcmp(cmd, "drain") || !strcmp(cmd, "dlq") || !strcmp(cmd, "fsck") ||
                !strcmp(cmd, "trace") || !strcmp(cmd, "eval") || !strcmp(cmd, "serve") ||
                !strcmp(cmd, "backup") || !strcmp(cmd, "restore") || !strcmp(cmd, "metrics");
    if (!known) {
        fprintf(stderr, "rag: unknown command %s\n", cmd);
        free(args);
        return usage();
    }
    if (c.mode_all && strcmp(cmd, "eval")) {
        fputs("rag: --mode all is for eval only\n", stderr);
        free(args);
        return 2;
    }
    if (!strcmp(cmd, "dlq") &&
        (nargs < 1 || (strcmp(args[0], "list") && strcmp(args[0], "retry") &&
                       strcmp(args[0], "drop")))) {
        /* checked before rag_open, which would create a missing root */
        if (nargs >= 1)
            fprintf(stderr, "rag: unknown dlq command %s (list, retry or drop)\n", args[0]);
        free(args);
        return usage();
    }
    if (!strcmp(cmd, "restore")) {
        /* the root does not exist yet: rag_restore creates, opens, repairs and closes it */
        int rrc = 2;
        if (nargs != 1 || !c.root) {
            fputs("rag: restore needs --root DIR (empty) and the backup directory\n", stderr);
        } else {
            rag_embed_provider p;
            int have = 0;
            rrc = make_provider(&c, &p, &have);
            if (!rrc) {
                c.opts.provider = have ? &p : NULL;
                size_t found = 0;
                int e = rag_restore(args[0], c.root, &c.opts, &found);
                c.opts.provider = NULL;
                if (e)
                    rrc = fail(e, "restore");
                else
                    printf("restored %s into %s (%zu inconsistencies between modules "
                           "repaired)\n",
                           args[0], c.root, found);
            }
        }
        free(args);
        return rrc;
    }
    int rc = open_ctx(&c);
    if (rc) {
        free(args);
        return rc;
    }
    if (!strcmp(cmd, "ingest")) {
        /* Workers embed and index while this thread parses: both cores busy. */
        rc = rag_start(c.ctx);
        if (rc)
            rc = fail(rc, "start");
        else if (c.jsonl)
            rc = cmd_ingest_jsonl(&c);
        else if (nargs == 0)
            rc = usage();
        else
            rc = cmd_ingest_files(&c, nargs, args);
    } else if (!strcmp(cmd, "put")) {
        rc = cmd_put(&c, nargs, args);
    } else if (!strcmp(cmd, "delete")) {
        rc = cmd_delete(&c, nargs, args);
    } else if (!strcmp(cmd, "search")) {
        rc = cmd_search(&c, nargs, args);
    } else if (!strcmp(cmd, "ask")) {
        rc = cmd_ask(&c, nargs, args);
    } else if (!strcmp(cmd, "status")) {
        rc = cmd_status(&c);
    } else if (!strcmp(cmd, "metrics")) {
        char *text = NULL;
        rc = rag_metrics_text(c.ctx, &text);
        if (rc) {
            rc = fail(rc, "metrics");
        } else {
            fputs(text, stdout);
            rag_free(text);
        }
    } else if (!strcmp(cmd, "drain")) {
        rc = cmd_drain(&c);
    } else if (!strcmp(cmd, "dlq")) {
        rc = cmd_dlq(&c, nargs, args);
    } else if (!strcmp(cmd, "fsck")) {
        rc = cmd_fsck(&c);
    } else if (!strcmp(cmd, "trace")) {
        rc = cmd_trace(&c, nargs, args);
    } else if (!strcmp(cmd, "eval")) {
        rc = cmd_eval(&c, nargs);
    } else if (!strcmp(cmd, "serve")) {
        rc = cmd_serve(&c);
    } else if (!strcmp(cmd, "backup")) {
        if (nargs != 1) {
            rc = usage();
        } else {
            rc = rag_backup(c.ctx, args[0]);
            if (rc)
                rc = fail(rc, "backup");
            else
                printf("backed up %s to %s\n", c.root, args[0]);
        }
    }
    rag_close(c.ctx);
    rag_log_set(NULL, NULL, 0);
    free(c.acl_buf);
    free(c.as_buf);
    free(args);
    return rc;
}
