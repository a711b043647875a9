/* Unicode helpers on utf8proc: validation with offsets, repair, NFC, NFKC casefold, words. */
#include "rag_text.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "rag_common.h"

/* Decode one UTF-8 sequence from p[0..avail) (avail >= 1) by the Unicode ch. 3 table 3-7 of
 * well-formed byte sequences.  Returns its length (1..4) and sets *cp, or returns -k where k >= 1
 * is the length of the "maximal subpart" of the ill-formed sequence starting at p[0]: the longest
 * prefix that could still begin a well-formed sequence (at least the first byte).  Repair
 * replaces exactly those k bytes with one U+FFFD, as Unicode ch. 3 "U+FFFD Substitution of
 * Maximal Subparts" and the WHATWG/W3C decoders do; check reports the offset of p[0].  Our own
 * decoder rather than utf8proc_iterate, which only says "invalid" and not how far to skip. */
static int utf8_decode(const unsigned char *p, size_t avail, int32_t *cp)
{
    unsigned b = p[0];
    if (b < 0x80) {
        *cp = (int32_t)b;
        return 1;
    }
    int need;
    int32_t c;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {  /* C0, C1 would only encode overlongs of ASCII */
        need = 1;
        c = (int32_t)(b & 0x1F);
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = (int32_t)(b & 0x0F);
        if (b == 0xE0)
            lo = 0xA0; /* E0 80..9F xx: overlong */
        else if (b == 0xED)
            hi = 0x9F; /* ED A0..BF xx: UTF-16 surrogates D800..DFFF */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = (int32_t)(b & 0x07);
        if (b == 0xF0)
            lo = 0x90; /* F0 80..8F: overlong */
        else if (b == 0xF4)
            hi = 0x8F; /* F4 90..BF: above U+10FFFF */
    } else {
        return -1; /* lone continuation byte, C0, C1, F5..FF */
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= avail)
            return -i; /* truncated at the end of the input */
        unsigned t = p[i];
        if (t < lo || t > hi)
            return -i;
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (int32_t)(t & 0x3F);
    }
    *cp = c;
    return need + 1;
}

int rag_utf8_check(const char *s, size_t len, size_t *bad_offset)
{
    if (!s && len)
        return rag_error_set(RAG_EINVAL, "rag_utf8_check: NULL text with length %zu", len);
    const unsigned char *u = (const unsigned char *)s;
    size_t off = 0;
    while (off < len) {
        int32_t cp;
        int n = utf8_decode(u + off, len - off, &cp);
        if (n < 0) {
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
    if (!out || (!s && len))
        return rag_error_set(RAG_EINVAL, "rag_utf8_repair: NULL argument");
    *out = NULL;
    /* Worst case: every byte becomes U+FFFD (3 bytes). */
    if (len > (SIZE_MAX - 1) / 3)
        return rag_error_set(RAG_ETOOBIG, "text too large to repair (%zu bytes)", len);
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return rag_error_set(RAG_ENOMEM, "out of memory repairing UTF-8");
    const unsigned char *u = (const unsigned char *)s;
    size_t off = 0, w = 0;
    while (off < len) {
        int32_t cp;
        int n = utf8_decode(u + off, len - off, &cp);
        if (n < 0) {
            /* One U+FFFD per maximal subpart: "E2 82 41" is "\uFFFD" "A", not two U+FFFD. */
            memcpy(buf + w, "\xEF\xBF\xBD", 3);
            w += 3;
            off += (size_t)-n;
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

/* C0 controls but \t and \n, DEL, C1 (U+0080..U+009F): the Cc characters we never store. */
static int is_stripped_control(int32_t cp)
{
    return (cp < 0x20 && cp != '\t' && cp != '\n') || (cp >= 0x7F && cp <= 0x9F);
}

/* Decode, optionally strip controls, and decompose each code point (utf8proc_decompose_char,
 * which does not reorder) into buf[0..cap); with buf NULL only counts.  *count gets the number
 * of code points the decomposition needs. */
static int decompose_all(const unsigned char *u, size_t len, utf8proc_option_t opts,
                         int strip_controls, utf8proc_int32_t *buf, size_t cap, size_t *count)
{
    size_t off = 0, n = 0;
    int boundclass = UTF8PROC_BOUNDCLASS_START;
    while (off < len) {
        int32_t cp;
        int k = utf8_decode(u + off, len - off, &cp);
        if (k < 0)
            return rag_error_set(RAG_EUTF8, "cannot normalise text: invalid UTF-8 at byte offset %zu",
                                 off);
        off += (size_t)k;
        if (strip_controls) {
            if (cp == '\r') {
                if (off < len && u[off] == '\n')
                    continue; /* \r\n -> \n (the \n comes next) */
                cp = '\n';    /* lone \r (old Mac) -> \n */
            } else if (is_stripped_control(cp)) {
                continue;
            }
        }
        utf8proc_ssize_t m = utf8proc_decompose_char(cp, buf ? buf + n : NULL,
                                                     buf ? (utf8proc_ssize_t)(cap - n) : 0, opts,
                                                     &boundclass);
        if (m < 0) /* only with options we do not use (UTF8PROC_REJECTNA) */
            return rag_error_set(RAG_ERROR, "cannot normalise text: %s", utf8proc_errmsg(m));
        n += (size_t)m;
        if (buf && n > cap)
            return rag_error_set(RAG_ERROR, "normalisation: decomposition size changed");
        /* utf8proc_reencode works in utf8proc_ssize_t and needs 4 bytes per code point. */
        if (n > (size_t)(PTRDIFF_MAX / 8))
            return rag_error_set(RAG_ETOOBIG, "text too large to normalise");
    }
    *count = n;
    return RAG_OK;
}

/* Canonical ordering: stable sort of every run of non-starters (ccc != 0) by combining class.
 * utf8proc's own pass (inside utf8proc_decompose/utf8proc_map) is an in-place exchange sort,
 * quadratic in the run length: 40 000 alternating marks took 4.5 s and a 64 MiB document of
 * them would take days.  Short runs (the normal case) use insertion sort; long ones a stable
 * counting sort over the 255 classes, so the whole pass is linear. */
static int canonical_order(utf8proc_int32_t *buf, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (utf8proc_get_property(buf[i])->combining_class == 0) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n && utf8proc_get_property(buf[j])->combining_class != 0)
            j++;
        size_t run = j - i;
        if (run <= 32) {
            for (size_t a = i + 1; a < j; a++) {
                utf8proc_int32_t c = buf[a];
                int cc = utf8proc_get_property(c)->combining_class;
                size_t b = a;
                while (b > i && utf8proc_get_property(buf[b - 1])->combining_class > cc) {
                    buf[b] = buf[b - 1];
                    b--;
                }
                buf[b] = c;
            }
        } else {
            size_t pos[257] = {0};
            utf8proc_int32_t *tmp = malloc(run * sizeof *tmp);
            if (!tmp)
                return rag_error_set(RAG_ENOMEM, "out of memory normalising text");
            for (size_t a = i; a < j; a++)
                pos[utf8proc_get_property(buf[a])->combining_class + 1]++;
            for (int c = 1; c < 257; c++)
                pos[c] += pos[c - 1];
            for (size_t a = i; a < j; a++)
                tmp[pos[utf8proc_get_property(buf[a])->combining_class]++] = buf[a];
            memcpy(buf + i, tmp, run * sizeof *tmp);
            free(tmp);
        }
        i = j;
    }
    return RAG_OK;
}

/* Most text is ASCII, and ASCII is its own NFC and NFKC; its case fold is A-Z -> a-z and no
 * ASCII character is default-ignorable.  So ASCII input skips the code point pipeline (which
 * was a fifth of bulk ingest) and gives byte for byte what the full path gives. */
static int is_ascii(const unsigned char *u, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, u + i, 8);
        if (w & 0x8080808080808080ull)
            return 0;
    }
    for (; i < len; i++)
        if (u[i] & 0x80)
            return 0;
    return 1;
}

static int normalize_ascii(const unsigned char *u, size_t len, int casefold, int strip_controls,
                           char **out, size_t *out_len)
{
    char *buf = malloc(len + 1);
    if (!buf)
        return rag_error_set(RAG_ENOMEM, "out of memory normalising text");
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = u[i];
        if (strip_controls && (c < 0x20 || c == 0x7F) && c != '\t' && c != '\n') {
            if (c != '\r')
                continue;
            if (i + 1 < len && u[i + 1] == '\n')
                continue; /* \r\n -> \n (the \n comes next) */
            c = '\n';     /* lone \r (old Mac) -> \n */
        }
        if (casefold && c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        buf[w++] = (char)c;
    }
    buf[w] = 0;
    *out = buf;
    if (out_len)
        *out_len = w;
    return RAG_OK;
}

/* What utf8proc_map(s, len, opts) computes (decompose, canonical order, compose), but with
 * explicit lengths, a linear-time canonical ordering, the exact offset of invalid input, and
 * optional control stripping *before* normalisation: stripping afterwards could leave
 * "e" U+0301 behind from "e" U+0001 U+0301, which is not NFC. */
static int normalize(const char *s, size_t len, utf8proc_option_t opts, int strip_controls,
                     const char *what, char **out, size_t *out_len)
{
    if (!out || (!s && len))
        return rag_error_set(RAG_EINVAL, "%s: NULL argument", what);
    *out = NULL;
    if (out_len)
        *out_len = 0;
    const unsigned char *u = (const unsigned char *)s;
    if (is_ascii(u, len))
        return normalize_ascii(u, len, (opts & UTF8PROC_CASEFOLD) != 0, strip_controls, out,
                               out_len);
    size_t n = 0;
    int rc = decompose_all(u, len, opts, strip_controls, NULL, 0, &n);
    if (rc)
        return rc;
    utf8proc_int32_t *buf = malloc(n * sizeof *buf + 1);
    if (!buf)
        return rag_error_set(RAG_ENOMEM, "out of memory normalising text");
    size_t n2 = 0;
    rc = decompose_all(u, len, opts, strip_controls, buf, n, &n2);
    if (rc == RAG_OK)
        rc = canonical_order(buf, n2);
    if (rc) {
        free(buf);
        return rc;
    }
    /* Composition (linear) and UTF-8 encoding in place, NUL-terminated. */
    utf8proc_ssize_t m = utf8proc_reencode(buf, (utf8proc_ssize_t)n2, opts);
    if (m < 0) {
        free(buf);
        return rag_error_set(RAG_ERROR, "cannot normalise text: %s", utf8proc_errmsg(m));
    }
    char *res = realloc(buf, (size_t)m + 1);
    *out = res ? res : (char *)buf;
    if (out_len)
        *out_len = (size_t)m;
    return RAG_OK;
}

int rag_utf8_nfc(const char *s, size_t len, char **out, size_t *out_len)
{
    /* Controls go before NFC (see normalize); NFC itself never produces a control. */
    return normalize(s, len, UTF8PROC_STABLE | UTF8PROC_COMPOSE, 1, "rag_utf8_nfc", out, out_len);
}

int rag_utf8_nfkc_casefold(const char *s, size_t len, char **out, size_t *out_len)
{
    /* Controls stay: match keys are tokenized, and controls never end up inside a token. */
    return normalize(s, len,
                     UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD |
                         UTF8PROC_IGNORE,
                     0, "rag_utf8_nfkc_casefold", out, out_len);
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
    if (!fn || (!s && len))
        return rag_error_set(RAG_EINVAL, "rag_tokenize: NULL argument");
    size_t off = 0, start = 0, end = 0;
    int in_word = 0;
    while (off <= len) {
        utf8proc_int32_t cp = -1;
        utf8proc_ssize_t n = 1;
        if (off < len && (unsigned char)s[off] < 0x80) {
            cp = (unsigned char)s[off]; /* ASCII: no decoder call */
        } else if (off < len) {
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

/* A word is looked up on every token of every chunk, so the list is also kept as an
 * open-addressing hash set (built once; the sorted array stays the source of truth). */
#define STOP_SLOTS 512 /* power of two, > 3x the list */
static uint16_t stop_set[STOP_SLOTS]; /* index + 1 into stopwords; 0 = empty */
static size_t stop_maxlen;
static pthread_once_t stop_once = PTHREAD_ONCE_INIT;

static uint32_t stop_hash(const char *w, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)w[i]) * 16777619u;
    return h;
}

static void stop_init(void)
{
    for (size_t i = 0; i < sizeof(stopwords) / sizeof(stopwords[0]); i++) {
        size_t l = strlen(stopwords[i]);
        if (l > stop_maxlen)
            stop_maxlen = l;
        uint32_t j = stop_hash(stopwords[i], l) & (STOP_SLOTS - 1);
        while (stop_set[j])
            j = (j + 1) & (STOP_SLOTS - 1);
        stop_set[j] = (uint16_t)(i + 1);
    }
}

int rag_is_stopword(const char *w, size_t len)
{
    if (!w || len == 0)
        return 0; /* also keeps memcmp away from a NULL pointer */
    pthread_once(&stop_once, stop_init);
    if (len > stop_maxlen)
        return 0;
    for (uint32_t j = stop_hash(w, len) & (STOP_SLOTS - 1); stop_set[j];
         j = (j + 1) & (STOP_SLOTS - 1)) {
        const char *sw = stopwords[stop_set[j] - 1];
        if (strlen(sw) == len && memcmp(w, sw, len) == 0)
            return 1;
    }
    return 0;
}
