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

/* ---- deferred acks (issue 9) --------------------------------------------------------------
 * br_ack only queues; the next fetch or publish txn applies the queued acks, and depth, wait
 * and free flush them in a txn of their own.  The broker's committed tables are read
 * directly (no broker call, so no flush) to see what has been written. */

static uint64_t committed(rag_queue_transport *t, const char *table)
{
    MDB_env *env = rag_queue_lmdb_transport_env(t);
    assert_non_null(env);
    return qt_table_count(env, table);
}

/* Messages the broker's tables hold: state, body, visibility entry and id must agree. */
static uint64_t held(rag_queue_transport *t)
{
    uint64_t n = committed(t, "q_state");
    assert_int_equal(committed(t, "q_body"), n);
    assert_int_equal(committed(t, "q_vis"), n);
    assert_int_equal(committed(t, "q_ids"), n);
    return n;
}

static void test_ack_then_depth(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "a", 0, 3);
    rag_queue_message out[3];
    size_t n;
    OK(t->fetch(t->state, "t", 3, 600000, out, &n));
    assert_int_equal(n, 3);
    OK(t->ack(t->state, out, 2));
    assert_int_equal(held(t), 3); /* queued, not written yet */
    qt_depth(t, "t", 0, 0, 1);    /* acked: neither in flight nor ready */
    assert_int_equal(held(t), 1); /* the depth count wrote them */
    OK(t->ack(t->state, out + 2, 1));
    qt_depth(t, "t", 0, 0, 0);
    assert_int_equal(held(t), 0);
    t->release(t->state, out, n);
}

static void test_ack_then_lease_expiry(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "e", 0, 3);
    rag_queue_message a[3], b[3];
    size_t n;
    OK(t->fetch(t->state, "t", 3, 50, a, &n));
    assert_int_equal(n, 3);
    OK(t->ack(t->state, a, 2)); /* e-0, e-1 acked; e-2 not */
    qt_sleep_ms(120);           /* every lease has expired */
    /* No depth/wait in between: the fetch itself must apply the acks before it looks. */
    OK(t->fetch(t->state, "t", 3, 600000, b, &n));
    assert_int_equal(n, 1);
    assert_string_equal(b[0].id, "e-2");
    assert_int_equal(b[0].attempts, 2);
    assert_int_equal(held(t), 1); /* the fetch committed the acks */
    /* acks of a topic leave with a fetch of another topic too */
    OK(t->ack(t->state, b, 1));
    t->release(t->state, b, 1);
    rag_queue_message c[1];
    OK(t->fetch(t->state, "other", 1, 1000, c, &n));
    assert_int_equal(n, 0);
    assert_int_equal(held(t), 0);
    OK(t->fetch(t->state, "t", 3, 600000, b, &n));
    assert_int_equal(n, 0);
    t->release(t->state, a, 3);
}

static void test_ack_then_free(void **state)
{
    fx *f = *state;
    publish_n(f->t, "t", "f", 0, 3);
    rag_queue_message a[3];
    size_t n;
    OK(f->t->fetch(f->t->state, "t", 3, 600000, a, &n));
    assert_int_equal(n, 3);
    OK(f->t->ack(f->t->state, a, 2));
    f->t->release(f->t->state, a, n);
    qt_transport_free(f->t); /* writes the queued acks */
    f->t = NULL;
    OK(rag_queue_lmdb_transport_new(&f->t, &f->cfg));
    assert_int_equal(held(f->t), 1);
    qt_depth(f->t, "t", 1, 0, 0); /* the unacked one, its lease released by the restart */
    OK(f->t->fetch(f->t->state, "t", 3, 600000, a, &n));
    assert_int_equal(n, 1);
    assert_string_equal(a[0].id, "f-2");
    OK(f->t->ack(f->t->state, a, 1));
    f->t->release(f->t->state, a, 1);
    qt_depth(f->t, "t", 0, 0, 0);
}

/* The id check: an ack names (handle, id); a handle whose message has another id is never
 * deleted.  And acks of a delivery that was re-leased meanwhile are harmless to the rest. */
static void test_ack_stale_handle(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "s", 0, 2);
    rag_queue_message a[2];
    size_t n;
    OK(t->fetch(t->state, "t", 2, 600000, a, &n));
    assert_int_equal(n, 2);
    rag_queue_message forged = a[1];
    snprintf(forged.id, sizeof forged.id, "%s", a[0].id); /* s-1's handle, s-0's id */
    OK(t->ack(t->state, &forged, 1));
    qt_depth(t, "t", 0, 0, 2); /* flushed: nothing deleted */
    assert_int_equal(held(t), 2);
    forged.handle = 987654321; /* no such handle: harmless */
    OK(t->ack(t->state, &forged, 1));
    publish_n(t, "t", "s", 2, 3); /* a publish applies it: still nothing deleted */
    assert_int_equal(held(t), 3);
    OK(t->ack(t->state, a, 2));
    t->release(t->state, a, 2);
    qt_depth(t, "t", 1, 0, 0);

    /* A delivery whose lease expired and was leased again (attempts 2): the first
     * consumer's late ack and the second consumer's ack, in either order, leave the other
     * messages alone and the message is not delivered again. */
    rag_queue_message first[1], second[1], rest[2];
    OK(t->fetch(t->state, "t", 1, 50, first, &n));
    assert_int_equal(n, 1);
    assert_string_equal(first[0].id, "s-2");
    qt_sleep_ms(120);
    OK(t->fetch(t->state, "t", 1, 600000, second, &n));
    assert_int_equal(n, 1);
    assert_string_equal(second[0].id, "s-2");
    assert_int_equal(second[0].attempts, 2);
    assert_true(second[0].handle == first[0].handle); /* the handle is the message's */
    publish_n(t, "t", "s", 3, 5);
    OK(t->ack(t->state, first, 1));  /* late */
    OK(t->ack(t->state, second, 1)); /* current; same message: applied once */
    OK(t->fetch(t->state, "t", 2, 600000, rest, &n));
    assert_int_equal(n, 2);
    assert_string_equal(rest[0].id, "s-3");
    assert_string_equal(rest[1].id, "s-4");
    assert_int_equal(held(t), 2);
    OK(t->nak(t->state, &second[0], 0)); /* a nak of a deleted message: no effect */
    qt_depth(t, "t", 0, 0, 2);
    OK(t->ack(t->state, rest, 2));
    qt_depth(t, "t", 0, 0, 0);
    t->release(t->state, first, 1);
    t->release(t->state, second, 1);
    t->release(t->state, rest, 2);
}

/* A publish applies the queued acks in its own txn: the committed tables show them gone
 * right after it, before any depth, wait or fetch. */
static void test_publish_applies_acks(void **state)
{
    fx *f = *state;
    rag_queue_transport *t = f->t;
    publish_n(t, "t", "q", 0, 2);
    rag_queue_message a[2];
    size_t n;
    OK(t->fetch(t->state, "t", 2, 600000, a, &n));
    assert_int_equal(n, 2);
    OK(t->ack(t->state, a, 1));
    assert_int_equal(held(t), 2);
    publish_n(t, "u", "r", 0, 1);
    assert_int_equal(held(t), 2); /* q-0 gone, r-0 added */
    MDB_env *env = rag_queue_lmdb_transport_env(t);
    MDB_dbi ids;
    OK(rag_dbi_open(env, "q_ids", 0, &ids));
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    MDB_val k = {3, "q-0"}, v;
    assert_int_equal(mdb_get(txn, ids, &k, &v), MDB_NOTFOUND);
    k.mv_data = "q-1";
    assert_int_equal(mdb_get(txn, ids, &k, &v), 0);
    mdb_txn_abort(txn);
    /* The id is free again: a re-publish of q-0 is a new message (as with an ack before). */
    qt_depth(t, "t", 0, 0, 1);
    qt_depth(t, "u", 1, 0, 0);
    /* wait() flushes too */
    OK(t->ack(t->state, a + 1, 1));
    assert_int_equal(held(t), 2);
    OK(t->wait(t->state, "u", 0));
    assert_int_equal(held(t), 1);
    t->release(t->state, a, 2);
}

/* A publish whose txn fails gives its acks back: they are written by the next txn. */
static void test_failed_publish_keeps_acks(void **state)
{
    fx *f = *state;
    /* A small broker map that a big message cannot fit. */
    char *root = rag_test_tmpdir("queue-broker-small");
    rag_config cfg;
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 16; /* the least allowed */
    OK(rag_config_init(&cfg, root, &o));
    rag_queue_transport *t = NULL;
    OK(rag_queue_lmdb_transport_new(&t, &cfg));
    (void)f;
    publish_n(t, "t", "k", 0, 2);
    rag_queue_message a[2];
    size_t n;
    OK(t->fetch(t->state, "t", 2, 600000, a, &n));
    assert_int_equal(n, 2);
    OK(t->ack(t->state, a, 1));
    size_t big = 20u * 1024 * 1024;
    char *payload = malloc(big + 1);
    assert_non_null(payload);
    memset(payload, 'x', big);
    payload[big] = 0;
    rag_queue_message m = qt_msg("t", "too-big", payload);
    int rc = t->publish(t->state, &m, 1);
    assert_true(rc != RAG_OK); /* the map is full */
    rag_error_clear();
    free(payload);
    assert_int_equal(held(t), 2);  /* the failed txn wrote nothing, the ack is not lost: */
    qt_depth(t, "t", 0, 0, 1);     /* the flush writes it */
    assert_int_equal(held(t), 1);
    t->release(t->state, a, 2);
    qt_transport_free(t);
    rag_test_rmtree(root);
    free(root);
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
        cmocka_unit_test_setup_teardown(test_ack_then_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_then_lease_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_then_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_stale_handle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_applies_acks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_publish_keeps_acks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
