/* Unicode helpers (src/common/text.c): validation offsets, U+FFFD repair by maximal subparts,
 * NFC with control stripping, NFKC casefold match keys, the tokenizer, across scripts.
 *
 * Byte strings are written as C literals; a hex escape followed by a hex digit is split into
 * two literals ("\xE2\x82" "b") because C would otherwise read "\x82b" as one escape. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

#include "rag_common.h"
#include "rag_text.h"
#include "test_support.h"

/* A literal and its length, NULs included. */
#define B(lit) (lit), (sizeof(lit) - 1)

#define FFFD "\xEF\xBF\xBD"

static char *hex(const char *s, size_t n)
{
    static char buf[4][1024];
    static int slot;
    char *b = buf[slot++ & 3];
    size_t w = 0;
    for (size_t i = 0; i < n && w + 4 < sizeof buf[0]; i++)
        w += (size_t)snprintf(b + w, sizeof buf[0] - w, "%02X ", (unsigned char)s[i]);
    b[w] = 0;
    return b;
}

static void expect_bytes(const char *what, const char *in, size_t in_len, const char *got,
                         size_t got_len, const char *want, size_t want_len)
{
    if (got_len != want_len || memcmp(got, want, want_len) != 0)
        fail_msg("%s(%s):\n   got  %s\n   want %s", what, hex(in, in_len), hex(got, got_len),
                 hex(want, want_len));
    /* Every result is NUL-terminated for callers that want a C string. */
    assert_int_equal(got[got_len], 0);
}

/* An exact-size heap copy, so ASan sees any read past `len` (nothing may rely on a NUL). */
static char *exact_copy(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    if (len)
        memcpy(p, s, len);
    return p;
}

static void check_ok(const char *s, size_t len)
{
    char *p = exact_copy(s, len);
    size_t bad = 12345;
    int rc = rag_utf8_check(p, len, &bad);
    if (rc != RAG_OK)
        fail_msg("check(%s) = %d at %zu, expected valid", hex(s, len), rc, bad);
    assert_int_equal(bad, 12345); /* untouched on success */
    /* Repair of valid text is the identity. */
    char *r = NULL;
    size_t rl = 0;
    assert_int_equal(rag_utf8_repair(p, len, &r, &rl), RAG_OK);
    expect_bytes("repair", s, len, r, rl, s, len);
    free(r);
    free(p);
}

/* Invalid: check names `offset`; repair gives exactly `want`; NFC and casefold refuse it with
 * the same offset in the error detail. */
static void check_bad(const char *s, size_t len, size_t offset, const char *want,
                      size_t want_len)
{
    char *p = exact_copy(s, len);
    size_t bad = 12345;
    int rc = rag_utf8_check(p, len, &bad);
    if (rc != RAG_EUTF8)
        fail_msg("check(%s) = %d, expected RAG_EUTF8", hex(s, len), rc);
    if (bad != offset)
        fail_msg("check(%s): bad offset %zu, expected %zu", hex(s, len), bad, offset);
    char msg[64];
    snprintf(msg, sizeof msg, "byte offset %zu", offset);
    assert_non_null(strstr(rag_error_last(), msg));
    /* A NULL bad_offset is allowed. */
    assert_int_equal(rag_utf8_check(p, len, NULL), RAG_EUTF8);

    char *r = NULL;
    size_t rl = 0;
    assert_int_equal(rag_utf8_repair(p, len, &r, &rl), RAG_OK);
    expect_bytes("repair", s, len, r, rl, want, want_len);
    assert_int_equal(rag_utf8_check(r, rl, NULL), RAG_OK);
    free(r);

    char *o = (char *)1;
    size_t ol = 99;
    assert_int_equal(rag_utf8_nfc(p, len, &o, &ol), RAG_EUTF8);
    assert_null(o);
    assert_non_null(strstr(rag_error_last(), msg));
    o = (char *)1;
    assert_int_equal(rag_utf8_nfkc_casefold(p, len, &o, &ol), RAG_EUTF8);
    assert_null(o);
    assert_non_null(strstr(rag_error_last(), msg));
    free(p);
}

static void nfc_is(const char *in, size_t in_len, const char *want, size_t want_len)
{
    char *p = exact_copy(in, in_len);
    char *o = NULL, *o2 = NULL;
    size_t ol = 0, ol2 = 0;
    int rc = rag_utf8_nfc(p, in_len, &o, &ol);
    if (rc)
        fail_msg("nfc(%s) = %d: %s", hex(in, in_len), rc, rag_error_last());
    expect_bytes("nfc", in, in_len, o, ol, want, want_len);
    assert_int_equal(rag_utf8_check(o, ol, NULL), RAG_OK);
    /* Idempotent. */
    assert_int_equal(rag_utf8_nfc(o, ol, &o2, &ol2), RAG_OK);
    expect_bytes("nfc(nfc)", o, ol, o2, ol2, o, ol);
    free(o2);
    free(o);
    free(p);
}

static void fold_is(const char *in, size_t in_len, const char *want, size_t want_len)
{
    char *p = exact_copy(in, in_len);
    char *o = NULL, *o2 = NULL;
    size_t ol = 0, ol2 = 0;
    int rc = rag_utf8_nfkc_casefold(p, in_len, &o, &ol);
    if (rc)
        fail_msg("casefold(%s) = %d: %s", hex(in, in_len), rc, rag_error_last());
    expect_bytes("nfkc_casefold", in, in_len, o, ol, want, want_len);
    assert_int_equal(rag_utf8_check(o, ol, NULL), RAG_OK);
    assert_int_equal(rag_utf8_nfkc_casefold(o, ol, &o2, &ol2), RAG_OK);
    expect_bytes("casefold(casefold)", o, ol, o2, ol2, o, ol);
    free(o2);
    free(o);
    free(p);
}

/* Tokens joined with '|'. */
typedef struct toks {
    char buf[2048];
    size_t len;
    int count;
    int stop_after; /* return 7 from the callback after this many tokens (0: never) */
} toks;

static int on_tok(void *arg, const char *t, size_t n)
{
    toks *k = arg;
    assert_true(n > 0 && n <= 64);
    assert_int_equal(rag_utf8_check(t, n, NULL), RAG_OK); /* never cut inside a code point */
    if (k->count)
        k->buf[k->len++] = '|';
    assert_true(k->len + n < sizeof k->buf);
    memcpy(k->buf + k->len, t, n);
    k->len += n;
    k->buf[k->len] = 0;
    k->count++;
    return (k->stop_after && k->count == k->stop_after) ? 7 : 0;
}

/* Casefold then tokenize (the embed-cpu path) and compare the joined tokens. */
static void tokens_are(const char *in, size_t in_len, int drop, const char *want)
{
    char *f = NULL;
    size_t fl = 0;
    assert_int_equal(rag_utf8_nfkc_casefold(in, in_len, &f, &fl), RAG_OK);
    char *p = exact_copy(f, fl);
    toks k;
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(p, fl, drop, on_tok, &k), RAG_OK);
    if (strcmp(k.buf, want) != 0)
        fail_msg("tokens(%.*s) = [%s], want [%s]", (int)in_len, in, k.buf, want);
    free(p);
    free(f);
}

/* ---- validation and repair ---------------------------------------------------------------- */

static void test_valid_boundaries(void **state)
{
    (void)state;
    check_ok(B(""));
    check_ok(B("plain ASCII"));
    check_ok(B("\x00"));              /* U+0000 is well-formed: explicit lengths carry it */
    check_ok(B("a\x00" "b"));
    check_ok(B("\x7F"));              /* U+007F */
    check_ok(B("\xC2\x80"));          /* U+0080, smallest 2-byte */
    check_ok(B("\xDF\xBF"));          /* U+07FF */
    check_ok(B("\xE0\xA0\x80"));      /* U+0800, smallest 3-byte */
    check_ok(B("\xED\x9F\xBF"));      /* U+D7FF, just below the surrogates */
    check_ok(B("\xEE\x80\x80"));      /* U+E000, just above */
    check_ok(B("\xEF\xBF\xBD"));      /* U+FFFD */
    check_ok(B("\xEF\xBF\xBE"));      /* U+FFFE noncharacter: well-formed */
    check_ok(B("\xEF\xB7\x90"));      /* U+FDD0 noncharacter */
    check_ok(B("\xF0\x90\x80\x80"));  /* U+10000, smallest 4-byte */
    check_ok(B("\xF4\x8F\xBF\xBF"));  /* U+10FFFF, the last code point */
    check_ok(B("\xCD\xB8"));          /* U+0378, unassigned: still well-formed */
}

static void test_overlongs(void **state)
{
    (void)state;
    /* C0/C1 can only start overlong 2-byte forms: each byte is its own maximal subpart. */
    check_bad(B("\xC0\x80"), 0, B(FFFD FFFD));            /* overlong NUL (Java "modified") */
    check_bad(B("ab\xC0\xAF"), 2, B("ab" FFFD FFFD));     /* overlong '/' */
    check_bad(B("\xC1\xBF"), 0, B(FFFD FFFD));            /* overlong U+007F */
    /* E0 needs A0..BF next; F0 needs 90..BF: the lead alone is the maximal subpart. */
    check_bad(B("\xE0\x80\x80"), 0, B(FFFD FFFD FFFD));   /* overlong NUL, 3 bytes */
    check_bad(B("x\xE0\x9F\xBF"), 1, B("x" FFFD FFFD FFFD));
    check_bad(B("\xF0\x80\x80\x80"), 0, B(FFFD FFFD FFFD FFFD)); /* overlong NUL, 4 bytes */
    check_bad(B("\xF0\x8F\xBF\xBF"), 0, B(FFFD FFFD FFFD FFFD));
    /* 5- and 6-byte forms of the old RFC 2279. */
    check_bad(B("\xF8\x80\x80\x80\x80"), 0, B(FFFD FFFD FFFD FFFD FFFD));
    check_bad(B("\xFC\x80\x80\x80\x80\x80"), 0, B(FFFD FFFD FFFD FFFD FFFD FFFD));
}

static void test_surrogates(void **state)
{
    (void)state;
    check_bad(B("\xED\xA0\x80"), 0, B(FFFD FFFD FFFD));        /* U+D800 */
    check_bad(B("ok \xED\xBF\xBF"), 3, B("ok " FFFD FFFD FFFD)); /* U+DFFF */
    check_bad(B("\xED\xAD\xBF"), 0, B(FFFD FFFD FFFD));        /* U+DB7F */
    /* A CESU-8 surrogate pair for U+1F600: six U+FFFD, never the emoji. */
    check_bad(B("\xED\xA0\xBD\xED\xB8\x80"), 0, B(FFFD FFFD FFFD FFFD FFFD FFFD));
}

static void test_bad_lead_bytes(void **state)
{
    (void)state;
    for (unsigned b = 0xF5; b <= 0xFF; b++) {
        char in[5] = {'a', (char)b, (char)0x80, (char)0x80, (char)0x80};
        check_bad(in, 2, 1, B("a" FFFD));
        check_bad(in, 5, 1, B("a" FFFD FFFD FFFD FFFD));
    }
    /* Above U+10FFFF. */
    check_bad(B("\xF4\x90\x80\x80"), 0, B(FFFD FFFD FFFD FFFD));
    check_bad(B("\xF7\xBF\xBF\xBF"), 0, B(FFFD FFFD FFFD FFFD));
}

static void test_continuation_and_truncation(void **state)
{
    (void)state;
    /* Lone continuation bytes. */
    check_bad(B("\x80"), 0, B(FFFD));
    check_bad(B("a\xBF" "b"), 1, B("a" FFFD "b"));
    check_bad(B("\x80\x80\x80"), 0, B(FFFD FFFD FFFD));
    check_bad(B("\xC3\xA9\xA9"), 2, B("\xC3\xA9" FFFD));
    /* Truncated at the end: the whole incomplete prefix is one U+FFFD. */
    check_bad(B("x\xC3"), 1, B("x" FFFD));
    check_bad(B("x\xE2"), 1, B("x" FFFD));
    check_bad(B("x\xE2\x82"), 1, B("x" FFFD));
    check_bad(B("x\xF0\x9F"), 1, B("x" FFFD));
    check_bad(B("x\xF0\x9F\x98"), 1, B("x" FFFD));
    /* Truncated in the middle. */
    check_bad(B("a\xE2\x82" "b"), 1, B("a" FFFD "b"));
    check_bad(B("\xF0\x9F\x98 x"), 0, B(FFFD " x"));
    check_bad(B("\xF0\x9F\x98\xF0\x9F\x98\x80"), 0, B(FFFD "\xF0\x9F\x98\x80"));
    check_bad(B("\xC3\xC3\xA9"), 0, B(FFFD "\xC3\xA9"));
    check_bad(B("\xE2\x82\xE2\x82\xAC"), 0, B(FFFD "\xE2\x82\xAC"));
    /* The worked example of Unicode ch. 3 ("U+FFFD Substitution of Maximal Subparts"). */
    check_bad(B("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"), 1,
              B("a" FFFD FFFD FFFD "b" FFFD "c" FFFD FFFD "d"));
    /* The first bad sequence is reported even when more follow; valid text before it counts. */
    check_bad(B("\xCE\xB1\xCE\xB2\xCE\xB3\xFF\x80"), 6, B("\xCE\xB1\xCE\xB2\xCE\xB3" FFFD FFFD));
}

static void test_explicit_lengths(void **state)
{
    (void)state;
    /* len 0 and NULL with len 0. */
    size_t bad = 7;
    assert_int_equal(rag_utf8_check(NULL, 0, &bad), RAG_OK);
    assert_int_equal(bad, 7);
    char *o = NULL;
    size_t ol = 99;
    assert_int_equal(rag_utf8_repair(NULL, 0, &o, &ol), RAG_OK);
    assert_int_equal(ol, 0);
    assert_string_equal(o, "");
    free(o);
    ol = 99;
    assert_int_equal(rag_utf8_nfc(NULL, 0, &o, &ol), RAG_OK);
    assert_int_equal(ol, 0);
    assert_string_equal(o, "");
    free(o);
    ol = 99;
    assert_int_equal(rag_utf8_nfkc_casefold(NULL, 0, &o, &ol), RAG_OK);
    assert_int_equal(ol, 0);
    assert_string_equal(o, "");
    free(o);
    assert_int_equal(rag_utf8_nfc("abc", 0, &o, NULL), RAG_OK); /* out_len is optional */
    assert_string_equal(o, "");
    free(o);
    toks k;
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(NULL, 0, 1, on_tok, &k), RAG_OK);
    assert_int_equal(k.count, 0);
    /* NULL with a length, or no output pointer: RAG_EINVAL, never a crash. */
    assert_int_equal(rag_utf8_check(NULL, 1, &bad), RAG_EINVAL);
    assert_int_equal(rag_utf8_repair(NULL, 1, &o, &ol), RAG_EINVAL);
    assert_int_equal(rag_utf8_nfc(NULL, 1, &o, &ol), RAG_EINVAL);
    assert_int_equal(rag_utf8_nfkc_casefold(NULL, 1, &o, &ol), RAG_EINVAL);
    assert_int_equal(rag_utf8_nfc("a", 1, NULL, &ol), RAG_EINVAL);
    assert_int_equal(rag_utf8_repair("a", 1, NULL, &ol), RAG_EINVAL);
    assert_int_equal(rag_tokenize(NULL, 1, 0, on_tok, &k), RAG_EINVAL);
    assert_int_equal(rag_tokenize("a", 1, 0, NULL, &k), RAG_EINVAL);

    /* The length is obeyed, never strlen: a prefix that cuts "é" is invalid (truncated)... */
    assert_int_equal(rag_utf8_check("\xC3\xA9", 1, &bad), RAG_EUTF8);
    assert_int_equal(bad, 0);
    /* ...bytes after len are ignored even when they would change the result... */
    nfc_is("abce\xCC\x81", 4, B("abce"));
    nfc_is("e\xCC\x81xyz", 3, B("\xC3\xA9"));
    fold_is("ABC\xEF\xBC\xA1", 3, B("abc"));
    /* ...and embedded NULs are data: accepted by check, kept by repair and casefold, dropped
     * by NFC (U+0000 is a control character), a separator for the tokenizer. */
    check_ok(B("a\x00" "b\x00"));
    nfc_is(B("a\x00" "b\x00"), B("ab"));
    fold_is(B("A\x00" "B"), B("a\x00" "b"));
    toks t;
    memset(&t, 0, sizeof t);
    assert_int_equal(rag_tokenize(B("foo\x00" "bar"), 0, on_tok, &t), RAG_OK);
    assert_string_equal(t.buf, "foo|bar");
}

/* Exhaustive against an independent definition: decode the bits, then require the shortest
 * form, no surrogate, at most U+10FFFF.  All 1-, 2- and 3-byte strings; 4-byte strings for
 * every lead and second byte. */
static int ref_valid_one(const unsigned char *p, size_t n)
{
    size_t need;
    uint32_t cp;
    if (p[0] < 0x80) {
        need = 1;
        cp = p[0];
    } else if ((p[0] & 0xE0) == 0xC0) {
        need = 2;
        cp = p[0] & 0x1Fu;
    } else if ((p[0] & 0xF0) == 0xE0) {
        need = 3;
        cp = p[0] & 0x0Fu;
    } else if ((p[0] & 0xF8) == 0xF0) {
        need = 4;
        cp = p[0] & 0x07u;
    } else {
        return 0;
    }
    if (n != need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    size_t shortest = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    return shortest == need && !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
}

static void test_exhaustive_short_sequences(void **state)
{
    (void)state;
    unsigned char b[4];
    size_t bad;
    long valid2 = 0, valid3 = 0, valid4 = 0;
    for (unsigned x = 0; x < 256; x++) {
        b[0] = (unsigned char)x;
        int want = ref_valid_one(b, 1);
        assert_int_equal(rag_utf8_check((char *)b, 1, &bad) == RAG_OK, want);
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (unsigned char)y;
            /* Valid as a whole iff one 2-byte character or two 1-byte ones. */
            want = ref_valid_one(b, 2) || (ref_valid_one(b, 1) && ref_valid_one(b + 1, 1));
            valid2 += ref_valid_one(b, 2);
            if ((rag_utf8_check((char *)b, 2, &bad) == RAG_OK) != want)
                fail_msg("2-byte %02X %02X: expected %s", x, y, want ? "valid" : "invalid");
            for (unsigned z = 0; z < 256; z++) {
                b[2] = (unsigned char)z;
                int one = ref_valid_one(b, 3);
                valid3 += one;
                want = one || (ref_valid_one(b, 2) && ref_valid_one(b + 2, 1)) ||
                       (ref_valid_one(b, 1) && ref_valid_one(b + 1, 2)) ||
                       (ref_valid_one(b, 1) && ref_valid_one(b + 1, 1) &&
                        ref_valid_one(b + 2, 1));
                if ((rag_utf8_check((char *)b, 3, &bad) == RAG_OK) != want)
                    fail_msg("3-byte %02X %02X %02X: expected %s", x, y, z,
                             want ? "valid" : "invalid");
            }
        }
    }
    /* Single 4-byte sequences: every lead and second byte, continuation tails. */
    static const unsigned char tails[] = {0x80, 0x8F, 0x90, 0xBF};
    for (unsigned x = 0xF0; x < 256; x++)
        for (unsigned y = 0; y < 256; y++)
            for (size_t i = 0; i < sizeof tails; i++)
                for (size_t j = 0; j < sizeof tails; j++) {
                    b[0] = (unsigned char)x;
                    b[1] = (unsigned char)y;
                    b[2] = tails[i];
                    b[3] = tails[j];
                    int want = ref_valid_one(b, 4);
                    valid4 += want;
                    if ((rag_utf8_check((char *)b, 4, &bad) == RAG_OK) != want)
                        fail_msg("4-byte %02X %02X %02X %02X: expected %s", x, y, b[2], b[3],
                                 want ? "valid" : "invalid");
                    if (!want)
                        assert_true(bad == 0); /* the lead starts the bad sequence */
                }
    /* Sanity of the reference itself: the number of 2- and 3-byte scalar values. */
    assert_int_equal(valid2, 0x800 - 0x80);
    assert_int_equal(valid3, 0x10000 - 0x800 - 0x800);
    /* Valid second bytes: F0 48, F1..F3 64 each, F4 16 = 256, times 16 tail pairs. */
    assert_int_equal(valid4, 256 * 16);
}

/* Random byte soup: repair always yields valid UTF-8, agrees with check, and repair of its
 * own output is the identity. */
static void test_repair_random(void **state)
{
    (void)state;
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    static const unsigned char pool[] = {'a', ' ', 0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xC2, 0xC3,
                                         0xDF, 0xE0, 0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF,
                                         0x9F, 0xA0, 0x8F, 0x90, 0xA9, 0x82, 0xAC};
    for (int iter = 0; iter < 20000; iter++) {
        char in[32];
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t n = (size_t)(seed >> 59) + 1;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            in[i] = (char)pool[(seed >> 33) % sizeof pool];
        }
        char *r = NULL, *r2 = NULL;
        size_t rl = 0, rl2 = 0;
        assert_int_equal(rag_utf8_repair(in, n, &r, &rl), RAG_OK);
        assert_int_equal(rag_utf8_check(r, rl, NULL), RAG_OK);
        size_t bad = 0;
        if (rag_utf8_check(in, n, &bad) == RAG_OK) {
            expect_bytes("repair(valid)", in, n, r, rl, in, n);
        } else {
            assert_true(bad < n);
            assert_memory_equal(r, in, bad); /* the valid prefix is kept verbatim */
            assert_memory_equal(r + bad, FFFD, 3);
        }
        assert_int_equal(rag_utf8_repair(r, rl, &r2, &rl2), RAG_OK);
        expect_bytes("repair(repair)", r, rl, r2, rl2, r, rl);
        free(r2);
        free(r);
    }
}

/* ---- NFC and control characters ------------------------------------------------------------ */

static void test_controls(void **state)
{
    (void)state;
    /* Every C0 control but \t \n goes; \r becomes \n. */
    for (unsigned c = 0; c < 0x20; c++) {
        char in[3] = {'x', (char)c, 'y'};
        if (c == '\t')
            nfc_is(in, 3, B("x\ty"));
        else if (c == '\n' || c == '\r')
            nfc_is(in, 3, B("x\ny"));
        else
            nfc_is(in, 3, B("xy"));
    }
    nfc_is(B("x\x7Fy"), B("xy")); /* DEL */
    /* Every C1 control (U+0080..U+009F, NEL included) goes. */
    for (unsigned c = 0x80; c <= 0x9F; c++) {
        char in[4] = {'x', (char)0xC2, (char)c, 'y'};
        nfc_is(in, 4, B("xy"));
    }
    /* \r\n and lone \r -> \n; \n\r is two line ends. */
    nfc_is(B("a\r\nb\rc\r\r\nd\n\re\r"), B("a\nb\nc\n\nd\n\ne\n"));
    nfc_is(B("\r\n\r\n"), B("\n\n"));
    /* Neighbours that are not Cc stay: U+00A0 (Zs), soft hyphen U+00AD and ZWJ U+200D and
     * ZWNJ U+200C and BOM U+FEFF (Cf), U+2028/2029 (Zl/Zp), U+00A1 (first after C1). */
    nfc_is(B("a\xC2\xA0" "b\xC2\xAD" "c\xE2\x80\x8D" "d\xE2\x80\x8C" "e\xEF\xBB\xBF" "f"),
           B("a\xC2\xA0" "b\xC2\xAD" "c\xE2\x80\x8D" "d\xE2\x80\x8C" "e\xEF\xBB\xBF" "f"));
    nfc_is(B("\xE2\x80\xA8\xE2\x80\xA9\xC2\xA1"), B("\xE2\x80\xA8\xE2\x80\xA9\xC2\xA1"));
    /* Stripping happens before composition: e, U+0001, U+0301 is "é", not "e" + U+0301. */
    nfc_is(B("e\x01\xCC\x81"), B("\xC3\xA9"));
    nfc_is(B("A\xC2\x85\xCC\x8A"), B("\xC3\x85"));
    /* Casefold keeps controls (they only separate tokens) but drops default-ignorables. */
    fold_is(B("A\x01" "B\r\n"), B("a\x01" "b\r\n"));
}

static void test_combining_marks(void **state)
{
    (void)state;
    nfc_is(B("e\xCC\x81"), B("\xC3\xA9"));            /* e + U+0301 -> U+00E9 */
    nfc_is(B("\xC3\xA9"), B("\xC3\xA9"));
    nfc_is(B("A\xCC\x8A"), B("\xC3\x85"));            /* A + ring -> U+00C5 */
    nfc_is(B("\xE2\x84\xAB"), B("\xC3\x85"));         /* ANGSTROM SIGN, a singleton */
    nfc_is(B("\xE2\x84\xA6"), B("\xCE\xA9"));         /* OHM SIGN -> Greek Omega */
    /* Canonical reordering: acute (ccc 230) after dot below (220); then a+dot below
     * composes to U+1EA1, the acute stays separate. */
    nfc_is(B("a\xCC\x81\xCC\xA3"), B("\xE1\xBA\xA1\xCC\x81"));
    nfc_is(B("a\xCC\xA3\xCC\x81"), B("\xE1\xBA\xA1\xCC\x81"));
    /* Two marks of the same class keep their order (no composition across a blocked one). */
    nfc_is(B("a\xCC\x88\xCC\x81"), B("\xC3\xA4\xCC\x81"));
    nfc_is(B("a\xCC\x81\xCC\x88"), B("\xC3\xA1\xCC\x88"));
    /* Hangul: conjoining jamo L V T compose to a syllable, LV + T too. */
    nfc_is(B("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"), B("\xED\x95\x9C")); /* 한 */
    nfc_is(B("\xEA\xB0\x80\xE1\x86\xA8"), B("\xEA\xB0\x81"));             /* 가+ᆨ -> 각 */
    nfc_is(B("\xED\x95\x9C"), B("\xED\x95\x9C"));
    /* Composition exclusions decompose and stay decomposed (UTF8PROC_STABLE): Devanagari
     * QA U+0958 -> KA + NUKTA, Hebrew U+FB2A -> SHIN + SHIN DOT. */
    nfc_is(B("\xE0\xA5\x98"), B("\xE0\xA4\x95\xE0\xA4\xBC"));
    nfc_is(B("\xEF\xAC\xAA"), B("\xD7\xA9\xD7\x81"));
    /* A lone combining mark at the start is kept as it is. */
    nfc_is(B("\xCC\x81" "a"), B("\xCC\x81" "a"));
}

/* A long run of marks of alternating classes was quadratic in utf8proc's own reordering
 * (40 000 marks: 4.5 s).  300 000 must now take well under a second, and be exact. */
static void test_long_combining_run(void **state)
{
    (void)state;
    const size_t marks = 300000;
    size_t len = 1 + marks * 2;
    char *s = malloc(len);
    assert_non_null(s);
    s[0] = 'e';
    for (size_t i = 0; i < marks; i++) {
        s[1 + 2 * i] = (char)0xCC;
        s[2 + 2 * i] = (char)((i & 1) ? 0x96 : 0x81); /* U+0316 (ccc 220), U+0301 (230) */
    }
    /* The quadratic version needed minutes here: let SIGALRM kill the test instead. */
    alarm(60);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *o = NULL;
    size_t ol = 0;
    assert_int_equal(rag_utf8_nfc(s, len, &o, &ol), RAG_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    /* Sorted: all 220s first, then the 230s; the first acute is then unblocked and composes
     * with e.  So: U+00E9, 150 000 x U+0316, 149 999 x U+0301. */
    assert_int_equal(ol, 2 + (marks - 1) * 2);
    assert_memory_equal(o, "\xC3\xA9", 2);
    for (size_t i = 0; i < marks / 2; i++)
        assert_memory_equal(o + 2 + 2 * i, "\xCC\x96", 2);
    for (size_t i = marks / 2; i < marks - 1; i++)
        assert_memory_equal(o + 2 + 2 * i, "\xCC\x81", 2);
    free(o);
    assert_int_equal(rag_utf8_nfkc_casefold(s, len, &o, &ol), RAG_OK);
    assert_int_equal(ol, 2 + (marks - 1) * 2);
    free(o);
    free(s);
    alarm(0);
    if (secs > 5.0) /* generous for sanitizer builds; the release build takes ~40 ms */
        fail_msg("NFC of %zu combining marks took %.2f s", marks, secs);
}

/* Our normaliser must give exactly what utf8proc_map gives (short mark runs, where that is
 * fast) on random mixes of the tricky code points. */
static void test_matches_utf8proc(void **state)
{
    (void)state;
    static const int32_t pool[] = {
        'a',    'e',    'A',    'I',     ' ',     0x03A3, 0x03C2, 0x0301,  0x0316, 0x0323,
        0x0345, 0x0344, 0x05B8, 0x05C1,  0x0E49,  0x093C, 0x0958, 0x0F73,  0x1100, 0x1161,
        0x11AB, 0xAC00, 0x00C5, 0x212B,  0xFB01,  0xFF21, 0x00DF, 0x0130,  0x1E9E, 0x00AD,
        0x200D, 0x0387, 0x1FB3, 0x3099,  0x304B,  0xFF76, 0xFF9E, 0x1F468, 0xFE0F, 0x1D15E,
        0x0399, 0x0308, 0x01C5, 0x2460,  0x3300,  0xFDFA, 0x0627, 0x0653,  0x0CCB, 0x0CC2};
    uint64_t seed = 12345;
    for (int iter = 0; iter < 5000; iter++) {
        unsigned char in[40 * 4];
        size_t n = 0;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t cps = (size_t)(seed >> 59) + 1;
        for (size_t i = 0; i < cps; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            int32_t cp = pool[(seed >> 33) % (sizeof pool / sizeof pool[0])];
            n += (size_t)utf8proc_encode_char(cp, in + n);
        }
        static const utf8proc_option_t opts[2] = {
            UTF8PROC_STABLE | UTF8PROC_COMPOSE,
            UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD |
                UTF8PROC_IGNORE};
        for (int w = 0; w < 2; w++) {
            utf8proc_uint8_t *ref = NULL;
            utf8proc_ssize_t rn = utf8proc_map(in, (utf8proc_ssize_t)n, &ref, opts[w]);
            assert_true(rn >= 0);
            char *o = NULL;
            size_t ol = 0;
            int rc = w == 0 ? rag_utf8_nfc((char *)in, n, &o, &ol)
                            : rag_utf8_nfkc_casefold((char *)in, n, &o, &ol);
            assert_int_equal(rc, RAG_OK);
            expect_bytes(w == 0 ? "nfc vs utf8proc" : "casefold vs utf8proc", (char *)in, n,
                         o, ol, (char *)ref, (size_t)rn);
            free(o);
            free(ref);
        }
    }
}

/* ---- NFKC casefold (match keys) ------------------------------------------------------------ */

static void test_casefold(void **state)
{
    (void)state;
    /* Full-width forms: folded for matching, kept in the stored NFC text. */
    const char fw[] = "\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x91\xEF\xBC\x92\xEF\xBC\x93";
    fold_is(B(fw), B("abc123"));
    nfc_is(B(fw), B(fw));
    /* Ligatures and other compatibility forms. */
    fold_is(B("\xEF\xAC\x81" "nance"), B("finance")); /* ﬁ */
    nfc_is(B("\xEF\xAC\x81"), B("\xEF\xAC\x81"));
    fold_is(B("\xE2\x91\xA0 x\xC2\xB2 \xE3\x8E\x8F"), B("1 x2 kg")); /* ① x² ㎏ */
    fold_is(B("\xEF\xBD\xB6\xEF\xBE\x9E"), B("\xE3\x82\xAC"));       /* half-width ｶﾞ -> ガ */
    fold_is(B("\xE2\x85\xAB"), B("xii"));                             /* Roman numeral Ⅻ */
    /* German sharp s: full folding, so all spellings meet. */
    fold_is(B("Stra\xC3\x9F" "e"), B("strasse"));
    fold_is(B("STRASSE"), B("strasse"));
    fold_is(B("\xE1\xBA\x9E"), B("ss")); /* capital ẞ */
    /* Turkish: no locale rules.  I -> i, İ -> i + U+0307, dotless ı stays ı. */
    fold_is(B("I"), B("i"));
    fold_is(B("\xC4\xB0stanbul"), B("i\xCC\x87stanbul"));
    fold_is(B("\xC4\xB1"), B("\xC4\xB1"));
    fold_is(B("KIRMIZI"), B("kirmizi"));
    /* Greek: final sigma and capital sigma both fold to σ, so "ΟΔΥΣΣΕΥΣ" meets
     * "οδυσσευς"; accents stay (casefold is not accent folding). */
    fold_is(B("\xCF\x82"), B("\xCF\x83"));
    fold_is(B("\xCE\x9F\xCE\x94\xCE\xA5\xCE\xA3\xCE\xA3\xCE\x95\xCE\xA5\xCE\xA3"),
            B("\xCE\xBF\xCE\xB4\xCF\x85\xCF\x83\xCF\x83\xCE\xB5\xCF\x85\xCF\x83"));
    fold_is(B("\xCE\xBF\xCE\xB4\xCF\x85\xCF\x83\xCF\x83\xCE\xB5\xCF\x85\xCF\x82"),
            B("\xCE\xBF\xCE\xB4\xCF\x85\xCF\x83\xCF\x83\xCE\xB5\xCF\x85\xCF\x83"));
    fold_is(B("\xCE\x86"), B("\xCE\xAC")); /* Ά -> ά */
    /* Titlecase digraph ǅ -> dž; composed and decomposed inputs meet. */
    fold_is(B("\xC7\x85"), B("d\xC5\xBE"));
    fold_is(B("E\xCC\x81t\xC3\x89"), B("\xC3\xA9t\xC3\xA9"));
    /* Default-ignorables vanish from keys: soft hyphen, ZWJ, ZWNJ, variation selector 16. */
    fold_is(B("co\xC2\xAD" "operate"), B("cooperate"));
    fold_is(B("a\xE2\x80\x8D" "b\xE2\x80\x8C" "c\xEF\xB8\x8F"), B("abc"));
    /* Unassigned and noncharacters pass through. */
    fold_is(B("\xCD\xB8\xEF\xBF\xBE"), B("\xCD\xB8\xEF\xBF\xBE"));
}

/* embed-cpu skips utf8proc for pure ASCII and lowercases A-Z itself; that is only right if
 * NFKC casefold of ASCII is exactly that.  Check the whole range (NUL included). */
static void test_ascii_fold_is_tolower(void **state)
{
    (void)state;
    char in[128], want[128];
    for (int c = 0; c < 128; c++) {
        in[c] = (char)c;
        want[c] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    fold_is(in, sizeof in, want, sizeof want);
}

/* ---- scripts --------------------------------------------------------------------------- */

typedef struct script_case {
    const char *name;
    const char *in;     /* as written (may be decomposed) */
    const char *nfc;    /* stored form */
    const char *fold;   /* match key */
    const char *tokens; /* rag_tokenize(fold), stopwords dropped, joined by '|' */
} script_case;

static const script_case scripts[] = {
    {"latin (decomposed diacritics)", "Cre\xCC\x80me bru\xCC\x82le\xCC\x81" "e, A\xCC\x8Angstro\xCC\x88m!",
     "Cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e, \xC3\x85ngstr\xC3\xB6m!",
     "cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e, \xC3\xA5ngstr\xC3\xB6m!",
     "cr\xC3\xA8me|br\xC3\xBBl\xC3\xA9" "e|\xC3\xA5ngstr\xC3\xB6m"},
    /* Καλημέρα κόσμε· (ano teleia U+0387 is a canonical singleton -> U+00B7) */
    {"greek", "\xCE\x9A\xCE\xB1\xCE\xBB\xCE\xB7\xCE\xBC\xCE\xAD\xCF\x81\xCE\xB1 \xCE\xBA\xCF\x8C\xCF\x83\xCE\xBC\xCE\xB5\xCE\x87",
     "\xCE\x9A\xCE\xB1\xCE\xBB\xCE\xB7\xCE\xBC\xCE\xAD\xCF\x81\xCE\xB1 \xCE\xBA\xCF\x8C\xCF\x83\xCE\xBC\xCE\xB5\xC2\xB7",
     "\xCE\xBA\xCE\xB1\xCE\xBB\xCE\xB7\xCE\xBC\xCE\xAD\xCF\x81\xCE\xB1 \xCE\xBA\xCF\x8C\xCF\x83\xCE\xBC\xCE\xB5\xC2\xB7",
     "\xCE\xBA\xCE\xB1\xCE\xBB\xCE\xB7\xCE\xBC\xCE\xAD\xCF\x81\xCE\xB1|\xCE\xBA\xCF\x8C\xCF\x83\xCE\xBC\xCE\xB5"},
    /* Привет, мир: decomposed й (и + U+0306) in "Мой" composes */
    {"cyrillic", "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\x9C\xD0\xBE\xD0\xB8\xCC\x86 \xD0\xBC\xD0\xB8\xD1\x80",
     "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\x9C\xD0\xBE\xD0\xB9 \xD0\xBC\xD0\xB8\xD1\x80",
     "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC\xD0\xBE\xD0\xB9 \xD0\xBC\xD0\xB8\xD1\x80",
     "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82|\xD0\xBC\xD0\xBE\xD0\xB9|\xD0\xBC\xD0\xB8\xD1\x80"},
    /* مرحبا بالعالم + lam-alef presentation form U+FEFB (NFC keeps, NFKC -> ل ا) */
    {"arabic", "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD8\xA8\xD8\xA7\xD9\x84\xD8\xB9\xD8\xA7\xD9\x84\xD9\x85 \xEF\xBB\xBB",
     "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD8\xA8\xD8\xA7\xD9\x84\xD8\xB9\xD8\xA7\xD9\x84\xD9\x85 \xEF\xBB\xBB",
     "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD8\xA8\xD8\xA7\xD9\x84\xD8\xB9\xD8\xA7\xD9\x84\xD9\x85 \xD9\x84\xD8\xA7",
     "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7|\xD8\xA8\xD8\xA7\xD9\x84\xD8\xB9\xD8\xA7\xD9\x84\xD9\x85|\xD9\x84\xD8\xA7"},
    /* שָׁלוֹם with shin dot (ccc 24) written before qamats (ccc 18): NFC reorders the points */
    {"hebrew", "\xD7\xA9\xD7\x81\xD6\xB8\xD7\x9C\xD7\x95\xD6\xB9\xD7\x9D",
     "\xD7\xA9\xD6\xB8\xD7\x81\xD7\x9C\xD7\x95\xD6\xB9\xD7\x9D",
     "\xD7\xA9\xD6\xB8\xD7\x81\xD7\x9C\xD7\x95\xD6\xB9\xD7\x9D",
     "\xD7\xA9\xD6\xB8\xD7\x81\xD7\x9C\xD7\x95\xD6\xB9\xD7\x9D"},
    /* नमस्ते दुनिया। (virama and matras are marks: words stay whole; danda separates) */
    {"devanagari", "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87 \xE0\xA4\xA6\xE0\xA5\x81\xE0\xA4\xA8\xE0\xA4\xBF\xE0\xA4\xAF\xE0\xA4\xBE\xE0\xA5\xA4",
     "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87 \xE0\xA4\xA6\xE0\xA5\x81\xE0\xA4\xA8\xE0\xA4\xBF\xE0\xA4\xAF\xE0\xA4\xBE\xE0\xA5\xA4",
     "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87 \xE0\xA4\xA6\xE0\xA5\x81\xE0\xA4\xA8\xE0\xA4\xBF\xE0\xA4\xAF\xE0\xA4\xBE\xE0\xA5\xA4",
     "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87|\xE0\xA4\xA6\xE0\xA5\x81\xE0\xA4\xA8\xE0\xA4\xBF\xE0\xA4\xAF\xE0\xA4\xBE"},
    /* 你好，世界。: no spaces, so one token per run between punctuation; the full-width comma
     * is kept by NFC and becomes ',' in the key */
    {"chinese", "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82",
     "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82",
     "\xE4\xBD\xA0\xE5\xA5\xBD,\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82",
     "\xE4\xBD\xA0\xE5\xA5\xBD|\xE4\xB8\x96\xE7\x95\x8C"},
    /* 東京タワーは高い: kanji, katakana, ー (Lm) and hiragana form ONE token.  The decomposed
     * ハ + U+309A composes to パ. */
    {"japanese", "\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x82\xBF\xE3\x83\xAF\xE3\x83\xBC\xE3\x81\xAF\xE9\xAB\x98\xE3\x81\x84 \xE3\x83\x8F\xE3\x82\x9A",
     "\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x82\xBF\xE3\x83\xAF\xE3\x83\xBC\xE3\x81\xAF\xE9\xAB\x98\xE3\x81\x84 \xE3\x83\x91",
     "\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x82\xBF\xE3\x83\xAF\xE3\x83\xBC\xE3\x81\xAF\xE9\xAB\x98\xE3\x81\x84 \xE3\x83\x91",
     "\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x82\xBF\xE3\x83\xAF\xE3\x83\xBC\xE3\x81\xAF\xE9\xAB\x98\xE3\x81\x84|\xE3\x83\x91"},
    /* 안녕하세요 세계: Korean separates words with spaces */
    {"korean", "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94 \xEC\x84\xB8\xEA\xB3\x84",
     "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94 \xEC\x84\xB8\xEA\xB3\x84",
     "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94 \xEC\x84\xB8\xEA\xB3\x84",
     "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94|\xEC\x84\xB8\xEA\xB3\x84"},
    /* สวัสดีครับ ประเทศไทย: Thai has no spaces between words; a phrase is one token */
    {"thai", "\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1\xE0\xB8\xAA\xE0\xB8\x94\xE0\xB8\xB5\xE0\xB8\x84\xE0\xB8\xA3\xE0\xB8\xB1\xE0\xB8\x9A \xE0\xB8\x9B\xE0\xB8\xA3\xE0\xB8\xB0\xE0\xB9\x80\xE0\xB8\x97\xE0\xB8\xA8\xE0\xB9\x84\xE0\xB8\x97\xE0\xB8\xA2",
     "\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1\xE0\xB8\xAA\xE0\xB8\x94\xE0\xB8\xB5\xE0\xB8\x84\xE0\xB8\xA3\xE0\xB8\xB1\xE0\xB8\x9A \xE0\xB8\x9B\xE0\xB8\xA3\xE0\xB8\xB0\xE0\xB9\x80\xE0\xB8\x97\xE0\xB8\xA8\xE0\xB9\x84\xE0\xB8\x97\xE0\xB8\xA2",
     "\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1\xE0\xB8\xAA\xE0\xB8\x94\xE0\xB8\xB5\xE0\xB8\x84\xE0\xB8\xA3\xE0\xB8\xB1\xE0\xB8\x9A \xE0\xB8\x9B\xE0\xB8\xA3\xE0\xB8\xB0\xE0\xB9\x80\xE0\xB8\x97\xE0\xB8\xA8\xE0\xB9\x84\xE0\xB8\x97\xE0\xB8\xA2",
     "\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1\xE0\xB8\xAA\xE0\xB8\x94\xE0\xB8\xB5\xE0\xB8\x84\xE0\xB8\xA3\xE0\xB8\xB1\xE0\xB8\x9A|\xE0\xB8\x9B\xE0\xB8\xA3\xE0\xB8\xB0\xE0\xB9\x80\xE0\xB8\x97\xE0\xB8\xA8\xE0\xB9\x84\xE0\xB8\x97\xE0\xB8\xA2"},
    /* "I ❤️ 👨‍👩‍👧 family": NFC keeps ZWJ and VS16; the key drops them; emoji are not words
     * and "i" is a stopword */
    {"emoji zwj", "I \xE2\x9D\xA4\xEF\xB8\x8F \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",
     "I \xE2\x9D\xA4\xEF\xB8\x8F \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",
     "i \xE2\x9D\xA4 \xF0\x9F\x91\xA8\xF0\x9F\x91\xA9\xF0\x9F\x91\xA7 family",
     "family"},
};

static void test_scripts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scripts / sizeof scripts[0]; i++) {
        const script_case *c = &scripts[i];
        print_message("  script: %s\n", c->name);
        check_ok(c->in, strlen(c->in));
        check_ok(c->nfc, strlen(c->nfc));
        nfc_is(c->in, strlen(c->in), c->nfc, strlen(c->nfc));
        fold_is(c->in, strlen(c->in), c->fold, strlen(c->fold));
        /* The key of the stored form is the key of the input. */
        fold_is(c->nfc, strlen(c->nfc), c->fold, strlen(c->fold));
        tokens_are(c->in, strlen(c->in), 1, c->tokens);
    }
}

/* ---- tokenizer ----------------------------------------------------------------------------- */

static void test_tokenizer(void **state)
{
    (void)state;
    tokens_are(B("Hello, World! 3.14 snake_case don't it's o'clock dogs' 'quoted'"), 0,
               "hello|world|3|14|snake_case|don't|it's|o'clock|dogs|quoted");
    tokens_are(B("Hello, World! it's THE end"), 1, "hello|world|end");
    /* U+2019 joins a word too but is not folded to ', so "it’s" is no stopword. */
    tokens_are(B("it\xE2\x80\x99s"), 1, "it\xE2\x80\x99s");
    /* Symbols and punctuation never form tokens. */
    tokens_are(B("$ % \xE2\x82\xAC \xE2\x9C\x93 -- ..."), 0, "");
    /* Other numbers (No/Nl) after NFKC: ½ -> 1/2 (U+2044 separates), Ⅻ -> xii. */
    tokens_are(B("\xC2\xBD \xE2\x85\xAB"), 0, "1|2|xii");

    /* Tokens are cut to 64 bytes at a code point boundary. */
    char buf[200];
    memset(buf, 'a', 70);
    toks k;
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(buf, 70, 0, on_tok, &k), RAG_OK);
    assert_int_equal(k.count, 1);
    assert_int_equal(k.len, 64);
    /* "a" + 40 x é (2 bytes): 1 + 2*31 = 63 bytes, since byte 64 is inside an é. */
    buf[0] = 'a';
    for (int i = 0; i < 40; i++)
        memcpy(buf + 1 + 2 * i, "\xC3\xA9", 2);
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(buf, 81, 0, on_tok, &k), RAG_OK);
    assert_int_equal(k.len, 63);
    /* 30 ideographs without punctuation: one token, the first 21 (63 bytes); the rest of the
     * run does not reach the match key at all. */
    for (int i = 0; i < 30; i++)
        memcpy(buf + 3 * i, "\xE5\xAD\x97", 3); /* 字 */
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(buf, 90, 0, on_tok, &k), RAG_OK);
    assert_int_equal(k.count, 1);
    assert_int_equal(k.len, 63);

    /* A nonzero callback return stops and is returned. */
    memset(&k, 0, sizeof k);
    k.stop_after = 2;
    assert_int_equal(rag_tokenize(B("one two three"), 0, on_tok, &k), 7);
    assert_int_equal(k.count, 2);
    /* Invalid bytes (not expected here, but harmless) separate words. */
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(B("ab\xFF" "cd"), 0, on_tok, &k), RAG_OK);
    assert_string_equal(k.buf, "ab|cd");
}

static void test_stopwords(void **state)
{
    (void)state;
    assert_int_equal(rag_is_stopword(B("the")), 1);
    assert_int_equal(rag_is_stopword(B("a")), 1);
    assert_int_equal(rag_is_stopword(B("about")), 1);      /* near the start of the list */
    assert_int_equal(rag_is_stopword(B("yourselves")), 1); /* the last one */
    assert_int_equal(rag_is_stopword(B("it's")), 1);
    assert_int_equal(rag_is_stopword("the", 2), 0); /* explicit length: "th" */
    assert_int_equal(rag_is_stopword(B("thee")), 0);
    assert_int_equal(rag_is_stopword(B("The")), 0); /* the list is casefolded: fold first */
    assert_int_equal(rag_is_stopword(B("retrieval")), 0);
    assert_int_equal(rag_is_stopword("", 0), 0);
    assert_int_equal(rag_is_stopword(NULL, 0), 0);
    assert_int_equal(rag_is_stopword(B("zzz")), 0);
}

/* ---- ASCII fast paths (issue 9) -------------------------------------------------------------
 * normalize() hands pure-ASCII input to normalize_ascii(), rag_tokenize reads ASCII bytes
 * without the decoder and rag_is_stopword is a hash set.  Each must give exactly what the
 * general code gave. */

static uint64_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* A random ASCII byte, biased toward what the fast path treats specially. */
static char ascii_byte(uint64_t *s)
{
    static const char special[] = {'\t', '\n', '\r', 0x7F, 0x00, 0x01, 0x08, 0x0B,
                                   0x0C, 0x1B, 0x1F, ' ',  'A',  'Z',  'a',  'z',
                                   '@',  '[',  '`',  '{',  '0',  '9',  '\'', '_'};
    uint64_t r = rng_next(s);
    switch (r % 4) {
    case 0:
        return special[(r >> 2) % sizeof special];
    case 1:
        return (char)((r >> 2) % 0x80); /* anything 0x00..0x7F */
    case 2:
        return (char)('A' + (r >> 2) % 26);
    default:
        return (char)('a' + (r >> 2) % 26);
    }
}

/* What NFC (with control stripping) and NFKC casefold of ASCII must be, written out. */
static size_t model_ascii(const char *s, size_t n, int fold, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (fold) {
            out[w++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            continue;
        }
        if (c == '\r') {
            if (i + 1 < n && s[i + 1] == '\n')
                continue;
            out[w++] = '\n';
        } else if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F) {
            continue;
        } else {
            out[w++] = (char)c;
        }
    }
    return w;
}

typedef int (*norm_fn)(const char *, size_t, char **, size_t *);

/* f(s) on an exact-size copy (ASan sees a read past the end of the 8-byte word loop). */
static char *norm_exact(norm_fn f, const char *s, size_t n, size_t *ol)
{
    char *p = exact_copy(s, n);
    char *o = NULL;
    *ol = 12345;
    int rc = f(p, n, &o, ol);
    if (rc)
        fail_msg("normalise(%s) = %d: %s", hex(s, n), rc, rag_error_last());
    assert_non_null(o);
    assert_int_equal(o[*ol], 0);
    free(p);
    return o;
}

/* Random ASCII strings: the fast path equals the code point path, which "\xC3\xA9" (é:
 * precomposed, ccc 0, casefold-stable, composes with nothing before it) appended forces:
 * f(s + é) == f(s) + é.  Both also equal the written-out model, and casefold equals
 * utf8proc_map. */
static void test_ascii_fast_path_differential(void **state)
{
    (void)state;
    static const norm_fn fns[2] = {rag_utf8_nfc, rag_utf8_nfkc_casefold};
    uint64_t seed = 0xA5C11F00DULL;
    char s[160], s2[162], model[160];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(rng_next(&seed) % (iter < 2000 ? 20 : 150));
        for (size_t i = 0; i < n; i++) {
            s[i] = ascii_byte(&seed);
            /* \r\n pairs and runs of \r deserve more than chance gives them */
            if (s[i] == '\r' && i + 1 < n && rng_next(&seed) % 2)
                s[++i] = (rng_next(&seed) % 3) ? '\n' : '\r';
        }
        memcpy(s2, s, n);
        memcpy(s2 + n, "\xC3\xA9", 2);
        for (int w = 0; w < 2; w++) {
            size_t l1, l2;
            char *o1 = norm_exact(fns[w], s, n, &l1);
            char *o2 = norm_exact(fns[w], s2, n + 2, &l2);
            if (l2 != l1 + 2 || memcmp(o2, o1, l1) != 0 || memcmp(o2 + l1, "\xC3\xA9", 2) != 0)
                fail_msg("%s: fast path and code point path differ on %s:\n   fast %s\n   full "
                         "%s",
                         w ? "casefold" : "nfc", hex(s, n), hex(o1, l1), hex(o2, l2));
            size_t ml = model_ascii(s, n, w, model);
            expect_bytes(w ? "casefold(model)" : "nfc(model)", s, n, o1, l1, model, ml);
            if (w) {
                utf8proc_uint8_t *ref = NULL;
                utf8proc_ssize_t rn = utf8proc_map((const utf8proc_uint8_t *)s,
                                                   (utf8proc_ssize_t)n, &ref,
                                                   UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                                       UTF8PROC_COMPAT | UTF8PROC_CASEFOLD |
                                                       UTF8PROC_IGNORE);
                assert_true(rn >= 0);
                expect_bytes("casefold vs utf8proc", s, n, o1, l1, (char *)ref, (size_t)rn);
                free(ref);
            }
            free(o1);
            free(o2);
        }
    }
    /* Every length 0..64 of an all-ASCII string with a line end at each 8-byte boundary. */
    for (size_t n = 0; n <= 64; n++) {
        for (size_t i = 0; i < n; i++)
            s[i] = (i % 8 == 7) ? '\r' : (char)('A' + i % 26);
        for (int w = 0; w < 2; w++) {
            size_t l1, l2;
            memcpy(s2, s, n);
            memcpy(s2 + n, "\xC3\xA9", 2);
            char *o1 = norm_exact(fns[w], s, n, &l1);
            char *o2 = norm_exact(fns[w], s2, n + 2, &l2);
            assert_int_equal(l2, l1 + 2);
            assert_memory_equal(o1, o2, l1);
            assert_int_equal(l1, model_ascii(s, n, w, model));
            assert_memory_equal(o1, model, l1);
            free(o1);
            free(o2);
        }
    }
}

/* The fast path must be taken for pure ASCII only: one non-ASCII sequence anywhere (any
 * byte of the 8-byte words is_ascii reads, or the tail) must reach the full pipeline, where
 * it changes the output or is rejected. */
static void test_ascii_detection_every_position(void **state)
{
    (void)state;
    char in[64], want[64];
    for (size_t len = 1; len <= 40; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            /* ANGSTROM SIGN U+212B: NFC -> U+00C5, casefold -> U+00E5. */
            size_t n = 0;
            for (size_t i = 0; i < len; i++) {
                if (i == pos) {
                    memcpy(in + n, "\xE2\x84\xAB", 3);
                    n += 3;
                } else {
                    in[n++] = (char)('A' + (i * 7) % 26);
                }
            }
            size_t wn = 0;
            for (size_t i = 0; i < len; i++) {
                if (i == pos) {
                    memcpy(want + wn, "\xC3\x85", 2);
                    wn += 2;
                } else {
                    want[wn++] = (char)('A' + (i * 7) % 26);
                }
            }
            nfc_is(in, n, want, wn);
            for (size_t i = 0; i < wn; i++)
                if (want[i] >= 'A' && want[i] <= 'Z')
                    want[i] = (char)(want[i] + 32);
            memcpy(want + pos, "\xC3\xA5", 2);
            fold_is(in, n, want, wn);

            /* A lone continuation byte: both refuse it at its offset. */
            for (size_t i = 0; i < len; i++)
                in[i] = (i == pos) ? (char)0x80 : 'a';
            char *p = exact_copy(in, len), *o = NULL;
            char msg[64];
            snprintf(msg, sizeof msg, "byte offset %zu", pos);
            assert_int_equal(rag_utf8_nfc(p, len, &o, NULL), RAG_EUTF8);
            assert_null(o);
            assert_non_null(strstr(rag_error_last(), msg));
            assert_int_equal(rag_utf8_nfkc_casefold(p, len, &o, NULL), RAG_EUTF8);
            assert_null(o);
            assert_non_null(strstr(rag_error_last(), msg));
            free(p);
        }
    }
}

/* The tokenizer's ASCII branch on raw (not casefolded) mixed input, by hand. */
static void raw_tokens_are(const char *in, size_t len, int drop, const char *want)
{
    char *p = exact_copy(in, len);
    toks k;
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(p, len, drop, on_tok, &k), RAG_OK);
    if (strcmp(k.buf, want) != 0)
        fail_msg("tokens(%s) = [%s], want [%s]", hex(in, len), k.buf, want);
    free(p);
}

static void test_tokenizer_mixed_ascii(void **state)
{
    (void)state;
    raw_tokens_are(B("caf\xC3\xA9 na\xC3\xAFve don't o'clock snake_case x_1 _lead trail_ 'q' it's"),
                   0, "caf\xC3\xA9|na\xC3\xAFve|don't|o'clock|snake_case|x_1|lead|trail|q|it's");
    /* ß is a letter; Straße is one token; raw input keeps its case */
    raw_tokens_are(B("Stra\xC3\x9F" "e 42nd"), 0, "Stra\xC3\x9F" "e|42nd");
    /* CJK ideographs are letters (Lo): no boundary against ASCII letters or digits */
    raw_tokens_are(B("\xE4\xB8\xAD\xE6\x96\x87" "abc123 \xE5\xAD\x97"), 0,
                   "\xE4\xB8\xAD\xE6\x96\x87" "abc123|\xE5\xAD\x97");
    /* a combining mark (Mn) continues an ASCII word */
    raw_tokens_are(B("e\xCC\x81t\xCC\x81" "e x"), 0, "e\xCC\x81t\xCC\x81" "e|x");
    /* ' and _ join an ASCII and a non-ASCII word character, in both directions */
    raw_tokens_are(B("l'\xC3\xA9t\xC3\xA9 \xC3\xA9_9 9_\xC3\xA9 \xC3\xA9'x"), 0,
                   "l'\xC3\xA9t\xC3\xA9|\xC3\xA9_9|9_\xC3\xA9|\xC3\xA9'x");
    /* but not when what follows is no word character (or not there, or invalid) */
    raw_tokens_are(B("\xC3\xA9' x dogs' a'\xFF" "b c_"), 0, "\xC3\xA9|x|dogs|a|b|c");
    raw_tokens_are(B("a''b a__b a'_b"), 0, "a|b|a|b|a|b");
    /* U+2019 joins like ' */
    raw_tokens_are(B("don\xE2\x80\x99t"), 0, "don\xE2\x80\x99t");
    /* ASCII punctuation, symbols, controls, DEL, NUL separate */
    raw_tokens_are(B("3.14 1,000 a-b a/b a\x7F" "b\x01" "c\td\ne\rf\x00g h@i"), 0,
                   "3|14|1|000|a|b|a|b|a|b|c|d|e|f|g|h|i");
    /* an invalid lead byte between ASCII letters separates them */
    raw_tokens_are(B("ab\xC3" "x yz\xE2\x82"), 0, "ab|x|yz");
    /* stopwords are lowercase ASCII words: dropped only as such */
    raw_tokens_are(B("the caf\xC3\xA9 is THE it's of\xC3\xA9 a"), 1, "caf\xC3\xA9|THE|of\xC3\xA9");
    /* 64-byte cut that falls inside a 2-byte sequence after an ASCII start: 'a' + 31 é */
    char buf[128];
    buf[0] = 'a';
    for (int i = 0; i < 40; i++)
        memcpy(buf + 1 + 2 * i, "\xC3\xA9", 2);
    toks k;
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(buf, 81, 0, on_tok, &k), RAG_OK);
    assert_int_equal(k.count, 1);
    assert_int_equal(k.len, 63);
    /* all-ASCII token of 70 letters: cut at 64 exactly */
    memset(buf, 'q', 70);
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(buf, 70, 0, on_tok, &k), RAG_OK);
    assert_int_equal(k.count, 1);
    assert_int_equal(k.len, 64);
}

/* The list in src/common/text.c, copied: the hash set must hold exactly these. */
static const char *const ref_stopwords[] = {
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
    "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself",
    "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "it's", "its", "itself",
    "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on",
    "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same",
    "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
    "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too",
    "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
    "yourselves",
};
#define N_REF_STOP (sizeof ref_stopwords / sizeof ref_stopwords[0])

static int ref_is_stopword(const char *w, size_t len)
{
    for (size_t i = 0; i < N_REF_STOP; i++)
        if (strlen(ref_stopwords[i]) == len && memcmp(ref_stopwords[i], w, len) == 0)
            return 1;
    return 0;
}

/* rag_is_stopword on an exact-size copy: no read past `len`. */
static int stop_exact(const char *w, size_t len)
{
    char *p = exact_copy(w, len);
    int r = rag_is_stopword(p, len);
    free(p);
    return r;
}

static void test_stopword_set(void **state)
{
    (void)state;
    size_t maxlen = 0;
    for (size_t i = 0; i < N_REF_STOP; i++) {
        const char *w = ref_stopwords[i];
        size_t l = strlen(w);
        if (l > maxlen)
            maxlen = l;
        if (stop_exact(w, l) != 1)
            fail_msg("\"%s\" is a stopword", w);
        char v[32];
        /* every proper prefix and every one-letter extension that is not itself listed */
        for (size_t p = 0; p < l; p++)
            assert_int_equal(stop_exact(w, p), ref_is_stopword(w, p));
        for (char c = 'a'; c <= 'z'; c++) {
            memcpy(v, w, l);
            v[l] = c;
            assert_int_equal(stop_exact(v, l + 1), ref_is_stopword(v, l + 1));
            v[l] = 0;
            assert_int_equal(stop_exact(v, l + 1), 0); /* a trailing NUL is no match */
        }
        /* case variants: the list is casefolded */
        memcpy(v, w, l);
        v[0] = (char)(v[0] - 32);
        assert_int_equal(stop_exact(v, l), 0);
        for (size_t j = 0; j < l; j++)
            v[j] = (v[j] >= 'a' && v[j] <= 'z') ? (char)(v[j] - 32) : v[j];
        assert_int_equal(stop_exact(v, l), 0);
    }
    assert_int_equal(maxlen, 10);
    assert_int_equal(stop_exact(B("The")), 0);
    assert_int_equal(stop_exact(B("th")), 0);
    assert_int_equal(stop_exact(B("thee")), 0);
    assert_int_equal(stop_exact(B("yourselvess")), 0);
    assert_int_equal(rag_is_stopword("", 0), 0);
    assert_int_equal(rag_is_stopword(NULL, 0), 0);
    assert_int_equal(rag_is_stopword(NULL, 3), 0);
    /* longer than the longest stopword: 0 without looking (a long read would be caught) */
    char lng[4096];
    memset(lng, 'a', sizeof lng);
    for (size_t l = maxlen + 1; l < sizeof lng; l = l * 2 + 1)
        assert_int_equal(stop_exact(lng, l), 0);
    memcpy(lng, "yourselves", 10);
    assert_int_equal(stop_exact(lng, 11), 0);
    assert_int_equal(stop_exact(lng, 10), 1);
    /* random words over the letters of the list and ': same answer as a linear search */
    uint64_t seed = 77;
    static const char alpha[] = "abcdefhilmnorstuvwy'";
    int hits = 0;
    for (int iter = 0; iter < 200000; iter++) {
        char w[16];
        size_t l = 1 + rng_next(&seed) % 11;
        for (size_t i = 0; i < l; i++)
            w[i] = alpha[rng_next(&seed) % (sizeof alpha - 1)];
        int want = ref_is_stopword(w, l);
        hits += want;
        if (rag_is_stopword(w, l) != want)
            fail_msg("rag_is_stopword(%.*s) != %d", (int)l, w, want);
    }
    assert_true(hits > 100); /* the sample did reach real stopwords */
    /* the tokenizer drops exactly the list (a word list in one string) */
    char text[2048];
    size_t tl = 0;
    for (size_t i = 0; i < N_REF_STOP; i++) {
        size_t l = strlen(ref_stopwords[i]);
        memcpy(text + tl, ref_stopwords[i], l);
        tl += l;
        text[tl++] = ' ';
    }
    memcpy(text + tl, "kept", 4);
    tl += 4;
    toks k;
    memset(&k, 0, sizeof k);
    assert_int_equal(rag_tokenize(text, tl, 1, on_tok, &k), RAG_OK);
    assert_string_equal(k.buf, "kept");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_boundaries),
        cmocka_unit_test(test_overlongs),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_bad_lead_bytes),
        cmocka_unit_test(test_continuation_and_truncation),
        cmocka_unit_test(test_explicit_lengths),
        cmocka_unit_test(test_exhaustive_short_sequences),
        cmocka_unit_test(test_repair_random),
        cmocka_unit_test(test_controls),
        cmocka_unit_test(test_combining_marks),
        cmocka_unit_test(test_long_combining_run),
        cmocka_unit_test(test_matches_utf8proc),
        cmocka_unit_test(test_casefold),
        cmocka_unit_test(test_ascii_fold_is_tolower),
        cmocka_unit_test(test_scripts),
        cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_stopwords),
        cmocka_unit_test(test_ascii_fast_path_differential),
        cmocka_unit_test(test_ascii_detection_every_position),
        cmocka_unit_test(test_tokenizer_mixed_ascii),
        cmocka_unit_test(test_stopword_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
