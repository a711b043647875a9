/* Unicode and tokenisation helpers (utf8proc) shared by ingest, embed and index. */
#ifndef RAG_TEXT_H
#define RAG_TEXT_H

#include <stddef.h>

/* All functions here take explicit lengths (never strlen): embedded NULs are data, `s` may be
 * NULL when len is 0, and NULL with len > 0 is RAG_EINVAL.  Well-formed means Unicode table 3-7:
 * no overlongs (C0/C1 leads, E0 80..9F, F0 80..8F), no surrogates (ED A0..BF), nothing above
 * U+10FFFF (F4 90.., F5..FF), no lone continuation bytes, no truncated sequences.  U+0000 and
 * noncharacters are well-formed and accepted. */

/* RAG_OK, or RAG_EUTF8 with the offset of the first invalid byte in *bad_offset: the first byte
 * of the first ill-formed sequence (for a truncated "E2 82" it is the offset of E2). */
int rag_utf8_check(const char *s, size_t len, size_t *bad_offset);
/* Copy with every invalid sequence replaced by U+FFFD. Result malloc'd and NUL-terminated.
 * One U+FFFD per maximal subpart (Unicode ch. 3, as WHATWG/W3C decoders do): "E2 82 41" ->
 * U+FFFD "A"; "ED A0 80" (a surrogate) -> three U+FFFD, "F0 9F 98" at the end -> one. */
int rag_utf8_repair(const char *s, size_t len, char **out, size_t *out_len);
/* Valid UTF-8 in; NFC out with control characters other than \n and \t removed (\r\n and \r
 * become \n). Result malloc'd and NUL-terminated.
 * Removed: U+0000..U+001F but \t \n, U+007F, U+0080..U+009F (incl. NEL).  Kept: every non-Cc
 * character (ZWJ U+200D, soft hyphen U+00AD, BOM, U+2028/2029).  Controls go before composing,
 * so "e" U+0001 U+0301 gives U+00E9.  Compatibility forms (full-width, ligatures) are kept.
 * Invalid UTF-8 fails with RAG_EUTF8 naming the byte offset.  Linear time, also for long runs
 * of combining marks.  Idempotent. */
int rag_utf8_nfc(const char *s, size_t len, char **out, size_t *out_len);
/* Valid UTF-8 in; NFKC case-folded out (match keys). Result malloc'd and NUL-terminated.
 * Full case folding without Turkic rules: "Straße" -> "strasse", U+0130 -> "i" U+0307, dotless
 * U+0131 stays; final sigma folds to sigma; "ＡＢＣ１２３" -> "abc123", U+FB01 -> "fi".
 * Default-ignorables are dropped (ZWJ, ZWNJ, soft hyphen, variation selectors); controls are
 * kept (the tokenizer splits on them). */
int rag_utf8_nfkc_casefold(const char *s, size_t len, char **out, size_t *out_len);

/* Called once per token; a nonzero return stops tokenisation and is returned. */
typedef int (*rag_token_fn)(void *arg, const char *tok, size_t len);
/* Split NFKC-casefolded text into word tokens (runs of letters, digits, marks, and inner
 * apostrophes/underscores); tokens longer than 64 bytes are cut; stopwords dropped when
 * asked. `s` must be valid UTF-8.
 * Words are runs of general categories L*, M*, Nd/Nl/No, so scripts written without spaces
 * (Chinese, Japanese, Thai) give one token per run between punctuation or spaces, cut to its
 * first 64 bytes at a code point boundary (21 CJK characters) - no dictionary segmentation.
 * Symbols, emoji and punctuation separate words and are never tokens.  A nonzero `fn` return
 * stops and is returned; NULL `fn` is RAG_EINVAL. */
int rag_tokenize(const char *s, size_t len, int drop_stopwords, rag_token_fn fn, void *arg);
/* English stopword list (casefolded); 1 if w[0..len) is a stopword, else 0 (also for len 0). */
int rag_is_stopword(const char *w, size_t len);

#endif
