/* Unicode and tokenisation helpers (utf8proc) shared by ingest, embed and index. */
#ifndef RAG_TEXT_H
#define RAG_TEXT_H

#include <stddef.h>

/* RAG_OK, or RAG_EUTF8 with the offset of the first invalid byte in *bad_offset. */
int rag_utf8_check(const char *s, size_t len, size_t *bad_offset);
/* Copy with every invalid sequence replaced by U+FFFD. Result malloc'd and NUL-terminated. */
int rag_utf8_repair(const char *s, size_t len, char **out, size_t *out_len);
/* Valid UTF-8 in; NFC out with control characters other than \n and \t removed (\r\n and \r
 * become \n). Result malloc'd and NUL-terminated. */
int rag_utf8_nfc(const char *s, size_t len, char **out, size_t *out_len);
/* Valid UTF-8 in; NFKC case-folded out (match keys). Result malloc'd and NUL-terminated. */
int rag_utf8_nfkc_casefold(const char *s, size_t len, char **out, size_t *out_len);

/* Called once per token; a nonzero return stops tokenisation and is returned. */
typedef int (*rag_token_fn)(void *arg, const char *tok, size_t len);
/* Split NFKC-casefolded text into word tokens (runs of letters, digits, marks, and inner
 * apostrophes/underscores); tokens longer than 64 bytes are cut; stopwords dropped when
 * asked. `s` must be valid UTF-8. */
int rag_tokenize(const char *s, size_t len, int drop_stopwords, rag_token_fn fn, void *arg);
/* English stopword list (casefolded). */
int rag_is_stopword(const char *w, size_t len);

#endif
