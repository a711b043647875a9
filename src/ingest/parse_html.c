/*
 * HTML through libxml2's HTML parser, hardened as described in parse_xml.c (which owns the
 * shared plumbing: the refusing entity loader and the error capture): no network, nothing
 * loaded from outside the document, never HTML_PARSE_HUGE, parser messages kept for
 * rag_error_last() instead of stderr.
 *
 * The parser runs in recovery mode: tag soup, truncated documents (cut inside a tag, an
 * attribute or a comment) and stray bytes give the text that could be read.  Only a fatal
 * error fails the document with RAG_EPARSE: it means the parser halted (libxml2 stops at a
 * nesting depth of 256 without HUGE; out of memory), and reading the half-built tree would
 * silently drop the rest of the document.
 *
 * Visible text is extracted with an iterative tree walk (no recursion: depth costs heap, not
 * C stack).  When the page has a main-content container (<main>, [role=main], Sphinx's
 * div.body / div.document) only that is read, so site navigation does not pollute every
 * chunk.  XHTML read by the XML parser (parse_xml.c) comes through the same walker; its
 * references to entities it does not declare (&nbsp; with an unloaded DTD) become the HTML
 * character, declared entities are never expanded.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/HTMLparser.h>
#include <libxml/parser.h>

#include "ingest_internal.h"

/* ---- element classification ---------------------------------------------------------- */

static int name_is(const xmlNode *n, const char *name)
{
    return n->name && !strcmp((const char *)n->name, name);
}

static int name_in(const xmlNode *n, const char *const *names)
{
    if (!n->name)
        return 0;
    for (; *names; names++)
        if (!strcmp((const char *)n->name, *names))
            return 1;
    return 0;
}

/* Value of attribute `name` when it is a plain text value (no allocation). */
static const char *attr(const xmlNode *n, const char *name)
{
    for (const xmlAttr *a = n->properties; a; a = a->next) {
        if (a->name && !strcmp((const char *)a->name, name)) {
            if (a->children && a->children->type == XML_TEXT_NODE && a->children->content)
                return (const char *)a->children->content;
            return "";
        }
    }
    return NULL;
}

static int has_token(const char *list, const char *tok)
{
    if (!list)
        return 0;
    size_t n = strlen(tok);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f')
            p++;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\f')
            p++;
        if ((size_t)(p - s) == n && !strncasecmp(s, tok, n))
            return 1;
    }
    return 0;
}

static int has_any_token(const char *list, const char *const *toks)
{
    if (!list)
        return 0;
    for (; *toks; toks++)
        if (has_token(list, *toks))
            return 1;
    return 0;
}

static const char *const SKIP_ELEMENTS[] = {
    "script", "style", "noscript", "template", "head", "title", "svg", "math", "nav",
    "aside", "footer", "form", "button", "select", "input", "textarea", "iframe", "object",
    "embed", "canvas", "audio", "video", "map", "link", "meta", NULL};
static const char *const SKIP_ROLES[] = {"navigation", "banner", "contentinfo", "search",
                                         "complementary", "menu", "menubar", "toolbar", NULL};
/* Navigation chrome of common generators (Sphinx first: the demo corpus). */
static const char *const SKIP_CLASSES[] = {"headerlink", "sphinxsidebar", "sphinxsidebarwrapper",
                                           "related", "mobile-nav", "menu-wrapper", "breadcrumb",
                                           "breadcrumbs", "navbar", "skip-link", NULL};
static const char *const BLOCK_ELEMENTS[] = {
    "address", "article", "aside", "blockquote", "body", "br", "caption", "center", "dd",
    "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
    "footer", "header", "hgroup", "hr", "html", "legend", "li", "main", "menu", "ol", "p",
    "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul", "option", NULL};

static int heading_level(const xmlNode *n)
{
    const char *s = (const char *)n->name;
    if (s && s[0] == 'h' && s[1] >= '1' && s[1] <= '6' && !s[2])
        return s[1] - '0';
    return 0;
}

/* ---- the walk ------------------------------------------------------------------------- */

typedef struct walker {
    rag_ingest_parsed *out;
    rag_ingest_textbuf tb;
    int skip_header;  /* no main container: a page-level <header> is chrome */
    int in_pre;       /* depth of <pre> */
    int heading;      /* level of the heading being read, 0 if none */
    int in_article;
    int rc;
} walker;

static void flush(walker *w, int kind, int level)
{
    if (w->rc)
        return;
    if (w->tb.err) {
        w->rc = rag_error_set(RAG_ENOMEM, "out of memory extracting text");
        return;
    }
    if (w->tb.len)
        w->rc = rag_ingest__parsed_add(w->out, kind, level, w->tb.data, w->tb.len);
    rag_ingest__tb_reset(&w->tb);
}

static void block_break(walker *w)
{
    if (w->heading) {
        w->tb.pending_space = 1; /* a block inside a heading: keep the heading whole */
    } else if (w->in_pre) {
        rag_ingest__tb_raw(&w->tb, "\n", 1);
    } else {
        flush(w, RAG_BLOCK_PARA, 0);
    }
}

static int is_skipped(const walker *w, const xmlNode *n)
{
    if (name_in(n, SKIP_ELEMENTS))
        return 1;
    if (w->skip_header && !w->in_article && name_is(n, "header"))
        return 1;
    if (attr(n, "hidden"))
        return 1;
    const char *aria = attr(n, "aria-hidden");
    if (aria && !strcasecmp(aria, "true"))
        return 1;
    return has_any_token(attr(n, "role"), SKIP_ROLES) ||
           has_any_token(attr(n, "class"), SKIP_CLASSES);
}

/* Returns 1 to descend into the children. */
static int enter(walker *w, xmlNode *n)
{
    switch (n->type) {
    case XML_TEXT_NODE:
    case XML_CDATA_SECTION_NODE:
        if (n->content) {
            size_t len = strlen((const char *)n->content);
            if (w->in_pre)
                rag_ingest__tb_raw(&w->tb, (const char *)n->content, len);
            else
                rag_ingest__tb_collapse(&w->tb, (const char *)n->content, len);
        }
        return 0;
    case XML_ENTITY_REF_NODE: { /* only in XHTML read by the XML parser */
        char ent[8];
        size_t en = rag_ingest__xml_entity_char(n, ent);
        if (en)
            rag_ingest__tb_raw(&w->tb, ent, en);
        return 0; /* a declared entity is never expanded */
    }
    case XML_ELEMENT_NODE:
        break;
    case XML_DOCUMENT_NODE:
    case XML_HTML_DOCUMENT_NODE:
        return 1;
    default:
        return 0; /* comments, PIs, DTD nodes */
    }
    if (is_skipped(w, n))
        return 0;
    int level = heading_level(n);
    if (level && !w->heading && !w->in_pre) {
        flush(w, RAG_BLOCK_PARA, 0);
        w->heading = level;
    } else if (name_is(n, "pre")) {
        if (!w->in_pre && !w->heading)
            flush(w, RAG_BLOCK_PARA, 0);
        w->in_pre++;
    } else if (name_in(n, BLOCK_ELEMENTS)) {
        block_break(w);
    } else if (name_is(n, "td") || name_is(n, "th")) {
        w->tb.pending_space = 1;
    }
    if (name_is(n, "article"))
        w->in_article++;
    return 1;
}

static void leave(walker *w, xmlNode *n)
{
    if (n->type != XML_ELEMENT_NODE)
        return;
    int level = heading_level(n);
    if (level && w->heading == level) {
        flush(w, RAG_BLOCK_HEADING, level);
        w->heading = 0;
    } else if (name_is(n, "pre") && w->in_pre) {
        if (--w->in_pre == 0 && !w->heading)
            flush(w, RAG_BLOCK_CODE, 0);
    } else if (name_in(n, BLOCK_ELEMENTS)) {
        block_break(w);
    } else if (name_is(n, "td") || name_is(n, "th")) {
        w->tb.pending_space = 1;
    }
    if (name_is(n, "article") && w->in_article)
        w->in_article--;
}

static void walk(walker *w, xmlNode *root)
{
    xmlNode *n = root;
    while (n && !w->rc) {
        int descend = enter(w, n);
        if (descend && n->children) {
            n = n->children;
            continue;
        }
        if (descend)
            leave(w, n);
        while (n != root && !n->next) {
            n = n->parent;
            leave(w, n);
        }
        if (n == root)
            break;
        n = n->next;
    }
    if (!w->rc)
        flush(w, w->heading ? RAG_BLOCK_HEADING : w->in_pre ? RAG_BLOCK_CODE : RAG_BLOCK_PARA,
              w->heading);
}

/* Find the first element matching `pred` in document order, iteratively. */
typedef int (*node_pred)(const xmlNode *n);

static xmlNode *find_first(xmlNode *root, node_pred pred)
{
    xmlNode *n = root;
    while (n) {
        if (n->type == XML_ELEMENT_NODE && pred(n))
            return n;
        int descend = n->type == XML_ELEMENT_NODE || n->type == XML_DOCUMENT_NODE ||
                      n->type == XML_HTML_DOCUMENT_NODE;
        /* never look for content inside script/template/head */
        if (n->type == XML_ELEMENT_NODE &&
            (name_is(n, "script") || name_is(n, "template") || name_is(n, "head") ||
             name_is(n, "style")))
            descend = 0;
        if (descend && n->children) {
            n = n->children;
            continue;
        }
        while (n != root && !n->next)
            n = n->parent;
        if (n == root)
            return NULL;
        n = n->next;
    }
    return NULL;
}

static int is_main(const xmlNode *n) { return name_is(n, "main"); }
static int is_role_main(const xmlNode *n) { return has_token(attr(n, "role"), "main"); }
static int is_div_body(const xmlNode *n) { return name_is(n, "div") && has_token(attr(n, "class"), "body"); }
static int is_div_document(const xmlNode *n)
{
    return name_is(n, "div") && has_token(attr(n, "class"), "document");
}
static int is_body(const xmlNode *n) { return name_is(n, "body"); }
static int is_head(const xmlNode *n) { return name_is(n, "head"); }

/* Text of `root`'s subtree, iteratively, without expanding entity references (unlike
 * xmlNodeGetContent, which would read a declared entity's content, and recurses to do so). */
static void subtree_text(xmlNode *root, rag_ingest_textbuf *tb)
{
    xmlNode *n = root->children;
    while (n) {
        if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && n->content) {
            rag_ingest__tb_collapse(tb, (const char *)n->content, strlen((const char *)n->content));
        } else if (n->type == XML_ENTITY_REF_NODE) {
            char ent[8];
            size_t en = rag_ingest__xml_entity_char(n, ent);
            if (en)
                rag_ingest__tb_raw(tb, ent, en);
        } else if (n->type == XML_ELEMENT_NODE && n->children) {
            n = n->children;
            continue;
        }
        while (n != root && !n->next)
            n = n->parent;
        if (n == root)
            return;
        n = n->next;
    }
}

/* The document's <title> (in <head>; an <svg> may carry titles of its own elsewhere). */
static int read_title(xmlNode *root, rag_ingest_parsed *out)
{
    xmlNode *head = find_first(root, is_head);
    for (xmlNode *c = head ? head->children : NULL; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || !name_is(c, "title"))
            continue;
        rag_ingest_textbuf tb;
        rag_ingest__tb_init(&tb);
        subtree_text(c, &tb);
        int rc = RAG_OK;
        if (tb.err)
            rc = rag_error_set(RAG_ENOMEM, "out of memory reading <title>");
        else if (tb.len)
            out->title = tb.data, tb.data = NULL;
        rag_ingest__tb_free(&tb);
        return rc;
    }
    return RAG_OK;
}

int rag_ingest__html_extract(struct _xmlDoc *doc, rag_ingest_parsed *out)
{
    walker w;
    memset(&w, 0, sizeof w);
    w.out = out;
    rag_ingest__tb_init(&w.tb);
    xmlNode *root = (xmlNode *)doc;
    xmlNode *start = NULL;
    int rc = read_title(root, out);
    if (rc)
        return rc;
    static const node_pred order[] = {is_main, is_role_main, is_div_body, is_div_document};
    for (size_t i = 0; i < sizeof order / sizeof order[0] && !start; i++)
        start = find_first(root, order[i]);
    if (!start) {
        w.skip_header = 1;
        start = find_first(root, is_body);
    }
    if (!start)
        start = root;
    walk(&w, start);
    rag_ingest__tb_free(&w.tb);
    return w.rc;
}

int rag_ingest__parse_html(const char *s, size_t len, rag_ingest_parsed *out)
{
    if (len > INT_MAX)
        return rag_error_set(RAG_ETOOBIG, "HTML document of %zu bytes exceeds the parser limit",
                             len);
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f'))
        i++;
    if (i == len)
        return RAG_OK; /* no text: the caller reports an empty document */
    rag_ingest_xml_session xs;
    rag_ingest__xml_enter(&xs);
    /* The bytes were validated (or repaired) as UTF-8 already: say so, so that a <meta
     * charset> naming another encoding cannot turn them into mojibake. */
    htmlDocPtr doc = htmlReadMemory(s, (int)len, NULL, "UTF-8",
                                    HTML_PARSE_NONET | HTML_PARSE_NOERROR |
                                        HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER |
                                        HTML_PARSE_NOBLANKS);
    rag_ingest__xml_leave(&xs);
    if (!doc || xs.fatal) {
        xmlFreeDoc(doc);
        return rag_error_set(RAG_EPARSE, "HTML could not be parsed%s%s", xs.fatal ? ": " : "",
                             xs.fatal ? xs.first : "");
    }
    int rc = rag_ingest__html_extract(doc, out);
    xmlFreeDoc(doc);
    return rc;
}
