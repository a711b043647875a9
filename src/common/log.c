/*
 * The process-wide structured log sink (rag_log_set) and the lock-free latency histograms
 * behind rag_metrics_text.
 *
 * The sink is read far more often than it is set, and every emitter must either see the old
 * sink or the new one, never a torn pair of (fn, user): emitters hold a read lock around the
 * call and rag_log_set() takes the write lock, which also guarantees the host that no call of
 * the previous sink is still running once rag_log_set() returns (so `user` may be freed).
 * A relaxed atomic copy of the filter level lets the quiet default cost one load per event,
 * with no lock and no formatting.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "rag_common.h"

static pthread_rwlock_t sink_lock = PTHREAD_RWLOCK_INITIALIZER;
static rag_log_fn sink_fn;
static void *sink_user;
static _Atomic int sink_level; /* 0: no sink */

int rag_log_set(rag_log_fn fn, void *user, int max_level)
{
    if (fn && (max_level < RAG_LOG_ERROR || max_level > RAG_LOG_DEBUG))
        return rag_error_set(RAG_EINVAL, "rag_log_set: max_level %d is not a RAG_LOG_* level",
                             max_level);
    pthread_rwlock_wrlock(&sink_lock);
    sink_fn = fn;
    sink_user = fn ? user : NULL;
    atomic_store_explicit(&sink_level, fn ? max_level : 0, memory_order_relaxed);
    pthread_rwlock_unlock(&sink_lock);
    return RAG_OK;
}

int rag_log_enabled(int level)
{
    return level >= RAG_LOG_ERROR && level <= atomic_load_explicit(&sink_level, memory_order_relaxed);
}

void rag_log(int level, const char *module, const char *event, const char *fmt, ...)
{
    if (!rag_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_rwlock_rdlock(&sink_lock);
    /* checked again under the lock: the sink may have changed since the relaxed look */
    if (sink_fn && level <= atomic_load_explicit(&sink_level, memory_order_relaxed))
        sink_fn(sink_user, level, module ? module : "", event ? event : "", msg);
    pthread_rwlock_unlock(&sink_lock);
}

/* ---- histograms --------------------------------------------------------------------------- */

const double rag_hist_bounds[RAG_HIST_BOUNDS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,    0.25,  0.5,    1,     2.5,   5};
/* the same bounds in microseconds, so that observing needs no floating point */
static const uint64_t bounds_us[RAG_HIST_BOUNDS] = {500,    1000,   2500,   5000,    10000,
                                                    25000,  50000,  100000, 250000,  500000,
                                                    1000000, 2500000, 5000000};

void rag_hist_observe_us(rag_hist *h, uint64_t us)
{
    if (!h)
        return;
    size_t b = 0;
    while (b < RAG_HIST_BOUNDS && us > bounds_us[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}
