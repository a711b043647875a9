/*
 * rag_fsck and rag_trace: the façade's cross-module views.  Neither touches a module's
 * tables: the index and ingest modules expose scans of their own state, and every repair is an
 * event ingest emits (re-sending a saga's pending step, storing the active content again as a
 * new version, or purging a document from the index), so a fix travels the same path, with
 * the same guarantees, as the change that went wrong.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "ragcore/rag.h"

/* ---- what the index holds ------------------------------------------------------------------ */

typedef struct ix_doc {
    char *id;
    uint64_t active, deleted_through;
    size_t label_count;
    int seen; /* ingest knows the document */
} ix_doc;

typedef struct ix_lab {
    char *doc;
    uint64_t version;
    uint32_t chunk;
    int64_t label;
} ix_lab;

typedef struct fsck_state {
    rag_ctx *ctx;
    unsigned int flags;
    int drained;
    uint64_t now;
    ix_doc *docs;
    size_t n_docs, cap_docs;
    ix_lab *labs;
    size_t n_labs, cap_labs;
    rag_fsck_report *rep;
    size_t cap_issues;
    int err;
    /* repairs to run after the scan */
    struct fix {
        char doc[RAG_DOC_ID_MAX + 1];
        int mode;
        uint64_t version;
        size_t issue; /* index of the first finding it repairs */
    } *fixes;
    size_t n_fixes, cap_fixes;
} fsck_state;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return RAG_OK;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q)
        return rag_error_set(RAG_ENOMEM, "fsck: out of memory");
    *p = q;
    *cap = nc;
    return RAG_OK;
}

static int collect_doc(void *arg, const rag_index_doc_state *d)
{
    fsck_state *st = arg;
    int rc = grow((void **)&st->docs, &st->cap_docs, st->n_docs + 1, sizeof *st->docs);
    if (rc)
        return rc;
    ix_doc *x = &st->docs[st->n_docs];
    memset(x, 0, sizeof *x);
    x->id = rag_strdup(d->doc_id);
    if (!x->id)
        return rag_error_set(RAG_ENOMEM, "fsck: out of memory");
    x->active = d->active;
    x->deleted_through = d->deleted_through;
    x->label_count = d->label_count;
    st->n_docs++;
    return RAG_OK;
}

static int collect_label(void *arg, const rag_index_label_state *l)
{
    fsck_state *st = arg;
    int rc = grow((void **)&st->labs, &st->cap_labs, st->n_labs + 1, sizeof *st->labs);
    if (rc)
        return rc;
    ix_lab *x = &st->labs[st->n_labs];
    x->doc = rag_strdup(l->doc_id);
    if (!x->doc)
        return rag_error_set(RAG_ENOMEM, "fsck: out of memory");
    x->version = l->version;
    x->chunk = l->chunk_no;
    x->label = l->label;
    st->n_labs++;
    return RAG_OK;
}

static int cmp_doc(const void *a, const void *b)
{
    return strcmp(((const ix_doc *)a)->id, ((const ix_doc *)b)->id);
}

static int cmp_lab(const void *a, const void *b)
{
    const ix_lab *x = a, *y = b;
    int c = strcmp(x->doc, y->doc);
    if (c)
        return c;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    if (x->chunk != y->chunk)
        return x->chunk < y->chunk ? -1 : 1;
    return x->label < y->label ? -1 : x->label > y->label;
}

static ix_doc *find_doc(fsck_state *st, const char *id)
{
    ix_doc key = {(char *)id, 0, 0, 0, 0};
    return st->n_docs ? bsearch(&key, st->docs, st->n_docs, sizeof *st->docs, cmp_doc) : NULL;
}

/* Labels of `id`: [*lo, *hi). */
static void find_labels(fsck_state *st, const char *id, size_t *lo, size_t *hi)
{
    size_t a = 0, b = st->n_labs;
    while (a < b) { /* first label with doc >= id */
        size_t m = a + (b - a) / 2;
        if (strcmp(st->labs[m].doc, id) < 0)
            a = m + 1;
        else
            b = m;
    }
    *lo = a;
    while (a < st->n_labs && !strcmp(st->labs[a].doc, id))
        a++;
    *hi = a;
}

/* ---- findings ------------------------------------------------------------------------------ */

static size_t add_issue(fsck_state *st, rag_fsck_kind kind, const char *doc, uint64_t version,
                        int64_t label, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static size_t add_issue(fsck_state *st, rag_fsck_kind kind, const char *doc, uint64_t version,
                        int64_t label, const char *fmt, ...)
{
    rag_fsck_report *rep = st->rep;
    if (grow((void **)&rep->issues, &st->cap_issues, rep->count + 1, sizeof *rep->issues)) {
        st->err = RAG_ENOMEM;
        return SIZE_MAX;
    }
    rag_fsck_issue *is = &rep->issues[rep->count];
    memset(is, 0, sizeof *is);
    is->kind = kind;
    snprintf(is->doc_id, sizeof is->doc_id, "%s", doc ? doc : "");
    is->version = version;
    is->label = label;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(is->detail, sizeof is->detail, fmt, ap);
    va_end(ap);
    return rep->count++;
}

/* Queue a repair for `doc` (one per document: the first asked for wins, since each mode
 * moves the whole document to a consistent state). */
static void add_fix(fsck_state *st, const char *doc, int mode, uint64_t version, size_t issue)
{
    if (issue == SIZE_MAX)
        return;
    for (size_t i = 0; i < st->n_fixes; i++)
        if (!strcmp(st->fixes[i].doc, doc))
            return;
    if (grow((void **)&st->fixes, &st->cap_fixes, st->n_fixes + 1, sizeof *st->fixes)) {
        st->err = RAG_ENOMEM;
        return;
    }
    struct fix *f = &st->fixes[st->n_fixes++];
    snprintf(f->doc, sizeof f->doc, "%s", doc);
    f->mode = mode;
    f->version = version;
    f->issue = issue;
}

/* ---- the per-document check ---------------------------------------------------------------- */

static int check_doc(void *arg, const rag_ingest_doc_state *d)
{
    fsck_state *st = arg;
    st->rep->documents_checked++;
    if (d->has_saga)
        st->rep->sagas_checked++;
    ix_doc *x = find_doc(st, d->doc_id);
    if (x)
        x->seen = 1;
    size_t lo, hi;
    find_labels(st, d->doc_id, &lo, &hi);
    uint64_t max_label_version = 0;
    for (size_t i = lo; i < hi; i++)
        if (st->labs[i].version > max_label_version)
            max_label_version = st->labs[i].version;

    /* A saga still open after a complete drain has nothing left in flight to move it; one
     * past its deadline is reported even while other work is still queued. */
    int open_saga = d->has_saga && (d->saga_state == RAG_SAGA_RUNNING ||
                                    d->saga_state == RAG_SAGA_COMPENSATING);
    int stuck = open_saga && (st->drained || st->now > d->saga_deadline_ms);
    if (stuck) {
        size_t is = add_issue(st, RAG_FSCK_STUCK_SAGA, d->doc_id, d->saga_version, -1,
                              "%s of version %llu is %s%s",
                              d->saga_kind == RAG_SAGA_DELETE ? "delete" : "put",
                              (unsigned long long)d->saga_version,
                              rag_saga_state_name(d->saga_state),
                              st->now > d->saga_deadline_ms ? " past its deadline"
                                                            : " with nothing in flight");
        add_fix(st, d->doc_id, RAG_REDRIVE_RESUME, 0, is);
    }
    if (!st->drained && open_saga)
        return RAG_OK; /* in flight: the index may legitimately lag behind */

    if (d->deleted) {
        if (hi > lo) {
            size_t is = add_issue(st, RAG_FSCK_ORPHAN_VECTOR, d->doc_id, max_label_version,
                                  st->labs[lo].label,
                                  "%zu label(s) of a document deleted at version %llu",
                                  hi - lo, (unsigned long long)d->deleted_at);
            add_fix(st, d->doc_id, RAG_REDRIVE_PURGE,
                    max_label_version > d->deleted_at ? max_label_version : d->deleted_at, is);
        }
        return RAG_OK;
    }

    uint64_t e = d->active;
    size_t other = 0;
    int64_t other_label = -1;
    uint64_t other_version = 0;
    for (size_t i = lo; i < hi; i++) {
        if (st->labs[i].version != e) {
            if (!other++) {
                other_label = st->labs[i].label;
                other_version = st->labs[i].version;
            }
        }
    }
    if (other) {
        size_t is = add_issue(st, RAG_FSCK_ORPHAN_VECTOR, d->doc_id, other_version, other_label,
                              "%zu label(s) of versions other than the active one (%llu)", other,
                              (unsigned long long)e);
        if (e)
            add_fix(st, d->doc_id, RAG_REDRIVE_REINDEX, 0, is);
        else
            add_fix(st, d->doc_id, RAG_REDRIVE_PURGE, max_label_version, is);
    }
    if (!e) {
        /* nothing active: fine for a document whose only version failed (reported as
         * such), a phantom otherwise */
        int failed = d->has_saga && (d->saga_state == RAG_SAGA_FAILED);
        if (!failed && !open_saga)
            add_issue(st, RAG_FSCK_PHANTOM_DOCUMENT, d->doc_id, d->latest, -1,
                      "live document with no active version (latest %llu)",
                      (unsigned long long)d->latest);
        return RAG_OK;
    }
    if (!d->active_stored) {
        add_issue(st, RAG_FSCK_PHANTOM_DOCUMENT, d->doc_id, e, -1,
                  "active version %llu has no stored text (not repairable: put it again)",
                  (unsigned long long)e);
        return RAG_OK;
    }
    /* labels of the active version: each chunk exactly once */
    size_t n_e = 0, dup = 0, distinct = 0;
    int64_t dup_label = -1;
    for (size_t i = lo; i < hi; i++) {
        if (st->labs[i].version != e)
            continue;
        n_e++;
        if (n_e > 1 && i > lo && st->labs[i - 1].version == e &&
            st->labs[i - 1].chunk == st->labs[i].chunk) {
            if (!dup++)
                dup_label = st->labs[i].label;
        } else if (st->labs[i].chunk < d->active_chunks) {
            distinct++;
        }
    }
    if (dup) {
        size_t is = add_issue(st, RAG_FSCK_DUPLICATE, d->doc_id, e, dup_label,
                              "%zu chunk(s) of version %llu have more than one label", dup,
                              (unsigned long long)e);
        add_fix(st, d->doc_id, RAG_REDRIVE_REINDEX, 0, is);
    }
    if (!x || x->active != e) {
        size_t is = add_issue(st, RAG_FSCK_PHANTOM_DOCUMENT, d->doc_id, e, -1,
                              "ingest has version %llu active, the index %llu",
                              (unsigned long long)e, (unsigned long long)(x ? x->active : 0));
        add_fix(st, d->doc_id, RAG_REDRIVE_REINDEX, 0, is);
    } else if (distinct != d->active_chunks) {
        size_t is = add_issue(st, RAG_FSCK_PHANTOM_DOCUMENT, d->doc_id, e, -1,
                              "%zu of %u chunk(s) of version %llu are searchable", distinct,
                              d->active_chunks, (unsigned long long)e);
        add_fix(st, d->doc_id, RAG_REDRIVE_REINDEX, 0, is);
    }
    return RAG_OK;
}

static int index_problem(void *arg, const rag_index_problem *p)
{
    fsck_state *st = arg;
    size_t is = add_issue(st, RAG_FSCK_INDEX_STATE, p->doc_id, 0, p->label, "%s: %s", p->what,
                          p->detail ? p->detail : "");
    if (is != SIZE_MAX && (st->flags & RAG_FSCK_REPAIR))
        st->rep->issues[is].repaired = 1; /* rag_index_check repairs while it reports */
    return st->err;
}

static void fsck_state_free(fsck_state *st)
{
    for (size_t i = 0; i < st->n_docs; i++)
        free(st->docs[i].id);
    for (size_t i = 0; i < st->n_labs; i++)
        free(st->labs[i].doc);
    free(st->docs);
    free(st->labs);
    free(st->fixes);
}

static int fsck_pass(rag_ctx *ctx, fsck_state *st)
{
    /* 1. inside the index: its tables against each other, FAISS against them */
    uint64_t found = 0;
    int rc = rag_index_check(ctx->index, (st->flags & RAG_FSCK_REPAIR) != 0, index_problem, st,
                             &found);
    if (!rc)
        rc = st->err;
    /* 2. what the index holds */
    if (!rc)
        rc = rag_index_scan_docs(ctx->index, collect_doc, st);
    if (!rc)
        rc = rag_index_scan_labels(ctx->index, collect_label, st);
    if (rc)
        return rc;
    st->rep->labels_checked = st->n_labs;
    if (st->n_docs)
        qsort(st->docs, st->n_docs, sizeof *st->docs, cmp_doc);
    if (st->n_labs)
        qsort(st->labs, st->n_labs, sizeof *st->labs, cmp_lab);
    /* 3. every document ingest knows, against it */
    rc = rag_ingest_scan(ctx->ingest, check_doc, st);
    if (!rc)
        rc = st->err;
    if (rc)
        return rc;
    /* 4. labels of documents ingest does not know at all */
    for (size_t i = 0; i < st->n_labs;) {
        size_t lo, hi;
        find_labels(st, st->labs[i].doc, &lo, &hi);
        ix_doc *x = find_doc(st, st->labs[i].doc);
        if (!x || !x->seen) {
            uint64_t maxv = 0;
            for (size_t j = lo; j < hi; j++)
                if (st->labs[j].version > maxv)
                    maxv = st->labs[j].version;
            size_t is = add_issue(st, RAG_FSCK_ORPHAN_VECTOR, st->labs[i].doc, maxv,
                                  st->labs[i].label, "%zu label(s) of a document ingest does not know",
                                  hi - lo);
            add_fix(st, st->labs[i].doc, RAG_REDRIVE_PURGE, maxv, is);
        }
        i = hi > i ? hi : i + 1;
    }
    /* 5. dead letters: reported, never dropped here */
    rag_dead_letter_info *dl = NULL;
    size_t n_dl = 0;
    rc = rag_dlq_list(ctx, &dl, &n_dl);
    if (rc)
        return rc;
    for (size_t i = 0; i < n_dl; i++)
        add_issue(st, RAG_FSCK_DEAD_LETTER, dl[i].doc_id, dl[i].version, -1,
                  "%s %s in %s after %u attempt(s): %s",
                  dl[i].topic, dl[i].id, dl[i].module, dl[i].attempts, dl[i].reason);
    rag_free(dl);
    return st->err;
}

int rag_fsck(rag_ctx *ctx, unsigned int flags, uint32_t timeout_ms, rag_fsck_report **out)
{
    rag_error_clear();
    if (!ctx || !out)
        return rag_error_set(RAG_EINVAL, "rag_fsck: ctx and out are required");
    if (flags & ~RAG_FSCK_REPAIR)
        return rag_error_set(RAG_EINVAL, "rag_fsck: unknown flags 0x%x", flags);
    *out = NULL;
    if (!ctx->ingest || !ctx->index)
        return rag_core__hosted_error("rag_fsck", "ingest and index");
    rag_fsck_report *rep = calloc(1, sizeof *rep);
    if (!rep)
        return rag_error_set(RAG_ENOMEM, "fsck: out of memory");
    fsck_state st;
    memset(&st, 0, sizeof st);
    st.ctx = ctx;
    st.flags = flags;
    st.rep = rep;

    /* Work in flight is not an inconsistency: let it land first. */
    int drc = rag_drain(ctx, timeout_ms);
    st.drained = drc == RAG_OK;
    rep->drained = st.drained;
    st.now = rag_now_ms();
    if (!st.drained)
        add_issue(&st, RAG_FSCK_QUEUE, "", 0, -1,
                  "work still queued after %u ms (%s); open sagas are judged by their deadline",
                  timeout_ms, rag_strerror(drc));

    int rc = fsck_pass(ctx, &st);
    if (!rc && (flags & RAG_FSCK_REPAIR) && st.n_fixes) {
        for (size_t i = 0; i < st.n_fixes; i++) {
            struct fix *f = &st.fixes[i];
            int frc = rag_ingest_redrive(ctx->ingest, f->doc, f->mode, f->version);
            if (frc == RAG_OK) {
                /* every finding about this document is covered by the one fix */
                for (size_t j = 0; j < rep->count; j++)
                    if (!strcmp(rep->issues[j].doc_id, f->doc) &&
                        rep->issues[j].kind != RAG_FSCK_DEAD_LETTER)
                        rep->issues[j].repaired = 1;
            } else {
                rag_fsck_issue *is = &rep->issues[f->issue];
                size_t l = strlen(is->detail);
                snprintf(is->detail + l, sizeof is->detail - l, " (repair failed: %s)",
                         rag_error_last());
            }
        }
        /* the fixes are events: let them land, so that a second run reports clean */
        rag_drain(ctx, timeout_ms);
    }
    fsck_state_free(&st);
    if (rc) {
        rag_fsck_report_free(rep);
        return rc;
    }
    for (size_t i = 0; i < rep->count; i++) {
        const rag_fsck_issue *is = &rep->issues[i];
        rag_log(is->repaired ? RAG_LOG_INFO : RAG_LOG_WARN, "core",
                is->repaired ? "fsck_repair" : "fsck_finding", "%s %s@%llu: %s",
                rag_fsck_kind_name(is->kind), is->doc_id, (unsigned long long)is->version,
                is->detail);
    }
    *out = rep;
    return RAG_OK;
}

void rag_fsck_report_free(rag_fsck_report *report)
{
    if (!report)
        return;
    free(report->issues);
    free(report);
}

const char *rag_fsck_kind_name(rag_fsck_kind kind)
{
    switch (kind) {
    case RAG_FSCK_ORPHAN_VECTOR: return "orphan_vector";
    case RAG_FSCK_PHANTOM_DOCUMENT: return "phantom_document";
    case RAG_FSCK_DUPLICATE: return "duplicate";
    case RAG_FSCK_STUCK_SAGA: return "stuck_saga";
    case RAG_FSCK_DEAD_LETTER: return "dead_letter";
    case RAG_FSCK_INDEX_STATE: return "index_state";
    case RAG_FSCK_QUEUE: return "queue";
    default: return "unknown";
    }
}

/* ---- trace --------------------------------------------------------------------------------- */

static int trace_fill(void *arg, const rag_ingest_saga_view *s)
{
    rag_trace_info *t = arg;
    snprintf(t->doc_id, sizeof t->doc_id, "%s", s->doc_id);
    t->version = s->version;
    snprintf(t->kind, sizeof t->kind, "%s", s->kind == RAG_SAGA_DELETE ? "delete" : "put");
    snprintf(t->state, sizeof t->state, "%s", rag_saga_state_name(s->state));
    t->active_version = s->deleted ? 0 : s->active;
    t->deleted = s->deleted;
    t->started_ms = s->started_ms;
    t->updated_ms = s->updated_ms;
    t->deadline_ms = s->deadline_ms;
    t->code = s->code;
    if (s->state == RAG_SAGA_RUNNING)
        snprintf(t->reason, sizeof t->reason, "in flight: not yet confirmed by the index%s",
                 rag_now_ms() > s->deadline_ms ? " (past its deadline: see rag fsck)" : "");
    else
        snprintf(t->reason, sizeof t->reason, "%s", s->reason ? s->reason : "");
    if (s->trail.count) {
        t->steps = calloc(s->trail.count, sizeof *t->steps);
        if (!t->steps)
            return rag_error_set(RAG_ENOMEM, "trace: out of memory");
    }
    for (size_t i = 0; i < s->trail.count; i++) {
        const rag_ev_hop *h = &s->trail.hops[i];
        rag_trace_step *st = &t->steps[i];
        snprintf(st->module, sizeof st->module, "%s", h->module);
        snprintf(st->event, sizeof st->event, "%s", h->event);
        st->at_ms = h->at_ms;
        st->attempts = h->attempts;
        st->code = h->code;
    }
    t->step_count = s->trail.count;
    return RAG_OK;
}

int rag_trace(rag_ctx *ctx, const char *doc_id, rag_trace_info **out)
{
    rag_error_clear();
    if (!ctx || !doc_id || !out)
        return rag_error_set(RAG_EINVAL, "rag_trace: ctx, doc_id and out are required");
    *out = NULL;
    if (!ctx->ingest)
        return rag_core__hosted_error("rag_trace", "ingest");
    rag_trace_info *t = calloc(1, sizeof *t);
    if (!t)
        return rag_error_set(RAG_ENOMEM, "trace: out of memory");
    int rc = rag_ingest_saga_get(ctx->ingest, doc_id, trace_fill, t);
    if (rc) {
        rag_trace_free(t);
        return rc;
    }
    *out = t;
    return RAG_OK;
}

void rag_trace_free(rag_trace_info *trace)
{
    if (!trace)
        return;
    free(trace->steps);
    free(trace);
}
