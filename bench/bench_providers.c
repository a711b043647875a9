/*
 * bench_providers: throughput of the embedding providers on real text, CPU and CUDA.
 *
 *   bench_providers [options]
 *     --docs FILE       SciFact docs.jsonl (default $RAG_SHARED_DATA/scifact/docs.jsonl, else
 *                       <source>/../shared/data/scifact/docs.jsonl); chunked here (below)
 *     --chunks FILE     a chunk file written by --dump-chunks (the device kit uses it: no
 *                       data set on the GPU machine)
 *     --dump-chunks F   write the chunks to F and exit
 *     --threads N       the "all cores" CPU figure on N threads (default: online CPUs)
 *     --gpu-texts N     texts of the CUDA figures (default 262144: the chunks repeated)
 *     --min-time S      each CPU figure runs whole passes for at least S seconds (default 1)
 *     --json FILE       also write the JSON lines to FILE
 *     --parity          instead of the benchmark: the CUDA parity checks (exit 0 all within
 *                       1e-5, 1 a failure, 77 no device)
 *     --device-count    print the number of CUDA devices and exit (0: exit status 77)
 *
 * Corpus: SciFact abstracts ("title\ntext", 5,183 documents, 1.5 KB on average) cut into
 * chunks of 500-800 bytes at sentence ends (else spaces), the way a document is cut by the
 * ingest module's target size; a document shorter than that is one chunk.
 *
 * Figures (one JSON object per line on stdout, then a table):
 *   cpu            chunks/s of the cpu provider on 1 and on N threads (each thread embeds its
 *                  own contiguous share in calls of 64 texts), `hash` 384-d and `table` mode
 *                  (a synthetic 50,000 x 384 table: the corpus vocabulary, most frequent
 *                  words first, padded with words that never occur; rows from a fixed-seed
 *                  generator).
 *   cuda_kernel    the embedding-bag kernel alone over --gpu-texts texts whose terms are
 *                  already on the device (best of 5 passes).
 *   cuda_copy_kernel  terms host->device + kernel + vectors device->host, terms already
 *                  featurized in pinned memory, sub-batches over the provider's streams.
 *   cuda_end_to_end   texts in, vectors out through the provider's `embed` (host
 *                  featurization included), with the phase split of rag_embed_cuda_stats.
 *   cuda_parity    max |cuda - cpu| over every chunk.
 * Without a device: {"figure":"cuda","skipped":"no CUDA device"}.  The device name is asked of
 * the CUDA runtime only in the device kit's build (bench/cuda, RAG_BENCH_CUDA_RUNTIME);
 * elsewhere it is "n/a".
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ragcore/providers.h>
#include <ragcore/sys/embed_cuda.h>

#ifdef RAG_BENCH_CUDA_RUNTIME
#include <cuda_runtime_api.h>
#endif

#ifndef RAG_BENCH_SOURCE_DIR
#define RAG_BENCH_SOURCE_DIR "."
#endif

#define CHUNK_MIN 500
#define CHUNK_MAX 800
#define CPU_CALL 64           /* texts per embed call in the CPU figures */
#define TABLE_ROWS 50000
#define DIM 384
#define PARITY_TOL 1e-5

/* The CUDA provider's benchmark hook (backends/embed-cuda/embed_cuda.cu; hidden in librag.so,
 * reachable from the static library and the device kit). */
int rag_embed_cuda__bench(const rag_embed_provider *provider, const char *const *texts,
                          const size_t *lens, size_t n, unsigned int reps, double *kernel_s,
                          double *pipeline_s);

static FILE *json_out;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_providers: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

/* One JSON object per line, on stdout and in --json. */
static void emit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    if (json_out) {
        va_start(ap, fmt);
        vfprintf(json_out, fmt, ap);
        va_end(ap);
        fputc('\n', json_out);
        fflush(json_out);
    }
    fflush(stdout);
}

/* ---- corpus ------------------------------------------------------------------------------- */

typedef struct corpus {
    char **text;
    size_t *len;
    size_t n, cap;
    size_t bytes;
} corpus;

static void corpus_add(corpus *c, const char *s, size_t len)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->text = xrealloc(c->text, c->cap * sizeof *c->text);
        c->len = xrealloc(c->len, c->cap * sizeof *c->len);
    }
    char *t = xmalloc(len + 1);
    memcpy(t, s, len);
    t[len] = 0;
    c->text[c->n] = t;
    c->len[c->n] = len;
    c->bytes += len;
    c->n++;
}

static void corpus_free(corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->text[i]);
    free(c->text);
    free(c->len);
    memset(c, 0, sizeof *c);
}

static void put_utf8(char **o, uint32_t cp)
{
    unsigned char *p = (unsigned char *)*o;
    if (cp < 0x80) {
        *p++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *p++ = (unsigned char)(0xC0 | (cp >> 6));
        *p++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *p++ = (unsigned char)(0xE0 | (cp >> 12));
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *p++ = (unsigned char)(0xF0 | (cp >> 18));
        *p++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *p++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    *o = (char *)p;
}

static int hex4(const char *s, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

/* Decode the JSON string starting after its opening quote at *p into a malloc'd buffer
 * (the data set is trusted; no jansson on the GPU machine). */
static char *json_string(const char **p, size_t *len)
{
    const char *s = *p;
    char *out = xmalloc(strlen(s) + 1), *o = out;
    while (*s && *s != '"') {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        s++;
        char c = *s ? *s++ : 0;
        switch (c) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(s, &cp))
                die("bad \\u escape");
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[0] == '\\' && s[1] == 'u' && !hex4(s + 2, &lo) &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }
            put_utf8(&o, cp);
            break;
        }
        default: *o++ = c; break; /* \" \\ \/ */
        }
    }
    if (*s == '"')
        s++;
    *p = s;
    *len = (size_t)(o - out);
    *o = 0;
    return out;
}

/* Value of the string field `key` of one flat JSON object, or NULL. */
static char *json_field(const char *line, const char *key, size_t *len)
{
    const char *s = line;
    size_t kl = strlen(key);
    while ((s = strchr(s, '"')) != NULL) {
        s++;
        size_t l = 0;
        char *k = json_string(&s, &l);
        int match = l == kl && memcmp(k, key, kl) == 0;
        free(k);
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s != ':')
            continue; /* that was a value */
        s++;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s != '"')
            continue;
        s++;
        char *v = json_string(&s, &l);
        if (match) {
            *len = l;
            return v;
        }
        free(v);
    }
    return NULL;
}

/* Cut a document into chunks of CHUNK_MIN..CHUNK_MAX bytes at the last sentence end (". ")
 * in that window, else the last space, else at CHUNK_MAX on a UTF-8 boundary. */
static void chunk_doc(corpus *c, const char *s, size_t len)
{
    size_t pos = 0;
    while (len - pos > CHUNK_MAX) {
        size_t lo = pos + CHUNK_MIN, hi = pos + CHUNK_MAX, cut = 0;
        for (size_t i = hi; i > lo && !cut; i--)
            if (s[i - 1] == ' ' && s[i - 2] == '.')
                cut = i;
        for (size_t i = hi; i > lo && !cut; i--)
            if (s[i - 1] == ' ')
                cut = i;
        if (!cut) {
            cut = hi;
            while (cut > lo && ((unsigned char)s[cut] & 0xC0) == 0x80)
                cut--;
        }
        corpus_add(c, s + pos, cut - pos);
        pos = cut;
    }
    if (len > pos)
        corpus_add(c, s + pos, len - pos);
}

static int load_docs(corpus *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        size_t tl = 0, xl = 0;
        char *title = json_field(line, "title", &tl);
        char *text = json_field(line, "text", &xl);
        if (text) {
            char *doc = xmalloc(tl + xl + 2);
            if (title)
                memcpy(doc, title, tl);
            doc[tl] = '\n';
            memcpy(doc + tl + 1, text, xl);
            chunk_doc(c, doc, tl + 1 + xl);
            free(doc);
        }
        free(title);
        free(text);
    }
    free(line);
    fclose(f);
    return c->n ? 0 : -1;
}

/* Chunk file: "ragcore-chunks 1 <count>\n" then "<len>\n<bytes>\n" per chunk. */
static void dump_chunks(const corpus *c, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        die("cannot write %s", path);
    fprintf(f, "ragcore-chunks 1 %zu\n", c->n);
    for (size_t i = 0; i < c->n; i++) {
        fprintf(f, "%zu\n", c->len[i]);
        fwrite(c->text[i], 1, c->len[i], f);
        fputc('\n', f);
    }
    if (fclose(f) != 0)
        die("cannot write %s", path);
}

static int load_chunks(corpus *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = 0;
    if (fscanf(f, "ragcore-chunks 1 %zu\n", &n) != 1)
        die("%s: not a chunk file", path);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        if (fscanf(f, "%zu", &len) != 1 || fgetc(f) != '\n')
            die("%s: truncated at chunk %zu", path, i);
        char *buf = xmalloc(len + 1);
        if (fread(buf, 1, len, f) != len || fgetc(f) != '\n')
            die("%s: truncated at chunk %zu", path, i);
        corpus_add(c, buf, len);
        free(buf);
    }
    fclose(f);
    return 0;
}

/* ---- the synthetic table: the corpus' most frequent words --------------------------------- */

typedef struct word {
    char *w;
    size_t count;
} word;

typedef struct wtab {
    word *e;
    size_t n, mask;
} wtab;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void wtab_add(wtab *t, const char *s, size_t len)
{
    if ((t->n + 1) * 2 > t->mask + 1) {
        wtab nt = {calloc((t->mask + 1) * 2, sizeof(word)), 0, (t->mask + 1) * 2 - 1};
        if (!nt.e)
            die("out of memory");
        for (size_t i = 0; i <= t->mask; i++)
            if (t->e[i].w) {
                size_t j = fnv(t->e[i].w, strlen(t->e[i].w)) & nt.mask;
                while (nt.e[j].w)
                    j = (j + 1) & nt.mask;
                nt.e[j] = t->e[i];
                nt.n++;
            }
        free(t->e);
        *t = nt;
    }
    size_t j = fnv(s, len) & t->mask;
    while (t->e[j].w) {
        if (strlen(t->e[j].w) == len && memcmp(t->e[j].w, s, len) == 0) {
            t->e[j].count++;
            return;
        }
        j = (j + 1) & t->mask;
    }
    t->e[j].w = xmalloc(len + 1);
    memcpy(t->e[j].w, s, len);
    t->e[j].w[len] = 0;
    t->e[j].count = 1;
    t->n++;
}

static int by_count(const void *a, const void *b)
{
    const word *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->w, y->w);
}

/* Words as the provider sees most of them: ASCII letters/digits lower-cased, and any
 * non-ASCII byte (kept as is), split on everything else. */
static char **corpus_vocab(const corpus *c, size_t max, size_t *n_out)
{
    wtab t = {calloc(1 << 16, sizeof(word)), 0, (1 << 16) - 1};
    char buf[64];
    for (size_t i = 0; i < c->n; i++) {
        size_t bl = 0;
        for (size_t k = 0; k <= c->len[i]; k++) {
            unsigned char ch = k < c->len[i] ? (unsigned char)c->text[i][k] : ' ';
            int wc = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch >= 0x80 ||
                     (ch >= 'A' && ch <= 'Z');
            if (wc) {
                if (bl < sizeof buf)
                    buf[bl++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
            } else if (bl) {
                wtab_add(&t, buf, bl);
                bl = 0;
            }
        }
    }
    word *all = xmalloc(t.n * sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i <= t.mask; i++)
        if (t.e[i].w)
            all[n++] = t.e[i];
    qsort(all, n, sizeof *all, by_count);
    size_t m = n < max ? n : max;
    char **toks = xmalloc(max * sizeof *toks);
    for (size_t i = 0; i < n; i++) {
        if (i < m)
            toks[i] = all[i].w;
        else
            free(all[i].w);
    }
    /* A smaller vocabulary is padded with words that never occur, so that the table (and the
     * memory the gathers roam over) has `max` rows whatever the corpus. */
    for (size_t i = m; i < max; i++) {
        char pad[32];
        snprintf(pad, sizeof pad, "zzpad%zu", i);
        toks[i] = xmalloc(strlen(pad) + 1);
        memcpy(toks[i], pad, strlen(pad) + 1);
    }
    free(all);
    free(t.e);
    *n_out = max;
    return toks;
}

static float *table_rows(size_t n, unsigned int dim)
{
    float *rows = xmalloc(n * dim * sizeof *rows);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < n * dim; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rows[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return rows;
}

typedef struct model {
    const char *mode;   /* "hash" | "table" */
    char **toks;        /* table */
    size_t n_toks;
    float *rows;
} model;

static void make_provider(const model *m, rag_embed_provider *p)
{
    int rc = strcmp(m->mode, "hash") == 0
                 ? rag_embed_cpu_hash_init(p, DIM)
                 : rag_embed_cpu_table_init(p, (const char *const *)m->toks, m->n_toks, m->rows,
                                            DIM, "bench-scifact-vocab");
    if (rc)
        die("cpu provider (%s): error %d", m->mode, rc);
}

/* Terms per text as the model sees them (through the public `bag` slot). */
static double terms_per_text(const rag_embed_provider *p, const corpus *c)
{
    rag_embed_bag bag;
    if (!p->bag || p->bag(p->state, &bag) != 0)
        return 0;
    size_t cap = c->bytes / 2 + 1024, needed = 0;
    uint32_t *idx = xmalloc(cap * sizeof *idx);
    float *w = xmalloc(cap * sizeof *w);
    size_t *off = xmalloc((c->n + 1) * sizeof *off);
    int rc = bag.featurize(bag.featurize_state, (const char *const *)c->text, c->len, c->n, idx, w,
                           cap, off, &needed);
    double r = rc == 0 ? (double)off[c->n] / (double)c->n : 0;
    free(idx);
    free(w);
    free(off);
    return r;
}

/* ---- CPU figures -------------------------------------------------------------------------- */

typedef struct cpu_job {
    const rag_embed_provider *p;
    const corpus *c;
    size_t first, n;
    unsigned int passes;
    double seconds;
    int rc;
} cpu_job;

static void *cpu_run(void *arg)
{
    cpu_job *j = arg;
    float *out = xmalloc((size_t)CPU_CALL * j->p->dim * sizeof *out);
    double t0 = now_s();
    for (unsigned int r = 0; r < j->passes && !j->rc; r++)
        for (size_t i = j->first; i < j->first + j->n && !j->rc; i += CPU_CALL) {
            size_t m = j->first + j->n - i < CPU_CALL ? j->first + j->n - i : CPU_CALL;
            j->rc = j->p->embed(j->p->state, (const char *const *)j->c->text + i, j->c->len + i,
                                m, out);
        }
    j->seconds = now_s() - t0;
    free(out);
    return NULL;
}

/* chunks/s of `p` on `threads` threads, whole passes over the corpus. */
static double cpu_rate(const rag_embed_provider *p, const corpus *c, unsigned int threads,
                       unsigned int passes, double *seconds)
{
    cpu_job jobs[256];
    pthread_t tid[256];
    if (threads > 256)
        threads = 256;
    double t0 = now_s();
    for (unsigned int t = 0; t < threads; t++) {
        size_t a = c->n * t / threads, z = c->n * (t + 1) / threads;
        jobs[t] = (cpu_job){p, c, a, z - a, passes, 0, 0};
        if (t && pthread_create(&tid[t], NULL, cpu_run, &jobs[t]) != 0)
            die("pthread_create");
    }
    cpu_run(&jobs[0]);
    for (unsigned int t = 1; t < threads; t++)
        pthread_join(tid[t], NULL);
    double dt = now_s() - t0;
    for (unsigned int t = 0; t < threads; t++)
        if (jobs[t].rc)
            die("cpu embed failed: %d", jobs[t].rc);
    *seconds = dt;
    return (double)c->n * passes / dt;
}

typedef struct row {
    char name[48];
    double rate;
    char note[96];
} row;
static row table[32];
static int n_rows;

static void add_row(const char *name, double rate, const char *fmt, ...)
{
    if (n_rows == 32)
        return;
    row *r = &table[n_rows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->rate = rate;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note, sizeof r->note, fmt, ap);
    va_end(ap);
}

static void cpu_figures(const model *m, const corpus *c, unsigned int threads, double min_time)
{
    rag_embed_provider p;
    make_provider(m, &p);
    double tpt = terms_per_text(&p, c);
    /* one warm-up pass on 1 thread sizes the runs: whole passes for at least min_time */
    double s1 = 0;
    double r1 = cpu_rate(&p, c, 1, 1, &s1);
    unsigned int passes = (unsigned int)ceil(min_time / s1);
    if (passes < 1)
        passes = 1;
    unsigned int tcounts[2] = {1, threads};
    for (int k = 0; k < (threads > 1 ? 2 : 1); k++) {
        double sec = 0;
        unsigned int np = k == 0 ? passes : passes * tcounts[k];
        double r = cpu_rate(&p, c, tcounts[k], np, &sec);
        char rows[48] = "";
        if (m->rows)
            snprintf(rows, sizeof rows, "\"rows\":%zu,", m->n_toks);
        emit("{\"figure\":\"cpu\",\"mode\":\"%s\",\"dim\":%d,%s\"threads\":%u,\"chunks\":%zu,"
             "\"passes\":%u,\"seconds\":%.3f,\"chunks_per_s\":%.0f,\"mb_per_s\":%.1f,"
             "\"terms_per_chunk\":%.1f}",
             m->mode, DIM, rows, tcounts[k], c->n, np, sec, r,
             r * ((double)c->bytes / (double)c->n) / 1e6, tpt);
        char name[48];
        snprintf(name, sizeof name, "cpu %s %d-d, %u thread%s", m->mode, DIM, tcounts[k],
                 tcounts[k] > 1 ? "s" : "");
        add_row(name, r, "%.1f MB/s, %.1f terms/chunk", r * ((double)c->bytes / c->n) / 1e6, tpt);
    }
    (void)r1;
    rag_embed_provider_release(&p);
}

/* ---- CUDA figures ------------------------------------------------------------------------- */

static void device_name(char *buf, size_t size)
{
    snprintf(buf, size, "n/a");
#ifdef RAG_BENCH_CUDA_RUNTIME
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        snprintf(buf, size, "%s", prop.name);
#endif
}

static double max_abs_diff(const float *a, const float *b, size_t count)
{
    double m = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d)
            m = d != d ? INFINITY : d;
    }
    return m;
}

static int embed_all(const rag_embed_provider *p, const char *const *t, const size_t *l, size_t n,
                     size_t step, float *out)
{
    if (step == 0)
        step = n;
    for (size_t i = 0; i < n; i += step) {
        size_t m = n - i < step ? n - i : step;
        int rc = p->embed(p->state, t + i, l + i, m, out + i * p->dim);
        if (rc)
            return rc;
    }
    return 0;
}

static void cuda_figures(const model *m, const corpus *c, size_t gpu_texts, const char *dev)
{
    rag_embed_provider cpu, src, gpu;
    make_provider(m, &cpu);
    make_provider(m, &src);
    int rc = rag_embed_cuda_init(&gpu, &src, NULL);
    if (rc) {
        emit("{\"figure\":\"cuda\",\"mode\":\"%s\",\"error\":%d}", m->mode, rc);
        rag_embed_provider_release(&src);
        rag_embed_provider_release(&cpu);
        return;
    }
    const unsigned int dim = cpu.dim;

    /* parity over every chunk */
    float *want = xmalloc(c->n * dim * sizeof *want), *got = xmalloc(c->n * dim * sizeof *got);
    if (embed_all(&cpu, (const char *const *)c->text, c->len, c->n, 0, want) ||
        embed_all(&gpu, (const char *const *)c->text, c->len, c->n, 0, got))
        die("parity embed failed");
    double diff = max_abs_diff(want, got, c->n * dim);
    emit("{\"figure\":\"cuda_parity\",\"mode\":\"%s\",\"dim\":%u,\"device\":\"%s\",\"chunks\":%zu,"
         "\"max_abs_diff\":%.3g,\"ok\":%s}",
         m->mode, dim, dev, c->n, diff, diff <= PARITY_TOL ? "true" : "false");
    free(want);
    free(got);

    /* the corpus repeated to gpu_texts texts */
    const char **t = xmalloc(gpu_texts * sizeof *t);
    size_t *l = xmalloc(gpu_texts * sizeof *l);
    size_t bytes = 0;
    for (size_t i = 0; i < gpu_texts; i++) {
        t[i] = c->text[i % c->n];
        l[i] = c->len[i % c->n];
        bytes += l[i];
    }
    float *out = xmalloc(gpu_texts * dim * sizeof *out);
    rag_embed_cuda_stats s0, s1;

    /* end to end: one warm-up call, then all texts in calls of 65536 */
    const size_t call = 65536;
    if (embed_all(&gpu, t, l, gpu_texts < 8192 ? gpu_texts : 8192, 0, out))
        die("cuda warm-up failed");
    rag_embed_cuda_stats_get(&gpu, &s0);
    double t0 = now_s();
    if (embed_all(&gpu, t, l, gpu_texts, call, out))
        die("cuda embed failed");
    double e2e = now_s() - t0;
    rag_embed_cuda_stats_get(&gpu, &s1);
    double terms = (double)(s1.terms - s0.terms);
    double up = s1.upload_s - s0.upload_s, ker = s1.kernel_s - s0.kernel_s,
           down = s1.download_s - s0.download_s, feat = s1.featurize_s - s0.featurize_s,
           tot = s1.total_s - s0.total_s;

    /* kernel alone and copies + kernel (the provider's hook) */
    double kernel_s = 0, pipe_s = 0;
    rc = rag_embed_cuda__bench(&gpu, t, l, gpu_texts, 5, &kernel_s, &pipe_s);
    if (rc)
        die("cuda bench hook failed: %d", rc);
    /* bytes the kernel moves: offsets, terms (4 + 4 bytes), gathered rows (table), output */
    double kbytes = (double)gpu_texts * (8 + dim * 4.0) + terms * 8 +
                    (strcmp(m->mode, "table") == 0 ? terms * dim * 4.0 : 0);
    emit("{\"figure\":\"cuda_kernel\",\"mode\":\"%s\",\"dim\":%u,\"device\":\"%s\",\"chunks\":%zu,"
         "\"terms_per_chunk\":%.1f,\"seconds\":%.6f,\"chunks_per_s\":%.0f,\"gb_per_s\":%.1f}",
         m->mode, dim, dev, gpu_texts, terms / gpu_texts, kernel_s, gpu_texts / kernel_s,
         kbytes / kernel_s / 1e9);
    double cbytes = (double)gpu_texts * (8 + dim * 4.0) + terms * 8;
    emit("{\"figure\":\"cuda_copy_kernel\",\"mode\":\"%s\",\"dim\":%u,\"device\":\"%s\","
         "\"chunks\":%zu,\"seconds\":%.6f,\"chunks_per_s\":%.0f,\"pcie_gb_per_s\":%.1f}",
         m->mode, dim, dev, gpu_texts, pipe_s, gpu_texts / pipe_s, cbytes / pipe_s / 1e9);
    emit("{\"figure\":\"cuda_end_to_end\",\"mode\":\"%s\",\"dim\":%u,\"device\":\"%s\","
         "\"chunks\":%zu,\"call_texts\":%zu,\"seconds\":%.4f,\"chunks_per_s\":%.0f,"
         "\"mb_per_s\":%.1f,\"featurize_s\":%.4f,\"upload_s\":%.4f,\"kernel_s\":%.4f,"
         "\"download_s\":%.4f,\"total_s\":%.4f}",
         m->mode, dim, dev, gpu_texts, call, e2e, gpu_texts / e2e, bytes / e2e / 1e6, feat, up,
         ker, down, tot);
    char name[48];
    snprintf(name, sizeof name, "cuda %s kernel only", m->mode);
    add_row(name, gpu_texts / kernel_s, "%.1f GB/s (%s)", kbytes / kernel_s / 1e9, dev);
    snprintf(name, sizeof name, "cuda %s H2D+kernel+D2H", m->mode);
    add_row(name, gpu_texts / pipe_s, "%.1f GB/s over PCIe", cbytes / pipe_s / 1e9);
    snprintf(name, sizeof name, "cuda %s end to end", m->mode);
    add_row(name, gpu_texts / e2e, "featurize %.0f%%, up %.0f%%, kernel %.0f%%, down %.0f%%",
            100 * feat / tot, 100 * up / tot, 100 * ker / tot, 100 * down / tot);
    snprintf(name, sizeof name, "cuda %s parity", m->mode);
    add_row(name, NAN, "max |cuda - cpu| = %.3g", diff);
    free(out);
    free(t);
    free(l);
    rag_embed_provider_release(&gpu);
    rag_embed_provider_release(&cpu);
}

/* ---- parity checks (the device kit's stand-in for tests/embed-cuda, without cmocka) ------- */

typedef struct par_job {
    const rag_embed_provider *p;
    const corpus *c;
    const float *want;
    size_t n, step;
    double worst;
    int rc;
} par_job;

static void *par_run(void *arg)
{
    par_job *j = arg;
    unsigned int dim = j->p->dim;
    float *out = xmalloc(j->step * dim * sizeof *out);
    for (int round = 0; round < 3 && !j->rc; round++)
        for (size_t i = 0; i < j->n && !j->rc; i += j->step) {
            size_t m = j->n - i < j->step ? j->n - i : j->step;
            j->rc = j->p->embed(j->p->state, (const char *const *)j->c->text + i, j->c->len + i,
                                m, out);
            double d = max_abs_diff(out, j->want + i * dim, m * dim);
            if (d > j->worst)
                j->worst = d;
        }
    free(out);
    return NULL;
}

static int parity_checks(const corpus *c, model *models, int n_models)
{
    int failures = 0;
    char dev[256];
    device_name(dev, sizeof dev);
    for (int k = 0; k < n_models; k++) {
        rag_embed_provider cpu, src, gpu;
        make_provider(&models[k], &cpu);
        make_provider(&models[k], &src);
        rag_embed_cuda_options o = RAG_EMBED_CUDA_OPTIONS_INIT;
        o.batch_texts = 512; /* one call spans several device batches and every stream */
        o.streams = 3;
        int rc = rag_embed_cuda_init(&gpu, &src, &o);
        if (rc) {
            emit("{\"figure\":\"parity\",\"mode\":\"%s\",\"error\":%d,\"ok\":false}",
                 models[k].mode, rc);
            failures++;
            rag_embed_provider_release(&src);
            rag_embed_provider_release(&cpu);
            continue;
        }
        char f1[RAG_EMBED_FINGERPRINT_MAX] = "", f2[RAG_EMBED_FINGERPRINT_MAX] = "";
        cpu.fingerprint(cpu.state, f1, sizeof f1);
        gpu.fingerprint(gpu.state, f2, sizeof f2);
        int fp_ok = strcmp(f1, f2) == 0 && src.state == NULL;
        failures += !fp_ok;
        unsigned int dim = cpu.dim;
        float *want = xmalloc(c->n * dim * sizeof *want), *got = xmalloc(c->n * dim * sizeof *got);
        if (embed_all(&cpu, (const char *const *)c->text, c->len, c->n, 0, want))
            die("cpu embed failed");
        size_t steps[4] = {0, 1, 7, 1000};
        for (int s = 0; s < 4; s++) {
            size_t n = steps[s] == 1 ? (c->n < 300 ? c->n : 300) : c->n;
            memset(got, 0xff, n * dim * sizeof *got);
            rc = embed_all(&gpu, (const char *const *)c->text, c->len, n, steps[s], got);
            double d = rc ? INFINITY : max_abs_diff(want, got, n * dim);
            int ok = d <= PARITY_TOL;
            failures += !ok;
            emit("{\"figure\":\"parity\",\"mode\":\"%s\",\"dim\":%u,\"device\":\"%s\","
                 "\"texts\":%zu,\"call_texts\":%zu,\"rc\":%d,\"max_abs_diff\":%.3g,"
                 "\"fingerprint_equal\":%s,\"ok\":%s}",
                 models[k].mode, dim, dev, n, steps[s] ? steps[s] : n, rc, d,
                 fp_ok ? "true" : "false", ok ? "true" : "false");
        }
        /* two threads at once on one provider: a bulk load and a query stream */
        par_job j[2] = {{&gpu, c, want, c->n, 700, 0, 0},
                        {&gpu, c, want, c->n < 300 ? c->n : 300, 1, 0, 0}};
        pthread_t th;
        if (pthread_create(&th, NULL, par_run, &j[0]) != 0)
            die("pthread_create");
        par_run(&j[1]);
        pthread_join(th, NULL);
        int ok = !j[0].rc && !j[1].rc && j[0].worst <= PARITY_TOL && j[1].worst <= PARITY_TOL;
        failures += !ok;
        emit("{\"figure\":\"parity_threads\",\"mode\":\"%s\",\"dim\":%u,\"threads\":2,"
             "\"max_abs_diff\":%.3g,\"ok\":%s}",
             models[k].mode, dim, j[0].worst > j[1].worst ? j[0].worst : j[1].worst,
             ok ? "true" : "false");
        /* empty and stopword-only texts: the zero vector */
        const char *zt[2] = {"", "the of and"};
        size_t zl[2] = {0, 10};
        float *z = xmalloc(2 * dim * sizeof *z);
        memset(z, 0x7f, 2 * dim * sizeof *z);
        rc = gpu.embed(gpu.state, zt, zl, 2, z);
        ok = rc == 0;
        for (size_t i = 0; ok && i < 2 * (size_t)dim; i++)
            ok = z[i] == 0.0f;
        failures += !ok;
        emit("{\"figure\":\"parity_zero\",\"mode\":\"%s\",\"ok\":%s}", models[k].mode,
             ok ? "true" : "false");
        free(z);
        free(want);
        free(got);
        rag_embed_provider_release(&gpu);
        rag_embed_provider_release(&cpu);
    }
    return failures;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *docs = NULL, *chunks = NULL, *dump = NULL, *json = NULL;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    size_t gpu_texts = 262144;
    double min_time = 1.0;
    int parity = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--device-count") == 0) {
            int n = rag_embed_cuda_device_count();
            printf("%d\n", n);
            return n > 0 ? 0 : 77;
        } else if (strcmp(a, "--parity") == 0) {
            parity = 1;
        } else if (!v) {
            die("%s: missing value (see the comment at the top of bench_providers.c)", a);
        } else if (strcmp(a, "--docs") == 0) {
            docs = v, i++;
        } else if (strcmp(a, "--chunks") == 0) {
            chunks = v, i++;
        } else if (strcmp(a, "--dump-chunks") == 0) {
            dump = v, i++;
        } else if (strcmp(a, "--json") == 0) {
            json = v, i++;
        } else if (strcmp(a, "--threads") == 0) {
            threads = atol(v), i++;
        } else if (strcmp(a, "--gpu-texts") == 0) {
            gpu_texts = (size_t)atol(v), i++;
        } else if (strcmp(a, "--min-time") == 0) {
            min_time = atof(v), i++;
        } else {
            die("unknown option %s", a);
        }
    }
    if (threads < 1)
        threads = 1;
    if (gpu_texts < 1)
        gpu_texts = 1;

    corpus c = {0};
    char path[4096];
    if (chunks) {
        if (load_chunks(&c, chunks))
            die("cannot read %s", chunks);
    } else {
        if (!docs) {
            const char *env = getenv("RAG_SHARED_DATA");
            if (env)
                snprintf(path, sizeof path, "%s/scifact/docs.jsonl", env);
            else
                snprintf(path, sizeof path, "%s/../shared/data/scifact/docs.jsonl",
                         RAG_BENCH_SOURCE_DIR);
            docs = path;
        }
        if (load_docs(&c, docs))
            die("cannot read SciFact from %s (--docs FILE or --chunks FILE)", docs);
    }
    if (dump) {
        dump_chunks(&c, dump);
        printf("%zu chunks (%.1f MB, %.0f bytes on average) written to %s\n", c.n, c.bytes / 1e6,
               (double)c.bytes / c.n, dump);
        corpus_free(&c);
        return 0;
    }
    if (json && !(json_out = fopen(json, "w")))
        die("cannot write %s", json);

    size_t min_len = (size_t)-1, max_len = 0;
    for (size_t i = 0; i < c.n; i++) {
        min_len = c.len[i] < min_len ? c.len[i] : min_len;
        max_len = c.len[i] > max_len ? c.len[i] : max_len;
    }
    emit("{\"figure\":\"corpus\",\"source\":\"scifact\",\"chunks\":%zu,\"bytes\":%zu,"
         "\"mean_bytes\":%.0f,\"min_bytes\":%zu,\"max_bytes\":%zu,\"chunker\":\"%d-%d bytes at "
         "sentence ends\"}",
         c.n, c.bytes, (double)c.bytes / c.n, min_len, max_len, CHUNK_MIN, CHUNK_MAX);

    model models[2] = {{"hash", NULL, 0, NULL}, {"table", NULL, 0, NULL}};
    models[1].toks = corpus_vocab(&c, TABLE_ROWS, &models[1].n_toks);
    models[1].rows = table_rows(models[1].n_toks, DIM);

    int status = 0;
    int ndev = rag_embed_cuda_device_count();
    if (parity) {
        if (ndev <= 0) {
            emit("{\"figure\":\"parity\",\"skipped\":\"no CUDA device\"}");
            status = 77;
        } else {
            int f = parity_checks(&c, models, 2);
            printf("parity: %s (%d failed check%s)\n", f ? "FAILED" : "ok", f, f == 1 ? "" : "s");
            status = f ? 1 : 0;
        }
    } else {
        for (int k = 0; k < 2; k++)
            cpu_figures(&models[k], &c, (unsigned int)threads, min_time);
        if (ndev <= 0) {
            emit("{\"figure\":\"cuda\",\"skipped\":\"no CUDA device\"}");
        } else {
            char dev[256];
            device_name(dev, sizeof dev);
            for (int k = 0; k < 2; k++)
                cuda_figures(&models[k], &c, gpu_texts, dev);
        }
        printf("\n%-34s %14s  %s\n", "figure", "chunks/s", "");
        for (int i = 0; i < n_rows; i++) {
            if (isnan(table[i].rate))
                printf("%-34s %14s  %s\n", table[i].name, "-", table[i].note);
            else
                printf("%-34s %14.0f  %s\n", table[i].name, table[i].rate, table[i].note);
        }
        if (ndev <= 0)
            printf("%-34s %14s  %s\n", "cuda", "-", "no CUDA device");
    }

    for (size_t i = 0; i < models[1].n_toks; i++)
        free(models[1].toks[i]);
    free(models[1].toks);
    free(models[1].rows);
    corpus_free(&c);
    if (json_out)
        fclose(json_out);
    return status;
}
