/*
 * In-process OpenAI-compatible embeddings server (see fake_openai_server.h).
 *
 * Threads: one accept thread; one thread per connection (so that a slow answer on one
 * connection does not hold up another, and keep-alive connections parked in a client's
 * handle pool cost nothing).  Every blocking point polls the socket together with a wake
 * pipe that stop() makes readable for good, so stop() can join every thread promptly, also
 * those sleeping in an injected delay.
 */
#include "fake_openai_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAKE_HEADER_MAX (64 * 1024)
#define FAKE_BODY_MAX ((size_t)256 << 20)
#define FAKE_AUTH_MAX 1024

typedef struct fake_conn {
    int fd;
    pthread_t thread;
    int done; /* set by the thread as it ends (under the server mutex) */
    struct fake_conn *next;
    struct fake_openai *srv;
} fake_conn;

struct fake_openai {
    unsigned int dim;
    int listen_fd;
    int wake[2]; /* [0] polled everywhere; stop() writes one byte and never reads it */
    unsigned short port;
    char base_url[64];
    pthread_t accept_thread;

    pthread_mutex_t mu; /* everything below */
    int stopping;
    fake_conn *conns;
    /* knobs */
    int fail_n, fail_status, fail_retry_after;
    int slow_n;
    unsigned int slow_ms, latency_ms;
    int truncate_n;
    int wrong_dim_n;
    unsigned int wrong_dim;
    int echo_n, echo_status;
    char *marker;
    int marker_status;
    int raw_n, raw_status;
    char *raw_body;
    /* counters */
    unsigned long requests, texts, connections;
    size_t max_batch;
    char last_auth[FAKE_AUTH_MAX];
};

/* ---- deterministic vectors ------------------------------------------------------------------ */

static uint64_t fake_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void fake_openai_vector(unsigned int dim, const char *text, size_t len, float *out)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)text[i];
        h *= 0x100000001b3ULL;
    }
    for (unsigned int d = 0; d < dim; d++) {
        /* multiples of 1/4096 in [-1, 1): exact as floats and in short decimal, so the
         * server prints them exactly with integer arithmetic (fake_put_component) */
        int64_t m = (int64_t)(fake_splitmix(&h) >> 51) - 4096;
        out[d] = (float)((double)m / 4096.0);
    }
}

/* Exact decimal text of out[d] = m/4096 (at most 15 characters). */
static size_t fake_put_component(float v, char *buf)
{
    int64_t m = (int64_t)(v * 4096.0f);
    size_t n = 0;
    if (m < 0) {
        buf[n++] = '-';
        m = -m;
    }
    buf[n++] = (char)('0' + m / 4096);
    uint64_t frac = (uint64_t)(m % 4096) * 244140625ULL; /* 1/4096 = 0.000244140625 */
    if (frac) {
        char digits[12];
        for (int i = 11; i >= 0; i--) {
            digits[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        int last = 11;
        while (digits[last] == '0')
            last--;
        buf[n++] = '.';
        memcpy(buf + n, digits, (size_t)last + 1);
        n += (size_t)last + 1;
    }
    return n;
}

/* ---- small I/O helpers ---------------------------------------------------------------------- */

typedef struct fake_buf {
    char *p;
    size_t len, cap;
    int oom;
} fake_buf;

static void fb_reserve(fake_buf *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void fb_add(fake_buf *b, const char *s, size_t n)
{
    fb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void fb_printf(fake_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fb_printf(fake_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    fb_reserve(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Wait for `fd` readable (or the wake pipe).  1: readable, 0: stopping, -1: error. */
static int fake_wait(fake_openai *s, int fd, int timeout_ms)
{
    struct pollfd p[2] = {{s->wake[0], POLLIN, 0}, {fd, POLLIN, 0}};
    for (;;) {
        int r = poll(p, fd >= 0 ? 2 : 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (p[0].revents)
            return 0;
        if (r == 0)
            return -2; /* timeout */
        return 1;
    }
}

/* Sleep `ms`, cut short by stop().  0: slept, -1: stopping. */
static int fake_sleep(fake_openai *s, unsigned int ms)
{
    if (!ms)
        return 0;
    return fake_wait(s, -1, (int)ms) == 0 ? -1 : 0;
}

static int fake_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static const char *fake_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

static int fake_respond(int fd, int status, const char *body, size_t len, int retry_after,
                        int close_conn)
{
    char head[512], ra[48] = "";
    if (retry_after >= 0)
        snprintf(ra, sizeof ra, "Retry-After: %d\r\n", retry_after);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n%s%s\r\n",
                      status, fake_reason(status), len, ra,
                      close_conn ? "Connection: close\r\n" : "");
    if (fake_send_all(fd, head, (size_t)hl))
        return -1;
    return len ? fake_send_all(fd, body, len) : 0;
}

static int fake_error(int fd, int status, const char *msg, int retry_after, int close_conn)
{
    json_t *o = json_pack("{s:{s:s,s:s,s:i}}", "error", "message", msg, "type",
                          status == 429 ? "rate_limit_error" : "invalid_request_error", "code",
                          status);
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    int rc = fake_respond(fd, status, txt ? txt : "{}", txt ? strlen(txt) : 2, retry_after,
                          close_conn);
    free(txt);
    return rc;
}

/* ---- one request ---------------------------------------------------------------------------- */

typedef struct fake_plan {
    char *raw; /* answer this body with `status` */
    unsigned int sleep_ms;
    int status, retry_after; /* status != 0: answer this error */
    int echo;                /* status set too */
    int truncate;
    unsigned int dim;
} fake_plan;

static int fake_handle(fake_openai *s, int fd, const char *method, const char *path,
                       const char *auth, const char *body, size_t blen, int close_conn)
{
    fake_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.retry_after = -1;

    /* counters and the knobs of this request, decided on arrival */
    pthread_mutex_lock(&s->mu);
    s->requests++;
    snprintf(s->last_auth, sizeof s->last_auth, "%s", auth ? auth : "");
    pl.sleep_ms = s->latency_ms;
    if (s->slow_n > 0) {
        s->slow_n--;
        pl.sleep_ms += s->slow_ms;
    }
    pl.dim = s->dim;
    char *marker = s->marker ? strdup(s->marker) : NULL;
    int marker_status = s->marker_status;
    if (s->raw_n > 0) {
        s->raw_n--;
        pl.raw = strdup(s->raw_body ? s->raw_body : "");
        pl.status = s->raw_status;
    } else if (s->fail_n > 0) {
        s->fail_n--;
        pl.status = s->fail_status;
        pl.retry_after = s->fail_retry_after;
    } else if (s->echo_n > 0) {
        s->echo_n--;
        pl.status = s->echo_status;
        pl.echo = 1;
    } else if (s->truncate_n > 0) {
        s->truncate_n--;
        pl.truncate = 1;
    } else if (s->wrong_dim_n > 0) {
        s->wrong_dim_n--;
        pl.dim = s->wrong_dim;
    }
    pthread_mutex_unlock(&s->mu);

    int rc = 0;
    json_t *req = NULL;
    float *vec = NULL;
    fake_buf out = {0};
    if (fake_sleep(s, pl.sleep_ms)) {
        rc = -1;
        goto done;
    }
    if (pl.raw) {
        rc = fake_respond(fd, pl.status, pl.raw, strlen(pl.raw), -1, close_conn);
        goto done;
    }
    if (strcmp(method, "POST") != 0) {
        rc = fake_error(fd, 405, "only POST /v1/embeddings", -1, close_conn);
        goto done;
    }
    size_t pl_len = strlen(path);
    if (pl_len < 11 || strcmp(path + pl_len - 11, "/embeddings") != 0) {
        rc = fake_error(fd, 404, "no such endpoint", -1, close_conn);
        goto done;
    }
    json_error_t jerr;
    req = json_loadb(body, blen, 0, &jerr);
    json_t *input = req ? json_object_get(req, "input") : NULL;
    const char *model = req ? json_string_value(json_object_get(req, "model")) : NULL;
    if (!req || !model || !(json_is_array(input) || json_is_string(input))) {
        rc = fake_error(fd, 400, "expected {\"model\": string, \"input\": [strings]}", -1,
                        close_conn);
        goto done;
    }
    size_t n = json_is_array(input) ? json_array_size(input) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_is_array(input) ? json_array_get(input, i) : input;
        if (!json_is_string(t)) {
            rc = fake_error(fd, 400, "input items must be strings", -1, close_conn);
            goto done;
        }
        if (marker && strstr(json_string_value(t), marker) && !pl.status) {
            pl.status = marker_status;
            pl.echo = 0;
            pl.retry_after = -1;
        }
    }
    pthread_mutex_lock(&s->mu);
    if (n > s->max_batch)
        s->max_batch = n;
    pthread_mutex_unlock(&s->mu);

    if (pl.status) {
        char msg[FAKE_AUTH_MAX + 64];
        if (pl.echo)
            snprintf(msg, sizeof msg, "invalid credentials: got Authorization '%s'",
                     auth ? auth : "");
        else
            snprintf(msg, sizeof msg, "injected HTTP %d", pl.status);
        rc = fake_error(fd, pl.status, msg, pl.retry_after, close_conn);
        goto done;
    }

    vec = malloc((pl.dim ? pl.dim : 1) * sizeof *vec);
    if (!vec) {
        rc = fake_error(fd, 500, "out of memory", -1, close_conn);
        goto done;
    }
    fb_printf(&out, "{\"object\":\"list\",\"data\":[");
    /* reverse order: the client must place rows by "index" */
    for (size_t k = 0; k < n; k++) {
        size_t i = n - 1 - k;
        json_t *t = json_is_array(input) ? json_array_get(input, i) : input;
        fake_openai_vector(pl.dim, json_string_value(t), json_string_length(t), vec);
        fb_printf(&out, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":[", k ? "," : "",
                  i);
        fb_reserve(&out, (size_t)pl.dim * 16);
        for (unsigned int d = 0; d < pl.dim && !out.oom; d++) {
            if (d)
                out.p[out.len++] = ',';
            out.len += fake_put_component(vec[d], out.p + out.len);
        }
        if (!out.oom)
            out.p[out.len] = '\0';
        fb_add(&out, "]}", 2);
    }
    fb_printf(&out, "],\"model\":\"%s\",\"usage\":{\"prompt_tokens\":%zu,\"total_tokens\":%zu}}",
              "fake", n, n);
    if (out.oom) {
        rc = fake_error(fd, 500, "out of memory", -1, close_conn);
        goto done;
    }
    pthread_mutex_lock(&s->mu);
    s->texts += n;
    pthread_mutex_unlock(&s->mu);
    rc = fake_respond(fd, 200, out.p, pl.truncate ? out.len / 2 : out.len, -1, close_conn);
done:
    free(pl.raw);
    free(marker);
    free(vec);
    free(out.p);
    json_decref(req);
    return rc;
}

/* ---- connections ---------------------------------------------------------------------------- */

/* Value of header `name` in the header block [hdr, end), copied into buf; 1 found, 0 not. */
static int fake_header(const char *hdr, const char *end, const char *name, char *buf,
                       size_t size)
{
    size_t nl = strlen(name);
    const char *line = hdr;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            size_t n = (size_t)(ve - v);
            if (n >= size)
                n = size - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return 1;
        }
        line = eol + 1;
    }
    return 0;
}

static void *fake_conn_main(void *arg)
{
    fake_conn *c = arg;
    fake_openai *s = c->srv;
    fake_buf in = {0};
    for (;;) {
        /* read until the end of the headers (some bytes of a pipelined request may already
         * be in the buffer) */
        char *eoh = NULL;
        while (!(eoh = in.len ? strstr(in.p, "\r\n\r\n") : NULL)) {
            if (in.len > FAKE_HEADER_MAX)
                goto out;
            if (fake_wait(s, c->fd, -1) != 1)
                goto out;
            fb_reserve(&in, 65536);
            if (in.oom)
                goto out;
            ssize_t r = recv(c->fd, in.p + in.len, in.cap - in.len - 1, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                goto out;
            in.len += (size_t)r;
            in.p[in.len] = '\0';
        }
        size_t head_len = (size_t)(eoh - in.p) + 4;
        char method[16] = "", path[1024] = "";
        if (sscanf(in.p, "%15s %1023s", method, path) != 2)
            goto out;
        const char *hdr = memchr(in.p, '\n', head_len);
        hdr = hdr ? hdr + 1 : eoh;
        char val[FAKE_AUTH_MAX], auth[FAKE_AUTH_MAX];
        size_t clen = 0;
        if (fake_header(hdr, eoh + 2, "Content-Length", val, sizeof val))
            clen = (size_t)strtoull(val, NULL, 10);
        if (clen > FAKE_BODY_MAX)
            goto out;
        int have_auth = fake_header(hdr, eoh + 2, "Authorization", auth, sizeof auth);
        int close_conn = 0;
        if (fake_header(hdr, eoh + 2, "Connection", val, sizeof val) &&
            strcasecmp(val, "close") == 0)
            close_conn = 1;
        if (fake_header(hdr, eoh + 2, "Transfer-Encoding", val, sizeof val)) {
            fake_error(c->fd, 400, "chunked request bodies are not supported", -1, 1);
            goto out;
        }
        /* the body */
        while (in.len < head_len + clen) {
            if (fake_wait(s, c->fd, -1) != 1)
                goto out;
            fb_reserve(&in, head_len + clen - in.len);
            if (in.oom)
                goto out;
            ssize_t r = recv(c->fd, in.p + in.len, in.cap - in.len - 1, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                goto out;
            in.len += (size_t)r;
            in.p[in.len] = '\0';
        }
        if (fake_handle(s, c->fd, method, path, have_auth ? auth : NULL, in.p + head_len, clen,
                        close_conn) != 0 ||
            close_conn)
            goto out;
        /* keep what follows this request */
        size_t used = head_len + clen;
        memmove(in.p, in.p + used, in.len - used + 1);
        in.len -= used;
    }
out:
    free(in.p);
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_lock(&s->mu);
    c->done = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Join and free connection threads that have ended (all of them when `all`). */
static void fake_reap(fake_openai *s, int all)
{
    for (;;) {
        fake_conn *victim = NULL;
        pthread_mutex_lock(&s->mu);
        for (fake_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
            if (all || (*pp)->done) {
                victim = *pp;
                *pp = victim->next;
                break;
            }
        pthread_mutex_unlock(&s->mu);
        if (!victim)
            return;
        pthread_join(victim->thread, NULL);
        close(victim->fd);
        free(victim);
    }
}

static void *fake_accept_main(void *arg)
{
    fake_openai *s = arg;
    for (;;) {
        if (fake_wait(s, s->listen_fd, -1) != 1)
            break;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fake_reap(s, 0);
        fake_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->srv = s;
        pthread_mutex_lock(&s->mu);
        s->connections++;
        if (pthread_create(&c->thread, NULL, fake_conn_main, c) != 0) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        s->conns = c;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* ---- lifecycle and knobs -------------------------------------------------------------------- */

int fake_openai_start(fake_openai **out, unsigned int dim)
{
    *out = NULL;
    fake_openai *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->dim = dim;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    s->fail_retry_after = -1;
    pthread_mutex_init(&s->mu, NULL);
    if (pipe(s->wake) != 0)
        goto fail;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0)
        goto fail;
    int one = 1;
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    if (bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(s->listen_fd, 128) != 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&a, &al) != 0)
        goto fail;
    s->port = ntohs(a.sin_port);
    snprintf(s->base_url, sizeof s->base_url, "http://127.0.0.1:%u/v1", (unsigned)s->port);
    if (pthread_create(&s->accept_thread, NULL, fake_accept_main, s) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
    return -1;
}

void fake_openai_stop(fake_openai *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);
    ssize_t w;
    do
        w = write(s->wake[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(s->accept_thread, NULL);
    close(s->listen_fd);
    /* a thread blocked in send() to a client that stopped reading does not poll: cut it */
    pthread_mutex_lock(&s->mu);
    for (fake_conn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    fake_reap(s, 1);
    close(s->wake[0]);
    close(s->wake[1]);
    free(s->marker);
    free(s->raw_body);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

unsigned short fake_openai_port(const fake_openai *s) { return s->port; }
const char *fake_openai_base_url(const fake_openai *s) { return s->base_url; }

void fake_openai_fail_next(fake_openai *s, int n, int status, int retry_after_s)
{
    pthread_mutex_lock(&s->mu);
    s->fail_n = n;
    s->fail_status = status;
    s->fail_retry_after = retry_after_s;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_slow_next(fake_openai *s, int n, unsigned int ms)
{
    pthread_mutex_lock(&s->mu);
    s->slow_n = n;
    s->slow_ms = ms;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_set_latency(fake_openai *s, unsigned int ms)
{
    pthread_mutex_lock(&s->mu);
    s->latency_ms = ms;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_truncate_next(fake_openai *s, int n)
{
    pthread_mutex_lock(&s->mu);
    s->truncate_n = n;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_wrong_dim_next(fake_openai *s, int n, unsigned int dim)
{
    pthread_mutex_lock(&s->mu);
    s->wrong_dim_n = n;
    s->wrong_dim = dim;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_echo_auth_next(fake_openai *s, int n, int status)
{
    pthread_mutex_lock(&s->mu);
    s->echo_n = n;
    s->echo_status = status;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_fail_marker(fake_openai *s, const char *marker, int status)
{
    char *copy = marker ? strdup(marker) : NULL;
    pthread_mutex_lock(&s->mu);
    free(s->marker);
    s->marker = copy;
    s->marker_status = status;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_raw_next(fake_openai *s, int n, int status, const char *body)
{
    char *copy = body ? strdup(body) : NULL;
    pthread_mutex_lock(&s->mu);
    free(s->raw_body);
    s->raw_body = copy;
    s->raw_n = n;
    s->raw_status = status;
    pthread_mutex_unlock(&s->mu);
}

void fake_openai_reset(fake_openai *s)
{
    pthread_mutex_lock(&s->mu);
    s->raw_n = 0;
    free(s->raw_body);
    s->raw_body = NULL;
    s->fail_n = s->slow_n = s->truncate_n = s->wrong_dim_n = s->echo_n = 0;
    s->fail_retry_after = -1;
    s->latency_ms = 0;
    free(s->marker);
    s->marker = NULL;
    s->requests = s->texts = s->connections = 0;
    s->max_batch = 0;
    s->last_auth[0] = '\0';
    pthread_mutex_unlock(&s->mu);
}

unsigned long fake_openai_requests(fake_openai *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned long v = s->requests;
    pthread_mutex_unlock(&s->mu);
    return v;
}

unsigned long fake_openai_texts(fake_openai *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned long v = s->texts;
    pthread_mutex_unlock(&s->mu);
    return v;
}

size_t fake_openai_max_batch(fake_openai *s)
{
    pthread_mutex_lock(&s->mu);
    size_t v = s->max_batch;
    pthread_mutex_unlock(&s->mu);
    return v;
}

unsigned long fake_openai_connections(fake_openai *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned long v = s->connections;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void fake_openai_last_auth(fake_openai *s, char *buf, size_t size)
{
    if (!size)
        return;
    pthread_mutex_lock(&s->mu);
    size_t n = strlen(s->last_auth);
    if (n >= size)
        n = size - 1;
    memcpy(buf, s->last_auth, n);
    buf[n] = '\0';
    pthread_mutex_unlock(&s->mu);
}
