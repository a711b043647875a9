/* Two producer threads and two consumer threads on shared envs: every message is applied
 * exactly once although producers also re-publish old batches (duplicates reach consumers
 * after their originals were acked) and some messages fail transiently first. */
#include <pthread.h>
#include <stdatomic.h>

#include "queue_test_util.h"

#define PRODUCERS 2
#define CONSUMERS 2
#define PER_PRODUCER 2500
#define TXN_EVENTS 50

typedef struct shared {
    rag_config cfg;
    rag_queue_transport *t;
    MDB_env *prod, *cons;
    rag_outbox *ob;
    MDB_dbi effects;
    rag_consumer c;
    rag_queue_policy p;
    atomic_int producers_done;
    atomic_long handled, transient;
    atomic_int errors;
    atomic_long delivered;
    rag_queue_transport counting; /* the broker, with fetch counting deliveries */
} shared;

static shared *g_shared;

static int counting_fetch(void *state, const char *topic, size_t max, uint32_t lease_ms,
                          rag_queue_message *out, size_t *n_out)
{
    int rc = g_shared->t->fetch(state, topic, max, lease_ms, out, n_out);
    if (!rc)
        g_shared->delivered += (long)*n_out;
    return rc;
}

typedef struct producer_arg {
    shared *s;
    int no;
} producer_arg;

static void *producer(void *arg)
{
    producer_arg *pa = arg;
    shared *s = pa->s;
    char(*ids)[RAG_QUEUE_MSGID_MAX] = calloc(PER_PRODUCER, RAG_QUEUE_MSGID_MAX);
    char(*payloads)[32] = calloc(PER_PRODUCER, 32);
    for (int b = 0; b < PER_PRODUCER / TXN_EVENTS; b++) {
        MDB_txn *txn;
        if (mdb_txn_begin(s->prod, NULL, 0, &txn)) {
            s->errors++;
            break;
        }
        for (int j = 0; j < TXN_EVENTS; j++) {
            int i = b * TXN_EVENTS + j;
            snprintf(payloads[i], 32, "p%d-%d", pa->no, i);
            if (rag_outbox_add(s->ob, txn, "work", payloads[i], strlen(payloads[i]), ids[i]))
                s->errors++;
        }
        if (mdb_txn_commit(txn))
            s->errors++;
        size_t moved;
        if (rag_outbox_relay(s->ob, s->t, 0, &moved)) /* concurrent relays serialise */
            s->errors++;
        if (b % 5 == 4) {
            /* Re-publish an older batch, as a relay that crashed before deleting would. */
            rag_queue_message m[TXN_EVENTS];
            for (int j = 0; j < TXN_EVENTS; j++) {
                int i = (b - 3) * TXN_EVENTS + j;
                m[j] = qt_msg("work", ids[i], payloads[i]);
            }
            if (s->t->publish(s->t->state, m, TXN_EVENTS))
                s->errors++;
        }
    }
    free(ids);
    free(payloads);
    return NULL;
}

static int handle(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    shared *s = self;
    s->handled++;
    /* roughly one message in 37 fails transiently on its first delivery */
    if (msg->attempts == 1 && msg->data && ((const char *)msg->data)[msg->size - 1] == '7' &&
        msg->size % 3 == 0) {
        s->transient++;
        return rag_error_set(RAG_ETRANSIENT, "injected");
    }
    MDB_val k = {msg->size, (void *)msg->data}, v;
    uint32_t count = 0;
    if (mdb_get(txn, s->effects, &k, &v) == 0)
        memcpy(&count, v.mv_data, 4);
    count++;
    v.mv_size = 4;
    v.mv_data = &count;
    return mdb_put(txn, s->effects, &k, &v, 0) ? RAG_ESTORAGE : RAG_OK;
}

static void *consumer(void *arg)
{
    shared *s = arg;
    for (;;) {
        size_t n;
        if (rag_consumer_run_once(&s->c, &s->counting, &s->p, &n)) {
            s->errors++;
            break;
        }
        if (n)
            continue;
        uint64_t total;
        if (rag_queue_total_depth(s->t, "work", &total)) {
            s->errors++;
            break;
        }
        if (s->producers_done && total == 0)
            break;
        s->t->wait(s->t->state, "work", 20);
    }
    return NULL;
}

static void test_two_producers_two_consumers_exactly_once(void **state)
{
    char *root = rag_test_tmpdir("queue-mt");
    shared *s = calloc(1, sizeof *s);
    qt_config(&s->cfg, root);
    OK(rag_queue_lmdb_transport_new(&s->t, &s->cfg));
    OK(rag_env_open(&s->prod, &s->cfg, "prod", 16));
    OK(rag_outbox_open(&s->ob, s->prod, "prod"));
    OK(rag_env_open(&s->cons, &s->cfg, "cons", 16));
    OK(rag_dbi_open(s->cons, "effects", 0, &s->effects));
    s->c.module = "cons";
    s->c.topic = "work";
    s->c.env = s->cons;
    s->c.self = s;
    s->c.handle = handle;
    OK(rag_consumer_init(&s->c));
    rag_queue_policy_from_config(&s->p, &s->cfg);
    s->p.batch_size = 32;
    g_shared = s;
    s->counting = *s->t;
    s->counting.fetch = counting_fetch;
    s->p.retry_base_ms = 1;
    s->p.retry_cap_ms = 5;

    uint64_t t0 = rag_mono_us();
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    producer_arg pa[PRODUCERS];
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&ct[i], NULL, consumer, s);
    for (int i = 0; i < PRODUCERS; i++) {
        pa[i].s = s;
        pa[i].no = i;
        pthread_create(&pt[i], NULL, producer, &pa[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    s->producers_done = 1;
    s->t->wake_all(s->t->state);
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(ct[i], NULL);
    double secs = (double)(rag_mono_us() - t0) / 1e6;
    printf("# %d messages through outbox+broker+consumers in %.2f s (%.0f msg/s), %ld "
           "deliveries, %ld handler calls, %ld injected transient failures\n",
           PRODUCERS * PER_PRODUCER, secs, PRODUCERS * PER_PRODUCER / secs, (long)s->delivered,
           (long)s->handled, (long)s->transient);

    /* Deterministic duplicates on top: re-deliver 100 messages long since acked. */
    long handled_before = s->handled, delivered_before = s->delivered;
    MDB_txn *rtxn;
    assert_int_equal(mdb_txn_begin(s->cons, NULL, MDB_RDONLY, &rtxn), 0);
    rag_queue_message again[100];
    /* outbox ids of the first rows: "prod-<origin>-<sequence>", the origin stored by the
     * outbox in its env */
    uint64_t origin = 0;
    {
        MDB_txn *ot;
        MDB_dbi meta;
        assert_int_equal(mdb_txn_begin(s->prod, NULL, MDB_RDONLY, &ot), 0);
        assert_int_equal(mdb_dbi_open(ot, "__outbox_meta", 0, &meta), 0);
        MDB_val ok = {6, "origin"}, ov;
        assert_int_equal(mdb_get(ot, meta, &ok, &ov), 0);
        assert_int_equal(ov.mv_size, 8);
        memcpy(&origin, ov.mv_data, 8);
        mdb_txn_abort(ot);
    }
    for (int i = 0; i < 100; i++) {
        char id[RAG_QUEUE_MSGID_MAX];
        snprintf(id, sizeof id, "prod-%016llx-%016x", (unsigned long long)origin, i + 1);
        MDB_val k = {strlen(id), id}, v;
        assert_int_equal(mdb_get(rtxn, s->c.inbox_dbi, &k, &v), 0);
        again[i] = qt_msg("work", id, "never-applied");
    }
    mdb_txn_abort(rtxn);
    OK(s->t->publish(s->t->state, again, 100));
    s->producers_done = 1;
    consumer(s);
    assert_int_equal(s->delivered - delivered_before, 100);
    assert_int_equal(s->handled, handled_before); /* all skipped by the inbox */
    assert_true(s->delivered > PRODUCERS * PER_PRODUCER + (long)s->transient);

    assert_int_equal(s->errors, 0);
    uint64_t pend;
    OK(rag_outbox_pending(s->ob, &pend));
    assert_int_equal(pend, 0);
    assert_int_equal(qt_total(s->t, "work"), 0);
    assert_true(s->transient > 0);
    /* exactly once: every payload has count 1 */
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(s->cons, NULL, MDB_RDONLY, &txn), 0);
    for (int p = 0; p < PRODUCERS; p++)
        for (int i = 0; i < PER_PRODUCER; i++) {
            char key[32];
            snprintf(key, sizeof key, "p%d-%d", p, i);
            MDB_val k = {strlen(key), key}, v;
            if (mdb_get(txn, s->effects, &k, &v) != 0)
                fail_msg("%s never applied", key);
            uint32_t count;
            memcpy(&count, v.mv_data, 4);
            if (count != 1)
                fail_msg("%s applied %u times", key, count);
        }
    mdb_txn_abort(txn);
    assert_int_equal(qt_table_count(s->cons, "effects"), PRODUCERS * PER_PRODUCER);
    assert_int_equal(qt_table_count(s->cons, "__inbox"), PRODUCERS * PER_PRODUCER);
    uint64_t dead;
    OK(rag_dead_count(s->cons, &dead));
    assert_int_equal(dead, 0);

    rag_outbox_free(s->ob);
    rag_env_close(s->prod);
    rag_env_close(s->cons);
    qt_transport_free(s->t);
    free(s);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_producers_two_consumers_exactly_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
