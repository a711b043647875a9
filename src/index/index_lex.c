/*
 * The index module's BM25 inverted index: derived, like the vector backend and the view, from
 * LMDB (the "lex" rows of the live labels), and changed only under the write side of the
 * index lock when a committed batch is applied, so a search sees the same version of every
 * document here as on the vector side.
 *
 * Per term: df (live postings) and its postings (label, tf) in label order.  Labels come from
 * a counter in commit order and batches are applied in log order, so appending keeps every
 * list sorted; that lets a search merge the query terms' lists label by label
 * (document-at-a-time) with no per-query accumulator table.  A removed label's postings stay
 * until its term list has more dead postings than half its live ones, then that list is
 * compacted; searches skip dead labels meanwhile.
 *
 * Scoring (Robertson/Sparck Jones idf as in Lucene, which never goes negative):
 *   idf(t)     = ln(1 + (N - df + 0.5) / (df + 0.5))
 *   score(d,q) = sum over query terms t of qtf(t) * idf(t) * tf (k1 + 1) /
 *                                               (tf + k1 (1 - b + b |d| / avgdl))
 * with N and avgdl over every live label (global statistics, whatever the caller may read):
 * the ACL filter only decides which labels may be returned.  A query term repeated counts
 * that many times, as in Anserini's bag-of-words queries.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

/* ---- dictionary -------------------------------------------------------------------------- */

static uint64_t term_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 31);
}

/* Term id of s[0..len), or -1. */
static int64_t term_find(const ix_lex *x, const char *s, size_t len)
{
    if (!x->slots_cap)
        return -1;
    size_t mask = x->slots_cap - 1;
    for (size_t i = (size_t)term_hash(s, len) & mask;; i = (i + 1) & mask) {
        uint32_t v = x->slots[i];
        if (!v)
            return -1;
        const ix_lterm *t = &x->terms[v - 1];
        if (t->len == len && memcmp(t->term, s, len) == 0)
            return (int64_t)(v - 1);
    }
}

static void slot_insert(uint32_t *slots, size_t cap, const ix_lterm *t, uint32_t id)
{
    size_t mask = cap - 1;
    size_t i = (size_t)term_hash(t->term, t->len) & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = id + 1;
}

static int term_get(ix_lex *x, const char *s, size_t len, uint32_t *id)
{
    int64_t f = term_find(x, s, len);
    if (f >= 0) {
        *id = (uint32_t)f;
        return RAG_OK;
    }
    if (x->n_terms >= UINT32_MAX - 1)
        return rag_error_set(RAG_ENOMEM, "index: lexical dictionary full");
    if ((x->n_terms + 1) * 2 > x->slots_cap) {
        size_t cap = x->slots_cap ? x->slots_cap * 2 : 1024;
        uint32_t *ns = calloc(cap, sizeof *ns);
        if (!ns)
            return rag_error_set(RAG_ENOMEM, "index: lexical dictionary");
        for (size_t i = 0; i < x->n_terms; i++)
            slot_insert(ns, cap, &x->terms[i], (uint32_t)i);
        free(x->slots);
        x->slots = ns;
        x->slots_cap = cap;
    }
    if (x->n_terms == x->terms_cap) {
        size_t cap = x->terms_cap ? x->terms_cap * 2 : 1024;
        ix_lterm *p = realloc(x->terms, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index: lexical terms");
        x->terms = p;
        x->terms_cap = cap;
    }
    ix_lterm *t = &x->terms[x->n_terms];
    memset(t, 0, sizeof *t);
    t->term = rag_strndup(s, len);
    if (!t->term)
        return rag_error_set(RAG_ENOMEM, "index: lexical term");
    t->len = (uint32_t)len;
    slot_insert(x->slots, x->slots_cap, t, (uint32_t)x->n_terms);
    *id = (uint32_t)x->n_terms++;
    return RAG_OK;
}

/* ---- index ----------------------------------------------------------------------------------- */

void rag_index__lex_init(ix_lex *x) { memset(x, 0, sizeof *x); }

void rag_index__lex_free(ix_lex *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n_terms; i++) {
        free(x->terms[i].term);
        free(x->terms[i].p);
    }
    free(x->terms);
    free(x->slots);
    for (size_t i = 0; i < x->label_cap; i++)
        free(x->labels[i].tids);
    free(x->labels);
    memset(x, 0, sizeof *x);
}

static int label_slot(ix_lex *x, int64_t label)
{
    if (label < 0 || (uint64_t)label > UINT32_MAX)
        return rag_error_set(RAG_EINVAL, "index: label %lld out of the lexical range",
                             (long long)label);
    size_t l = (size_t)label;
    if (l < x->label_cap)
        return RAG_OK;
    size_t cap = x->label_cap ? x->label_cap : 1024;
    while (cap <= l)
        cap *= 2;
    ix_llabel *p = realloc(x->labels, cap * sizeof *p);
    if (!p)
        return rag_error_set(RAG_ENOMEM, "index: lexical labels of %zu", cap);
    memset(p + x->label_cap, 0, (cap - x->label_cap) * sizeof *p);
    x->labels = p;
    x->label_cap = cap;
    return RAG_OK;
}

static int posting_add(ix_lterm *t, uint32_t label, uint32_t tf)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        ix_posting *p = realloc(t->p, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index: postings");
        t->p = p;
        t->cap = cap;
    }
    /* Appending keeps label order (see the top); a label arriving out of order (never, by
     * construction) is inserted in place rather than breaking the merge in searches. */
    size_t i = t->n;
    while (i > 0 && t->p[i - 1].label > label)
        i--;
    if (i > 0 && t->p[i - 1].label == label) /* a row naming a term twice */
        return rag_error_set(RAG_ECORRUPT, "index: lex row of label %u repeats term '%s'",
                             label, t->term);
    if (i < t->n)
        memmove(&t->p[i + 1], &t->p[i], (t->n - i) * sizeof *t->p);
    t->p[i].label = label;
    t->p[i].tf = tf;
    t->n++;
    t->df++;
    return RAG_OK;
}

static void term_compact(const ix_lex *x, ix_lterm *t)
{
    size_t keep = 0;
    for (size_t i = 0; i < t->n; i++)
        if (x->labels[t->p[i].label].live)
            t->p[keep++] = t->p[i];
    t->n = keep;
    if (keep == 0) {
        free(t->p);
        t->p = NULL;
        t->cap = 0;
    }
}

void rag_index__lex_kill(ix_lex *x, int64_t label)
{
    if (label < 0 || (size_t)label >= x->label_cap || !x->labels[label].live)
        return;
    ix_llabel *e = &x->labels[label];
    e->live = 0; /* first: compaction below drops this label's postings */
    x->live--;
    x->total_length -= e->length;
    for (uint32_t i = 0; i < e->n; i++) {
        ix_lterm *t = &x->terms[e->tids[i]];
        if (t->df)
            t->df--;
        if (t->n - t->df > t->df / 2)
            term_compact(x, t);
    }
    free(e->tids);
    e->tids = NULL;
    e->n = 0;
    e->length = 0;
}

int rag_index__lex_add(ix_lex *x, int64_t label, const void *row, size_t row_len)
{
    int rc = label_slot(x, label);
    if (rc)
        return rc;
    rag_index__lex_kill(x, label); /* labels are never reused; a second add replaces */
    ix_llabel *e = &x->labels[label];
    uint32_t length = 0, n = 0;
    rag_rbuf r;
    rag_rbuf_init(&r, row, row ? row_len : 0);
    if (row) {
        length = rag_rbuf_u32(&r);
        n = rag_rbuf_u32(&r);
        /* each term takes at least 9 bytes (u32 length, NUL, u32 tf) */
        if (r.err || (uint64_t)n * 9 > r.len - r.off)
            return rag_error_set(RAG_ECORRUPT, "index: malformed lex row of label %lld",
                                 (long long)label);
    }
    uint32_t *tids = NULL;
    if (n) {
        tids = malloc(n * sizeof *tids);
        if (!tids)
            return rag_error_set(RAG_ENOMEM, "index: lexical label");
    }
    /* Terms first, postings after: a malformed row changes nothing. */
    uint32_t *tfs = n ? malloc(n * sizeof *tfs) : NULL;
    if (n && !tfs) {
        free(tids);
        return rag_error_set(RAG_ENOMEM, "index: lexical label");
    }
    for (uint32_t i = 0; i < n && !rc; i++) {
        size_t len = 0;
        const char *s = rag_rbuf_str(&r, &len);
        tfs[i] = rag_rbuf_u32(&r);
        if (r.err || len == 0 || tfs[i] == 0)
            rc = rag_error_set(RAG_ECORRUPT, "index: malformed lex row of label %lld",
                               (long long)label);
        else
            rc = term_get(x, s, len, &tids[i]);
    }
    for (uint32_t i = 0; i < n && !rc; i++) {
        rc = posting_add(&x->terms[tids[i]], (uint32_t)label, tfs[i]);
        if (rc) { /* undo the postings of this label already added */
            for (uint32_t j = 0; j < i; j++) {
                ix_lterm *t = &x->terms[tids[j]];
                for (size_t p = t->n; p-- > 0;)
                    if (t->p[p].label == (uint32_t)label) {
                        memmove(&t->p[p], &t->p[p + 1], (t->n - p - 1) * sizeof *t->p);
                        t->n--;
                        t->df--;
                        break;
                    }
            }
        }
    }
    free(tfs);
    if (rc) {
        free(tids);
        return rc;
    }
    e->tids = tids;
    e->n = n;
    e->length = length;
    e->live = 1;
    x->live++;
    x->total_length += length;
    return RAG_OK;
}

int rag_index__lex_load(rag_index *ix, MDB_txn *txn, const ix_mem *m, ix_lex *x)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ix->lex_dbi, &cur);
    if (mrc)
        return rag_mdb_error(mrc, "index: lex cursor");
    int rc = RAG_OK;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            rc = rag_error_set(RAG_ECORRUPT, "index: malformed lex key");
            break;
        }
        int64_t label = (int64_t)rag_be64_get(k.mv_data);
        /* Rows of labels the view does not hold (removed, or a repair's leftovers) are
         * not searchable. */
        if (rag_index__mem_is_live(m, label))
            rc = rag_index__lex_add(x, label, v.mv_data, v.mv_size);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = rag_mdb_error(mrc, "index: lex scan");
    mdb_cursor_close(cur);
    /* Every live label counts in N, with or without terms, so that both sides hold the
     * same labels. */
    for (size_t l = 0; l < m->label_cap && !rc; l++)
        if (m->labels[l].live && (l >= x->label_cap || !x->labels[l].live))
            rc = rag_index__lex_add(x, (int64_t)l, NULL, 0);
    return rc;
}

/* ---- search -------------------------------------------------------------------------------- */

typedef struct lx_cursor {
    const ix_posting *p, *end;
    double w; /* qtf * idf * (k1 + 1) */
} lx_cursor;

typedef struct lx_hit {
    double score;
    uint32_t label;
} lx_hit;

/* a ranks below b: lower score, or the same score and a higher label */
static int hit_below(const lx_hit *a, const lx_hit *b)
{
    return a->score < b->score || (a->score == b->score && a->label > b->label);
}

static void heap_down(lx_hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && hit_below(&h[l], &h[m]))
            m = l;
        if (r < n && hit_below(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        lx_hit t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_up(lx_hit *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hit_below(&h[i], &h[p]))
            return;
        lx_hit t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

int rag_index__lex_search(const ix_lex *x, const ix_terms *q, double k1, double b,
                          const ix_query_filter *qf, size_t k, int64_t *labels, float *scores,
                          size_t *n_out)
{
    *n_out = 0;
    if (k == 0 || q->n == 0 || x->live == 0)
        return RAG_OK;
    const double N = (double)x->live;
    double avgdl = (double)x->total_length / N;
    if (avgdl <= 0)
        avgdl = 1;
    lx_cursor *cur = malloc(q->n * sizeof *cur);
    size_t hcap = k < x->live ? k : (size_t)x->live;
    lx_hit *heap = malloc(hcap * sizeof *heap);
    if (!cur || !heap) {
        free(cur);
        free(heap);
        return rag_error_set(RAG_ENOMEM, "index lexical search: k=%zu", k);
    }
    size_t nc = 0;
    for (size_t i = 0; i < q->n; i++) {
        int64_t tid = term_find(x, q->buf + q->t[i].off, q->t[i].len);
        if (tid < 0)
            continue;
        const ix_lterm *t = &x->terms[tid];
        if (t->df == 0 || t->n == 0)
            continue;
        double df = t->df;
        double idf = log(1.0 + (N - df + 0.5) / (df + 0.5));
        cur[nc].p = t->p;
        cur[nc].end = t->p + t->n;
        cur[nc].w = (double)q->t[i].tf * idf * (k1 + 1.0);
        nc++;
    }
    const double k1a = k1 * (1.0 - b), k1b = k1 * b / avgdl;
    size_t hn = 0;
    while (nc) {
        /* the lowest label any list is at: every list holding it is scored at once */
        uint32_t label = cur[0].p->label;
        for (size_t i = 1; i < nc; i++)
            if (cur[i].p->label < label)
                label = cur[i].p->label;
        const ix_llabel *e = &x->labels[label];
        int take = e->live && (!qf || !qf->allowed || rag_index__filter_fn((void *)qf, label));
        double s = 0, norm = k1a + k1b * (double)e->length;
        for (size_t i = 0; i < nc;) {
            if (cur[i].p->label == label) {
                double tf = cur[i].p->tf;
                s += cur[i].w * tf / (tf + norm);
                if (++cur[i].p == cur[i].end) {
                    /* list done: drop it, keeping the order of the others (summation order
                     * stays the query's, so scores are reproducible to the bit) */
                    memmove(&cur[i], &cur[i + 1], (nc - i - 1) * sizeof *cur);
                    nc--;
                    continue;
                }
            }
            i++;
        }
        if (!take)
            continue;
        lx_hit h = {s, label};
        if (hn < hcap) {
            heap[hn] = h;
            heap_up(heap, hn++);
        } else if (hit_below(&heap[0], &h)) {
            heap[0] = h;
            heap_down(heap, hn, 0);
        }
    }
    /* pop worst-first into the tail: best first in the output */
    size_t n = hn;
    while (hn) {
        lx_hit top = heap[0];
        heap[0] = heap[--hn];
        heap_down(heap, hn, 0);
        labels[hn] = top.label;
        scores[hn] = (float)top.score;
    }
    *n_out = n;
    free(cur);
    free(heap);
    return RAG_OK;
}
