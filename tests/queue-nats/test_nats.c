/*
 * The NATS JetStream transport against a private nats-server (started here on 127.0.0.1 with
 * its own store dir; the whole file is skipped when nats-server is not installed or ragcore
 * was built without libnats).  Each test uses its own stream prefix, so they share one server.
 *
 * What is checked: publish/fetch/ack with the LMDB broker's semantics; Nats-Msg-Id
 * de-duplication; nak with delay; lease (AckWait) expiry; term; progress; depth; two
 * transports ("processes") splitting one topic; wait() (latency printed) and wake_all();
 * broker down (fast RAG_ETRANSIENT) and back (reconnect by itself, nothing lost); and the
 * public API on top: rag_open with the transport, put, drain, search, fsck, status.
 * Figures printed: wait() wake-up latency, publish throughput (one call of 1,000 messages vs
 * 1,000 calls of one).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ragcore/rag.h"
#include "ragcore/transports.h"
#include "test_support.h"

#include "../support/nats_server.c"

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

#define TOPIC "doc.chunked"

static rag_nats_server g_srv;
static int g_skip; /* 1: no nats-server, 2: built without libnats */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

static void skip_if_needed(void)
{
    if (g_skip == 1)
        print_message("nats-server not installed: skipped\n");
    if (g_skip == 2)
        print_message("built without libnats: skipped\n");
    if (g_skip)
        skip();
}

typedef struct tp_cfg {
    const char *prefix;
    unsigned ack_wait_ms;
    int memory;
    unsigned connect_timeout_ms, reconnect_wait_ms, publish_timeout_ms;
} tp_cfg;

static void tp_open(rag_queue_transport *t, const tp_cfg *c)
{
    rag_queue_nats_options o = RAG_QUEUE_NATS_OPTIONS_INIT;
    o.urls = g_srv.url;
    o.prefix = c->prefix;
    o.ack_wait_ms = c->ack_wait_ms;
    o.memory_storage = c->memory;
    o.connect_timeout_ms = c->connect_timeout_ms;
    o.reconnect_wait_ms = c->reconnect_wait_ms;
    o.publish_timeout_ms = c->publish_timeout_ms;
    OK(rag_queue_nats_new(t, &o));
    assert_int_equal(t->version, RAG_QUEUE_TRANSPORT_VERSION);
    assert_non_null(t->term);
    assert_non_null(t->progress);
    assert_non_null(t->wait);
}

static void tp_close(rag_queue_transport *t) { t->free(t->state); }

static rag_queue_message mk(const char *topic, const char *id, const void *data, size_t size)
{
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    snprintf(m.id, sizeof m.id, "%s", id);
    m.data = data;
    m.size = size;
    return m;
}

/* Publish ids "<pfx>-<i>" for i in [from, to) with payload "payload <i>". */
static void publish_range(rag_queue_transport *t, const char *topic, const char *pfx, int from,
                          int to)
{
    int n = to - from;
    rag_queue_message *m = calloc((size_t)n, sizeof *m);
    char (*pl)[32] = calloc((size_t)n, 32);
    for (int i = 0; i < n; i++) {
        char id[40];
        snprintf(id, sizeof id, "%s-%d", pfx, from + i);
        snprintf(pl[i], 32, "payload %d", from + i);
        m[i] = mk(topic, id, pl[i], strlen(pl[i]));
    }
    OK(t->publish(t->state, m, (size_t)n));
    free(m);
    free(pl);
}

static void expect_depth(rag_queue_transport *t, const char *topic, uint64_t ready,
                         uint64_t inflight)
{
    rag_queue_depth d;
    OK(t->depth(t->state, topic, &d));
    if (d.ready != ready || d.inflight != inflight || d.delayed != 0)
        fail_msg("depth(%s) = ready %llu delayed %llu inflight %llu, expected %llu 0 %llu",
                 topic, (unsigned long long)d.ready, (unsigned long long)d.delayed,
                 (unsigned long long)d.inflight, (unsigned long long)ready,
                 (unsigned long long)inflight);
}

/* Fetch until `want` messages arrived or `within_ms` passed. */
static size_t fetch_until(rag_queue_transport *t, const char *topic, rag_queue_message *out,
                          size_t want, unsigned within_ms)
{
    size_t got = 0;
    long long deadline = now_ms() + within_ms;
    while (got < want) {
        size_t n = 0;
        OK(t->fetch(t->state, topic, want - got, 30000, out + got, &n));
        got += n;
        if (got >= want || now_ms() >= deadline)
            break;
        if (n == 0)
            sleep_ms(20);
    }
    return got;
}

/* ---- setup -------------------------------------------------------------------------------- */

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
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!g_skip)
        rag_nats_server_cleanup(&g_srv);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_options(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    rag_queue_nats_options o = RAG_QUEUE_NATS_OPTIONS_INIT;
    assert_int_equal(rag_queue_nats_new(NULL, &o), RAG_EINVAL);
    assert_int_equal(rag_queue_nats_new(&t, NULL), RAG_EINVAL);
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_EINVAL); /* no urls */
    assert_null(t.publish);
    o.urls = g_srv.url;
    o.version = 0;
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_EVERSION);
    o.version = RAG_QUEUE_NATS_OPTIONS_VERSION + 1;
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_EVERSION);
    o.version = RAG_QUEUE_NATS_OPTIONS_VERSION;
    o.prefix = "has.dot";
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_EINVAL);
    o.prefix = NULL;
    o.urls = " , ";
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_EINVAL);
    o.urls = g_srv.url;
    o.tls_cert_file = "/nonexistent/cert.pem"; /* a certificate without its key */
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_EINVAL);
    o.tls_cert_file = NULL;

    /* Nobody listening: RAG_ETRANSIENT within about the connect timeout. */
    int port = ns_free_port();
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    o.urls = url;
    o.connect_timeout_ms = 500;
    long long t0 = now_ms();
    assert_int_equal(rag_queue_nats_new(&t, &o), RAG_ETRANSIENT);
    assert_true(now_ms() - t0 < 3000);
    assert_null(t.state);

    /* Several URLs, the first dead: the live one is used. */
    char urls[160];
    snprintf(urls, sizeof urls, "%s, %s", url, g_srv.url);
    o.urls = urls;
    o.prefix = "OPT";
    OK(rag_queue_nats_new(&t, &o));
    publish_range(&t, TOPIC, "o", 0, 1);
    expect_depth(&t, TOPIC, 1, 0);
    /* Topics are subject tokens and stream names: reject what cannot be one. */
    rag_queue_message bad = mk("doc..x", "id", "x", 1);
    assert_int_equal(t.publish(t.state, &bad, 1), RAG_EINVAL);
    bad = mk("doc.*", "id", "x", 1);
    assert_int_equal(t.publish(t.state, &bad, 1), RAG_EINVAL);
    tp_close(&t);
}

static void test_publish_fetch_ack(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "PFA"};
    tp_open(&t, &c);
    publish_range(&t, TOPIC, "p", 0, 10);
    publish_range(&t, "doc.embedded", "q", 0, 1); /* other topic, other stream */
    expect_depth(&t, TOPIC, 10, 0);
    expect_depth(&t, "doc.embedded", 1, 0);

    rag_queue_message out[16];
    size_t n = 0;
    OK(t.fetch(t.state, TOPIC, 4, 30000, out, &n));
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        char id[32], pl[32];
        snprintf(id, sizeof id, "p-%zu", i);
        snprintf(pl, sizeof pl, "payload %zu", i);
        assert_string_equal(out[i].id, id);
        assert_string_equal(out[i].topic, TOPIC);
        assert_int_equal(out[i].attempts, 1);
        assert_int_equal(out[i].size, strlen(pl));
        assert_memory_equal(out[i].data, pl, out[i].size);
        assert_true(out[i].handle != 0);
    }
    expect_depth(&t, TOPIC, 6, 4);
    OK(t.ack(t.state, out, n));
    OK(t.ack(t.state, out, n)); /* a second ack of the same deliveries is harmless */
    t.release(t.state, out, n);
    assert_null(out[0].data);
    expect_depth(&t, TOPIC, 6, 0);

    OK(t.fetch(t.state, TOPIC, 16, 30000, out, &n));
    assert_int_equal(n, 6);
    assert_string_equal(out[0].id, "p-4");
    assert_string_equal(out[5].id, "p-9");
    OK(t.ack(t.state, out, n));
    t.release(t.state, out, n);
    expect_depth(&t, TOPIC, 0, 0);

    /* Empty topic: no blocking. */
    double f0 = now_s();
    for (int i = 0; i < 20; i++) {
        OK(t.fetch(t.state, TOPIC, 16, 30000, out, &n));
        assert_int_equal(n, 0);
    }
    double empty_ms = (now_s() - f0) * 1e3 / 20;
    print_message("fetch of an empty topic: %.2f ms\n", empty_ms);
    assert_true(empty_ms < 500);

    OK(t.fetch(t.state, "doc.embedded", 16, 30000, out, &n));
    assert_int_equal(n, 1);
    assert_string_equal(out[0].topic, "doc.embedded");
    OK(t.ack(t.state, out, n));
    t.release(t.state, out, n);
    expect_depth(&t, "doc.embedded", 0, 0);

    /* Bad arguments. */
    assert_int_equal(t.fetch(t.state, TOPIC, 4, 0, NULL, &n), RAG_EINVAL);
    assert_int_equal(t.depth(t.state, "", NULL), RAG_EINVAL);
    OK(t.publish(t.state, NULL, 0));
    OK(t.ack(t.state, NULL, 0));
    tp_close(&t);
}

static void test_msgid_dedup(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "DUP"};
    tp_open(&t, &c);
    rag_queue_message m[3] = {mk(TOPIC, "x", "one", 3), mk(TOPIC, "y", "two", 3),
                              mk(TOPIC, "x", "one again", 9)};
    OK(t.publish(t.state, m, 1));
    OK(t.publish(t.state, m, 1)); /* a relay that crashed before deleting its rows */
    OK(t.publish(t.state, m, 3)); /* duplicates inside one call too */
    expect_depth(&t, TOPIC, 2, 0);
    rag_queue_message out[8];
    size_t n = 0;
    OK(t.fetch(t.state, TOPIC, 8, 30000, out, &n));
    assert_int_equal(n, 2);
    assert_string_equal(out[0].id, "x");
    assert_memory_equal(out[0].data, "one", 3);
    assert_string_equal(out[1].id, "y");
    OK(t.ack(t.state, out, n));
    t.release(t.state, out, n);
    OK(t.fetch(t.state, TOPIC, 8, 30000, out, &n));
    assert_int_equal(n, 0);
    tp_close(&t);
}

static void test_nak_delay(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "NAK"};
    tp_open(&t, &c);
    publish_range(&t, TOPIC, "n", 0, 1);
    rag_queue_message out[4];
    size_t n = 0;
    OK(t.fetch(t.state, TOPIC, 4, 30000, out, &n));
    assert_int_equal(n, 1);
    assert_int_equal(out[0].attempts, 1);
    long long t0 = now_ms();
    OK(t.nak(t.state, &out[0], 800));
    t.release(t.state, out, n);
    expect_depth(&t, TOPIC, 0, 1); /* JetStream counts a delayed message as pending ack */

    /* Not visible before the delay. */
    while (now_ms() - t0 < 600) {
        OK(t.fetch(t.state, TOPIC, 4, 30000, out, &n));
        assert_int_equal(n, 0);
        sleep_ms(100);
    }
    /* Visible after it, one attempt more. */
    n = fetch_until(&t, TOPIC, out, 1, 3000);
    assert_int_equal(n, 1);
    assert_true(now_ms() - t0 >= 750);
    assert_string_equal(out[0].id, "n-0");
    assert_int_equal(out[0].attempts, 2);
    OK(t.nak(t.state, &out[0], 0)); /* no delay: back at once */
    t.release(t.state, out, n);
    n = fetch_until(&t, TOPIC, out, 1, 2000);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].attempts, 3);
    OK(t.ack(t.state, out, n));
    t.release(t.state, out, n);
    expect_depth(&t, TOPIC, 0, 0);
    tp_close(&t);
}

static void test_lease_expiry(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "LEASE", .ack_wait_ms = 1000};
    tp_open(&t, &c);
    publish_range(&t, TOPIC, "l", 0, 1);
    rag_queue_message out[4];
    size_t n = 0;
    OK(t.fetch(t.state, TOPIC, 4, 1000, out, &n));
    assert_int_equal(n, 1);
    long long t0 = now_ms();
    t.release(t.state, out, n); /* a consumer that died before its ack */
    sleep_ms(400);
    OK(t.fetch(t.state, TOPIC, 4, 1000, out, &n));
    assert_int_equal(n, 0);
    n = fetch_until(&t, TOPIC, out, 1, 4000);
    assert_int_equal(n, 1);
    assert_true(now_ms() - t0 >= 800);
    assert_int_equal(out[0].attempts, 2);
    OK(t.ack(t.state, out, n));
    t.release(t.state, out, n);
    expect_depth(&t, TOPIC, 0, 0);
    tp_close(&t);
}

static void test_term(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "TERM", .ack_wait_ms = 1000};
    tp_open(&t, &c);
    publish_range(&t, TOPIC, "t", 0, 2);
    rag_queue_message out[4];
    size_t n = 0;
    OK(t.fetch(t.state, TOPIC, 4, 1000, out, &n));
    assert_int_equal(n, 2);
    OK(t.term(t.state, &out[0], 1)); /* dead-lettered by the consumer */
    OK(t.ack(t.state, &out[1], 1));
    t.release(t.state, out, n);
    expect_depth(&t, TOPIC, 0, 0);
    sleep_ms(1500); /* past AckWait: a terminated message must not come back */
    OK(t.fetch(t.state, TOPIC, 4, 1000, out, &n));
    assert_int_equal(n, 0);
    expect_depth(&t, TOPIC, 0, 0);
    tp_close(&t);
}

static void test_progress(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport a, b;
    tp_cfg c = {.prefix = "PROG", .ack_wait_ms = 1000};
    tp_open(&a, &c);
    tp_open(&b, &c); /* another process on the same durable */
    publish_range(&a, TOPIC, "g", 0, 1);
    rag_queue_message out[4], other[4];
    size_t n = 0, m = 0;
    OK(a.fetch(a.state, TOPIC, 4, 1000, out, &n));
    assert_int_equal(n, 1);
    long long t0 = now_ms();
    /* A long batch: 2.4x AckWait, extending the lease every 300 ms. */
    while (now_ms() - t0 < 2400) {
        OK(a.progress(a.state, out, n));
        OK(b.fetch(b.state, TOPIC, 4, 1000, other, &m));
        assert_int_equal(m, 0);
        sleep_ms(300);
    }
    expect_depth(&a, TOPIC, 0, 1);
    OK(a.ack(a.state, out, n));
    a.release(a.state, out, n);
    expect_depth(&b, TOPIC, 0, 0);
    OK(b.fetch(b.state, TOPIC, 4, 1000, other, &m));
    assert_int_equal(m, 0);
    tp_close(&a);
    tp_close(&b);
}

/* ---- two processes on one topic ---------------------------------------------------------- */

#define SPLIT_N 1000

typedef struct split_arg {
    rag_queue_transport *t;
    atomic_int *seen;  /* per message: deliveries acked */
    atomic_int *total; /* acked so far, both workers */
    int mine;
    int failed;
} split_arg;

static void *split_worker(void *p)
{
    split_arg *a = p;
    rag_queue_message out[64];
    long long deadline = now_ms() + 30000;
    while (atomic_load(a->total) < SPLIT_N && now_ms() < deadline) {
        size_t n = 0;
        if (a->t->fetch(a->t->state, TOPIC, 64, 30000, out, &n) != RAG_OK) {
            a->failed = 1;
            break;
        }
        if (n == 0) {
            sleep_ms(2);
            continue;
        }
        if (a->t->ack(a->t->state, out, n) != RAG_OK) {
            a->failed = 1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            int idx = atoi(out[i].id + 2); /* "s-<i>" */
            if (idx >= 0 && idx < SPLIT_N)
                atomic_fetch_add(&a->seen[idx], 1);
        }
        a->t->release(a->t->state, out, n);
        a->mine += (int)n;
        atomic_fetch_add(a->total, (int)n);
        sleep_ms(2); /* the LMDB commit a real consumer does here: lets the other one in */
    }
    return NULL;
}

static void test_two_processes_split(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport a, b;
    tp_cfg c = {.prefix = "SPLIT"};
    tp_open(&a, &c);
    tp_open(&b, &c);
    for (int i = 0; i < SPLIT_N; i += 100)
        publish_range(i % 200 ? &a : &b, TOPIC, "s", i, i + 100);
    expect_depth(&a, TOPIC, SPLIT_N, 0);

    atomic_int *seen = calloc(SPLIT_N, sizeof *seen);
    atomic_int total = 0;
    split_arg wa = {&a, seen, &total, 0, 0}, wb = {&b, seen, &total, 0, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, split_worker, &wa);
    pthread_create(&tb, NULL, split_worker, &wb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    print_message("split of %d messages: %d / %d\n", SPLIT_N, wa.mine, wb.mine);
    assert_false(wa.failed);
    assert_false(wb.failed);
    assert_int_equal(wa.mine + wb.mine, SPLIT_N);
    assert_true(wa.mine > 0 && wb.mine > 0);
    for (int i = 0; i < SPLIT_N; i++)
        if (atomic_load(&seen[i]) != 1)
            fail_msg("message s-%d acked %d times", i, atomic_load(&seen[i]));
    expect_depth(&a, TOPIC, 0, 0);
    free(seen);
    tp_close(&a);
    tp_close(&b);
}

static void test_publish_throughput(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "TPUT"}; /* file storage, as in production */
    tp_open(&t, &c);
    enum { N = 1000, SIZE = 4096 };
    char *payload = malloc(SIZE);
    for (int i = 0; i < SIZE; i++)
        payload[i] = (char)('a' + i % 26);
    rag_queue_message *m = calloc(N, sizeof *m);
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "batch-%d", i);
        m[i] = mk(TOPIC, id, payload, SIZE);
    }
    /* Warm up: stream and consumer creation are not part of the figure. */
    rag_queue_message w = mk(TOPIC, "warm", "w", 1);
    OK(t.publish(t.state, &w, 1));

    double t0 = now_s();
    OK(t.publish(t.state, m, N)); /* one call: async publishes, one wait for all PubAcks */
    double batch_s = now_s() - t0;
    for (int i = 0; i < N; i++)
        snprintf(m[i].id, sizeof m[i].id, "single-%d", i);
    t0 = now_s();
    for (int i = 0; i < N; i++) /* one call per message: a round trip each (sync) */
        OK(t.publish(t.state, &m[i], 1));
    double single_s = now_s() - t0;
    print_message("publish 1,000 x 4 KiB (file storage): one call %.0f msgs/s (%.1f ms), "
                  "one call per message %.0f msgs/s (%.1f ms)\n",
                  N / batch_s, batch_s * 1e3, N / single_s, single_s * 1e3);
    expect_depth(&t, TOPIC, 2 * N + 1, 0);

    /* Consume them (fetch 256 + ack per batch), for the record. */
    rag_queue_message out[256];
    size_t total = 0;
    t0 = now_s();
    while (total < 2 * N + 1) {
        size_t n = 0;
        OK(t.fetch(t.state, TOPIC, 256, 30000, out, &n));
        if (n == 0)
            break;
        OK(t.ack(t.state, out, n));
        t.release(t.state, out, n);
        total += n;
    }
    double consume_s = now_s() - t0;
    assert_int_equal(total, 2 * N + 1);
    print_message("fetch+ack in batches of 256: %.0f msgs/s\n", total / consume_s);
    expect_depth(&t, TOPIC, 0, 0);
    free(m);
    free(payload);
    tp_close(&t);
}

/* ---- wait / wake_all ---------------------------------------------------------------------- */

typedef struct delayed_arg {
    rag_queue_transport *t;
    unsigned delay_ms;
    int wake;  /* 1: wake_all instead of publish */
    int round; /* publishes id "w-<round>" */
    double at; /* when the publish (or wake) started */
    int rc;
} delayed_arg;

static void *delayed_action(void *p)
{
    delayed_arg *a = p;
    sleep_ms(a->delay_ms);
    a->at = now_s();
    if (a->wake) {
        a->t->wake_all(a->t->state);
    } else {
        char id[16];
        snprintf(id, sizeof id, "w-%d", a->round);
        rag_queue_message m = mk(TOPIC, id, "wake up", 7);
        a->rc = a->t->publish(a->t->state, &m, 1);
    }
    return NULL;
}

static void test_wait(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t, producer;
    tp_cfg c = {.prefix = "WAIT"};
    tp_open(&t, &c);
    tp_open(&producer, &c);

    /* Nothing published: returns after its timeout. */
    long long t0 = now_ms();
    OK(t.wait(t.state, TOPIC, 300));
    long long el = now_ms() - t0;
    assert_true(el >= 250 && el < 1500);

    /* A publish from another "process" wakes it. */
    double lat_sum = 0, lat_max = 0;
    enum { ROUNDS = 5 };
    for (int r = 0; r < ROUNDS; r++) {
        delayed_arg a = {&producer, 150, 0, r, 0, 0};
        pthread_t th;
        pthread_create(&th, NULL, delayed_action, &a);
        double w0 = now_s();
        OK(t.wait(t.state, TOPIC, 3000));
        double back = now_s();
        pthread_join(th, NULL);
        OK(a.rc);
        assert_true(back - w0 < 1.5);
        double lat = back - a.at;
        lat_sum += lat;
        if (lat > lat_max)
            lat_max = lat;
        /* The message that woke it is what the next fetch returns. */
        rag_queue_message out[4];
        size_t n = 0;
        OK(t.fetch(t.state, TOPIC, 4, 30000, out, &n));
        assert_int_equal(n, 1);
        char id[16];
        snprintf(id, sizeof id, "w-%d", r);
        assert_string_equal(out[0].id, id);
        OK(t.ack(t.state, out, n));
        t.release(t.state, out, n);
    }
    print_message("wait() woken by a publish from another connection: %.2f ms on average "
                  "after the publish call started (max %.2f ms, %d rounds)\n",
                  lat_sum / ROUNDS * 1e3, lat_max * 1e3, ROUNDS);

    /* wake_all makes a waiter return at once. */
    delayed_arg a = {&t, 150, 1, 0, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, delayed_action, &a);
    t0 = now_ms();
    OK(t.wait(t.state, TOPIC, 5000));
    el = now_ms() - t0;
    pthread_join(th, NULL);
    print_message("wait() woken by wake_all() %lld ms after it started (wake_all at 150 ms)\n",
                  el);
    assert_true(el < 1000);
    expect_depth(&t, TOPIC, 0, 0);

    /* A message that woke a waiter which then stops (the transport is freed before it
     * fetches) is handed back at once, not after AckWait (30 s).  Its delivery count is the
     * server's: usually 2, but 1 when nats-server took back a redelivery it had routed to the
     * freed transport's inbox (it un-counts deliveries to a request nobody listens to). */
    rag_queue_message m = mk(TOPIC, "w-last", "x", 1);
    OK(producer.publish(producer.state, &m, 1));
    OK(t.wait(t.state, TOPIC, 3000));
    expect_depth(&producer, TOPIC, 0, 1); /* delivered to t's prefetch slot */
    tp_close(&t);
    rag_queue_message out[4];
    size_t n = fetch_until(&producer, TOPIC, out, 1, 2000);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].id, "w-last");
    assert_true(out[0].attempts >= 1 && out[0].attempts <= 2);
    OK(producer.ack(producer.state, out, n));
    producer.release(producer.state, out, n);
    expect_depth(&producer, TOPIC, 0, 0);
    tp_close(&producer);
}

/* ---- outage ------------------------------------------------------------------------------- */

static void test_broker_outage(void **state)
{
    (void)state;
    skip_if_needed();
    rag_queue_transport t;
    tp_cfg c = {.prefix = "OUT", .connect_timeout_ms = 1000, .reconnect_wait_ms = 100,
                .publish_timeout_ms = 2000};
    tp_open(&t, &c);
    publish_range(&t, TOPIC, "o", 0, 5); /* before the outage, file storage */
    expect_depth(&t, TOPIC, 5, 0);

    assert_int_equal(rag_nats_server_stop(&g_srv), 0);
    sleep_ms(100); /* let the client notice the closed socket */

    rag_queue_message m = mk(TOPIC, "o-5", "payload 5", 9);
    long long t0 = now_ms();
    assert_int_equal(t.publish(t.state, &m, 1), RAG_ETRANSIENT);
    assert_true(now_ms() - t0 < 3000);
    rag_queue_message out[8];
    size_t n = 99;
    t0 = now_ms();
    assert_int_equal(t.fetch(t.state, TOPIC, 8, 30000, out, &n), RAG_ETRANSIENT);
    assert_int_equal(n, 0);
    assert_true(now_ms() - t0 < 3000);
    rag_queue_depth d;
    t0 = now_ms();
    assert_int_equal(t.depth(t.state, TOPIC, &d), RAG_ETRANSIENT);
    assert_true(now_ms() - t0 < 3000);
    t0 = now_ms();
    t.wait(t.state, TOPIC, 200); /* returns after its timeout, never hangs */
    assert_true(now_ms() - t0 < 1500);

    /* Back on the same port and store: the transport reconnects by itself. */
    assert_int_equal(rag_nats_server_restart(&g_srv), 0);
    t0 = now_ms();
    int rc;
    while ((rc = t.publish(t.state, &m, 1)) == RAG_ETRANSIENT && now_ms() - t0 < 15000)
        sleep_ms(50);
    OK(rc);
    print_message("reconnected and published %lld ms after the restart\n", now_ms() - t0);
    n = fetch_until(&t, TOPIC, out, 6, 5000);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "o-%zu", i);
        assert_string_equal(out[i].id, id);
    }
    OK(t.ack(t.state, out, n));
    t.release(t.state, out, n);
    expect_depth(&t, TOPIC, 0, 0);
    tp_close(&t);
}

/* ---- the public API on the NATS transport ------------------------------------------------- */

static void put_docs(rag_ctx *ctx, int from, int to)
{
    int n = to - from;
    rag_doc *docs = calloc((size_t)n, sizeof *docs);
    rag_put_result *res = calloc((size_t)n, sizeof *res);
    char (*ids)[32] = calloc((size_t)n, 32);
    char (*texts)[256] = calloc((size_t)n, 256);
    for (int i = 0; i < n; i++) {
        snprintf(ids[i], 32, "doc-%d", from + i);
        snprintf(texts[i], 256, "Document %d talks about the marker word zq%dx and about "
                 "message queues, brokers and the shipping of events.", from + i, from + i);
        docs[i].id = ids[i];
        docs[i].data = texts[i];
        docs[i].size = strlen(texts[i]);
        docs[i].mime = "text/plain";
    }
    OK(rag_doc_put_batch(ctx, docs, (size_t)n, res));
    for (int i = 0; i < n; i++)
        OK(res[i].code);
    free(docs);
    free(res);
    free(ids);
    free(texts);
}

static void expect_found(rag_ctx *ctx, int i)
{
    char q[32], id[32];
    snprintf(q, sizeof q, "zq%dx", i);
    snprintf(id, sizeof id, "doc-%d", i);
    rag_query query = RAG_QUERY_INIT;
    query.text = q;
    query.k = 3;
    rag_results *r = NULL;
    OK(rag_search(ctx, &query, &r));
    assert_true(r->count > 0);
    assert_string_equal(r->items[0].doc_id, id);
    rag_results_free(r);
}

static void expect_queues_empty(rag_ctx *ctx)
{
    rag_status_info st;
    memset(&st, 0, sizeof st);
    st.version = RAG_STATUS_VERSION;
    OK(rag_status(ctx, &st));
    assert_true(st.queue_count > 0);
    for (size_t i = 0; i < st.queue_count; i++)
        if (st.queues[i].ready || st.queues[i].delayed || st.queues[i].inflight)
            fail_msg("queue %s: ready %llu delayed %llu inflight %llu", st.queues[i].name,
                     (unsigned long long)st.queues[i].ready,
                     (unsigned long long)st.queues[i].delayed,
                     (unsigned long long)st.queues[i].inflight);
}

static void test_public_api(void **state)
{
    (void)state;
    skip_if_needed();
    char *root = rag_test_tmpdir("nats-api");
    rag_queue_transport tp;
    rag_queue_nats_options no = RAG_QUEUE_NATS_OPTIONS_INIT;
    no.urls = g_srv.url;
    no.prefix = "API";
    OK(rag_queue_nats_new(&tp, &no));
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.transport = &tp; /* copied; rag_open owns its state from here on */
    rag_ctx *ctx = NULL;
    OK(rag_open(&ctx, root, &o));

    /* Pumped by rag_drain on this thread. */
    put_docs(ctx, 0, 50);
    OK(rag_drain(ctx, 60000));
    for (int i = 0; i < 50; i += 7)
        expect_found(ctx, i);
    expect_found(ctx, 49);
    rag_fsck_report *rep = NULL;
    OK(rag_fsck(ctx, 0, 30000, &rep));
    for (size_t i = 0; rep && i < rep->count; i++)
        print_message("fsck: %s %s: %s\n", rag_fsck_kind_name(rep->issues[i].kind),
                      rep->issues[i].doc_id, rep->issues[i].detail);
    assert_int_equal(rep->count, 0);
    rag_fsck_report_free(rep);
    expect_queues_empty(ctx);

    /* With worker threads, which sleep in wait() between batches. */
    OK(rag_start(ctx));
    double t0 = now_s();
    put_docs(ctx, 50, 60);
    OK(rag_drain(ctx, 60000));
    print_message("10 documents through the pipeline with workers: %.0f ms\n",
                  (now_s() - t0) * 1e3);
    OK(rag_stop(ctx));
    expect_found(ctx, 55);
    expect_queues_empty(ctx);
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_publish_fetch_ack),
        cmocka_unit_test(test_msgid_dedup),
        cmocka_unit_test(test_nak_delay),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_term),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_two_processes_split),
        cmocka_unit_test(test_publish_throughput),
        cmocka_unit_test(test_wait),
        cmocka_unit_test(test_public_api),
        cmocka_unit_test(test_broker_outage),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
