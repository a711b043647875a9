/* Helpers shared by the queue module's tests (header-only, static functions). */
#ifndef QUEUE_TEST_UTIL_H
#define QUEUE_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "rag_common.h"
#include "rag_queue.h"
#include "test_support.h"

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

static inline void qt_config(rag_config *cfg, const char *root)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 512;
    OK(rag_config_init(cfg, root, &o));
}

static inline void qt_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline rag_queue_message qt_msg(const char *topic, const char *id, const char *payload)
{
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    snprintf(m.id, sizeof m.id, "%s", id);
    m.data = payload;
    m.size = strlen(payload);
    return m;
}

static inline void qt_depth(rag_queue_transport *t, const char *topic, uint64_t ready,
                            uint64_t delayed, uint64_t inflight)
{
    rag_queue_depth d;
    OK(t->depth(t->state, topic, &d));
    if (d.ready != ready || d.delayed != delayed || d.inflight != inflight)
        fail_msg("depth(%s) = ready %llu delayed %llu inflight %llu, expected %llu %llu %llu",
                 topic, (unsigned long long)d.ready, (unsigned long long)d.delayed,
                 (unsigned long long)d.inflight, (unsigned long long)ready,
                 (unsigned long long)delayed, (unsigned long long)inflight);
}

static inline uint64_t qt_total(rag_queue_transport *t, const char *topic)
{
    uint64_t n;
    OK(rag_queue_total_depth(t, topic, &n));
    return n;
}

static inline void qt_transport_free(rag_queue_transport *t)
{
    if (t) {
        t->free(t->state);
        free(t);
    }
}

/* Number of entries of a named table (0 when absent). */
static inline uint64_t qt_table_count(MDB_env *env, const char *name)
{
    MDB_dbi dbi;
    OK(rag_dbi_open(env, name, 0, &dbi));
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    MDB_stat st;
    assert_int_equal(mdb_stat(txn, dbi, &st), 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

#endif
