/* In-memory fake ingest and index readers for the retrieve tests (header-only).
 *
 * The index has both sides.  Vector: inner product of the chunk's fake embedding with the
 * query vector.  Lexical: the number of occurrences in the chunk's text of the query's words
 * (ASCII letters and digits, lowercased, a few stopwords dropped); only chunks that score
 * above 0 are hits.  With `fixed_scores` set, both sides ignore the query and use each
 * chunk's `vscore` (hits: vscore != 0) and `lscore` (hits: lscore > 0), so that fusion
 * arithmetic can be checked by hand. */
#ifndef RAG_TEST_FAKE_READERS_H
#define RAG_TEST_FAKE_READERS_H

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rag_common.h"
#include "rag_readers.h"

#define FR_MAX_DOCS 256
#define FR_MAX_CHUNKS 1024
#define FR_MAX_ACL 4
#define FR_MAX_CALLS 64

typedef struct fr_doc {
    const char *id;
    const char *title;
    const char *uri;
    uint64_t latest;
    int deleted;
} fr_doc;

typedef struct fr_chunk {
    const char *doc_id;
    uint64_t version;
    uint32_t chunk_no;
    const char *text; /* NULL: purged in ingest (chunk_text -> RAG_ENOTFOUND) */
    const char *acl[FR_MAX_ACL]; /* principals; none: public */
    int in_index;                /* label active in the fake index */
    float *vec;
    float vscore, lscore;        /* used when the world has fixed_scores */
} fr_chunk;

typedef struct fr_world {
    unsigned int dim;
    fr_doc docs[FR_MAX_DOCS];
    size_t ndocs;
    fr_chunk chunks[FR_MAX_CHUNKS];
    size_t nchunks;
    /* index side */
    uint64_t epoch;
    int epoch_fails;
    int search_fail;   /* nonzero: search returns this code */
    int lex_fail;      /* nonzero: search_lexical returns this code */
    int fixed_scores;  /* 1: scores from each chunk's vscore/lscore */
    volatile long lex_calls;
    size_t lex_ks[FR_MAX_CALLS]; /* k of the first FR_MAX_CALLS lexical searches */
    char last_lex_query[256];
    int doc_info_fail; /* nonzero: doc_info returns this code */
    int text_fail;     /* nonzero: chunk_text returns this code */
    volatile long search_calls;
    size_t ks[FR_MAX_CALLS]; /* k of the first FR_MAX_CALLS searches */
    /* last filter seen by search (copied) */
    int last_unrestricted;
    size_t last_principal_count;
    char last_principals[8][64];
    pthread_mutex_t lock;
    /* ingest side */
    volatile long begins, ends, doc_info_calls, text_calls;
} fr_world;

static inline fr_world *fr_new(unsigned int dim)
{
    fr_world *w = calloc(1, sizeof *w);
    w->dim = dim;
    w->epoch = 1;
    pthread_mutex_init(&w->lock, NULL);
    return w;
}

static inline void fr_free(fr_world *w)
{
    for (size_t i = 0; i < w->nchunks; i++)
        free(w->chunks[i].vec);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static inline fr_doc *fr_find_doc(fr_world *w, const char *id)
{
    for (size_t i = 0; i < w->ndocs; i++)
        if (strcmp(w->docs[i].id, id) == 0)
            return &w->docs[i];
    return NULL;
}

static inline fr_doc *fr_add_doc(fr_world *w, const char *id, const char *title, const char *uri)
{
    fr_doc *d = &w->docs[w->ndocs++];
    d->id = id;
    d->title = title;
    d->uri = uri;
    d->latest = 1;
    return d;
}

/* Adds a chunk to ingest and (embedded with `p`) to the index. */
static inline fr_chunk *fr_add_chunk(fr_world *w, const rag_embed_provider *p, const char *doc_id,
                                     uint64_t version, uint32_t chunk_no, const char *text)
{
    fr_chunk *c = &w->chunks[w->nchunks++];
    memset(c, 0, sizeof *c);
    c->doc_id = doc_id;
    c->version = version;
    c->chunk_no = chunk_no;
    c->text = text;
    c->in_index = 1;
    c->vec = calloc(w->dim, sizeof(float));
    size_t len = strlen(text);
    const char *texts[1] = {text};
    p->embed(p->state, texts, &len, 1, c->vec);
    return c;
}

/* ---- ingest reader ---- */

static int fr_begin(void *self, void **rtxn)
{
    fr_world *w = self;
    __atomic_add_fetch(&w->begins, 1, __ATOMIC_SEQ_CST);
    *rtxn = w;
    return RAG_OK;
}

static void fr_end(void *self, void *rtxn)
{
    fr_world *w = self;
    (void)rtxn;
    __atomic_add_fetch(&w->ends, 1, __ATOMIC_SEQ_CST);
}

static int fr_chunk_text(void *self, void *rtxn, const char *doc_id, uint64_t version,
                         uint32_t chunk_no, const char **text, size_t *len)
{
    fr_world *w = self;
    (void)rtxn;
    __atomic_add_fetch(&w->text_calls, 1, __ATOMIC_SEQ_CST);
    if (w->text_fail)
        return rag_error_set(w->text_fail, "fake chunk_text failure");
    for (size_t i = 0; i < w->nchunks; i++) {
        fr_chunk *c = &w->chunks[i];
        if (c->version == version && c->chunk_no == chunk_no && strcmp(c->doc_id, doc_id) == 0) {
            if (!c->text)
                return RAG_ENOTFOUND;
            *text = c->text;
            *len = strlen(c->text);
            return RAG_OK;
        }
    }
    return RAG_ENOTFOUND;
}

static int fr_doc_info(void *self, void *rtxn, const char *doc_id, rag_doc_view *out)
{
    fr_world *w = self;
    (void)rtxn;
    __atomic_add_fetch(&w->doc_info_calls, 1, __ATOMIC_SEQ_CST);
    if (w->doc_info_fail)
        return rag_error_set(w->doc_info_fail, "fake doc_info failure");
    fr_doc *d = fr_find_doc(w, doc_id);
    if (!d)
        return RAG_ENOTFOUND;
    out->latest_version = d->latest;
    out->deleted = d->deleted;
    out->title = d->title ? d->title : "";
    out->uri = d->uri ? d->uri : "";
    return RAG_OK;
}

/* ---- index reader ---- */

static inline void fr_topk_insert(rag_index_hit *hits, size_t *n, size_t k, const fr_chunk *c,
                                  float s);

static int fr_allowed(const fr_chunk *c, const rag_acl_filter *f)
{
    if (f->unrestricted || !c->acl[0])
        return 1;
    for (int a = 0; a < FR_MAX_ACL && c->acl[a]; a++)
        for (size_t p = 0; p < f->principal_count; p++)
            if (strcmp(c->acl[a], f->principals[p]) == 0)
                return 1;
    return 0;
}

static int fr_search(void *self, const float *query, size_t k, const rag_acl_filter *filter,
                     rag_index_hit *hits, size_t *n_hits)
{
    fr_world *w = self;
    long call = __atomic_fetch_add(&w->search_calls, 1, __ATOMIC_SEQ_CST);
    if (w->search_fail)
        return rag_error_set(w->search_fail, "fake search failure");
    pthread_mutex_lock(&w->lock);
    if (call < FR_MAX_CALLS)
        w->ks[call] = k;
    w->last_unrestricted = filter->unrestricted;
    w->last_principal_count = filter->principal_count;
    for (size_t p = 0; p < filter->principal_count && p < 8; p++)
        snprintf(w->last_principals[p], 64, "%s", filter->principals[p]);
    pthread_mutex_unlock(&w->lock);
    size_t n = 0;
    /* insertion into a sorted top-k list */
    for (size_t i = 0; i < w->nchunks; i++) {
        fr_chunk *c = &w->chunks[i];
        if (!c->in_index || !fr_allowed(c, filter))
            continue;
        float s = 0;
        if (w->fixed_scores) {
            if (c->vscore == 0)
                continue;
            s = c->vscore;
        } else {
            for (unsigned d = 0; d < w->dim; d++)
                s += c->vec[d] * query[d];
        }
        fr_topk_insert(hits, &n, k, c, s);
    }
    *n_hits = n;
    return RAG_OK;
}

/* Insert (c, s) into the sorted top-k list hits[0..*n). */
static inline void fr_topk_insert(rag_index_hit *hits, size_t *n, size_t k, const fr_chunk *c,
                                  float s)
{
    size_t pos = *n;
    while (pos > 0 && hits[pos - 1].score < s)
        pos--;
    if (pos >= k)
        return;
    size_t last = *n < k ? *n : k - 1;
    memmove(&hits[pos + 1], &hits[pos], (last - pos) * sizeof *hits);
    memset(&hits[pos], 0, sizeof hits[pos]);
    snprintf(hits[pos].doc_id, sizeof hits[pos].doc_id, "%s", c->doc_id);
    hits[pos].version = c->version;
    hits[pos].chunk_no = c->chunk_no;
    hits[pos].score = s;
    if (*n < k)
        (*n)++;
}

#define FR_MAX_TERMS 32

static inline int fr_is_word(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* Lowercased words of s[0..len), stopwords dropped; returns the count. */
static inline size_t fr_terms(const char *s, size_t len, char terms[][32], size_t max)
{
    static const char *stop[] = {"a", "an", "and", "the", "of", "is", "to", "in", NULL};
    size_t n = 0;
    for (size_t i = 0; i < len && n < max;) {
        while (i < len && !fr_is_word(s[i]))
            i++;
        size_t j = i, m = 0;
        char t[32];
        while (j < len && fr_is_word(s[j])) {
            if (m < sizeof t - 1)
                t[m++] = (char)((s[j] >= 'A' && s[j] <= 'Z') ? s[j] + 32 : s[j]);
            j++;
        }
        t[m] = 0;
        i = j;
        if (!m)
            continue;
        int is_stop = 0;
        for (int q = 0; stop[q]; q++)
            is_stop |= strcmp(stop[q], t) == 0;
        if (!is_stop)
            memcpy(terms[n++], t, m + 1);
    }
    return n;
}

static int fr_search_lexical(void *self, const char *query, size_t len, size_t k,
                             const rag_acl_filter *filter, rag_index_hit *hits, size_t *n_hits)
{
    fr_world *w = self;
    long call = __atomic_fetch_add(&w->lex_calls, 1, __ATOMIC_SEQ_CST);
    if (w->lex_fail)
        return rag_error_set(w->lex_fail, "fake lexical failure");
    pthread_mutex_lock(&w->lock);
    if (call < FR_MAX_CALLS)
        w->lex_ks[call] = k;
    snprintf(w->last_lex_query, sizeof w->last_lex_query, "%.*s", (int)len, query);
    w->last_unrestricted = filter->unrestricted;
    w->last_principal_count = filter->principal_count;
    for (size_t p = 0; p < filter->principal_count && p < 8; p++)
        snprintf(w->last_principals[p], 64, "%s", filter->principals[p]);
    pthread_mutex_unlock(&w->lock);
    char qt[FR_MAX_TERMS][32], ct[FR_MAX_TERMS * 4][32];
    size_t nq = fr_terms(query, len, qt, FR_MAX_TERMS);
    size_t n = 0;
    for (size_t i = 0; i < w->nchunks; i++) {
        fr_chunk *c = &w->chunks[i];
        if (!c->in_index || !fr_allowed(c, filter))
            continue;
        float s = 0;
        if (w->fixed_scores) {
            s = c->lscore;
        } else if (c->text) {
            size_t nc = fr_terms(c->text, strlen(c->text), ct, FR_MAX_TERMS * 4);
            for (size_t a = 0; a < nq; a++)
                for (size_t b = 0; b < nc; b++)
                    s += strcmp(qt[a], ct[b]) == 0;
        }
        if (s > 0)
            fr_topk_insert(hits, &n, k, c, s);
    }
    *n_hits = n;
    return RAG_OK;
}

static int fr_epoch(void *self, uint64_t *out)
{
    fr_world *w = self;
    if (w->epoch_fails)
        return rag_error_set(RAG_EINDEX, "fake epoch failure");
    *out = __atomic_load_n(&w->epoch, __ATOMIC_SEQ_CST);
    return RAG_OK;
}

static inline void fr_readers(fr_world *w, rag_ingest_reader *ig, rag_index_reader *ix)
{
    memset(ig, 0, sizeof *ig);
    memset(ix, 0, sizeof *ix);
    ig->version = RAG_READER_VERSION;
    ig->self = w;
    ig->begin = fr_begin;
    ig->end = fr_end;
    ig->chunk_text = fr_chunk_text;
    ig->doc_info = fr_doc_info;
    ix->version = RAG_READER_VERSION;
    ix->self = w;
    ix->search = fr_search;
    ix->epoch = fr_epoch;
    ix->search_lexical = fr_search_lexical;
}

#endif
