/*
 * The index module's private structures.
 *
 * LMDB (env `<root>/index/`) is the truth:
 *   "meta"      short ASCII key -> be64 value (next_label, next_acl, epoch, log_seq,
 *               snapshot_seq, live, active_docs, dim, format, model_gen)
 *               model_gen: the embedding model generation of the stored vectors.  When the
 *               embed module is at a newer one (a re-embed), the index drops every vector
 *               row at open and keeps labels and lexical rows; each label gets its new vector
 *               from a re-embed doc.embedded (a vector-only add), and a doc.embedded of an
 *               older generation is switched to without vectors and answered "stale vectors"
 *               (index_handlers.c).  Until then a live label has no "vectors" row.
 *   "labels"    be64 label -> {u64 version, u32 chunk_no, u32 acl id, str doc_id}
 *   "vectors"   be64 label -> dim little-endian floats
 *   "docs"      doc_id bytes -> {u64 active_version, u64 deleted_through, u32 acl id,
 *                               u32 n, n x u64 live labels, u64 seq}
 *               seq: the mutation-log sequence at the row's last write (every change the
 *               row reflects is in the log at or before it), so rag_index_applied() can
 *               tell when searches show it.  Rows written before it existed end after the
 *               labels and decode with seq 0 (they were applied by the open that read them).
 *               Nothing about reverted versions is kept: a doc.revert only removes stray
 *               labels of a non-active version (the atomic switch means such a version
 *               normally has none), and a doc.embedded of a reverted version retried after
 *               the cause was fixed must complete the saga forward (it is switched to like
 *               any newer version; older ones are SUPERSEDED as usual).
 *   "acl_sets"  be32 id -> {u32 n, n x str principal} (sorted, unique; id 0 = public, absent)
 *   "acl_keys"  XXH3-128 of that encoding -> be32 id (interning)
 *   "log"       be64 seq -> {str message id, u32 n_add, labels, u32 n_remove, labels}
 *   "lex"       be64 label -> {u32 length, u32 n, n x (str term, u32 tf)}: the label's
 *               lexical terms (lexical.c: NFKC casefold of the chunk text and the document
 *               title, stopwords dropped, Snowball English stems; sorted, unique) and its
 *               length in terms.  Written and deleted with the label's other rows, in the
 *               same txn, so the lexical side and the vectors never disagree on a version.
 * plus the queue's "__outbox", "__outbox_meta", "__inbox", "__dead".
 *
 * Three consumers share the env and the outbox: doc.embedded, doc.deleted and doc.revert
 * (index_handlers.c); each answers with doc.indexed carrying the trail of the event it
 * handled plus an "index" hop.  A doc.embedded that is dead-lettered emits doc.failed (its
 * on_dead hook) so that ingest compensates.  rag_index_check (index_check.c) checks the
 * tables against each other and against the view/backend, and repairs them as one logged
 * change applied like a consumer batch.
 *
 * The vector backend (FAISS), an in-memory view (per label: doc, version, chunk, ACL set,
 * live; per principal: the ACL sets naming it) and the BM25 inverted index (index_lex.c,
 * built from the "lex" rows of the live labels) are derived.  All three change only under
 * the write side of `lock`, when a committed batch is applied (in log order), so a search
 * holding the read side sees one consistent state: the old version of a document or the new
 * one, on the vector side and the lexical side alike.
 */
#ifndef RAG_MODULE_INDEX
#error "private header of the index module"
#endif
#ifndef RAG_INDEX_INTERNAL_H
#define RAG_INDEX_INTERNAL_H

#include <pthread.h>

#include "rag_events.h"
#include "rag_index_api.h"

/* meta "snapshot_seq" while a snapshot is being written: the file cannot be trusted. */
#define IX_SNAPSHOT_INVALID UINT64_MAX
#define IX_FORMAT 1u

/* ---- in-memory view (index_mem.c) ------------------------------------------------------- */

/* Open-addressing map: NUL-terminated string (owned copy) -> u32. */
typedef struct ix_strmap {
    size_t cap, n;
    char **keys;
    uint32_t *vals;
} ix_strmap;

typedef struct ix_idlist {
    uint32_t *ids;
    size_t n, cap;
} ix_idlist;

typedef struct ix_label {
    uint64_t version;
    uint32_t chunk_no;
    uint32_t acl;
    uint32_t doc;   /* index into ix_mem.doc_names */
    uint8_t live;
} ix_label;

typedef struct ix_mem {
    ix_label *labels;          /* dense, indexed by label */
    size_t label_cap;
    uint64_t live;
    char **doc_names;          /* interned document ids */
    size_t n_docs, docs_cap;
    ix_strmap doc_map;
    ix_strmap principal_map;   /* principal -> index into plists */
    ix_idlist *plists;         /* ACL set ids naming each principal */
    size_t n_plists, plists_cap;
    uint32_t n_acl;            /* ACL set ids known: 0 .. n_acl-1 */
} ix_mem;

void rag_index__mem_init(ix_mem *m);
void rag_index__mem_free(ix_mem *m);
int rag_index__mem_add_acl(ix_mem *m, uint32_t id, const char *const *principals, size_t n);
int rag_index__mem_set_label(ix_mem *m, int64_t label, const char *doc, uint64_t version,
                             uint32_t chunk_no, uint32_t acl);
void rag_index__mem_kill_label(ix_mem *m, int64_t label);
int rag_index__mem_is_live(const ix_mem *m, int64_t label);

/* Per-query view of an ACL filter; the callback answers in O(1) per label. */
typedef struct ix_query_filter {
    const ix_mem *m;
    uint8_t *allowed;  /* bitmap over ACL set ids; NULL when unrestricted */
} ix_query_filter;

int rag_index__filter_prepare(const ix_mem *m, const rag_acl_filter *f, ix_query_filter *out);
void rag_index__filter_release(ix_query_filter *q);
int rag_index__filter_fn(void *arg, int64_t label);

/* ---- lexical side: analysis (lexical.c) --------------------------------------------------- */

struct sb_stemmer;

/* Snowball stemmers are not thread-safe: a pool, each caller takes one for the duration of
 * an analysis (consumer handlers and searches run on several threads). */
typedef struct ix_stemmer ix_stemmer; /* a Snowball stemmer and its cache (lexical.c) */
typedef struct ix_stemmers {
    pthread_mutex_t mu;
    ix_stemmer **free_list;
    size_t n, cap;
    int ready;
} ix_stemmers;

int rag_index__stemmers_init(ix_stemmers *s);
void rag_index__stemmers_free(ix_stemmers *s);

/* A term list.  While it is built, `t` holds one entry per token (tf 1) in text order;
 * rag_index__terms_finish() sorts them and merges duplicates (tf = count), `length` keeping
 * the token count. */
typedef struct ix_term {
    size_t off;      /* into buf */
    uint32_t len, tf;
    uint64_t key;    /* first 8 bytes, big-endian, zero-padded: most comparisons end here */
} ix_term;

typedef struct ix_terms {
    char *buf;
    size_t buf_len, buf_cap;
    ix_term *t;
    size_t n, cap;
    uint32_t length;
} ix_terms;

void rag_index__terms_reset(ix_terms *t);
void rag_index__terms_free(ix_terms *t);
/* Append the terms of `text` (any UTF-8; ill-formed sequences are repaired first): NFKC
 * casefold, rag_tokenize with stopwords dropped, Snowball English stem. */
int rag_index__terms_analyze(ix_stemmers *s, ix_terms *t, const char *text, size_t len);
/* Append the (unfinished) tokens of `src`. */
int rag_index__terms_append(ix_terms *t, const ix_terms *src);
int rag_index__terms_finish(ix_terms *t);
/* The "lex" row of a finished term list. */
int rag_index__terms_encode(const ix_terms *t, rag_wbuf *w);

/* ---- lexical side: inverted index (index_lex.c) ------------------------------------------- */

typedef struct ix_posting {
    uint32_t label;  /* labels are dense counters: the view is an array indexed by them */
    uint32_t tf;
} ix_posting;

typedef struct ix_lterm {
    char *term;
    uint32_t len;
    uint32_t df;     /* live postings */
    size_t n, cap;   /* postings held, dead ones included until compacted; label order */
    ix_posting *p;
} ix_lterm;

typedef struct ix_llabel {
    uint32_t length; /* terms counted */
    uint32_t n;      /* distinct terms */
    uint32_t *tids;  /* its terms, so that a removal can update df */
    uint8_t live;
} ix_llabel;

typedef struct ix_lex {
    ix_lterm *terms;
    size_t n_terms, terms_cap;
    uint32_t *slots;       /* open addressing: term id + 1, 0 = empty */
    size_t slots_cap;
    ix_llabel *labels;     /* dense, indexed by label */
    size_t label_cap;
    uint64_t live;         /* N of BM25 */
    uint64_t total_length; /* over live labels: N * avgdl */
} ix_lex;

void rag_index__lex_init(ix_lex *x);
void rag_index__lex_free(ix_lex *x);
/* Make `label` live with the terms of its "lex" row (`row` NULL: no terms). */
int rag_index__lex_add(ix_lex *x, int64_t label, const void *row, size_t row_len);
void rag_index__lex_kill(ix_lex *x, int64_t label);
/* Build `x` (initialised by the caller) from the "lex" rows of the labels live in `m`; a
 * live label without a row gets no terms (rag_index_check reports it). */
int rag_index__lex_load(struct rag_index *ix, MDB_txn *txn, const ix_mem *m, ix_lex *x);
/* BM25 top-k of the finished query terms `q` over the live labels `qf` allows: labels and
 * scores best first (ties: lower label first), *n <= k. */
int rag_index__lex_search(const ix_lex *x, const ix_terms *q, double k1, double b,
                          const ix_query_filter *qf, size_t k, int64_t *labels, float *scores,
                          size_t *n);

/* ---- pending backend changes of one consumer batch (index_batch.c) ---------------------- */

typedef struct ix_acl_add {
    uint32_t id;
    size_t n;
    char **principals;
} ix_acl_add;

/* One state-changing message: its log entry and where its rows end in the arrays. */
typedef struct ix_group {
    uint64_t seq, epoch;
    char msg_id[RAG_QUEUE_MSGID_MAX];
    size_t add_end, rm_end, acl_end, doc_end;
} ix_group;

typedef struct ix_batch {
    unsigned int dim;
    size_t n_add, cap_add;
    int64_t *add_labels;
    uint64_t *add_version;
    uint32_t *add_chunk, *add_acl, *add_doc; /* add_doc: index into docs */
    uint8_t *add_kind;                       /* IX_ADD_* */
    float *add_vecs;
    size_t *add_lex_off, *add_lex_len;       /* each add's "lex" row, in lex_buf */
    uint8_t *lex_buf;                        /* append-only; truncated with the adds */
    size_t lex_len, lex_cap;
    size_t n_docs, cap_docs;
    char **docs;
    size_t n_rm, cap_rm;
    int64_t *rm_labels;
    size_t n_acl, cap_acl;
    ix_acl_add *acls;
    size_t n_groups, cap_groups;
    ix_group *groups;
    struct ix_batch *next;   /* waiting list, ordered by first seq */
} ix_batch;

typedef struct ix_consumer {
    rag_consumer c;
    struct rag_index *ix;
    ix_batch *batch;
} ix_consumer;

/* Staging during a handler: truncate back to a mark when the handler fails. */
typedef struct ix_mark {
    size_t n_add, n_docs, n_rm, n_acl, n_groups, lex_len;
} ix_mark;

/* What an add stages: a new label with its vector (the usual), a new label whose vector is
 * of an older model generation and is left out (searchable on the lexical side only until
 * its re-embed), or the vector of a label that is already live (a re-embed arriving). */
#define IX_ADD_LABEL_VECTOR 0u
#define IX_ADD_LABEL_ONLY 1u
#define IX_ADD_VECTOR_ONLY 2u

ix_batch *rag_index__batch_new(unsigned int dim);
void rag_index__batch_free(ix_batch *b);
void rag_index__batch_mark(const ix_batch *b, ix_mark *mk);
void rag_index__batch_truncate(ix_batch *b, const ix_mark *mk);
/* Copy of a document id for the adds of the current message (one per message). */
int rag_index__batch_doc(ix_batch *b, const char *doc, uint32_t *idx);
/* `kind` IX_ADD_*: `vec` may be NULL for IX_ADD_LABEL_ONLY; `lex` is ignored for
 * IX_ADD_VECTOR_ONLY. */
int rag_index__batch_add(ix_batch *b, unsigned int kind, int64_t label, uint32_t doc,
                         uint64_t version, uint32_t chunk_no, uint32_t acl, const float *vec,
                         const void *lex, size_t lex_len);
int rag_index__batch_remove(ix_batch *b, int64_t label);
int rag_index__batch_acl(ix_batch *b, uint32_t id, const char *const *principals, size_t n);
/* Close the message's rows into a group.  Groups with seq >= `seq` (a nested txn that was
 * aborted after its handler succeeded, whose seq got reused) are dropped first. */
int rag_index__batch_group(ix_batch *b, uint64_t seq, uint64_t epoch, const char *msg_id);
void rag_index__batch_drop_group(ix_batch *b, size_t g);

/* ---- the index ---------------------------------------------------------------------------- */

typedef struct rag_index__recovery {
    int snapshot_loaded;       /* 1: the snapshot file was used */
    int rebuilt;               /* 1: the backend was rebuilt from the vectors table */
    uint64_t replayed_entries; /* log entries replayed on top of the snapshot */
} rag_index__recovery;

struct rag_index {
    rag_config cfg;
    MDB_env *env;
    MDB_dbi meta, labels, vectors, docs, acl_sets, acl_keys, log, lex_dbi;
    rag_outbox *outbox;
    ix_consumer cons_embedded, cons_deleted, cons_revert;
    rag_vector_backend *backend;
    unsigned int dim;
    uint64_t model_gen;        /* model generation of the vectors held (meta "model_gen") */
    char snap_path[RAG_PATH_MAX + 64];

    pthread_rwlock_t lock;     /* backend + mem + lex: searches read, batch application
                                * writes */
    ix_mem mem;
    ix_lex lex;
    ix_stemmers stemmers;
    uint64_t applied_seq;      /* last log seq reflected in backend + mem */
    uint64_t applied_epoch;
    int degraded;              /* backend could not be brought in line; searches fail */
    /* Labels removed from the view whose vectors the backend still holds (tombstones): a
     * flat index compacts its whole array (and IDMap2 rebuilds its reverse map) on every
     * remove_ids, so removals are applied in bulk (index.c, defer_remove). */
    int64_t *rm_pending;
    size_t rm_pending_n, rm_pending_cap;
    int rm_supported;          /* backend removes vectors: -1 not known yet, 0 no (it keeps
                                * tombstones for good, e.g. HNSW), 1 yes (removals wait) */

    pthread_mutex_t apply_mu;  /* committed batches waiting for their predecessors */
    ix_batch *waiting;

    pthread_mutex_t snap_mu;   /* one snapshot at a time */
    uint64_t snapshot_seq;     /* seq covered by the snapshot file, or IX_SNAPSHOT_INVALID */

    rag_index_reader reader;
    rag_index__recovery recovery;
    int locks_ready;
};

/* index_handlers.c */
int rag_index__handle_embedded(void *self, MDB_txn *txn, const rag_queue_message *msg);
int rag_index__handle_deleted(void *self, MDB_txn *txn, const rag_queue_message *msg);
int rag_index__handle_revert(void *self, MDB_txn *txn, const rag_queue_message *msg);
/* on_dead of the doc.embedded consumer: doc.failed{stage "index"} into the outbox. */
int rag_index__on_dead_embedded(void *self, MDB_txn *txn, const rag_queue_message *msg,
                                int code, const char *reason);
int rag_index__begin_batch(void *self, MDB_txn *txn);
void rag_index__end_batch(void *self, int committed);
/* Hand a batch whose txn committed to the applier: it is applied once every batch with a
 * lower log seq has been (takes ownership of `b`). */
void rag_index__batch_submit(struct rag_index *ix, ix_batch *b);

/* One "docs" row, decoded (labels allocated). */
typedef struct ix_docrec {
    int exists;
    uint64_t active, deleted_through;
    uint32_t acl;
    size_t n;
    int64_t *labels;
    uint64_t seq;   /* log seq at the row's last write (callers of doc_put set it) */
} ix_docrec;

int rag_index__doc_decode(const void *data, size_t len, ix_docrec *d);
void rag_index__doc_clear(ix_docrec *d);
int rag_index__doc_get(struct rag_index *ix, MDB_txn *txn, const char *doc, ix_docrec *d);
/* Write `d`. */
int rag_index__doc_put(struct rag_index *ix, MDB_txn *txn, const char *doc, ix_docrec *d);
/* Delete the label's "labels", "vectors" and "lex" rows (missing ones are fine). */
int rag_index__label_del(struct rag_index *ix, MDB_txn *txn, int64_t label);
int rag_index__log_put(struct rag_index *ix, MDB_txn *txn, uint64_t seq, const char *msg_id,
                       size_t n_add, const int64_t *adds, size_t n_rm, const int64_t *rms);

/* index_check.c: rag_index_scan_docs, rag_index_scan_labels, rag_index_check. */

/* index.c */
int rag_index__meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out);
int rag_index__meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t v);
/* Rebuild the backend from the vectors of the labels live in `mem` (write lock held). */
int rag_index__rebuild_locked(struct rag_index *ix);
/* Load a view from the labels and ACL tables of `txn` into `m` (initialised by the caller). */
int rag_index__load_view(struct rag_index *ix, MDB_txn *txn, ix_mem *m);
/* Apply a committed batch to backend + mem (takes the write lock). */
void rag_index__apply(struct rag_index *ix, ix_batch *b);

/* Test hooks. */
/* Free everything without writing a snapshot (what a crash leaves behind, minus the
 * process dying). */
void rag_index__close_nosnap(struct rag_index *ix);
const rag_index__recovery *rag_index__recovery_info(const struct rag_index *ix);
/* Backend vector count after flushing the deferred removals (tests and diagnostics; the
 * tombstones of a backend that cannot remove, e.g. HNSW, are included). */
uint64_t rag_index__backend_count(struct rag_index *ix);

#endif
