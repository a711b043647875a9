/* Private to the assemble module: text sanitising and the token estimate, exposed for tests. */
#ifndef RAG_MODULE_ASSEMBLE
#error "private header of the assemble module"
#endif
#ifndef RAG_ASSEMBLE_INTERNAL_H
#define RAG_ASSEMBLE_INTERNAL_H

#include <stddef.h>

#include "rag_assemble_api.h"

#define RAG_ASSEMBLE_FORMAT 1u
#define RAG_ASSEMBLE_BUDGET_DEFAULT 2048u
/* A block that does not fit whole is truncated only when at least this many tokens remain;
 * a sliver of a source is worth less than its fence and citation. */
#define RAG_ASSEMBLE_TRUNCATE_MIN_TOKENS 100u
#define RAG_ASSEMBLE_TITLE_MAX 200u  /* bytes of a title shown in a citation */
#define RAG_ASSEMBLE_URI_MAX 512u    /* bytes of a uri shown in a citation */

/* The built-in template, stored under "default" in the templates table on first open. */
extern const char rag_assemble__default_template[];

/* Token estimate used for the budget: one token per 4 bytes of UTF-8, rounded up.  Crude,
 * but tokenizer-independent, monotonic in the text length and conservative for English
 * (BPE tokenizers average ~4.5 bytes per token on prose). */
size_t rag_assemble__estimate_tokens(size_t bytes);

/* Make untrusted text safe to place inside a fence: invalid UTF-8 repaired, NFC, control
 * characters stripped (\n and \t kept; \r\n -> \n), Unicode bidi controls removed, and
 * every sequence that could forge prompt structure replaced by a look-alike:
 *   "<<<" -> "‹‹‹"  ">>>" -> "›››"  (fence delimiters)
 *   "{question}" / "{context}" -> "｛question｝" / "｛context｝"  (template placeholders)
 *   "<|" -> "‹|"  "|>" -> "|›"  "</s>" -> "‹/s›"  (chat special tokens)
 * single_line: newlines and tabs become spaces and the result is trimmed (titles, uris).
 * Result malloc'd and NUL-terminated. */
int rag_assemble__sanitize(const char *s, size_t len, int single_line, char **out,
                           size_t *out_len);

#endif
