/* Parsed-document model, inline text accumulator, plain-text parser, MIME detection and the
 * parse dispatcher (which also NFC-normalises every block). */
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "ingest_internal.h"
#include "rag_text.h"

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* ---- parsed document ------------------------------------------------------------------ */

void rag_ingest__parsed_init(rag_ingest_parsed *p) { memset(p, 0, sizeof *p); }

void rag_ingest__parsed_clear(rag_ingest_parsed *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->count; i++)
        free(p->blocks[i].text);
    free(p->blocks);
    free(p->title);
    memset(p, 0, sizeof *p);
}

int rag_ingest__parsed_add(rag_ingest_parsed *p, int kind, int level, const char *text,
                           size_t len)
{
    while (len && is_ws((unsigned char)text[0]))
        text++, len--;
    while (len && is_ws((unsigned char)text[len - 1]))
        len--;
    if (!len)
        return RAG_OK;
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        rag_ingest_block *b = realloc(p->blocks, cap * sizeof *b);
        if (!b)
            return rag_error_set(RAG_ENOMEM, "out of memory collecting text blocks");
        p->blocks = b;
        p->cap = cap;
    }
    char *t = rag_strndup(text, len);
    if (!t)
        return rag_error_set(RAG_ENOMEM, "out of memory collecting text blocks");
    rag_ingest_block *b = &p->blocks[p->count++];
    b->kind = kind;
    b->level = kind == RAG_BLOCK_HEADING ? (level < 1 ? 1 : level > 6 ? 6 : level) : 0;
    b->text = t;
    b->len = len;
    return RAG_OK;
}

int rag_ingest__join(const rag_ingest_parsed *doc, char **out, size_t *out_len)
{
    size_t total = 1;
    for (size_t i = 0; i < doc->count; i++)
        total += doc->blocks[i].len + 2;
    char *s = malloc(total);
    if (!s)
        return rag_error_set(RAG_ENOMEM, "out of memory joining text");
    size_t w = 0;
    for (size_t i = 0; i < doc->count; i++) {
        if (i) {
            s[w++] = '\n';
            s[w++] = '\n';
        }
        memcpy(s + w, doc->blocks[i].text, doc->blocks[i].len);
        w += doc->blocks[i].len;
    }
    s[w] = 0;
    *out = s;
    *out_len = w;
    return RAG_OK;
}

/* ---- text accumulator ----------------------------------------------------------------- */

void rag_ingest__tb_init(rag_ingest_textbuf *tb) { memset(tb, 0, sizeof *tb); }
void rag_ingest__tb_free(rag_ingest_textbuf *tb)
{
    free(tb->data);
    memset(tb, 0, sizeof *tb);
}
void rag_ingest__tb_reset(rag_ingest_textbuf *tb)
{
    tb->len = 0;
    tb->pending_space = 0;
}

static int tb_reserve(rag_ingest_textbuf *tb, size_t n)
{
    if (tb->err)
        return 0;
    if (tb->len + n + 1 <= tb->cap)
        return 1;
    size_t cap = tb->cap ? tb->cap : 256;
    while (cap < tb->len + n + 1)
        cap *= 2;
    char *d = realloc(tb->data, cap);
    if (!d) {
        tb->err = RAG_ENOMEM;
        return 0;
    }
    tb->data = d;
    tb->cap = cap;
    return 1;
}

void rag_ingest__tb_raw(rag_ingest_textbuf *tb, const char *s, size_t n)
{
    if (!n || !tb_reserve(tb, n + 1))
        return;
    if (tb->pending_space && tb->len) {
        tb->data[tb->len++] = ' ';
    }
    tb->pending_space = 0;
    memcpy(tb->data + tb->len, s, n);
    tb->len += n;
    tb->data[tb->len] = 0;
}

void rag_ingest__tb_collapse(rag_ingest_textbuf *tb, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (is_ws((unsigned char)s[i])) {
            tb->pending_space = 1;
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !is_ws((unsigned char)s[j]))
            j++;
        rag_ingest__tb_raw(tb, s + i, j - i);
        i = j;
    }
}

/* ---- plain text ----------------------------------------------------------------------- */

/* Paragraphs are separated by blank lines; line breaks inside a paragraph are kept (they
 * often carry meaning in plain text: lists, addresses, verse), trailing blanks are not. */
int rag_ingest__parse_text(const char *s, size_t len, rag_ingest_parsed *out)
{
    rag_ingest_textbuf tb;
    rag_ingest__tb_init(&tb);
    size_t i = 0;
    int rc = RAG_OK;
    while (i <= len && !rc) {
        size_t e = i;
        while (e < len && s[e] != '\n')
            e++;
        size_t le = e;
        while (le > i && is_ws((unsigned char)s[le - 1]))
            le--;
        if (le == i) { /* blank line (or end): close the paragraph */
            rc = rag_ingest__parsed_add(out, RAG_BLOCK_PARA, 0, tb.data ? tb.data : "", tb.len);
            rag_ingest__tb_reset(&tb);
        } else {
            if (tb.len)
                rag_ingest__tb_raw(&tb, "\n", 1);
            rag_ingest__tb_raw(&tb, s + i, le - i);
        }
        if (e >= len)
            break;
        i = e + 1;
    }
    if (!rc && tb.len)
        rc = rag_ingest__parsed_add(out, RAG_BLOCK_PARA, 0, tb.data, tb.len);
    if (!rc && tb.err)
        rc = rag_error_set(RAG_ENOMEM, "out of memory parsing text");
    rag_ingest__tb_free(&tb);
    return rc;
}

/* ---- MIME detection ------------------------------------------------------------------- */

static int ieq_prefix(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (len < n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return 0;
    }
    return 1;
}

static int icontains(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = 0; i + n <= len; i++)
        if (ieq_prefix(s + i, len - i, lit))
            return 1;
    return 0;
}

static int fmt_from_ext(const char *path, int *fmt)
{
    if (!path || !*path)
        return 0;
    size_t end = strcspn(path, "?#");
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t dot = end;
    while (dot > start && path[dot - 1] != '.')
        dot--;
    if (dot == start)
        return 0;
    const char *ext = path + dot;
    size_t n = end - dot;
    static const struct { const char *ext; int fmt; } map[] = {
        {"html", RAG_FMT_HTML}, {"htm", RAG_FMT_HTML}, {"xhtml", RAG_FMT_HTML},
        {"md", RAG_FMT_MARKDOWN}, {"markdown", RAG_FMT_MARKDOWN}, {"mdown", RAG_FMT_MARKDOWN},
        {"txt", RAG_FMT_TEXT}, {"text", RAG_FMT_TEXT}, {"xml", RAG_FMT_XML},
        {"dbk", RAG_FMT_XML}, {"docbook", RAG_FMT_XML}, {"page", RAG_FMT_XML}, /* Mallard */
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strlen(map[i].ext) == n && ieq_prefix(ext, n, map[i].ext)) {
            *fmt = map[i].fmt;
            return 1;
        }
    }
    return 0;
}

static const char *fmt_mime(int fmt)
{
    switch (fmt) {
    case RAG_FMT_MARKDOWN: return "text/markdown";
    case RAG_FMT_HTML: return "text/html";
    case RAG_FMT_XML: return "application/xml";
    default: return "text/plain";
    }
}

/* Signatures of binary formats we do not read (the NUL test catches most others). */
static int binary_magic(const unsigned char *s, size_t n)
{
    static const struct { const char *magic; size_t len; } sigs[] = {
        {"%PDF-", 5}, {"PK\x03\x04", 4}, {"\x1f\x8b", 2} /* gzip */, {"\x89PNG", 4},
        {"\xFF\xD8\xFF", 3} /* JPEG */, {"GIF87a", 6}, {"GIF89a", 6},
        {"\x28\xB5\x2F\xFD", 4} /* zstd */, {"\xFD" "7zXZ", 5},
        {"\x7F" "ELF", 4}, {"\xD0\xCF\x11\xE0", 4} /* OLE2 (old Office) */,
        {"\xFF\xFE", 2}, {"\xFE\xFF", 2} /* UTF-16: not UTF-8 text */,
    };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (n >= sigs[i].len && !memcmp(s, sigs[i].magic, sigs[i].len))
            return 1;
    return 0;
}

/* Control bytes (other than whitespace and ESC) are rare in text: more than 1 in 16 bytes
 * of the probe, or any NUL, says binary. */
static int looks_binary(const unsigned char *s, size_t n)
{
    size_t ctl = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == 0)
            return 1;
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v' &&
            c != 0x1B)
            ctl++;
    }
    return ctl * 16 > n;
}

/* After leading comments and whitespace: does the text start with an XML root element that
 * declares a namespace (Mallard, DocBook 5, any XML vocabulary without a prolog)?  1: XML,
 * 2: an XHTML element (read as HTML), 0: no. */
static int xml_root_with_namespace(const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        while (i < n && is_ws((unsigned char)p[i]))
            i++;
        if (n - i >= 4 && !memcmp(p + i, "<!--", 4)) {
            size_t j = i + 4;
            while (j + 3 <= n && memcmp(p + j, "-->", 3))
                j++;
            if (j + 3 > n)
                return 0;
            i = j + 3;
            continue;
        }
        break;
    }
    if (i >= n || p[i] != '<')
        return 0;
    size_t j = i + 1;
    if (j >= n || !((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z') || p[j] == '_'))
        return 0;
    if (ieq_prefix(p + j, n - j, "html"))
        return 0;
    size_t end = j; /* the start tag */
    while (end < n && p[end] != '>')
        end++;
    if (!icontains(p + j, end - j, "xmlns=") && !icontains(p + j, end - j, "xmlns:"))
        return 0;
    return icontains(p + j, end - j, "www.w3.org/1999/xhtml") ? 2 : 1;
}

int rag_ingest__detect(const char *mime, const void *data, size_t size, const char *uri,
                       const char *doc_id, int *fmt_out, const char **mime_out)
{
    const char *s = data;
    int fmt;
    if (mime && *mime) {
        /* "type/subtype; charset=..." -> compare the bare type, case-insensitively */
        size_t n = strcspn(mime, ";");
        while (n && is_ws((unsigned char)mime[n - 1]))
            n--;
        while (n && is_ws((unsigned char)*mime))
            mime++, n--;
#define IS(lit) (n == strlen(lit) && ieq_prefix(mime, n, lit))
        if (IS("text/plain"))
            fmt = RAG_FMT_TEXT;
        else if (IS("text/markdown") || IS("text/x-markdown"))
            fmt = RAG_FMT_MARKDOWN;
        else if (IS("text/html") || IS("application/xhtml+xml"))
            fmt = RAG_FMT_HTML;
        else if (IS("text/xml") || IS("application/xml") ||
                 (n > 4 && ieq_prefix(mime + n - 4, 4, "+xml")))
            fmt = RAG_FMT_XML;
        else if (ieq_prefix(mime, n, "text/"))
            fmt = RAG_FMT_TEXT; /* csv, x-rst, ...: readable as plain text */
        else
            return rag_error_set(RAG_EUNSUPPORTED, "unsupported MIME type '%.*s'", (int)n, mime);
#undef IS
        *fmt_out = fmt;
        *mime_out = fmt_mime(fmt);
        return RAG_OK;
    }

    /* Order: the caller's type (above), then magic bytes, then the extension.
     * Binary formats we do not read: say so rather than failing later on UTF-8. */
    size_t probe = size < 8192 ? size : 8192;
    if (binary_magic((const unsigned char *)s, size) ||
        looks_binary((const unsigned char *)s, probe))
        return rag_error_set(RAG_EUNSUPPORTED, "binary content (no MIME type given)");

    size_t i = 0;
    if (size >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
        i = 3;
    while (i < size && is_ws((unsigned char)s[i]))
        i++;
    const char *p = s + i;
    size_t rest = size - i;
    size_t head = rest < 1024 ? rest : 1024;
    int xr;
    if (ieq_prefix(p, rest, "<!doctype html") || ieq_prefix(p, rest, "<html"))
        fmt = RAG_FMT_HTML;
    else if (ieq_prefix(p, rest, "<?xml"))
        fmt = icontains(p, head, "<html") ? RAG_FMT_HTML : RAG_FMT_XML;
    else if (ieq_prefix(p, rest, "<!doctype ")) /* DocBook and other XML with a DTD */
        fmt = RAG_FMT_XML;
    else if ((xr = xml_root_with_namespace(p, head)) != 0)
        fmt = xr == 2 ? RAG_FMT_HTML : RAG_FMT_XML;
    else if (fmt_from_ext(uri, &fmt) || fmt_from_ext(doc_id, &fmt))
        ;
    else if (rest && p[0] == '<' &&
             (icontains(p, head, "<head") || icontains(p, head, "<body") ||
              icontains(p, head, "<p>") || icontains(p, head, "<div")))
        fmt = RAG_FMT_HTML;
    else if (rest >= 2 && p[0] == '#' && (p[1] == ' ' || p[1] == '#'))
        fmt = RAG_FMT_MARKDOWN;
    else
        fmt = RAG_FMT_TEXT;
    *fmt_out = fmt;
    *mime_out = fmt_mime(fmt);
    return RAG_OK;
}

/* ---- dispatcher ----------------------------------------------------------------------- */

int rag_ingest__parse(int fmt, const char *s, size_t len, rag_ingest_parsed *out)
{
    if (len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
        s += 3, len -= 3;
    rag_ingest_parsed raw;
    rag_ingest__parsed_init(&raw);
    int rc;
    uint64_t t0 = rag_mono_us();
    switch (fmt) {
    case RAG_FMT_MARKDOWN: rc = rag_ingest__parse_markdown(s, len, &raw); break;
    case RAG_FMT_HTML: rc = rag_ingest__parse_html(s, len, &raw); break;
    case RAG_FMT_XML: rc = rag_ingest__parse_xml(s, len, &raw); break;
    default: rc = rag_ingest__parse_text(s, len, &raw); break;
    }
    uint64_t t1 = rag_mono_us();
    rag_ingest__phase_add(RAG_PHASE_PARSE, t1 - t0);
    /* NFC block by block: a block separator is a starter, so the result equals NFC of the
     * joined text; control characters go too (rag_utf8_nfc). */
    for (size_t i = 0; !rc && i < raw.count; i++) {
        char *nfc = NULL;
        size_t n = 0;
        rc = rag_utf8_nfc(raw.blocks[i].text, raw.blocks[i].len, &nfc, &n);
        if (!rc) {
            rc = rag_ingest__parsed_add(out, raw.blocks[i].kind, raw.blocks[i].level, nfc, n);
            free(nfc);
        }
    }
    if (!rc && raw.title) {
        char *nfc = NULL;
        size_t n = 0;
        rc = rag_utf8_nfc(raw.title, strlen(raw.title), &nfc, &n);
        if (!rc) {
            /* one line, collapsed */
            rag_ingest_textbuf tb;
            rag_ingest__tb_init(&tb);
            rag_ingest__tb_collapse(&tb, nfc, n);
            free(nfc);
            if (tb.err)
                rc = rag_error_set(RAG_ENOMEM, "out of memory");
            else if (tb.len)
                out->title = tb.data, tb.data = NULL;
            rag_ingest__tb_free(&tb);
        }
    }
    rag_ingest__parsed_clear(&raw);
    rag_ingest__phase_add(RAG_PHASE_NORMALIZE, rag_mono_us() - t1);
    return rc;
}

/* ---- phase timing ------------------------------------------------------------------- */

static _Atomic uint64_t phase_us[RAG_PHASE_COUNT], phase_docs, phase_bytes;

void rag_ingest__phase_add(rag_ingest_phase phase, uint64_t us)
{
    if ((unsigned)phase < RAG_PHASE_COUNT)
        atomic_fetch_add_explicit(&phase_us[phase], us, memory_order_relaxed);
}

void rag_ingest__phase_get(rag_ingest_phase_us *out)
{
    for (int i = 0; i < RAG_PHASE_COUNT; i++)
        out->us[i] = atomic_load_explicit(&phase_us[i], memory_order_relaxed);
    out->documents = atomic_load_explicit(&phase_docs, memory_order_relaxed);
    out->bytes = atomic_load_explicit(&phase_bytes, memory_order_relaxed);
}

void rag_ingest__phase_reset(void)
{
    for (int i = 0; i < RAG_PHASE_COUNT; i++)
        atomic_store(&phase_us[i], 0);
    atomic_store(&phase_docs, 0);
    atomic_store(&phase_bytes, 0);
}

/* Count one prepared document of `bytes` bytes (called by prepare()). */
void rag_ingest__phase_doc(size_t bytes)
{
    atomic_fetch_add_explicit(&phase_docs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&phase_bytes, bytes, memory_order_relaxed);
}
