/*
 * The lifecycle crash model shared by the crash harnesses (tests/core/test_crash_harness.c on
 * the embedded LMDB broker, tests/integration/test_nats_crash.c on NATS JetStream with embed
 * workers in other processes):
 *
 *   - the seeded workload a child process runs (puts of CRASH_NDOCS ids with new content each
 *     time, deletes, idempotent retries, searches), reporting over a pipe what it is about to
 *     do (intent "I ...") and what returned RAG_OK (ack "A ...");
 *   - the parent's model of the acknowledged operations, fed by those lines;
 *   - the child process as the parent sees it (fork + exec, read its lines, kill or stop it);
 *   - the check after recovery and drain: every acknowledged put at its newest version, every
 *     chunk exactly once, nothing of an older version or of a deleted document, the operation
 *     in flight at the kill applied entirely or not at all, traces finished, status counts,
 *     rag_fsck() clean.
 *
 * Only the public API and cmocka are used, so both unit tests (rag_static) and integration
 * tests (librag.so) can compile it: a test #includes "crash_model.c" (tests/support is not
 * globbed into the support library).
 */
#ifndef RAG_TEST_CRASH_MODEL_H
#define RAG_TEST_CRASH_MODEL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "ragcore/rag.h"

#define CRASH_NDOCS 20
#define CRASH_CHILD_MAX_OPS 100000
#define CRASH_MAX_HITS 1000
#define CRASH_MAX_CHUNKS 64
#define CRASH_TOKEN_LEN 14 /* "t" + 12 hex digits + NUL */
#define CRASH_TEXT_MAX 2048

/* ---- deterministic randomness and texts ------------------------------------------------- */

uint64_t crash_mix64(uint64_t x);
/* Next value of the generator whose state is *s. */
uint64_t crash_rnd(uint64_t *s);
/* The content of the version whose put carried `token` (every sentence names the token). */
size_t crash_gen_text(const char *token, char *out, size_t cap);
void crash_doc_name(char *buf, size_t n, int doc);
/* Options of every handle on a harness root: small vectors and chunks, fast retries. */
void crash_harness_options(rag_options *o, int no_sync);
/* Milliseconds since *t0 (CLOCK_MONOTONIC). */
long crash_elapsed_ms(const struct timespec *t0);

/* ---- enumeration: one search that returns every live chunk ------------------------------ */

typedef struct crash_hit {
    int doc;
    uint64_t version;
    uint32_t chunk;
    char *text;
} crash_hit;

typedef struct crash_hits {
    size_t n;
    crash_hit h[CRASH_MAX_HITS];
} crash_hits;

void crash_hits_clear(crash_hits *hs);
/* Fills `hs`; on failure writes why into `why` and returns the error code. */
int crash_enumerate(rag_ctx *ctx, crash_hits *hs, char *why, size_t wl);
/* No document in two versions, no chunk twice: 1 when it holds, else 0 and `why`. */
int crash_check_no_duplicates(const crash_hits *hs, char *why, size_t wl);

/* ---- child side ------------------------------------------------------------------------- */

/* The write end of the pipe to the parent (set before any crash_say). */
extern int crash_out_fd;
/* One line to the parent (one write: never half a line). */
void crash_say(const char *fmt, ...);
/* Report "E <msg>" and _exit(2). */
void crash_child_fail(const char *fmt, ...);
/*
 * The seeded workload on an open, started handle: CRASH_CHILD_MAX_OPS operations, or fewer
 * when `*stop` becomes nonzero (checked before each operation; `stop` may be NULL).  When
 * `retry_doc` is set, first retries the put that was in flight at the previous kill.  Fails
 * through crash_child_fail().
 */
void crash_child_workload(rag_ctx *ctx, uint64_t seed, const char *retry_doc,
                          const char *retry_token, volatile sig_atomic_t *stop);

/* ---- parent side: the model ----------------------------------------------------------------- */

typedef struct crash_doc_state {
    int live;
    uint64_t version; /* version searches must return when live */
    uint64_t latest;  /* newest version number handed out for this id */
    char token[CRASH_TOKEN_LEN];
} crash_doc_state;

typedef struct crash_registered {
    char token[CRASH_TOKEN_LEN];
    uint64_t version;
} crash_registered;

enum { CRASH_OP_NONE, CRASH_OP_PUT, CRASH_OP_DEL };

typedef struct crash_model {
    crash_doc_state docs[CRASH_NDOCS];
    crash_registered *reg; /* every put known to have committed: token -> version */
    size_t nreg, capreg;
    /* the operation announced and not acknowledged */
    int pending;
    int pdoc;
    char ptoken[CRASH_TOKEN_LEN];
    /* per cycle */
    int ready, finished;
    unsigned puts, retries, deletes, searches;
    unsigned inflight_applied, inflight_lost; /* how the operations in flight resolved */
    char error[512];
} crash_model;

/* Record the first failure (later ones are dropped). */
void crash_model_fail(crash_model *m, const char *fmt, ...);
/* Split complete lines out of buf and apply them. */
void crash_model_feed(crash_model *m, char *buf, size_t *have);
/* Free what the model allocated (not the model itself). */
void crash_model_free(crash_model *m);

/* ---- parent side: the child process ------------------------------------------------------- */

typedef struct crash_child {
    pid_t pid;
    int fd;    /* read end of the pipe */
    int eof;
    size_t have;
    char buf[8192];
    struct timespec t0; /* when it was started */
} crash_child;

/*
 * fork + exec `self --child <root> <seed> <fd> [extra...]` (`extra` NULL-terminated, may be
 * NULL), <fd> being the write end of a new pipe; clears the model's per-child flags (ready,
 * finished).  fork + exec: the parent has used LMDB and FAISS (whose OpenMP pool must not be
 * inherited by a forked child that runs parallel regions); exec gives the child a fresh
 * process with only its own handle.
 */
void crash_child_spawn(crash_child *c, crash_model *m, const char *self, const char *root,
                       uint64_t seed, const char *const *extra);
/* Wait up to `timeout_ms` for output and apply what came; returns 1 once the pipe is at EOF. */
int crash_child_pump(crash_child *c, crash_model *m, int timeout_ms);
/*
 * SIGKILL the child, reap it and apply what is left in the pipe (written before the kill).
 * An exit status other than 0 or our SIGKILL is a finding.  Returns 1 when it was killed, 0
 * when it had finished by itself.
 */
int crash_child_kill(crash_child *c, crash_model *m);
/*
 * Ask the child to stop (SIGTERM: it finishes its operation, closes its handle and exits 0),
 * reading its output meanwhile; a child that has not exited after `timeout_ms` is a finding
 * (then killed).  An exit other than 0 is a finding.
 */
void crash_child_stop(crash_child *c, crash_model *m, int timeout_ms);

/* ---- parent side: the check after recovery ---------------------------------------------- */

/*
 * On a handle of the recovered root, after the drain: compare the whole index as searches see
 * it with the model (resolving the operation in flight at the kill: it happened entirely or
 * not at all), the traces of live documents, the status counts (one version per live
 * document, one vector per chunk, no dead letter, no saga running or failed) and rag_fsck().
 * A new put that was in flight comes back through retry_doc/retry_token (16 and
 * CRASH_TOKEN_LEN bytes), for the next child to retry with the same key and bytes; otherwise
 * they are left empty.  Findings go to m->error.
 */
void crash_model_check(crash_model *m, rag_ctx *ctx, crash_hits *hs, char *retry_doc,
                       char *retry_token);

#endif
