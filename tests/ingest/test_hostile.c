/*
 * Hostile input to the ingest parsers (issue 4): entity expansion (billion laughs, quadratic
 * blowup), external entities and DTDs (file://, http://, parameter entities), XInclude,
 * 10,000- and 100,000-deep nesting, truncated documents, binary input, the size limit.
 * Each must end in a documented error or in text without the forbidden content: never a
 * crash, a hang (each parse is timed), a file's contents in the text, or a byte on stderr
 * (every parse here runs with fd 2 redirected to a file that must stay empty).
 *
 * Outcomes checked (see parse_xml.c and parse_html.c for the decisions):
 *   - declared entities are never expanded; entity loops/amplification: RAG_EPARSE;
 *   - the external-entity loader refuses inside our parses and defers to the host's loader
 *     outside them; no external entity or DTD is read;
 *   - nesting deeper than 256 (libxml2 without HUGE): RAG_EPARSE for XML and HTML; our tree
 *     walkers are iterative and read a 100,000-deep tree built by hand;
 *   - truncated XML: RAG_EPARSE; truncated HTML: the text before the cut;
 *   - binary without a MIME type: RAG_EUNSUPPORTED; with a text type: RAG_EUTF8/RAG_EPARSE;
 *   - max_doc_bytes: RAG_ETOOBIG before any detection or parsing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>

#include "ingest_internal.h"
#include "rag_common.h"
#include "rag_ingest_api.h"
#include "test_support.h"

#define PASSWD_MARK "root:"
#define MAX_PARSE_US 1000000 /* "finishes fast": one second, sanitizers included */

/* ---- helpers -------------------------------------------------------------------------- */

typedef struct stderr_capture {
    int saved;
    FILE *tmp;
} stderr_capture;

static void capture_begin(stderr_capture *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved = dup(2);
    assert_true(c->saved >= 0);
    assert_true(dup2(fileno(c->tmp), 2) >= 0);
}

/* Restores fd 2 and returns what was written to it meanwhile (caller frees). */
static char *capture_end(stderr_capture *c, long *n)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    struct stat st;
    *n = fstat(fileno(c->tmp), &st) == 0 ? (long)st.st_size : -1;
    char *text = calloc(1, (size_t)(*n > 0 ? *n : 0) + 1);
    if (*n > 0) {
        rewind(c->tmp);
        size_t got = fread(text, 1, (size_t)*n, c->tmp);
        text[got] = 0;
    }
    fclose(c->tmp);
    return text;
}

typedef struct outcome {
    int rc;
    char *text;     /* blocks joined (NULL unless rc == RAG_OK) */
    char *title;    /* NULL when none */
    char detail[512];
    uint64_t us;
} outcome;

static void outcome_free(outcome *o)
{
    free(o->text);
    free(o->title);
    memset(o, 0, sizeof *o);
}

/* Parse `len` bytes as `fmt` quietly and timed; fails the test if anything reached stderr or
 * the parse took longer than MAX_PARSE_US. */
static outcome parse_quiet(int fmt, const char *s, size_t len)
{
    outcome o;
    memset(&o, 0, sizeof o);
    rag_ingest_parsed p;
    rag_ingest__parsed_init(&p);
    stderr_capture cap;
    capture_begin(&cap);
    uint64_t t0 = rag_mono_us();
    o.rc = rag_ingest__parse(fmt, s, len, &p);
    o.us = rag_mono_us() - t0;
    snprintf(o.detail, sizeof o.detail, "%s", o.rc ? rag_error_last() : "");
    long n = 0;
    char *err = capture_end(&cap, &n);
    if (n != 0)
        fail_msg("parser wrote %ld bytes to stderr: %.200s", n, err);
    free(err);
    if (o.us > MAX_PARSE_US)
        fail_msg("parse took %llu us", (unsigned long long)o.us);
    if (o.rc == RAG_OK) {
        size_t tl = 0;
        assert_int_equal(rag_ingest__join(&p, &o.text, &tl), RAG_OK);
        if (p.title)
            o.title = strdup(p.title);
    }
    rag_ingest__parsed_clear(&p);
    return o;
}

static outcome parse_str(int fmt, const char *s) { return parse_quiet(fmt, s, strlen(s)); }

/* Neither the text nor the title contains `needle` (trivially true after an error). */
static void assert_clean(const outcome *o, const char *needle)
{
    if (o->text && strstr(o->text, needle))
        fail_msg("text contains '%s': %.300s", needle, o->text);
    if (o->title && strstr(o->title, needle))
        fail_msg("title contains '%s': %.300s", needle, o->title);
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static void sb_repeat(sbuf *b, const char *s, size_t times)
{
    for (size_t i = 0; i < times; i++)
        sb_add(b, s);
}

/* ---- entity expansion ----------------------------------------------------------------- */

/* The classic with `levels` levels of 10 references: 10^levels "lol"s if substituted. */
static char *laughs(int levels, const char *root_open, const char *use, const char *root_close)
{
    sbuf b = {0};
    sb_add(&b, "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    char line[256];
    for (int i = 1; i < levels; i++) {
        snprintf(line, sizeof line, " <!ENTITY lol%d \"", i);
        sb_add(&b, line);
        for (int j = 0; j < 10; j++) {
            if (i == 1)
                snprintf(line, sizeof line, "&lol;");
            else
                snprintf(line, sizeof line, "&lol%d;", i - 1);
            sb_add(&b, line);
        }
        sb_add(&b, "\">\n");
    }
    sb_add(&b, "]>\n");
    sb_add(&b, root_open);
    sb_add(&b, use);
    sb_add(&b, root_close);
    return b.s;
}

/* 10^9 */
static char *billion_laughs(const char *root_open, const char *use, const char *root_close)
{
    return laughs(10, root_open, use, root_close);
}

static void test_billion_laughs(void **state)
{
    (void)state;
    char *docs[] = {
        billion_laughs("<lolz>", "&lol9;", "</lolz>"),
        billion_laughs("<lolz><title>&lol9;</title>", "<p>a &lol9; b</p>", "</lolz>"),
        /* XHTML: the title reader must not expand either */
        billion_laughs("<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>&lol9;"
                       "</title></head><body>",
                       "<p>&lol9;</p>", "</body></html>"),
        /* DocBook and Mallard walkers */
        billion_laughs("<article xmlns=\"http://docbook.org/ns/docbook\"><title>&lol9;</title>",
                       "<para>&lol9;</para>", "</article>"),
        billion_laughs("<page xmlns=\"http://projectmallard.org/1.0/\"><title>&lol5;</title>",
                       "<p>&lol5;</p>", "</page>"),
        /* ten laughs: small enough for libxml2 2.9 to accept (it refuses 100 already); the
         * walker must not expand the references either */
        laughs(2, "<lolz>", "<p>start &lol1; end</p>", "</lolz>"),
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        outcome o = parse_str(RAG_FMT_XML, docs[i]);
        assert_true(o.rc == RAG_OK || o.rc == RAG_EPARSE);
        assert_clean(&o, "lollol");
        if (o.rc == RAG_EPARSE)
            assert_non_null(strstr(o.detail, "line "));
        outcome_free(&o);
    }
    /* the accepted one keeps its own text */
    outcome o = parse_str(RAG_FMT_XML, docs[5]);
    if (o.rc != RAG_OK)
        fail_msg("%d: %s", o.rc, o.detail);
    assert_string_equal(o.text, "start end");
    outcome_free(&o);
    /* the full one is refused by libxml2's loop/amplification check */
    o = parse_str(RAG_FMT_XML, docs[0]);
    assert_int_equal(o.rc, RAG_EPARSE);
    outcome_free(&o);
    /* the HTML parser has no DTD: an undefined reference stays literal text, no expansion */
    o = parse_str(RAG_FMT_HTML, docs[1]);
    assert_true(o.rc == RAG_OK);
    assert_clean(&o, "lollol");
    outcome_free(&o);
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        free(docs[i]);

    /* parameter-entity laughs */
    sbuf b = {0};
    sb_add(&b, "<!DOCTYPE x [<!ENTITY % a \"lol\">");
    const char *names = "bcdefghij";
    for (int i = 0; names[i]; i++) {
        char line[64];
        snprintf(line, sizeof line, "<!ENTITY %% %c \"", names[i]);
        sb_add(&b, line);
        snprintf(line, sizeof line, "%%%c;", i ? names[i - 1] : 'a');
        sb_repeat(&b, line, 10);
        sb_add(&b, "\">");
    }
    sb_add(&b, "<!ENTITY big \"%j;\">]><x>&big;</x>");
    o = parse_str(RAG_FMT_XML, b.s);
    assert_true(o.rc == RAG_OK || o.rc == RAG_EPARSE);
    assert_clean(&o, "lollol");
    outcome_free(&o);
    free(b.s);

    /* quadratic blowup: one 50 KB entity referenced 50,000 times (2.5 GB if substituted) */
    memset(&b, 0, sizeof b);
    sb_add(&b, "<?xml version=\"1.0\"?><!DOCTYPE q [<!ENTITY a \"");
    sb_repeat(&b, "AAAAAAAAAA", 5000);
    sb_add(&b, "\">]><q><p>start</p><p>");
    sb_repeat(&b, "&a;", 50000);
    sb_add(&b, "</p><p>end</p></q>");
    o = parse_str(RAG_FMT_XML, b.s);
    assert_true(o.rc == RAG_OK || o.rc == RAG_EPARSE);
    assert_clean(&o, "AAAAAAAAAA");
    if (o.rc == RAG_OK)
        assert_string_equal(o.text, "start\n\nend");
    outcome_free(&o);
    free(b.s);
}

/* ---- external entities, DTDs, XInclude ------------------------------------------------ */

static void test_xxe(void **state)
{
    (void)state;
    const char *xml_docs[] = {
        /* general external entity: file and http */
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>a &e; b</x>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"/etc/passwd\">]><x>a &e; b</x>",
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"http://127.0.0.1:9/passwd\">]><x>a &e; b</x>",
        "<!DOCTYPE x [<!ENTITY e PUBLIC \"-//X//Y\" \"http://[::1]:9/p\">]><x>a &e; b</x>",
        /* parameter entities: an external one, and one that declares the general entity */
        "<!DOCTYPE x [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><x>a b</x>",
        "<!DOCTYPE x [<!ENTITY % d SYSTEM \"http://127.0.0.1:9/evil.dtd\"> %d; ]>"
        "<x>a &exfil; b</x>",
        "<!DOCTYPE x [<!ENTITY % q \"<!ENTITY e SYSTEM 'file:///etc/passwd'>\"> %q;]>"
        "<x>a &e; b</x>",
        /* external DTD subset */
        "<!DOCTYPE x SYSTEM \"file:///etc/passwd\"><x>a b</x>",
        "<!DOCTYPE x PUBLIC \"-//X//DTD//EN\" \"http://127.0.0.1:9/x.dtd\"><x>a b</x>",
        /* an external entity in an attribute value (not well-formed) */
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x y=\"&e;\">a b</x>",
        /* XInclude, both namespaces, text and xml */
        "<x xmlns:xi=\"http://www.w3.org/2001/XInclude\">a <xi:include href=\"/etc/passwd\" "
        "parse=\"text\"/> b</x>",
        "<x xmlns:xi=\"http://www.w3.org/2001/XInclude\">a <xi:include "
        "href=\"file:///etc/passwd\" parse=\"text\"><xi:fallback>FALLBACK</xi:fallback>"
        "</xi:include> b</x>",
        "<x xmlns:xi=\"http://www.w3.org/2003/XInclude\">a <xi:include href=\"/etc/passwd\" "
        "parse=\"text\"/> b</x>",
        /* the same in DocBook, Mallard and XHTML */
        "<!DOCTYPE article [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
        "<article xmlns=\"http://docbook.org/ns/docbook\"><title>a &e;</title><para>b &e;"
        "</para><programlisting>&e;</programlisting></article>",
        "<!DOCTYPE page [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
        "<page xmlns=\"http://projectmallard.org/1.0/\"><title>a &e;</title><p>b</p>"
        "<code>&e;</code><include xmlns=\"http://www.w3.org/2001/XInclude\" "
        "href=\"/etc/passwd\" parse=\"text\"/></page>",
        "<!DOCTYPE html [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
        "<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>a &e;</title></head>"
        "<body><p>b &e;</p><pre>&e;</pre></body></html>",
    };
    unsigned long refused0 = rag_ingest__xml_loads_refused();
    for (size_t i = 0; i < sizeof xml_docs / sizeof xml_docs[0]; i++) {
        outcome o = parse_str(RAG_FMT_XML, xml_docs[i]);
        if (o.rc != RAG_OK && o.rc != RAG_EPARSE)
            fail_msg("doc %zu: rc %d (%s)", i, o.rc, o.detail);
        assert_clean(&o, PASSWD_MARK);
        assert_clean(&o, "nologin");
        assert_clean(&o, "FALLBACK");
        if (o.rc == RAG_OK) /* the document's own text is there */
            assert_true((o.text && strchr(o.text, 'a')) || (o.title && strchr(o.title, 'a')));
        outcome_free(&o);
    }
    /* nothing was loaded: the parser never asked (no NOENT/DTDLOAD), or the loader refused;
     * either way the count can only have grown by refusals */
    assert_true(rag_ingest__xml_loads_refused() >= refused0);

    /* HTML: DOCTYPEs and entity declarations mean nothing, frames are never fetched */
    const char *html_docs[] = {
        "<!DOCTYPE html SYSTEM \"file:///etc/passwd\"><html><body><p>a b</p></body></html>",
        "<!DOCTYPE html [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><html><body><p>a &e; b"
        "</p></body></html>",
        "<html><body><iframe src=\"file:///etc/passwd\"></iframe><object "
        "data=\"/etc/passwd\"></object><img src=\"file:///etc/passwd\"><p>a b</p>"
        "<xi:include href=\"/etc/passwd\" parse=\"text\"/></body></html>",
        "<html><head><link rel=\"stylesheet\" href=\"file:///etc/passwd\"><base "
        "href=\"file:///etc/\"></head><body><p>a b</p></body></html>",
    };
    for (size_t i = 0; i < sizeof html_docs / sizeof html_docs[0]; i++) {
        outcome o = parse_str(RAG_FMT_HTML, html_docs[i]);
        assert_int_equal(o.rc, RAG_OK);
        assert_clean(&o, PASSWD_MARK);
        assert_non_null(strstr(o.text, "a "));
        outcome_free(&o);
    }
}

static int host_loader_calls;
static xmlParserInputPtr host_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    (void)url;
    (void)id;
    host_loader_calls++;
    return xmlNewStringInputStream(ctxt, (const xmlChar *)"HOSTENTITY");
}

/* The loader itself: asked inside one of our parses, it refuses and counts; outside them it
 * defers to the host's loader, even one the host set after ragcore installed its own. */
static void test_entity_loader(void **state)
{
    (void)state;
    rag_ingest__xml_init();
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    assert_non_null(ctxt);

    rag_ingest_xml_session xs;
    unsigned long before = rag_ingest__xml_loads_refused();
    rag_ingest__xml_enter(&xs);
    xmlParserInputPtr in = xmlLoadExternalEntity("file:///etc/passwd", NULL, ctxt);
    xmlParserInputPtr in2 = xmlLoadExternalEntity("http://127.0.0.1:9/x.dtd", NULL, ctxt);
    rag_ingest__xml_leave(&xs);
    assert_null(in);
    assert_null(in2);
    assert_int_equal(rag_ingest__xml_loads_refused(), before + 2);

    /* the host installs its own loader: outside our parses it is used ... */
    xmlExternalEntityLoader saved = xmlGetExternalEntityLoader();
    xmlSetExternalEntityLoader(host_loader);
    in = xmlLoadExternalEntity("file:///host/thing.xml", NULL, ctxt);
    assert_non_null(in);
    assert_int_equal(host_loader_calls, 1);
    xmlFreeInputStream(in);
    /* ... and our next parse re-installs the refusing loader in front of it */
    outcome o = parse_str(RAG_FMT_XML, "<x>text</x>");
    assert_int_equal(o.rc, RAG_OK);
    outcome_free(&o);
    assert_ptr_not_equal(xmlGetExternalEntityLoader(), host_loader);
    rag_ingest__xml_enter(&xs);
    in = xmlLoadExternalEntity("file:///etc/passwd", NULL, ctxt);
    rag_ingest__xml_leave(&xs);
    assert_null(in);
    assert_int_equal(host_loader_calls, 1);
    in = xmlLoadExternalEntity("file:///host/thing.xml", NULL, ctxt); /* host's: still works */
    assert_non_null(in);
    assert_int_equal(host_loader_calls, 2);
    xmlFreeInputStream(in);
    xmlSetExternalEntityLoader(saved);
    xmlFreeParserCtxt(ctxt);
    rag_ingest__xml_init(); /* ours again for the rest of the process */
}

/* ---- nesting -------------------------------------------------------------------------- */

static char *nested(const char *prefix, const char *open, const char *text, const char *close,
                    const char *suffix, size_t depth)
{
    sbuf b = {0};
    sb_add(&b, prefix);
    sb_repeat(&b, open, depth);
    sb_add(&b, text);
    sb_repeat(&b, close, depth);
    sb_add(&b, suffix);
    return b.s;
}

static void expect_too_deep(int fmt, char *doc)
{
    outcome o = parse_str(fmt, doc);
    if (o.rc != RAG_EPARSE)
        fail_msg("expected RAG_EPARSE, got %d", o.rc);
    assert_non_null(strstr(o.detail, "depth"));
    assert_non_null(strstr(o.detail, "line 1, column"));
    outcome_free(&o);
    free(doc);
}

static void expect_deep_text(int fmt, char *doc, const char *text)
{
    outcome o = parse_str(fmt, doc);
    if (o.rc != RAG_OK)
        fail_msg("expected RAG_OK, got %d (%s)", o.rc, o.detail);
    assert_non_null(strstr(o.text, text));
    outcome_free(&o);
    free(doc);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    const size_t depths[] = {10000, 100000};
    for (size_t i = 0; i < 2; i++) {
        size_t d = depths[i];
        expect_too_deep(RAG_FMT_XML, nested("", "<a>", "deep text", "</a>", "", d));
        expect_too_deep(RAG_FMT_XML, nested("<r>", "<a>", "", "", "", d)); /* unclosed */
        expect_too_deep(RAG_FMT_XML,
                        nested("<article xmlns=\"http://docbook.org/ns/docbook\">", "<section>",
                               "<para>deep</para>", "</section>", "</article>", d));
        expect_too_deep(RAG_FMT_XML,
                        nested("<html xmlns=\"http://www.w3.org/1999/xhtml\"><body>", "<div>",
                               "deep", "</div>", "</body></html>", d));
        expect_too_deep(RAG_FMT_HTML, nested("<html><body>", "<div><b>", "deep text",
                                             "</b></div>", "</body></html>", d));
        expect_too_deep(RAG_FMT_HTML, nested("<html><body>", "<span>x", "", "", "", d));
        expect_too_deep(RAG_FMT_HTML,
                        nested("<html><body>", "<table><tr><td>", "cell", "</td></tr></table>",
                               "</body></html>", d));
        /* Markdown: md4c keeps its own stacks */
        outcome o;
        char *md = nested("", ">", " quoted deep\n", "", "", d);
        o = parse_str(RAG_FMT_MARKDOWN, md);
        assert_int_equal(o.rc, RAG_OK);
        assert_non_null(strstr(o.text, "quoted deep"));
        outcome_free(&o);
        free(md);
        md = nested("", "- ", "listed deep\n", "", "", d);
        o = parse_str(RAG_FMT_MARKDOWN, md);
        assert_int_equal(o.rc, RAG_OK);
        assert_non_null(strstr(o.text, "listed deep"));
        outcome_free(&o);
        free(md);
        md = nested("", "[", "x", "](y)", "\n", d);
        o = parse_str(RAG_FMT_MARKDOWN, md);
        assert_int_equal(o.rc, RAG_OK);
        outcome_free(&o);
        free(md);
    }
    /* just under libxml2's limit: read in full, by every walker */
    expect_deep_text(RAG_FMT_XML, nested("", "<a>", "deep text", "</a>", "", 250), "deep text");
    expect_deep_text(RAG_FMT_XML,
                     nested("<page xmlns=\"http://projectmallard.org/1.0/\"><title>T</title>",
                            "<section><title>S</title>", "<p>deep para</p>", "</section>",
                            "</page>", 120),
                     "deep para");
    expect_deep_text(RAG_FMT_HTML, nested("<html><body>", "<div>", "deep text", "</div>",
                                          "<p>after</p></body></html>", 250),
                     "after");
}

/* The walkers themselves, on a 100,000-deep tree built by hand (the parsers never produce
 * one): iterative, so no stack overflow, and the deepest text is read. */
static void test_walkers_deep_tree(void **state)
{
    (void)state;
    const char *roots[] = {"html", "article", "page", "generic"};
    const char *ns[] = {NULL, "http://docbook.org/ns/docbook", "http://projectmallard.org/1.0/",
                        NULL};
    const char *levels[][2] = {{"div", "b"}, {"section", "emphasis"}, {"section", "em"},
                               {"x", "y"}};
    for (size_t r = 0; r < 4; r++) {
        xmlDocPtr doc = xmlNewDoc((const xmlChar *)"1.0");
        xmlNodePtr root = xmlNewNode(NULL, (const xmlChar *)roots[r]);
        if (ns[r])
            xmlSetNs(root, xmlNewNs(root, (const xmlChar *)ns[r], NULL));
        xmlDocSetRootElement(doc, root);
        xmlNodePtr cur = root;
        if (r == 0)
            cur = xmlNewChild(cur, NULL, (const xmlChar *)"body", NULL);
        for (int i = 0; i < 100000; i++)
            cur = xmlNewChild(cur, root->ns, (const xmlChar *)levels[r][i % 2], NULL);
        xmlNodeAddContent(cur, (const xmlChar *)"bottom text");
        rag_ingest_parsed p;
        rag_ingest__parsed_init(&p);
        int rc = rag_ingest__xml_extract(doc, &p);
        if (rc)
            fail_msg("%s: %d %s", roots[r], rc, rag_error_last());
        char *text = NULL;
        size_t tl = 0;
        assert_int_equal(rag_ingest__join(&p, &text, &tl), RAG_OK);
        if (!strstr(text, "bottom text"))
            fail_msg("%s: deepest text missing", roots[r]);
        free(text);
        rag_ingest__parsed_clear(&p);
        xmlFreeDoc(doc);
    }
}

/* ---- truncation ----------------------------------------------------------------------- */

static const char TRUNC_XML[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<article xmlns=\"http://docbook.org/ns/docbook\" version=\"5.0\">\n"
    "  <info><title>Caf\xC3\xA9 na\xC3\xAFve \xE2\x82\xAC \xF0\x9F\x98\x80</title></info>\n"
    "  <para>First <emphasis role=\"strong\">para</emphasis> &amp; more.</para>\n"
    "  <!-- a comment -->\n"
    "  <programlisting><![CDATA[if (a < b) { return; }]]></programlisting>\n"
    "  <section><title>S</title><para>\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E text</para></section>\n"
    "</article>\n";

static const char TRUNC_HTML[] =
    "<!DOCTYPE html>\n<html><head><title>Caf\xC3\xA9 \xE2\x82\xAC</title>"
    "<script>var x = '<p>';</script></head>\n"
    "<body><h1 class=\"t\">Head\xF0\x9F\x98\x80</h1><p>First <b>para</b> &amp; more &eacute;."
    "</p><!-- c --><pre>  code\n  more</pre><table><tr><td>a</td><td>b</td></tr></table>"
    "<p>\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E text</p></body></html>\n";

static int utf8_boundary(const char *s, size_t i)
{
    return ((unsigned char)s[i] & 0xC0) != 0x80;
}

static void test_truncated(void **state)
{
    (void)state;
    /* every prefix that ends on a character boundary (the parsers' input is valid UTF-8):
     * XML is either complete or an error; HTML gives the text before the cut */
    size_t n = sizeof TRUNC_XML - 1;
    size_t end = (size_t)(strstr(TRUNC_XML, "</article>") - TRUNC_XML) + strlen("</article>");
    for (size_t cut = 1; cut <= n; cut++) {
        if (cut < n && !utf8_boundary(TRUNC_XML, cut))
            continue;
        outcome o = parse_quiet(RAG_FMT_XML, TRUNC_XML, cut);
        /* before the root element closes: an error; from there on: the whole text */
        int want = cut < end ? RAG_EPARSE : RAG_OK;
        if (o.rc != want)
            fail_msg("XML cut at %zu of %zu: rc %d, expected %d (%s)", cut, n, o.rc, want,
                     o.detail);
        if (o.rc == RAG_OK)
            assert_non_null(strstr(o.text, "if (a < b) { return; }"));
        outcome_free(&o);
    }
    outcome o = parse_quiet(RAG_FMT_XML, TRUNC_XML, 120);
    assert_int_equal(o.rc, RAG_EPARSE);
    assert_non_null(strstr(o.detail, "line "));
    outcome_free(&o);

    n = sizeof TRUNC_HTML - 1;
    for (size_t cut = 0; cut < n; cut++) {
        if (!utf8_boundary(TRUNC_HTML, cut))
            continue;
        outcome h = parse_quiet(RAG_FMT_HTML, TRUNC_HTML, cut);
        if (h.rc != RAG_OK)
            fail_msg("HTML cut at %zu: rc %d (%s)", cut, h.rc, h.detail);
        assert_clean(&h, "var x");
        outcome_free(&h);
    }
    /* cut inside the second paragraph's start tag: the first paragraph is there */
    const char *cut_at = strstr(TRUNC_HTML, "<p>\xE6");
    o = parse_quiet(RAG_FMT_HTML, TRUNC_HTML, (size_t)(cut_at - TRUNC_HTML) + 2);
    assert_int_equal(o.rc, RAG_OK);
    assert_non_null(strstr(o.text, "First para & more \xC3\xA9."));
    outcome_free(&o);
    /* Markdown: any boundary, from a buffer of exactly that size and from the whole
     * document with a shorter length.  md4c 0.4.8 reads past the end of a document without
     * a final newline: cut inside the link, it took the ")" after the cut and emitted text
     * from beyond the end (parse_md.c) */
    const char *md = "# T\xC3\xA9tle\n\n```c\nint x;\n```\n\n- a\n- b [l](http://x)\n";
    size_t paren = (size_t)(strchr(md, ')') - md);
    for (size_t cut = 0; cut <= strlen(md); cut++) {
        if (cut < strlen(md) && !utf8_boundary(md, cut))
            continue;
        char *exact = malloc(cut ? cut : 1);
        memcpy(exact, md, cut);
        outcome m = parse_quiet(RAG_FMT_MARKDOWN, exact, cut);
        if (m.rc != RAG_OK)
            fail_msg("Markdown cut at %zu: %d (%s)", cut, m.rc, m.detail);
        if (cut <= paren)
            assert_clean(&m, ")");
        outcome_free(&m);
        free(exact);
        m = parse_quiet(RAG_FMT_MARKDOWN, md, cut);
        assert_int_equal(m.rc, RAG_OK);
        if (cut <= paren && m.text && strchr(m.text, ')'))
            fail_msg("Markdown cut at %zu read past the end: %s", cut, m.text);
        outcome_free(&m);
    }
}

/* ---- through the ingest module: UTF-8 truncation, binary input, the size limit -------- */

typedef struct fixture {
    char *root;
    rag_config cfg;
    rag_ingest *ig;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("ingest-hostile");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 64;
    o.max_doc_bytes = 4096;
    int rc = rag_config_init(&f->cfg, f->root, &o);
    if (!rc)
        rc = rag_ingest_open(&f->ig, &f->cfg);
    if (rc)
        fail_msg("open: %d %s", rc, rag_error_last());
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_ingest_close(f->ig);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static int put(fixture *f, const char *id, const void *data, size_t size, const char *mime,
               unsigned flags)
{
    rag_doc d;
    memset(&d, 0, sizeof d);
    d.id = id;
    d.data = data;
    d.size = size;
    d.mime = mime;
    d.flags = flags;
    rag_put_result r = {-999, 0};
    stderr_capture cap;
    capture_begin(&cap);
    int rc = rag_ingest_put_batch(f->ig, &d, 1, &r);
    long n = 0;
    char *err = capture_end(&cap, &n);
    if (n)
        fail_msg("put wrote %ld bytes to stderr: %.200s", n, err);
    free(err);
    assert_int_equal(rc, RAG_OK);
    return r.code;
}

static void test_utf8_truncation(void **state)
{
    fixture *f = *state;
    /* cut in the middle of a 3-byte sequence at the end, and in the middle of the text */
    const char *xml = "<r><p>caf\xC3\xA9 \xE2\x82\xAC</p></r>";
    size_t cut = (size_t)(strstr(xml, "\xE2\x82\xAC") - xml) + 2;
    assert_int_equal(put(f, "x1.xml", xml, cut, NULL, 0), RAG_EUTF8);
    char buf[64];
    memcpy(buf, xml, cut);
    memcpy(buf + cut, "</p></r>", 9);
    assert_int_equal(put(f, "x2.xml", buf, strlen(buf), NULL, 0), RAG_EUTF8);
    /* repaired: U+FFFD, and the document is read */
    assert_int_equal(put(f, "x3.xml", buf, strlen(buf), NULL, RAG_PUT_REPAIR_UTF8), RAG_OK);
    const char *html = "<html><body><p>caf\xC3\xA9 \xE2\x82";
    assert_int_equal(put(f, "h1.html", html, strlen(html), NULL, 0), RAG_EUTF8);
    assert_int_equal(put(f, "h2.html", html, strlen(html), NULL, RAG_PUT_REPAIR_UTF8), RAG_OK);
    /* truncated inside a tag: XML is an error, HTML the text before the cut */
    const char *tx = "<r><p>text</p><p cla";
    assert_int_equal(put(f, "t1.xml", tx, strlen(tx), NULL, 0), RAG_EPARSE);
    const char *th = "<html><body><p>text</p><p cla";
    assert_int_equal(put(f, "t1.html", th, strlen(th), NULL, 0), RAG_OK);
}

static void test_binary(void **state)
{
    fixture *f = *state;
    unsigned char rnd[2048];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof rnd; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        rnd[i] = (unsigned char)(x >> 24);
    }
    unsigned char png[64] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                             'I', 'H', 'D', 'R'};
    memcpy(png + 16, rnd, sizeof png - 16);
    unsigned char gz[64] = {0x1f, 0x8b, 0x08, 0x00};
    memcpy(gz + 4, rnd + 100, sizeof gz - 4);
    unsigned char png8[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}; /* no NUL in it */
    unsigned char nuls[32] = {0};
    struct { const char *name; const void *data; size_t size; } bins[] = {
        {"random", rnd, sizeof rnd}, {"random16", rnd + 7, 16}, {"png", png, sizeof png},
        {"png8", png8, sizeof png8}, {"gzip", gz, sizeof gz}, {"nuls", nuls, sizeof nuls},
    };
    for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++) {
        char id[64];
        /* no MIME type (and a misleading extension): detection refuses */
        snprintf(id, sizeof id, "%s.txt", bins[i].name);
        int code = put(f, id, bins[i].data, bins[i].size, NULL, 0);
        /* 16 random bytes need not contain a NUL or enough control bytes to look binary:
         * then UTF-8 validation refuses them */
        int want_ok = code == RAG_EUNSUPPORTED ||
                      (!strcmp(bins[i].name, "random16") && code == RAG_EUTF8);
        if (!want_ok)
            fail_msg("%s without a type: %d", bins[i].name, code);
        /* the caller claims a text type: UTF-8 validation or the parser refuses */
        const char *mimes[] = {"text/plain", "text/html", "application/xml", "text/markdown"};
        for (size_t m = 0; m < 4; m++) {
            snprintf(id, sizeof id, "%s-%zu", bins[i].name, m);
            code = put(f, id, bins[i].data, bins[i].size, mimes[m], 0);
            int ok = code == RAG_EUTF8 || code == RAG_EPARSE || code == RAG_EUNSUPPORTED;
            /* NUL bytes are valid UTF-8 and control characters: no text remains */
            if (!strcmp(bins[i].name, "nuls"))
                ok = m == 2 ? code == RAG_EPARSE : code == RAG_EEMPTY;
            if (!ok)
                fail_msg("%s as %s: %d", bins[i].name, mimes[m], code);
        }
    }
    /* an XML document with a NUL inside: not XML */
    const char xnul[] = "<r>a\0b</r>";
    assert_int_equal(put(f, "xnul", xnul, sizeof xnul - 1, "application/xml", 0), RAG_EPARSE);
}

static void test_size_limit(void **state)
{
    fixture *f = *state;
    /* max_doc_bytes = 4096: checked before detection and parsing (no document counted in
     * the parse phase timing, which prepare() starts right after the check) */
    char *bl = billion_laughs("<lolz>", "&lol9;", "</lolz>");
    sbuf b = {0};
    sb_add(&b, bl);
    sb_add(&b, "<!--");
    while (b.len < 5000)
        sb_add(&b, "padding padding padding ");
    sb_add(&b, "-->");
    rag_ingest_phase_us before, after;
    rag_ingest__phase_get(&before);
    assert_int_equal(put(f, "big.xml", b.s, b.len, NULL, 0), RAG_ETOOBIG);
    rag_ingest__phase_get(&after);
    assert_int_equal(after.documents, before.documents);
    /* at the limit: parsed (and refused by libxml2's entity check) */
    assert_int_equal(put(f, "fits.xml", bl, strlen(bl), NULL, 0), RAG_EPARSE);
    rag_ingest__phase_get(&after);
    assert_int_equal(after.documents, before.documents + 1);
    char *exact = malloc(4096);
    memset(exact, 'a', 4096);
    assert_int_equal(put(f, "exact.txt", exact, 4096, NULL, 0), RAG_OK);
    char *over = malloc(4097);
    memset(over, 'a', 4097);
    assert_int_equal(put(f, "over.txt", over, 4097, NULL, 0), RAG_ETOOBIG);
    free(over);
    free(exact);
    free(b.s);
    free(bl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_xxe),
        cmocka_unit_test(test_entity_loader),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_walkers_deep_tree),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test_setup_teardown(test_utf8_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
