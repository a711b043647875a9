/* Unicode helpers on utf8proc: validation with offsets, repair, NFC, NFKC casefold, words. */
#include "rag_text.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "rag_common.h"

int rag_utf8_check(const char *s, size_t len, size_t *bad_offset)
{
    size_t off = 0;
    while (off < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)s + off,
                                              (utf8proc_ssize_t)(len - off), &cp);
        if (n < 0 || cp < 0) {
            if (bad_offset)
                *bad_offset = off;
            return rag_error_set(RAG_EUTF8, "invalid UTF-8 at byte offset %zu", off);
        }
        off += (size_t)n;
    }
    return RAG_OK;
}

int rag_utf8_repair(const char *s, size_t len, char **out, size_t *out_len)
{
    /* Worst case: every byte becomes U+FFFD (3 bytes). */
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return rag_error_set(RAG_ENOMEM, "out of memory repairing UTF-8");
    size_t off = 0, w = 0;
    while (off < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)s + off,
                                              (utf8proc_ssize_t)(len - off), &cp);
        if (n < 0 || cp < 0) {
            memcpy(buf + w, "\xEF\xBF\xBD", 3);
            w += 3;
            off += 1;
        } else {
            memcpy(buf + w, s + off, (size_t)n);
            w += (size_t)n;
            off += (size_t)n;
        }
    }
    buf[w] = 0;
    *out = buf;
    if (out_len)
        *out_len = w;
    return RAG_OK;
}

static int map_utf8proc(const char *s, size_t len, utf8proc_option_t opts, char **out,
                        size_t *out_len)
{
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &res,
                                      opts);
    if (n < 0) {
        free(res);
        if (n == UTF8PROC_ERROR_NOMEM)
            return rag_error_set(RAG_ENOMEM, "out of memory normalising text");
        return rag_error_set(RAG_EUTF8, "cannot normalise text: %s", utf8proc_errmsg(n));
    }
    *out = (char *)res;
    if (out_len)
        *out_len = (size_t)n;
    return RAG_OK;
}

int rag_utf8_nfc(const char *s, size_t len, char **out, size_t *out_len)
{
    char *nfc = NULL;
    size_t n = 0;
    int rc = map_utf8proc(s, len, UTF8PROC_STABLE | UTF8PROC_COMPOSE, &nfc, &n);
    if (rc)
        return rc;
    /* Strip control characters (C0 except \t \n, DEL, C1); \r\n and lone \r become \n.
     * Done after NFC: normalisation never produces control characters. */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)nfc[i];
        if (c == '\r') {
            if (i + 1 < n && nfc[i + 1] == '\n')
                continue;
            nfc[w++] = '\n';
        } else if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
            continue;
        } else if (c == 0xC2 && i + 1 < n && (unsigned char)nfc[i + 1] >= 0x80 &&
                   (unsigned char)nfc[i + 1] <= 0x9f) {
            i++; /* C1 control U+0080..U+009F */
        } else {
            nfc[w++] = (char)c;
        }
    }
    nfc[w] = 0;
    *out = nfc;
    if (out_len)
        *out_len = w;
    return RAG_OK;
}

int rag_utf8_nfkc_casefold(const char *s, size_t len, char **out, size_t *out_len)
{
    return map_utf8proc(s, len,
                        UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                            UTF8PROC_CASEFOLD | UTF8PROC_IGNORE,
                        out, out_len);
}

static int is_word_cp(utf8proc_int32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return 1;
    default:
        return 0;
    }
}

#define RAG_TOKEN_MAX 64

int rag_tokenize(const char *s, size_t len, int drop_stopwords, rag_token_fn fn, void *arg)
{
    size_t off = 0, start = 0, end = 0;
    int in_word = 0;
    while (off <= len) {
        utf8proc_int32_t cp = -1;
        utf8proc_ssize_t n = 1;
        if (off < len) {
            n = utf8proc_iterate((const utf8proc_uint8_t *)s + off,
                                 (utf8proc_ssize_t)(len - off), &cp);
            if (n <= 0) {
                n = 1;
                cp = -1;
            }
        }
        int word = cp >= 0 && is_word_cp(cp);
        /* An apostrophe or underscore between two word characters stays inside the word. */
        if (!word && in_word && (cp == '\'' || cp == '_' || cp == 0x2019) &&
            off + (size_t)n < len) {
            utf8proc_int32_t next;
            utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)s + off + n,
                                                  (utf8proc_ssize_t)(len - off - (size_t)n),
                                                  &next);
            if (m > 0 && is_word_cp(next))
                word = 1;
        }
        if (word) {
            if (!in_word) {
                start = off;
                in_word = 1;
            }
            end = off + (size_t)n;
        } else if (in_word) {
            in_word = 0;
            size_t tl = end - start;
            if (tl > RAG_TOKEN_MAX) {
                /* cut at a code point boundary */
                tl = RAG_TOKEN_MAX;
                while (tl > 0 && ((unsigned char)s[start + tl] & 0xC0) == 0x80)
                    tl--;
            }
            if (!(drop_stopwords && rag_is_stopword(s + start, tl))) {
                int rc = fn(arg, s + start, tl);
                if (rc)
                    return rc;
            }
        }
        off += (size_t)n;
    }
    return RAG_OK;
}

/* A compact English stopword list (the Lucene/Anserini default set plus common function
 * words), sorted for binary search. */
static const char *const stopwords[] = {
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

int rag_is_stopword(const char *w, size_t len)
{
    size_t lo = 0, hi = sizeof(stopwords) / sizeof(stopwords[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *sw = stopwords[mid];
        size_t sl = strlen(sw);
        int c = memcmp(w, sw, len < sl ? len : sl);
        if (c == 0)
            c = (len > sl) - (len < sl);
        if (c == 0)
            return 1;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}
