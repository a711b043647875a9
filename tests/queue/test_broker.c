/* The embedded LMDB broker: order, leases, nak delays, dedup, waits, restart. */
#include <pthread.h>

#include "queue_test_util.h"

typedef struct fx {
    char *root;
    rag_config cfg;
    rag_queue_transport *t;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("queue-broker");
    qt_config(&f->cfg, f->root);
    OK(rag_queue_lmdb_transport_new(&f->t, &f->cfg));
    assert_int_equal(f->t->version, RAG_QUEUE_TRANSPORT_VERSION);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    qt_transport_free(f->t);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static void publish_n(rag_queue_transport *t, const char *topic, const char *prefix, int from,
                      int to)
{
    int n = to - from;
    rag_queue_message *m = calloc((size_t)n, sizeof *m);
    char (*payloads)[32] = calloc((size_t)n, 32);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s-%d", prefix, from + i);
        snprintf(payloads[i], 32, "payload %d", from + i);
        m[i] = qt_msg(topic, id, payloads[i]);
    }
    OK(t->publish(t->state, m, (size_t)n));
    free(m);
    free(payloads);
}

static void test_publish_fetch_ack_order(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "p", 0, 10);
    publish_n(t, "tt", "q", 0, 1); /* a topic sharing a prefix must not leak into "t" */
    qt_depth(t, "t", 10, 0, 0);
    qt_depth(t, "tt", 1, 0, 0);

    rag_queue_message out[16];
    size_t n;
    OK(t->fetch(t->state, "t", 4, 60000, out, &n));
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        char id[32], pl[32];
        snprintf(id, sizeof id, "p-%zu", i);
        snprintf(pl, sizeof pl, "payload %zu", i);
        assert_string_equal(out[i].id, id);
        assert_string_equal(out[i].topic, "t");
        assert_int_equal(out[i].attempts, 1);
        assert_int_equal(out[i].size, strlen(pl));
        assert_memory_equal(out[i].data, pl, out[i].size);
    }
    qt_depth(t, "t", 6, 0, 4);
    OK(t->ack(t->state, out, n));
    OK(t->ack(t->state, out, n)); /* a second ack of the same deliveries is harmless */
    t->release(t->state, out, n);
    qt_depth(t, "t", 6, 0, 0);

    OK(t->fetch(t->state, "t", 16, 60000, out, &n));
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "p-%zu", i + 4);
        assert_string_equal(out[i].id, id);
    }
    OK(t->ack(t->state, out, n));
    t->release(t->state, out, n);
    qt_depth(t, "t", 0, 0, 0);
    OK(t->fetch(t->state, "t", 16, 60000, out, &n));
    assert_int_equal(n, 0);
    assert_int_equal(qt_total(t, "tt"), 1);

    /* Empty payloads are messages too. */
    rag_queue_message e = qt_msg("e", "empty-1", "");
    e.data = NULL;
    OK(t->publish(t->state, &e, 1));
    OK(t->fetch(t->state, "e", 4, 1000, out, &n));
    assert_int_equal(n, 1);
    assert_int_equal(out[0].size, 0);
    OK(t->ack(t->state, out, 1));
    t->release(t->state, out, 1);
}

static void test_invalid_arguments(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    rag_queue_message m = qt_msg("t", "x", "y");
    m.id[0] = 0;
    assert_int_equal(t->publish(t->state, &m, 1), RAG_EINVAL);
    m = qt_msg("", "x", "y");
    assert_int_equal(t->publish(t->state, &m, 1), RAG_EINVAL);
    memset(m.topic, 'a', sizeof m.topic); /* not NUL-terminated */
    assert_int_equal(t->publish(t->state, &m, 1), RAG_EINVAL);
    rag_queue_message out[1];
    size_t n = 99;
    assert_int_equal(t->fetch(t->state, NULL, 1, 10, out, &n), RAG_EINVAL);
    assert_int_equal(n, 0);
    qt_depth(t, "t", 0, 0, 0);
}

static void test_lease_expiry(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "m", 0, 1);
    rag_queue_message a[2], b[2];
    size_t n;
    OK(t->fetch(t->state, "t", 2, 60, a, &n));
    assert_int_equal(n, 1);
    assert_int_equal(a[0].attempts, 1);
    OK(t->fetch(t->state, "t", 2, 60, b, &n));
    assert_int_equal(n, 0);
    qt_depth(t, "t", 0, 0, 1);
    qt_sleep_ms(120);
    qt_depth(t, "t", 1, 0, 0); /* an expired lease counts as visible */
    OK(t->fetch(t->state, "t", 2, 60000, b, &n));
    assert_int_equal(n, 1);
    assert_string_equal(b[0].id, a[0].id);
    assert_int_equal(b[0].attempts, 2);
    /* The first consumer's late nak must not cut the second one's lease short. */
    OK(t->nak(t->state, &a[0], 0));
    qt_depth(t, "t", 0, 0, 1);
    rag_queue_message c[1];
    OK(t->fetch(t->state, "t", 1, 60000, c, &n));
    assert_int_equal(n, 0);
    OK(t->ack(t->state, b, 1));
    qt_depth(t, "t", 0, 0, 0);
    t->release(t->state, a, 1);
    t->release(t->state, b, 1);
}

static void test_nak_delay(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "m", 0, 2);
    rag_queue_message a[2];
    size_t n;
    OK(t->fetch(t->state, "t", 1, 60000, a, &n));
    assert_int_equal(n, 1);
    assert_string_equal(a[0].id, "m-0");
    OK(t->nak(t->state, &a[0], 200));
    t->release(t->state, a, 1);
    qt_depth(t, "t", 1, 1, 0);
    /* The delayed message steps aside: m-1 comes first. */
    OK(t->fetch(t->state, "t", 2, 60000, a, &n));
    assert_int_equal(n, 1);
    assert_string_equal(a[0].id, "m-1");
    OK(t->ack(t->state, a, 1));
    t->release(t->state, a, 1);
    OK(t->fetch(t->state, "t", 2, 60000, a, &n));
    assert_int_equal(n, 0);
    qt_sleep_ms(250);
    OK(t->fetch(t->state, "t", 2, 60000, a, &n));
    assert_int_equal(n, 1);
    assert_string_equal(a[0].id, "m-0");
    assert_int_equal(a[0].attempts, 2);
    /* nak with no delay: visible at once, attempts keep counting */
    OK(t->nak(t->state, &a[0], 0));
    t->release(t->state, a, 1);
    OK(t->fetch(t->state, "t", 2, 60000, a, &n));
    assert_int_equal(n, 1);
    assert_int_equal(a[0].attempts, 3);
    OK(t->ack(t->state, a, 1));
    t->release(t->state, a, 1);
    qt_depth(t, "t", 0, 0, 0);
}

static void test_republish_dedup(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    rag_queue_message m[3] = {qt_msg("t", "dup-1", "a"), qt_msg("t", "dup-1", "a"),
                              qt_msg("t", "dup-2", "b")};
    OK(t->publish(t->state, m, 3)); /* duplicate inside one batch */
    assert_int_equal(qt_total(t, "t"), 2);
    OK(t->publish(t->state, m, 3)); /* a relay re-publishing after a crash */
    assert_int_equal(qt_total(t, "t"), 2);
    rag_queue_message out[4];
    size_t n;
    OK(t->fetch(t->state, "t", 4, 60000, out, &n));
    assert_int_equal(n, 2);
    OK(t->publish(t->state, m, 1)); /* still leased: still deduplicated */
    assert_int_equal(qt_total(t, "t"), 2);
    OK(t->ack(t->state, out, n));
    t->release(t->state, out, n);
    assert_int_equal(qt_total(t, "t"), 0);
}

typedef struct waiter {
    rag_queue_transport *t;
    const char *topic;
    uint32_t timeout;
    uint64_t took_ms;
    int rc;
} waiter;

static void *wait_thread(void *arg)
{
    waiter *w = arg;
    uint64_t t0 = rag_mono_ms();
    w->rc = w->t->wait(w->t->state, w->topic, w->timeout);
    w->took_ms = rag_mono_ms() - t0;
    return NULL;
}

static void test_wait_and_wake(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    /* 1. times out when nothing happens */
    uint64_t t0 = rag_mono_ms();
    OK(t->wait(t->state, "t", 50));
    assert_true(rag_mono_ms() - t0 >= 45);

    /* 2. a publish to the topic wakes a waiter long before its timeout */
    waiter w = {t, "t", 20000, 0, -1};
    pthread_t th;
    pthread_create(&th, NULL, wait_thread, &w);
    qt_sleep_ms(50);
    publish_n(t, "t", "w", 0, 1);
    pthread_join(th, NULL);
    OK(w.rc);
    assert_true(w.took_ms < 10000);

    /* 3. returns at once while something is visible */
    t0 = rag_mono_ms();
    OK(t->wait(t->state, "t", 20000));
    assert_true(rag_mono_ms() - t0 < 10000);

    /* 4. wakes when a delayed message becomes visible */
    rag_queue_message a[1];
    size_t n;
    OK(t->fetch(t->state, "t", 1, 60000, a, &n));
    assert_int_equal(n, 1);
    OK(t->nak(t->state, a, 100));
    t->release(t->state, a, 1);
    t0 = rag_mono_ms();
    OK(t->wait(t->state, "t", 20000));
    assert_true(rag_mono_ms() - t0 < 10000);
    OK(t->fetch(t->state, "t", 1, 60000, a, &n));
    assert_int_equal(n, 1);
    OK(t->ack(t->state, a, 1));
    t->release(t->state, a, 1);

    /* 5. wake_all releases a waiter (shutdown) */
    waiter w2 = {t, "t", 20000, 0, -1};
    pthread_create(&th, NULL, wait_thread, &w2);
    qt_sleep_ms(50);
    t->wake_all(t->state);
    pthread_join(th, NULL);
    OK(w2.rc);
    assert_true(w2.took_ms < 10000);
}

static void test_restart_releases_leases(void **state)
{
    fx *f = *state;
    publish_n(f->t, "t", "r", 0, 3);
    rag_queue_message a[3];
    size_t n;
    OK(f->t->fetch(f->t->state, "t", 2, 600000, a, &n));
    assert_int_equal(n, 2);
    f->t->release(f->t->state, a, n);
    OK(f->t->fetch(f->t->state, "t", 1, 600000, a, &n));
    OK(f->t->nak(f->t->state, a, 600000)); /* delayed, not leased: stays delayed */
    f->t->release(f->t->state, a, n);
    qt_depth(f->t, "t", 0, 1, 2);
    /* The process "dies" without acking. */
    qt_transport_free(f->t);
    f->t = NULL;
    OK(rag_queue_lmdb_transport_new(&f->t, &f->cfg));
    qt_depth(f->t, "t", 2, 1, 0);
    OK(f->t->fetch(f->t->state, "t", 3, 600000, a, &n));
    assert_int_equal(n, 2);
    assert_string_equal(a[0].id, "r-0"); /* back in their original order */
    assert_string_equal(a[1].id, "r-1");
    assert_int_equal(a[0].attempts, 2);  /* attempts survive the restart */
    OK(f->t->ack(f->t->state, a, n));
    f->t->release(f->t->state, a, n);
    qt_depth(f->t, "t", 0, 1, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_fetch_ack_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nak_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_republish_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_and_wake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_releases_leases, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
