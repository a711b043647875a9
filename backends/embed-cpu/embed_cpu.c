/*
 * The built-in CPU embedding provider (DESIGN.md "Embedding providers").
 *
 * Both modes share one code path per text:
 *   NFKC casefold -> rag_tokenize -> term frequencies in a small open-addressing table
 *   (stopwords dropped, checked once per distinct term) -> weight 1 + ln(tf) -> accumulate into `dim` doubles -> L2-normalise into floats.
 * `hash` mode adds +-w into bucket h % dim (sign from the top bit of h, h = XXH3-64 of the
 * token with a fixed seed); `table` mode adds w * row(token) for tokens found in the host table.
 *
 * Determinism: XXH3 is specified byte-for-byte, so h is the same on every machine; distinct
 * terms are accumulated in first-occurrence order (not in hash-table order), so the floating
 * point summation order depends on the text only, never on table capacities.
 *
 * Thread-safety: the state is immutable after init; all scratch memory lives in the call.
 *
 * The `bag` slot (provider version 2) hands the same model to an accelerator: cpu_featurize
 * runs collect_terms and emits the terms finish_vector would sum, and the table rows; the CUDA
 * provider (backends/embed-cuda) sums and normalises them on the device.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ragcore/providers.h"
#include "rag_common.h"
#include "rag_text.h"

/* Fixed seed of the token hash.  Changing it changes every vector: bump the "-v1" in the
 * fingerprints if it ever must change. */
#define CPU_HASH_SEED 0x52414743505531ULL /* "RAGCPU1" */

#define CPU_DIM_DEFAULT 384u
#define CPU_DIM_MIN 8u
#define CPU_DIM_MAX 4096u
#define CPU_TABLE_DIM_MAX 65536u
#define CPU_TABLE_NAME_MAX 64

enum { CPU_MODE_HASH = 1, CPU_MODE_TABLE = 2 };

typedef struct cpu_state {
    int mode;
    unsigned int dim;
    char fingerprint[RAG_EMBED_FINGERPRINT_MAX];
    /* table mode: token i is tok_arena[tok_off[i] .. + tok_len[i]), row i at rows + i*dim */
    size_t n_rows;
    float *rows;
    char *tok_arena;
    size_t *tok_off;
    uint32_t *tok_len;
    uint32_t *slot_row;  /* row + 1; 0 = empty */
    uint64_t *slot_hash; /* token hash of the row in that slot */
    size_t slot_mask;
} cpu_state;

/* ---- per-call scratch --------------------------------------------------------------------- */

typedef struct tf_slot {
    uint32_t gen; /* slot is live only when gen == scratch gen: no clearing between texts */
    uint32_t idx; /* index into terms */
} tf_slot;

typedef struct tf_term {
    uint64_t key; /* hash mode: token hash; table mode: row index */
    uint32_t count;
    uint32_t stop; /* a stopword: counted (so it is looked up once per text), never summed */
} tf_term;

typedef struct scratch {
    const cpu_state *st;
    tf_slot *slots;
    size_t slot_cap; /* power of two */
    uint32_t gen;
    tf_term *terms;
    size_t n_terms, terms_cap;
    char *fold; /* ASCII fast path buffer */
    size_t fold_cap;
    double *acc;
    int err;
} scratch;

/* 1 + ln(tf) for tf = 1..32, correctly rounded (written out so that the weights of almost
 * every term do not depend on the platform's libm; beyond 32, log() is used). */
static const double tf_weight_table[32] = {
    1.0,
    1.6931471805599454,
    2.0986122886681096,
    2.386294361119891,
    2.6094379124341005,
    2.791759469228055,
    2.9459101490553135,
    3.0794415416798357,
    3.1972245773362196,
    3.302585092994046,
    3.3978952727983707,
    3.4849066497880004,
    3.5649493574615367,
    3.6390573296152584,
    3.70805020110221,
    3.772588722239781,
    3.833213344056216,
    3.8903717578961645,
    3.9444389791664403,
    3.995732273553991,
    4.044522437723423,
    4.091042453358316,
    4.13549421592915,
    4.178053830347945,
    4.218875824868201,
    4.258096538021482,
    4.295836866004329,
    4.332204510175204,
    4.367295829986474,
    4.401197381662155,
    4.433987204485146,
    4.465735902799727,
};

static inline double tf_weight(uint32_t tf)
{
    return tf <= 32 ? tf_weight_table[tf - 1] : 1.0 + log((double)tf);
}

static inline size_t mix_slot(uint64_t key, size_t mask)
{
    /* Row indices in table mode are small consecutive integers: spread them. */
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & mask;
}

static void scratch_free(scratch *s)
{
    free(s->slots);
    free(s->terms);
    free(s->fold);
    free(s->acc);
}

static int scratch_init(scratch *s, const cpu_state *st)
{
    memset(s, 0, sizeof *s);
    s->st = st;
    s->slot_cap = 256;
    s->slots = calloc(s->slot_cap, sizeof *s->slots);
    s->terms_cap = 128;
    s->terms = malloc(s->terms_cap * sizeof *s->terms);
    s->acc = malloc((size_t)st->dim * sizeof *s->acc);
    if (!s->slots || !s->terms || !s->acc) {
        scratch_free(s);
        return rag_error_set(RAG_ENOMEM, "cpu embedder: out of memory");
    }
    return RAG_OK;
}

/* Start a new text: bump the generation so every slot reads as empty. */
static void scratch_next_text(scratch *s)
{
    s->n_terms = 0;
    if (++s->gen == 0) {
        memset(s->slots, 0, s->slot_cap * sizeof *s->slots);
        s->gen = 1;
    }
}

static int tf_grow(scratch *s)
{
    size_t cap = s->slot_cap * 2;
    tf_slot *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return RAG_ENOMEM;
    for (size_t i = 0; i < s->n_terms; i++) {
        size_t j = mix_slot(s->terms[i].key, cap - 1);
        while (ns[j].gen == 1)
            j = (j + 1) & (cap - 1);
        ns[j].gen = 1;
        ns[j].idx = (uint32_t)i;
    }
    free(s->slots);
    s->slots = ns;
    s->slot_cap = cap;
    s->gen = 1;
    return RAG_OK;
}

/* Count one occurrence of `key`; a new term is checked against the stopword list here, once
 * per distinct term and text, instead of once per token inside rag_tokenize (the binary
 * search there was a quarter of the embedding time). */
static int tf_add(scratch *s, uint64_t key, const char *tok, size_t len)
{
    size_t mask = s->slot_cap - 1;
    size_t j = mix_slot(key, mask);
    while (s->slots[j].gen == s->gen) {
        tf_term *t = &s->terms[s->slots[j].idx];
        if (t->key == key) {
            t->count++;
            return RAG_OK;
        }
        j = (j + 1) & mask;
    }
    if (s->n_terms == s->terms_cap) {
        size_t cap = s->terms_cap * 2;
        tf_term *nt = realloc(s->terms, cap * sizeof *nt);
        if (!nt)
            return RAG_ENOMEM;
        s->terms = nt;
        s->terms_cap = cap;
    }
    if (s->n_terms >= UINT32_MAX)
        return RAG_ETOOBIG;
    s->slots[j].gen = s->gen;
    s->slots[j].idx = (uint32_t)s->n_terms;
    s->terms[s->n_terms].key = key;
    s->terms[s->n_terms].count = 1;
    s->terms[s->n_terms].stop = rag_is_stopword(tok, len) != 0;
    s->n_terms++;
    /* keep the load factor under 1/2 */
    if (s->n_terms * 2 > s->slot_cap)
        return tf_grow(s);
    return RAG_OK;
}

/* Row of `tok` in the host table, or -1. */
static int64_t table_find(const cpu_state *st, const char *tok, size_t len)
{
    uint64_t h = XXH3_64bits_withSeed(tok, len, CPU_HASH_SEED);
    size_t j = mix_slot(h, st->slot_mask);
    while (st->slot_row[j]) {
        uint32_t row = st->slot_row[j] - 1;
        if (st->slot_hash[j] == h && st->tok_len[row] == len &&
            memcmp(st->tok_arena + st->tok_off[row], tok, len) == 0)
            return (int64_t)row;
        j = (j + 1) & st->slot_mask;
    }
    return -1;
}

static int on_token(void *arg, const char *tok, size_t len)
{
    scratch *s = arg;
    uint64_t key;
    if (s->st->mode == CPU_MODE_HASH) {
        key = XXH3_64bits_withSeed(tok, len, CPU_HASH_SEED);
    } else {
        int64_t row = table_find(s->st, tok, len);
        if (row < 0)
            return 0; /* out-of-vocabulary tokens are ignored */
        key = (uint64_t)row;
    }
    int rc = tf_add(s, key, tok, len);
    if (rc) {
        s->err = rc;
        return rc;
    }
    return 0;
}

/* Casefold and tokenize one text into s->terms. */
static int collect_terms(scratch *s, const char *text, size_t len)
{
    scratch_next_text(s);
    s->err = 0;
    /* ASCII fast path: for pure ASCII, NFKC casefold is exactly A-Z -> a-z (ASCII has no
     * compatibility decompositions and no default-ignorable code points), and it saves the
     * utf8proc round trip and its malloc on almost every chunk. */
    size_t i = 0;
    while (i < len && (unsigned char)text[i] < 0x80)
        i++;
    if (i == len) {
        if (len + 1 > s->fold_cap) {
            size_t cap = len + 1 > 4096 ? len + 1 : 4096;
            char *nb = realloc(s->fold, cap);
            if (!nb)
                return rag_error_set(RAG_ENOMEM, "cpu embedder: out of memory");
            s->fold = nb;
            s->fold_cap = cap;
        }
        for (size_t k = 0; k < len; k++) {
            char c = text[k];
            s->fold[k] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
        }
        s->fold[len] = 0;
        int rc = rag_tokenize(s->fold, len, 0, on_token, s);
        if (s->err)
            return rag_error_set(s->err, "cpu embedder: out of memory counting terms");
        return rc;
    }
    char *folded = NULL, *repaired = NULL;
    size_t flen = 0;
    int rc = rag_utf8_nfkc_casefold(text, len, &folded, &flen);
    if (rc == RAG_EUTF8) {
        /* Providers get NFC text, but stay total on bad input: embed the repaired text
         * (deterministic) rather than failing the whole batch. */
        size_t rlen = 0;
        rc = rag_utf8_repair(text, len, &repaired, &rlen);
        if (rc == RAG_OK)
            rc = rag_utf8_nfkc_casefold(repaired, rlen, &folded, &flen);
        free(repaired);
    }
    if (rc)
        return rc;
    rc = rag_tokenize(folded, flen, 0, on_token, s);
    free(folded);
    if (s->err)
        return rag_error_set(s->err, "cpu embedder: out of memory counting terms");
    return rc;
}

static void finish_vector(scratch *s, float *out)
{
    const cpu_state *st = s->st;
    unsigned int dim = st->dim;
    double *acc = s->acc;
    memset(acc, 0, (size_t)dim * sizeof *acc);
    if (st->mode == CPU_MODE_HASH) {
        for (size_t i = 0; i < s->n_terms; i++) {
            if (s->terms[i].stop)
                continue;
            uint64_t h = s->terms[i].key;
            double w = tf_weight(s->terms[i].count);
            acc[h % dim] += (h >> 63) ? -w : w;
        }
    } else {
        for (size_t i = 0; i < s->n_terms; i++) {
            if (s->terms[i].stop)
                continue;
            double w = tf_weight(s->terms[i].count);
            const float *row = st->rows + (size_t)s->terms[i].key * dim;
            for (unsigned int d = 0; d < dim; d++)
                acc[d] += w * (double)row[d];
        }
    }
    double norm = 0;
    for (unsigned int d = 0; d < dim; d++)
        norm += acc[d] * acc[d];
    if (norm > 0) {
        double inv = 1.0 / sqrt(norm);
        for (unsigned int d = 0; d < dim; d++)
            out[d] = (float)(acc[d] * inv);
    } else {
        /* no known term: the zero vector (scores 0 against everything) */
        memset(out, 0, (size_t)dim * sizeof *out);
    }
}

static int cpu_embed(void *state, const char *const *texts, const size_t *lens, size_t n,
                     float *out)
{
    const cpu_state *st = state;
    if (!st || (n && (!texts || !lens || !out)))
        return rag_error_set(RAG_EINVAL, "cpu embedder: NULL argument");
    scratch s;
    int rc = scratch_init(&s, st);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == RAG_OK; i++) {
        float *row = out + i * (size_t)st->dim;
        if (!texts[i] && lens[i]) {
            rc = rag_error_set(RAG_EINVAL, "cpu embedder: text %zu is NULL", i);
            break;
        }
        rc = collect_terms(&s, texts[i] ? texts[i] : "", lens[i]);
        if (rc == RAG_OK)
            finish_vector(&s, row);
    }
    scratch_free(&s);
    return rc;
}

/* ---- the embedding-bag description (version-2 `bag` slot) ------------------------------- */

/* The terms cpu_embed sums, one per distinct non-stopword token in first-occurrence order:
 * hash mode (bucket h % dim, +-tf weight with the sign from the top bit of h), table mode
 * (row, tf weight).  Summing weight (or weight * row) in double in this order and
 * normalising as finish_vector does gives cpu_embed's vectors; the only difference is that
 * the weight is handed over as a float (a relative 6e-8 at most, ~1e-7 on a component).
 * Buckets are not merged: two tokens hitting one bucket are two terms, as in finish_vector. */
static int cpu_featurize(void *fstate, const char *const *texts, const size_t *lens, size_t n,
                         uint32_t *index, float *weight, size_t cap, size_t *offsets,
                         size_t *needed)
{
    const cpu_state *st = fstate;
    if (!st || !offsets || (n && (!texts || !lens)) || (cap && (!index || !weight)))
        return rag_error_set(RAG_EINVAL, "cpu featurize: NULL argument");
    scratch s;
    int rc = scratch_init(&s, st);
    if (rc)
        return rc;
    /* Keep counting past `cap` so that ETOOBIG reports the exact capacity needed. */
    size_t total = 0;
    offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (!texts[i] && lens[i]) {
            rc = rag_error_set(RAG_EINVAL, "cpu featurize: text %zu is NULL", i);
            break;
        }
        rc = collect_terms(&s, texts[i] ? texts[i] : "", lens[i]);
        if (rc)
            break;
        for (size_t k = 0; k < s.n_terms; k++) {
            const tf_term *t = &s.terms[k];
            if (t->stop)
                continue;
            if (total < cap) {
                double w = tf_weight(t->count);
                if (st->mode == CPU_MODE_HASH) {
                    index[total] = (uint32_t)(t->key % st->dim);
                    weight[total] = (float)((t->key >> 63) ? -w : w);
                } else {
                    index[total] = (uint32_t)t->key;
                    weight[total] = (float)w;
                }
            }
            total++;
        }
        offsets[i + 1] = total;
    }
    scratch_free(&s);
    if (rc)
        return rc;
    if (total > cap) {
        if (needed)
            *needed = total;
        return rag_error_set(RAG_ETOOBIG, "cpu featurize: %zu terms, capacity %zu", total, cap);
    }
    return RAG_OK;
}

static int cpu_bag(void *state, rag_embed_bag *out)
{
    cpu_state *st = state;
    if (!st || !out)
        return RAG_EINVAL;
    memset(out, 0, sizeof *out);
    out->kind = st->mode == CPU_MODE_HASH ? RAG_EMBED_BAG_HASH : RAG_EMBED_BAG_TABLE;
    out->dim = st->dim;
    out->rows = st->mode == CPU_MODE_TABLE ? st->rows : NULL;
    out->n_rows = st->mode == CPU_MODE_TABLE ? st->n_rows : 0;
    out->featurize_state = st;
    out->featurize = cpu_featurize;
    return RAG_OK;
}

static int cpu_fingerprint(void *state, char *buf, size_t size)
{
    const cpu_state *st = state;
    if (!st || !buf)
        return RAG_EINVAL;
    size_t n = strlen(st->fingerprint);
    if (n + 1 > size)
        return RAG_EINVAL;
    memcpy(buf, st->fingerprint, n + 1);
    return RAG_OK;
}

static void cpu_free(void *state)
{
    cpu_state *st = state;
    if (!st)
        return;
    free(st->rows);
    free(st->tok_arena);
    free(st->tok_off);
    free(st->tok_len);
    free(st->slot_row);
    free(st->slot_hash);
    free(st);
}

static void fill_vtable(rag_embed_provider *out, cpu_state *st)
{
    rag_embed_provider_init(out, RAG_EMBED_PROVIDER_VERSION);
    out->state = st;
    out->dim = st->dim;
    out->flags = 0; /* immutable state: safe to call concurrently */
    out->max_batch = 0;
    out->embed = cpu_embed;
    out->fingerprint = cpu_fingerprint;
    out->free = cpu_free;
    out->bag = cpu_bag;
}

int rag_embed_cpu_hash_init(rag_embed_provider *out, unsigned int dim)
{
    if (!out)
        return rag_error_set(RAG_EINVAL, "rag_embed_cpu_hash_init: out is NULL");
    if (dim == 0)
        dim = CPU_DIM_DEFAULT;
    if (dim < CPU_DIM_MIN || dim > CPU_DIM_MAX)
        return rag_error_set(RAG_EINVAL, "cpu hash embedder: dim %u outside %u..%u", dim,
                             CPU_DIM_MIN, CPU_DIM_MAX);
    cpu_state *st = calloc(1, sizeof *st);
    if (!st)
        return rag_error_set(RAG_ENOMEM, "cpu hash embedder: out of memory");
    st->mode = CPU_MODE_HASH;
    st->dim = dim;
    snprintf(st->fingerprint, sizeof st->fingerprint, "ragcore-cpu-hash-v1-d%u", dim);
    fill_vtable(out, st);
    return RAG_OK;
}

/* XXH3-64 of the table as given (dimension, tokens with lengths, rows as little-endian IEEE
 * floats), so that the fingerprint changes whenever any vector could. */
static int table_digest(const char *const *tokens, const size_t *tlen, size_t n,
                        const float *rows, unsigned int dim, uint64_t *out)
{
    XXH3_state_t *x = XXH3_createState();
    if (!x)
        return RAG_ENOMEM;
    XXH3_64bits_reset_withSeed(x, CPU_HASH_SEED);
    uint8_t hdr[12];
    uint64_t n64 = n;
    for (int i = 0; i < 4; i++)
        hdr[i] = (uint8_t)(dim >> (8 * i));
    for (int i = 0; i < 8; i++)
        hdr[4 + i] = (uint8_t)(n64 >> (8 * i));
    XXH3_64bits_update(x, hdr, sizeof hdr);
    for (size_t i = 0; i < n; i++) {
        uint8_t l[4];
        for (int k = 0; k < 4; k++)
            l[k] = (uint8_t)(tlen[i] >> (8 * k));
        XXH3_64bits_update(x, l, 4);
        XXH3_64bits_update(x, tokens[i], tlen[i]);
    }
    size_t total = n * (size_t)dim;
    uint8_t chunk[4096];
    size_t fill = 0;
    for (size_t i = 0; i < total; i++) {
        uint32_t u;
        memcpy(&u, &rows[i], 4);
        chunk[fill++] = (uint8_t)u;
        chunk[fill++] = (uint8_t)(u >> 8);
        chunk[fill++] = (uint8_t)(u >> 16);
        chunk[fill++] = (uint8_t)(u >> 24);
        if (fill == sizeof chunk) {
            XXH3_64bits_update(x, chunk, fill);
            fill = 0;
        }
    }
    if (fill)
        XXH3_64bits_update(x, chunk, fill);
    *out = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    return RAG_OK;
}

int rag_embed_cpu_table_init(rag_embed_provider *out, const char *const *tokens,
                             size_t n_tokens, const float *rows, unsigned int dim,
                             const char *name)
{
    if (!out || !tokens || !rows)
        return rag_error_set(RAG_EINVAL, "rag_embed_cpu_table_init: NULL argument");
    if (n_tokens == 0 || n_tokens >= UINT32_MAX)
        return rag_error_set(RAG_EINVAL, "cpu table embedder: %zu tokens (need 1..%u)", n_tokens,
                             UINT32_MAX - 1);
    if (dim == 0 || dim > CPU_TABLE_DIM_MAX)
        return rag_error_set(RAG_EINVAL, "cpu table embedder: dim %u outside 1..%u", dim,
                             CPU_TABLE_DIM_MAX);
    if (n_tokens > SIZE_MAX / sizeof(float) / dim)
        return rag_error_set(RAG_ETOOBIG, "cpu table embedder: table too large");
    size_t total = n_tokens * (size_t)dim;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(rows[i]))
            return rag_error_set(RAG_EINVAL, "cpu table embedder: row %zu has a non-finite value",
                                 i / dim);

    cpu_state *st = calloc(1, sizeof *st);
    if (!st)
        return rag_error_set(RAG_ENOMEM, "cpu table embedder: out of memory");
    st->mode = CPU_MODE_TABLE;
    st->dim = dim;
    st->n_rows = n_tokens;
    size_t arena = 0, cap = 16;
    while (cap < n_tokens * 2)
        cap *= 2;
    st->slot_mask = cap - 1;
    st->tok_off = malloc(n_tokens * sizeof *st->tok_off);
    st->tok_len = malloc(n_tokens * sizeof *st->tok_len);
    st->slot_row = calloc(cap, sizeof *st->slot_row);
    st->slot_hash = calloc(cap, sizeof *st->slot_hash);
    st->rows = malloc(total * sizeof *st->rows);
    size_t *tlen = malloc(n_tokens * sizeof *tlen);
    int rc = RAG_OK;
    if (!st->tok_off || !st->tok_len || !st->slot_row || !st->slot_hash || !st->rows || !tlen) {
        rc = rag_error_set(RAG_ENOMEM, "cpu table embedder: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_tokens; i++) {
        if (!tokens[i]) {
            rc = rag_error_set(RAG_EINVAL, "cpu table embedder: token %zu is NULL", i);
            goto fail;
        }
        tlen[i] = strlen(tokens[i]);
        if (tlen[i] > UINT32_MAX) {
            rc = rag_error_set(RAG_EINVAL, "cpu table embedder: token %zu too long", i);
            goto fail;
        }
        arena += tlen[i] + 1;
    }
    st->tok_arena = malloc(arena ? arena : 1);
    if (!st->tok_arena) {
        rc = rag_error_set(RAG_ENOMEM, "cpu table embedder: out of memory");
        goto fail;
    }
    memcpy(st->rows, rows, total * sizeof *st->rows);
    size_t off = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        memcpy(st->tok_arena + off, tokens[i], tlen[i] + 1);
        st->tok_off[i] = off;
        st->tok_len[i] = (uint32_t)tlen[i];
        off += tlen[i] + 1;
        /* A repeated token keeps its first row (later duplicates are unreachable). */
        if (table_find(st, tokens[i], tlen[i]) >= 0)
            continue;
        uint64_t h = XXH3_64bits_withSeed(tokens[i], tlen[i], CPU_HASH_SEED);
        size_t j = mix_slot(h, st->slot_mask);
        while (st->slot_row[j])
            j = (j + 1) & st->slot_mask;
        st->slot_row[j] = (uint32_t)i + 1;
        st->slot_hash[j] = h;
    }

    uint64_t digest = 0;
    if (table_digest(tokens, tlen, n_tokens, rows, dim, &digest) != RAG_OK) {
        rc = rag_error_set(RAG_ENOMEM, "cpu table embedder: out of memory");
        goto fail;
    }
    /* The name goes into the fingerprint verbatim, cut on a UTF-8 boundary so that the
     * fingerprint always fits RAG_EMBED_FINGERPRINT_MAX. */
    const char *nm = (name && *name) ? name : "custom";
    size_t nl = strlen(nm);
    if (nl > CPU_TABLE_NAME_MAX) {
        nl = CPU_TABLE_NAME_MAX;
        while (nl > 0 && ((unsigned char)nm[nl] & 0xC0) == 0x80)
            nl--;
    }
    snprintf(st->fingerprint, sizeof st->fingerprint, "ragcore-cpu-table-v1-%.*s-d%u-%016llx",
             (int)nl, nm, dim, (unsigned long long)digest);
    free(tlen);
    fill_vtable(out, st);
    return RAG_OK;

fail:
    free(tlen);
    cpu_free(st);
    return rc;
}

void rag_embed_provider_release(rag_embed_provider *p)
{
    if (!p)
        return;
    if (p->free && p->state)
        p->free(p->state);
    memset(p, 0, sizeof *p);
}
