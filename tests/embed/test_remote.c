/*
 * The remote (OpenAI-compatible HTTP) embedding provider against an in-process test server
 * (fake_openai_server.c): batching, placement by "index", normalisation, the retry policy
 * (429 with Retry-After, 5xx, timeouts, refused connections), permanent errors, malformed
 * responses, API-key handling (sent as Bearer, never in rag_error_last() even when a server
 * echoes it), fingerprints, thread-safety, and the whole pipeline through the public API:
 * ingest + search, a poisoned version dead-lettered with its saga failed, and 429 bursts
 * absorbed by the queue's own retries.
 *
 * Every provider here uses tiny backoffs (1..5 ms) and short timeouts, so the suite runs in
 * a few seconds; the one deliberate wait is a Retry-After of 1 s.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#include "fake_openai_server.c"

#define DIM 32
#define MODEL "test-model"
#define KEY_ENV "RAG_TEST_REMOTE_API_KEY"
#define KEY_VALUE "sk-test-SECRET-0123456789abcdef"

static fake_openai *srv; /* one server for the whole group; knobs reset per test */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void base_opts(rag_embed_remote_options *o)
{
    rag_embed_remote_options z = RAG_EMBED_REMOTE_OPTIONS_INIT;
    *o = z;
    o->base_url = fake_openai_base_url(srv);
    o->model = MODEL;
    o->dim = DIM;
    o->batch_size = 64;
    o->connect_timeout_ms = 1000;
    o->timeout_ms = 3000;
    o->max_retries = 3;
    o->backoff_base_ms = 1;
    o->backoff_cap_ms = 5;
}

static void make(rag_embed_provider *p, const rag_embed_remote_options *o)
{
    int rc = rag_embed_remote_init(p, o);
    if (rc)
        fail_msg("rag_embed_remote_init: %s (%s)", rag_strerror(rc), rag_error_last());
}

static rag_embed_remote_stats stats_of(const rag_embed_provider *p)
{
    rag_embed_remote_stats s;
    assert_int_equal(rag_embed_remote_stats_get(p, &s), RAG_OK);
    return s;
}

static int embed1(rag_embed_provider *p, const char *text, float *out)
{
    const char *t[1] = {text};
    size_t l[1] = {strlen(text)};
    return p->embed(p->state, t, l, 1, out);
}

static void expected_unit(const char *text, size_t len, float *out)
{
    fake_openai_vector(DIM, text, len, out);
    double ss = 0;
    for (int d = 0; d < DIM; d++)
        ss += (double)out[d] * out[d];
    double inv = ss > 0 ? 1.0 / sqrt(ss) : 0;
    for (int d = 0; d < DIM; d++)
        out[d] = (float)(out[d] * inv);
}

static int group_setup(void **state)
{
    (void)state;
    return fake_openai_start(&srv, DIM);
}

static int group_teardown(void **state)
{
    (void)state;
    fake_openai_stop(srv);
    srv = NULL;
    return 0;
}

static int reset(void **state)
{
    (void)state;
    fake_openai_reset(srv);
    return 0;
}

/* ---- the happy path ------------------------------------------------------------------------- */

static void test_batching_and_vectors(void **state)
{
    (void)state;
    enum { N = 150 };
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    assert_int_equal(p.version, RAG_EMBED_PROVIDER_VERSION);
    assert_int_equal(p.dim, DIM);
    assert_int_equal(p.flags, 0);
    assert_int_equal(p.max_batch, 0);
    assert_null(p.bag);

    char *texts[N];
    const char *tp[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        char buf[128];
        int n = snprintf(buf, sizeof buf, "chunk %d: \"quoted\" \\ tab\t and caf\xc3\xa9 \xe2\x82\xac%d",
                         i, i * 7);
        texts[i] = strdup(buf);
        tp[i] = texts[i];
        lens[i] = (size_t)n;
    }
    float *out = malloc(sizeof(float) * N * DIM);
    int rc = p.embed(p.state, tp, lens, N, out);
    if (rc)
        fail_msg("embed: %s", rag_error_last());
    assert_int_equal(fake_openai_requests(srv), 3); /* 64 + 64 + 22 */
    assert_int_equal(fake_openai_max_batch(srv), 64);
    assert_int_equal(fake_openai_texts(srv), N);
    for (int i = 0; i < N; i++) {
        float want[DIM];
        expected_unit(tp[i], lens[i], want);
        double norm = 0;
        for (int d = 0; d < DIM; d++) {
            norm += (double)out[i * DIM + d] * out[i * DIM + d];
            if (fabsf(out[i * DIM + d] - want[d]) > 1e-6f)
                fail_msg("text %d component %d: got %g, expected %g", i, d,
                         (double)out[i * DIM + d], (double)want[d]);
        }
        assert_true(fabs(norm - 1.0) < 1e-5);
    }
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.requests, 3);
    assert_int_equal(s.retries, 0);
    assert_int_equal(s.texts, N);
    assert_int_equal(s.failures, 0);

    /* no key configured: no Authorization header */
    char auth[256];
    fake_openai_last_auth(srv, auth, sizeof auth);
    assert_string_equal(auth, "");

    /* a second call reuses the pooled handle's connection (keep-alive) */
    unsigned long conns = fake_openai_connections(srv);
    rc = p.embed(p.state, tp, lens, 10, out);
    assert_int_equal(rc, RAG_OK);
    assert_int_equal(fake_openai_connections(srv), conns);

    /* no_normalize keeps the server's vector as is */
    rag_embed_provider_release(&p);
    o.no_normalize = 1;
    make(&p, &o);
    assert_int_equal(p.embed(p.state, tp, lens, 1, out), RAG_OK);
    float raw[DIM];
    fake_openai_vector(DIM, tp[0], lens[0], raw);
    assert_memory_equal(out, raw, sizeof raw);
    rag_embed_provider_release(&p);

    for (int i = 0; i < N; i++)
        free(texts[i]);
    free(out);
}

static void test_trailing_slash_and_small_batch(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "%s///", fake_openai_base_url(srv));
    rag_embed_remote_options o;
    base_opts(&o);
    o.base_url = url;
    o.batch_size = 1;
    rag_embed_provider p;
    make(&p, &o);
    const char *t[3] = {"a", "b", "c"};
    size_t l[3] = {1, 1, 1};
    float out[3 * DIM];
    assert_int_equal(p.embed(p.state, t, l, 3, out), RAG_OK);
    assert_int_equal(fake_openai_requests(srv), 3);
    assert_int_equal(fake_openai_max_batch(srv), 1);
    rag_embed_provider_release(&p);
}

/* ---- retries -------------------------------------------------------------------------------- */

static void test_429_retry_after_honoured(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];

    fake_openai_fail_next(srv, 1, 429, 1);
    uint64_t t0 = now_ms();
    int rc = embed1(&p, "rate limited text", v);
    uint64_t elapsed = now_ms() - t0;
    if (rc)
        fail_msg("embed: %s", rag_error_last());
    assert_int_equal(fake_openai_requests(srv), 2);
    assert_true(elapsed >= 1000); /* the backoff alone would be <= 5 ms */
    assert_true(elapsed < 2500);
    float want[DIM];
    expected_unit("rate limited text", strlen("rate limited text"), want);
    for (int d = 0; d < DIM; d++)
        assert_true(fabsf(v[d] - want[d]) < 1e-6f);
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.requests, 2);
    assert_int_equal(s.retries, 1);
    assert_int_equal(s.failures, 0);

    /* 429 without Retry-After: the (tiny) jittered backoff */
    fake_openai_fail_next(srv, 2, 429, -1);
    t0 = now_ms();
    assert_int_equal(embed1(&p, "again", v), RAG_OK);
    assert_true(now_ms() - t0 < 500);
    assert_int_equal(fake_openai_requests(srv), 5);
    rag_embed_provider_release(&p);
}

static void test_5xx_retried(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    static const int codes[] = {500, 502, 503, 504};
    unsigned long before = 0;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        fake_openai_fail_next(srv, 2, codes[i], -1);
        int rc = embed1(&p, "five hundred", v);
        if (rc)
            fail_msg("HTTP %d twice then 200: %s", codes[i], rag_error_last());
        assert_int_equal(fake_openai_requests(srv) - before, 3);
        before = fake_openai_requests(srv);
    }
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.retries, 8);
    assert_int_equal(s.requests, 12);
    rag_embed_provider_release(&p);
}

static void test_retries_exhausted(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    o.max_retries = 2;
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    fake_openai_fail_next(srv, 100, 503, -1);
    int rc = embed1(&p, "never", v);
    assert_int_equal(rc, RAG_ETRANSIENT);
    assert_int_equal(fake_openai_requests(srv), 3);
    const char *e = rag_error_last();
    assert_non_null(strstr(e, "503"));
    assert_non_null(strstr(e, "gave up after 3 attempts"));
    assert_non_null(strstr(e, fake_openai_base_url(srv)));
    assert_non_null(strstr(e, "injected HTTP 503")); /* the body excerpt */
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.failures, 1);
    assert_int_equal(s.retries, 2);
    assert_int_equal(s.texts, 0);
    rag_embed_provider_release(&p);
}

static void test_permanent_4xx_at_once(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    static const int codes[] = {400, 401, 403, 404, 413, 422};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        fake_openai_reset(srv);
        fake_openai_fail_next(srv, 5, codes[i], -1);
        int rc = embed1(&p, "rejected", v);
        assert_int_equal(rc, RAG_EPROVIDER);
        assert_int_equal(fake_openai_requests(srv), 1);
        char want[32];
        snprintf(want, sizeof want, "HTTP %d", codes[i]);
        if (!strstr(rag_error_last(), want))
            fail_msg("message lacks '%s': %s", want, rag_error_last());
    }
    fake_openai_reset(srv);
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.requests, 6);
    assert_int_equal(s.retries, 0);
    assert_int_equal(s.failures, 6);
    rag_embed_provider_release(&p);
}

static void test_slow_response_times_out(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    o.timeout_ms = 150;
    o.max_retries = 2;
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];

    /* one slow answer: the retry succeeds */
    fake_openai_slow_next(srv, 1, 800);
    int rc = embed1(&p, "slow once", v);
    if (rc)
        fail_msg("embed: %s", rag_error_last());
    assert_int_equal(fake_openai_requests(srv), 2);

    /* always slow: every attempt times out */
    fake_openai_reset(srv);
    fake_openai_slow_next(srv, 100, 800);
    uint64_t t0 = now_ms();
    rc = embed1(&p, "slow always", v);
    uint64_t elapsed = now_ms() - t0;
    assert_int_equal(rc, RAG_ETRANSIENT);
    assert_non_null(strstr(rag_error_last(), "curl 28")); /* CURLE_OPERATION_TIMEDOUT */
    assert_true(elapsed >= 3 * 150);
    assert_true(elapsed < 2000);
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.requests, 5);
    assert_int_equal(s.retries, 3);
    fake_openai_reset(srv);
    rag_embed_provider_release(&p);
}

static void test_connection_refused(void **state)
{
    (void)state;
    fake_openai *dead = NULL;
    assert_int_equal(fake_openai_start(&dead, DIM), 0);
    char url[128];
    snprintf(url, sizeof url, "%s", fake_openai_base_url(dead));
    fake_openai_stop(dead); /* nothing listens on that port any more */

    rag_embed_remote_options o;
    base_opts(&o);
    o.base_url = url;
    o.max_retries = 2;
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    int rc = embed1(&p, "nobody home", v);
    assert_int_equal(rc, RAG_ETRANSIENT);
    assert_non_null(strstr(rag_error_last(), "curl 7")); /* CURLE_COULDNT_CONNECT */
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.requests, 3);
    assert_int_equal(s.failures, 1);
    rag_embed_provider_release(&p);
}

/* ---- malformed responses and inputs --------------------------------------------------------- */

static void test_truncated_json(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    fake_openai_truncate_next(srv, 1);
    assert_int_equal(embed1(&p, "cut short", v), RAG_EPROVIDER);
    assert_int_equal(fake_openai_requests(srv), 1);
    assert_non_null(strstr(rag_error_last(), "malformed JSON"));
    /* the next request is fine again */
    assert_int_equal(embed1(&p, "cut short", v), RAG_OK);
    rag_embed_provider_release(&p);
}

static void test_wrong_dimension(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    fake_openai_wrong_dim_next(srv, 1, DIM + 5);
    assert_int_equal(embed1(&p, "too wide", v), RAG_EPROVIDER);
    assert_int_equal(fake_openai_requests(srv), 1);
    char want[64];
    snprintf(want, sizeof want, "got %d floats, expected %d", DIM + 5, DIM);
    if (!strstr(rag_error_last(), want))
        fail_msg("message lacks '%s': %s", want, rag_error_last());
    rag_embed_provider_release(&p);
}

static void test_invalid_utf8_is_permanent(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    make(&p, &o);
    float v[2 * DIM];
    const char *t[2] = {"fine", "bad \xff\xfe bytes"};
    size_t l[2] = {4, strlen(t[1])};
    assert_int_equal(p.embed(p.state, t, l, 2, v), RAG_EINVAL);
    assert_non_null(strstr(rag_error_last(), "UTF-8"));
    assert_int_equal(fake_openai_requests(srv), 0); /* never sent */
    rag_embed_provider_release(&p);
}

/* Responses of every shape, served verbatim, through a provider of dimension 3. */
static int raw_embed(rag_embed_provider *p, const char *body, float out[6])
{
    fake_openai_raw_next(srv, 1, 200, body);
    const char *t[2] = {"first", "second"};
    size_t l[2] = {5, 6};
    for (int i = 0; i < 6; i++)
        out[i] = -99.0f;
    return p->embed(p->state, t, l, 2, out);
}

static void assert_rows(const float *out, const float *want)
{
    for (int i = 0; i < 6; i++)
        if (fabsf(out[i] - want[i]) > 1e-6f)
            fail_msg("component %d: got %g, expected %g", i, (double)out[i], (double)want[i]);
}

static void test_response_shapes(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    o.dim = 3;
    o.max_retries = 1;
    rag_embed_provider p;
    make(&p, &o);
    float out[6];

    /* members in any order, entries in any order */
    assert_int_equal(raw_embed(&p, "{\"data\":[{\"embedding\":[3,0,4],\"index\":1},"
                                   "{\"index\":0,\"embedding\":[0,0,2]}]}", out), RAG_OK);
    assert_rows(out, (const float[]){0, 0, 1, 0.6f, 0, 0.8f});
    /* no "index": by position; unknown members and nested values skipped */
    assert_int_equal(raw_embed(&p, "{\"object\":\"list\",\"model\":\"x}{[\\\"\",\"data\":["
                                   "{\"object\":\"embedding\",\"embedding\":[1,0,0]},"
                                   "{\"embedding\":[0,1,0],\"meta\":{\"a\":[1,{\"b\":null}],"
                                   "\"c\":true,\"d\":false}}],\"usage\":{\"prompt_tokens\":2}}",
                                   out), RAG_OK);
    assert_rows(out, (const float[]){1, 0, 0, 0, 1, 0});
    /* whitespace, escaped keys, exponents, negative zero */
    assert_int_equal(raw_embed(&p, " {\r\n \"d\\u0061ta\" : [ { \"index\" : 0 , \"embedding\" :"
                                   " [ 1e0 , -0.0 , 0E+1 ] } ,\t{\"index\":1,\"embedding\":"
                                   "[2.5e-1,0,0],\"x\":\"\\\"\\u00e9\\/\"} ] } \n", out), RAG_OK);
    assert_rows(out, (const float[]){1, 0, 0, 1, 0, 0});
    /* a zero vector stays zero */
    assert_int_equal(raw_embed(&p, "{\"data\":[{\"index\":0,\"embedding\":[0,0,0]},"
                                   "{\"index\":1,\"embedding\":[0,0,-7]}]}", out), RAG_OK);
    assert_rows(out, (const float[]){0, 0, 0, 0, 0, -1});

    static const char *const bad[] = {
        "",
        "[]",
        "{}",
        "{\"object\":\"list\"}",
        "{\"data\":{}}",
        "{\"data\":[]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,0,0]},{\"index\":0,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,0,0]},{\"index\":2,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":-1,\"embedding\":[1,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0.5,\"embedding\":[1,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":\"0\",\"embedding\":[1,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,0,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":\"AAAAAAAAAAAAAAAA\"},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,null,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,\"0\",0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1e400,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1e39,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[01,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1.,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[NaN,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[+1,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[0x1,0,0]},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,0,0],},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"index\":0},{\"index\":1,\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"embedding\":[1,0,0],\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}]}",
        "{\"data\":[{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}]} trailing",
        "{\"data\":[{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}],\"x\":\"\\q\"}",
        "{\"data\":[{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}],\"x\":tru}",
        "{\"data\":[{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}],\"x\":\"\\u12\"}",
        "{\"data\":[{\"embedding\":[1,0,0]},{\"embedding\":[1,0,0]}],\"x\":\"a\tb\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = raw_embed(&p, bad[i], out);
        if (rc != RAG_EPROVIDER)
            fail_msg("response %zu accepted (rc %d): %s", i, rc, bad[i]);
        if (!strstr(rag_error_last(), "remote embedder"))
            fail_msg("response %zu: unclear message '%s'", i, rag_error_last());
    }
    assert_int_equal(raw_embed(&p, bad[13], out), RAG_EPROVIDER);
    assert_non_null(strstr(rag_error_last(), "got 2 floats, expected 3"));
    assert_int_equal(raw_embed(&p, bad[15], out), RAG_EPROVIDER);
    assert_non_null(strstr(rag_error_last(), "base64"));

    /* deep nesting is refused, not recursed into without bound */
    {
        enum { DEEP = 100000 };
        char *deep = malloc(2 * DEEP + 64);
        size_t k = (size_t)sprintf(deep, "{\"x\":");
        for (int i = 0; i < DEEP; i++)
            deep[k++] = '[';
        for (int i = 0; i < DEEP; i++)
            deep[k++] = ']';
        strcpy(deep + k, ",\"data\":[]}");
        assert_int_equal(raw_embed(&p, deep, out), RAG_EPROVIDER);
        assert_non_null(strstr(rag_error_last(), "nested too deeply"));
        free(deep);
    }

    /* every prefix of a valid body is refused; random corruptions never crash and either
     * parse into unit (or zero) rows or fail with RAG_EPROVIDER */
    const char *good = "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":1,"
                       "\"embedding\":[0.5,-0.25,1e-3]},{\"index\":0,\"embedding\":[3,4,0]}],"
                       "\"model\":\"m\",\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}}";
    assert_int_equal(raw_embed(&p, good, out), RAG_OK);
    size_t gl = strlen(good);
    char *buf = malloc(gl + 1);
    for (size_t cut = 0; cut < gl; cut++) {
        memcpy(buf, good, cut);
        buf[cut] = '\0';
        if (raw_embed(&p, buf, out) != RAG_EPROVIDER)
            fail_msg("prefix of %zu bytes accepted: %s", cut, buf);
    }
    uint64_t seed = 12345;
    static const char alphabet[] = "{}[],:\"\\0123456789.-eE+ ntrufalsx";
    for (int iter = 0; iter < 400; iter++) {
        memcpy(buf, good, gl + 1);
        int edits = 1 + (int)(fake_splitmix(&seed) % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(fake_splitmix(&seed) % gl);
            buf[at] = alphabet[fake_splitmix(&seed) % (sizeof alphabet - 1)];
        }
        int rc = raw_embed(&p, buf, out);
        if (rc == RAG_OK) {
            for (int r = 0; r < 2; r++) {
                double nn = 0;
                for (int d = 0; d < 3; d++) {
                    assert_true(isfinite(out[r * 3 + d]));
                    nn += (double)out[r * 3 + d] * out[r * 3 + d];
                }
                assert_true(nn == 0 || fabs(nn - 1) < 1e-5);
            }
        } else if (rc != RAG_EPROVIDER) {
            fail_msg("corrupted body gave %d: %s", rc, buf);
        }
    }
    free(buf);
    rag_embed_provider_release(&p);
}

/* Numbers as servers print them (%.9g, %.17g, fixed, exponents, many digits) convert to
 * exactly (float)strtod(text): the parser's fast path must round like strtod. */
static void test_number_conversion(void **state)
{
    (void)state;
    enum { D = 64 };
    rag_embed_remote_options o;
    base_opts(&o);
    o.dim = D;
    o.no_normalize = 1;
    rag_embed_provider p;
    make(&p, &o);
    static const char *const fmts[] = {"%.9g", "%.17g", "%.10f", "%.6e", "%.8g", "%.12f",
                                       "%.20g", "%.3g"};
    uint64_t seed = 777;
    char *body = malloc(2 * D * 40 + 256);
    float want[2 * D], out[2 * D];
    const char *t[2] = {"a", "b"};
    size_t l[2] = {1, 1};
    for (int iter = 0; iter < 120; iter++) {
        const char *fmt = fmts[iter % (sizeof fmts / sizeof fmts[0])];
        size_t k = (size_t)sprintf(body, "{\"data\":[");
        for (int r = 0; r < 2; r++) {
            k += (size_t)sprintf(body + k, "%s{\"index\":%d,\"embedding\":[", r ? "," : "", r);
            for (int d = 0; d < D; d++) {
                uint64_t x = fake_splitmix(&seed);
                /* magnitudes from 1e-12 to 1e3, both signs */
                double mag = pow(10.0, (double)(x % 16) - 12.0);
                double v = ((double)(x >> 11) / 9007199254740992.0) * mag;
                if (x & 1024)
                    v = -v;
                char num[64];
                snprintf(num, sizeof num, fmt, v);
                want[r * D + d] = (float)strtod(num, NULL);
                k += (size_t)sprintf(body + k, "%s%s", d ? "," : "", num);
            }
            k += (size_t)sprintf(body + k, "]}");
        }
        sprintf(body + k, "]}");
        fake_openai_raw_next(srv, 1, 200, body);
        int rc = p.embed(p.state, t, l, 2, out);
        if (rc)
            fail_msg("embed: %s", rag_error_last());
        for (int i = 0; i < 2 * D; i++)
            if (memcmp(&out[i], &want[i], sizeof(float)) != 0)
                fail_msg("format %s, value %d: got %.9g, strtod gives %.9g", fmt, i,
                         (double)out[i], (double)want[i]);
    }
    free(body);
    rag_embed_provider_release(&p);
}

/* ---- the API key ---------------------------------------------------------------------------- */

static void test_api_key_never_leaks(void **state)
{
    (void)state;
    setenv(KEY_ENV, KEY_VALUE, 1);
    rag_embed_remote_options o;
    base_opts(&o);
    o.api_key_env = KEY_ENV;
    o.max_retries = 1;
    rag_embed_provider p;
    make(&p, &o);
    /* read once, at init: changing the variable later changes nothing */
    setenv(KEY_ENV, "sk-other", 1);
    float v[DIM];
    assert_int_equal(embed1(&p, "with key", v), RAG_OK);
    char auth[256];
    fake_openai_last_auth(srv, auth, sizeof auth);
    assert_string_equal(auth, "Bearer " KEY_VALUE);

    char fp[RAG_EMBED_FINGERPRINT_MAX];
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_null(strstr(fp, "SECRET"));

    /* a permanent error whose body echoes the Authorization header */
    fake_openai_echo_auth_next(srv, 1, 401);
    assert_int_equal(embed1(&p, "with key", v), RAG_EPROVIDER);
    const char *e = rag_error_last();
    assert_non_null(strstr(e, "HTTP 401"));
    assert_non_null(strstr(e, "Bearer [REDACTED]")); /* the echo arrived, redacted */
    if (strstr(e, KEY_VALUE) || strstr(e, "SECRET"))
        fail_msg("the API key leaked into rag_error_last(): %s", e);

    /* the same through retries (the message that survives is the last one) */
    fake_openai_echo_auth_next(srv, 10, 503);
    assert_int_equal(embed1(&p, "with key", v), RAG_ETRANSIENT);
    e = rag_error_last();
    assert_non_null(strstr(e, "HTTP 503"));
    if (strstr(e, "SECRET"))
        fail_msg("the API key leaked into rag_error_last(): %s", e);
    fake_openai_reset(srv);
    rag_embed_provider_release(&p);
    unsetenv(KEY_ENV);
}

static void test_api_key_env_unset(void **state)
{
    (void)state;
    unsetenv(KEY_ENV);
    rag_embed_remote_options o;
    base_opts(&o);
    o.api_key_env = KEY_ENV;
    rag_embed_provider p;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    assert_non_null(strstr(rag_error_last(), KEY_ENV));
    assert_null(p.state);

    setenv(KEY_ENV, "", 1);
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    assert_non_null(strstr(rag_error_last(), KEY_ENV));

    /* a key with a line break would inject headers: refused, value not echoed */
    setenv(KEY_ENV, "sk-SECRET\r\nX-Evil: 1", 1);
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    assert_non_null(strstr(rag_error_last(), KEY_ENV));
    assert_null(strstr(rag_error_last(), "SECRET"));
    unsetenv(KEY_ENV);
}

static void test_userinfo_not_reported(void **state)
{
    (void)state;
    char url[160];
    snprintf(url, sizeof url, "http://alice:hunter2@127.0.0.1:%u/v1",
             (unsigned)fake_openai_port(srv));
    rag_embed_remote_options o;
    base_opts(&o);
    o.base_url = url;
    rag_embed_provider p;
    make(&p, &o);
    float v[DIM];
    fake_openai_fail_next(srv, 1, 400, -1);
    assert_int_equal(embed1(&p, "x", v), RAG_EPROVIDER);
    const char *e = rag_error_last();
    char want[128];
    snprintf(want, sizeof want, "http://127.0.0.1:%u/v1/embeddings",
             (unsigned)fake_openai_port(srv));
    if (!strstr(e, want) || strstr(e, "hunter2") || strstr(e, "alice"))
        fail_msg("URL in the message not stripped of userinfo: %s", e);
    rag_embed_provider_release(&p);
}

/* ---- init and fingerprints ------------------------------------------------------------------ */

static void test_init_validation(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    rag_embed_provider p;
    static const char *const bad_urls[] = {"ftp://127.0.0.1/v1", "127.0.0.1:8080/v1",
                                           "http://", "https:///v1", "http://a b/v1",
                                           "file:///etc/passwd", ""};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        base_opts(&o);
        o.base_url = bad_urls[i];
        if (rag_embed_remote_init(&p, &o) != RAG_EINVAL)
            fail_msg("base_url '%s' accepted", bad_urls[i]);
    }
    base_opts(&o);
    o.base_url = NULL;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    base_opts(&o);
    o.model = "";
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    o.model = NULL;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    base_opts(&o);
    o.dim = 0;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    o.dim = 65537;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);
    o.dim = 65536;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_OK);
    rag_embed_provider_release(&p);
    base_opts(&o);
    o.version = 99;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EVERSION);
    assert_int_equal(rag_embed_remote_init(NULL, &o), RAG_EINVAL);
    assert_int_equal(rag_embed_remote_init(&p, NULL), RAG_EINVAL);
    base_opts(&o);
    o.base_url = "HTTPS://example.invalid/v1"; /* scheme is case-insensitive */
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_OK);
    rag_embed_provider_release(&p);

    /* stats of something that is not a remote provider */
    rag_embed_provider cpu;
    assert_int_equal(rag_embed_cpu_hash_init(&cpu, 64), RAG_OK);
    rag_embed_remote_stats s;
    assert_int_equal(rag_embed_remote_stats_get(&cpu, &s), RAG_EINVAL);
    rag_embed_provider_release(&cpu);
    assert_int_equal(rag_embed_remote_stats_get(NULL, &s), RAG_EINVAL);
}

static int utf8_valid(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static void test_fingerprint(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    rag_embed_provider p;
    char fp[RAG_EMBED_FINGERPRINT_MAX];
    make(&p, &o);
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_string_equal(fp, "remote:" MODEL ":d32");
    assert_int_not_equal(p.fingerprint(p.state, fp, 5), 0); /* too small a buffer */
    rag_embed_provider_release(&p);

    /* the URL is not part of it */
    o.base_url = "https://elsewhere.example/v1";
    make(&p, &o);
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_string_equal(fp, "remote:" MODEL ":d32");
    rag_embed_provider_release(&p);

    base_opts(&o);
    o.fingerprint = "my-model-v3";
    make(&p, &o);
    assert_int_equal(p.fingerprint(p.state, fp, sizeof fp), 0);
    assert_string_equal(fp, "my-model-v3");
    rag_embed_provider_release(&p);

    char too_long[RAG_EMBED_FINGERPRINT_MAX + 1];
    memset(too_long, 'f', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    o.fingerprint = too_long;
    assert_int_equal(rag_embed_remote_init(&p, &o), RAG_EINVAL);

    /* long model names (multi-byte characters): cut on a character boundary, still distinct */
    char m1[400], m2[400];
    size_t len = 0;
    while (len + 3 < 300) {
        memcpy(m1 + len, "\xc3\xa9", 2); /* é */
        len += 2;
        m1[len++] = 'x';
    }
    m1[len] = '\0';
    memcpy(m2, m1, len + 1);
    m2[len - 1] = 'y';
    char fp1[RAG_EMBED_FINGERPRINT_MAX], fp2[RAG_EMBED_FINGERPRINT_MAX];
    base_opts(&o);
    o.model = m1;
    make(&p, &o);
    assert_int_equal(p.fingerprint(p.state, fp1, sizeof fp1), 0);
    rag_embed_provider_release(&p);
    o.model = m2;
    make(&p, &o);
    assert_int_equal(p.fingerprint(p.state, fp2, sizeof fp2), 0);
    rag_embed_provider_release(&p);
    assert_true(strlen(fp1) < RAG_EMBED_FINGERPRINT_MAX);
    assert_int_equal(strncmp(fp1, "remote:", 7), 0);
    assert_string_equal(fp1 + strlen(fp1) - 4, ":d32");
    assert_true(utf8_valid(fp1));
    assert_true(utf8_valid(fp2));
    assert_string_not_equal(fp1, fp2);
}

/* ---- thread-safety -------------------------------------------------------------------------- */

typedef struct worker_arg {
    rag_embed_provider *p;
    int id;
    int failures;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    for (int round = 0; round < 20; round++) {
        const char *t[5];
        size_t l[5];
        char buf[5][64];
        for (int i = 0; i < 5; i++) {
            l[i] = (size_t)snprintf(buf[i], sizeof buf[i], "worker %d round %d text %d", w->id,
                                    round, i);
            t[i] = buf[i];
        }
        float out[5 * DIM];
        if (w->p->embed(w->p->state, t, l, 5, out) != RAG_OK) {
            w->failures++;
            continue;
        }
        for (int i = 0; i < 5; i++) {
            float want[DIM];
            expected_unit(t[i], l[i], want);
            for (int d = 0; d < DIM; d++)
                if (fabsf(out[i * DIM + d] - want[d]) > 1e-6f)
                    w->failures++;
        }
    }
    return NULL;
}

static void test_concurrent_calls(void **state)
{
    (void)state;
    rag_embed_remote_options o;
    base_opts(&o);
    o.batch_size = 2;
    rag_embed_provider p;
    make(&p, &o);
    enum { T = 4 };
    pthread_t th[T];
    worker_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i].p = &p;
        args[i].id = i;
        args[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    rag_embed_remote_stats s = stats_of(&p);
    assert_int_equal(s.texts, T * 20 * 5);
    assert_int_equal(s.requests, T * 20 * 3); /* 5 texts in batches of 2 */
    rag_embed_provider_release(&p);
}

/* ---- through the public API ----------------------------------------------------------------- */

typedef struct e2e {
    char *root;
    rag_ctx *ctx;
    rag_embed_provider prov; /* a copy: its state is owned by ctx, valid while it is open */
} e2e;

static void e2e_open(e2e *f, const char *name, unsigned int max_retries)
{
    f->root = rag_test_tmpdir(name);
    rag_embed_remote_options ro;
    base_opts(&ro);
    ro.max_retries = max_retries;
    rag_embed_provider p;
    make(&p, &ro);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 64;
    o.provider = &p;
    f->prov = p;
    o.retry_base_ms = 1;
    o.retry_cap_ms = 5;
    o.max_attempts = 20;
    int rc = rag_open(&f->ctx, f->root, &o);
    if (rc)
        fail_msg("rag_open: %s (%s)", rag_strerror(rc), rag_error_last());
}

static void e2e_close(e2e *f)
{
    rag_close(f->ctx);
    rag_test_rmtree(f->root);
    free(f->root);
}

static void doc_text(char *buf, size_t n, int i)
{
    snprintf(buf, n, "Remote document %d describes the lighthouse keeper number %d.", i, i * 31);
}

static uint64_t put_text(rag_ctx *ctx, const char *id, const char *text)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    uint64_t v = 0;
    int rc = rag_doc_put(ctx, &d, &v);
    if (rc)
        fail_msg("put %s: %s (%s)", id, rag_strerror(rc), rag_error_last());
    return v;
}

/* Vector search with exactly a document's text: the server's vector of that text comes back
 * as the query vector, so the document is the top hit with score ~1. */
static const rag_result *top_hit(rag_ctx *ctx, const char *text, rag_results **keep)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = 3;
    q.unrestricted = 1;
    q.mode = RAG_MODE_VECTOR;
    int rc = rag_search(ctx, &q, keep);
    if (rc)
        fail_msg("rag_search: %s (%s)", rag_strerror(rc), rag_error_last());
    assert_true((*keep)->count >= 1);
    return &(*keep)->items[0];
}

static void drain(rag_ctx *ctx)
{
    int rc = rag_drain(ctx, 20000);
    if (rc)
        fail_msg("rag_drain: %s (%s)", rag_strerror(rc), rag_error_last());
}

static void test_e2e_ingest_and_search(void **state)
{
    (void)state;
    e2e f;
    e2e_open(&f, "remote-e2e", 3);
    char id[32], text[160];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "doc-%02d", i);
        doc_text(text, sizeof text, i);
        assert_int_equal(put_text(f.ctx, id, text), 1);
    }
    drain(f.ctx);
    rag_status_info st = {0};
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(f.ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 20);
    assert_int_equal(st.vectors, 20);
    assert_int_equal(st.dead_letters, 0);
    assert_true(fake_openai_texts(srv) >= 20);
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "doc-%02d", i);
        doc_text(text, sizeof text, i);
        rag_results *r = NULL;
        const rag_result *hit = top_hit(f.ctx, text, &r);
        if (strcmp(hit->doc_id, id) != 0)
            fail_msg("search for %s's text returned %s first", id, hit->doc_id);
        assert_true(hit->score > 0.99f);
        rag_results_free(r);
    }
    e2e_close(&f);
}

static void test_e2e_poison_dead_lettered(void **state)
{
    (void)state;
    e2e f;
    e2e_open(&f, "remote-poison", 3);
    const char *v1 = "The archive of maritime charts is stored in the north wing.";
    const char *v2 = "The archive moved. POISONPILL marks this revision for the server.";
    const char *other = "An unrelated note about the garden irrigation schedule.";
    assert_int_equal(put_text(f.ctx, "charts", v1), 1);
    assert_int_equal(put_text(f.ctx, "garden", other), 1);
    drain(f.ctx);

    fake_openai_fail_marker(srv, "POISONPILL", 400);
    unsigned long before = fake_openai_requests(srv);
    assert_int_equal(put_text(f.ctx, "charts", v2), 2);
    drain(f.ctx);
    /* permanent: one request, no retries by the provider or the queue */
    assert_int_equal(fake_openai_requests(srv) - before, 1);

    rag_dead_letter_info *dl = NULL;
    size_t n = 0;
    assert_int_equal(rag_dlq_list(f.ctx, &dl, &n), RAG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(dl[0].doc_id, "charts");
    assert_int_equal(dl[0].version, 2);
    assert_string_equal(dl[0].module, "embed");
    assert_int_equal(dl[0].code, RAG_EPROVIDER);
    assert_int_equal(dl[0].attempts, 1);
    rag_free(dl);

    rag_trace_info *tr = NULL;
    assert_int_equal(rag_trace(f.ctx, "charts", &tr), RAG_OK);
    assert_string_equal(tr->state, "failed");
    assert_int_equal(tr->version, 2);
    assert_int_equal(tr->active_version, 1);
    rag_trace_free(tr);

    /* the previous version is still what searches return */
    fake_openai_fail_marker(srv, NULL, 0);
    rag_results *r = NULL;
    const rag_result *hit = top_hit(f.ctx, v1, &r);
    assert_string_equal(hit->doc_id, "charts");
    assert_int_equal(hit->version, 1);
    assert_string_equal(hit->text, v1);
    rag_results_free(r);
    hit = top_hit(f.ctx, other, &r);
    assert_string_equal(hit->doc_id, "garden");
    rag_results_free(r);
    e2e_close(&f);
}

static void test_e2e_429_bursts_absorbed(void **state)
{
    (void)state;
    e2e f;
    /* one retry inside the provider, so a burst of 429s ends embed calls with ETRANSIENT
     * and the queue has to redeliver them */
    e2e_open(&f, "remote-burst", 1);
    char id[32], text[160];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "burst-%02d", i);
        doc_text(text, sizeof text, 100 + i);
        put_text(f.ctx, id, text);
    }
    fake_openai_fail_next(srv, 7, 429, 0);
    drain(f.ctx);
    for (int i = 10; i < 20; i++) {
        snprintf(id, sizeof id, "burst-%02d", i);
        doc_text(text, sizeof text, 100 + i);
        put_text(f.ctx, id, text);
    }
    fake_openai_fail_next(srv, 5, 429, -1);
    drain(f.ctx);

    rag_status_info st = {0};
    st.version = RAG_STATUS_VERSION;
    assert_int_equal(rag_status(f.ctx, &st), RAG_OK);
    assert_int_equal(st.documents, 20);
    assert_int_equal(st.vectors, 20);
    assert_int_equal(st.dead_letters, 0);
    assert_int_equal(st.sagas_failed, 0);
    /* some embed calls did fail (transiently) and were redelivered by the queue */
    rag_embed_remote_stats rs = stats_of(&f.prov);
    assert_true(rs.failures >= 3);
    assert_true(rs.retries >= 6);
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "burst-%02d", i);
        doc_text(text, sizeof text, 100 + i);
        rag_results *r = NULL;
        const rag_result *hit = top_hit(f.ctx, text, &r);
        assert_string_equal(hit->doc_id, id);
        rag_results_free(r);
    }
    e2e_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_batching_and_vectors, reset),
        cmocka_unit_test_setup(test_trailing_slash_and_small_batch, reset),
        cmocka_unit_test_setup(test_429_retry_after_honoured, reset),
        cmocka_unit_test_setup(test_5xx_retried, reset),
        cmocka_unit_test_setup(test_retries_exhausted, reset),
        cmocka_unit_test_setup(test_permanent_4xx_at_once, reset),
        cmocka_unit_test_setup(test_slow_response_times_out, reset),
        cmocka_unit_test_setup(test_connection_refused, reset),
        cmocka_unit_test_setup(test_truncated_json, reset),
        cmocka_unit_test_setup(test_wrong_dimension, reset),
        cmocka_unit_test_setup(test_invalid_utf8_is_permanent, reset),
        cmocka_unit_test_setup(test_response_shapes, reset),
        cmocka_unit_test_setup(test_number_conversion, reset),
        cmocka_unit_test_setup(test_api_key_never_leaks, reset),
        cmocka_unit_test_setup(test_api_key_env_unset, reset),
        cmocka_unit_test_setup(test_userinfo_not_reported, reset),
        cmocka_unit_test_setup(test_init_validation, reset),
        cmocka_unit_test_setup(test_fingerprint, reset),
        cmocka_unit_test_setup(test_concurrent_calls, reset),
        cmocka_unit_test_setup(test_e2e_ingest_and_search, reset),
        cmocka_unit_test_setup(test_e2e_poison_dead_lettered, reset),
        cmocka_unit_test_setup(test_e2e_429_bursts_absorbed, reset),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
