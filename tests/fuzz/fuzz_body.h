/*
 * The bodies of the ingest fuzz targets, shared by the libFuzzer executables (tests/fuzz/
 * fuzz_*.c, clang) and the cmocka replay of the corpus and regression inputs
 * (tests/ingest/test_fuzz_regressions.c, every build), so a crashing input kept under
 * tests/fuzz/regressions/ is checked by exactly the code that found it.
 *
 * Each body feeds arbitrary bytes to one entry point and checks what the library documents
 * about the result (ingest_internal.h, rag_text.h): parser blocks are non-empty, trimmed,
 * NFC, valid UTF-8 without control characters; chunks respect the configured bounds and
 * keep every non-space byte of the text; the UTF-8 helpers agree with an independent
 * reference validator and are idempotent where they promise normal forms.
 *
 * A broken promise calls FUZZ_FAIL(fmt, ...), which the includer may define (the cmocka test
 * turns it into a test failure naming the input file); the default prints and aborts, which
 * libFuzzer reports as a crash and saves the input.
 *
 * Needs RAG_MODULE_INGEST and the include directories src/ingest, src/common, include.
 */
#ifndef RAG_FUZZ_BODY_H
#define RAG_FUZZ_BODY_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_internal.h"
#include "rag_common.h"
#include "rag_text.h"

#ifndef FUZZ_FAIL
#define FUZZ_FAIL(...)                                                                           \
    do {                                                                                         \
        fprintf(stderr, "fuzz: %s:%d: ", __FILE__, __LINE__);                                    \
        fprintf(stderr, __VA_ARGS__);                                                            \
        fputc('\n', stderr);                                                                     \
        abort();                                                                                 \
    } while (0)
#endif

/* The harness's own checks must not guide the fuzzer (only library code should count as
 * coverage), so with clang >= 13 its functions are left uninstrumented. */
#if defined(__clang__) && __clang_major__ >= 13
#define FUZZ_HARNESS __attribute__((no_sanitize("coverage")))
#else
#define FUZZ_HARNESS
#endif

#define FUZZ_CHECK(cond, ...)                                                                    \
    do {                                                                                         \
        if (!(cond))                                                                             \
            FUZZ_FAIL("check failed: " #cond ": " __VA_ARGS__);                                  \
    } while (0)

/* The ingest defaults (rag.h: chunk_target 800, chunk_min 200, chunk_max 1600, no overlap). */
static const rag_ingest_chunk_cfg FUZZ_CHUNK_CFG = {800, 200, 1600, 0};

/* ---- reference UTF-8 (Unicode table 3-7), independent of text.c and utf8proc ------------- */

/* Length of the well-formed sequence at s[0..n), or 0 when it is not well formed. */
FUZZ_HARNESS static inline size_t fuzz_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    uint32_t v = need == 2 ? c & 0x1Fu : need == 3 ? c & 0x0Fu : c & 0x07u;
    for (size_t i = 1; i < need; i++)
        v = v << 6 | (s[i] & 0x3Fu);
    *cp = v;
    return need;
}

/* Length of the maximal subpart of the ill-formed sequence at s[0..n) (Unicode ch. 3, "U+FFFD
 * substitution of maximal subparts"): the longest prefix that could still begin a well-formed
 * sequence, at least one byte.  rag_utf8_repair replaces each with one U+FFFD. */
FUZZ_HARNESS static inline size_t fuzz_utf8_subpart(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 1;
    size_t k = 1;
    while (k < need && k < n) {
        unsigned char t = s[k];
        if (k == 1 ? (t < lo || t > hi) : (t & 0xC0) != 0x80)
            break;
        k++;
    }
    return k;
}

/* Offset of the first ill-formed byte, or len when the whole buffer is valid. */
FUZZ_HARNESS static inline size_t fuzz_utf8_first_bad(const char *s, size_t len)
{
    size_t off = 0;
    while (off < len) {
        uint32_t cp;
        size_t n = fuzz_utf8_seq((const unsigned char *)s + off, len - off, &cp);
        if (!n)
            return off;
        off += n;
    }
    return len;
}

FUZZ_HARNESS static inline int fuzz_is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Valid UTF-8 without C0 controls (other than \t \n), DEL or C1 controls: what
 * rag_utf8_nfc promises to leave. */
FUZZ_HARNESS static inline void fuzz_check_clean_text(const char *what, const char *s, size_t len)
{
    size_t bad = fuzz_utf8_first_bad(s, len);
    FUZZ_CHECK(bad == len, "%s: invalid UTF-8 at %zu of %zu", what, bad, len);
    size_t off = 0;
    while (off < len) {
        uint32_t cp = 0;
        size_t n = fuzz_utf8_seq((const unsigned char *)s + off, len - off, &cp);
        FUZZ_CHECK((cp >= 0x20 || cp == '\n' || cp == '\t') && cp != 0x7F &&
                       !(cp >= 0x80 && cp <= 0x9F),
                   "%s: control character U+%04X at byte %zu", what, (unsigned)cp, off);
        off += n;
    }
}

/* NFC is a fixed point of rag_utf8_nfc: what it returns, it returns unchanged. */
FUZZ_HARNESS static inline void fuzz_check_nfc_fixed(const char *what, const char *s, size_t len)
{
    char *again = NULL;
    size_t n = 0;
    int rc = rag_utf8_nfc(s, len, &again, &n);
    FUZZ_CHECK(rc == RAG_OK, "%s: nfc of its own output failed: %d %s", what, rc,
               rag_error_last());
    int same = n == len && !memcmp(again, s, len);
    free(again); /* before the check: the cmocka replay catches failures and must not leak */
    FUZZ_CHECK(same, "%s: not NFC-stable (%zu bytes -> %zu bytes)", what, len, n);
}

FUZZ_HARNESS static inline size_t fuzz_nonspace(const char *s, size_t n, uint64_t *sum)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (!fuzz_is_ws((unsigned char)s[i])) {
            c++;
            *sum += (unsigned char)s[i] * (uint64_t)2654435761u;
        }
    }
    return c;
}

/* ---- parsed documents and their chunks --------------------------------------------------- */

FUZZ_HARNESS static inline void fuzz_check_parsed(const rag_ingest_parsed *doc)
{
    for (size_t i = 0; i < doc->count; i++) {
        const rag_ingest_block *b = &doc->blocks[i];
        FUZZ_CHECK(b->text && b->len > 0, "block %zu is empty", i);
        FUZZ_CHECK(strlen(b->text) == b->len, "block %zu: NUL inside (%zu vs %zu)", i,
                   strlen(b->text), b->len);
        FUZZ_CHECK(!fuzz_is_ws((unsigned char)b->text[0]) &&
                       !fuzz_is_ws((unsigned char)b->text[b->len - 1]),
                   "block %zu is not trimmed", i);
        FUZZ_CHECK(b->kind == RAG_BLOCK_PARA || b->kind == RAG_BLOCK_HEADING ||
                       b->kind == RAG_BLOCK_CODE,
                   "block %zu: kind %d", i, b->kind);
        if (b->kind == RAG_BLOCK_HEADING)
            FUZZ_CHECK(b->level >= 1 && b->level <= 6, "block %zu: heading level %d", i,
                       b->level);
        else
            FUZZ_CHECK(b->level == 0, "block %zu: level %d outside a heading", i, b->level);
        fuzz_check_clean_text("block", b->text, b->len);
        fuzz_check_nfc_fixed("block", b->text, b->len);
    }
    if (doc->title) {
        size_t tl = strlen(doc->title);
        FUZZ_CHECK(tl > 0, "empty title kept");
        FUZZ_CHECK(!fuzz_is_ws((unsigned char)doc->title[0]) &&
                       !fuzz_is_ws((unsigned char)doc->title[tl - 1]),
                   "title is not trimmed");
        FUZZ_CHECK(!memchr(doc->title, '\n', tl) && !memchr(doc->title, '\t', tl),
                   "title is not one collapsed line");
        fuzz_check_clean_text("title", doc->title, tl);
    }
}

/* Run the chunker with the ingest defaults and check its documented bounds: every chunk at
 * most max bytes, non-empty, trimmed, valid UTF-8; at least min bytes unless it is the last
 * one; together the chunks hold exactly the non-space bytes of the joined text (no overlap
 * configured, so nothing is repeated or lost). */
FUZZ_HARNESS static inline void fuzz_check_chunks(const rag_ingest_parsed *doc)
{
    const rag_ingest_chunk_cfg *cfg = &FUZZ_CHUNK_CFG;
    rag_ingest_chunks ch;
    int rc = rag_ingest__chunk(doc, cfg, &ch);
    FUZZ_CHECK(rc == RAG_OK, "chunker failed: %d %s", rc, rag_error_last());
    FUZZ_CHECK((ch.count > 0) == (doc->count > 0), "%zu chunks of %zu blocks", ch.count,
               doc->count);
    uint64_t sum_chunks = 0, sum_text = 0;
    size_t ns_chunks = 0;
    for (size_t i = 0; i < ch.count; i++) {
        const rag_ingest_chunk *c = &ch.items[i];
        FUZZ_CHECK(c->text && c->len > 0, "chunk %zu of %zu is empty", i, ch.count);
        FUZZ_CHECK(c->len <= cfg->max, "chunk %zu of %zu: %zu bytes > max %zu", i, ch.count,
                   c->len, cfg->max);
        FUZZ_CHECK(i + 1 == ch.count || c->len >= cfg->min,
                   "chunk %zu of %zu: %zu bytes < min %zu", i, ch.count, c->len, cfg->min);
        FUZZ_CHECK(strlen(c->text) == c->len, "chunk %zu: NUL inside", i);
        FUZZ_CHECK(!fuzz_is_ws((unsigned char)c->text[0]) &&
                       !fuzz_is_ws((unsigned char)c->text[c->len - 1]),
                   "chunk %zu is not trimmed", i);
        size_t bad = fuzz_utf8_first_bad(c->text, c->len);
        FUZZ_CHECK(bad == c->len, "chunk %zu: invalid UTF-8 at %zu (cut inside a character)", i,
                   bad);
        ns_chunks += fuzz_nonspace(c->text, c->len, &sum_chunks);
    }
    char *joined = NULL;
    size_t jl = 0;
    rc = rag_ingest__join(doc, &joined, &jl);
    FUZZ_CHECK(rc == RAG_OK, "join failed: %d", rc);
    size_t ns_text = fuzz_nonspace(joined, jl, &sum_text);
    FUZZ_CHECK(ns_chunks == ns_text && sum_chunks == sum_text,
               "chunks hold %zu non-space bytes, the text %zu", ns_chunks, ns_text);
    free(joined);
    rag_ingest__chunks_clear(&ch);
}

/* The parser targets: bytes that are not valid UTF-8 are repaired first, as ingest does with
 * RAG_PUT_REPAIR_UTF8 (the parsers take valid UTF-8), so every input reaches the parser. */
FUZZ_HARNESS static inline void fuzz_parse_body(int fmt, const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char *repaired = NULL;
    size_t len = size;
    if (fuzz_utf8_first_bad(s, size) != size) {
        int rc = rag_utf8_repair(s, size, &repaired, &len);
        FUZZ_CHECK(rc == RAG_OK, "repair failed: %d", rc);
        s = repaired;
    }
    rag_ingest_parsed doc;
    rag_ingest__parsed_init(&doc);
    int rc = rag_ingest__parse(fmt, s, len, &doc);
    /* Malformed XML is refused, and libxml2 refuses an HTML input it cannot make a tree of;
     * anything else is a bug.  A refusal says why. */
    FUZZ_CHECK(rc == RAG_OK || rc == RAG_EPARSE, "parse returned %d: %s", rc, rag_error_last());
    if (rc == RAG_OK) {
        fuzz_check_parsed(&doc);
        fuzz_check_chunks(&doc);
    } else {
        FUZZ_CHECK(rag_error_last() && *rag_error_last(), "error %d without a detail", rc);
    }
    rag_ingest__parsed_clear(&doc);
    free(repaired);
}

FUZZ_HARNESS static inline void fuzz_html_body(const uint8_t *data, size_t size)
{
    fuzz_parse_body(RAG_FMT_HTML, data, size);
}
FUZZ_HARNESS static inline void fuzz_xml_body(const uint8_t *data, size_t size)
{
    fuzz_parse_body(RAG_FMT_XML, data, size);
}
FUZZ_HARNESS static inline void fuzz_markdown_body(const uint8_t *data, size_t size)
{
    fuzz_parse_body(RAG_FMT_MARKDOWN, data, size);
}

/* ---- UTF-8 helpers and the tokenizer ------------------------------------------------------ */

typedef struct fuzz_tokens {
    const char *base;
    size_t len;
    size_t next;     /* tokens come in order and never overlap */
    size_t count;
    size_t stop_at;  /* return 7 from this token on, to check that a nonzero stops */
    int dropping;
} fuzz_tokens;

FUZZ_HARNESS static inline int fuzz_on_token(void *arg, const char *tok, size_t len)
{
    fuzz_tokens *t = arg;
    FUZZ_CHECK(len > 0 && len <= 64, "token of %zu bytes", len);
    FUZZ_CHECK(tok >= t->base + t->next && tok + len <= t->base + t->len,
               "token outside the text or out of order");
    t->next = (size_t)(tok - t->base) + len;
    FUZZ_CHECK(fuzz_utf8_first_bad(tok, len) == len, "token cut inside a character");
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK(!fuzz_is_ws((unsigned char)tok[i]), "whitespace inside a token");
    if (t->dropping)
        FUZZ_CHECK(!rag_is_stopword(tok, len), "stopword '%.*s' not dropped", (int)len, tok);
    t->count++;
    return t->count >= t->stop_at ? 7 : 0;
}

FUZZ_HARNESS static inline void fuzz_check_tokens(const char *s, size_t len)
{
    fuzz_tokens all = {s, len, 0, 0, (size_t)-1, 0};
    int rc = rag_tokenize(s, len, 0, fuzz_on_token, &all);
    FUZZ_CHECK(rc == RAG_OK, "tokenize returned %d", rc);
    fuzz_tokens kept = {s, len, 0, 0, (size_t)-1, 1};
    rc = rag_tokenize(s, len, 1, fuzz_on_token, &kept);
    FUZZ_CHECK(rc == RAG_OK, "tokenize (stopwords dropped) returned %d", rc);
    FUZZ_CHECK(kept.count <= all.count, "dropping stopwords added tokens");
    if (all.count) {
        /* a callback's nonzero return stops the walk at once and is passed back */
        fuzz_tokens stop = {s, len, 0, 0, (all.count + 1) / 2, 0};
        rc = rag_tokenize(s, len, 0, fuzz_on_token, &stop);
        FUZZ_CHECK(rc == 7 && stop.count == stop.stop_at, "stop: rc %d after %zu tokens", rc,
                   stop.count);
    }
}

FUZZ_HARNESS static inline void fuzz_utf8_body(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t ref_bad = fuzz_utf8_first_bad(s, size);

    /* check agrees with the reference validator, offset included */
    size_t bad = (size_t)-1;
    int rc = rag_utf8_check(s, size, &bad);
    if (ref_bad == size) {
        FUZZ_CHECK(rc == RAG_OK, "valid input refused at %zu: %s", bad, rag_error_last());
    } else {
        FUZZ_CHECK(rc == RAG_EUTF8, "invalid input (byte %zu) accepted: %d", ref_bad, rc);
        FUZZ_CHECK(bad == ref_bad, "first invalid byte: reference %zu, check %zu", ref_bad, bad);
    }

    /* repair: always valid, the identity on valid input, one U+FFFD per dropped byte */
    char *rep = NULL;
    size_t rl = (size_t)-1;
    rc = rag_utf8_repair(s, size, &rep, &rl);
    FUZZ_CHECK(rc == RAG_OK, "repair failed: %d", rc);
    FUZZ_CHECK(rep[rl] == 0, "repair output not NUL-terminated");
    FUZZ_CHECK(fuzz_utf8_first_bad(rep, rl) == rl, "repair output invalid");
    FUZZ_CHECK(rag_utf8_check(rep, rl, NULL) == RAG_OK, "repair output refused by check");
    if (ref_bad == size)
        FUZZ_CHECK(rl == size && !memcmp(rep, s, size), "repair changed valid input");
    FUZZ_CHECK(rl <= 3 * size, "repair grew %zu bytes to %zu", size, rl);
    {
        /* exactly one U+FFFD per maximal subpart, everything else copied */
        char *want = malloc(3 * size + 1);
        size_t off = 0, w = 0;
        while (off < size) {
            uint32_t cp;
            size_t n = fuzz_utf8_seq((const unsigned char *)s + off, size - off, &cp);
            if (n) {
                memcpy(want + w, s + off, n);
                w += n;
                off += n;
            } else {
                memcpy(want + w, "\xEF\xBF\xBD", 3);
                w += 3;
                off += fuzz_utf8_subpart((const unsigned char *)s + off, size - off);
            }
        }
        FUZZ_CHECK(w == rl && !memcmp(want, rep, w),
                   "repair differs from the maximal-subpart reference (%zu vs %zu bytes)", rl, w);
        free(want);
    }

    /* the normalisers refuse invalid input, naming the first bad byte */
    if (ref_bad != size) {
        char *o = NULL;
        rc = rag_utf8_nfc(s, size, &o, NULL);
        FUZZ_CHECK(rc == RAG_EUTF8, "nfc of invalid UTF-8: %d", rc);
        if (rc == RAG_OK)
            free(o);
        o = NULL;
        rc = rag_utf8_nfkc_casefold(s, size, &o, NULL);
        FUZZ_CHECK(rc == RAG_EUTF8, "nfkc_casefold of invalid UTF-8: %d", rc);
        if (rc == RAG_OK)
            free(o);
    }

    /* NFC: valid, clean, a fixed point */
    char *nfc = NULL;
    size_t nl = 0;
    rc = rag_utf8_nfc(rep, rl, &nfc, &nl);
    FUZZ_CHECK(rc == RAG_OK, "nfc failed: %d %s", rc, rag_error_last());
    FUZZ_CHECK(nfc[nl] == 0, "nfc output not NUL-terminated");
    fuzz_check_clean_text("nfc", nfc, nl);
    fuzz_check_nfc_fixed("nfc", nfc, nl);

    /* NFKC casefold: valid, and a match key is its own key */
    char *key = NULL;
    size_t kl = 0;
    rc = rag_utf8_nfkc_casefold(rep, rl, &key, &kl);
    FUZZ_CHECK(rc == RAG_OK, "nfkc_casefold failed: %d %s", rc, rag_error_last());
    FUZZ_CHECK(key[kl] == 0, "casefold output not NUL-terminated");
    FUZZ_CHECK(fuzz_utf8_first_bad(key, kl) == kl, "casefold output invalid");
    char *key2 = NULL;
    size_t kl2 = 0;
    rc = rag_utf8_nfkc_casefold(key, kl, &key2, &kl2);
    FUZZ_CHECK(rc == RAG_OK, "nfkc_casefold of a key failed: %d", rc);
    FUZZ_CHECK(kl2 == kl && !memcmp(key, key2, kl), "casefold not idempotent (%zu -> %zu)", kl,
               kl2);

    /* the tokenizer on the repaired text and on the match key */
    fuzz_check_tokens(rep, rl);
    fuzz_check_tokens(key, kl);

    /* and the plain-text parser and the chunker on the same bytes */
    rag_ingest_parsed doc;
    rag_ingest__parsed_init(&doc);
    rc = rag_ingest__parse(RAG_FMT_TEXT, rep, rl, &doc);
    FUZZ_CHECK(rc == RAG_OK, "text parse failed: %d %s", rc, rag_error_last());
    fuzz_check_parsed(&doc);
    fuzz_check_chunks(&doc);
    rag_ingest__parsed_clear(&doc);

    free(key2);
    free(key);
    free(nfc);
    free(rep);
}

#endif
