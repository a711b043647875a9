/* Parsers of the ingest module: HTML (libxml2), XML, Markdown (md4c), plain text, MIME
 * detection, NFC. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_internal.h"
#include "rag_common.h"
#include "test_support.h"

static char *joined(const rag_ingest_parsed *p)
{
    char *s = NULL;
    size_t n = 0;
    assert_int_equal(rag_ingest__join(p, &s, &n), RAG_OK);
    assert_int_equal(strlen(s), n);
    return s;
}

static void parse_ok(int fmt, const char *src, rag_ingest_parsed *p)
{
    rag_ingest__parsed_init(p);
    int rc = rag_ingest__parse(fmt, src, strlen(src), p);
    if (rc)
        fail_msg("parse failed: %d %s", rc, rag_error_last());
}

static const rag_ingest_block *find_block(const rag_ingest_parsed *p, const char *needle)
{
    for (size_t i = 0; i < p->count; i++)
        if (strstr(p->blocks[i].text, needle))
            return &p->blocks[i];
    return NULL;
}

/* ---- HTML ----------------------------------------------------------------------------- */

static void test_html_basic(void **state)
{
    (void)state;
    const char *html =
        "<!DOCTYPE html>\n<html><head><title>  The   Title </title>"
        "<style>body { color: red }</style><script>var secret = 'SCRIPTTEXT';</script>"
        "</head><body>"
        "<noscript>NOSCRIPTTEXT</noscript><template><p>TEMPLATETEXT</p></template>"
        "<h1>Heading &amp; more</h1>"
        "<p>First   paragraph\n  with <b>bold</b> and &lt;tags&gt; &eacute;t&#233; &#x263A;.</p>"
        "<p>Second<br>line</p>"
        "<svg><text>SVGTEXT</text></svg>"
        "<pre>  code   keeps\n    spacing</pre>"
        "<ul><li>one</li><li>two</li></ul>"
        "</body></html>";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_HTML, html, &p);
    assert_non_null(p.title);
    assert_string_equal(p.title, "The Title");
    char *s = joined(&p);
    assert_null(strstr(s, "SCRIPTTEXT"));
    assert_null(strstr(s, "NOSCRIPTTEXT"));
    assert_null(strstr(s, "TEMPLATETEXT"));
    assert_null(strstr(s, "SVGTEXT"));
    assert_null(strstr(s, "color: red"));
    assert_null(strstr(s, "The Title")); /* <head> is not body text */
    const rag_ingest_block *h = find_block(&p, "Heading & more");
    assert_non_null(h);
    assert_int_equal(h->kind, RAG_BLOCK_HEADING);
    assert_int_equal(h->level, 1);
    /* entities decoded, whitespace collapsed */
    assert_non_null(strstr(s, "First paragraph with bold and <tags> \xC3\xA9t\xC3\xA9 \xE2\x98\xBA."));
    /* <br> ends a paragraph */
    assert_non_null(find_block(&p, "Second"));
    assert_null(find_block(&p, "Second line"));
    const rag_ingest_block *code = find_block(&p, "keeps");
    assert_non_null(code);
    assert_int_equal(code->kind, RAG_BLOCK_CODE);
    assert_non_null(strstr(code->text, "code   keeps\n    spacing"));
    assert_non_null(find_block(&p, "one"));
    assert_non_null(find_block(&p, "two"));
    assert_string_not_equal(find_block(&p, "one")->text, find_block(&p, "two")->text);
    free(s);
    rag_ingest__parsed_clear(&p);
}

static void test_html_main_content(void **state)
{
    (void)state;
    const char *html =
        "<html><head><title>t</title></head><body>"
        "<nav><a href='/'>Home NAVTEXT</a></nav>"
        "<div class='sidebar' role='navigation'>SIDEBARTEXT</div>"
        "<main><h2>Real</h2><p>Main content here.</p></main>"
        "<footer>FOOTERTEXT</footer><div>OUTSIDETEXT</div>"
        "</body></html>";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_HTML, html, &p);
    char *s = joined(&p);
    assert_non_null(strstr(s, "Main content here."));
    assert_null(strstr(s, "NAVTEXT"));
    assert_null(strstr(s, "SIDEBARTEXT"));
    assert_null(strstr(s, "FOOTERTEXT"));
    assert_null(strstr(s, "OUTSIDETEXT"));
    free(s);
    rag_ingest__parsed_clear(&p);

    /* Sphinx layout: div.document > ... > div.body[role=main]; sidebar inside .document;
     * permalink anchors dropped */
    const char *sphinx =
        "<html><body><div class='related' role='navigation'>RELATED</div>"
        "<div class='document'><div class='documentwrapper'><div class='bodywrapper'>"
        "<div class='body' role='main'><section><h1>Title<a class='headerlink' "
        "href='#x'>\xC2\xB6</a></h1><p>Body text.</p></section></div></div></div>"
        "<div class='sphinxsidebar'>SIDEBAR</div></div>"
        "<div class='footer'>FOOT</div></body></html>";
    parse_ok(RAG_FMT_HTML, sphinx, &p);
    s = joined(&p);
    assert_string_equal(s, "Title\n\nBody text.");
    assert_int_equal(p.blocks[0].kind, RAG_BLOCK_HEADING);
    free(s);
    rag_ingest__parsed_clear(&p);

    /* no container: the body minus chrome */
    const char *plain = "<html><body><header><nav>MENU</nav>SITENAME</header><article><header>"
                        "<h1>Post</h1></header><p>Words.</p></article>"
                        "<aside>ASIDE</aside></body></html>";
    parse_ok(RAG_FMT_HTML, plain, &p);
    s = joined(&p);
    assert_string_equal(s, "Post\n\nWords.");
    free(s);
    rag_ingest__parsed_clear(&p);
}

static void test_html_deep_nesting(void **state)
{
    (void)state;
    const size_t depth = 10000;
    size_t cap = depth * 20 + 256;
    char *html = malloc(cap);
    size_t w = (size_t)sprintf(html, "<html><body>");
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "<div><b>");
    w += (size_t)sprintf(html + w, "deep text");
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "</b></div>");
    sprintf(html + w, "</body></html>");
    rag_ingest_parsed p;
    rag_ingest__parsed_init(&p);
    /* must not crash; libxml2 may cut a tree that deep, either outcome is fine */
    int rc = rag_ingest__parse(RAG_FMT_HTML, html, strlen(html), &p);
    assert_true(rc == RAG_OK || rc == RAG_EPARSE);
    rag_ingest__parsed_clear(&p);
    /* same with unclosed tags */
    w = (size_t)sprintf(html, "<html><body>");
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "<span>x");
    rc = rag_ingest__parse(RAG_FMT_HTML, html, strlen(html), &p);
    assert_true(rc == RAG_OK || rc == RAG_EPARSE);
    rag_ingest__parsed_clear(&p);
    /* XML too */
    w = 0;
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "<a>");
    w += (size_t)sprintf(html + w, "t");
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "</a>");
    rc = rag_ingest__parse(RAG_FMT_XML, html, strlen(html), &p);
    assert_true(rc == RAG_OK || rc == RAG_EPARSE);
    rag_ingest__parsed_clear(&p);
    /* Markdown: 10,000 nested block quotes */
    memset(html, '>', depth);
    strcpy(html + depth, " quoted\n");
    rc = rag_ingest__parse(RAG_FMT_MARKDOWN, html, strlen(html), &p);
    assert_int_equal(rc, RAG_OK);
    rag_ingest__parsed_clear(&p);
    free(html);
}

static void test_html_real_page(void **state)
{
    (void)state;
    const char *path = "/usr/share/doc/python3.11/html/library/functions.html";
    size_t len = 0;
    char *html = rag_test_read_file(path, &len);
    if (!html) {
        skip();
        return;
    }
    rag_ingest_parsed p;
    rag_ingest__parsed_init(&p);
    assert_int_equal(rag_ingest__parse(RAG_FMT_HTML, html, len, &p), RAG_OK);
    assert_non_null(p.title);
    assert_non_null(strstr(p.title, "Built-in Functions"));
    assert_true(p.count > 100);
    assert_int_equal(p.blocks[0].kind, RAG_BLOCK_HEADING);
    assert_string_equal(p.blocks[0].text, "Built-in Functions");
    char *s = joined(&p);
    assert_non_null(strstr(s, "The Python interpreter has a number of functions and types built "
                              "into it that are always available."));
    assert_non_null(strstr(s, "Return the absolute value of a number."));
    assert_null(strstr(s, "\xC2\xB6"));          /* permalinks */
    assert_null(strstr(s, "Quick search"));      /* search box */
    assert_null(strstr(s, "Table of Contents")); /* sidebar */
    assert_null(strstr(s, "Theme"));             /* theme selector */
    assert_null(strstr(s, "documentation_options")); /* scripts */
    /* code examples survive as code blocks */
    int code = 0;
    for (size_t i = 0; i < p.count; i++)
        code += p.blocks[i].kind == RAG_BLOCK_CODE;
    assert_true(code > 5);
    free(s);
    rag_ingest__parsed_clear(&p);
    free(html);
}

static void test_html_meta_charset_ignored(void **state)
{
    (void)state;
    /* bytes are UTF-8 (validated before parsing); a lying meta must not garble them */
    const char *html = "<html><head><meta charset='iso-8859-1'></head><body><p>caf\xC3\xA9</p>"
                       "</body></html>";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_HTML, html, &p);
    char *s = joined(&p);
    assert_string_equal(s, "caf\xC3\xA9");
    free(s);
    rag_ingest__parsed_clear(&p);
}

/* ---- XML ------------------------------------------------------------------------------ */

static void test_xml_no_external_entities(void **state)
{
    (void)state;
    const char *xml = "<?xml version='1.0'?>\n"
                      "<!DOCTYPE d [<!ENTITY ext SYSTEM 'file:///etc/passwd'>"
                      "<!ENTITY inner 'INNERTEXT'>]>\n"
                      "<doc><title>XML title</title><para>Hello &ext; world &amp; more</para>"
                      "<para>&inner;</para></doc>";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_XML, xml, &p);
    char *s = joined(&p);
    assert_null(strstr(s, "root:"));
    assert_non_null(strstr(s, "Hello"));
    assert_non_null(strstr(s, "world & more"));
    const rag_ingest_block *t = find_block(&p, "XML title");
    assert_non_null(t);
    assert_int_equal(t->kind, RAG_BLOCK_HEADING);
    free(s);
    rag_ingest__parsed_clear(&p);

    /* malformed XML is a parse error with detail */
    rag_ingest__parsed_init(&p);
    const char *bad = "<a><b></a>";
    assert_int_equal(rag_ingest__parse(RAG_FMT_XML, bad, strlen(bad), &p), RAG_EPARSE);
    assert_non_null(strstr(rag_error_last(), "XML"));
    rag_ingest__parsed_clear(&p);

    /* XHTML through the XML parser is read like HTML */
    const char *xhtml = "<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'><head>"
                        "<title>X</title><script>S</script></head><body><h2>H</h2><p>P</p>"
                        "</body></html>";
    parse_ok(RAG_FMT_XML, xhtml, &p);
    s = joined(&p);
    assert_string_equal(s, "H\n\nP");
    assert_string_equal(p.title, "X");
    free(s);
    rag_ingest__parsed_clear(&p);
}

/* ---- Markdown ------------------------------------------------------------------------- */

static void test_markdown(void **state)
{
    (void)state;
    const char *md = "# Top title\n\nSome *emphasis* and `code` and [a link](http://x).\n"
                     "Soft wrapped line.\n\n"
                     "## Second &amp; heading\n\n"
                     "- item one\n- item two\n\n"
                     "```c\nint main(void) {\n    return 0;\n}\n```\n\n"
                     "<div>RAWHTML</div>\n\n"
                     "| a | b |\n|---|---|\n| c | d |\n\n"
                     "Entity &eacute; &#65; done.\n";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_MARKDOWN, md, &p);
    assert_true(p.count >= 6);
    assert_int_equal(p.blocks[0].kind, RAG_BLOCK_HEADING);
    assert_int_equal(p.blocks[0].level, 1);
    assert_string_equal(p.blocks[0].text, "Top title");
    assert_string_equal(p.blocks[1].text,
                        "Some emphasis and code and a link. Soft wrapped line.");
    const rag_ingest_block *h2 = find_block(&p, "Second");
    assert_non_null(h2);
    assert_int_equal(h2->kind, RAG_BLOCK_HEADING);
    assert_int_equal(h2->level, 2);
    assert_string_equal(h2->text, "Second & heading");
    assert_non_null(find_block(&p, "item one"));
    assert_null(find_block(&p, "item one item two"));
    const rag_ingest_block *code = find_block(&p, "int main");
    assert_non_null(code);
    assert_int_equal(code->kind, RAG_BLOCK_CODE);
    assert_non_null(strstr(code->text, "{\n    return 0;\n}"));
    assert_null(find_block(&p, "RAWHTML"));
    assert_non_null(find_block(&p, "a b"));
    assert_non_null(find_block(&p, "Entity \xC3\xA9 A done."));
    rag_ingest__parsed_clear(&p);
}

/* ---- plain text, NFC ------------------------------------------------------------------ */

static void test_text_and_nfc(void **state)
{
    (void)state;
    const char *txt = "\xEF\xBB\xBF" "First line\r\nsecond line   \n\n\n  Para two\twith tab\n"
                      "cafe\xCC\x81 \x01" "ctl\n";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_TEXT, txt, &p);
    assert_int_equal(p.count, 2);
    assert_string_equal(p.blocks[0].text, "First line\nsecond line");
    /* e + U+0301 composes to U+00E9; control characters are dropped */
    assert_string_equal(p.blocks[1].text, "Para two\twith tab\ncaf\xC3\xA9 ctl");
    rag_ingest__parsed_clear(&p);

    /* a NUL byte (valid UTF-8, but a control character) is dropped, not a string end */
    rag_ingest__parsed_init(&p);
    assert_int_equal(rag_ingest__parse(RAG_FMT_TEXT, "a\0b c", 5, &p), RAG_OK);
    assert_int_equal(p.count, 1);
    assert_string_equal(p.blocks[0].text, "ab c");
    assert_int_equal(p.blocks[0].len, 4);
    rag_ingest__parsed_clear(&p);

    /* whitespace only: no blocks */
    parse_ok(RAG_FMT_TEXT, " \n\t\n ", &p);
    assert_int_equal(p.count, 0);
    rag_ingest__parsed_clear(&p);
    parse_ok(RAG_FMT_HTML, "<html><body><script>x</script>  </body></html>", &p);
    assert_int_equal(p.count, 0);
    rag_ingest__parsed_clear(&p);
}

/* ---- MIME detection ------------------------------------------------------------------- */

static int detect(const char *mime, const char *data, const char *uri, const char *id,
                  const char **m)
{
    int fmt = -1;
    const char *dummy;
    int rc = rag_ingest__detect(mime, data, strlen(data), uri, id, &fmt, m ? m : &dummy);
    return rc ? rc : fmt;
}

static void test_detect(void **state)
{
    (void)state;
    const char *m = NULL;
    assert_int_equal(detect("text/html; charset=utf-8", "hi", NULL, "x", &m), RAG_FMT_HTML);
    assert_string_equal(m, "text/html");
    assert_int_equal(detect("TEXT/Markdown", "hi", NULL, "x", &m), RAG_FMT_MARKDOWN);
    assert_int_equal(detect("text/plain", "<html>", NULL, "x", &m), RAG_FMT_TEXT);
    assert_int_equal(detect("application/xml", "<a/>", NULL, "x", &m), RAG_FMT_XML);
    assert_int_equal(detect("text/csv", "a,b", NULL, "x", &m), RAG_FMT_TEXT);
    assert_int_equal(detect("application/pdf", "%PDF-1.4", NULL, "x", &m), RAG_EUNSUPPORTED);
    assert_int_equal(detect("image/png", "x", NULL, "x", &m), RAG_EUNSUPPORTED);
    /* magic */
    assert_int_equal(detect(NULL, "\xEF\xBB\xBF  <!doctype HTML><p>x", NULL, "a.txt", &m),
                     RAG_FMT_HTML);
    assert_int_equal(detect(NULL, "\n<HTML><body>x", NULL, "x", &m), RAG_FMT_HTML);
    assert_int_equal(detect(NULL, "<?xml version='1.0'?><r/>", NULL, "x", &m), RAG_FMT_XML);
    assert_int_equal(detect(NULL, "<?xml version='1.0'?><html xmlns='x'/>", NULL, "x", &m),
                     RAG_FMT_HTML);
    /* extensions: uri first, then id */
    assert_int_equal(detect(NULL, "plain", "http://h/p/readme.MD?x=1#y", "id", &m),
                     RAG_FMT_MARKDOWN);
    assert_int_equal(detect(NULL, "plain", NULL, "docs/page.htm", &m), RAG_FMT_HTML);
    assert_int_equal(detect(NULL, "# not md", NULL, "notes.txt", &m), RAG_FMT_TEXT);
    assert_int_equal(detect(NULL, "# Heading\n\ntext", NULL, "doc-1", &m), RAG_FMT_MARKDOWN);
    assert_int_equal(detect(NULL, "just words.", NULL, "doc.v1", &m), RAG_FMT_TEXT);
    assert_string_equal(m, "text/plain");
    /* binary without a MIME type */
    const char bin[] = {'a', 0, 'b', 0};
    int fmt;
    assert_int_equal(rag_ingest__detect(NULL, bin, sizeof bin, NULL, "x", &fmt, &m),
                     RAG_EUNSUPPORTED);
    assert_int_equal(detect(NULL, "%PDF-1.7 ...", NULL, "x", &m), RAG_EUNSUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_html_basic),
        cmocka_unit_test(test_html_main_content),
        cmocka_unit_test(test_html_deep_nesting),
        cmocka_unit_test(test_html_real_page),
        cmocka_unit_test(test_html_meta_charset_ignored),
        cmocka_unit_test(test_xml_no_external_entities),
        cmocka_unit_test(test_markdown),
        cmocka_unit_test(test_text_and_nfc),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
