/* Sanitising retrieved (untrusted) text before it goes into a prompt; see assemble_internal.h. */
#include <stdlib.h>
#include <string.h>

#include "assemble_internal.h"
#include "rag_common.h"
#include "rag_text.h"

size_t rag_assemble__estimate_tokens(size_t bytes) { return bytes / 4 + (bytes % 4 != 0); }

typedef struct subst {
    const char *from;
    size_t from_len;
    const char *to;
} subst;

/* Look-alikes: U+2039/U+203A for angle brackets, U+FF5B/U+FF5D for braces.  They read the
 * same to a model and a human but can never match a fence line or a placeholder. */
#define LA "\xE2\x80\xB9" /* ‹ */
#define RA "\xE2\x80\xBA" /* › */
#define LB "\xEF\xBD\x9B" /* ｛ */
#define RB "\xEF\xBD\x9D" /* ｝ */

static const subst substs[] = {
    {"<<<", 3, LA LA LA},
    {">>>", 3, RA RA RA},
    {"{question}", 10, LB "question" RB},
    {"{context}", 9, LB "context" RB},
    {"</s>", 4, LA "/s" RA},
    {"<|", 2, LA "|"},
    {"|>", 2, "|" RA},
};
/* Longest replacement grows its match by at most 3x ("<<<" -> 9 bytes). */
#define GROWTH 3

int rag_assemble__sanitize(const char *s, size_t len, int single_line, char **out,
                           size_t *out_len)
{
    *out = NULL;
    if (!s)
        s = "", len = 0;
    char *repaired = NULL;
    size_t bad = 0;
    if (rag_utf8_check(s, len, &bad) != RAG_OK) {
        /* Retrieved text is data, not a caller error: keep what is readable. */
        int rc = rag_utf8_repair(s, len, &repaired, &len);
        if (rc)
            return rc;
        s = repaired;
    }
    char *nfc = NULL;
    size_t n = 0;
    int rc = rag_utf8_nfc(s, len, &nfc, &n); /* also strips C0/C1 controls but \n \t */
    free(repaired);
    if (rc)
        return rc;
    if (n > (SIZE_MAX - 1) / GROWTH) {
        free(nfc);
        return rag_error_set(RAG_ETOOBIG, "text too large to sanitise");
    }
    char *o = malloc(n * GROWTH + 1);
    if (!o) {
        free(nfc);
        return rag_error_set(RAG_ENOMEM, "sanitise: out of memory");
    }
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char c = (unsigned char)nfc[i];
        if (c == 0xE2 && i + 2 < n) {
            const unsigned char c1 = (unsigned char)nfc[i + 1], c2 = (unsigned char)nfc[i + 2];
            /* Bidi embeddings/overrides U+202A..U+202E and isolates U+2066..U+2069 can make
             * text display in another order than a model reads it: drop them. */
            if ((c1 == 0x80 && c2 >= 0xAA && c2 <= 0xAE) || (c1 == 0x81 && c2 >= 0xA6 && c2 <= 0xA9)) {
                i += 3;
                continue;
            }
            /* U+2028/U+2029 act as line breaks in some consumers: make them explicit. */
            if (c1 == 0x80 && (c2 == 0xA8 || c2 == 0xA9)) {
                o[w++] = single_line ? ' ' : '\n';
                i += 3;
                continue;
            }
        }
        int matched = 0;
        for (size_t j = 0; j < sizeof substs / sizeof substs[0]; j++) {
            const subst *t = &substs[j];
            if (n - i >= t->from_len && memcmp(nfc + i, t->from, t->from_len) == 0) {
                size_t tl = strlen(t->to);
                memcpy(o + w, t->to, tl);
                w += tl;
                i += t->from_len;
                matched = 1;
                break;
            }
        }
        if (matched)
            continue;
        if (single_line && (c == '\n' || c == '\t'))
            o[w++] = ' ';
        else
            o[w++] = (char)c;
        i++;
    }
    free(nfc);
    size_t start = 0;
    if (single_line) {
        while (start < w && o[start] == ' ')
            start++;
        while (w > start && o[w - 1] == ' ')
            w--;
        memmove(o, o + start, w - start);
        w -= start;
    }
    o[w] = 0;
    *out = o;
    if (out_len)
        *out_len = w;
    return RAG_OK;
}
