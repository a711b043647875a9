/* The transactional outbox: rows commit with the caller's txn, ids, relay, re-publish dedup. */
#include <sys/wait.h>
#include <unistd.h>

#include "queue_test_util.h"

typedef struct fx {
    char *root;
    rag_config cfg;
    rag_queue_transport *t;
    MDB_env *env;
    rag_outbox *ob;
} fx;

/* "prod-<16 hex origin>-<16 hex seq>" with sequence `seq`. */
static void assert_id_seq(const char *id, unsigned seq)
{
    char want[24];
    snprintf(want, sizeof want, "-%016x", seq);
    assert_int_equal(strlen(id), 5 + 16 + 17);
    assert_memory_equal(id, "prod-", 5);
    assert_string_equal(id + 21, want);
}

static void open_producer(fx *f)
{
    OK(rag_env_open(&f->env, &f->cfg, "prod", 16));
    OK(rag_outbox_open(&f->ob, f->env, "prod"));
}

static void close_producer(fx *f)
{
    rag_outbox_free(f->ob);
    rag_env_close(f->env); /* frees what rag_env_open attached */
    f->ob = NULL;
    f->env = NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("queue-outbox");
    qt_config(&f->cfg, f->root);
    OK(rag_queue_lmdb_transport_new(&f->t, &f->cfg));
    open_producer(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    close_producer(f);
    qt_transport_free(f->t);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

/* Add `n` events in one txn; commit or abort. */
static void add_events(fx *f, const char *topic, int n, int commit, char ids[][RAG_QUEUE_MSGID_MAX])
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(f->env, NULL, 0, &txn), 0);
    for (int i = 0; i < n; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "event %d", i);
        OK(rag_outbox_add(f->ob, txn, topic, payload, strlen(payload), ids ? ids[i] : NULL));
    }
    if (commit)
        assert_int_equal(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
}

static uint64_t pending(fx *f)
{
    uint64_t n;
    OK(rag_outbox_pending(f->ob, &n));
    return n;
}

static void test_rows_follow_the_txn(void **state)
{
    fx *f = *state;
    assert_string_equal(rag_outbox_module(f->ob), "prod");
    add_events(f, "t", 5, 0, NULL);
    assert_int_equal(pending(f), 0);
    char ids[5][RAG_QUEUE_MSGID_MAX];
    add_events(f, "t", 5, 1, ids);
    assert_int_equal(pending(f), 5);
    /* The aborted txn did not consume sequence numbers either. */
    assert_id_seq(ids[0], 1);
    assert_id_seq(ids[4], 5);
    assert_int_equal(qt_total(f->t, "t"), 0); /* nothing reaches the broker before a relay */

    size_t moved;
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 5);
    assert_int_equal(pending(f), 0);
    assert_int_equal(qt_total(f->t, "t"), 5);
    rag_queue_message out[8];
    size_t n;
    OK(f->t->fetch(f->t->state, "t", 8, 60000, out, &n));
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        char pl[32];
        snprintf(pl, sizeof pl, "event %zu", i);
        assert_string_equal(out[i].id, ids[i]);
        assert_int_equal(out[i].size, strlen(pl));
        assert_memory_equal(out[i].data, pl, out[i].size);
    }
    OK(f->t->ack(f->t->state, out, n));
    f->t->release(f->t->state, out, n);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved)); /* empty outbox */
    assert_int_equal(moved, 0);
}

static void test_relay_max_and_batches(void **state)
{
    fx *f = *state;
    add_events(f, "t", 1300, 1, NULL);
    size_t moved;
    OK(rag_outbox_relay(f->ob, f->t, 3, &moved));
    assert_int_equal(moved, 3);
    assert_int_equal(pending(f), 1297);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved)); /* several 512-row batches */
    assert_int_equal(moved, 1297);
    assert_int_equal(pending(f), 0);
    assert_int_equal(qt_total(f->t, "t"), 1300);

    /* Big payloads: the 8 MiB batch bound splits them, nothing is lost. */
    size_t big = 3u * 1024 * 1024;
    char *payload = malloc(big);
    memset(payload, 'x', big);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(f->env, NULL, 0, &txn), 0);
    for (int i = 0; i < 7; i++) {
        payload[0] = (char)('a' + i);
        OK(rag_outbox_add(f->ob, txn, "big", payload, big, NULL));
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 7);
    rag_queue_message out[8];
    size_t n;
    OK(f->t->fetch(f->t->state, "big", 8, 60000, out, &n));
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].size, big);
        assert_int_equal(((const char *)out[i].data)[0], 'a' + (int)i);
    }
    OK(f->t->ack(f->t->state, out, n));
    f->t->release(f->t->state, out, n);
    free(payload);
}

static void test_ids_unique_across_restarts(void **state)
{
    fx *f = *state;
    char ids[2][RAG_QUEUE_MSGID_MAX];
    add_events(f, "t", 2, 1, ids);
    size_t moved;
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    close_producer(f);
    open_producer(f);
    char later[1][RAG_QUEUE_MSGID_MAX];
    add_events(f, "t", 1, 1, later);
    assert_id_seq(later[0], 3);
    assert_memory_equal(later[0], ids[0], 22); /* same env: same origin */
    assert_string_not_equal(later[0], ids[0]);
    assert_string_not_equal(later[0], ids[1]);
}

/* A transport that accepts the batch and then "crashes" before the relay deletes its rows. */
typedef struct flaky {
    rag_queue_transport *inner;
    int fail_after_publish;
    int calls;
} flaky;

static int flaky_publish(void *state, const rag_queue_message *m, size_t n)
{
    flaky *fl = state;
    fl->calls++;
    int rc = fl->inner->publish(fl->inner->state, m, n);
    if (rc)
        return rc;
    return fl->fail_after_publish ? rag_error_set(RAG_ETRANSIENT, "simulated crash") : RAG_OK;
}

static void test_republish_after_crash_is_deduplicated(void **state)
{
    fx *f = *state;
    add_events(f, "t", 10, 1, NULL);
    flaky fl = {f->t, 1, 0};
    rag_queue_transport t = *f->t;
    t.state = &fl;
    t.publish = flaky_publish;
    size_t moved = 99;
    assert_int_equal(rag_outbox_relay(f->ob, &t, 0, &moved), RAG_ETRANSIENT);
    assert_int_equal(moved, 0);
    assert_int_equal(pending(f), 10);          /* rows kept */
    assert_int_equal(qt_total(f->t, "t"), 10); /* but the broker has them */
    fl.fail_after_publish = 0;
    OK(rag_outbox_relay(f->ob, &t, 0, &moved));
    assert_int_equal(moved, 10);
    assert_int_equal(pending(f), 0);
    assert_int_equal(qt_total(f->t, "t"), 10); /* re-published ids deduplicated */
}

static void test_bad_arguments(void **state)
{
    fx *f = *state;
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(f->env, NULL, 0, &txn), 0);
    assert_int_equal(rag_outbox_add(f->ob, txn, "", "x", 1, NULL), RAG_EINVAL);
    assert_int_equal(rag_outbox_add(f->ob, txn, "a-topic-name-that-is-far-too-long-to-fit",
                                    "x", 1, NULL),
                     RAG_EINVAL);
    assert_int_equal(rag_outbox_add(f->ob, txn, "t", NULL, 1, NULL), RAG_EINVAL);
    OK(rag_outbox_add(f->ob, txn, "t", NULL, 0, NULL)); /* empty payload is fine */
    mdb_txn_abort(txn);
    rag_outbox *ob = NULL;
    assert_int_equal(rag_outbox_open(&ob, f->env, ""), RAG_EINVAL);
    assert_null(ob);
    rag_outbox_free(NULL);
}

/* ---- lazy deletion of relayed rows (issue 9) -----------------------------------------------
 * A relay only remembers (in memory) the last sequence the transport accepted; the rows are
 * deleted by the env's next rag_outbox_add txn, or by rag_outbox_free. */

static uint64_t rows(fx *f) { return qt_table_count(f->env, "__outbox"); }

static void test_relayed_rows_deleted_lazily(void **state)
{
    fx *f = *state;
    add_events(f, "t", 3, 1, NULL);
    size_t moved;
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 3);
    assert_int_equal(rows(f), 3);   /* still in the table */
    assert_int_equal(pending(f), 0); /* but not pending */
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 0); /* a second relay publishes nothing */
    assert_int_equal(qt_total(f->t, "t"), 3);

    /* A txn that adds a row but aborts deletes nothing, and the rows stay relayed. */
    add_events(f, "t", 2, 0, NULL);
    assert_int_equal(rows(f), 3);
    assert_int_equal(pending(f), 0);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 0);

    /* The next add (a txn of its own) deletes the relayed rows. */
    char ids[1][RAG_QUEUE_MSGID_MAX];
    add_events(f, "t", 1, 1, ids);
    assert_id_seq(ids[0], 4);
    assert_int_equal(rows(f), 1);
    assert_int_equal(pending(f), 1);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 1);
    assert_int_equal(rows(f), 1);
    assert_int_equal(pending(f), 0);
    assert_int_equal(qt_total(f->t, "t"), 4);

    /* Free with the env open deletes them; the reopened outbox has nothing to relay. */
    close_producer(f);
    open_producer(f);
    assert_int_equal(rows(f), 0);
    assert_int_equal(pending(f), 0);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 0);
    assert_int_equal(qt_total(f->t, "t"), 4);
    add_events(f, "t", 1, 1, ids);
    assert_id_seq(ids[0], 5); /* the sequence goes on */

    /* pending counts only the rows after the relayed ones, with some relayed and some not */
    add_events(f, "t", 10, 1, NULL);
    OK(rag_outbox_relay(f->ob, f->t, 4, &moved));
    assert_int_equal(moved, 4);
    assert_int_equal(rows(f), 11);
    assert_int_equal(pending(f), 7);
    /* a nested txn that aborts after its add undoes its delete too */
    MDB_txn *txn, *child;
    assert_int_equal(mdb_txn_begin(f->env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_txn_begin(f->env, txn, 0, &child), 0);
    OK(rag_outbox_add(f->ob, child, "t", "n", 1, NULL));
    mdb_txn_abort(child);
    assert_int_equal(mdb_txn_commit(txn), 0);
    assert_int_equal(rows(f), 11);
    assert_int_equal(pending(f), 7);
    /* a committed add deletes exactly the 4 relayed rows, not the 7 others */
    add_events(f, "t", 1, 1, NULL);
    assert_int_equal(rows(f), 11 - 4 + 1);
    assert_int_equal(pending(f), 8);
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 8);
    assert_int_equal(qt_total(f->t, "t"), 4 + 1 + 10 + 1);
}

/* A process that ends without rag_outbox_free (a crash) leaves the relayed rows; the next
 * open re-publishes them and the broker drops the ids it still holds.  The parent forks
 * before it opens anything again (an LMDB env must not cross a fork). */
static void test_relayed_rows_after_crash(void **state)
{
    fx *f = *state;
    close_producer(f);
    qt_transport_free(f->t);
    f->t = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        rag_queue_transport *t = NULL;
        MDB_env *env = NULL;
        rag_outbox *ob = NULL;
        if (rag_queue_lmdb_transport_new(&t, &f->cfg) || rag_env_open(&env, &f->cfg, "prod", 16) ||
            rag_outbox_open(&ob, env, "prod"))
            _exit(2);
        MDB_txn *txn;
        if (mdb_txn_begin(env, NULL, 0, &txn))
            _exit(3);
        for (int i = 0; i < 3; i++)
            if (rag_outbox_add(ob, txn, "t", "crash", 5, NULL))
                _exit(4);
        if (mdb_txn_commit(txn))
            _exit(5);
        size_t moved;
        if (rag_outbox_relay(ob, t, 0, &moved) || moved != 3)
            _exit(6);
        t->free(t->state); /* the broker is durable; only the producer "crashes" */
        _exit(0);          /* no rag_outbox_free: the relayed rows stay */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    OK(rag_queue_lmdb_transport_new(&f->t, &f->cfg));
    open_producer(f);
    assert_int_equal(rows(f), 3);
    assert_int_equal(pending(f), 3); /* this process does not know they were relayed */
    assert_int_equal(qt_total(f->t, "t"), 3);
    size_t moved;
    OK(rag_outbox_relay(f->ob, f->t, 0, &moved));
    assert_int_equal(moved, 3);
    assert_int_equal(qt_total(f->t, "t"), 3); /* the broker dropped the 3 ids it holds */
    assert_int_equal(pending(f), 0);
    /* the next add deletes them */
    add_events(f, "t", 1, 1, NULL);
    assert_int_equal(rows(f), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rows_follow_the_txn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_max_and_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_unique_across_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_republish_after_crash_is_deduplicated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relayed_rows_deleted_lazily, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relayed_rows_after_crash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
