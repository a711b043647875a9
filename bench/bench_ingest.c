/*
 * bench_ingest: ingest throughput on real documentation corpora and where the ingest time goes.
 *
 *   bench_ingest            (no arguments; see bench/README.md for the environment)
 *
 * Corpora (each skipped, and reported as such, when absent):
 *   python-html    every *.html under /usr/share/doc/python3.11/html (python3.11-doc; ~530
 *                  files, ~50 MB), put as text/html;
 *   gnome-mallard  the C-locale Mallard pages of Debian's gnome-user-docs
 *                  (the .page files of usr/share/help/C/gnome-help and system-admin-guide),
 *                  unpacked by scripts/fetch-corpora.sh into $RAG_CORPORA, else into
 *                  <build dir>/corpora; put as application/xml.
 *
 * Per corpus, on a fresh root (default options: durable, built-in CPU provider in hash mode,
 * IDMap2,Flat) with the workers running (rag_start):
 *   1. every file is read into memory first (untimed);
 *   2. rag_doc_put_batch in batches of 64, then rag_drain: wall time from the first put until
 *      the drain returns (every document searchable) -> documents, bytes, chunks, MB/s;
 *   3. the split of the put time into validate / parse / normalize / chunk / store from the
 *      ingest module's process-wide phase totals (rag_ingest__phase_get, reset before the
 *      corpus), plus "other" = put time not in any phase (batch bookkeeping, outbox, events);
 *   4. baseline on a quiet machine (root closed, no workers): per file, alternately first, the
 *      bare libxml2 parser with the flags ingest uses (htmlReadMemory for HTML, xmlReadMemory
 *      for XML; parse + free only) and ragcore's own parser (rag_ingest__parse: libxml2, text
 *      extraction walk and NFC normalisation).  The ratio says what the extraction adds to the
 *      bare parser; the phase figures of step 3 include contention with the workers.
 *
 * The phase totals are internal to the ingest module, so this file is compiled as part of it
 * (RAG_MODULE_INGEST, src/ingest on the include path) and links the static library; the rest
 * goes through the public API.
 *
 * Output: one JSON object per line on stdout, a summary on stderr.  No assertions on the
 * figures; the exit status is non-zero only when a step fails.
 */
#define _GNU_SOURCE /* nftw, mkdtemp */

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libxml/HTMLparser.h>
#include <libxml/parser.h>

#include <ragcore/ragcore.h>

#include "ingest_internal.h" /* phase totals, rag_ingest__parse (baseline) */

#define BATCH 64
#define PYDOC_DEFAULT "/usr/share/doc/python3.11/html"

#ifndef RAG_BENCH_BINARY_DIR
#define RAG_BENCH_BINARY_DIR "."
#endif

static const char *const PHASE_NAMES[RAG_PHASE_COUNT] = {"validate", "parse", "normalize",
                                                         "chunk", "store"};

/* ------------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench_ingest: error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rmtree(const char *root) { nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ------------------------------------------------------------------------------------------
 * Corpus: files collected by suffix, sorted by path, read into memory
 * ---------------------------------------------------------------------------------------- */

typedef struct file {
    char *path;
    char *id;     /* path relative to the corpus base */
    char *data;
    size_t size;
} file;

typedef struct corpus {
    const char *name;
    const char *mime;
    int xml;      /* 1: XML parser (xmlReadMemory), 0: HTML (htmlReadMemory) */
    file *f;
    size_t n, cap;
    size_t bytes;
    char base[4096];
} corpus;

/* nftw has no user pointer */
static corpus *g_collect;
static const char *g_suffix;

static int collect_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    size_t n = strlen(path), sl = strlen(g_suffix);
    if (n < sl || strcmp(path + n - sl, g_suffix))
        return 0;
    corpus *c = g_collect;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        file *f = realloc(c->f, cap * sizeof *f);
        if (!f)
            return -1;
        c->f = f;
        c->cap = cap;
    }
    file *f = &c->f[c->n];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return -1;
    c->n++;
    return 0;
}

static int collect(corpus *c, const char *dir, const char *suffix)
{
    g_collect = c;
    g_suffix = suffix;
    return nftw(dir, collect_cb, 32, FTW_PHYS) ? -1 : 0;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const file *)a)->path, ((const file *)b)->path);
}

static int load(corpus *c)
{
    qsort(c->f, c->n, sizeof *c->f, cmp_file);
    size_t bl = strlen(c->base);
    for (size_t i = 0; i < c->n; i++) {
        file *f = &c->f[i];
        FILE *fp = fopen(f->path, "rb");
        if (!fp)
            return fail("cannot open %s: %s", f->path, strerror(errno));
        fseek(fp, 0, SEEK_END);
        long sz = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        f->data = malloc(sz > 0 ? (size_t)sz : 1);
        if (!f->data || (sz > 0 && fread(f->data, 1, (size_t)sz, fp) != (size_t)sz)) {
            fclose(fp);
            return fail("cannot read %s", f->path);
        }
        fclose(fp);
        f->size = (size_t)sz;
        c->bytes += f->size;
        const char *rel = f->path;
        if (!strncmp(rel, c->base, bl) && rel[bl] == '/')
            rel += bl + 1;
        f->id = strdup(rel);
        if (!f->id)
            return fail("out of memory");
    }
    return 0;
}

static void corpus_free(corpus *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->f[i].path);
        free(c->f[i].id);
        free(c->f[i].data);
    }
    free(c->f);
    c->f = NULL;
    c->n = c->cap = 0;
}

/* ------------------------------------------------------------------------------------------
 * The ingest run
 * ---------------------------------------------------------------------------------------- */

typedef struct ingest_result {
    size_t docs, failed, bytes;
    uint64_t chunks, vectors, dead_letters;
    double put_s, wall_s;
    rag_ingest_phase_us ph;
} ingest_result;

static int run_ingest(const corpus *c, const char *tmp, ingest_result *r)
{
    memset(r, 0, sizeof *r);
    char root[4096];
    int n = snprintf(root, sizeof root, "%s/ragcore-bench-ingest-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof root || !mkdtemp(root))
        return fail("cannot make a temporary root under %s: %s", tmp, strerror(errno));

    rag_options o;
    rag_options_init(&o); /* defaults: durable, cpu provider "hash" 384-d, IDMap2,Flat */
    rag_ctx *ctx = NULL;
    int ret = 1, rc = rag_open(&ctx, root, &o);
    if (rc) {
        fail("rag_open %s: %s (%s)", root, rag_strerror(rc), rag_error_last());
        goto out;
    }
    if ((rc = rag_start(ctx)) != RAG_OK) {
        fail("rag_start: %s (%s)", rag_strerror(rc), rag_error_last());
        goto out;
    }
    rag_doc docs[BATCH];
    rag_put_result res[BATCH];
    char uris[BATCH][4200];
    const char *dms = getenv("RAG_BENCH_DRAIN_MS");
    uint32_t drain_ms = dms ? (uint32_t)strtoul(dms, NULL, 10) : 0;

    rag_ingest__phase_reset();
    double t0 = now_s();
    for (size_t i = 0; i < c->n; i += BATCH) {
        size_t m = c->n - i < BATCH ? c->n - i : BATCH;
        for (size_t k = 0; k < m; k++) {
            const file *f = &c->f[i + k];
            memset(&docs[k], 0, sizeof docs[k]);
            docs[k].id = f->id;
            docs[k].data = f->data;
            docs[k].size = f->size;
            docs[k].mime = c->mime;
            snprintf(uris[k], sizeof uris[k], "file://%s", f->path);
            docs[k].uri = uris[k];
        }
        rc = rag_doc_put_batch(ctx, docs, m, res);
        if (rc) {
            fail("rag_doc_put_batch: %s (%s)", rag_strerror(rc), rag_error_last());
            goto out;
        }
        for (size_t k = 0; k < m; k++) {
            if (res[k].code != RAG_OK) {
                if (r->failed < 5)
                    fprintf(stderr, "bench_ingest: %s: %s: %s\n", c->name, docs[k].id,
                            rag_strerror(res[k].code));
                r->failed++;
            } else {
                r->docs++;
                r->bytes += c->f[i + k].size;
            }
        }
    }
    double t1 = now_s();
    rag_ingest__phase_get(&r->ph);
    rc = rag_drain(ctx, drain_ms);
    double t2 = now_s();
    if (rc) {
        fail("rag_drain: %s (%s)", rag_strerror(rc), rag_error_last());
        goto out;
    }
    r->put_s = t1 - t0;
    r->wall_s = t2 - t0;
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    if ((rc = rag_status(ctx, &st)) != RAG_OK) {
        fail("rag_status: %s (%s)", rag_strerror(rc), rag_error_last());
        goto out;
    }
    r->chunks = st.chunks;
    r->vectors = st.vectors;
    r->dead_letters = st.dead_letters;
    ret = 0;
out:
    rag_close(ctx);
    rmtree(root);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Parse baseline: bare libxml2 vs ragcore's parser, same files, quiet machine
 * ---------------------------------------------------------------------------------------- */

typedef struct baseline {
    double bare_s, rag_parse_s, rag_norm_s;
    size_t bare_failed, rag_failed, blocks;
} baseline;

static void noop_error(void *ctx, const char *fmt, ...)
{
    (void)ctx;
    (void)fmt;
}

static double bare_parse(const corpus *c, const file *f, int *ok)
{
    double t = now_s();
    xmlDocPtr doc;
    /* the flags and encoding of parse_html.c */
    if (c->xml)
        doc = xmlReadMemory(f->data, (int)f->size, NULL, "UTF-8",
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                XML_PARSE_NOCDATA);
    else
        doc = htmlReadMemory(f->data, (int)f->size, NULL, "UTF-8",
                             HTML_PARSE_NONET | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                 HTML_PARSE_RECOVER | HTML_PARSE_NOBLANKS);
    *ok = doc != NULL;
    xmlFreeDoc(doc);
    return now_s() - t;
}

static void run_baseline(const corpus *c, baseline *b)
{
    memset(b, 0, sizeof *b);
    /* ragcore's parse installs its own error handlers around each parse; the bare pass must
     * not print either */
    xmlSetGenericErrorFunc(NULL, noop_error);
    rag_ingest__xml_init();
    rag_ingest__phase_reset();
    for (size_t i = 0; i < c->n; i++) {
        const file *f = &c->f[i];
        for (int pass = 0; pass < 2; pass++) {
            /* alternate which goes first, so both see the same cache and machine state */
            int bare = (pass == 0) == ((i & 1) == 0);
            if (bare) {
                int ok;
                b->bare_s += bare_parse(c, f, &ok);
                if (!ok)
                    b->bare_failed++;
            } else {
                rag_ingest_parsed p;
                rag_ingest__parsed_init(&p);
                int rc = rag_ingest__parse(c->xml ? RAG_FMT_XML : RAG_FMT_HTML, f->data, f->size,
                                           &p);
                if (rc)
                    b->rag_failed++;
                else
                    b->blocks += p.count;
                rag_ingest__parsed_clear(&p);
            }
        }
    }
    rag_ingest_phase_us ph;
    rag_ingest__phase_get(&ph);
    b->rag_parse_s = (double)ph.us[RAG_PHASE_PARSE] * 1e-6;
    b->rag_norm_s = (double)ph.us[RAG_PHASE_NORMALIZE] * 1e-6;
}

/* ------------------------------------------------------------------------------------------
 * Reporting
 * ---------------------------------------------------------------------------------------- */

static void report(const corpus *c, const ingest_result *r, const baseline *b)
{
    const double MB = 1e6;
    double phase_s[RAG_PHASE_COUNT], sum = 0;
    for (int i = 0; i < RAG_PHASE_COUNT; i++) {
        phase_s[i] = (double)r->ph.us[i] * 1e-6;
        sum += phase_s[i];
    }
    double other = r->put_s > sum ? r->put_s - sum : 0;
    printf("{\"bench\":\"ingest\",\"corpus\":\"%s\",\"mime\":\"%s\",\"batch\":%d,\"fsync\":1,"
           "\"documents\":%zu,\"failed\":%zu,\"bytes\":%zu,\"chunks\":%llu,\"vectors\":%llu,"
           "\"dead_letters\":%llu,\"wall_s\":%.3f,\"mb_per_s\":%.2f,\"docs_per_s\":%.1f,"
           "\"chunks_per_s\":%.1f,\"put_s\":%.3f,\"put_mb_per_s\":%.2f,\"phase_ms\":{",
           c->name, c->mime, BATCH, r->docs, r->failed, r->bytes,
           (unsigned long long)r->chunks, (unsigned long long)r->vectors,
           (unsigned long long)r->dead_letters, r->wall_s, (double)r->bytes / MB / r->wall_s,
           (double)r->docs / r->wall_s, (double)r->chunks / r->wall_s, r->put_s,
           (double)r->bytes / MB / r->put_s);
    for (int i = 0; i < RAG_PHASE_COUNT; i++)
        printf("\"%s\":%.1f,", PHASE_NAMES[i], phase_s[i] * 1e3);
    printf("\"other\":%.1f},\"phase_pct_of_put\":{", other * 1e3);
    for (int i = 0; i < RAG_PHASE_COUNT; i++)
        printf("\"%s\":%.1f,", PHASE_NAMES[i], 100.0 * phase_s[i] / r->put_s);
    printf("\"other\":%.1f}}\n", 100.0 * other / r->put_s);

    double bare_mbs = b->bare_s > 0 ? (double)c->bytes / MB / b->bare_s : 0;
    double rag_mbs = b->rag_parse_s > 0 ? (double)c->bytes / MB / b->rag_parse_s : 0;
    printf("{\"bench\":\"ingest_parse_baseline\",\"corpus\":\"%s\",\"bare_parser\":\"%s\","
           "\"documents\":%zu,\"bytes\":%zu,\"bare_ms\":%.1f,\"bare_mb_per_s\":%.2f,"
           "\"bare_failed\":%zu,\"ragcore_parse_ms\":%.1f,\"ragcore_parse_mb_per_s\":%.2f,"
           "\"ragcore_normalize_ms\":%.1f,\"ragcore_failed\":%zu,\"blocks\":%zu,"
           "\"ragcore_parse_to_bare_ratio\":%.2f,\"ingest_parse_to_bare_ratio\":%.2f}\n",
           c->name, c->xml ? "xmlReadMemory" : "htmlReadMemory", c->n, c->bytes,
           b->bare_s * 1e3, bare_mbs, b->bare_failed, b->rag_parse_s * 1e3, rag_mbs,
           b->rag_norm_s * 1e3, b->rag_failed, b->blocks,
           b->bare_s > 0 ? b->rag_parse_s / b->bare_s : 0,
           b->bare_s > 0 ? phase_s[RAG_PHASE_PARSE] / b->bare_s : 0);
    fflush(stdout);

    fprintf(stderr,
            "\n%s: %zu documents (%zu failed), %.1f MB, %llu chunks (%.0f B of input per "
            "chunk)\n"
            "  ingest until searchable: %.2f s = %.2f MB/s, %.0f docs/s, %.0f chunks/s "
            "(put alone %.2f s = %.2f MB/s)\n"
            "  put time split:",
            c->name, r->docs, r->failed, (double)r->bytes / MB, (unsigned long long)r->chunks,
            r->chunks ? (double)r->bytes / (double)r->chunks : 0, r->wall_s,
            (double)r->bytes / MB / r->wall_s, (double)r->docs / r->wall_s,
            (double)r->chunks / r->wall_s, r->put_s, (double)r->bytes / MB / r->put_s);
    for (int i = 0; i < RAG_PHASE_COUNT; i++)
        fprintf(stderr, " %s %.0f ms (%.0f%%),", PHASE_NAMES[i], phase_s[i] * 1e3,
                100.0 * phase_s[i] / r->put_s);
    fprintf(stderr, " other %.0f ms (%.0f%%)\n", other * 1e3, 100.0 * other / r->put_s);
    fprintf(stderr,
            "  parse baseline (quiet, no workers): bare %s %.0f ms (%.1f MB/s); ragcore parser "
            "%.0f ms (%.1f MB/s, %.2fx bare) + normalize %.0f ms; in-ingest parse %.2fx bare\n",
            c->xml ? "xmlReadMemory" : "htmlReadMemory", b->bare_s * 1e3, bare_mbs,
            b->rag_parse_s * 1e3, rag_mbs, b->bare_s > 0 ? b->rag_parse_s / b->bare_s : 0,
            b->rag_norm_s * 1e3, b->bare_s > 0 ? phase_s[RAG_PHASE_PARSE] / b->bare_s : 0);
}

static void report_skip(const char *name, const char *why)
{
    printf("{\"bench\":\"ingest\",\"corpus\":\"%s\",\"skipped\":true,\"reason\":\"%s\"}\n", name,
           why);
    fflush(stdout);
    fprintf(stderr, "\n%s: skipped (%s)\n", name, why);
}

static int bench_corpus(corpus *c, const char *tmp)
{
    if (load(c)) {
        corpus_free(c);
        return 1;
    }
    fprintf(stderr, "bench_ingest: %s: %zu files, %.1f MB from %s\n", c->name, c->n,
            (double)c->bytes / 1e6, c->base);
    ingest_result r;
    baseline b;
    int ret = run_ingest(c, tmp, &r);
    if (!ret) {
        run_baseline(c, &b);
        report(c, &r, &b);
    }
    corpus_free(c);
    return ret;
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: bench_ingest   (environment: RAG_PYDOC_DIR, RAG_CORPORA, "
                        "RAG_BENCH_TMPDIR, RAG_BENCH_DRAIN_MS; see bench/README.md)\n");
        return 2;
    }
    const char *tmp = getenv("RAG_BENCH_TMPDIR");
    if (!tmp || !*tmp)
        tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    int ret = 0;

    /* (a) the Python 3.11 HTML documentation */
    corpus py = {.name = "python-html", .mime = "text/html", .xml = 0};
    const char *pydoc = getenv("RAG_PYDOC_DIR");
    snprintf(py.base, sizeof py.base, "%s", pydoc && *pydoc ? pydoc : PYDOC_DEFAULT);
    if (!is_dir(py.base)) {
        report_skip(py.name, "no Python HTML docs (install python3.11-doc: "
                             "scripts/install-deps.sh)");
    } else if (collect(&py, py.base, ".html") || !py.n) {
        corpus_free(&py);
        report_skip(py.name, "no .html files found");
    } else {
        ret |= bench_corpus(&py, tmp);
    }

    /* (b) the Mallard pages of gnome-user-docs (scripts/fetch-corpora.sh) */
    corpus gn = {.name = "gnome-mallard", .mime = "application/xml", .xml = 1};
    const char *cdir = getenv("RAG_CORPORA");
    char help[4096];
    if (cdir && *cdir)
        snprintf(help, sizeof help, "%s/usr/share/help/C", cdir);
    else
        snprintf(help, sizeof help, "%s/corpora/usr/share/help/C", RAG_BENCH_BINARY_DIR);
    snprintf(gn.base, sizeof gn.base, "%s", help);
    char sub[2][4200];
    snprintf(sub[0], sizeof sub[0], "%s/gnome-help", help);
    snprintf(sub[1], sizeof sub[1], "%s/system-admin-guide", help);
    if (!is_dir(sub[0]) && !is_dir(sub[1])) {
        report_skip(gn.name, "gnome-user-docs pages not found: run scripts/fetch-corpora.sh "
                             "<build>/corpora, or set RAG_CORPORA");
    } else {
        int bad = 0;
        for (int i = 0; i < 2; i++)
            if (is_dir(sub[i]) && collect(&gn, sub[i], ".page"))
                bad = 1;
        if (bad || !gn.n) {
            corpus_free(&gn);
            report_skip(gn.name, "no .page files found");
        } else {
            ret |= bench_corpus(&gn, tmp);
        }
    }
    xmlCleanupParser();
    return ret;
}
