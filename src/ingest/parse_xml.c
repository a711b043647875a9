/*
 * XML through libxml2, and the libxml2 hardening every ingest parse (XML and HTML) shares.
 *
 * Safety (issue 4): no network (XML_PARSE_NONET), no DTD loading, no entity substitution
 * (never XML_PARSE_NOENT), no XInclude processing (never XML_PARSE_XINCLUDE, and xi:include
 * elements are skipped), never XML_PARSE_HUGE, and an external-entity loader that refuses
 * everything asked during our parses (XML_PARSE_NONET alone still loads file://).  Parser
 * diagnostics go to a handler that keeps the first one for rag_error_last(); nothing is
 * written to stderr.
 *
 * Limits, decided here and in parse_html.c:
 *   - nesting: libxml2 without XML_PARSE_HUGE stops at depth 256 for XML and HTML alike; that
 *     is a fatal error and the document fails with RAG_EPARSE ("Excessive depth").  A halted
 *     parse is never read as partial text: the rest of the document would silently vanish.
 *     Our walkers are iterative with their state on the heap, so no depth, whatever libxml2
 *     lets through, can overflow the C stack.
 *   - entities: references to declared entities stay unexpanded nodes and the walker skips
 *     them; libxml2 itself rejects entity loops and amplification ("billion laughs") with
 *     RAG_EPARSE in well under a second.  Only an undeclared reference whose name is an HTML
 *     entity (&mdash; in a DocBook or XHTML file whose DTD we do not load) becomes that one
 *     character: bounded, and not document-controlled content.
 *   - size: the caller checks max_doc_bytes before parsing (ingest.c); above INT_MAX bytes
 *     libxml2 cannot take the buffer at all (RAG_ETOOBIG).  Without HUGE libxml2 also refuses
 *     a single text node or name over its limits (10 MB of text): RAG_EPARSE, for HTML too.
 *
 * Reading: the root element picks a vocabulary.  XHTML goes to the HTML walker.  DocBook
 * (4 without namespace, 5 with) and Mallard have tables of element roles: sections nest,
 * a section's title is a heading whose level is the section depth (the root section is
 * level 1 and its title the document title), paragraphs are paragraph blocks, program
 * listings/screens code blocks, metadata (<info>, <bookinfo>, Mallard credits, links and
 * editorial comments) is skipped except a section title kept there.  Any other XML is read
 * by shape: an element whose parent holds running text is inline, any other element is a
 * block, and a <title> child is a heading.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/HTMLparser.h>
#include <libxml/entities.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

#include "ingest_internal.h"

/* ---- process-wide hardening ----------------------------------------------------------- */

static _Thread_local int in_our_parse; /* this thread is inside rag_ingest__xml_enter/leave */
static atomic_ulong loads_refused;
/* what was installed before ours; atomic: read by every load, written under loader_mu */
static _Atomic(xmlExternalEntityLoader) host_loader;
static pthread_mutex_t loader_mu = PTHREAD_MUTEX_INITIALIZER;

static xmlParserInputPtr refusing_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    xmlExternalEntityLoader host = atomic_load_explicit(&host_loader, memory_order_acquire);
    if (in_our_parse || !host) {
        /* documents never load anything from outside themselves */
        atomic_fetch_add_explicit(&loads_refused, 1, memory_order_relaxed);
        return NULL;
    }
    /* someone else's parse in this process (the host uses libxml2 too): not ours to police */
    return host(url, id, ctxt);
}

/* Install our loader unless it is the current one.  Checked on every parse, not only once:
 * a host that sets its own loader after rag_open would otherwise switch our protection off
 * (its loader then becomes the fallback for its own parses). */
static void ensure_loader(void)
{
    pthread_mutex_lock(&loader_mu);
    xmlExternalEntityLoader cur = xmlGetExternalEntityLoader();
    if (cur != refusing_loader) {
        atomic_store_explicit(&host_loader, cur, memory_order_release);
        xmlSetExternalEntityLoader(refusing_loader);
    }
    pthread_mutex_unlock(&loader_mu);
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void sort_vocabularies(void);

static void xml_init_once(void)
{
    xmlInitParser();
    sort_vocabularies();
}

void rag_ingest__xml_init(void)
{
    pthread_once(&xml_once, xml_init_once);
    ensure_loader();
}

unsigned long rag_ingest__xml_loads_refused(void)
{
    return atomic_load_explicit(&loads_refused, memory_order_relaxed);
}

/* ---- error capture -------------------------------------------------------------------- */

static void on_structured_error(void *ctx, xmlErrorPtr err)
{
    rag_ingest_xml_session *s = ctx;
    if (!s || !err || err->level < XML_ERR_ERROR)
        return;
    s->errors++;
    /* XML_ERR_NO_MEMORY also stops the parser, at level "error": libxml2 raises it for a text
     * node over 10 MB without HUGE too, and the HTML parser would then end the document there
     * without a fatal error (silently truncated text). */
    int fatal = err->level == XML_ERR_FATAL || err->code == XML_ERR_NO_MEMORY;
    /* keep the first fatal error (the one that stopped the parser), else the first error */
    if (s->errors == 1 || (fatal && !s->fatal)) {
        const char *msg = err->message ? err->message : "parse error";
        size_t n = strcspn(msg, "\n");
        snprintf(s->first, sizeof s->first, "line %d, column %d: %.*s", err->line, err->int2,
                 (int)n, msg);
    }
    if (fatal)
        s->fatal++;
}

/* libxml2 also prints a few messages through the generic channel; they carry nothing the
 * structured handler does not have, and must not reach the host's stderr. */
static void on_generic_error(void *ctx, const char *fmt, ...)
{
    (void)ctx;
    (void)fmt;
}

/*
 * libxml2 2.9 has no per-context error setter (xmlCtxtSetErrorHandler came in 2.13), and
 * the HTML context's SAX block is not SAX2-initialised, so its `serror` slot is ignored.
 * The structured and generic handlers are thread-local in a threaded libxml2: set them
 * around the parse and restore what the host had.
 */
void rag_ingest__xml_enter(rag_ingest_xml_session *s)
{
    memset(s, 0, sizeof *s);
    rag_ingest__xml_init();
    s->saved_serror = (void (*)(void))xmlStructuredError;
    s->saved_serror_ctx = xmlStructuredErrorContext;
    s->saved_gerror = (void (*)(void))xmlGenericError;
    s->saved_gerror_ctx = xmlGenericErrorContext;
    xmlSetStructuredErrorFunc(s, on_structured_error);
    xmlSetGenericErrorFunc(NULL, on_generic_error);
    in_our_parse = 1;
}

void rag_ingest__xml_leave(rag_ingest_xml_session *s)
{
    in_our_parse = 0;
    xmlSetStructuredErrorFunc(s->saved_serror_ctx, (xmlStructuredErrorFunc)s->saved_serror);
    xmlSetGenericErrorFunc(s->saved_gerror_ctx, (xmlGenericErrorFunc)s->saved_gerror);
}

/* ---- entity references ---------------------------------------------------------------- */

static size_t utf8_encode(char *out, unsigned int cp)
{
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

size_t rag_ingest__xml_entity_char(const struct _xmlNode *ref, char out[8])
{
    if (!ref || ref->type != XML_ENTITY_REF_NODE || !ref->name)
        return 0;
    /* a declared entity (internal or external) is document-controlled content: never read */
    if (ref->doc && xmlGetDocEntity(ref->doc, ref->name))
        return 0;
    const htmlEntityDesc *e = htmlEntityLookup(ref->name);
    if (!e || !e->value || e->value > 0x10FFFF || (e->value >= 0xD800 && e->value <= 0xDFFF))
        return 0;
    return utf8_encode(out, e->value);
}

/* ---- vocabularies --------------------------------------------------------------------- */

enum {
    R_INLINE = 0, /* running text inside its parent */
    R_BLOCK,      /* a container of blocks: breaks the paragraph around it */
    R_TEXT,       /* a block of running text (para, p, term): breaks, children inline */
    R_CELL,       /* a table cell: a space around it, the row is the paragraph */
    R_SECTION,    /* nests: its <title> is a heading one level deeper */
    R_TITLE,      /* a heading under a section, a caption (R_TEXT) elsewhere */
    R_CODE,       /* preformatted: newlines and indentation kept, a code block */
    R_CODEISH,    /* Mallard <code>: a code block where a block may stand, else inline */
    R_INFO,       /* metadata: skipped, but a section title inside it is read */
    R_SKIP        /* not text (index terms, editorial remarks, link lists) */
};

typedef struct vocab_entry {
    const char *name;
    unsigned char role;
} vocab_entry;

/* Roles of DocBook 4 and 5 elements; anything not listed is inline inside running text and
 * read by shape elsewhere.  Sorted at init (bsearch), so order here is for readers. */
static vocab_entry DOCBOOK[] = {
    /* sections */
    {"set", R_SECTION}, {"book", R_SECTION}, {"part", R_SECTION}, {"reference", R_SECTION},
    {"chapter", R_SECTION}, {"article", R_SECTION}, {"preface", R_SECTION},
    {"appendix", R_SECTION}, {"section", R_SECTION}, {"simplesect", R_SECTION},
    {"sect1", R_SECTION}, {"sect2", R_SECTION}, {"sect3", R_SECTION}, {"sect4", R_SECTION},
    {"sect5", R_SECTION}, {"refentry", R_SECTION}, {"refsection", R_SECTION},
    {"refsect1", R_SECTION}, {"refsect2", R_SECTION}, {"refsect3", R_SECTION},
    {"refsynopsisdiv", R_SECTION}, {"glossary", R_SECTION}, {"glossdiv", R_SECTION},
    {"bibliography", R_SECTION}, {"bibliodiv", R_SECTION}, {"index", R_SECTION},
    {"colophon", R_SECTION}, {"dedication", R_SECTION}, {"acknowledgements", R_SECTION},
    {"partintro", R_SECTION}, {"topic", R_SECTION}, {"qandadiv", R_SECTION},
    {"title", R_TITLE},
    /* metadata */
    {"info", R_INFO}, {"bookinfo", R_INFO}, {"articleinfo", R_INFO}, {"chapterinfo", R_INFO},
    {"appendixinfo", R_INFO}, {"prefaceinfo", R_INFO}, {"partinfo", R_INFO},
    {"setinfo", R_INFO}, {"sectioninfo", R_INFO}, {"sect1info", R_INFO},
    {"sect2info", R_INFO}, {"sect3info", R_INFO}, {"sect4info", R_INFO},
    {"sect5info", R_INFO}, {"refentryinfo", R_INFO}, {"refsectioninfo", R_INFO},
    {"refsect1info", R_INFO}, {"refsect2info", R_INFO}, {"refsect3info", R_INFO},
    {"refsynopsisdivinfo", R_INFO}, {"glossaryinfo", R_INFO}, {"bibliographyinfo", R_INFO},
    {"indexinfo", R_INFO}, {"referenceinfo", R_INFO}, {"blockinfo", R_INFO},
    {"objectinfo", R_INFO}, {"docinfo", R_INFO}, {"refmeta", R_SKIP},
    {"titleabbrev", R_SKIP}, {"indexterm", R_SKIP}, {"remark", R_SKIP},
    {"annotation", R_SKIP}, {"toc", R_SKIP}, {"lot", R_SKIP},
    /* preformatted */
    {"programlisting", R_CODE}, {"screen", R_CODE}, {"literallayout", R_CODE},
    {"synopsis", R_CODE}, {"funcsynopsisinfo", R_CODE}, {"classsynopsisinfo", R_CODE},
    {"address", R_CODE},
    /* running text */
    {"para", R_TEXT}, {"simpara", R_TEXT}, {"subtitle", R_TEXT}, {"term", R_TEXT},
    {"member", R_TEXT}, {"attribution", R_TEXT}, {"glossterm", R_TEXT},
    {"refname", R_INLINE}, {"refpurpose", R_TEXT}, {"refdescriptor", R_TEXT},
    {"bridgehead", R_TEXT}, {"cmdsynopsis", R_TEXT}, {"funcprototype", R_TEXT},
    {"seg", R_TEXT}, {"caption", R_TEXT}, {"bibliomixed", R_TEXT}, {"biblioentry", R_TEXT},
    {"entry", R_CELL}, {"td", R_CELL}, {"th", R_CELL},
    /* block containers */
    {"formalpara", R_BLOCK}, {"blockquote", R_BLOCK}, {"epigraph", R_BLOCK},
    {"note", R_BLOCK}, {"warning", R_BLOCK}, {"tip", R_BLOCK}, {"caution", R_BLOCK},
    {"important", R_BLOCK}, {"danger", R_BLOCK}, {"sidebar", R_BLOCK}, {"abstract", R_BLOCK},
    {"legalnotice", R_BLOCK}, {"itemizedlist", R_BLOCK}, {"orderedlist", R_BLOCK},
    {"variablelist", R_BLOCK}, {"simplelist", R_BLOCK}, {"segmentedlist", R_BLOCK},
    {"seglistitem", R_BLOCK}, {"listitem", R_BLOCK}, {"varlistentry", R_BLOCK},
    {"procedure", R_BLOCK}, {"step", R_BLOCK}, {"substeps", R_BLOCK},
    {"stepalternatives", R_BLOCK}, {"example", R_BLOCK}, {"informalexample", R_BLOCK},
    {"figure", R_BLOCK}, {"informalfigure", R_BLOCK}, {"table", R_BLOCK},
    {"informaltable", R_BLOCK}, {"tgroup", R_BLOCK}, {"thead", R_BLOCK},
    {"tbody", R_BLOCK}, {"tfoot", R_BLOCK}, {"row", R_BLOCK}, {"tr", R_BLOCK},
    {"mediaobject", R_BLOCK}, {"textobject", R_BLOCK}, {"calloutlist", R_BLOCK},
    {"callout", R_BLOCK}, {"glosslist", R_BLOCK}, {"glossentry", R_BLOCK},
    {"glossdef", R_BLOCK}, {"qandaset", R_BLOCK}, {"qandaentry", R_BLOCK},
    {"question", R_BLOCK}, {"answer", R_BLOCK}, {"refnamediv", R_TEXT},
    {"equation", R_BLOCK}, {"informalequation", R_BLOCK}, {"programlistingco", R_BLOCK},
    {"screenco", R_BLOCK}, {"funcsynopsis", R_BLOCK}, {"msgset", R_BLOCK},
    {"revhistory", R_SKIP},
};

/* Mallard 1.0 (https://projectmallard.org/1.0/). */
static vocab_entry MALLARD[] = {
    {"page", R_SECTION}, {"section", R_SECTION}, {"title", R_TITLE},
    {"info", R_INFO}, {"comment", R_SKIP}, {"links", R_SKIP},
    {"code", R_CODEISH}, {"screen", R_CODE},
    {"p", R_TEXT}, {"subtitle", R_TEXT}, {"desc", R_TEXT}, {"cite", R_TEXT},
    {"td", R_CELL}, {"th", R_CELL},
    {"list", R_BLOCK}, {"steps", R_BLOCK}, {"terms", R_BLOCK}, {"tree", R_BLOCK},
    {"item", R_BLOCK}, {"note", R_BLOCK}, {"example", R_BLOCK}, {"figure", R_BLOCK},
    {"quote", R_BLOCK}, {"listing", R_BLOCK}, {"synopsis", R_BLOCK}, {"table", R_BLOCK},
    {"thead", R_BLOCK}, {"tbody", R_BLOCK}, {"tfoot", R_BLOCK}, {"tr", R_BLOCK},
};

#define NS_DOCBOOK "http://docbook.org/ns/docbook"
#define NS_MALLARD "http://projectmallard.org/1.0/"
#define NS_XHTML "http://www.w3.org/1999/xhtml"
#define NS_XINCLUDE "http://www.w3.org/2001/XInclude"
#define NS_XINCLUDE_OLD "http://www.w3.org/2003/XInclude"

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const vocab_entry *)a)->name, ((const vocab_entry *)b)->name);
}

static void sort_vocabularies(void)
{
    qsort(DOCBOOK, sizeof DOCBOOK / sizeof DOCBOOK[0], sizeof DOCBOOK[0], entry_cmp);
    qsort(MALLARD, sizeof MALLARD / sizeof MALLARD[0], sizeof MALLARD[0], entry_cmp);
}

typedef struct vocab {
    const vocab_entry *table; /* NULL: generic XML */
    size_t count;
    const char *ns;           /* its namespace */
    int no_ns_too;            /* elements without a namespace belong to it (DocBook 4) */
} vocab;

/* ---- the walk ------------------------------------------------------------------------- */

typedef struct xframe {
    unsigned char role;         /* effective role of the open element */
    unsigned char mixed;        /* non-blank text (or entity references) among its children */
    unsigned char titled;       /* a <title> element among its children */
    unsigned char heading_done; /* R_SECTION: its heading was emitted */
    unsigned char opened;       /* OPENED_*: what this element started */
} xframe;

enum { OPENED_NONE = 0, OPENED_HEADING = 1, OPENED_CODE = 2 };

typedef struct xwalker {
    rag_ingest_parsed *out;
    const vocab *v;
    rag_ingest_textbuf tb;
    xframe *stack;
    size_t depth, cap;
    int sections;    /* open R_SECTION elements */
    int titled;      /* open frames with a <title> child (generic headings) */
    int heading;     /* level of the heading being read, 0 if none */
    int heading_doc; /* ...and it is the document title */
    int in_code;     /* open code elements */
    int rc;
} xwalker;

static void xflush(xwalker *w, int kind, int level)
{
    if (w->rc)
        return;
    if (w->tb.err) {
        w->rc = rag_error_set(RAG_ENOMEM, "out of memory extracting XML text");
        return;
    }
    if (w->tb.len)
        w->rc = rag_ingest__parsed_add(w->out, kind, level, w->tb.data, w->tb.len);
    rag_ingest__tb_reset(&w->tb);
}

/* End the running paragraph: inside a heading a block boundary is a space (keep the heading
 * whole), inside code a newline. */
static void xbreak(xwalker *w)
{
    if (w->heading)
        w->tb.pending_space = 1;
    else if (w->in_code)
        rag_ingest__tb_raw(&w->tb, "\n", 1);
    else
        xflush(w, RAG_BLOCK_PARA, 0);
}

static int clamp_level(int l) { return l < 1 ? 1 : l > 6 ? 6 : l; }

static int in_vocab(const xwalker *w, const xmlNode *n)
{
    if (!w->v->table)
        return 0;
    if (!n->ns || !n->ns->href)
        return w->v->no_ns_too;
    return !strcmp((const char *)n->ns->href, w->v->ns);
}

static int is_xinclude(const xmlNode *n)
{
    return n->ns && n->ns->href &&
           (!strcmp((const char *)n->ns->href, NS_XINCLUDE) ||
            !strcmp((const char *)n->ns->href, NS_XINCLUDE_OLD));
}

static int lookup_role(const vocab *v, const xmlNode *n)
{
    vocab_entry key = {(const char *)n->name, 0};
    const vocab_entry *e = bsearch(&key, v->table, v->count, sizeof key, entry_cmp);
    return e ? e->role : -1;
}

/* The element's role in this walk, from its vocabulary and its surroundings. */
static int classify(const xwalker *w, const xmlNode *n, const xframe *parent)
{
    if (is_xinclude(n))
        return R_SKIP; /* never processed, and its fallback is not the document's text */
    /* inside running text or preformatted text, what is not known to be a block is inline */
    int parent_text = parent && (parent->mixed || parent->role == R_TEXT ||
                                 parent->role == R_CELL || parent->role == R_TITLE ||
                                 parent->role == R_INLINE || parent->role == R_CODE);
    int role = -1;
    if (in_vocab(w, n))
        role = lookup_role(w->v, n);
    else if (!w->v->table && !strcmp((const char *)n->name, "title"))
        role = parent && parent->mixed ? R_INLINE : R_TITLE;
    if (role == R_CODEISH)
        role = parent_text ? R_INLINE : R_CODE;
    if (role >= 0)
        return role;
    /* unknown element: inline inside running text, a block anywhere else */
    return parent_text ? R_INLINE : R_BLOCK;
}

static int push(xwalker *w, const xmlNode *n, int role)
{
    if (w->depth == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        xframe *s = realloc(w->stack, cap * sizeof *s);
        if (!s) {
            w->rc = rag_error_set(RAG_ENOMEM, "out of memory walking XML");
            return 0;
        }
        w->stack = s;
        w->cap = cap;
    }
    xframe *f = &w->stack[w->depth++];
    memset(f, 0, sizeof *f);
    f->role = (unsigned char)role;
    /* one pass over the children per element: linear in the document */
    for (const xmlNode *c = n->children; c; c = c->next) {
        if (c->type == XML_ENTITY_REF_NODE) {
            f->mixed = 1;
        } else if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) &&
                   c->content) {
            for (const xmlChar *p = c->content; *p && !f->mixed; p++)
                if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
                    f->mixed = 1;
        } else if (c->type == XML_ELEMENT_NODE && c->name &&
                   !strcmp((const char *)c->name, "title")) {
            f->titled = 1;
        }
    }
    if (f->titled)
        w->titled++;
    if (role == R_SECTION)
        w->sections++;
    return 1;
}

static void xwalk(xwalker *w, xmlNode *root);

/* A section's title kept in its metadata (DocBook 5 <info><title>, DocBook 4 <bookinfo>). */
static void info_title(xwalker *w, xmlNode *info)
{
    xframe *sec = w->depth ? &w->stack[w->depth - 1] : NULL;
    if (!sec || sec->role != R_SECTION || sec->heading_done || sec->titled || w->heading ||
        w->in_code)
        return;
    for (xmlNode *c = info->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && in_vocab(w, c) &&
            !strcmp((const char *)c->name, "title")) {
            xwalk(w, c); /* classified under the section: a heading; one level at most */
            return;
        }
    }
}

/* Key combinations and menu paths are element sequences without text between them: Mallard
 * <keyseq>/<guiseq>, DocBook <keycombo>/<menuchoice>.  Put back the separator a renderer
 * would show, so "Ctrl+C" does not index as "CtrlC". */
static void sequence_separator(xwalker *w, const xmlNode *n)
{
    const xmlNode *p = n->parent;
    if (!w->v->table || !p || p->type != XML_ELEMENT_NODE || !p->name || !in_vocab(w, p))
        return;
    const char *sep = NULL;
    if (!strcmp((const char *)p->name, "keyseq") || !strcmp((const char *)p->name, "keycombo"))
        sep = "+";
    else if (!strcmp((const char *)p->name, "guiseq") ||
             !strcmp((const char *)p->name, "menuchoice"))
        sep = " > ";
    if (!sep)
        return;
    for (const xmlNode *c = n->prev; c; c = c->prev) {
        if (c->type == XML_ELEMENT_NODE) {
            w->tb.pending_space = 0;
            rag_ingest__tb_raw(&w->tb, sep, strlen(sep));
            return;
        }
    }
}

/* Returns 1 to descend into the children. */
static int xenter(xwalker *w, xmlNode *n)
{
    char ent[8];
    size_t en;
    switch (n->type) {
    case XML_TEXT_NODE:
    case XML_CDATA_SECTION_NODE:
        if (n->content) {
            size_t len = strlen((const char *)n->content);
            if (w->in_code && !w->heading)
                rag_ingest__tb_raw(&w->tb, (const char *)n->content, len);
            else
                rag_ingest__tb_collapse(&w->tb, (const char *)n->content, len);
        }
        return 0;
    case XML_ENTITY_REF_NODE:
        if ((en = rag_ingest__xml_entity_char(n, ent)) > 0)
            rag_ingest__tb_raw(&w->tb, ent, en);
        return 0; /* declared entities: never expanded */
    case XML_ELEMENT_NODE:
        break;
    default:
        return 0; /* comments, processing instructions, DTD nodes */
    }
    xframe *parent = w->depth ? &w->stack[w->depth - 1] : NULL;
    int role = classify(w, n, parent);
    if (role == R_INLINE)
        sequence_separator(w, n);
    int opened = OPENED_NONE;
    switch (role) {
    case R_SKIP:
        return 0;
    case R_INFO:
        info_title(w, n);
        return 0;
    case R_SECTION:
        if (w->heading || w->in_code)
            xbreak(w);
        else
            xflush(w, RAG_BLOCK_PARA, 0);
        break;
    case R_TITLE: {
        int heading_here = !w->heading && !w->in_code &&
                           (w->v->table ? parent && parent->role == R_SECTION : 1);
        if (heading_here) {
            xflush(w, RAG_BLOCK_PARA, 0);
            /* a vocabulary counts sections; generic XML counts elements that have titles */
            w->heading = clamp_level(w->v->table ? w->sections : w->titled);
            w->heading_doc = w->v->table && w->sections == 1 && !w->out->title;
            if (parent)
                parent->heading_done = 1;
            opened = OPENED_HEADING;
        } else {
            role = R_TEXT; /* a caption, a list or term title: a paragraph */
            xbreak(w);
        }
        break;
    }
    case R_CODE:
        if (w->heading) {
            role = R_INLINE;
        } else {
            if (!w->in_code)
                xflush(w, RAG_BLOCK_PARA, 0);
            w->in_code++;
            opened = OPENED_CODE;
        }
        break;
    case R_BLOCK:
    case R_TEXT:
        xbreak(w);
        break;
    case R_CELL:
        w->tb.pending_space = 1;
        break;
    default:
        break;
    }
    if (!push(w, n, role))
        return 0;
    w->stack[w->depth - 1].opened = (unsigned char)opened;
    return 1;
}

static void xleave(xwalker *w, xmlNode *n)
{
    if (n->type != XML_ELEMENT_NODE || !w->depth)
        return;
    xframe f = w->stack[--w->depth];
    if (f.titled)
        w->titled--;
    if (f.opened == OPENED_HEADING) {
        if (w->heading_doc && w->tb.len && !w->tb.err && !w->rc) {
            w->out->title = rag_strndup(w->tb.data, w->tb.len);
            if (!w->out->title)
                w->rc = rag_error_set(RAG_ENOMEM, "out of memory reading the XML title");
        }
        xflush(w, RAG_BLOCK_HEADING, w->heading);
        w->heading = 0;
        w->heading_doc = 0;
        return;
    }
    if (f.opened == OPENED_CODE) {
        if (--w->in_code == 0)
            xflush(w, RAG_BLOCK_CODE, 0);
        return;
    }
    switch (f.role) {
    case R_SECTION:
        w->sections--;
        xbreak(w);
        break;
    case R_BLOCK:
    case R_TEXT:
        xbreak(w);
        break;
    case R_CELL:
        w->tb.pending_space = 1;
        break;
    default:
        break;
    }
}

/* Iterative pre/post-order walk of `root`'s subtree (no recursion: depth is bounded by the
 * heap, not the C stack). */
static void xwalk(xwalker *w, xmlNode *root)
{
    xmlNode *n = root;
    while (n && !w->rc) {
        int descend = xenter(w, n);
        if (descend && n->children) {
            n = n->children;
            continue;
        }
        if (descend)
            xleave(w, n);
        while (n != root && !n->next) {
            n = n->parent;
            xleave(w, n);
        }
        if (n == root)
            break;
        n = n->next;
    }
}

static int ns_is(const xmlNode *n, const char *ns)
{
    return n->ns && n->ns->href && !strcmp((const char *)n->ns->href, ns);
}

static int name_in(const char *name, const char *const *names)
{
    for (; *names; names++)
        if (!strcmp(name, *names))
            return 1;
    return 0;
}

/* DocBook 4 has no namespace: known by its root element or its DOCTYPE. */
static int looks_like_docbook4(xmlDoc *doc, const xmlNode *root)
{
    static const char *const roots[] = {"book", "article", "chapter", "part", "set", "preface",
                                        "appendix", "sect1", "refentry", "reference",
                                        "glossary", "bibliography", NULL};
    if (root->ns)
        return 0;
    xmlDtd *dtd = doc->intSubset;
    if (dtd && ((dtd->ExternalID && strstr((const char *)dtd->ExternalID, "DocBook")) ||
                (dtd->SystemID && strstr((const char *)dtd->SystemID, "docbook"))))
        return 1;
    return name_in((const char *)root->name, roots);
}

static int only_whitespace(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return 1;
}

int rag_ingest__parse_xml(const char *s, size_t len, rag_ingest_parsed *out)
{
    if (len > INT_MAX)
        return rag_error_set(RAG_ETOOBIG, "XML document of %zu bytes exceeds the parser limit",
                             len);
    if (only_whitespace(s, len))
        return RAG_OK; /* no text: the caller reports an empty document */
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
#if LIBXML_VERSION >= 21300
    opts |= XML_PARSE_NO_XXE; /* one more lock on the same door where libxml2 has it */
#endif
    rag_ingest_xml_session xs;
    rag_ingest__xml_enter(&xs);
    /* The bytes were validated as UTF-8 already: say so, whatever the declaration claims.
     * No NOENT, DTDLOAD, DTDATTR, DTDVALID, XINCLUDE or HUGE. */
    xmlDocPtr doc = xmlReadMemory(s, (int)len, NULL, "UTF-8", opts);
    rag_ingest__xml_leave(&xs);
    if (!doc || xs.fatal) {
        xmlFreeDoc(doc);
        return rag_error_set(RAG_EPARSE, "XML is not well-formed%s%s", xs.errors ? ": " : "",
                             xs.first);
    }
    int rc = rag_ingest__xml_extract(doc, out);
    xmlFreeDoc(doc);
    return rc;
}

int rag_ingest__xml_extract(struct _xmlDoc *doc, rag_ingest_parsed *out)
{
    rag_ingest__xml_init(); /* the vocabularies are sorted once */
    xmlNode *root = xmlDocGetRootElement(doc);
    if (!root || !root->name)
        return rag_error_set(RAG_EPARSE, "XML has no root element");
    if (!strcasecmp((const char *)root->name, "html") && (!root->ns || ns_is(root, NS_XHTML)))
        return rag_ingest__html_extract(doc, out);
    vocab v = {NULL, 0, NULL, 0};
    if (ns_is(root, NS_DOCBOOK) || looks_like_docbook4(doc, root)) {
        v.table = DOCBOOK;
        v.count = sizeof DOCBOOK / sizeof DOCBOOK[0];
        v.ns = NS_DOCBOOK;
        v.no_ns_too = !root->ns;
    } else if (ns_is(root, NS_MALLARD)) {
        v.table = MALLARD;
        v.count = sizeof MALLARD / sizeof MALLARD[0];
        v.ns = NS_MALLARD;
    }
    xwalker w;
    memset(&w, 0, sizeof w);
    w.out = out;
    w.v = &v;
    rag_ingest__tb_init(&w.tb);
    xwalk(&w, root);
    if (!w.rc) /* the root always closes its blocks; this catches a heading left open */
        xflush(&w, w.heading ? RAG_BLOCK_HEADING : w.in_code ? RAG_BLOCK_CODE : RAG_BLOCK_PARA,
               w.heading);
    int rc = w.rc;
    rag_ingest__tb_free(&w.tb);
    free(w.stack);
    return rc;
}
