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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define NDOCS 20
#define ROOTS 4
#define CYCLES_PER_ROOT 52 /* 4 x 52 = 208 kill cycles */
#define CHILD_MAX_OPS 100000
#define MAX_HITS 1000
#define MAX_CHUNKS 64
#define TOKEN_LEN 14 /* "t" + 12 hex digits + NUL */
#define TEXT_MAX 2048

/* ---- deterministic randomness and texts ------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return mix64(*s);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *const words[] = {
    "ledger", "harbor",  "copper", "meadow", "signal",  "orchard", "granite", "violet",
    "compass", "lantern", "thunder", "willow", "quartz", "falcon",  "pepper",  "canyon",
    "glacier", "saffron", "beacon", "marble", "ember",   "juniper", "cobalt",  "tundra"};
#define NWORDS (sizeof words / sizeof words[0])

/* The content of the version whose put carried `token`: 1..10 sentences, every one of them
 * naming the token, so any chunk can be attributed to its version.  One paragraph of ASCII
 * with single spaces: chunk texts are then exact substrings of it. */
static size_t gen_text(const char *token, char *out, size_t cap)
{
    uint64_t s = fnv1a(token);
    int sentences = 1 + (int)(rnd(&s) % 10);
    size_t len = (size_t)snprintf(out, cap, "Record %s opens here.", token);
    for (int i = 0; i < sentences && len < cap; i++) {
        len += (size_t)snprintf(out + len, cap - len,
                                " The %s %s beside the %s %s keeps %s part %d.",
                                words[rnd(&s) % NWORDS], words[rnd(&s) % NWORDS],
                                words[rnd(&s) % NWORDS], words[rnd(&s) % NWORDS], token, i);
    }
    return len;
}

static void doc_name(char *buf, size_t n, int doc) { snprintf(buf, n, "doc-%02d", doc); }

static int doc_index(const char *id)
{
    if (strncmp(id, "doc-", 4) != 0)
        return -1;
    char *end = NULL;
    long v = strtol(id + 4, &end, 10);
    return (*end || v < 0 || v >= NDOCS) ? -1 : (int)v;
}

static void harness_options(rag_options *o, int no_sync)
{
    rag_options_init(o);
    o->no_sync = no_sync;
    o->embed_dim = 64;      /* small vectors: the test is about lifecycle, not quality */
    o->chunk_target = 200;  /* small chunks: most versions have several */
    o->chunk_min = 64;
    o->chunk_max = 400;
    o->retry_base_ms = 1;
    o->retry_cap_ms = 20;
}

/* ---- enumeration: one search that returns every live chunk ------------------------------ */

typedef struct hit {
    int doc;
    uint64_t version;
    uint32_t chunk;
    char *text;
} hit;

typedef struct hits {
    size_t n;
    hit h[MAX_HITS];
} hits;

static void hits_clear(hits *hs)
{
    for (size_t i = 0; i < hs->n; i++)
        free(hs->h[i].text);
    hs->n = 0;
}

/* Fills `hs`; on failure writes why into `why` and returns the error code (or RAG_ERROR for a
 * foreign id or too many results). */
static int enumerate(rag_ctx *ctx, hits *hs, char *why, size_t wl)
{
    hs->n = 0;
    rag_query q = RAG_QUERY_INIT;
    q.text = "record part keeps beside";
    q.k = MAX_HITS;
    q.unrestricted = 1;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc) {
        snprintf(why, wl, "rag_search: %s (%s)", rag_strerror(rc), rag_error_last());
        return rc;
    }
    if (r->count >= MAX_HITS) {
        snprintf(why, wl, "search returned %zu results: the index holds more than expected",
                 r->count);
        rag_results_free(r);
        return RAG_ERROR;
    }
    for (size_t i = 0; i < r->count; i++) {
        int d = doc_index(r->items[i].doc_id);
        if (d < 0) {
            snprintf(why, wl, "search returned unknown document '%s'", r->items[i].doc_id);
            rag_results_free(r);
            hits_clear(hs);
            return RAG_ERROR;
        }
        hit *h = &hs->h[hs->n++];
        h->doc = d;
        h->version = r->items[i].version;
        h->chunk = r->items[i].chunk;
        h->text = strdup(r->items[i].text);
    }
    rag_results_free(r);
    return RAG_OK;
}

/* No document with hits of two versions, no chunk twice (holds at every moment, not only
 * after a drain: the index switches versions in one step). */
static int check_no_duplicates(const hits *hs, char *why, size_t wl)
{
    for (size_t i = 0; i < hs->n; i++)
        for (size_t j = i + 1; j < hs->n; j++) {
            if (hs->h[i].doc != hs->h[j].doc)
                continue;
            if (hs->h[i].version != hs->h[j].version) {
                snprintf(why, wl, "doc-%02d returned in two versions (%" PRIu64 " and %" PRIu64
                         ")", hs->h[i].doc, hs->h[i].version, hs->h[j].version);
                return 0;
            }
            if (hs->h[i].chunk == hs->h[j].chunk) {
                snprintf(why, wl, "doc-%02d v%" PRIu64 " chunk %u returned twice",
                         hs->h[i].doc, hs->h[i].version, hs->h[i].chunk);
                return 0;
            }
        }
    return 1;
}

/* Do the hits of `doc` form exactly version `version` with content of `token`: chunks 0..n-1
 * each once, each an exact piece of the text, the first at its start, the last at its end? */
static int doc_matches(const hits *hs, int doc, uint64_t version, const char *token, char *why,
                       size_t wl)
{
    char text[TEXT_MAX];
    size_t len = gen_text(token, text, sizeof text);
    const hit *by_chunk[MAX_CHUNKS] = {0};
    uint32_t max_chunk = 0;
    size_t count = 0;
    for (size_t i = 0; i < hs->n; i++) {
        const hit *h = &hs->h[i];
        if (h->doc != doc)
            continue;
        count++;
        if (h->version != version) {
            snprintf(why, wl, "doc-%02d: version %" PRIu64 " returned, expected %" PRIu64, doc,
                     h->version, version);
            return 0;
        }
        if (h->chunk >= MAX_CHUNKS || by_chunk[h->chunk]) {
            snprintf(why, wl, "doc-%02d v%" PRIu64 ": chunk %u duplicated or out of range", doc,
                     version, h->chunk);
            return 0;
        }
        by_chunk[h->chunk] = h;
        if (h->chunk > max_chunk)
            max_chunk = h->chunk;
        if (!strstr(h->text, token) || !strstr(text, h->text)) {
            snprintf(why, wl, "doc-%02d v%" PRIu64 " chunk %u: text is not from token %s: '%.80s'",
                     doc, version, h->chunk, token, h->text);
            return 0;
        }
    }
    if (count == 0) {
        snprintf(why, wl, "doc-%02d: not returned, expected v%" PRIu64, doc, version);
        return 0;
    }
    for (uint32_t c = 0; c <= max_chunk; c++)
        if (!by_chunk[c]) {
            snprintf(why, wl, "doc-%02d v%" PRIu64 ": chunk %u missing (gap), %zu returned", doc,
                     version, c, count);
            return 0;
        }
    const char *first = by_chunk[0]->text, *last = by_chunk[max_chunk]->text;
    size_t ll = strlen(last);
    if (strncmp(text, first, strlen(first)) != 0 || ll > len ||
        strcmp(text + len - ll, last) != 0) {
        snprintf(why, wl, "doc-%02d v%" PRIu64 ": chunks do not cover the text (missing chunk?)",
                 doc, version);
        return 0;
    }
    return 1;
}

static int doc_absent(const hits *hs, int doc)
{
    for (size_t i = 0; i < hs->n; i++)
        if (hs->h[i].doc == doc)
            return 0;
    return 1;
}

/* ---- child --------------------------------------------------------------------------------- */

static int out_fd = -1;

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* one write per line (< PIPE_BUF): the parent never sees half a line from a live child */
    if (write(out_fd, line, (size_t)n) != n)
        _exit(3);
}

static void child_fail(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    say("E %s", msg);
    /* _exit: no atexit handlers, no leak report for the handle we abandon on purpose */
    _exit(2);
}

typedef struct acked_put {
    int doc;
    char token[TOKEN_LEN];
    uint64_t version;
} acked_put;

static int child_put(rag_ctx *ctx, int doc, const char *token, uint64_t *version)
{
    char id[16], key[32], text[TEXT_MAX];
    doc_name(id, sizeof id, doc);
    snprintf(key, sizeof key, "k-%s", token);
    size_t len = gen_text(token, text, sizeof text);
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = len;
    d.mime = "text/plain";
    d.idempotency_key = key;
    return rag_doc_put(ctx, &d, version);
}

static int child_main(const char *root, uint64_t seed, const char *retry_doc,
                      const char *retry_token)
{
    rag_options o;
    harness_options(&o, 0); /* durable commits: the contract is about a crash */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc)
        child_fail("rag_open: %s (%s)", rag_strerror(rc), rag_error_last());
    rc = rag_start(ctx);
    if (rc)
        child_fail("rag_start: %s (%s)", rag_strerror(rc), rag_error_last());
    say("R");

    static acked_put acked[4096];
    size_t nacked = 0;
    uint64_t s = seed;
    uint64_t v = 0;
    if (retry_doc) {
        /* The put that was in flight when the previous child died, retried with the same key
         * and bytes, as a client would after a crash. */
        int d = atoi(retry_doc);
        say("I P %d %s", d, retry_token);
        rc = child_put(ctx, d, retry_token, &v);
        if (rc)
            child_fail("retry put doc-%02d: %s (%s)", d, rag_strerror(rc), rag_error_last());
        say("A P %d %s %" PRIu64, d, retry_token, v);
    }
    hits *hs = calloc(1, sizeof *hs);
    char why[400];
    for (int op = 0; op < CHILD_MAX_OPS; op++) {
        unsigned r = (unsigned)(rnd(&s) % 100);
        int d = (int)(rnd(&s) % NDOCS);
        if (r < 50) {
            char token[TOKEN_LEN];
            snprintf(token, sizeof token, "t%012" PRIx64, (uint64_t)(rnd(&s) & 0xffffffffffffull));
            say("I P %d %s", d, token);
            rc = child_put(ctx, d, token, &v);
            if (rc)
                child_fail("put doc-%02d: %s (%s)", d, rag_strerror(rc), rag_error_last());
            say("A P %d %s %" PRIu64, d, token, v);
            if (nacked < sizeof acked / sizeof acked[0]) {
                acked[nacked].doc = d;
                snprintf(acked[nacked].token, TOKEN_LEN, "%s", token);
                acked[nacked].version = v;
                nacked++;
            }
        } else if (r < 60 && nacked) {
            const acked_put *a = &acked[rnd(&s) % nacked];
            say("I P %d %s", a->doc, a->token);
            rc = child_put(ctx, a->doc, a->token, &v);
            if (rc)
                child_fail("idempotent retry doc-%02d: %s (%s)", a->doc, rag_strerror(rc),
                           rag_error_last());
            if (v != a->version)
                child_fail("idempotent retry of doc-%02d %s returned v%" PRIu64
                           ", the first put returned v%" PRIu64,
                           a->doc, a->token, v, a->version);
            say("A P %d %s %" PRIu64, a->doc, a->token, v);
        } else if (r < 75) {
            char id[16];
            doc_name(id, sizeof id, d);
            say("I D %d", d);
            rc = rag_doc_delete(ctx, id);
            if (rc && rc != RAG_ENOTFOUND)
                child_fail("delete doc-%02d: %s (%s)", d, rag_strerror(rc), rag_error_last());
            say("A D %d %d", d, rc);
        } else {
            rc = enumerate(ctx, hs, why, sizeof why);
            if (rc)
                child_fail("%s", why);
            if (!check_no_duplicates(hs, why, sizeof why))
                child_fail("search while running: %s", why);
            say("S %zu", hs->n);
            hits_clear(hs);
        }
    }
    free(hs);
    rag_close(ctx);
    say("X");
    return 0;
}

/* ---- parent: the model ------------------------------------------------------------------- */

typedef struct doc_state {
    int live;
    uint64_t version; /* version searches must return when live */
    uint64_t latest;  /* newest version number handed out for this id */
    char token[TOKEN_LEN];
} doc_state;

typedef struct registered {
    char token[TOKEN_LEN];
    uint64_t version;
} registered;

enum { OP_NONE, OP_PUT, OP_DEL };

typedef struct model {
    doc_state docs[NDOCS];
    registered *reg; /* every put known to have committed: token -> version */
    size_t nreg, capreg;
    /* the operation announced and not acknowledged */
    int pending;
    int pdoc;
    char ptoken[TOKEN_LEN];
    /* per cycle */
    int ready, finished;
    unsigned puts, retries, deletes, searches;
    unsigned inflight_applied, inflight_lost; /* how the operations in flight resolved */
    char error[512];
} model;

static const registered *reg_find(const model *m, const char *token)
{
    for (size_t i = 0; i < m->nreg; i++)
        if (strcmp(m->reg[i].token, token) == 0)
            return &m->reg[i];
    return NULL;
}

static void reg_add(model *m, const char *token, uint64_t version)
{
    if (m->nreg == m->capreg) {
        m->capreg = m->capreg ? m->capreg * 2 : 256;
        m->reg = realloc(m->reg, m->capreg * sizeof *m->reg);
        assert_non_null(m->reg);
    }
    snprintf(m->reg[m->nreg].token, TOKEN_LEN, "%s", token);
    m->reg[m->nreg].version = version;
    m->nreg++;
}

static void model_fail(model *m, const char *fmt, ...)
{
    if (m->error[0])
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof m->error, fmt, ap);
    va_end(ap);
}

/* Apply one line from the child. */
static void model_line(model *m, char *line)
{
    char kind = line[0];
    int d = -1;
    char token[64] = "";
    uint64_t v = 0;
    int code = 0;
    if (kind == 'R') {
        m->ready = 1;
    } else if (kind == 'X') {
        m->finished = 1;
    } else if (kind == 'S') {
        m->searches++;
    } else if (kind == 'E') {
        model_fail(m, "child reported: %s", line + 2);
    } else if (kind == 'I' && sscanf(line, "I P %d %63s", &d, token) == 2 && d >= 0 &&
               d < NDOCS && strlen(token) < TOKEN_LEN) {
        if (m->pending != OP_NONE)
            model_fail(m, "intent '%s' while another operation is pending", line);
        m->pending = OP_PUT;
        m->pdoc = d;
        snprintf(m->ptoken, TOKEN_LEN, "%s", token);
    } else if (kind == 'I' && sscanf(line, "I D %d", &d) == 1 && d >= 0 && d < NDOCS) {
        if (m->pending != OP_NONE)
            model_fail(m, "intent '%s' while another operation is pending", line);
        m->pending = OP_DEL;
        m->pdoc = d;
    } else if (kind == 'A' && sscanf(line, "A P %d %63s %" SCNu64, &d, token, &v) == 3) {
        if (m->pending != OP_PUT || m->pdoc != d || strcmp(m->ptoken, token) != 0) {
            model_fail(m, "ack '%s' does not match the pending intent", line);
            return;
        }
        m->pending = OP_NONE;
        doc_state *ds = &m->docs[d];
        const registered *r = reg_find(m, token);
        if (r) {
            /* same key and bytes: the first result, and nothing changes */
            m->retries++;
            if (r->version != v)
                model_fail(m, "idempotent retry doc-%02d %s returned v%" PRIu64
                           ", the first put got v%" PRIu64, d, token, v, r->version);
            return;
        }
        m->puts++;
        if (v != ds->latest + 1)
            model_fail(m, "put doc-%02d returned v%" PRIu64 ", expected v%" PRIu64, d, v,
                       ds->latest + 1);
        ds->live = 1;
        ds->version = ds->latest = v;
        snprintf(ds->token, TOKEN_LEN, "%s", token);
        reg_add(m, token, v);
    } else if (kind == 'A' && sscanf(line, "A D %d %d", &d, &code) == 2) {
        if (m->pending != OP_DEL || m->pdoc != d) {
            model_fail(m, "ack '%s' does not match the pending intent", line);
            return;
        }
        m->pending = OP_NONE;
        m->deletes++;
        doc_state *ds = &m->docs[d];
        if (code == RAG_OK && !ds->live)
            model_fail(m, "delete doc-%02d succeeded but the document was not live", d);
        else if (code == RAG_ENOTFOUND && ds->live)
            model_fail(m, "delete doc-%02d said ENOTFOUND but the document is live (v%" PRIu64
                       ")", d, ds->version);
        ds->live = 0;
    } else {
        model_fail(m, "unparsable line from the child: '%s'", line);
    }
}

/* Split complete lines out of buf. */
static void model_feed(model *m, char *buf, size_t *have)
{
    char *nl;
    while ((nl = memchr(buf, '\n', *have))) {
        *nl = 0;
        model_line(m, buf);
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, nl + 1, *have - used);
        *have -= used;
    }
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static char self_path[4096];

/* Run one child and kill it.  Returns 1 when it was killed, 0 when it finished by itself. */
static int run_child(model *m, const char *root, uint64_t cycle_seed, long kill_ms,
                     int kill_before_ready, const char *retry_doc, const char *retry_token,
                     long *ran_ms)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char seed[32], fd[16];
        snprintf(seed, sizeof seed, "%" PRIu64, cycle_seed);
        snprintf(fd, sizeof fd, "%d", fds[1]);
        if (retry_doc)
            execl(self_path, self_path, "--child", root, seed, fd, retry_doc, retry_token,
                  (char *)NULL);
        else
            execl(self_path, self_path, "--child", root, seed, fd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    m->ready = m->finished = 0;
    char buf[8192];
    size_t have = 0;
    int eof = 0;
    struct timespec tr = t0;
    for (;;) {
        long now = elapsed_ms(&t0);
        if (kill_before_ready) {
            if (now >= kill_ms)
                break;
        } else if (m->ready) {
            if (elapsed_ms(&tr) >= kill_ms)
                break;
        } else if (now > 20000) {
            model_fail(m, "child not ready after 20 s");
            break;
        }
        if (eof || m->error[0])
            break;
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, 1) > 0) {
            ssize_t got = read(fds[0], buf + have, sizeof buf - have - 1);
            if (got <= 0) {
                eof = 1;
                continue;
            }
            have += (size_t)got;
            int was_ready = m->ready;
            model_feed(m, buf, &have);
            if (!was_ready && m->ready)
                clock_gettime(CLOCK_MONOTONIC, &tr);
        }
    }
    *ran_ms = elapsed_ms(&t0);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    /* what is still in the pipe was written before the kill */
    ssize_t got;
    while ((got = read(fds[0], buf + have, sizeof buf - have - 1)) > 0) {
        have += (size_t)got;
        model_feed(m, buf, &have);
    }
    close(fds[0]);
    /* Only our SIGKILL may end it: a crash (SIGSEGV, an ASan abort) or a failure exit is a
     * finding, not a kill cycle. */
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        model_fail(m, "child exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
        model_fail(m, "child died of signal %d (%s)", WTERMSIG(status),
                   strsignal(WTERMSIG(status)));
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* After the kill: open, drain, compare with the model (resolving the operation in flight),
 * traces, status, fsck.  A new put that was in flight (whether it happened or not) comes back
 * through retry_doc/retry_token: the next child retries it with the same key and bytes, as a
 * client would after a crash; otherwise they are left empty. */
static void recover_and_check(model *m, const char *root, hits *hs, char *retry_doc,
                              char *retry_token)
{
    retry_doc[0] = retry_token[0] = 0;
    rag_options o;
    harness_options(&o, 1); /* the checker is never killed: skip the fsyncs */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc) {
        model_fail(m, "reopen: %s (%s)", rag_strerror(rc), rag_error_last());
        return;
    }
    rc = rag_drain(ctx, 60000);
    if (rc) {
        model_fail(m, "drain after the crash: %s (%s)", rag_strerror(rc), rag_error_last());
        rag_close(ctx);
        return;
    }
    char why[400];
    rc = enumerate(ctx, hs, why, sizeof why);
    if (rc) {
        model_fail(m, "%s", why);
        rag_close(ctx);
        return;
    }
    if (!check_no_duplicates(hs, why, sizeof why))
        model_fail(m, "after drain: %s", why);

    /* The operation in flight: it happened entirely or not at all. */
    int pend = m->pending;
    if (pend == OP_PUT && reg_find(m, m->ptoken))
        pend = OP_NONE; /* an idempotent retry changes nothing either way */
    int live = 0;
    for (int d = 0; d < NDOCS && !m->error[0]; d++) {
        doc_state *ds = &m->docs[d];
        char why0[400] = "", why1[400] = "";
        int ok0 = ds->live ? doc_matches(hs, d, ds->version, ds->token, why0, sizeof why0)
                           : doc_absent(hs, d);
        if (!ds->live && !ok0)
            snprintf(why0, sizeof why0, "doc-%02d is not live but searches return it", d);
        if (pend != OP_NONE && m->pdoc == d) {
            int ok1;
            if (pend == OP_PUT) {
                ok1 = doc_matches(hs, d, ds->latest + 1, m->ptoken, why1, sizeof why1);
            } else {
                ok1 = doc_absent(hs, d);
                if (!ok1)
                    snprintf(why1, sizeof why1, "doc-%02d returned after its delete", d);
            }
            if (ok1 && !ok0) { /* it happened */
                m->inflight_applied++;
                if (pend == OP_PUT) {
                    ds->live = 1;
                    ds->version = ds->latest = ds->latest + 1;
                    snprintf(ds->token, TOKEN_LEN, "%s", m->ptoken);
                    reg_add(m, m->ptoken, ds->version);
                } else {
                    ds->live = 0;
                }
            } else if (ok0 && !ok1) {
                m->inflight_lost++;
            } else if (!ok0) {
                model_fail(m, "%s; nor %s applied: %s", why0,
                           pend == OP_PUT ? "the put in flight" : "the delete in flight", why1);
            }
            if (pend == OP_PUT) { /* retried by the next child */
                snprintf(retry_doc, 16, "%d", d);
                snprintf(retry_token, TOKEN_LEN, "%s", m->ptoken);
            }
        } else if (!ok0) {
            model_fail(m, "%s", why0);
        }
        live += ds->live;
    }
    m->pending = OP_NONE;
    for (size_t i = 0; i < hs->n && !m->error[0]; i++)
        if (!m->docs[hs->h[i].doc].live)
            model_fail(m, "deleted doc-%02d returned", hs->h[i].doc);

    /* Traces: the last saga of every live document finished on the version searches see. */
    for (int d = 0; d < NDOCS && !m->error[0]; d++) {
        doc_state *ds = &m->docs[d];
        if (!ds->live)
            continue;
        char id[16];
        doc_name(id, sizeof id, d);
        rag_trace_info *t = NULL;
        rc = rag_trace(ctx, id, &t);
        if (rc) {
            model_fail(m, "rag_trace(%s): %s (%s)", id, rag_strerror(rc), rag_error_last());
            break;
        }
        if (t->version != ds->version || t->active_version != ds->version || t->deleted ||
            strcmp(t->state, "done") != 0)
            model_fail(m, "rag_trace(%s): version %" PRIu64 " active %" PRIu64
                       " deleted %d state '%s' (%s); expected v%" PRIu64 " done",
                       id, t->version, t->active_version, t->deleted, t->state, t->reason,
                       ds->version);
        rag_trace_free(t);
    }

    rag_status_info st = {.version = RAG_STATUS_VERSION};
    rc = rag_status(ctx, &st);
    if (rc) {
        model_fail(m, "rag_status: %s (%s)", rag_strerror(rc), rag_error_last());
    } else if (!m->error[0] &&
               (st.documents != (uint64_t)live || st.versions != (uint64_t)live ||
                st.chunks != st.vectors || st.vectors != hs->n || st.dead_letters != 0 ||
                st.sagas_running != 0 || st.sagas_failed != 0)) {
        model_fail(m, "status after drain: documents %" PRIu64 " (model %d) versions %" PRIu64
                   " chunks %" PRIu64 " vectors %" PRIu64 " (searches see %zu) dead %" PRIu64
                   " sagas running %" PRIu64 " failed %" PRIu64,
                   st.documents, live, st.versions, st.chunks, st.vectors, hs->n,
                   st.dead_letters, st.sagas_running, st.sagas_failed);
    }
    hits_clear(hs);

    rag_fsck_report *rep = NULL;
    rc = rag_fsck(ctx, 0, 60000, &rep);
    if (rc) {
        model_fail(m, "rag_fsck: %s (%s)", rag_strerror(rc), rag_error_last());
    } else if (rep) {
        for (size_t i = 0; i < rep->count; i++)
            printf("  fsck: %s %s v%" PRIu64 " label %" PRId64 ": %s\n",
                   rag_fsck_kind_name(rep->issues[i].kind), rep->issues[i].doc_id,
                   rep->issues[i].version, rep->issues[i].label, rep->issues[i].detail);
        if (rep->count)
            model_fail(m, "rag_fsck found %zu issue(s)", rep->count);
    }
    rag_fsck_report_free(rep);
    rag_close(ctx);
}

static unsigned run_root(uint64_t root_seed, int root_no)
{
    char name[32];
    snprintf(name, sizeof name, "crash-harness-%d", root_no);
    char *root = rag_test_tmpdir(name);
    model *m = calloc(1, sizeof *m);
    hits *hs = calloc(1, sizeof *hs);
    assert_non_null(m);
    assert_non_null(hs);
    char retry_doc[16] = "", retry_token[TOKEN_LEN] = "";
    unsigned kills = 0;
    for (int cycle = 0; cycle < CYCLES_PER_ROOT; cycle++) {
        uint64_t cs = mix64(root_seed ^ mix64((uint64_t)cycle + 1));
        uint64_t ks = cs;
        /* One cycle in eight kills during rag_open (recovery of the previous crash); the
         * others 1..30 ms after the child is ready. */
        int early = rnd(&ks) % 8 == 0;
        long kill_ms = early ? 2 + (long)(rnd(&ks) % 14) : 1 + (long)(rnd(&ks) % 30);
        m->puts = m->retries = m->deletes = m->searches = 0;
        long ran = 0;
        int killed = run_child(m, root, cs, kill_ms, early, retry_doc[0] ? retry_doc : NULL,
                               retry_token, &ran);
        kills += (unsigned)killed;
        char was[32] = "none";
        if (m->pending != OP_NONE)
            snprintf(was, sizeof was, "%s doc-%02d", m->pending == OP_PUT ? "put" : "delete",
                     m->pdoc);
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
    free(m->reg);
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
        uint64_t base = mix64((uint64_t)now.tv_sec * 1000000007ull ^ (uint64_t)now.tv_nsec ^
                              (uint64_t)getpid());
        for (int r = 0; r < ROOTS; r++) {
            uint64_t seed = mix64(base + (uint64_t)r) >> 1; /* < 2^63: prints as is */
            printf("root %d: seed %" PRIu64 " (RAG_CRASH_SEED=%" PRIu64 " replays it)\n", r,
                   seed, seed);
            kills += run_root(seed, r);
        }
        assert_true(kills >= 200);
    }
    printf("%u kill cycles in %ld ms\n", kills, elapsed_ms(&t0));
}

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 7) && strcmp(argv[1], "--child") == 0) {
        out_fd = atoi(argv[4]);
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
