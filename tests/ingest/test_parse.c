/* Parsers of the ingest module: HTML (libxml2), XML, Markdown (md4c), plain text, MIME
 * detection, NFC. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* A fixture under tests/ingest/data (the source tree: $RAG_SOURCE_DIR, else this file's). */
static char *read_fixture(const char *name, size_t *len)
{
    char path[4096];
    const char *src = getenv("RAG_SOURCE_DIR");
    if (src && *src) {
        snprintf(path, sizeof path, "%s/tests/ingest/data/%s", src, name);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        int dir = slash ? (int)(slash - __FILE__) : 1;
        snprintf(path, sizeof path, "%.*s/data/%s", dir, slash ? __FILE__ : ".", name);
    }
    char *s = rag_test_read_file(path, len);
    if (!s)
        fail_msg("fixture %s not found", path);
    return s;
}

static void parse_fixture(int fmt, const char *name, rag_ingest_parsed *p)
{
    size_t len = 0;
    char *src = read_fixture(name, &len);
    rag_ingest__parsed_init(p);
    int rc = rag_ingest__parse(fmt, src, len, p);
    free(src);
    if (rc)
        fail_msg("parse of %s failed: %d %s", name, rc, rag_error_last());
}

/* The block at index i must be a heading of `level` with exactly `text`. */
static void expect_heading(const rag_ingest_parsed *p, const char *text, int level)
{
    for (size_t i = 0; i < p->count; i++) {
        if (!strcmp(p->blocks[i].text, text)) {
            if (p->blocks[i].kind != RAG_BLOCK_HEADING || p->blocks[i].level != level)
                fail_msg("'%s': kind %d level %d, expected heading level %d", text,
                         p->blocks[i].kind, p->blocks[i].level, level);
            return;
        }
    }
    fail_msg("no block '%s'", text);
}

static void expect_kind(const rag_ingest_parsed *p, const char *needle, int kind)
{
    const rag_ingest_block *b = find_block(p, needle);
    if (!b)
        fail_msg("no block containing '%s'", needle);
    if (b->kind != kind)
        fail_msg("block with '%s' has kind %d, expected %d", needle, b->kind, kind);
}

static void expect_absent(const rag_ingest_parsed *p, const char *needle)
{
    const rag_ingest_block *b = find_block(p, needle);
    if (b)
        fail_msg("'%s' should not be in the text, found in block '%s'", needle, b->text);
    if (p->title && strstr(p->title, needle))
        fail_msg("'%s' should not be in the title '%s'", needle, p->title);
}

/* fd 2 redirected to a temporary file, to prove the parsers never write to stderr. */
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

static long capture_end(stderr_capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    struct stat st;
    long n = fstat(fileno(c->tmp), &st) == 0 ? (long)st.st_size : -1;
    fclose(c->tmp);
    return n;
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
    /* libxml2 (no HUGE) halts at depth 256; a halted parse is an error, not partial text
     * (parse_html.c).  tests/ingest/test_hostile.c covers 100,000 levels and the limits. */
    int rc = rag_ingest__parse(RAG_FMT_HTML, html, strlen(html), &p);
    assert_int_equal(rc, RAG_EPARSE);
    assert_non_null(strstr(rag_error_last(), "depth"));
    rag_ingest__parsed_clear(&p);
    /* same with unclosed tags */
    w = (size_t)sprintf(html, "<html><body>");
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "<span>x");
    rc = rag_ingest__parse(RAG_FMT_HTML, html, strlen(html), &p);
    assert_int_equal(rc, RAG_EPARSE);
    rag_ingest__parsed_clear(&p);
    /* XML too */
    w = 0;
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "<a>");
    w += (size_t)sprintf(html + w, "t");
    for (size_t i = 0; i < depth; i++)
        w += (size_t)sprintf(html + w, "</a>");
    rc = rag_ingest__parse(RAG_FMT_XML, html, strlen(html), &p);
    assert_int_equal(rc, RAG_EPARSE);
    assert_non_null(strstr(rag_error_last(), "depth"));
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

static void test_xml_docbook5(void **state)
{
    (void)state;
    rag_ingest_parsed p;
    parse_fixture(RAG_FMT_XML, "docbook5-article.xml", &p);
    /* the article title sits in <info>: the document title and the level-1 heading */
    assert_non_null(p.title);
    assert_string_equal(p.title, "Backing Up a Mail Server");
    assert_int_equal(p.blocks[0].kind, RAG_BLOCK_HEADING);
    assert_string_equal(p.blocks[0].text, "Backing Up a Mail Server");
    expect_heading(&p, "Preparing the /srv/mail volume", 2);
    expect_heading(&p, "Configuration", 3);
    expect_heading(&p, "Verifying a backup", 2); /* <section><info><title> */
    /* paragraphs keep inline markup as running text, one block each */
    expect_kind(&p, "This guide explains how to take consistent backups of a Postfix and "
                    "Dovecot server without stopping mail delivery.",
                RAG_BLOCK_PARA);
    expect_kind(&p, "Keep at least 10% of the volume group free.", RAG_BLOCK_PARA);
    /* a non-section title (note, table) is a paragraph, not a heading */
    expect_kind(&p, "Snapshots need free extents", RAG_BLOCK_PARA);
    expect_kind(&p, "Checks after every run", RAG_BLOCK_PARA);
    /* table rows: one paragraph per row, cells spaced */
    expect_kind(&p, "Message count equal to the live store", RAG_BLOCK_PARA);
    /* screen and programlisting: code blocks, whitespace kept, inline parts inline */
    const rag_ingest_block *scr = find_block(&p, "lvcreate");
    assert_non_null(scr);
    assert_int_equal(scr->kind, RAG_BLOCK_CODE);
    assert_string_equal(scr->text,
                        "# lvcreate --snapshot --size 5G --name mailsnap /dev/vg0/mail");
    const rag_ingest_block *code = find_block(&p, "retention_days");
    assert_non_null(code);
    assert_int_equal(code->kind, RAG_BLOCK_CODE);
    assert_string_equal(code->text,
                        "[backup]\ntarget = s3://backups/mail\n    retention_days = 30");
    expect_kind(&p, "Run the script from cron at 02:00.", RAG_BLOCK_PARA);
    assert_null(find_block(&p, "Run the script from cron at 02:00. Alert"));
    /* metadata, index terms, editorial remarks: not text; XInclude: never processed */
    expect_absent(&p, "Ada");
    expect_absent(&p, "ada@example.org");
    expect_absent(&p, "METADATA");
    expect_absent(&p, "A short operator");
    expect_absent(&p, "INDEXTERM");
    expect_absent(&p, "REMARK");
    expect_absent(&p, "root:");
    rag_ingest__parsed_clear(&p);
}

static void test_xml_docbook4(void **state)
{
    (void)state;
    rag_ingest_parsed p;
    parse_fixture(RAG_FMT_XML, "docbook4-book.xml", &p);
    assert_non_null(p.title);
    assert_string_equal(p.title, "The Widget Handbook"); /* from <bookinfo> */
    expect_heading(&p, "The Widget Handbook", 1);
    expect_heading(&p, "Introduction", 2);
    expect_heading(&p, "Installing", 3);
    expect_heading(&p, "From source", 4);
    expect_heading(&p, "Questions", 2);
    /* the DTD is not loaded; &mdash; it would declare reads as the HTML character */
    expect_kind(&p, "Widgets turn input into output \xE2\x80\x94 quickly.", RAG_BLOCK_PARA);
    expect_kind(&p, "$ sudo apt install widget", RAG_BLOCK_CODE);
    const rag_ingest_block *ll = find_block(&p, "./configure");
    assert_non_null(ll);
    assert_int_equal(ll->kind, RAG_BLOCK_CODE);
    assert_string_equal(ll->text, "./configure\nmake\nmake install");
    expect_kind(&p, "Is it fast?", RAG_BLOCK_PARA);
    expect_kind(&p, "Yes, for most inputs.", RAG_BLOCK_PARA);
    expect_absent(&p, "Bo Writer");
    expect_absent(&p, "BOOKINFO-LEGAL");
    rag_ingest__parsed_clear(&p);
}

static void test_xml_mallard(void **state)
{
    (void)state;
    /* gnome-user-docs 43.0, net-wireless-troubleshooting-hardware-check.page */
    rag_ingest_parsed p;
    parse_fixture(RAG_FMT_XML, "net-wireless-troubleshooting-hardware-check.page", &p);
    assert_non_null(p.title);
    assert_string_equal(p.title, "Wireless connection troubleshooter");
    assert_int_equal(p.blocks[0].kind, RAG_BLOCK_HEADING);
    assert_int_equal(p.blocks[0].level, 1);
    assert_string_equal(p.blocks[0].text, "Wireless connection troubleshooter");
    expect_kind(&p, "Check that the wireless adapter was recognized", RAG_BLOCK_PARA);
    expect_heading(&p, "PCI (internal) wireless adapter", 2);
    expect_heading(&p, "USB wireless adapter", 2);
    expect_heading(&p, "Checking for a PCMCIA device", 2);
    expect_heading(&p, "Wireless adapter was not recognized", 2);
    /* inline <cmd>, <key>, <code> stay in the paragraph; <keyseq> gets its "+" */
    expect_kind(&p, "Open a Terminal window, type lshw -C network and press Enter.",
                RAG_BLOCK_PARA);
    expect_kind(&p, "find any that are marked Network controller or Ethernet controller.",
                RAG_BLOCK_PARA);
    expect_kind(&p, "press Ctrl+C.", RAG_BLOCK_PARA);
    /* block <code> (CDATA inside): a code block with its lines */
    const rag_ingest_block *c = find_block(&p, "*-network");
    assert_non_null(c);
    assert_int_equal(c->kind, RAG_BLOCK_CODE);
    assert_non_null(strstr(c->text, "*-network\n       description: Wireless interface\n"));
    expect_kind(&p, "tail -f /var/log/messages", RAG_BLOCK_CODE);
    /* <info>: credits, links, revision, desc; XInclude of legal.xml not processed */
    expect_absent(&p, "Contributors to the Ubuntu documentation wiki");
    expect_absent(&p, "gnome-doc-list@gnome.org");
    expect_absent(&p, "Even though your wireless adapter is connected");
    expect_absent(&p, "Creative Commons");
    rag_ingest__parsed_clear(&p);

    /* sharing-personal.page: editorial comments, notes, terms, if:choose */
    parse_fixture(RAG_FMT_XML, "sharing-personal.page", &p);
    assert_string_equal(p.title, "Share your personal files");
    expect_heading(&p, "Security", 2);
    expect_heading(&p, "Networks", 2);
    expect_absent(&p, "Rewrite Step 1 everywhere");
    expect_absent(&p, "Michael Hill");
    expect_absent(&p, "Let other people access files");
    /* a term title is a paragraph, its definition another */
    expect_kind(&p, "Require Password", RAG_BLOCK_PARA);
    assert_string_equal(find_block(&p, "Require Password")->text, "Require Password");
    expect_kind(&p, "You must have the gnome-user-share package installed for Personal File "
                    "Sharing to be visible.",
                RAG_BLOCK_PARA);
    expect_kind(&p, "Install gnome-user-share", RAG_BLOCK_PARA);
    expect_kind(&p, "Click on Sharing to open the panel.", RAG_BLOCK_PARA);
    rag_ingest__parsed_clear(&p);
}

static void test_xml_generic(void **state)
{
    (void)state;
    /* an unknown vocabulary: read by shape */
    const char *xml = "<?xml version='1.0'?>\n"
                      "<catalog xmlns='urn:example:parts'>\n"
                      "  <title>Parts list</title>\n"
                      "  <part sku='1'>\n"
                      "    <name>Hex bolt</name>\n"
                      "    <desc>A <b>strong</b> bolt for <i>heavy</i> loads.</desc>\n"
                      "  </part>\n"
                      "  <group><title>Washers</title>\n"
                      "    <part><name>Flat washer</name><desc>Spreads the load.</desc></part>\n"
                      "  </group>\n"
                      "  <note>Mixed <![CDATA[<raw> & text]]> with &amp; entities.</note>\n"
                      "</catalog>";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_XML, xml, &p);
    assert_null(p.title); /* no vocabulary, no document title (derived later) */
    expect_heading(&p, "Parts list", 1);
    expect_heading(&p, "Washers", 2);
    expect_kind(&p, "Hex bolt", RAG_BLOCK_PARA);
    assert_string_equal(find_block(&p, "Hex bolt")->text, "Hex bolt");
    const rag_ingest_block *d = find_block(&p, "A strong bolt");
    assert_non_null(d);
    assert_string_equal(d->text, "A strong bolt for heavy loads.");
    assert_string_equal(find_block(&p, "Flat washer")->text, "Flat washer");
    assert_string_equal(find_block(&p, "Spreads")->text, "Spreads the load.");
    assert_string_equal(find_block(&p, "Mixed")->text, "Mixed <raw> & text with & entities.");
    rag_ingest__parsed_clear(&p);

    /* the declared encoding does not matter: the bytes are UTF-8 */
    parse_ok(RAG_FMT_XML, "<?xml version='1.0' encoding='ISO-8859-1'?><r>caf\xC3\xA9</r>", &p);
    assert_int_equal(p.count, 1);
    assert_string_equal(p.blocks[0].text, "caf\xC3\xA9");
    rag_ingest__parsed_clear(&p);

    /* no text: no blocks (the caller says RAG_EEMPTY) */
    parse_ok(RAG_FMT_XML, "  \n ", &p);
    assert_int_equal(p.count, 0);
    rag_ingest__parsed_clear(&p);
    parse_ok(RAG_FMT_XML, "<r><!-- c --><?pi x?></r>", &p);
    assert_int_equal(p.count, 0);
    rag_ingest__parsed_clear(&p);
}

static void test_xhtml_entities(void **state)
{
    (void)state;
    /* XHTML naming its DTD (never loaded): HTML entity names read as their characters;
     * a declared entity is not expanded, in the title either */
    const char *xhtml =
        "<?xml version='1.0'?>\n"
        "<!DOCTYPE html PUBLIC '-//W3C//DTD XHTML 1.0 Strict//EN' "
        "'http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd' "
        "[<!ENTITY secret 'DECLAREDTEXT'>]>\n"
        "<html xmlns='http://www.w3.org/1999/xhtml'><head><title>A&nbsp;&copy; B&secret;"
        "</title></head><body><h1>T&eacute;l&eacute;</h1><p>x&mdash;y &secret; z</p>"
        "</body></html>";
    rag_ingest_parsed p;
    parse_ok(RAG_FMT_XML, xhtml, &p);
    assert_non_null(p.title);
    assert_string_equal(p.title, "A\xC2\xA0\xC2\xA9 B");
    expect_heading(&p, "T\xC3\xA9l\xC3\xA9", 1);
    expect_kind(&p, "x\xE2\x80\x94y z", RAG_BLOCK_PARA);
    expect_absent(&p, "DECLAREDTEXT");
    rag_ingest__parsed_clear(&p);
}

/* Diagnostics: the first error with its position reaches rag_error_last(), nothing reaches
 * stderr (fd 2 is redirected to a file during the parses and must stay empty). */
static void test_parser_errors(void **state)
{
    (void)state;
    rag_ingest_parsed p;
    rag_ingest__parsed_init(&p);
    stderr_capture cap;
    capture_begin(&cap);
    const char *bad = "<a>\n  <b>text</a>";
    int rc1 = rag_ingest__parse(RAG_FMT_XML, bad, strlen(bad), &p);
    char detail1[512];
    snprintf(detail1, sizeof detail1, "%s", rag_error_last());
    rag_ingest__parsed_clear(&p);
    const char *undeclared = "<a>&nosuch; &#xFFFFFFF; <b x='1' x='2'/></a>";
    int rc2 = rag_ingest__parse(RAG_FMT_XML, undeclared, strlen(undeclared), &p);
    rag_ingest__parsed_clear(&p);
    /* HTML recovers from everything but a halted parser, silently */
    const char *soup = "<html><body><p>one<b>two</i></p></td><foo:bar>three<p "
                       "x='1>four&bogus;</body>";
    int rc3 = rag_ingest__parse(RAG_FMT_HTML, soup, strlen(soup), &p);
    size_t soup_blocks = p.count;
    rag_ingest__parsed_clear(&p);
    const char *md = "# x\n\n<div>\n[a](<b\n";
    int rc4 = rag_ingest__parse(RAG_FMT_MARKDOWN, md, strlen(md), &p);
    rag_ingest__parsed_clear(&p);
    long written = capture_end(&cap);
    assert_int_equal(written, 0);
    assert_int_equal(rc1, RAG_EPARSE);
    assert_non_null(strstr(detail1, "XML is not well-formed"));
    assert_non_null(strstr(detail1, "line 2, column"));
    assert_non_null(strstr(detail1, "mismatch"));
    assert_int_equal(rc2, RAG_EPARSE);
    assert_non_null(strstr(rag_error_last(), "line 1, column"));
    assert_int_equal(rc3, RAG_OK);
    assert_true(soup_blocks >= 1);
    assert_int_equal(rc4, RAG_OK);
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

/* Order: the caller's MIME type, then magic bytes, then the extension. */
static void test_detect_order(void **state)
{
    (void)state;
    const char *m = NULL;
    const char *xml = "<?xml version='1.0'?><notes><n>x</n></notes>";
    /* a .txt file that starts like XML: XML by magic, unless the caller says text */
    assert_int_equal(detect(NULL, xml, NULL, "notes.txt", &m), RAG_FMT_XML);
    assert_string_equal(m, "application/xml");
    assert_int_equal(detect(NULL, xml, "file:///x/notes.txt", "id", &m), RAG_FMT_XML);
    assert_int_equal(detect("text/plain", xml, NULL, "notes.txt", &m), RAG_FMT_TEXT);
    assert_int_equal(detect("text/markdown", xml, NULL, "notes.xml", &m), RAG_FMT_MARKDOWN);
    /* HTML magic beats a .md extension; the caller beats the magic */
    assert_int_equal(detect(NULL, "<!DOCTYPE html><p>x", NULL, "a.md", &m), RAG_FMT_HTML);
    assert_int_equal(detect("text/plain", "<!DOCTYPE html><p>x", NULL, "a.md", &m),
                     RAG_FMT_TEXT);
    /* XML without a prolog: a DOCTYPE, or a root element declaring a namespace */
    assert_int_equal(detect(NULL, "<!DOCTYPE book PUBLIC '-//OASIS//DTD DocBook XML V4.5//EN' "
                                  "'docbookx.dtd'><book/>",
                            NULL, "b.txt", &m),
                     RAG_FMT_XML);
    assert_int_equal(detect(NULL, "<!-- c -->\n<page xmlns=\"http://projectmallard.org/1.0/\" "
                                  "id='x'><p>hi</p></page>",
                            NULL, "x", &m),
                     RAG_FMT_XML);
    assert_int_equal(detect(NULL, "<div xmlns='http://www.w3.org/1999/xhtml'><p>x</p></div>",
                            NULL, "x", &m),
                     RAG_FMT_HTML);
    /* no magic: the extension (uri, then id); no extension: content heuristics */
    assert_int_equal(detect(NULL, "<p>hi</p>", NULL, "a.md", &m), RAG_FMT_MARKDOWN);
    assert_int_equal(detect(NULL, "<p>hi</p>", NULL, "a", &m), RAG_FMT_HTML);
    assert_int_equal(detect(NULL, "words", NULL, "help/index.page", &m), RAG_FMT_XML);
    assert_int_equal(detect(NULL, "words", "https://h/guide.dbk", "g.txt", &m), RAG_FMT_XML);
    assert_int_equal(detect("application/docbook+xml", "words", NULL, "x", &m), RAG_FMT_XML);
    /* binary magic without a MIME type */
    const char *png = "\x89PNG\r\n\x1a\n";
    assert_int_equal(detect(NULL, png, NULL, "image.txt", &m), RAG_EUNSUPPORTED);
    assert_int_equal(detect(NULL, "\x1f\x8b\x08\x08", NULL, "a.txt", &m), RAG_EUNSUPPORTED);
    assert_int_equal(detect(NULL, "\xFF\xD8\xFF\xE0", NULL, "a", &m), RAG_EUNSUPPORTED);
    assert_int_equal(detect(NULL, "\x7F" "ELF\x02\x01", NULL, "a", &m), RAG_EUNSUPPORTED);
    assert_int_equal(detect(NULL, "\xFF\xFEh\x01", NULL, "a", &m), RAG_EUNSUPPORTED);
    assert_int_equal(detect(NULL, "ab\x01\x02\x03\x04" "cd", NULL, "a", &m), RAG_EUNSUPPORTED);
    /* ...but terminal colours are text */
    assert_int_equal(detect(NULL, "\x1b[31mred\x1b[0m text", NULL, "a", &m), RAG_FMT_TEXT);
    /* the caller's type wins even over binary magic (UTF-8 validation rejects it later) */
    assert_int_equal(detect("text/html", png, NULL, "x", &m), RAG_FMT_HTML);
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
        cmocka_unit_test(test_xml_docbook5),
        cmocka_unit_test(test_xml_docbook4),
        cmocka_unit_test(test_xml_mallard),
        cmocka_unit_test(test_xml_generic),
        cmocka_unit_test(test_xhtml_entities),
        cmocka_unit_test(test_parser_errors),
        cmocka_unit_test(test_markdown),
        cmocka_unit_test(test_text_and_nfc),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_detect_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
