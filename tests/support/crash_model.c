/* The lifecycle crash model shared by the crash harnesses (see crash_model.h).  #included by
 * the tests that use it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "crash_model.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

/* ---- deterministic randomness and texts ------------------------------------------------- */

uint64_t crash_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t crash_rnd(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return crash_mix64(*s);
}

static uint64_t crash_fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *const crash_words[] = {
    "ledger", "harbor",  "copper", "meadow", "signal",  "orchard", "granite", "violet",
    "compass", "lantern", "thunder", "willow", "quartz", "falcon",  "pepper",  "canyon",
    "glacier", "saffron", "beacon", "marble", "ember",   "juniper", "cobalt",  "tundra"};
#define CRASH_NWORDS (sizeof crash_words / sizeof crash_words[0])

/* The content of the version whose put carried `token`: 1..10 sentences, every one of them
 * naming the token, so any chunk can be attributed to its version.  One paragraph of ASCII
 * with single spaces: chunk texts are then exact substrings of it. */
size_t crash_gen_text(const char *token, char *out, size_t cap)
{
    uint64_t s = crash_fnv1a(token);
    int sentences = 1 + (int)(crash_rnd(&s) % 10);
    size_t len = (size_t)snprintf(out, cap, "Record %s opens here.", token);
    for (int i = 0; i < sentences && len < cap; i++) {
        len += (size_t)snprintf(out + len, cap - len,
                                " The %s %s beside the %s %s keeps %s part %d.",
                                crash_words[crash_rnd(&s) % CRASH_NWORDS],
                                crash_words[crash_rnd(&s) % CRASH_NWORDS],
                                crash_words[crash_rnd(&s) % CRASH_NWORDS],
                                crash_words[crash_rnd(&s) % CRASH_NWORDS], token, i);
    }
    return len;
}

void crash_doc_name(char *buf, size_t n, int doc) { snprintf(buf, n, "doc-%02d", doc); }

static int crash_doc_index(const char *id)
{
    if (strncmp(id, "doc-", 4) != 0)
        return -1;
    char *end = NULL;
    long v = strtol(id + 4, &end, 10);
    return (*end || v < 0 || v >= CRASH_NDOCS) ? -1 : (int)v;
}

void crash_harness_options(rag_options *o, int no_sync)
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

long crash_elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* ---- enumeration: one search that returns every live chunk ------------------------------ */

void crash_hits_clear(crash_hits *hs)
{
    for (size_t i = 0; i < hs->n; i++)
        free(hs->h[i].text);
    hs->n = 0;
}

/* A search with k larger than the number of vectors returns every live chunk, so one search
 * enumerates the whole index as searches see it.  RAG_ERROR for a foreign id or too many
 * results. */
int crash_enumerate(rag_ctx *ctx, crash_hits *hs, char *why, size_t wl)
{
    hs->n = 0;
    rag_query q = RAG_QUERY_INIT;
    q.text = "record part keeps beside";
    q.k = CRASH_MAX_HITS;
    q.unrestricted = 1;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc) {
        snprintf(why, wl, "rag_search: %s (%s)", rag_strerror(rc), rag_error_last());
        return rc;
    }
    if (r->count >= CRASH_MAX_HITS) {
        snprintf(why, wl, "search returned %zu results: the index holds more than expected",
                 r->count);
        rag_results_free(r);
        return RAG_ERROR;
    }
    for (size_t i = 0; i < r->count; i++) {
        int d = crash_doc_index(r->items[i].doc_id);
        if (d < 0) {
            snprintf(why, wl, "search returned unknown document '%s'", r->items[i].doc_id);
            rag_results_free(r);
            crash_hits_clear(hs);
            return RAG_ERROR;
        }
        crash_hit *h = &hs->h[hs->n++];
        h->doc = d;
        h->version = r->items[i].version;
        h->chunk = r->items[i].chunk;
        h->text = strdup(r->items[i].text);
    }
    rag_results_free(r);
    return RAG_OK;
}

/* Holds at every moment, not only after a drain: the index switches versions in one step. */
int crash_check_no_duplicates(const crash_hits *hs, char *why, size_t wl)
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
static int crash_doc_matches(const crash_hits *hs, int doc, uint64_t version, const char *token,
                             char *why, size_t wl)
{
    char text[CRASH_TEXT_MAX];
    size_t len = crash_gen_text(token, text, sizeof text);
    const crash_hit *by_chunk[CRASH_MAX_CHUNKS] = {0};
    uint32_t max_chunk = 0;
    size_t count = 0;
    for (size_t i = 0; i < hs->n; i++) {
        const crash_hit *h = &hs->h[i];
        if (h->doc != doc)
            continue;
        count++;
        if (h->version != version) {
            snprintf(why, wl, "doc-%02d: version %" PRIu64 " returned, expected %" PRIu64, doc,
                     h->version, version);
            return 0;
        }
        if (h->chunk >= CRASH_MAX_CHUNKS || by_chunk[h->chunk]) {
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

static int crash_doc_absent(const crash_hits *hs, int doc)
{
    for (size_t i = 0; i < hs->n; i++)
        if (hs->h[i].doc == doc)
            return 0;
    return 1;
}

/* ---- child --------------------------------------------------------------------------------- */

int crash_out_fd = -1;

void crash_say(const char *fmt, ...)
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
    if (write(crash_out_fd, line, (size_t)n) != n)
        _exit(3);
}

void crash_child_fail(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    crash_say("E %s", msg);
    /* _exit: no atexit handlers, no leak report for the handle we abandon on purpose */
    _exit(2);
}

typedef struct crash_acked_put {
    int doc;
    char token[CRASH_TOKEN_LEN];
    uint64_t version;
} crash_acked_put;

static int crash_child_put(rag_ctx *ctx, int doc, const char *token, uint64_t *version)
{
    char id[16], key[32], text[CRASH_TEXT_MAX];
    crash_doc_name(id, sizeof id, doc);
    snprintf(key, sizeof key, "k-%s", token);
    size_t len = crash_gen_text(token, text, sizeof text);
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = len;
    d.mime = "text/plain";
    d.idempotency_key = key;
    return rag_doc_put(ctx, &d, version);
}

void crash_child_workload(rag_ctx *ctx, uint64_t seed, const char *retry_doc,
                          const char *retry_token, volatile sig_atomic_t *stop)
{
    static crash_acked_put acked[4096];
    size_t nacked = 0;
    uint64_t s = seed;
    uint64_t v = 0;
    int rc;
    if (retry_doc) {
        /* The put that was in flight when the previous child died, retried with the same key
         * and bytes, as a client would after a crash. */
        int d = atoi(retry_doc);
        crash_say("I P %d %s", d, retry_token);
        rc = crash_child_put(ctx, d, retry_token, &v);
        if (rc)
            crash_child_fail("retry put doc-%02d: %s (%s)", d, rag_strerror(rc),
                             rag_error_last());
        crash_say("A P %d %s %" PRIu64, d, retry_token, v);
    }
    crash_hits *hs = calloc(1, sizeof *hs);
    char why[400];
    for (int op = 0; op < CRASH_CHILD_MAX_OPS && !(stop && *stop); op++) {
        unsigned r = (unsigned)(crash_rnd(&s) % 100);
        int d = (int)(crash_rnd(&s) % CRASH_NDOCS);
        if (r < 50) {
            char token[CRASH_TOKEN_LEN];
            snprintf(token, sizeof token, "t%012" PRIx64,
                     (uint64_t)(crash_rnd(&s) & 0xffffffffffffull));
            crash_say("I P %d %s", d, token);
            rc = crash_child_put(ctx, d, token, &v);
            if (rc)
                crash_child_fail("put doc-%02d: %s (%s)", d, rag_strerror(rc), rag_error_last());
            crash_say("A P %d %s %" PRIu64, d, token, v);
            if (nacked < sizeof acked / sizeof acked[0]) {
                acked[nacked].doc = d;
                snprintf(acked[nacked].token, CRASH_TOKEN_LEN, "%s", token);
                acked[nacked].version = v;
                nacked++;
            }
        } else if (r < 60 && nacked) {
            const crash_acked_put *a = &acked[crash_rnd(&s) % nacked];
            crash_say("I P %d %s", a->doc, a->token);
            rc = crash_child_put(ctx, a->doc, a->token, &v);
            if (rc)
                crash_child_fail("idempotent retry doc-%02d: %s (%s)", a->doc, rag_strerror(rc),
                                 rag_error_last());
            if (v != a->version)
                crash_child_fail("idempotent retry of doc-%02d %s returned v%" PRIu64
                                 ", the first put returned v%" PRIu64,
                                 a->doc, a->token, v, a->version);
            crash_say("A P %d %s %" PRIu64, a->doc, a->token, v);
        } else if (r < 75) {
            char id[16];
            crash_doc_name(id, sizeof id, d);
            crash_say("I D %d", d);
            rc = rag_doc_delete(ctx, id);
            if (rc && rc != RAG_ENOTFOUND)
                crash_child_fail("delete doc-%02d: %s (%s)", d, rag_strerror(rc),
                                 rag_error_last());
            crash_say("A D %d %d", d, rc);
        } else {
            rc = crash_enumerate(ctx, hs, why, sizeof why);
            if (rc)
                crash_child_fail("%s", why);
            if (!crash_check_no_duplicates(hs, why, sizeof why))
                crash_child_fail("search while running: %s", why);
            crash_say("S %zu", hs->n);
            crash_hits_clear(hs);
        }
    }
    free(hs);
}

/* ---- parent: the model ------------------------------------------------------------------- */

static const crash_registered *crash_reg_find(const crash_model *m, const char *token)
{
    for (size_t i = 0; i < m->nreg; i++)
        if (strcmp(m->reg[i].token, token) == 0)
            return &m->reg[i];
    return NULL;
}

static void crash_reg_add(crash_model *m, const char *token, uint64_t version)
{
    if (m->nreg == m->capreg) {
        m->capreg = m->capreg ? m->capreg * 2 : 256;
        m->reg = realloc(m->reg, m->capreg * sizeof *m->reg);
        assert_non_null(m->reg);
    }
    snprintf(m->reg[m->nreg].token, CRASH_TOKEN_LEN, "%s", token);
    m->reg[m->nreg].version = version;
    m->nreg++;
}

void crash_model_fail(crash_model *m, const char *fmt, ...)
{
    if (m->error[0])
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof m->error, fmt, ap);
    va_end(ap);
}

void crash_model_free(crash_model *m)
{
    free(m->reg);
    m->reg = NULL;
    m->nreg = m->capreg = 0;
}

/* Apply one line from the child. */
static void crash_model_line(crash_model *m, char *line)
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
        crash_model_fail(m, "child reported: %s", line + 2);
    } else if (kind == 'I' && sscanf(line, "I P %d %63s", &d, token) == 2 && d >= 0 &&
               d < CRASH_NDOCS && strlen(token) < CRASH_TOKEN_LEN) {
        if (m->pending != CRASH_OP_NONE)
            crash_model_fail(m, "intent '%s' while another operation is pending", line);
        m->pending = CRASH_OP_PUT;
        m->pdoc = d;
        snprintf(m->ptoken, CRASH_TOKEN_LEN, "%s", token);
    } else if (kind == 'I' && sscanf(line, "I D %d", &d) == 1 && d >= 0 && d < CRASH_NDOCS) {
        if (m->pending != CRASH_OP_NONE)
            crash_model_fail(m, "intent '%s' while another operation is pending", line);
        m->pending = CRASH_OP_DEL;
        m->pdoc = d;
    } else if (kind == 'A' && sscanf(line, "A P %d %63s %" SCNu64, &d, token, &v) == 3) {
        if (m->pending != CRASH_OP_PUT || m->pdoc != d || strcmp(m->ptoken, token) != 0) {
            crash_model_fail(m, "ack '%s' does not match the pending intent", line);
            return;
        }
        m->pending = CRASH_OP_NONE;
        crash_doc_state *ds = &m->docs[d];
        const crash_registered *r = crash_reg_find(m, token);
        if (r) {
            /* same key and bytes: the first result, and nothing changes */
            m->retries++;
            if (r->version != v)
                crash_model_fail(m, "idempotent retry doc-%02d %s returned v%" PRIu64
                                 ", the first put got v%" PRIu64, d, token, v, r->version);
            return;
        }
        m->puts++;
        if (v != ds->latest + 1)
            crash_model_fail(m, "put doc-%02d returned v%" PRIu64 ", expected v%" PRIu64, d, v,
                             ds->latest + 1);
        ds->live = 1;
        ds->version = ds->latest = v;
        snprintf(ds->token, CRASH_TOKEN_LEN, "%s", token);
        crash_reg_add(m, token, v);
    } else if (kind == 'A' && sscanf(line, "A D %d %d", &d, &code) == 2) {
        if (m->pending != CRASH_OP_DEL || m->pdoc != d) {
            crash_model_fail(m, "ack '%s' does not match the pending intent", line);
            return;
        }
        m->pending = CRASH_OP_NONE;
        m->deletes++;
        crash_doc_state *ds = &m->docs[d];
        if (code == RAG_OK && !ds->live)
            crash_model_fail(m, "delete doc-%02d succeeded but the document was not live", d);
        else if (code == RAG_ENOTFOUND && ds->live)
            crash_model_fail(m, "delete doc-%02d said ENOTFOUND but the document is live (v%"
                             PRIu64 ")", d, ds->version);
        ds->live = 0;
    } else {
        crash_model_fail(m, "unparsable line from the child: '%s'", line);
    }
}

void crash_model_feed(crash_model *m, char *buf, size_t *have)
{
    char *nl;
    while ((nl = memchr(buf, '\n', *have))) {
        *nl = 0;
        crash_model_line(m, buf);
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, nl + 1, *have - used);
        *have -= used;
    }
}

/* ---- parent: the child process --------------------------------------------------------------- */

void crash_child_spawn(crash_child *c, crash_model *m, const char *self, const char *root,
                       uint64_t seed, const char *const *extra)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    char seed_s[32], fd_s[16];
    snprintf(seed_s, sizeof seed_s, "%" PRIu64, seed);
    snprintf(fd_s, sizeof fd_s, "%d", fds[1]);
    /* argv is built before the fork: the child only execs */
    const char *argv[16];
    size_t n = 0;
    argv[n++] = self;
    argv[n++] = "--child";
    argv[n++] = root;
    argv[n++] = seed_s;
    argv[n++] = fd_s;
    for (size_t i = 0; extra && extra[i] && n < sizeof argv / sizeof argv[0] - 1; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        execv(self, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    c->pid = pid;
    c->fd = fds[0];
    c->eof = 0;
    c->have = 0;
    m->ready = m->finished = 0;
}

int crash_child_pump(crash_child *c, crash_model *m, int timeout_ms)
{
    if (c->eof)
        return 1;
    struct pollfd p = {c->fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) > 0) {
        ssize_t got = read(c->fd, c->buf + c->have, sizeof c->buf - c->have - 1);
        if (got <= 0) {
            c->eof = 1;
            return 1;
        }
        c->have += (size_t)got;
        crash_model_feed(m, c->buf, &c->have);
    }
    return 0;
}

/* Reap, read what is left, close; only our SIGKILL (when `killed_ok`) or exit 0 may end it. */
static int crash_child_reap(crash_child *c, crash_model *m, int killed_ok)
{
    int status = 0;
    waitpid(c->pid, &status, 0);
    c->pid = 0;
    /* what is still in the pipe was written before the kill */
    ssize_t got;
    while ((got = read(c->fd, c->buf + c->have, sizeof c->buf - c->have - 1)) > 0) {
        c->have += (size_t)got;
        crash_model_feed(m, c->buf, &c->have);
    }
    close(c->fd);
    c->fd = -1;
    /* Only our SIGKILL may end it: a crash (SIGSEGV, an ASan abort) or a failure exit is a
     * finding, not a kill cycle. */
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        crash_model_fail(m, "child exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status) && (WTERMSIG(status) != SIGKILL || !killed_ok))
        crash_model_fail(m, "child died of signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int crash_child_kill(crash_child *c, crash_model *m)
{
    kill(c->pid, SIGKILL);
    return crash_child_reap(c, m, 1);
}

void crash_child_stop(crash_child *c, crash_model *m, int timeout_ms)
{
    kill(c->pid, SIGTERM);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!crash_child_pump(c, m, 10)) {
        if (crash_elapsed_ms(&t0) > timeout_ms) {
            crash_model_fail(m, "child did not stop within %d ms of SIGTERM", timeout_ms);
            kill(c->pid, SIGKILL);
            crash_child_reap(c, m, 1);
            return;
        }
    }
    crash_child_reap(c, m, 0);
    if (!m->finished)
        crash_model_fail(m, "child stopped without finishing (no 'X' line)");
}

/* ---- parent: the check after recovery ------------------------------------------------------ */

void crash_model_check(crash_model *m, rag_ctx *ctx, crash_hits *hs, char *retry_doc,
                       char *retry_token)
{
    retry_doc[0] = retry_token[0] = 0;
    char why[400];
    int rc = crash_enumerate(ctx, hs, why, sizeof why);
    if (rc) {
        crash_model_fail(m, "%s", why);
        return;
    }
    if (!crash_check_no_duplicates(hs, why, sizeof why))
        crash_model_fail(m, "after drain: %s", why);

    /* The operation in flight: it happened entirely or not at all. */
    int pend = m->pending;
    if (pend == CRASH_OP_PUT && crash_reg_find(m, m->ptoken))
        pend = CRASH_OP_NONE; /* an idempotent retry changes nothing either way */
    int live = 0;
    for (int d = 0; d < CRASH_NDOCS && !m->error[0]; d++) {
        crash_doc_state *ds = &m->docs[d];
        char why0[400] = "", why1[400] = "";
        int ok0 = ds->live ? crash_doc_matches(hs, d, ds->version, ds->token, why0, sizeof why0)
                           : crash_doc_absent(hs, d);
        if (!ds->live && !ok0)
            snprintf(why0, sizeof why0, "doc-%02d is not live but searches return it", d);
        if (pend != CRASH_OP_NONE && m->pdoc == d) {
            int ok1;
            if (pend == CRASH_OP_PUT) {
                ok1 = crash_doc_matches(hs, d, ds->latest + 1, m->ptoken, why1, sizeof why1);
            } else {
                ok1 = crash_doc_absent(hs, d);
                if (!ok1)
                    snprintf(why1, sizeof why1, "doc-%02d returned after its delete", d);
            }
            if (ok1 && !ok0) { /* it happened */
                m->inflight_applied++;
                if (pend == CRASH_OP_PUT) {
                    ds->live = 1;
                    ds->version = ds->latest = ds->latest + 1;
                    snprintf(ds->token, CRASH_TOKEN_LEN, "%s", m->ptoken);
                    crash_reg_add(m, m->ptoken, ds->version);
                } else {
                    ds->live = 0;
                }
            } else if (ok0 && !ok1) {
                m->inflight_lost++;
            } else if (!ok0) {
                crash_model_fail(m, "%s; nor %s applied: %s", why0,
                                 pend == CRASH_OP_PUT ? "the put in flight"
                                                      : "the delete in flight",
                                 why1);
            }
            if (pend == CRASH_OP_PUT) { /* retried by the next child */
                snprintf(retry_doc, 16, "%d", d);
                snprintf(retry_token, CRASH_TOKEN_LEN, "%s", m->ptoken);
            }
        } else if (!ok0) {
            crash_model_fail(m, "%s", why0);
        }
        live += ds->live;
    }
    m->pending = CRASH_OP_NONE;
    for (size_t i = 0; i < hs->n && !m->error[0]; i++)
        if (!m->docs[hs->h[i].doc].live)
            crash_model_fail(m, "deleted doc-%02d returned", hs->h[i].doc);

    /* Traces: the last saga of every live document finished on the version searches see. */
    for (int d = 0; d < CRASH_NDOCS && !m->error[0]; d++) {
        crash_doc_state *ds = &m->docs[d];
        if (!ds->live)
            continue;
        char id[16];
        crash_doc_name(id, sizeof id, d);
        rag_trace_info *t = NULL;
        rc = rag_trace(ctx, id, &t);
        if (rc) {
            crash_model_fail(m, "rag_trace(%s): %s (%s)", id, rag_strerror(rc),
                             rag_error_last());
            break;
        }
        if (t->version != ds->version || t->active_version != ds->version || t->deleted ||
            strcmp(t->state, "done") != 0)
            crash_model_fail(m, "rag_trace(%s): version %" PRIu64 " active %" PRIu64
                             " deleted %d state '%s' (%s); expected v%" PRIu64 " done",
                             id, t->version, t->active_version, t->deleted, t->state, t->reason,
                             ds->version);
        rag_trace_free(t);
    }

    rag_status_info st = {.version = RAG_STATUS_VERSION};
    rc = rag_status(ctx, &st);
    if (rc) {
        crash_model_fail(m, "rag_status: %s (%s)", rag_strerror(rc), rag_error_last());
    } else if (!m->error[0] &&
               (st.documents != (uint64_t)live || st.versions != (uint64_t)live ||
                st.chunks != st.vectors || st.vectors != hs->n || st.dead_letters != 0 ||
                st.sagas_running != 0 || st.sagas_failed != 0)) {
        crash_model_fail(m, "status after drain: documents %" PRIu64 " (model %d) versions %"
                         PRIu64 " chunks %" PRIu64 " vectors %" PRIu64 " (searches see %zu) dead %"
                         PRIu64 " sagas running %" PRIu64 " failed %" PRIu64,
                         st.documents, live, st.versions, st.chunks, st.vectors, hs->n,
                         st.dead_letters, st.sagas_running, st.sagas_failed);
    }
    crash_hits_clear(hs);

    rag_fsck_report *rep = NULL;
    rc = rag_fsck(ctx, 0, 60000, &rep);
    if (rc) {
        crash_model_fail(m, "rag_fsck: %s (%s)", rag_strerror(rc), rag_error_last());
    } else if (rep) {
        for (size_t i = 0; i < rep->count; i++)
            printf("  fsck: %s %s v%" PRIu64 " label %" PRId64 ": %s\n",
                   rag_fsck_kind_name(rep->issues[i].kind), rep->issues[i].doc_id,
                   rep->issues[i].version, rep->issues[i].label, rep->issues[i].detail);
        if (rep->count)
            crash_model_fail(m, "rag_fsck found %zu issue(s)", rep->count);
    }
    rag_fsck_report_free(rep);
}
