/*
 * Markdown through md4c: the text of the blocks, headings kept as structure hints for the
 * chunker, code blocks kept verbatim (they are often what a reader searches for), raw HTML
 * dropped (markup, not prose).
 *
 * Hostile input: md4c keeps its own heap stacks (100,000 nested quotes or lists are fine)
 * and is linear on the pathological cases we tried; but md4c 0.4.8 reads past the end of a
 * document that does not end in a newline (an unfinished link "[l](http://x" at the end
 * makes it look at the byte after the buffer, and even emit text from there).  Such a
 * document is parsed from a copy with the newline added, which changes nothing in its
 * Markdown meaning.
 */
#include <stdlib.h>
#include <string.h>

#include <libxml/HTMLparser.h>
#include <md4c.h>

#include "ingest_internal.h"

typedef struct md_state {
    rag_ingest_parsed *out;
    rag_ingest_textbuf tb;
    int heading;  /* level while inside a heading */
    int in_code;
    int in_html;
    int rc;
} md_state;

static int md_flush(md_state *st, int kind, int level)
{
    if (st->rc)
        return st->rc;
    if (st->tb.err)
        return st->rc = rag_error_set(RAG_ENOMEM, "out of memory parsing Markdown");
    if (st->tb.len)
        st->rc = rag_ingest__parsed_add(st->out, kind, level, st->tb.data, st->tb.len);
    rag_ingest__tb_reset(&st->tb);
    return st->rc;
}

static int md_enter_block(MD_BLOCKTYPE type, void *detail, void *ud)
{
    md_state *st = ud;
    switch (type) {
    case MD_BLOCK_H:
        md_flush(st, RAG_BLOCK_PARA, 0);
        st->heading = (int)((MD_BLOCK_H_DETAIL *)detail)->level;
        break;
    case MD_BLOCK_CODE:
        md_flush(st, RAG_BLOCK_PARA, 0);
        st->in_code = 1;
        break;
    case MD_BLOCK_HTML:
        md_flush(st, RAG_BLOCK_PARA, 0);
        st->in_html = 1;
        break;
    case MD_BLOCK_P: case MD_BLOCK_LI: case MD_BLOCK_TR: case MD_BLOCK_HR:
    case MD_BLOCK_QUOTE: case MD_BLOCK_TABLE:
        md_flush(st, RAG_BLOCK_PARA, 0);
        break;
    case MD_BLOCK_TH: case MD_BLOCK_TD:
        st->tb.pending_space = 1;
        break;
    default:
        break;
    }
    return st->rc;
}

static int md_leave_block(MD_BLOCKTYPE type, void *detail, void *ud)
{
    (void)detail;
    md_state *st = ud;
    switch (type) {
    case MD_BLOCK_H:
        md_flush(st, RAG_BLOCK_HEADING, st->heading);
        st->heading = 0;
        break;
    case MD_BLOCK_CODE:
        md_flush(st, RAG_BLOCK_CODE, 0);
        st->in_code = 0;
        break;
    case MD_BLOCK_HTML:
        rag_ingest__tb_reset(&st->tb);
        st->in_html = 0;
        break;
    case MD_BLOCK_P: case MD_BLOCK_LI: case MD_BLOCK_TR: case MD_BLOCK_QUOTE:
    case MD_BLOCK_TABLE: case MD_BLOCK_DOC:
        md_flush(st, RAG_BLOCK_PARA, 0);
        break;
    case MD_BLOCK_TH: case MD_BLOCK_TD:
        st->tb.pending_space = 1;
        break;
    default:
        break;
    }
    return st->rc;
}

static int md_enter_span(MD_SPANTYPE type, void *detail, void *ud)
{
    (void)type;
    (void)detail;
    (void)ud;
    return 0;
}

static int md_leave_span(MD_SPANTYPE type, void *detail, void *ud)
{
    (void)type;
    (void)detail;
    (void)ud;
    return 0;
}

static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* "&amp;", "&#233;", "&#xE9;" -> UTF-8; unknown names stay as written.  Named entities come
 * from libxml2's HTML table rather than a copy of our own. */
static void md_entity(md_state *st, const char *s, size_t n)
{
    char buf[8];
    if (n >= 4 && s[0] == '&' && s[1] == '#' && s[n - 1] == ';') {
        uint32_t cp = 0;
        int hex = s[2] == 'x' || s[2] == 'X';
        for (size_t i = hex ? 3 : 2; i + 1 < n; i++) {
            char c = s[i];
            int d = c >= '0' && c <= '9' ? c - '0'
                  : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                break;
            cp = cp * (hex ? 16u : 10u) + (uint32_t)d;
            if (cp > 0x10FFFF)
                cp = 0x110000;
        }
        rag_ingest__tb_raw(&st->tb, buf, utf8_put(buf, cp));
        return;
    }
    if (n >= 3 && n < 40 && s[0] == '&' && s[n - 1] == ';') {
        char name[40];
        memcpy(name, s + 1, n - 2);
        name[n - 2] = 0;
        const htmlEntityDesc *e = htmlEntityLookup((const xmlChar *)name);
        if (e) {
            rag_ingest__tb_raw(&st->tb, buf, utf8_put(buf, e->value));
            return;
        }
    }
    rag_ingest__tb_raw(&st->tb, s, n);
}

static int md_text(MD_TEXTTYPE type, const MD_CHAR *text, MD_SIZE size, void *ud)
{
    md_state *st = ud;
    if (st->in_html)
        return 0;
    switch (type) {
    case MD_TEXT_NULLCHAR:
        break; /* dropped, like every control character in the other formats (not U+FFFD:
                * a run of NULs must not become indexable text) */
    case MD_TEXT_BR:
    case MD_TEXT_SOFTBR:
        if (st->in_code)
            rag_ingest__tb_raw(&st->tb, "\n", 1);
        else
            st->tb.pending_space = 1;
        break;
    case MD_TEXT_ENTITY:
        md_entity(st, text, size);
        break;
    case MD_TEXT_HTML:
        break; /* inline tags */
    case MD_TEXT_CODE:
        if (st->in_code)
            rag_ingest__tb_raw(&st->tb, text, size);
        else /* inline code is running text */
            rag_ingest__tb_collapse(&st->tb, text, size);
        break;
    default:
        rag_ingest__tb_collapse(&st->tb, text, size);
        break;
    }
    return st->tb.err ? (st->rc = rag_error_set(RAG_ENOMEM, "out of memory parsing Markdown"))
                      : 0;
}

int rag_ingest__parse_markdown(const char *s, size_t len, rag_ingest_parsed *out)
{
    if (len >= (MD_SIZE)-1) /* room for the newline below */
        return rag_error_set(RAG_ETOOBIG, "Markdown document too large for the parser");
    md_state st;
    memset(&st, 0, sizeof st);
    st.out = out;
    rag_ingest__tb_init(&st.tb);
    MD_PARSER p;
    memset(&p, 0, sizeof p);
    p.abi_version = 0;
    p.flags = MD_FLAG_TABLES | MD_FLAG_STRIKETHROUGH | MD_FLAG_TASKLISTS |
              MD_FLAG_PERMISSIVEAUTOLINKS;
    p.enter_block = md_enter_block;
    p.leave_block = md_leave_block;
    p.enter_span = md_enter_span;
    p.leave_span = md_leave_span;
    p.text = md_text;
    char *copy = NULL;
    if (len && s[len - 1] != '\n') {
        copy = malloc(len + 2);
        if (!copy) {
            rag_ingest__tb_free(&st.tb);
            return rag_error_set(RAG_ENOMEM, "out of memory parsing Markdown");
        }
        memcpy(copy, s, len);
        copy[len] = '\n';
        copy[len + 1] = 0;
        s = copy;
        len++;
    }
    int mrc = md_parse(s, (MD_SIZE)len, &p, &st);
    free(copy);
    if (!st.rc && mrc == 0)
        md_flush(&st, RAG_BLOCK_PARA, 0);
    rag_ingest__tb_free(&st.tb);
    if (st.rc)
        return st.rc;
    if (mrc != 0)
        return rag_error_set(RAG_EPARSE, "Markdown parser failed (%d)", mrc);
    return RAG_OK;
}
