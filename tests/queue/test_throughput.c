/* Broker behaviour at scale, with throughput printed (no timing assertions):
 *  - a 100k-message queue whose head is leased: fetching the rest must not rescan the
 *    leased head on every call (the visibility index makes each fetch O(batch));
 *  - consumer throughput with batching versus one message per transaction. */
#include "queue_test_util.h"

#define BIG 100000

static void test_large_queue_with_leased_head(void **state)
{
    char *root = rag_test_tmpdir("queue-big");
    rag_config cfg;
    qt_config(&cfg, root);
    rag_queue_transport *t;
    OK(rag_queue_lmdb_transport_new(&t, &cfg));

    char payload[100];
    memset(payload, 'x', sizeof payload);
    rag_queue_message *m = calloc(1000, sizeof *m);
    uint64_t t0 = rag_mono_us();
    for (int b = 0; b < BIG / 1000; b++) {
        for (int j = 0; j < 1000; j++) {
            memset(&m[j], 0, sizeof m[j]);
            strcpy(m[j].topic, "big");
            snprintf(m[j].id, sizeof m[j].id, "big-%d", b * 1000 + j);
            m[j].data = payload;
            m[j].size = sizeof payload;
        }
        OK(t->publish(t->state, m, 1000));
    }
    double secs = (double)(rag_mono_us() - t0) / 1e6;
    printf("# publish: %d messages in batches of 1000: %.0f msg/s\n", BIG, BIG / secs);

    /* Lease the first 20k and keep them. */
    rag_queue_message *out = calloc(5000, sizeof *out);
    size_t n;
    for (int i = 0; i < 4; i++) {
        OK(t->fetch(t->state, "big", 5000, 600000, out, &n));
        assert_int_equal(n, 5000);
        t->release(t->state, out, n);
    }
    qt_depth(t, "big", BIG - 20000, 0, 20000);

    t0 = rag_mono_us();
    uint64_t first_us = 0, last_us = 0;
    size_t got = 0;
    for (;;) {
        uint64_t f0 = rag_mono_us();
        OK(t->fetch(t->state, "big", 256, 600000, out, &n));
        uint64_t took = rag_mono_us() - f0;
        if (n == 0)
            break;
        if (!first_us)
            first_us = took;
        last_us = took;
        got += n;
        OK(t->ack(t->state, out, n));
        t->release(t->state, out, n);
    }
    secs = (double)(rag_mono_us() - t0) / 1e6;
    assert_int_equal(got, BIG - 20000);
    printf("# fetch+ack behind 20k leased messages: %.0f msg/s (first fetch %llu us, last %llu "
           "us)\n",
           got / secs, (unsigned long long)first_us, (unsigned long long)last_us);
    qt_depth(t, "big", 0, 0, 20000);
    free(out);
    free(m);
    qt_transport_free(t);
    rag_test_rmtree(root);
    free(root);
}

static MDB_dbi g_effects;

static int handle(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    MDB_val k = {strlen(msg->id), (void *)msg->id}, v = {msg->size, (void *)msg->data};
    return mdb_put(txn, g_effects, &k, &v, 0) ? RAG_ESTORAGE : RAG_OK;
}

static double consume_rate(rag_queue_transport *t, MDB_env *env, const char *topic, int count,
                           unsigned batch)
{
    rag_consumer c;
    memset(&c, 0, sizeof c);
    c.module = "cons";
    c.topic = topic;
    c.env = env;
    c.handle = handle;
    OK(rag_consumer_init(&c));
    char payload[512];
    memset(payload, 'y', sizeof payload);
    rag_queue_message *m = calloc((size_t)count, sizeof *m);
    for (int i = 0; i < count; i++) {
        strcpy(m[i].topic, topic);
        snprintf(m[i].id, sizeof m[i].id, "%s-%d", topic, i);
        m[i].data = payload;
        m[i].size = sizeof payload;
    }
    OK(t->publish(t->state, m, (size_t)count));
    free(m);
    rag_queue_policy p = {8, 10, 100, 30000, batch};
    uint64_t t0 = rag_mono_us();
    size_t total = 0, n;
    do {
        OK(rag_consumer_run_once(&c, t, &p, &n));
        total += n;
    } while (n);
    double secs = (double)(rag_mono_us() - t0) / 1e6;
    assert_int_equal(total, (size_t)count);
    return count / secs;
}

static void test_consumer_batching(void **state)
{
    char *root = rag_test_tmpdir("queue-rate");
    rag_config cfg;
    qt_config(&cfg, root);
    rag_queue_transport *t;
    OK(rag_queue_lmdb_transport_new(&t, &cfg));
    MDB_env *env;
    OK(rag_env_open(&env, &cfg, "cons", 16));
    OK(rag_dbi_open(env, "effects", 0, &g_effects));
    double one = consume_rate(t, env, "single", 2000, 1);
    double many = consume_rate(t, env, "batched", 20000, 256);
    printf("# consumer (no_sync): batch 1: %.0f msg/s, batch 256: %.0f msg/s\n", one, many);
    assert_int_equal(qt_table_count(env, "effects"), 22000);
    rag_env_close(env);
    qt_transport_free(t);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_queue_with_leased_head),
        cmocka_unit_test(test_consumer_batching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
