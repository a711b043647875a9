/* Helpers every benchmark needs: clock, nearest-rank percentiles, temporary roots, du-style
 * sizes, /proc/self/status.  Single-threaded use (bench_dir_bytes keeps a static sum). */
#ifndef RAG_BENCH_UTIL_H
#define RAG_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* "<program>: error: <message>" on stderr; returns 1, so that callers `return bench_fail(..)`. */
int bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* bench_fail of a ragcore failure: what, the code's text and number, the thread's detail. */
int bench_fail_rag(const char *what, int rc);
/* Monotonic clock in seconds. */
double bench_now_s(void);
/* qsort comparator of doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);
/* Nearest-rank percentile p (0..100) of `sorted` (ascending); NAN when n is 0. */
double bench_pct_sorted(const double *sorted, size_t n, double p);
/* The same of unsorted `v`, which is sorted in place. */
double bench_percentile(double *v, size_t n, double p);
/* Remove `root` and everything under it; a file that cannot go is reported on stderr. */
void bench_rm_tree(const char *root);
/* Allocated bytes under `dir` (like du: LMDB files are sparse), or -1 when it does not exist. */
double bench_dir_bytes(const char *dir);
/* The "Name: N kB" line `name` (e.g. "VmHWM:") of /proc/self/status in KiB; 0 if unreadable. */
uint64_t bench_proc_status_kib(const char *name);

#endif
