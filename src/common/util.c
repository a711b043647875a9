/* LMDB env helpers, binary codec, clocks, randomness, hashing, small string/file helpers. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "rag_common.h"
#include "rag_text.h"

/* ---- LMDB ------------------------------------------------------------------------------- */

/* Per-env state kept in LMDB's user context. */
typedef struct env_state {
    _Atomic uint64_t last_trim_ms;
    void *map;       /* LMDB's map of data.mdb (NULL: unknown, never trimmed) */
    size_t map_size;
} env_state;

/* LMDB does not tell where it mapped the data file (mdb_env_info's me_mapaddr is only set
 * with MDB_FIXEDMAP), so look it up among this process's mappings: the one of `file` (an
 * absolute path) that is `size` bytes long. */
static void *find_map(const char *file, size_t size)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return NULL;
    char line[RAG_PATH_MAX + 256];
    void *found = NULL;
    size_t flen = strlen(file);
    while (!found && fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n')
            line[--n] = 0;
        if (n < flen || strcmp(line + n - flen, file) != 0 ||
            (n > flen && line[n - flen - 1] != ' '))
            continue;
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo == size)
            found = (void *)lo;
    }
    fclose(f);
    return found;
}

int rag_env_open(MDB_env **out, const rag_config *cfg, const char *module, unsigned int max_dbs)
{
    char path[RAG_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", cfg->root, module);
    int rc = rag_mkdir_p(path);
    if (rc)
        return rc;
    MDB_env *env = NULL;
    int mrc = mdb_env_create(&env);
    if (mrc)
        return rag_mdb_error(mrc, "mdb_env_create");
    mdb_env_set_maxdbs(env, max_dbs);
    mdb_env_set_maxreaders(env, 254);
    mrc = mdb_env_set_mapsize(env, cfg->map_size);
    if (!mrc)
        mrc = mdb_env_open(env, path, MDB_NOTLS | (cfg->no_sync ? MDB_NOSYNC : 0), 0644);
    if (mrc) {
        mdb_env_close(env);
        rc = rag_mdb_error(mrc, "mdb_env_open");
        return rag_error_set(rc, "cannot open %s environment at %s: %s", module, path,
                             mdb_strerror(mrc));
    }
    env_state *st = calloc(1, sizeof *st); /* optional: without it the env is never trimmed */
    if (st) {
        char file[RAG_PATH_MAX + 80], *abs;
        snprintf(file, sizeof file, "%s/data.mdb", path);
        MDB_envinfo info;
        if ((abs = realpath(file, NULL)) != NULL && mdb_env_info(env, &info) == 0) {
            st->map = find_map(abs, info.me_mapsize);
            st->map_size = info.me_mapsize;
        }
        free(abs);
        mdb_env_set_userctx(env, st);
    }
    *out = env;
    return RAG_OK;
}

void rag_env_close(MDB_env *env)
{
    if (!env)
        return;
    env_state *st = mdb_env_get_userctx(env);
    mdb_env_close(env);
    free(st);
}

/* LMDB reads through a shared read-only map of the data file, so every page a lookup,
 * a copy-on-write or a relay touched stays mapped and counts in the process's RSS, though
 * it is only page cache: after a bulk load every page of every env file was mapped (373 of
 * 526 MiB peak RSS at 36k chunks).  MADV_DONTNEED drops the mappings and leaves the pages
 * in the page cache: the kernel can reclaim them, and the next access maps them back from
 * the cache, with the same bytes (the file is only written through pwrite, never the map).
 * Readers inside a txn are unaffected: their pointers stay valid and fault the page back.
 * Freed heap pages are returned too (malloc_trim), at most once a second: it walks every
 * arena. */
void rag_env_trim(MDB_env *env)
{
    env_state *st = env ? mdb_env_get_userctx(env) : NULL;
    if (!st)
        return;
    uint64_t now = rag_mono_ms(), last = atomic_load(&st->last_trim_ms);
    if (now - last < RAG_ENV_TRIM_MS)
        return;
    if (!atomic_compare_exchange_strong(&st->last_trim_ms, &last, now))
        return; /* another thread trims it now */
    MDB_envinfo info;
    MDB_stat stat;
    if (!st->map || mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &stat) != 0 ||
        info.me_mapsize != st->map_size)
        return;
    size_t len = ((size_t)info.me_last_pgno + 1) * stat.ms_psize;
    if (len > st->map_size)
        len = st->map_size;
    madvise(st->map, len, MADV_DONTNEED);
    static _Atomic uint64_t heap_trim_ms;
    uint64_t h = atomic_load(&heap_trim_ms);
    if (now - h >= 1000 &&
        atomic_compare_exchange_strong(&heap_trim_ms, &h, now))
        malloc_trim(0);
}

int rag_dbi_open(MDB_env *env, const char *name, unsigned int flags, MDB_dbi *out)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(env, NULL, 0, &txn);
    if (mrc)
        return rag_mdb_error(mrc, "mdb_txn_begin");
    mrc = mdb_dbi_open(txn, name, flags | MDB_CREATE, out);
    if (mrc) {
        mdb_txn_abort(txn);
        return rag_mdb_error(mrc, name);
    }
    mrc = mdb_txn_commit(txn);
    if (mrc)
        return rag_mdb_error(mrc, "mdb_txn_commit");
    return RAG_OK;
}

/* ---- fault injection -------------------------------------------------------------------- */

static struct {
    atomic_uint_fast64_t seen, nth, injected;
    atomic_int persistent;
} faults[RAG_FAULT_KINDS];

void rag_fault_arm(rag_fault_kind kind, uint64_t nth, int persistent)
{
    if ((unsigned)kind >= RAG_FAULT_KINDS)
        return;
    atomic_store(&faults[kind].nth, 0);
    atomic_store(&faults[kind].seen, 0);
    atomic_store(&faults[kind].injected, 0);
    atomic_store(&faults[kind].persistent, persistent ? 1 : 0);
    atomic_store(&faults[kind].nth, nth);
}

void rag_fault_disarm_all(void)
{
    for (int k = 0; k < RAG_FAULT_KINDS; k++)
        atomic_store(&faults[k].nth, 0);
}

uint64_t rag_fault_seen(rag_fault_kind kind)
{
    return (unsigned)kind < RAG_FAULT_KINDS ? atomic_load(&faults[kind].seen) : 0;
}

uint64_t rag_fault_injected(rag_fault_kind kind)
{
    return (unsigned)kind < RAG_FAULT_KINDS ? atomic_load(&faults[kind].injected) : 0;
}

int rag_fault_hit(rag_fault_kind kind)
{
    uint64_t seen = atomic_fetch_add_explicit(&faults[kind].seen, 1, memory_order_relaxed) + 1;
    uint64_t nth = atomic_load_explicit(&faults[kind].nth, memory_order_relaxed);
    if (!nth || seen < nth || (seen > nth && !atomic_load(&faults[kind].persistent)))
        return 0;
    atomic_fetch_add(&faults[kind].injected, 1);
    return 1;
}

int rag_txn_commit(MDB_txn *txn)
{
    if (rag_fault_hit(RAG_FAULT_COMMIT)) {
        mdb_txn_abort(txn);
        return EIO;
    }
    MDB_env *env = mdb_txn_env(txn);
    int mrc = mdb_txn_commit(txn);
    if (mrc == 0)
        rag_env_trim(env); /* rate-limited; also after a nested commit, which is harmless */
    return mrc;
}

/* ---- codec ------------------------------------------------------------------------------ */

void rag_wbuf_init(rag_wbuf *b) { memset(b, 0, sizeof *b); }
void rag_wbuf_free(rag_wbuf *b) { free(b->data); memset(b, 0, sizeof *b); }
void rag_wbuf_reset(rag_wbuf *b) { b->len = 0; b->err = 0; }

static int wbuf_reserve(rag_wbuf *b, size_t n)
{
    if (b->err)
        return 0;
    if (b->len + n <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->err = RAG_ENOMEM;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

void rag_wbuf_bytes(rag_wbuf *b, const void *p, size_t n)
{
    if (n == 0 || !wbuf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}
void rag_wbuf_u8(rag_wbuf *b, uint8_t v) { rag_wbuf_bytes(b, &v, 1); }
void rag_wbuf_u32(rag_wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    rag_wbuf_bytes(b, x, 4);
}
void rag_wbuf_u64(rag_wbuf *b, uint64_t v)
{
    rag_wbuf_u32(b, (uint32_t)v);
    rag_wbuf_u32(b, (uint32_t)(v >> 32));
}
void rag_wbuf_i32(rag_wbuf *b, int32_t v) { rag_wbuf_u32(b, (uint32_t)v); }
void rag_wbuf_f32s(rag_wbuf *b, const float *v, size_t n) { rag_wbuf_bytes(b, v, n * sizeof *v); }
void rag_wbuf_str(rag_wbuf *b, const char *s, size_t len)
{
    if (!s)
        s = "", len = 0;
    if (len > UINT32_MAX) {
        b->err = RAG_ETOOBIG;
        return;
    }
    rag_wbuf_u32(b, (uint32_t)len);
    rag_wbuf_bytes(b, s, len);
    rag_wbuf_u8(b, 0);
}
void rag_wbuf_cstr(rag_wbuf *b, const char *s) { rag_wbuf_str(b, s, s ? strlen(s) : 0); }

void rag_rbuf_init(rag_rbuf *b, const void *data, size_t len)
{
    b->data = data;
    b->len = len;
    b->off = 0;
    b->err = 0;
}

const void *rag_rbuf_bytes(rag_rbuf *b, size_t n)
{
    if (b->err || n > b->len - b->off) {
        b->err = RAG_ECORRUPT;
        return NULL;
    }
    const void *p = b->data + b->off;
    b->off += n;
    return p;
}
uint8_t rag_rbuf_u8(rag_rbuf *b)
{
    const uint8_t *p = rag_rbuf_bytes(b, 1);
    return p ? p[0] : 0;
}
uint32_t rag_rbuf_u32(rag_rbuf *b)
{
    const uint8_t *p = rag_rbuf_bytes(b, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
             : 0;
}
uint64_t rag_rbuf_u64(rag_rbuf *b)
{
    uint64_t lo = rag_rbuf_u32(b);
    uint64_t hi = rag_rbuf_u32(b);
    return lo | hi << 32;
}
int32_t rag_rbuf_i32(rag_rbuf *b) { return (int32_t)rag_rbuf_u32(b); }
void rag_rbuf_f32s(rag_rbuf *b, float *out, size_t n)
{
    if (n > SIZE_MAX / sizeof(float)) {
        b->err = RAG_ECORRUPT;
        return;
    }
    const void *p = rag_rbuf_bytes(b, n * sizeof(float));
    if (p)
        memcpy(out, p, n * sizeof(float));
    else
        memset(out, 0, n * sizeof(float));
}
const char *rag_rbuf_str(rag_rbuf *b, size_t *len)
{
    uint32_t n = rag_rbuf_u32(b);
    const char *p = rag_rbuf_bytes(b, (size_t)n + 1);
    if (!p || p[n] != 0) {
        b->err = RAG_ECORRUPT;
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = n;
    return p;
}

void rag_be64_put(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}
uint64_t rag_be64_get(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}
void rag_be32_put(uint8_t out[4], uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}
uint32_t rag_be32_get(const uint8_t in[4])
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

size_t rag_key_doc_version(uint8_t *out, const char *doc_id, uint64_t version)
{
    size_t n = strlen(doc_id);
    memcpy(out, doc_id, n);
    out[n] = 0;
    rag_be64_put(out + n + 1, version);
    return n + 9;
}

size_t rag_key_doc_version_chunk(uint8_t *out, const char *doc_id, uint64_t version,
                                 uint32_t chunk)
{
    size_t n = rag_key_doc_version(out, doc_id, version);
    rag_be32_put(out + n, chunk);
    return n + 4;
}

/* ---- clocks, randomness, hashing ------------------------------------------------------- */

uint64_t rag_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
uint64_t rag_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
uint64_t rag_mono_ms(void) { return rag_mono_us() / 1000u; }

static _Thread_local uint64_t rng_state;

uint64_t rag_rand_u64(void)
{
    if (!rng_state) {
        rng_state = rag_mono_us() ^ ((uint64_t)syscall(SYS_gettid) << 32) ^ 0x9E3779B97F4A7C15ull;
        if (!rng_state)
            rng_state = 1;
    }
    /* xorshift64* */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint32_t rag_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t cap_ms)
{
    uint64_t ceiling = base_ms;
    for (uint32_t i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    if (ceiling == 0)
        return 0;
    return (uint32_t)(rag_rand_u64() % (ceiling + 1));
}

void rag_hash128(const void *data, size_t len, uint8_t out[16])
{
    XXH128_hash_t h = XXH3_128bits(data, len);
    rag_be64_put(out, h.high64);
    rag_be64_put(out + 8, h.low64);
}

void rag_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

/* ---- misc --------------------------------------------------------------------------------- */

char *rag_strdup(const char *s) { return s ? rag_strndup(s, strlen(s)) : NULL; }

char *rag_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

int rag_mkdir_p(const char *path)
{
    char buf[RAG_PATH_MAX + 64];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return rag_error_set(RAG_EINVAL, "path too long");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return rag_error_set(RAG_EIO, "mkdir %s: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    return RAG_OK;
}

int rag_doc_id_check(const char *doc_id)
{
    if (!doc_id || !*doc_id)
        return rag_error_set(RAG_EINVAL, "document id is empty");
    size_t n = strlen(doc_id);
    if (n > RAG_DOC_ID_MAX)
        return rag_error_set(RAG_EINVAL, "document id longer than %d bytes", RAG_DOC_ID_MAX);
    size_t bad;
    if (rag_utf8_check(doc_id, n, &bad))
        return rag_error_set(RAG_EINVAL, "document id is not valid UTF-8 (byte %zu)", bad);
    return RAG_OK;
}

/* ---- providers ----------------------------------------------------------------------------- */

static pthread_mutex_t single_threaded_lock = PTHREAD_MUTEX_INITIALIZER;

int rag_embed_provider_check(const rag_embed_provider *p)
{
    if (!p)
        return rag_error_set(RAG_EINVAL, "provider is NULL");
    if (p->version == 0 || p->version > RAG_EMBED_PROVIDER_VERSION)
        return rag_error_set(RAG_EVERSION, "embed provider version %u not supported (max %u)",
                             p->version, RAG_EMBED_PROVIDER_VERSION);
    if (!p->embed || !p->fingerprint || p->dim == 0 || p->dim > 65536)
        return rag_error_set(RAG_EINVAL, "embed provider lacks embed/fingerprint or has dim %u",
                             p->dim);
    return RAG_OK;
}

int rag_embed_texts(const rag_embed_provider *p, const char *const *texts, const size_t *lens,
                    size_t n, float *out)
{
    size_t step = p->max_batch ? p->max_batch : n;
    for (size_t i = 0; i < n; i += step) {
        size_t m = n - i < step ? n - i : step;
        if (rag_fault_hit(RAG_FAULT_PROVIDER))
            return rag_error_set(RAG_ETRANSIENT, "embedding provider: injected fault");
        int locked = (p->flags & RAG_EMBED_SINGLE_THREADED) != 0;
        if (locked)
            pthread_mutex_lock(&single_threaded_lock);
        /* A built-in provider explains its failure through rag_error_set (an HTTP status, a
         * CUDA error): keep that detail for the dead letter and the trace.  A host's provider
         * leaves the slot empty. */
        rag_error_clear();
        int rc = p->embed(p->state, texts + i, lens + i, m, out + i * (size_t)p->dim);
        if (locked)
            pthread_mutex_unlock(&single_threaded_lock);
        if (rc == 0)
            continue;
        char detail[200];
        snprintf(detail, sizeof detail, "%s", rag_error_last());
        if (rc == RAG_ETRANSIENT)
            return rag_error_set(RAG_ETRANSIENT, "embedding provider: temporary failure%s%s",
                                 *detail ? ": " : "", detail);
        return rag_error_set(RAG_EPROVIDER, "embedding provider failed with %d (%s)%s%s", rc,
                             rag_strerror(rc), *detail ? ": " : "", detail);
    }
    return RAG_OK;
}
