/*
 * Lexical analysis of the index module's BM25 side: the same pipeline for chunk text, titles
 * and queries, so that a query term matches exactly the terms it should.
 *
 *   NFKC casefold (utf8proc, via rag_utf8_nfkc_casefold: full-width forms, ligatures and
 *   case all fold) -> rag_tokenize with English stopwords dropped -> Snowball English
 *   (Porter2) stem ("running", "runs" -> "run").
 *
 * Anserini's BM25 baselines stem too; without stemming plural/singular and verb forms of the
 * same word never meet, which costs a lot on scientific text.  libstemmer's stemmers keep
 * their state in the stemmer object, so they are pooled: each analysis takes one and gives
 * it back (consumers and searches analyse on several threads).
 */
#include <libstemmer.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"
#include "rag_text.h"

/* ---- stemmer pool ------------------------------------------------------------------------ */

/* Words follow Zipf's law, so most tokens of a chunk were stemmed before: each pooled stemmer
 * keeps a direct-mapped cache word -> stem, which removes most Snowball calls (it was a sixth
 * of bulk ingest).  Words longer than a slot go to Snowball every time. */
#define STEM_SLOTS 16384 /* power of two; 1 MiB per pooled stemmer */
#define STEM_WORD_MAX 30

typedef struct stem_slot {
    uint8_t wlen, slen; /* wlen 0: empty */
    char word[STEM_WORD_MAX];
    char stem[STEM_WORD_MAX + 2];
} stem_slot;

struct ix_stemmer {
    struct sb_stemmer *sb;
    stem_slot *cache; /* STEM_SLOTS entries, or NULL when it could not be allocated */
};

static void stemmer_delete(ix_stemmer *st)
{
    if (!st)
        return;
    if (st->sb)
        sb_stemmer_delete(st->sb);
    free(st->cache);
    free(st);
}

int rag_index__stemmers_init(ix_stemmers *s)
{
    memset(s, 0, sizeof *s);
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        return rag_error_set(RAG_ENOMEM, "index: stemmer pool mutex");
    s->ready = 1;
    return RAG_OK;
}

void rag_index__stemmers_free(ix_stemmers *s)
{
    if (!s || !s->ready)
        return;
    for (size_t i = 0; i < s->n; i++)
        stemmer_delete(s->free_list[i]);
    free(s->free_list);
    pthread_mutex_destroy(&s->mu);
    memset(s, 0, sizeof *s);
}

static int stemmer_take(ix_stemmers *s, ix_stemmer **out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->n ? s->free_list[--s->n] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (*out)
        return RAG_OK;
    ix_stemmer *st = calloc(1, sizeof *st);
    if (st && !(st->sb = sb_stemmer_new("english", "UTF_8"))) {
        free(st);
        st = NULL;
    }
    if (!st)
        return rag_error_set(RAG_ENOMEM, "index: cannot create a Snowball stemmer");
    st->cache = calloc(STEM_SLOTS, sizeof *st->cache); /* optional: NULL only slows down */
    *out = st;
    return RAG_OK;
}

static void stemmer_give(ix_stemmers *s, ix_stemmer *st)
{
    pthread_mutex_lock(&s->mu);
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        ix_stemmer **p = realloc(s->free_list, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&s->mu);
            stemmer_delete(st); /* the pool stays as it was; the next caller makes one */
            return;
        }
        s->free_list = p;
        s->cap = cap;
    }
    s->free_list[s->n++] = st;
    pthread_mutex_unlock(&s->mu);
}

/* ---- term lists ------------------------------------------------------------------------------ */

void rag_index__terms_reset(ix_terms *t)
{
    t->buf_len = 0;
    t->n = 0;
    t->length = 0;
}

void rag_index__terms_free(ix_terms *t)
{
    if (!t)
        return;
    free(t->buf);
    free(t->t);
    memset(t, 0, sizeof *t);
}

static int terms_push(ix_terms *t, const char *s, size_t len, uint32_t tf)
{
    if (t->buf_len + len + 1 > t->buf_cap) {
        size_t cap = t->buf_cap ? t->buf_cap * 2 : 1024;
        while (cap < t->buf_len + len + 1)
            cap *= 2;
        char *p = realloc(t->buf, cap);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index: term buffer");
        t->buf = p;
        t->buf_cap = cap;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        ix_term *p = realloc(t->t, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index: term list");
        t->t = p;
        t->cap = cap;
    }
    memcpy(t->buf + t->buf_len, s, len);
    t->buf[t->buf_len + len] = '\0';
    t->t[t->n].off = t->buf_len;
    t->t[t->n].len = (uint32_t)len;
    t->t[t->n].tf = tf;
    uint64_t key = 0;
    for (size_t i = 0; i < 8; i++)
        key = key << 8 | (i < len ? (unsigned char)s[i] : 0);
    t->t[t->n].key = key;
    t->n++;
    t->buf_len += len + 1;
    return RAG_OK;
}

typedef struct stem_ctx {
    ix_stemmer *st;
    ix_terms *t;
} stem_ctx;

static uint32_t word_hash(const char *w, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)w[i]) * 16777619u;
    return h ^ (h >> 15);
}

static int on_token(void *arg, const char *tok, size_t len)
{
    stem_ctx *c = arg;
    stem_slot *slot = NULL;
    if (c->st->cache && len <= STEM_WORD_MAX) {
        slot = &c->st->cache[word_hash(tok, len) & (STEM_SLOTS - 1)];
        if (slot->wlen == len && memcmp(slot->word, tok, len) == 0)
            return terms_push(c->t, slot->stem, slot->slen, 1);
    }
    /* Tokens are at most 64 bytes (rag_tokenize cuts them) */
    const sb_symbol *stem = sb_stemmer_stem(c->st->sb, (const sb_symbol *)tok, (int)len);
    if (!stem)
        return rag_error_set(RAG_ENOMEM, "index: stemming");
    int sl = sb_stemmer_length(c->st->sb);
    /* A stem is never empty for a non-empty word; keep the word if it were. */
    if (sl <= 0)
        return terms_push(c->t, tok, len, 1);
    if (slot && (size_t)sl <= STEM_WORD_MAX + 2) {
        slot->wlen = (uint8_t)len;
        memcpy(slot->word, tok, len);
        slot->slen = (uint8_t)sl;
        memcpy(slot->stem, stem, (size_t)sl);
    }
    return terms_push(c->t, (const char *)stem, (size_t)sl, 1);
}

int rag_index__terms_analyze(ix_stemmers *s, ix_terms *t, const char *text, size_t len)
{
    if (!len)
        return RAG_OK;
    if (!text)
        return rag_error_set(RAG_EINVAL, "index: NULL text of %zu bytes", len);
    /* Chunk text comes from ingest as NFC UTF-8, but a query or a message is not trusted:
     * repairing keeps an ill-formed byte from hiding the rest of the text. */
    char *fixed = NULL, *folded = NULL;
    size_t fixed_len = 0, folded_len = 0;
    int rc = RAG_OK;
    if (rag_utf8_check(text, len, NULL) != RAG_OK) {
        rag_error_clear();
        rc = rag_utf8_repair(text, len, &fixed, &fixed_len);
        if (!rc) {
            text = fixed;
            len = fixed_len;
        }
    }
    if (!rc)
        rc = rag_utf8_nfkc_casefold(text, len, &folded, &folded_len);
    ix_stemmer *st = NULL;
    if (!rc)
        rc = stemmer_take(s, &st);
    if (!rc) {
        size_t before = t->n;
        stem_ctx c = {st, t};
        rc = rag_tokenize(folded, folded_len, 1, on_token, &c);
        stemmer_give(s, st);
        if (!rc)
            t->length += (uint32_t)(t->n - before);
    }
    free(fixed);
    free(folded);
    return rc;
}

int rag_index__terms_append(ix_terms *t, const ix_terms *src)
{
    for (size_t i = 0; i < src->n; i++) {
        int rc = terms_push(t, src->buf + src->t[i].off, src->t[i].len, src->t[i].tf);
        if (rc)
            return rc;
    }
    t->length += src->length;
    return RAG_OK;
}

static int term_cmp(const char *buf, const ix_term *x, const ix_term *y)
{
    if (x->key != y->key) /* byte order of the first 8 bytes (a shorter term pads with 0) */
        return x->key < y->key ? -1 : 1;
    uint32_t m = x->len < y->len ? x->len : y->len;
    int c = m > 8 ? memcmp(buf + x->off + 8, buf + y->off + 8, m - 8) : 0;
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* Sort a chunk's tokens (tens to hundreds): quicksort on the prefix keys with insertion sort
 * below 16 elements.  glibc's qsort (a merge sort copying through a callback) was a tenth of
 * bulk ingest.  Recursion goes into the smaller side, so the depth stays logarithmic. */
static void term_sort(const char *buf, ix_term *a, size_t n)
{
    while (n > 16) {
        size_t mid = n / 2;
        /* median of three into a[mid] */
        if (term_cmp(buf, &a[mid], &a[0]) < 0) {
            ix_term t = a[mid]; a[mid] = a[0]; a[0] = t;
        }
        if (term_cmp(buf, &a[n - 1], &a[mid]) < 0) {
            ix_term t = a[n - 1]; a[n - 1] = a[mid]; a[mid] = t;
            if (term_cmp(buf, &a[mid], &a[0]) < 0) {
                t = a[mid]; a[mid] = a[0]; a[0] = t;
            }
        }
        ix_term pivot = a[mid];
        size_t i = 0, j = n - 1;
        for (;;) {
            while (term_cmp(buf, &a[i], &pivot) < 0)
                i++;
            while (term_cmp(buf, &pivot, &a[j]) < 0)
                j--;
            if (i >= j)
                break;
            ix_term t = a[i]; a[i] = a[j]; a[j] = t;
            i++;
            j--;
        }
        /* [0, j] <= pivot <= [j+1, n) */
        size_t left = j + 1, right = n - left;
        if (left < right) {
            term_sort(buf, a, left);
            a += left;
            n = right;
        } else {
            term_sort(buf, a + left, right);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++) {
        ix_term x = a[i];
        size_t j = i;
        while (j > 0 && term_cmp(buf, &x, &a[j - 1]) < 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

int rag_index__terms_finish(ix_terms *t)
{
    if (t->n == 0)
        return RAG_OK;
    term_sort(t->buf, t->t, t->n);
    size_t u = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (u && t->t[u - 1].len == t->t[i].len &&
            memcmp(t->buf + t->t[u - 1].off, t->buf + t->t[i].off, t->t[i].len) == 0)
            t->t[u - 1].tf += t->t[i].tf;
        else
            t->t[u++] = t->t[i];
    }
    t->n = u;
    return RAG_OK;
}

int rag_index__terms_encode(const ix_terms *t, rag_wbuf *w)
{
    rag_wbuf_u32(w, t->length);
    rag_wbuf_u32(w, (uint32_t)t->n);
    for (size_t i = 0; i < t->n; i++) {
        rag_wbuf_str(w, t->buf + t->t[i].off, t->t[i].len);
        rag_wbuf_u32(w, t->t[i].tf);
    }
    return w->err ? rag_error_set(RAG_ENOMEM, "index: encode lexical terms") : RAG_OK;
}
