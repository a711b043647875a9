/*
 * Internal helpers shared by every module: error reporting, binary codec, LMDB env helpers,
 * clocks, randomness, hashing.  Modules depend on src/common and on the public headers, never
 * on each other.
 */
#ifndef RAG_COMMON_INTERNAL_H
#define RAG_COMMON_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <lmdb.h>

#include "ragcore/common.h"
#include "ragcore/rag.h"

#if defined(__GNUC__)
#define RAG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RAG_PRINTF(a, b)
#endif

/* ---- errors --------------------------------------------------------------------------- */

/* Record thread-local detail for `code` and return `code` (so: `return rag_error_set(...)`). */
int rag_error_set(int code, const char *fmt, ...) RAG_PRINTF(2, 3);
void rag_error_clear(void);
/* Map an LMDB return code to a ragcore code, recording `what` and mdb_strerror() as detail. */
int rag_mdb_error(int mdb_rc, const char *what);

/* ---- resolved configuration ----------------------------------------------------------- */

#define RAG_PATH_MAX 4096

typedef struct rag_config {
    char root[RAG_PATH_MAX];
    size_t map_size;            /* bytes */
    int no_sync;
    unsigned int embed_dim;
    char embed_mode[16];
    char index_factory[128];
    size_t chunk_target, chunk_min, chunk_max, chunk_overlap;
    size_t max_doc_bytes;
    unsigned int max_attempts, retry_base_ms, retry_cap_ms, lease_ms, batch_size;
    uint64_t idempotency_ttl_ms;
    uint64_t saga_deadline_ms;
    float bm25_k1, bm25_b;          /* lexical side */
    float hybrid_lexical_weight;    /* retrieve's fusion */
    int reembed;                    /* rag_options v4: re-embed on a provider change */
    uint64_t model_gen;             /* set by the core from the embed module before the
                                       index opens: the model generation of its vectors */
    int model_gen_unknown;          /* 1: no embed module in this process; the index keeps
                                       the generation it recorded */
    unsigned int modules;           /* rag_options v5: RAG_HOST_* bits hosted */
} rag_config;

/* Resolve defaults and validate. `opts` may be NULL. */
int rag_config_init(rag_config *cfg, const char *root, const rag_options *opts);

/* ---- LMDB environments ---------------------------------------------------------------- */

/* Create `<root>/<module>/` and open an LMDB env there (MDB_NOTLS; MDB_NOSYNC if no_sync). */
int rag_env_open(MDB_env **out, const rag_config *cfg, const char *module, unsigned int max_dbs);
/* Close an env of rag_env_open() (NULL allowed). */
void rag_env_close(MDB_env *env);
/* Open (create) a named database in a write txn of its own and commit. */
int rag_dbi_open(MDB_env *env, const char *name, unsigned int flags, MDB_dbi *out);
/* Unmap the env's pages from this process (they stay in the page cache): at most every
 * RAG_ENV_TRIM_MS per env, after commits (rag_txn_commit does it).  See util.c for why, and
 * docs/performance.md for the interval's trade-off. */
#define RAG_ENV_TRIM_MS 100u
void rag_env_trim(MDB_env *env);

/* ---- binary codec (little-endian values; big-endian helpers for ordered keys) ---------- */

typedef struct rag_wbuf {
    uint8_t *data;
    size_t len, cap;
    int err; /* sticky: RAG_ENOMEM once any append failed */
} rag_wbuf;

void rag_wbuf_init(rag_wbuf *b);
void rag_wbuf_free(rag_wbuf *b);
void rag_wbuf_reset(rag_wbuf *b);
void rag_wbuf_bytes(rag_wbuf *b, const void *p, size_t n);
void rag_wbuf_u8(rag_wbuf *b, uint8_t v);
void rag_wbuf_u32(rag_wbuf *b, uint32_t v);
void rag_wbuf_u64(rag_wbuf *b, uint64_t v);
void rag_wbuf_i32(rag_wbuf *b, int32_t v);
void rag_wbuf_f32s(rag_wbuf *b, const float *v, size_t n);
/* u32 length, bytes, then a NUL so that readers can point into the buffer. NULL == "". */
void rag_wbuf_str(rag_wbuf *b, const char *s, size_t len);
void rag_wbuf_cstr(rag_wbuf *b, const char *s);

typedef struct rag_rbuf {
    const uint8_t *data;
    size_t len, off;
    int err; /* sticky: RAG_ECORRUPT once a read ran past the end */
} rag_rbuf;

void rag_rbuf_init(rag_rbuf *b, const void *data, size_t len);
uint8_t rag_rbuf_u8(rag_rbuf *b);
uint32_t rag_rbuf_u32(rag_rbuf *b);
uint64_t rag_rbuf_u64(rag_rbuf *b);
int32_t rag_rbuf_i32(rag_rbuf *b);
/* Copies n floats (the buffer may be unaligned). */
void rag_rbuf_f32s(rag_rbuf *b, float *out, size_t n);
const void *rag_rbuf_bytes(rag_rbuf *b, size_t n);
/* Points into the buffer; NUL-terminated. Returns "" on error. */
const char *rag_rbuf_str(rag_rbuf *b, size_t *len);

void rag_be64_put(uint8_t out[8], uint64_t v);
uint64_t rag_be64_get(const uint8_t in[8]);
void rag_be32_put(uint8_t out[4], uint32_t v);
uint32_t rag_be32_get(const uint8_t in[4]);

/* Key "<doc_id>\0<be64 version>" (and optionally "<be32 chunk>"). Returns key length. */
size_t rag_key_doc_version(uint8_t *out, const char *doc_id, uint64_t version);
size_t rag_key_doc_version_chunk(uint8_t *out, const char *doc_id, uint64_t version,
                                 uint32_t chunk);
#define RAG_KEY_MAX (RAG_DOC_ID_MAX + 1 + 8 + 4)

/* ---- clocks, randomness, backoff, hashing --------------------------------------------- */

uint64_t rag_now_ms(void);        /* wall clock, ms since the epoch */
uint64_t rag_mono_ms(void);       /* monotonic clock, ms */
uint64_t rag_mono_us(void);       /* monotonic clock, us */
uint64_t rag_rand_u64(void);      /* thread-local xorshift, seeded from time and tid */
/* Capped full jitter: U(0, min(cap, base * 2^attempt)). */
uint32_t rag_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t cap_ms);
/* XXH3-128 of the bytes, written big-endian into out[16]. */
void rag_hash128(const void *data, size_t len, uint8_t out[16]);
void rag_hex(const uint8_t *in, size_t n, char *out /* 2n+1 */);

/* ---- embedding providers (used by embed and retrieve alike) ------------------------- */

#include "ragcore/sys/embed_provider.h"
/* Validate a provider vtable (version, required slots, dim). */
int rag_embed_provider_check(const rag_embed_provider *p);
/* Embed with the provider, splitting by max_batch and serialising when the provider asks.
 * Maps provider failures to RAG_ETRANSIENT / RAG_EPROVIDER with detail. */
int rag_embed_texts(const rag_embed_provider *p, const char *const *texts, const size_t *lens,
                    size_t n, float *out);

/* ---- fault injection (tests) ----------------------------------------------------------- */

/*
 * Every LMDB commit in the library goes through rag_txn_commit() and every provider call
 * through rag_embed_texts(); both count operations and can be told to fail the Nth one
 * (once, or that one and every later one).  Process-wide; off unless armed, and then it costs
 * one relaxed atomic load per operation.  Not exported from the shared library: the crash
 * and fault tests link the static one.
 */
typedef enum rag_fault_kind {
    RAG_FAULT_COMMIT = 0,   /* a commit fails with EIO (the txn is aborted, nothing written) */
    RAG_FAULT_PROVIDER = 1, /* a provider call fails with RAG_ETRANSIENT */
    RAG_FAULT_KINDS
} rag_fault_kind;

/* Fail the `nth` (1-based) operation of `kind` counted from now; `persistent`: and every one
 * after it.  nth = 0 disarms the kind. */
void rag_fault_arm(rag_fault_kind kind, uint64_t nth, int persistent);
void rag_fault_disarm_all(void);
/* Operations of `kind` seen since it was last armed (counted whether armed or not). */
uint64_t rag_fault_seen(rag_fault_kind kind);
/* Faults injected since last armed. */
uint64_t rag_fault_injected(rag_fault_kind kind);
/* Count one operation; 1 when it must fail. */
int rag_fault_hit(rag_fault_kind kind);

/* rag_txn_commit() with the fault point: an injected fault aborts the txn and returns EIO. */
int rag_txn_commit(MDB_txn *txn);

/* ---- structured log sink and latency histograms (log.c) --------------------------------- */

/* Emit one event to the host's rag_log_set() callback when `level` passes its filter.  The
 * message must never hold document text or secrets (ids, topics, codes, counts are fine). */
void rag_log(int level, const char *module, const char *event, const char *fmt, ...)
    RAG_PRINTF(4, 5);
/* 1 when an event of `level` would be delivered (one relaxed atomic load): lets callers skip
 * building a message nobody reads. */
int rag_log_enabled(int level);

/* Latency histogram: fixed bucket bounds (seconds, rag_hist_bounds), lock-free counters,
 * per-bucket (not cumulative: the metrics text sums them).  Zero-initialised is empty. */
#define RAG_HIST_BOUNDS 13
extern const double rag_hist_bounds[RAG_HIST_BOUNDS];
typedef struct rag_hist {
    _Atomic uint64_t bucket[RAG_HIST_BOUNDS + 1]; /* last: above every bound (+Inf) */
    _Atomic uint64_t sum_us;
} rag_hist;
void rag_hist_observe_us(rag_hist *h, uint64_t us);

/* ---- misc ------------------------------------------------------------------------------ */

char *rag_strdup(const char *s);
char *rag_strndup(const char *s, size_t n);
int rag_mkdir_p(const char *path);
/* Validate a document id: 1..RAG_DOC_ID_MAX bytes, valid UTF-8, no NUL. */
int rag_doc_id_check(const char *doc_id);

#endif
