/* Helpers shared by the benchmarks: see bench_util.h. */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <ragcore/ragcore.h>

int bench_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: error: ", program_invocation_short_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int bench_fail_rag(const char *what, int rc)
{
    return bench_fail("%s: %s (%d): %s", what, rag_strerror(rc), rc, rag_error_last());
}

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_pct_sorted(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return sorted[(rank < 1 ? 1 : rank) - 1];
}

double bench_percentile(double *v, size_t n, double p)
{
    if (n)
        qsort(v, n, sizeof *v, bench_cmp_double);
    return bench_pct_sorted(v, n, p);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "%s: warning: cannot remove %s: %s\n", program_invocation_short_name,
                path, strerror(errno));
    return 0;
}

void bench_rm_tree(const char *root)
{
    if (root && *root)
        nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_acc; /* nftw has no user pointer */

static int du_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F)
        du_acc += (uint64_t)st->st_blocks * 512u;
    return 0;
}

double bench_dir_bytes(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return -1.0;
    du_acc = 0;
    nftw(dir, du_cb, 16, FTW_PHYS);
    return (double)du_acc;
}

uint64_t bench_proc_status_kib(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t nl = strlen(name);
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, nl) == 0) {
            kib = strtoull(line + nl, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}
