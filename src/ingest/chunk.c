/*
 * Content-defined chunking.
 *
 * The parsed blocks are cut into units (sentences; lines of code; headings whole); a unit
 * longer than a chunk can hold is split at whitespace (at a UTF-8 boundary as last resort).
 * Chunks are then formed in four steps:
 *
 *   1. every boundary between units gets a score from a hash of the last bytes before it,
 *      scaled by the length of the unit it closes (paragraph ends weigh 3x sentence ends; the
 *      end of a heading is never a cut; the start of a heading always is);
 *   2. boundaries scoring below 1 cut the text into segments (about `target` bytes apart);
 *   3. a segment above `max` is split at its strongest boundaries;
 *   4. a segment below `min` joins a neighbour (or the pair is re-cut so both halves reach
 *      `min`).
 *
 * Whether a boundary is selected depends only on the bytes right before it, never on where
 * the previous cut fell, so an edit changes the chunks around it and not every later one: on
 * a 100 KB document a word edit changes one chunk (rarely two), a rewritten paragraph one to
 * three.  `overlap` bytes of the previous chunk may be prepended; the result still fits `max`.
 */
#include <stdlib.h>
#include <string.h>

#include "ingest_internal.h"

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

typedef struct unit {
    size_t blk;
    size_t start, trim, full; /* [start, start+trim) text, [start, start+full) with trailing ws */
    unsigned block_start : 1, block_end : 1, heading : 1;
} unit;

typedef struct units {
    unit *u;
    size_t n, cap;
} units;

static int push_unit(units *us, size_t blk, size_t start, size_t full, const char *text,
                     int block_start)
{
    if (us->n == us->cap) {
        size_t cap = us->cap ? us->cap * 2 : 256;
        unit *u = realloc(us->u, cap * sizeof *u);
        if (!u)
            return rag_error_set(RAG_ENOMEM, "out of memory chunking");
        us->u = u;
        us->cap = cap;
    }
    /* Leading whitespace (indentation of a code line, a blank line) belongs to the gap after
     * the previous unit of the block, so that no chunk starts with whitespace. */
    size_t lead = 0;
    while (lead < full && is_ws((unsigned char)text[start + lead]))
        lead++;
    if (lead && !block_start && us->n && us->u[us->n - 1].blk == blk) {
        us->u[us->n - 1].full += lead;
        start += lead;
        full -= lead;
        if (!full)
            return RAG_OK;
    }
    size_t trim = full;
    while (trim && is_ws((unsigned char)text[start + trim - 1]))
        trim--;
    unit *u = &us->u[us->n++];
    memset(u, 0, sizeof *u);
    u->blk = blk;
    u->start = start;
    u->trim = trim;
    u->full = full;
    u->block_start = block_start ? 1 : 0;
    return RAG_OK;
}

/* Add [start, end) of block `blk`, split into pieces of at most `limit` bytes: at the last
 * whitespace in the second half of the window, else at a UTF-8 boundary.  The split depends
 * only on the unit's own bytes. */
static int add_span(units *us, const rag_ingest_block *b, size_t blk, size_t start, size_t end,
                    size_t limit, int *first)
{
    const char *t = b->text;
    while (start < end) {
        size_t n = end - start;
        if (n > limit) {
            size_t cut = 0;
            for (size_t i = start + limit; i > start + limit / 2; i--) {
                if (is_ws((unsigned char)t[i - 1])) {
                    cut = i;
                    break;
                }
            }
            if (!cut) {
                cut = start + limit;
                while (cut > start + 1 && ((unsigned char)t[cut] & 0xC0) == 0x80)
                    cut--;
            }
            /* take the whitespace run after the cut along with the piece */
            while (cut < end && is_ws((unsigned char)t[cut]) && cut - start < limit)
                cut++;
            n = cut - start;
        }
        int rc = push_unit(us, blk, start, n, t, *first);
        if (rc)
            return rc;
        *first = 0;
        start += n;
    }
    return RAG_OK;
}

/* Length of a sentence terminator at t[i] ("." "!" "?" and their CJK full-width forms);
 * `ascii` says whether whitespace must follow for it to count. */
static size_t terminator(const char *t, size_t i, size_t len, int *ascii)
{
    unsigned char c = (unsigned char)t[i];
    *ascii = 1;
    if (c == '.' || c == '!' || c == '?')
        return 1;
    if (i + 3 <= len) {
        *ascii = 0;
        if (!memcmp(t + i, "\xE3\x80\x82", 3) || !memcmp(t + i, "\xEF\xBC\x81", 3) ||
            !memcmp(t + i, "\xEF\xBC\x9F", 3))
            return 3;
        *ascii = 1;
        if (!memcmp(t + i, "\xE2\x80\xA6", 3)) /* ellipsis */
            return 3;
    }
    return 0;
}

static size_t closer(const char *t, size_t i, size_t len)
{
    unsigned char c = (unsigned char)t[i];
    if (c == '"' || c == '\'' || c == ')' || c == ']')
        return 1;
    if (i + 3 <= len && (!memcmp(t + i, "\xE2\x80\x9D", 3) || !memcmp(t + i, "\xE2\x80\x99", 3)))
        return 3;
    if (i + 2 <= len && !memcmp(t + i, "\xC2\xBB", 2))
        return 2;
    return 0;
}

static int segment_block(units *us, const rag_ingest_block *b, size_t blk, size_t limit)
{
    const char *t = b->text;
    size_t len = b->len, start = 0;
    int first = 1, rc = RAG_OK;
    size_t before = us->n;
    if (b->kind == RAG_BLOCK_HEADING) {
        rc = add_span(us, b, blk, 0, len, limit, &first);
    } else if (b->kind == RAG_BLOCK_CODE) {
        for (size_t i = 0; i < len && !rc; i++) {
            if (t[i] == '\n') {
                rc = add_span(us, b, blk, start, i + 1, limit, &first);
                start = i + 1;
            }
        }
        if (!rc && start < len)
            rc = add_span(us, b, blk, start, len, limit, &first);
    } else {
        size_t i = 0;
        while (i < len && !rc) {
            int ascii;
            size_t tl = terminator(t, i, len, &ascii);
            if (!tl) {
                i++;
                continue;
            }
            size_t j = i + tl, cl;
            while (j < len && (cl = closer(t, j, len)) != 0)
                j += cl;
            if (ascii && (j >= len || !is_ws((unsigned char)t[j]))) {
                i = j;
                continue;
            }
            while (j < len && is_ws((unsigned char)t[j]))
                j++;
            rc = add_span(us, b, blk, start, j, limit, &first);
            start = i = j;
        }
        if (!rc && start < len)
            rc = add_span(us, b, blk, start, len, limit, &first);
    }
    if (!rc && us->n > before) {
        us->u[us->n - 1].block_end = 1;
        if (b->kind == RAG_BLOCK_HEADING)
            for (size_t k = before; k < us->n; k++)
                us->u[k].heading = 1;
    }
    return rc;
}

/* ---- cut decision --------------------------------------------------------------------- */

/* Fingerprint of a boundary: the last bytes before it.  Only an edit touching those bytes
 * changes whether the boundary is selected: not an edit elsewhere in the sentence, and not a
 * rewrite of whatever follows (which would otherwise move the cut in front of an edited
 * paragraph and spill the change into the chunk before it). */
#define FP_BYTES 32

static uint64_t boundary_hash(const rag_ingest_parsed *doc, const unit *prev)
{
    size_t a = prev->trim < FP_BYTES ? prev->trim : FP_BYTES;
    uint8_t h[16];
    rag_hash128(doc->blocks[prev->blk].text + prev->start + prev->trim - a, a, h);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | h[i];
    return v;
}

/* Chance per byte of the unit before a boundary: a paragraph end is a better place to cut
 * than a sentence end; the end of a heading is never one. */
#define W_SENTENCE 1.0
#define W_PARAGRAPH 3.0

/* Score of the boundary between `prev` and `next`: below 1.0 selects it; lower is a stronger
 * boundary (used to split a run too long for one chunk). */
static double boundary_score(const rag_ingest_parsed *doc, const unit *prev, const unit *next,
                             double rate)
{
    if (prev->heading || !prev->trim || !next->trim)
        return 1e300;
    double w = prev->block_end ? W_PARAGRAPH : W_SENTENCE;
    double p = w * (double)prev->trim * rate;
    double x = (double)(boundary_hash(doc, prev) >> 11) * (1.0 / 9007199254740992.0);
    return x / p;
}

/* ---- assembly ------------------------------------------------------------------------- */

typedef struct range {
    size_t first, last; /* unit indexes, inclusive */
} range;

static int build_text(const rag_ingest_parsed *doc, const units *us, range r, const char *prefix,
                      size_t prefix_len, rag_ingest_chunk *out)
{
    size_t cap = prefix_len + 1 + 1;
    for (size_t k = r.first; k <= r.last; k++)
        cap += us->u[k].full + 2;
    char *s = malloc(cap);
    if (!s)
        return rag_error_set(RAG_ENOMEM, "out of memory chunking");
    size_t w = 0;
    if (prefix_len) {
        memcpy(s, prefix, prefix_len);
        w = prefix_len;
        s[w++] = ' ';
    }
    for (size_t k = r.first; k <= r.last; k++) {
        const unit *u = &us->u[k];
        if (k > r.first && u->blk != us->u[k - 1].blk) {
            while (w && is_ws((unsigned char)s[w - 1]))
                w--;
            s[w++] = '\n';
            s[w++] = '\n';
        }
        memcpy(s + w, doc->blocks[u->blk].text + u->start, u->full);
        w += u->full;
    }
    while (w && is_ws((unsigned char)s[w - 1]))
        w--;
    s[w] = 0;
    out->text = s;
    out->len = w;
    return RAG_OK;
}

void rag_ingest__chunks_clear(rag_ingest_chunks *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        free(c->items[i].text);
    free(c->items);
    memset(c, 0, sizeof *c);
}

/* Byte offsets of each unit in the chunk text it would be part of: size(a..b) =
 * end[b] - pos[a], whatever chunk the units end up in (separators are local). */
typedef struct layout {
    size_t *pos, *end;
    double *score;     /* score of the boundary before unit k (k >= 1) */
} layout;

static size_t span(const layout *L, size_t a, size_t b) { return L->end[b] - L->pos[a]; }

/* Where to split units [a, b]: at the strongest inner boundary, preferring one that leaves
 * both sides within [min, maxb], then both at least min, then both at most maxb with the left
 * side at least min, then both at most maxb.  (The third class matters when no split gives both
 * sides min: the right side is the one that can still merge with what follows, or is the last
 * chunk, so a short left side would be a chunk below min that nothing ever fixes: fuzz_utf8
 * found "80 bytes + 1522 bytes" where "1479 + 124" was possible.) */
static size_t best_split(const layout *L, size_t a, size_t b, size_t min, size_t maxb)
{
    size_t best = a + 1;
    int best_class = -1;
    double best_score = 0;
    for (size_t k = a + 1; k <= b; k++) {
        size_t left = span(L, a, k - 1), right = span(L, k, b);
        int lo = left >= min && right >= min, hi = left <= maxb && right <= maxb;
        int cls = lo && hi ? 4 : lo ? 3 : hi && left >= min ? 2 : hi ? 1 : 0;
        if (cls > best_class || (cls == best_class && L->score[k] < best_score)) {
            best = k;
            best_class = cls;
            best_score = L->score[k];
        }
    }
    return best;
}

/* Append `r` to the output, split at its strongest boundaries while it exceeds maxb.  (Cutting
 * such a run at every boundary of a lower selection level instead was tried: it makes many
 * small pieces whose merging travels further after an edit.) */
static void emit(const layout *L, range r, size_t min, size_t maxb, range *stack, range *rs,
                 size_t *nr)
{
    size_t sp = 0;
    stack[sp++] = r;
    while (sp) {
        range x = stack[--sp];
        if (x.first == x.last || span(L, x.first, x.last) <= maxb) {
            rs[(*nr)++] = x;
            continue;
        }
        size_t c;
        if (span(L, x.first, x.last) > 4 * maxb) {
            /* A very long run (repetitive text whose boundaries all hash alike): cut the
             * strongest boundary within the first chunk's reach, keeping the work linear. */
            c = 0;
            size_t furthest = 0;
            double best = 0;
            for (size_t k = x.first + 1; k <= x.last; k++) {
                size_t left = span(L, x.first, k - 1);
                if (left > maxb)
                    break;
                furthest = k;
                if (left >= min && (!c || L->score[k] < best)) {
                    c = k;
                    best = L->score[k];
                }
            }
            if (!c)
                c = furthest;
            if (!c)
                c = x.first + 1;
        } else {
            c = best_split(L, x.first, x.last, min, maxb);
        }
        stack[sp++] = (range){c, x.last};
        stack[sp++] = (range){x.first, c - 1};
    }
}

int rag_ingest__chunk(const rag_ingest_parsed *doc, const rag_ingest_chunk_cfg *cfg,
                      rag_ingest_chunks *out)
{
    memset(out, 0, sizeof *out);
    size_t overlap = cfg->overlap;
    if (overlap && overlap + 1 > cfg->max / 2)
        overlap = cfg->max / 2 > 1 ? cfg->max / 2 - 1 : 0;
    /* room for the chunk itself once the overlap and its separating space are prepended */
    size_t maxb = cfg->max - (overlap ? overlap + 1 : 0);
    size_t min = cfg->min < maxb ? cfg->min : maxb;
    size_t target = cfg->target < min ? min : cfg->target > maxb ? maxb : cfg->target;
    /* Units no longer than maxb - min - 2 always fit next to a chunk still below min. */
    size_t limit = maxb > min + 2 ? maxb - min - 2 : 0;
    if (limit < maxb / 4)
        limit = maxb / 4;
    if (limit < 4)
        limit = 4;
    /* Selected boundaries are about 1 / (rate * mean weight) bytes apart; with headings and
     * the merging of short runs this lands the mean chunk near `target` on prose. */
    double rate = 1.0 / ((double)target * 1.4);

    units us = {0};
    int rc = RAG_OK;
    for (size_t i = 0; i < doc->count && !rc; i++)
        rc = segment_block(&us, &doc->blocks[i], i, limit);
    size_t n = us.n;

    layout L = {0};
    range *segs = NULL, *stack = NULL, *rs = NULL;
    size_t nseg = 0, nr = 0;
    if (!rc && n) {
        L.pos = malloc(n * sizeof *L.pos);
        L.end = malloc(n * sizeof *L.end);
        L.score = malloc(n * sizeof *L.score);
        segs = malloc(n * sizeof *segs);
        stack = malloc(n * sizeof *stack);
        rs = malloc(n * sizeof *rs);
        if (!L.pos || !L.end || !L.score || !segs || !stack || !rs)
            rc = rag_error_set(RAG_ENOMEM, "out of memory chunking");
    }
    if (!rc && n) {
        /* 1. layout and boundary scores: purely local */
        L.pos[0] = 0;
        L.score[0] = 0;
        for (size_t k = 0; k < n; k++) {
            const unit *u = &us.u[k];
            if (k) {
                const unit *p = &us.u[k - 1];
                L.pos[k] = L.end[k - 1] + (u->block_start ? 2 : p->full - p->trim);
                L.score[k] = u->heading && u->block_start ? -1.0 /* before a heading */
                                                          : boundary_score(doc, p, u, rate);
            }
            L.end[k] = L.pos[k] + u->trim;
        }
        /* 2. segments between the content-selected boundaries; 3. a segment that does not
         * fit is split at its strongest boundaries */
        size_t first = 0;
        for (size_t k = 1; k <= n; k++) {
            if (k == n || L.score[k] < 1.0) {
                emit(&L, (range){first, k - 1}, min, maxb, stack, segs, &nseg);
                first = k;
            }
        }
        /* 4. a segment below min joins a neighbour: the previous one when the next starts a
         * section, else the next one; when neither fits, the pair is cut again where both
         * halves hold at least min.  Each step looks at neighbours only. */
        range cur = segs[0];
        for (size_t i = 1; i < nseg; i++) {
            range nx = segs[i];
            if (span(&L, cur.first, cur.last) >= min) {
                rs[nr++] = cur;
                cur = nx;
                continue;
            }
            int nx_heading = L.score[nx.first] < 0;
            int fits_prev = nr && span(&L, rs[nr - 1].first, cur.last) <= maxb;
            int fits_next = span(&L, cur.first, nx.last) <= maxb;
            if (fits_prev && (nx_heading || !fits_next)) {
                rs[nr - 1].last = cur.last;
                cur = nx;
            } else if (fits_next) {
                cur.last = nx.last;
            } else {
                size_t c = best_split(&L, cur.first, nx.last, min, maxb);
                emit(&L, (range){cur.first, c - 1}, min, maxb, stack, rs, &nr);
                cur = (range){c, nx.last};
            }
        }
        if (nr && span(&L, cur.first, cur.last) < min) {
            range pv = rs[nr - 1];
            if (span(&L, pv.first, cur.last) <= maxb) {
                rs[nr - 1].last = cur.last;
            } else {
                size_t c = best_split(&L, pv.first, cur.last, min, maxb);
                nr--;
                emit(&L, (range){pv.first, c - 1}, min, maxb, stack, rs, &nr);
                emit(&L, (range){c, cur.last}, min, maxb, stack, rs, &nr);
            }
        } else {
            emit(&L, cur, min, maxb, stack, rs, &nr);
        }
    }
    if (!rc && nr) {
        out->items = calloc(nr, sizeof *out->items);
        if (!out->items)
            rc = rag_error_set(RAG_ENOMEM, "out of memory chunking");
    }
    for (size_t i = 0; i < nr && !rc; i++) {
        if (overlap && i) {
            /* the last `overlap` bytes of the previous chunk, starting at a word */
            rag_ingest_chunk base;
            rc = build_text(doc, &us, rs[i - 1], NULL, 0, &base);
            if (rc)
                break;
            size_t from = base.len > overlap ? base.len - overlap : 0;
            size_t j = from;
            while (j < base.len && !is_ws((unsigned char)base.text[j]))
                j++;
            if (from && j < base.len)
                from = j;
            while (from < base.len && (((unsigned char)base.text[from] & 0xC0) == 0x80 ||
                                      is_ws((unsigned char)base.text[from])))
                from++;
            char *p = rag_strndup(base.text + from, base.len - from);
            free(base.text);
            if (!p) {
                rc = rag_error_set(RAG_ENOMEM, "out of memory chunking");
                break;
            }
            rc = build_text(doc, &us, rs[i], p, strlen(p), &out->items[i]);
            free(p);
        } else {
            rc = build_text(doc, &us, rs[i], NULL, 0, &out->items[i]);
        }
        if (!rc)
            out->count++;
    }
    free(L.pos);
    free(L.end);
    free(L.score);
    free(segs);
    free(stack);
    free(rs);
    free(us.u);
    if (rc)
        rag_ingest__chunks_clear(out);
    return rc;
}
