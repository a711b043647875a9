/*
 * Private pieces of the ingest module: the parsed-document model shared by the parsers and
 * the chunker, the parsers themselves, MIME detection and the chunker.
 *
 * Parsers turn bytes into a list of blocks (paragraphs, headings, code) instead of one flat
 * string so that the chunker can prefer cutting at headings and paragraph ends without
 * guessing structure back from whitespace.
 */
#ifndef RAG_MODULE_INGEST
#error "private header of the ingest module"
#endif

#ifndef RAG_INGEST_INTERNAL_H
#define RAG_INGEST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "rag_common.h"

/* ---- parsed document ------------------------------------------------------------------ */

typedef enum rag_ingest_block_kind {
    RAG_BLOCK_PARA = 0,    /* running text: collapsed whitespace */
    RAG_BLOCK_HEADING = 1, /* a heading: starts a new section */
    RAG_BLOCK_CODE = 2     /* preformatted text: newlines and indentation kept */
} rag_ingest_block_kind;

typedef struct rag_ingest_block {
    int kind;        /* rag_ingest_block_kind */
    int level;       /* heading level 1..6, else 0 */
    char *text;      /* malloc'd, NUL-terminated, never empty, no leading/trailing whitespace */
    size_t len;
} rag_ingest_block;

typedef struct rag_ingest_parsed {
    rag_ingest_block *blocks;
    size_t count, cap;
    char *title;     /* malloc'd title found in the content (HTML <title>), or NULL */
} rag_ingest_parsed;

void rag_ingest__parsed_init(rag_ingest_parsed *p);
void rag_ingest__parsed_clear(rag_ingest_parsed *p);
/* Append a block, copying `text` after trimming surrounding whitespace; empty text is
 * dropped silently. */
int rag_ingest__parsed_add(rag_ingest_parsed *p, int kind, int level, const char *text,
                           size_t len);

/* ---- an inline text accumulator used by the HTML and Markdown walkers ------------------ */

typedef struct rag_ingest_textbuf {
    char *data;
    size_t len, cap;
    int pending_space; /* a collapsed whitespace run waits to be written before more text */
    int err;           /* sticky RAG_ENOMEM */
} rag_ingest_textbuf;

void rag_ingest__tb_init(rag_ingest_textbuf *tb);
void rag_ingest__tb_free(rag_ingest_textbuf *tb);
void rag_ingest__tb_reset(rag_ingest_textbuf *tb);
/* Append raw bytes (no whitespace handling). */
void rag_ingest__tb_raw(rag_ingest_textbuf *tb, const char *s, size_t n);
/* Append text collapsing every ASCII whitespace run into one space (leading space of the
 * buffer dropped). */
void rag_ingest__tb_collapse(rag_ingest_textbuf *tb, const char *s, size_t n);

/* ---- parsers (input: valid UTF-8 without a BOM) ---------------------------------------- */

int rag_ingest__parse_text(const char *s, size_t len, rag_ingest_parsed *out);
int rag_ingest__parse_markdown(const char *s, size_t len, rag_ingest_parsed *out);
int rag_ingest__parse_html(const char *s, size_t len, rag_ingest_parsed *out);
/* XML through libxml2's XML parser (no entities substituted, no DTD, no network); an XHTML
 * document is walked like HTML. */
int rag_ingest__parse_xml(const char *s, size_t len, rag_ingest_parsed *out);
/* Process-wide libxml2 hardening (entity loader refusing everything); idempotent. */
void rag_ingest__xml_init(void);

/* ---- libxml2 plumbing shared by parse_html.c and parse_xml.c (defined in parse_xml.c) ---
 * Every libxml2 parse runs between rag_ingest__xml_enter() and rag_ingest__xml_leave() on one
 * thread.  Enter installs ragcore's error handlers (thread-local in libxml2 2.9; leave puts
 * the host's back), so diagnostics are captured here and never reach stderr, and marks the
 * thread so that the external-entity loader refuses whatever the parser asks for (outside
 * our parses it defers to the loader the host had). */
struct _xmlDoc;
struct _xmlNode;

typedef struct rag_ingest_xml_session {
    void (*saved_serror)(void); /* the host's handlers, kept as generic function pointers */
    void *saved_serror_ctx;
    void (*saved_gerror)(void);
    void *saved_gerror_ctx;
    int errors;      /* diagnostics of level error or fatal */
    int fatal;       /* fatal ones: the parser stopped (ill-formed, too deep, entity loop) */
    char first[256]; /* "line L, column C: message" of the first fatal, else the first error */
} rag_ingest_xml_session;

void rag_ingest__xml_enter(rag_ingest_xml_session *s);
void rag_ingest__xml_leave(rag_ingest_xml_session *s);
/* How many loads the external-entity loader has refused in this process (tests). */
unsigned long rag_ingest__xml_loads_refused(void);
/* An entity reference the document does not declare (an XHTML or DocBook file naming its DTD,
 * which is never loaded) whose name is an HTML entity: its character as UTF-8 in `out`,
 * returning the length; 0 otherwise.  Declared entities are never expanded. */
size_t rag_ingest__xml_entity_char(const struct _xmlNode *ref, char out[8]);
/* The (X)HTML text walker over a parsed tree (parse_html.c); XHTML read by the XML parser
 * goes through it too. */
int rag_ingest__html_extract(struct _xmlDoc *doc, rag_ingest_parsed *out);
/* The XML text walker over a parsed tree (DocBook, Mallard, XHTML, generic; parse_xml.c).
 * Both walkers are iterative: any tree depth costs heap, never C stack. */
int rag_ingest__xml_extract(struct _xmlDoc *doc, rag_ingest_parsed *out);

/* ---- phase timing (benchmarks) -------------------------------------------------------
 * Process-wide totals of the time prepare() spends in each phase, so a benchmark can report
 * where ingest time goes without a profiler.  Relaxed atomics: a few per document. */
typedef enum rag_ingest_phase {
    RAG_PHASE_VALIDATE = 0,  /* MIME detection, UTF-8 validation (and repair) */
    RAG_PHASE_PARSE = 1,     /* the format parser (HTML/XML/Markdown/text) */
    RAG_PHASE_NORMALIZE = 2, /* NFC and control-character stripping of every block */
    RAG_PHASE_CHUNK = 3,     /* joining, content-defined chunking, hashing */
    RAG_PHASE_STORE = 4,     /* the LMDB transaction of a put batch */
    RAG_PHASE_COUNT
} rag_ingest_phase;

typedef struct rag_ingest_phase_us {
    uint64_t us[RAG_PHASE_COUNT];
    uint64_t documents, bytes;
} rag_ingest_phase_us;

void rag_ingest__phase_add(rag_ingest_phase phase, uint64_t us);
void rag_ingest__phase_get(rag_ingest_phase_us *out);
void rag_ingest__phase_reset(void);
void rag_ingest__phase_doc(size_t bytes);

/* ---- MIME ----------------------------------------------------------------------------- */

typedef enum rag_ingest_format {
    RAG_FMT_TEXT = 0,
    RAG_FMT_MARKDOWN = 1,
    RAG_FMT_HTML = 2,
    RAG_FMT_XML = 3
} rag_ingest_format;

/* Resolve the format from the caller's MIME type, else from magic bytes, else from the
 * extension of `uri` or `doc_id`.  RAG_EUNSUPPORTED for unknown or binary types.
 * `*mime_out` is a static canonical MIME string. */
int rag_ingest__detect(const char *mime, const void *data, size_t size, const char *uri,
                       const char *doc_id, int *fmt_out, const char **mime_out);

/* Parse `s` (valid UTF-8) as `fmt` and NFC-normalise every block. */
int rag_ingest__parse(int fmt, const char *s, size_t len, rag_ingest_parsed *out);

/* ---- chunker -------------------------------------------------------------------------- */

typedef struct rag_ingest_chunk_cfg {
    size_t target, min, max, overlap;
} rag_ingest_chunk_cfg;

typedef struct rag_ingest_chunk {
    char *text;      /* malloc'd, NUL-terminated */
    size_t len;
} rag_ingest_chunk;

typedef struct rag_ingest_chunks {
    rag_ingest_chunk *items;
    size_t count, cap;
} rag_ingest_chunks;

/*
 * Content-defined chunking of parsed blocks (see chunk.c).  Every chunk is at most cfg->max
 * bytes (overlap included) and, whenever max - min leaves room for it, at least cfg->min
 * bytes unless it is the last one; cut points depend only on nearby content, so an edit
 * changes only the chunks around it.  Chunk texts are slices of the blocks, blocks joined by
 * a blank line, without leading or trailing whitespace.
 */
int rag_ingest__chunk(const rag_ingest_parsed *doc, const rag_ingest_chunk_cfg *cfg,
                      rag_ingest_chunks *out);
void rag_ingest__chunks_clear(rag_ingest_chunks *c);

/* The whole parsed text: blocks joined by a blank line (what the texts table stores). */
int rag_ingest__join(const rag_ingest_parsed *doc, char **out, size_t *out_len);

#endif
