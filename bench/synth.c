/* The synthetic workload of bench_synth: see synth.h. */
#include "synth.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB 4096
#define QUERY_PREFIX "synthq-"

static const char *const group_names[SYNTH_GROUPS] = {
    "g00", "g01", "g02", "g03", "g04", "g05", "g06", "g07",
    "g08", "g09", "g10", "g11", "g12", "g13", "g14", "g15"};

const char *synth_group_name(unsigned g) { return group_names[g % SYNTH_GROUPS]; }

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit01(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t synth_hash(const char *text, size_t len)
{
    uint64_t h = 0x243F6A8885A308D3ull ^ (len * 0x9E3779B97F4A7C15ull);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, text + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    uint64_t tail = 0;
    for (size_t j = 0; i + j < len; j++)
        tail |= (uint64_t)(unsigned char)text[i + j] << (8 * j);
    h = (h ^ tail) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 32);
}

/* ---- words and documents ---- */

static char vocab[VOCAB][12];
static pthread_once_t vocab_once = PTHREAD_ONCE_INIT;

static void vocab_init(void)
{
    static const char *const syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi",
                                      "da", "pe", "qu", "ri", "to", "ba", "ge", "hu", "ji",
                                      "fo", "wy", "xe", "co", "lu", "ma", "no", "pi", "st",
                                      "tr", "ch", "an", "el", "or"};
    uint64_t s = 0x5EED0001ull;
    for (size_t w = 0; w < VOCAB; w++) {
        int n = 1 + (int)(splitmix(&s) % 4); /* 1-4 syllables: 2-8 letters */
        char *p = vocab[w];
        for (int k = 0; k < n; k++) {
            const char *x = syl[splitmix(&s) % (sizeof syl / sizeof syl[0])];
            *p++ = x[0];
            *p++ = x[1];
        }
        *p = 0;
    }
}

/* Zipf-like: low indices much more frequent. */
static const char *pick_word(uint64_t *s)
{
    double u = unit01(s);
    size_t i = (size_t)(VOCAB * u * u * u);
    return vocab[i < VOCAB ? i : VOCAB - 1];
}

/* A document of 1000-2000 bytes: sentences of 6-16 words, a blank line every 2-4 sentences. */
static char *make_text(uint64_t *s, size_t *size_out)
{
    size_t want = 1000 + (size_t)(splitmix(s) % 1001);
    char *buf = malloc(want + 256);
    if (!buf)
        return NULL;
    size_t n = 0;
    int in_para = 0, para_left = 2 + (int)(splitmix(s) % 3);
    while (n < want) {
        if (in_para) {
            if (--para_left == 0) {
                buf[n++] = '\n';
                buf[n++] = '\n';
                para_left = 2 + (int)(splitmix(s) % 3);
            } else {
                buf[n++] = ' ';
            }
        }
        in_para = 1;
        int words = 6 + (int)(splitmix(s) % 11);
        for (int k = 0; k < words && n < want + 200; k++) {
            const char *w = pick_word(s);
            size_t l = strlen(w);
            memcpy(buf + n, w, l);
            if (k == 0)
                buf[n] = (char)(buf[n] - 'a' + 'A');
            n += l;
            buf[n++] = k + 1 < words ? ' ' : '.';
        }
    }
    buf[n] = 0;
    *size_out = n;
    return buf;
}

static void make_acl(uint64_t *s, synth_doc *d)
{
    size_t k = 1 + (size_t)(splitmix(s) % 3);
    d->acl_count = 0;
    d->groups = 0;
    while (d->acl_count < k) {
        unsigned g = (unsigned)(splitmix(s) % SYNTH_GROUPS);
        if (d->groups & (1u << g))
            continue;
        d->groups |= 1u << g;
        d->acl[d->acl_count++] = group_names[g];
    }
}

int synth_corpus_make(synth_corpus *c, uint64_t seed, size_t n_docs, size_t n_updates)
{
    pthread_once(&vocab_once, vocab_init);
    memset(c, 0, sizeof *c);
    if (n_updates > n_docs)
        return -1;
    c->seed = seed;
    c->docs = calloc(n_docs ? n_docs : 1, sizeof *c->docs);
    c->updates = calloc(n_updates ? n_updates : 1, sizeof *c->updates);
    c->update_of = calloc(n_updates ? n_updates : 1, sizeof *c->update_of);
    size_t *perm = malloc((n_docs ? n_docs : 1) * sizeof *perm);
    if (!c->docs || !c->updates || !c->update_of || !perm) {
        free(perm);
        synth_corpus_free(c);
        return -1;
    }
    uint64_t s = seed;
    for (size_t i = 0; i < n_docs; i++) {
        synth_doc *d = &c->docs[i];
        snprintf(d->id, sizeof d->id, "doc-%07zu", i);
        make_acl(&s, d);
        if (!(d->text = make_text(&s, &d->size))) {
            free(perm);
            synth_corpus_free(c);
            return -1;
        }
        c->n_docs = i + 1;
        c->bytes += d->size;
    }
    /* Replacements: distinct documents in random order (partial Fisher-Yates). */
    uint64_t u = seed ^ 0xA5A5A5A5DEADBEEFull;
    for (size_t i = 0; i < n_docs; i++)
        perm[i] = i;
    for (size_t i = 0; i < n_updates; i++) {
        size_t j = i + (size_t)(splitmix(&u) % (n_docs - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        c->update_of[i] = perm[i];
        synth_doc *r = &c->updates[i];
        *r = c->docs[perm[i]];
        if (!(r->text = make_text(&u, &r->size))) {
            free(perm);
            synth_corpus_free(c);
            return -1;
        }
        c->n_updates = i + 1;
    }
    free(perm);
    return 0;
}

void synth_corpus_free(synth_corpus *c)
{
    for (size_t i = 0; i < c->n_docs; i++)
        free(c->docs[i].text);
    for (size_t i = 0; i < c->n_updates; i++)
        free(c->updates[i].text);
    free(c->docs);
    free(c->updates);
    free(c->update_of);
    memset(c, 0, sizeof *c);
}

void synth_query_text(size_t i, char *buf, size_t size) { snprintf(buf, size, QUERY_PREFIX "%zu", i); }

unsigned synth_query_group(size_t i) { return (unsigned)(i % SYNTH_GROUPS); }

/* ---- vectors ---- */

static float centroids[SYNTH_CLUSTERS][SYNTH_DIM];
static pthread_once_t centroid_once = PTHREAD_ONCE_INIT;

static void normalize(float *v)
{
    double ss = 0;
    for (int d = 0; d < SYNTH_DIM; d++)
        ss += (double)v[d] * v[d];
    float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (int d = 0; d < SYNTH_DIM; d++)
        v[d] *= inv;
}

static void centroid_init(void)
{
    uint64_t s = 0xC3A7D00Dull;
    for (int c = 0; c < SYNTH_CLUSTERS; c++) {
        for (int d = 0; d < SYNTH_DIM; d += 2) {
            /* Box-Muller: Gaussian centroids, uniform on the sphere once normalised. */
            double u1 = unit01(&s), u2 = unit01(&s);
            double r = sqrt(-2.0 * log(u1 > 1e-300 ? u1 : 1e-300));
            centroids[c][d] = (float)(r * cos(6.283185307179586 * u2));
            centroids[c][d + 1] = (float)(r * sin(6.283185307179586 * u2));
        }
        normalize(centroids[c]);
    }
}

/* centroid(h) + noise(h) with |noise| ~ 1: a member's cosine to its centroid is ~0.7, two
 * members' ~0.5, members of different clusters ~0.  The noise is the sum of two uniforms per
 * coordinate (variance 1/384 after scaling): cheap, and close enough to Gaussian here. */
static void vector_from_seed(uint64_t h, float *out)
{
    pthread_once(&centroid_once, centroid_init);
    const float *c = centroids[h % SYNTH_CLUSTERS];
    uint64_t s = h;
    const float scale = (float)(sqrt(6.0 / SYNTH_DIM) / 4294967296.0);
    for (int d = 0; d < SYNTH_DIM; d += 2) {
        uint64_t r = splitmix(&s), q = splitmix(&s);
        /* (u1 + u2 - 1) with u in [0,1): variance 1/6; scaled to 1/384. */
        float a = ((float)(uint32_t)r + (float)(uint32_t)(r >> 32)) - 4294967296.0f;
        float b = ((float)(uint32_t)q + (float)(uint32_t)(q >> 32)) - 4294967296.0f;
        out[d] = c[d] + a * scale;
        out[d + 1] = c[d + 1] + b * scale;
    }
    normalize(out);
}

void synth_text_vector(const char *text, size_t len, float *out)
{
    vector_from_seed(synth_hash(text, len), out);
}

void synth_query_vector(size_t i, float *out)
{
    uint64_t s = 0x9E3779B97F4A7C15ull * (i + 1) ^ 0x51ED2701ull;
    vector_from_seed(splitmix(&s), out);
}

/* ---- recorder ---- */

struct synth_recorder {
    pthread_mutex_t mu;
    float *vecs;
    uint64_t *hashes;
    char **texts;  /* per recorded vector: its text (NUL-terminated) when keep_texts was on */
    int keep_texts;
    size_t n, cap;
    /* open-addressing set of recorded hashes */
    uint64_t *set;
    size_t set_cap;
};

synth_recorder *synth_recorder_new(void)
{
    synth_recorder *r = calloc(1, sizeof *r);
    if (r)
        pthread_mutex_init(&r->mu, NULL);
    return r;
}

void synth_recorder_free(synth_recorder *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        free(r->texts ? r->texts[i] : NULL);
    free(r->texts);
    free(r->vecs);
    free(r->hashes);
    free(r->set);
    free(r);
}

static int set_insert(synth_recorder *r, uint64_t h)
{
    if (h == 0)
        h = 1; /* 0 marks an empty slot */
    if ((r->n + 1) * 2 > r->set_cap) {
        size_t cap = r->set_cap ? r->set_cap * 2 : 1024;
        uint64_t *set = calloc(cap, sizeof *set);
        if (!set)
            return -1;
        for (size_t i = 0; i < r->set_cap; i++)
            if (r->set[i]) {
                size_t j = r->set[i] & (cap - 1);
                while (set[j])
                    j = (j + 1) & (cap - 1);
                set[j] = r->set[i];
            }
        free(r->set);
        r->set = set;
        r->set_cap = cap;
    }
    size_t j = h & (r->set_cap - 1);
    while (r->set[j]) {
        if (r->set[j] == h)
            return 0;
        j = (j + 1) & (r->set_cap - 1);
    }
    r->set[j] = h;
    return 1;
}

static void record(synth_recorder *r, uint64_t h, const float *v, const char *text, size_t len)
{
    pthread_mutex_lock(&r->mu);
    if (set_insert(r, h) == 1) {
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 4096;
            float *vv = realloc(r->vecs, cap * SYNTH_DIM * sizeof *vv);
            if (vv)
                r->vecs = vv;
            uint64_t *hh = realloc(r->hashes, cap * sizeof *hh);
            if (hh)
                r->hashes = hh;
            char **tt = realloc(r->texts, cap * sizeof *tt);
            if (tt)
                r->texts = tt;
            if (vv && hh && tt)
                r->cap = cap;
        }
        if (r->n < r->cap) {
            memcpy(r->vecs + r->n * SYNTH_DIM, v, SYNTH_DIM * sizeof *v);
            r->texts[r->n] = NULL;
            if (r->keep_texts && (r->texts[r->n] = malloc(len + 1)) != NULL) {
                memcpy(r->texts[r->n], text, len);
                r->texts[r->n][len] = 0;
            }
            r->hashes[r->n++] = h;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

size_t synth_recorder_count(synth_recorder *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void synth_recorder_get(synth_recorder *r, float *vecs, uint64_t *hashes)
{
    pthread_mutex_lock(&r->mu);
    if (vecs)
        memcpy(vecs, r->vecs, r->n * SYNTH_DIM * sizeof *vecs);
    if (hashes)
        memcpy(hashes, r->hashes, r->n * sizeof *hashes);
    pthread_mutex_unlock(&r->mu);
}

void synth_recorder_reset(synth_recorder *r)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        free(r->texts[i]);
        r->texts[i] = NULL;
    }
    r->n = 0;
    if (r->set)
        memset(r->set, 0, r->set_cap * sizeof *r->set);
    pthread_mutex_unlock(&r->mu);
}

void synth_recorder_keep_texts(synth_recorder *r, int on)
{
    pthread_mutex_lock(&r->mu);
    r->keep_texts = on != 0;
    pthread_mutex_unlock(&r->mu);
}

const char *synth_recorder_text(synth_recorder *r, size_t i, size_t *len)
{
    pthread_mutex_lock(&r->mu);
    const char *t = i < r->n && r->texts ? r->texts[i] : NULL;
    pthread_mutex_unlock(&r->mu);
    if (len)
        *len = t ? strlen(t) : 0;
    return t;
}

void synth_recorder_view(synth_recorder *r, const float **vecs, const uint64_t **hashes,
                         size_t *n)
{
    pthread_mutex_lock(&r->mu);
    if (vecs)
        *vecs = r->vecs;
    if (hashes)
        *hashes = r->hashes;
    if (n)
        *n = r->n;
    pthread_mutex_unlock(&r->mu);
}

/* ---- provider ---- */

static int synth_embed(void *state, const char *const *texts, const size_t *lens, size_t n,
                       float *out)
{
    synth_recorder *rec = state;
    const size_t plen = sizeof QUERY_PREFIX - 1;
    for (size_t i = 0; i < n; i++) {
        float *v = out + i * SYNTH_DIM;
        if (lens[i] > plen && memcmp(texts[i], QUERY_PREFIX, plen) == 0) {
            char *end;
            unsigned long long q = strtoull(texts[i] + plen, &end, 10);
            if (end == texts[i] + lens[i]) {
                synth_query_vector((size_t)q, v);
                continue;
            }
        }
        uint64_t h = synth_hash(texts[i], lens[i]);
        vector_from_seed(h, v);
        if (rec)
            record(rec, h, v, texts[i], lens[i]);
    }
    return 0;
}

static int synth_fingerprint(void *state, char *buf, size_t size)
{
    (void)state;
    int n = snprintf(buf, size, "bench-synth-v1-%d", SYNTH_DIM);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

int synth_provider_init(rag_embed_provider *p, synth_recorder *rec)
{
    rag_embed_provider_init(p, RAG_EMBED_PROVIDER_VERSION);
    p->state = rec;
    p->dim = SYNTH_DIM;
    p->embed = synth_embed;
    p->fingerprint = synth_fingerprint;
    p->free = NULL; /* the recorder outlives the handle; the bench frees it */
    return 0;
}
