/*
 * The remote embedding provider: an OpenAI-compatible `POST <base_url>/embeddings` over
 * libcurl (DESIGN.md "Embedding providers"; docs/providers.md "remote").
 *
 * One `embed` call sends ceil(n / batch_size) requests, one after the other, each
 *   {"model": M, "input": [texts...], "encoding_format": "float"}
 * and expects {"data": [{"index": i, "embedding": [dim floats]}, ...]}.  Every request is
 * retried on its own (429, 5xx, 408, timeouts, connection errors) with capped full-jitter
 * backoff or the server's Retry-After; everything else a server can say is permanent.
 *
 * Thread-safety: the state is immutable after init except the statistics (atomics) and a
 * small pool of idle CURL easy handles (mutex).  A call takes a handle out of the pool for
 * its whole duration, so no handle is ever shared, and hands it back afterwards so that its
 * live connection is reused by the next call (keep-alive matters a lot for small batches).
 *
 * Secrets: the API key is read from the environment once, at init.  It lives only in the
 * state (wiped on free) and in the header list of a request being sent; every message this
 * file reports goes through report(), which redacts any occurrence of the key (a server
 * that echoes the Authorization header back in its error body does not leak it), and URLs
 * in messages have their userinfo removed.
 */
#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ragcore/providers.h"
#include "rag_common.h"

#define REMOTE_MAGIC 0x52454d4fu /* "REMO": tells rag_embed_remote_stats_get a remote state */

#define REMOTE_BATCH_DEFAULT 64u
#define REMOTE_CONNECT_TIMEOUT_DEFAULT 5000u
#define REMOTE_TIMEOUT_DEFAULT 60000u
#define REMOTE_RETRIES_DEFAULT 4u
#define REMOTE_BACKOFF_BASE_DEFAULT 200u
#define REMOTE_BACKOFF_CAP_DEFAULT 10000u
#define REMOTE_DIM_MAX 65536u
#define REMOTE_RETRY_AFTER_MAX_MS 60000u
/* Idle easy handles kept for reuse; more concurrent calls simply create (and drop) more. */
#define REMOTE_POOL_MAX 8
/* Bytes of an error body quoted in a message. */
#define REMOTE_EXCERPT_MAX 200
#define REMOTE_MSG_MAX 1024

typedef struct remote_state {
    uint32_t magic;
    char *url;      /* <base_url>/embeddings, as sent */
    char *url_safe; /* the same without userinfo: the only form that appears in messages */
    char *model;
    char *key;      /* NULL: no key */
    size_t key_len;
    char *auth_header; /* "Authorization: Bearer <key>", NULL without a key */
    unsigned int dim;
    size_t batch_size;
    unsigned int connect_timeout_ms, timeout_ms, max_retries, backoff_base_ms, backoff_cap_ms;
    int no_normalize;
    char fingerprint[RAG_EMBED_FINGERPRINT_MAX];

    atomic_ullong requests, retries, texts, failures;

    pthread_mutex_t pool_mu;
    CURL *pool[REMOTE_POOL_MAX];
    size_t pool_len;
} remote_state;

/* ---- small helpers ------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

/* curl_global_init is not thread-safe on older libcurl and must run once per process; it is
 * never undone (another part of the host may use libcurl too). */
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* A memset the optimiser may not drop: wipes the key before its memory is freed. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Replace every occurrence of the key in `s` (in place, NUL-terminated) with "[REDACTED]"
 * when it fits, else with '*'s: the result is never longer than the input. */
static void redact(const remote_state *st, char *s)
{
    if (!st->key || st->key_len == 0)
        return;
    static const char mark[] = "[REDACTED]";
    const size_t mlen = sizeof mark - 1;
    char *p;
    while ((p = strstr(s, st->key)) != NULL) {
        if (st->key_len >= mlen) {
            memcpy(p, mark, mlen);
            memmove(p + mlen, p + st->key_len, strlen(p + st->key_len) + 1);
        } else {
            memset(p, '*', st->key_len);
        }
    }
}

/* The one way this file reports an error: format, redact the key, record. */
static int report(const remote_state *st, int code, const char *fmt, ...) RAG_PRINTF(3, 4);
static int report(const remote_state *st, int code, const char *fmt, ...)
{
    char msg[REMOTE_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (st)
        redact(st, msg);
    return rag_error_set(code, "%s", msg);
}

/* The first REMOTE_EXCERPT_MAX bytes of a body, key redacted BEFORE cutting (so a key cut in
 * half at the boundary cannot leak its prefix), bytes outside printable ASCII as '?'. */
static void excerpt(const remote_state *st, const char *body, size_t len, char *out,
                    size_t out_size)
{
    out[0] = '\0';
    if (!body || len == 0 || out_size == 0)
        return;
    char *copy = xstrndup(body, len);
    if (!copy) {
        snprintf(out, out_size, "(body of %zu bytes)", len);
        return;
    }
    /* embedded NULs would end strstr early: make them visible first */
    for (size_t i = 0; i < len; i++)
        if (copy[i] == '\0')
            copy[i] = '?';
    redact(st, copy);
    size_t n = strlen(copy);
    size_t lim = out_size - 1 < REMOTE_EXCERPT_MAX ? out_size - 1 : REMOTE_EXCERPT_MAX;
    if (n > lim)
        n = lim;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)copy[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : (c == '\n' || c == '\r' || c == '\t') ? ' ' : '?';
    }
    out[n] = '\0';
    wipe(copy, len);
    free(copy);
}

/* "scheme://user:pass@host/..." -> "scheme://host/..." (userinfo ends at the last '@' before
 * the first '/', '?' or '#' of the authority). */
static char *strip_userinfo(const char *url)
{
    const char *auth = strstr(url, "://");
    if (!auth)
        return strdup(url);
    auth += 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return strdup(url);
    size_t head = (size_t)(auth - url);
    size_t tail = strlen(at + 1);
    char *out = malloc(head + tail + 1);
    if (!out)
        return NULL;
    memcpy(out, url, head);
    memcpy(out + head, at + 1, tail + 1);
    return out;
}

/* Length of the longest prefix of s[0..n) that ends on a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0u) == 0x80u)
        n--;
    return n;
}

/* ---- one HTTP exchange ---------------------------------------------------------------------- */

typedef struct http_buf {
    char *data;
    size_t len, cap, limit;
    int over; /* the body passed `limit`: the transfer was aborted */
    int oom;
} http_buf;

typedef struct exchange {
    http_buf body;
    long retry_after_ms; /* -1: no Retry-After header */
} exchange;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    http_buf *b = arg;
    size_t n = size * nmemb;
    if (n > b->limit - b->len) {
        b->over = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return 0;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Retry-After: delta-seconds, or an HTTP-date (curl_getdate) turned into seconds from now.
 * Headers of every response in the exchange arrive here; the last one counts. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    exchange *x = arg;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    const size_t nl = sizeof name - 1;
    if (n > nl && strncasecmp(ptr, name, nl) == 0) {
        char val[128];
        size_t vl = n - nl;
        if (vl >= sizeof val)
            vl = sizeof val - 1;
        memcpy(val, ptr + nl, vl);
        val[vl] = '\0';
        char *v = val;
        while (*v == ' ' || *v == '\t')
            v++;
        v[strcspn(v, "\r\n")] = '\0';
        long ms = -1;
        if (isdigit((unsigned char)*v)) {
            char *end = NULL;
            unsigned long long secs = strtoull(v, &end, 10);
            while (end && (*end == ' ' || *end == '\t'))
                end++;
            if (end && *end == '\0')
                ms = secs >= REMOTE_RETRY_AFTER_MAX_MS / 1000u ? (long)REMOTE_RETRY_AFTER_MAX_MS
                                                               : (long)(secs * 1000u);
        } else if (*v) {
            time_t when = curl_getdate(v, NULL);
            if (when != (time_t)-1) {
                time_t now = time(NULL);
                double d = difftime(when, now);
                ms = d <= 0 ? 0
                     : d >= REMOTE_RETRY_AFTER_MAX_MS / 1000.0 ? (long)REMOTE_RETRY_AFTER_MAX_MS
                                                               : (long)(d * 1000.0);
            }
        }
        if (ms >= 0)
            x->retry_after_ms = ms;
    }
    return n;
}

/* Take an idle handle (its connection may still be open) or make one. */
static CURL *handle_get(remote_state *st)
{
    CURL *h = NULL;
    pthread_mutex_lock(&st->pool_mu);
    if (st->pool_len)
        h = st->pool[--st->pool_len];
    pthread_mutex_unlock(&st->pool_mu);
    if (h)
        curl_easy_reset(h); /* options only: live connections and caches stay */
    else
        h = curl_easy_init();
    return h;
}

static void handle_put(remote_state *st, CURL *h, int keep)
{
    if (!h)
        return;
    if (keep) {
        pthread_mutex_lock(&st->pool_mu);
        if (st->pool_len < REMOTE_POOL_MAX) {
            st->pool[st->pool_len++] = h;
            h = NULL;
        }
        pthread_mutex_unlock(&st->pool_mu);
    }
    if (h)
        curl_easy_cleanup(h);
}

enum { OUT_OK = 0, OUT_RETRY = 1, OUT_FAIL = 2 };

static int curl_retryable(CURLcode c)
{
    switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST: /* a DNS hiccup; a wrong host name ends as ETRANSIENT */
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return 1;
    default:
        return 0;
    }
}

static int status_retryable(long status)
{
    return status == 429 || status == 408 || (status >= 500 && status <= 599);
}

/*
 * Send one request body; on OUT_OK `x->body` holds the 2xx response.  On OUT_RETRY and
 * OUT_FAIL the error has been recorded with report() (the code in *code).
 */
static int exchange_run(remote_state *st, CURL *h, const char *payload, size_t payload_len,
                        size_t n_texts, exchange *x, int *code, int *keep_handle)
{
    char errbuf[CURL_ERROR_SIZE];
    errbuf[0] = '\0';
    x->body.len = 0;
    x->body.over = 0;
    x->body.oom = 0;
    x->retry_after_ms = -1;
    /* A fair upper bound of a response: ~32 bytes per float printed, plus 1 MiB of slack. */
    x->body.limit = (size_t)st->dim * n_texts * 32u + ((size_t)1 << 20);

    struct curl_slist *hdr = NULL, *t;
    t = curl_slist_append(hdr, "Content-Type: application/json");
    if (t)
        hdr = t;
    t = t ? curl_slist_append(hdr, "Accept: application/json") : NULL;
    if (t)
        hdr = t;
    /* no "Expect: 100-continue" round trip for large batches */
    t = t ? curl_slist_append(hdr, "Expect:") : NULL;
    if (t)
        hdr = t;
    if (t && st->auth_header) {
        t = curl_slist_append(hdr, st->auth_header);
        if (t)
            hdr = t;
    }
    if (!t) {
        curl_slist_free_all(hdr);
        *code = report(st, RAG_ENOMEM, "remote embedder: out of memory for request headers");
        return OUT_FAIL;
    }

    curl_easy_setopt(h, CURLOPT_URL, st->url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)st->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)st->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM in a host's threads */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->body.limit);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* whatever curl can decode */
    curl_easy_setopt(h, CURLOPT_USERAGENT, "ragcore-remote-embedder/1");

    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    /* the header list holds the key: drop it (and the handle's pointer to it) at once */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    for (struct curl_slist *s = hdr; s; s = s->next)
        wipe(s->data, strlen(s->data));
    curl_slist_free_all(hdr);

    if (cc != CURLE_OK) {
        *keep_handle = 0; /* its connection is in an unknown state */
        if (x->body.over || cc == CURLE_FILESIZE_EXCEEDED) {
            *code = report(st, RAG_EPROVIDER,
                           "remote embedder: response from %s larger than %zu bytes for %zu "
                           "texts of dimension %u",
                           st->url_safe, x->body.limit, n_texts, st->dim);
            return OUT_FAIL;
        }
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
        if (curl_retryable(cc)) {
            *code = report(st, RAG_ETRANSIENT, "remote embedder: %s (curl %d) for %s", why,
                           (int)cc, st->url_safe);
            return OUT_RETRY;
        }
        if (cc == CURLE_OUT_OF_MEMORY || x->body.oom) {
            *code = report(st, RAG_ENOMEM, "remote embedder: curl out of memory");
            return OUT_FAIL;
        }
        *code = report(st, RAG_EPROVIDER, "remote embedder: %s (curl %d) for %s", why,
                       (int)cc, st->url_safe);
        return OUT_FAIL;
    }
    if (status >= 200 && status <= 299)
        return OUT_OK;

    char ex[REMOTE_EXCERPT_MAX + 1];
    excerpt(st, x->body.data, x->body.len, ex, sizeof ex);
    if (status_retryable(status)) {
        *code = report(st, RAG_ETRANSIENT, "remote embedder: HTTP %ld from %s: %s", status,
                       st->url_safe, ex[0] ? ex : "(empty body)");
        return OUT_RETRY;
    }
    if (status >= 300 && status <= 399) {
        *code = report(st, RAG_EPROVIDER,
                       "remote embedder: HTTP %ld from %s (redirects are not followed; "
                       "configure the final base_url)",
                       status, st->url_safe);
        return OUT_FAIL;
    }
    *code = report(st, RAG_EPROVIDER, "remote embedder: HTTP %ld from %s: %s", status,
                   st->url_safe, ex[0] ? ex : "(empty body)");
    return OUT_FAIL;
}

/* ---- request and response JSON ------------------------------------------------------------ */

static int build_payload(remote_state *st, const char *const *texts, const size_t *lens,
                         size_t n, char **out, size_t *out_len)
{
    json_t *root = json_object();
    json_t *input = json_array();
    if (!root || !input) {
        json_decref(root);
        json_decref(input);
        return report(st, RAG_ENOMEM, "remote embedder: out of memory building a request");
    }
    int rc = RAG_OK;
    if (json_object_set_new(root, "model", json_string(st->model)) ||
        json_object_set_new(root, "encoding_format", json_string("float"))) {
        json_decref(input);
        rc = report(st, RAG_ENOMEM, "remote embedder: out of memory building a request");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        /* json_stringn validates UTF-8: invalid input can never be sent, so it is permanent */
        json_t *s = json_stringn(texts[i] ? texts[i] : "", texts[i] ? lens[i] : 0);
        if (!s) {
            json_decref(input);
            rc = report(st, RAG_EINVAL,
                        "remote embedder: text %zu of the request (%zu bytes) is not valid "
                        "UTF-8",
                        i, lens[i]);
            goto done;
        }
        if (json_array_append_new(input, s)) {
            json_decref(input);
            rc = report(st, RAG_ENOMEM, "remote embedder: out of memory building a request");
            goto done;
        }
    }
    if (json_object_set_new(root, "input", input)) {
        rc = report(st, RAG_ENOMEM, "remote embedder: out of memory building a request");
        goto done;
    }
    *out = json_dumps(root, JSON_COMPACT);
    if (!*out)
        rc = report(st, RAG_ENOMEM, "remote embedder: out of memory serialising a request");
    else
        *out_len = strlen(*out);
done:
    json_decref(root);
    return rc;
}

/*
 * The response parser.  A response carries n * dim numbers (1536 floats per text for some
 * models), so a DOM parser spends most of the provider's CPU time allocating one node per
 * number (jansson: ~0.6 us per number, measured by bench_remote).  This is a validating
 * single-pass JSON reader instead: it checks the full JSON grammar, skips members it does not
 * know, and converts the numbers of each "embedding" straight into a row.
 *
 *   {"data": [{"index": i, "embedding": [dim numbers], ...}, ...], ...}
 *
 * Members may come in any order ("embedding" before "index" too): a row is parsed into a
 * scratch buffer and placed when its object closes.  Numbers are converted by strtod under
 * the "C" locale (a host's setlocale(LC_NUMERIC) must not turn '.' into ',').
 */
#define JP_DEPTH_MAX 64

typedef struct jp {
    const char *start, *p, *end;
    const char *err; /* static text, set once */
    const char *err_at;
} jp;

static int jp_fail(jp *j, const char *why)
{
    if (!j->err) {
        j->err = why;
        j->err_at = j->p;
    }
    return -1;
}

static void jp_ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jp_expect(jp *j, char c, const char *why)
{
    jp_ws(j);
    if (j->p >= j->end || *j->p != c)
        return jp_fail(j, why);
    j->p++;
    return 0;
}

static int jp_hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A string at j->p (the opening quote).  Decoded into key[0..cap) when it fits (keys are
 * compared, so "\u0064ata" is "data"); *fits = 0 when it does not.  Control characters are
 * refused, escapes checked; bytes >= 0x80 are taken as they are. */
static int jp_string(jp *j, char *key, size_t cap, int *fits)
{
    size_t n = 0;
    int ok = 1;
    if (j->p >= j->end || *j->p != '"')
        return jp_fail(j, "expected a string");
    j->p++;
    for (;;) {
        if (j->p >= j->end)
            return jp_fail(j, "unterminated string");
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            break;
        }
        if (c < 0x20)
            return jp_fail(j, "control character in a string");
        if (c != '\\') {
            if (key && n + 1 < cap)
                key[n++] = (char)c;
            else
                ok = 0;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2)
            return jp_fail(j, "unterminated string");
        char e = j->p[1];
        char dec;
        switch (e) {
        case '"': dec = '"'; break;
        case '\\': dec = '\\'; break;
        case '/': dec = '/'; break;
        case 'b': dec = '\b'; break;
        case 'f': dec = '\f'; break;
        case 'n': dec = '\n'; break;
        case 'r': dec = '\r'; break;
        case 't': dec = '\t'; break;
        case 'u': {
            unsigned u;
            if (j->end - j->p < 6 || jp_hex4(j->p + 2, &u))
                return jp_fail(j, "bad \\u escape");
            j->p += 6;
            /* only ASCII matters for the keys we look for; anything else cannot match */
            if (u < 0x80 && u != 0 && key && n + 1 < cap)
                key[n++] = (char)u;
            else
                ok = 0;
            continue;
        }
        default:
            return jp_fail(j, "bad escape in a string");
        }
        if (key && n + 1 < cap)
            key[n++] = dec;
        else
            ok = 0;
        j->p += 2;
    }
    if (key && cap)
        key[n] = '\0';
    if (fits)
        *fits = ok;
    return 0;
}

/* Exact powers of ten of the fast path (10^22 is the largest exact double power of ten). */
static const double jp_pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                    1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number at j->p, grammar checked.  Fast path (Clinger): when the decimal significand
 * is at most 2^53 and the decimal exponent within +-22, both are exact doubles and one IEEE
 * multiplication or division gives the correctly rounded value, the same strtod gives; that
 * covers what embedding servers print ("-0.0069292835", "1.2345678e-05").  Everything else
 * goes to strtod ("C" locale in effect). */
static int jp_number(jp *j, double *out)
{
    const char *s = j->p;
    const char *q = s;
    int neg = 0;
    uint64_t m = 0;
    int digits = 0;  /* significant digits accumulated in m */
    int exp10 = 0;   /* value = m * 10^exp10 (before the exponent part) */
    int exact = 1;   /* m holds every significant digit */
    if (q < j->end && *q == '-') {
        neg = 1;
        q++;
    }
    if (q >= j->end || !isdigit((unsigned char)*q))
        return jp_fail(j, "expected a number");
    if (*q == '0') {
        q++;
    } else {
        while (q < j->end && isdigit((unsigned char)*q)) {
            if (digits < 19) {
                m = m * 10u + (uint64_t)(*q - '0');
                digits++;
            } else {
                exact = 0;
            }
            q++;
        }
    }
    if (q < j->end && *q == '.') {
        q++;
        if (q >= j->end || !isdigit((unsigned char)*q))
            return jp_fail(j, "bad number");
        while (q < j->end && isdigit((unsigned char)*q)) {
            if (m == 0 && *q == '0') {
                exp10--; /* leading zeros of the fraction are not significant */
            } else if (digits < 19) {
                m = m * 10u + (uint64_t)(*q - '0');
                digits++;
                exp10--;
            } else {
                exact = 0;
            }
            q++;
        }
    }
    if (q < j->end && (*q == 'e' || *q == 'E')) {
        q++;
        int eneg = 0, e = 0;
        if (q < j->end && (*q == '+' || *q == '-')) {
            eneg = *q == '-';
            q++;
        }
        if (q >= j->end || !isdigit((unsigned char)*q))
            return jp_fail(j, "bad number");
        while (q < j->end && isdigit((unsigned char)*q)) {
            if (e < 100000)
                e = e * 10 + (*q - '0');
            q++;
        }
        exp10 += eneg ? -e : e;
    }
    if (exact && m <= (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
        double v = (double)m;
        v = exp10 < 0 ? v / jp_pow10[-exp10] : v * jp_pow10[exp10];
        *out = neg ? -v : v;
    } else {
        /* the body is NUL-terminated (on_body), so strtod stops at its end at the latest;
         * it must stop exactly where the grammar did */
        char *e = NULL;
        *out = strtod(s, &e);
        if (e != q)
            return jp_fail(j, "bad number");
    }
    j->p = q;
    return 0;
}

static int jp_literal(jp *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return jp_fail(j, "unexpected character");
    j->p += n;
    return 0;
}

static int jp_skip(jp *j, int depth)
{
    if (depth > JP_DEPTH_MAX)
        return jp_fail(j, "nested too deeply");
    jp_ws(j);
    if (j->p >= j->end)
        return jp_fail(j, "unexpected end");
    double d;
    switch (*j->p) {
    case '"':
        return jp_string(j, NULL, 0, NULL);
    case '{':
        j->p++;
        jp_ws(j);
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return 0;
        }
        for (;;) {
            jp_ws(j);
            if (jp_string(j, NULL, 0, NULL) || jp_expect(j, ':', "expected ':'") ||
                jp_skip(j, depth + 1))
                return -1;
            jp_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            return jp_expect(j, '}', "expected ',' or '}'");
        }
    case '[':
        j->p++;
        jp_ws(j);
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return 0;
        }
        for (;;) {
            if (jp_skip(j, depth + 1))
                return -1;
            jp_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            return jp_expect(j, ']', "expected ',' or ']'");
        }
    case 't':
        return jp_literal(j, "true");
    case 'f':
        return jp_literal(j, "false");
    case 'n':
        return jp_literal(j, "null");
    default:
        return jp_number(j, &d);
    }
}

typedef struct resp_ctx {
    remote_state *st;
    size_t n;
    float *out;
    float *row;          /* scratch: dim floats */
    unsigned char *seen; /* n flags */
    size_t items;        /* entries of "data" seen */
    int code;            /* a semantic error already reported (RAG_E*) */
} resp_ctx;

/* "embedding": [numbers] into rc->row; *count = numbers seen (may exceed dim). */
static int jp_embedding(jp *j, resp_ctx *rc, size_t pos, size_t *count)
{
    jp_ws(j);
    if (j->p >= j->end || *j->p != '[') {
        rc->code = report(rc->st, RAG_EPROVIDER,
                          "remote embedder: data[%zu].embedding from %s is not an array of "
                          "floats (base64 encoding?)",
                          pos, rc->st->url_safe);
        return -1;
    }
    j->p++;
    size_t k = 0;
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        *count = 0;
        return 0;
    }
    for (;;) {
        jp_ws(j);
        if (j->p < j->end && *j->p != '-' && !isdigit((unsigned char)*j->p)) {
            if (*j->p == '"' || *j->p == 'n' || *j->p == 't' || *j->p == 'f' || *j->p == '[' ||
                *j->p == '{') {
                rc->code = report(rc->st, RAG_EPROVIDER,
                                  "remote embedder: data[%zu].embedding[%zu] from %s is not a "
                                  "number",
                                  pos, k, rc->st->url_safe);
                return -1;
            }
        }
        double x;
        if (jp_number(j, &x))
            return -1;
        float f = (float)x;
        if (!isfinite(x) || !isfinite(f)) {
            rc->code = report(rc->st, RAG_EPROVIDER,
                              "remote embedder: data[%zu].embedding[%zu] from %s is not a "
                              "finite float",
                              pos, k, rc->st->url_safe);
            return -1;
        }
        if (k < rc->st->dim)
            rc->row[k] = f;
        k++;
        jp_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (jp_expect(j, ']', "expected ',' or ']'"))
            return -1;
        *count = k;
        return 0;
    }
}

/* One entry of "data". */
static int jp_item(jp *j, resp_ctx *rc, size_t pos)
{
    remote_state *st = rc->st;
    if (jp_expect(j, '{', "data[] entries must be objects"))
        return -1;
    long long idx = -1;
    int have_emb = 0;
    size_t count = 0;
    jp_ws(j);
    if (j->p < j->end && *j->p == '}')
        j->p++;
    else
        for (;;) {
            char key[16];
            int fits = 0;
            jp_ws(j);
            if (jp_string(j, key, sizeof key, &fits) || jp_expect(j, ':', "expected ':'"))
                return -1;
            jp_ws(j);
            if (fits && strcmp(key, "index") == 0) {
                double d;
                if (j->p >= j->end || (*j->p != '-' && !isdigit((unsigned char)*j->p)) ||
                    jp_number(j, &d) || d != floor(d) || d < 0 || d >= (double)rc->n) {
                    if (j->err)
                        return -1; /* a syntax error: reported as malformed JSON */
                    rc->code = report(st, RAG_EPROVIDER,
                                      "remote embedder: data[%zu] has an invalid \"index\" "
                                      "(expected an integer in 0..%zu)",
                                      pos, rc->n - 1);
                    return -1;
                }
                idx = (long long)d;
            } else if (fits && strcmp(key, "embedding") == 0) {
                if (have_emb) {
                    rc->code = report(st, RAG_EPROVIDER,
                                      "remote embedder: data[%zu] has two \"embedding\" members",
                                      pos);
                    return -1;
                }
                if (jp_embedding(j, rc, pos, &count))
                    return -1;
                have_emb = 1;
            } else if (jp_skip(j, 2)) {
                return -1;
            }
            jp_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (jp_expect(j, '}', "expected ',' or '}'"))
                return -1;
            break;
        }
    if (!have_emb) {
        rc->code = report(st, RAG_EPROVIDER, "remote embedder: data[%zu] from %s has no "
                                             "\"embedding\"",
                          pos, st->url_safe);
        return -1;
    }
    if (count != st->dim) {
        rc->code = report(st, RAG_EPROVIDER,
                          "remote embedder: wrong dimension from %s: got %zu floats, expected %u "
                          "(model '%s')",
                          st->url_safe, count, st->dim, st->model);
        return -1;
    }
    size_t at = idx >= 0 ? (size_t)idx : pos; /* no "index": position */
    if (rc->seen[at]) {
        rc->code = report(st, RAG_EPROVIDER,
                          "remote embedder: index %zu appears twice in the response", at);
        return -1;
    }
    rc->seen[at] = 1;
    float *dst = rc->out + at * (size_t)st->dim;
    if (st->no_normalize) {
        memcpy(dst, rc->row, (size_t)st->dim * sizeof *dst);
        return 0;
    }
    double ss = 0.0;
    for (unsigned int d = 0; d < st->dim; d++)
        ss += (double)rc->row[d] * (double)rc->row[d];
    double inv = ss > 0.0 ? 1.0 / sqrt(ss) : 0.0; /* a zero vector stays zero */
    for (unsigned int d = 0; d < st->dim; d++)
        dst[d] = (float)((double)rc->row[d] * inv);
    return 0;
}

static int jp_data(jp *j, resp_ctx *rc)
{
    if (jp_expect(j, '[', "\"data\" must be an array"))
        return -1;
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        if (rc->items >= rc->n) {
            rc->code = report(rc->st, RAG_EPROVIDER,
                              "remote embedder: response from %s has more than %zu embeddings",
                              rc->st->url_safe, rc->n);
            return -1;
        }
        if (jp_item(j, rc, rc->items))
            return -1;
        rc->items++;
        jp_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return jp_expect(j, ']', "expected ',' or ']'");
    }
}

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale = (locale_t)0;
static void c_locale_init(void) { c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

/* Parse {"data":[{"index":i,"embedding":[...]}...]} into out[n*dim]. */
static int parse_response(remote_state *st, const char *body, size_t len, size_t n, float *out)
{
    resp_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.st = st;
    rc.n = n;
    rc.out = out;
    rc.row = malloc((size_t)st->dim * sizeof *rc.row);
    rc.seen = calloc(n ? n : 1, 1);
    if (!rc.row || !rc.seen || !body) {
        free(rc.row);
        free(rc.seen);
        if (!body)
            return report(st, RAG_EPROVIDER, "remote embedder: empty response from %s",
                          st->url_safe);
        return report(st, RAG_ENOMEM, "remote embedder: out of memory parsing a response");
    }
    pthread_once(&c_locale_once, c_locale_init);
    locale_t saved = c_locale ? uselocale(c_locale) : (locale_t)0;

    jp j = {body, body, body + len, NULL, NULL};
    int have_data = 0;
    int r = jp_expect(&j, '{', "expected a JSON object");
    jp_ws(&j);
    if (!r && j.p < j.end && *j.p == '}')
        j.p++;
    else
        while (!r) {
            char key[16];
            int fits = 0;
            jp_ws(&j);
            r = jp_string(&j, key, sizeof key, &fits);
            if (!r)
                r = jp_expect(&j, ':', "expected ':'");
            if (r)
                break;
            if (fits && strcmp(key, "data") == 0 && !have_data) {
                have_data = 1;
                r = jp_data(&j, &rc);
            } else {
                r = jp_skip(&j, 1);
            }
            if (r)
                break;
            jp_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            r = jp_expect(&j, '}', "expected ',' or '}'");
            break;
        }
    if (!r) {
        jp_ws(&j);
        if (j.p != j.end)
            r = jp_fail(&j, "trailing data after the JSON object");
    }
    if (saved)
        uselocale(saved);

    int code = RAG_OK;
    if (rc.code) {
        code = rc.code;
    } else if (r) {
        char ex[REMOTE_EXCERPT_MAX + 1];
        excerpt(st, body, len, ex, sizeof ex);
        code = report(st, RAG_EPROVIDER,
                      "remote embedder: malformed JSON from %s (%s at byte %zu of %zu): %s",
                      st->url_safe, j.err ? j.err : "syntax error",
                      (size_t)((j.err_at ? j.err_at : j.p) - body), len, ex);
    } else if (!have_data) {
        code = report(st, RAG_EPROVIDER, "remote embedder: response from %s has no \"data\" "
                                         "array",
                      st->url_safe);
    } else if (rc.items != n) {
        code = report(st, RAG_EPROVIDER,
                      "remote embedder: response from %s has %zu embeddings, expected %zu",
                      st->url_safe, rc.items, n);
    }
    free(rc.row);
    free(rc.seen);
    return code;
}

/* ---- the vtable ----------------------------------------------------------------------------- */

/* One slice of at most batch_size texts, with its retries. */
static int embed_slice(remote_state *st, CURL **hp, const char *const *texts, const size_t *lens,
                       size_t n, float *out, exchange *x)
{
    char *payload = NULL;
    size_t payload_len = 0;
    int rc = build_payload(st, texts, lens, n, &payload, &payload_len);
    if (rc)
        return rc;
    unsigned int attempts = 0;
    for (unsigned int attempt = 0;; attempt++) {
        if (!*hp) {
            *hp = handle_get(st);
            if (!*hp) {
                rc = report(st, RAG_ENOMEM, "remote embedder: curl_easy_init failed");
                break;
            }
        }
        if (attempt > 0)
            atomic_fetch_add(&st->retries, 1);
        atomic_fetch_add(&st->requests, 1);
        attempts++;
        int keep = 1;
        int out_kind = exchange_run(st, *hp, payload, payload_len, n, x, &rc, &keep);
        if (!keep) {
            handle_put(st, *hp, 0);
            *hp = NULL;
        }
        if (out_kind == OUT_OK) {
            rc = parse_response(st, x->body.data, x->body.len, n, out);
            break;
        }
        if (out_kind == OUT_FAIL)
            break;
        /* OUT_RETRY */
        if (attempt >= st->max_retries) {
            char last[REMOTE_MSG_MAX];
            snprintf(last, sizeof last, "%s", rag_error_last());
            rc = report(st, RAG_ETRANSIENT, "%s (gave up after %u attempts)", last, attempts);
            break;
        }
        uint32_t delay = x->retry_after_ms >= 0
                             ? (uint32_t)x->retry_after_ms
                             : rag_backoff_ms(attempt, st->backoff_base_ms, st->backoff_cap_ms);
        if (delay)
            sleep_ms(delay);
    }
    wipe(payload, payload_len); /* user text: not a secret, but no reason to leave it around */
    free(payload);
    return rc;
}

static int remote_embed(void *state, const char *const *texts, const size_t *lens, size_t n,
                        float *out)
{
    remote_state *st = state;
    if (!st || st->magic != REMOTE_MAGIC || (!texts && n) || (!lens && n) || (!out && n))
        return rag_error_set(RAG_EINVAL, "remote embedder: NULL argument");
    if (n == 0)
        return RAG_OK;
    exchange x;
    memset(&x, 0, sizeof x);
    CURL *h = NULL;
    int rc = RAG_OK;
    for (size_t i = 0; i < n && rc == RAG_OK; i += st->batch_size) {
        size_t m = n - i < st->batch_size ? n - i : st->batch_size;
        rc = embed_slice(st, &h, texts + i, lens + i, m, out + i * (size_t)st->dim, &x);
        if (rc == RAG_OK)
            atomic_fetch_add(&st->texts, (unsigned long long)m);
    }
    handle_put(st, h, 1);
    free(x.body.data);
    if (rc)
        atomic_fetch_add(&st->failures, 1);
    return rc;
}

static int remote_fingerprint(void *state, char *buf, size_t size)
{
    remote_state *st = state;
    size_t n = strlen(st->fingerprint);
    if (!buf || size <= n)
        return RAG_EINVAL;
    memcpy(buf, st->fingerprint, n + 1);
    return RAG_OK;
}

static void remote_free(void *state)
{
    remote_state *st = state;
    if (!st)
        return;
    for (size_t i = 0; i < st->pool_len; i++)
        curl_easy_cleanup(st->pool[i]);
    pthread_mutex_destroy(&st->pool_mu);
    if (st->key) {
        wipe(st->key, st->key_len);
        free(st->key);
    }
    if (st->auth_header) {
        wipe(st->auth_header, strlen(st->auth_header));
        free(st->auth_header);
    }
    free(st->url);
    free(st->url_safe);
    free(st->model);
    st->magic = 0;
    free(st);
}

/* ---- init ----------------------------------------------------------------------------------- */

static int scheme_ok(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

static int make_fingerprint(remote_state *st, const char *override)
{
    if (override) {
        size_t ol = strlen(override);
        if (ol == 0 || ol >= RAG_EMBED_FINGERPRINT_MAX)
            return rag_error_set(RAG_EINVAL,
                                 "rag_embed_remote_init: fingerprint must be 1..%d bytes",
                                 RAG_EMBED_FINGERPRINT_MAX - 1);
        memcpy(st->fingerprint, override, ol + 1);
        return RAG_OK;
    }
    char suffix[16];
    snprintf(suffix, sizeof suffix, ":d%u", st->dim);
    const size_t ml = strlen(st->model), sl = strlen(suffix);
    const size_t room = RAG_EMBED_FINGERPRINT_MAX - 1 - (sizeof "remote:" - 1) - sl;
    if (ml <= room) {
        char *w = st->fingerprint; /* fits: 7 + ml + sl < MAX */
        memcpy(w, "remote:", 7);
        memcpy(w + 7, st->model, ml);
        memcpy(w + 7 + ml, suffix, sl + 1);
        return RAG_OK;
    }
    /* Too long: a prefix cut on a UTF-8 boundary, plus a digest of the whole name so that two
     * long names sharing a prefix still get different fingerprints. */
    uint8_t h[16];
    char hex[33];
    rag_hash128(st->model, ml, h);
    rag_hex(h, 8, hex);
    size_t keep = utf8_cut(st->model, room - 17); /* "~" + 16 hex digits */
    char *w = st->fingerprint; /* fits by construction: 7 + keep + 17 + sl < MAX */
    memcpy(w, "remote:", 7);
    w += 7;
    memcpy(w, st->model, keep);
    w += keep;
    *w++ = '~';
    memcpy(w, hex, 16);
    w += 16;
    memcpy(w, suffix, sl + 1);
    return RAG_OK;
}

int rag_embed_remote_init(rag_embed_provider *out, const rag_embed_remote_options *opts)
{
    if (!out || !opts)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: NULL argument");
    memset(out, 0, sizeof *out);
    if (opts->version == 0 || opts->version > RAG_EMBED_REMOTE_OPTIONS_VERSION)
        return rag_error_set(RAG_EVERSION, "rag_embed_remote_init: options version %u not "
                                           "supported (this build knows %u)",
                             opts->version, RAG_EMBED_REMOTE_OPTIONS_VERSION);
    if (!opts->base_url || !*opts->base_url)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: base_url is required");
    if (!scheme_ok(opts->base_url))
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: base_url must start with "
                                         "http:// or https://");
    if (!opts->model || !*opts->model)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: model is required");
    if (opts->dim == 0 || opts->dim > REMOTE_DIM_MAX)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: dim %u outside 1..%u",
                             opts->dim, REMOTE_DIM_MAX);
    for (const char *p = opts->base_url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: base_url contains a space "
                                             "or control character");
    {
        /* a host must follow "scheme://" (userinfo, if any, does not count) */
        const char *auth = strstr(opts->base_url, "://") + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *host = auth;
        for (const char *p = auth; p < auth + alen; p++)
            if (*p == '@')
                host = p + 1;
        if (host >= auth + alen)
            return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: base_url has no host");
    }
    {
        json_t *probe = json_string(opts->model);
        if (!probe)
            return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: model is not valid UTF-8");
        json_decref(probe);
    }
    if (opts->api_key_env && !*opts->api_key_env)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_init: api_key_env is empty (NULL "
                                         "means no key)");

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return rag_error_set(RAG_ERROR, "rag_embed_remote_init: curl_global_init failed: %s",
                             curl_easy_strerror(curl_init_rc));

    remote_state *st = calloc(1, sizeof *st);
    if (!st)
        return rag_error_set(RAG_ENOMEM, "rag_embed_remote_init: out of memory");
    if (pthread_mutex_init(&st->pool_mu, NULL) != 0) {
        free(st);
        return rag_error_set(RAG_ERROR, "rag_embed_remote_init: pthread_mutex_init failed");
    }
    st->magic = REMOTE_MAGIC;
    st->dim = opts->dim;
    st->batch_size = opts->batch_size ? opts->batch_size : REMOTE_BATCH_DEFAULT;
    st->connect_timeout_ms =
        opts->connect_timeout_ms ? opts->connect_timeout_ms : REMOTE_CONNECT_TIMEOUT_DEFAULT;
    st->timeout_ms = opts->timeout_ms ? opts->timeout_ms : REMOTE_TIMEOUT_DEFAULT;
    st->max_retries = opts->max_retries ? opts->max_retries : REMOTE_RETRIES_DEFAULT;
    st->backoff_base_ms = opts->backoff_base_ms ? opts->backoff_base_ms
                                                : REMOTE_BACKOFF_BASE_DEFAULT;
    st->backoff_cap_ms = opts->backoff_cap_ms ? opts->backoff_cap_ms : REMOTE_BACKOFF_CAP_DEFAULT;
    if (st->backoff_cap_ms < st->backoff_base_ms)
        st->backoff_cap_ms = st->backoff_base_ms;
    st->no_normalize = opts->no_normalize != 0;
    atomic_init(&st->requests, 0);
    atomic_init(&st->retries, 0);
    atomic_init(&st->texts, 0);
    atomic_init(&st->failures, 0);

    int rc = RAG_OK;
    size_t bl = strlen(opts->base_url);
    while (bl > 0 && opts->base_url[bl - 1] == '/')
        bl--;
    {
        static const char tail[] = "/embeddings";
        st->url = malloc(bl + sizeof tail);
        if (st->url) {
            memcpy(st->url, opts->base_url, bl);
            memcpy(st->url + bl, tail, sizeof tail);
        }
    }
    st->model = strdup(opts->model);
    if (!st->url || !st->model) {
        rc = rag_error_set(RAG_ENOMEM, "rag_embed_remote_init: out of memory");
        goto fail;
    }
    st->url_safe = strip_userinfo(st->url);
    if (!st->url_safe) {
        rc = rag_error_set(RAG_ENOMEM, "rag_embed_remote_init: out of memory");
        goto fail;
    }

    if (opts->api_key_env) {
        const char *key = getenv(opts->api_key_env);
        if (!key || !*key) {
            rc = rag_error_set(RAG_EINVAL,
                               "rag_embed_remote_init: environment variable %s (api_key_env) is "
                               "%s",
                               opts->api_key_env, key ? "empty" : "not set");
            goto fail;
        }
        for (const char *p = key; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f) {
                /* a CR/LF would let the key inject headers; say which variable, never the
                 * value */
                rc = rag_error_set(RAG_EINVAL,
                                   "rag_embed_remote_init: the key in %s contains control "
                                   "characters",
                                   opts->api_key_env);
                goto fail;
            }
        st->key_len = strlen(key);
        st->key = xstrndup(key, st->key_len);
        static const char prefix[] = "Authorization: Bearer ";
        st->auth_header = malloc(sizeof prefix + st->key_len);
        if (!st->key || !st->auth_header) {
            rc = rag_error_set(RAG_ENOMEM, "rag_embed_remote_init: out of memory");
            goto fail;
        }
        memcpy(st->auth_header, prefix, sizeof prefix - 1);
        memcpy(st->auth_header + sizeof prefix - 1, key, st->key_len + 1);
    }

    rc = make_fingerprint(st, opts->fingerprint);
    if (rc)
        goto fail;

    rag_embed_provider_init(out, RAG_EMBED_PROVIDER_VERSION);
    out->state = st;
    out->dim = st->dim;
    out->flags = 0;     /* thread-safe: see the top of the file */
    out->max_batch = 0; /* the provider splits by batch_size itself */
    out->embed = remote_embed;
    out->fingerprint = remote_fingerprint;
    out->free = remote_free;
    out->bag = NULL;
    return RAG_OK;
fail:
    remote_free(st);
    return rc;
}

int rag_embed_remote_stats_get(const rag_embed_provider *p, rag_embed_remote_stats *out)
{
    if (!p || !out || p->embed != remote_embed || !p->state)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_stats_get: not a remote provider");
    remote_state *st = p->state;
    if (st->magic != REMOTE_MAGIC)
        return rag_error_set(RAG_EINVAL, "rag_embed_remote_stats_get: not a remote provider");
    out->requests = atomic_load(&st->requests);
    out->retries = atomic_load(&st->retries);
    out->texts = atomic_load(&st->texts);
    out->failures = atomic_load(&st->failures);
    return RAG_OK;
}
