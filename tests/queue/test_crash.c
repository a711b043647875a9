/* Crash safety with real process deaths: child processes die (a) after a consumer's commit
 * but before its ack and (b) in the middle of a batch, while holding the write txn.  The
 * parent then reopens everything: nothing is lost and nothing is applied twice.
 *
 * The parent forks before it opens anything (an LMDB env must never be used in a forked
 * child); the children use no cmocka assertions and report through their exit status. */
#include <sys/wait.h>
#include <unistd.h>

#include "queue_test_util.h"

#define N_EVENTS 100

typedef struct world {
    rag_config cfg;
    rag_queue_transport *t;
    MDB_env *prod, *cons;
    MDB_dbi effects;
    rag_outbox *ob;
    rag_consumer c;
    rag_queue_policy p;
    int handled;
    int die_at; /* child B: _exit when handling this many messages */
} world;

static int w_handle(void *self, MDB_txn *txn, const rag_queue_message *msg)
{
    world *w = self;
    if (++w->handled == w->die_at)
        _exit(0); /* dies inside the batch txn, holding the env's write lock */
    MDB_val k = {msg->size, (void *)msg->data}, v;
    uint32_t count = 0;
    if (mdb_get(txn, w->effects, &k, &v) == 0)
        memcpy(&count, v.mv_data, 4);
    count++;
    v.mv_size = 4;
    v.mv_data = &count;
    return mdb_put(txn, w->effects, &k, &v, 0) ? RAG_ESTORAGE : RAG_OK;
}

static int world_open(world *w, const char *root)
{
    memset(w, 0, sizeof *w);
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1; /* a process crash (not a power cut) keeps what was written */
    o.map_size_mb = 256;
    int rc = rag_config_init(&w->cfg, root, &o);
    if (!rc)
        rc = rag_queue_lmdb_transport_new(&w->t, &w->cfg);
    if (!rc)
        rc = rag_env_open(&w->prod, &w->cfg, "prod", 16);
    if (!rc)
        rc = rag_outbox_open(&w->ob, w->prod, "prod");
    if (!rc)
        rc = rag_env_open(&w->cons, &w->cfg, "cons", 16);
    if (!rc)
        rc = rag_dbi_open(w->cons, "effects", 0, &w->effects);
    if (rc)
        return rc;
    w->c.module = "cons";
    w->c.topic = "t";
    w->c.env = w->cons;
    w->c.self = w;
    w->c.handle = w_handle;
    rag_queue_policy_from_config(&w->p, &w->cfg);
    w->p.batch_size = 10;
    w->p.lease_ms = 600000; /* only the restart can make these visible again in time */
    return rag_consumer_init(&w->c);
}

static void world_close(world *w)
{
    rag_outbox_free(w->ob);
    if (w->prod)
        rag_env_close(w->prod);
    if (w->cons)
        rag_env_close(w->cons);
    if (w->t) {
        w->t->free(w->t->state);
        free(w->t);
    }
}

/* A transport whose ack kills the process: the crash between commit and ack. */
static int die_on_ack(void *state, const rag_queue_message *m, size_t n)
{
    (void)state;
    (void)m;
    (void)n;
    _exit(0);
}

static int child_a(const char *root)
{
    world w;
    if (world_open(&w, root))
        return 2;
    MDB_txn *txn;
    if (mdb_txn_begin(w.prod, NULL, 0, &txn))
        return 3;
    for (int i = 0; i < N_EVENTS; i++) {
        char p[16];
        snprintf(p, sizeof p, "ev-%d", i);
        if (rag_outbox_add(w.ob, txn, "t", p, strlen(p), NULL))
            return 4;
    }
    if (mdb_txn_commit(txn))
        return 5;
    size_t moved;
    if (rag_outbox_relay(w.ob, w.t, 60, &moved) || moved != 60)
        return 6;
    rag_queue_transport dying = *w.t;
    dying.ack = die_on_ack;
    size_t n;
    int rc = rag_consumer_run_once(&w.c, &dying, &w.p, &n);
    fprintf(stderr, "child A: run_once returned %d (%s), %zu messages\n", rc, rag_error_last(), n);
    return 7; /* not reached */
}

static int child_b(const char *root)
{
    world w;
    if (world_open(&w, root))
        return 2;
    /* Child A's 10 come back first (released leases keep their place) and are skipped by
     * the inbox; the 5th new message then kills the process inside the batch txn. */
    w.p.batch_size = 20;
    w.die_at = 5;
    size_t n;
    rag_consumer_run_once(&w.c, w.t, &w.p, &n);
    return 7; /* not reached */
}

static void run_child(int (*fn)(const char *), const char *root)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(root));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static uint32_t effect_of(world *w, const char *p)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(w->cons, NULL, MDB_RDONLY, &txn), 0);
    MDB_val k = {strlen(p), (void *)p}, v;
    uint32_t count = 0;
    if (mdb_get(txn, w->effects, &k, &v) == 0)
        memcpy(&count, v.mv_data, 4);
    mdb_txn_abort(txn);
    return count;
}

static void test_crashes_lose_nothing_and_apply_nothing_twice(void **state)
{
    char *root = rag_test_tmpdir("queue-crash");
    run_child(child_a, root); /* 100 rows, 60 relayed, 10 applied, none acked */
    run_child(child_b, root); /* dies in the middle of its batch */

    world w;
    OK(world_open(&w, root));
    uint64_t pend;
    OK(rag_outbox_pending(w.ob, &pend));
    /* Rows not relayed are still there, and so are the 60 relayed ones: relayed rows are
     * deleted by the env's next write (lazy), which child A never made. */
    assert_int_equal(pend, N_EVENTS);
    qt_depth(w.t, "t", 60, 0, 0); /* both children's leases were released */
    int applied = 0;
    for (int i = 0; i < N_EVENTS; i++) {
        char p[16];
        snprintf(p, sizeof p, "ev-%d", i);
        applied += (int)effect_of(&w, p);
    }
    assert_int_equal(applied, 10); /* child A's committed batch, child B's batch undone */
    assert_int_equal(qt_table_count(w.cons, "__inbox"), 10);

    size_t moved;
    OK(rag_outbox_relay(w.ob, w.t, 0, &moved));
    assert_int_equal(moved, N_EVENTS);
    qt_depth(w.t, "t", 100, 0, 0); /* the broker dropped the 60 ids it still held */
    w.p.batch_size = 16;
    for (int guard = 0; guard < 1000 && qt_total(w.t, "t") > 0; guard++) {
        size_t n;
        OK(rag_consumer_run_once(&w.c, w.t, &w.p, &n));
    }
    assert_int_equal(qt_total(w.t, "t"), 0);
    for (int i = 0; i < N_EVENTS; i++) {
        char p[16];
        snprintf(p, sizeof p, "ev-%d", i);
        assert_int_equal(effect_of(&w, p), 1);
    }
    /* Child A's 10 redeliveries hit the inbox: the handler ran for the other 90 only. */
    assert_int_equal(w.handled, 90);
    assert_int_equal(qt_table_count(w.cons, "__inbox"), N_EVENTS);
    uint64_t dead;
    OK(rag_dead_count(w.cons, &dead));
    assert_int_equal(dead, 0);
    world_close(&w);
    rag_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crashes_lose_nothing_and_apply_nothing_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
