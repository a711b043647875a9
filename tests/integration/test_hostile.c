/*
 * Hostile documents through the public API (issue 4): XXE (file://, http://, a parameter
 * entity, an external DTD), XInclude, billion laughs, 10,000-deep nesting and an oversized
 * document go in with rag_doc_put(); the pipeline is drained; then searches for the contents
 * of /etc/passwd ("root:x:0:0") and for the billion-laughs payload, exhaustive (k above the
 * number of chunks) in every search mode the build offers, must return no chunk containing
 * them, while the documents' own words are found (so the hostile documents really are in
 * the index, not just refused).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define DIM 64

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("hostile");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.max_doc_bytes = 256 * 1024;
    rag_embed_provider *p = rag_fake_provider_new(DIM, NULL);
    o.provider = p;
    int rc = rag_open(&f->ctx, f->root, &o);
    free(p); /* rag_open copied the struct and owns the state */
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_close(f->ctx);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static int put(rag_ctx *ctx, const char *id, const char *data, size_t size, const char *mime)
{
    rag_doc d = {0};
    d.id = id;
    d.data = data;
    d.size = size;
    d.mime = mime;
    uint64_t v = 0;
    return rag_doc_put(ctx, &d, &v);
}

static void put_expect(rag_ctx *ctx, const char *id, const char *data, const char *mime,
                       int want)
{
    int rc = put(ctx, id, data, strlen(data), mime);
    if (rc != want)
        fail_msg("put %s: %d %s (%s), expected %d", id, rc, rag_strerror(rc), rag_error_last(),
                 want);
}

static char *repeat_doc(const char *prefix, const char *unit, size_t times, const char *mid,
                        const char *close_unit, const char *suffix)
{
    size_t n = strlen(prefix) + (strlen(unit) + strlen(close_unit)) * times + strlen(mid) +
               strlen(suffix) + 1;
    char *s = malloc(n), *w = s;
    w += sprintf(w, "%s", prefix);
    for (size_t i = 0; i < times; i++)
        w += sprintf(w, "%s", unit);
    w += sprintf(w, "%s", mid);
    for (size_t i = 0; i < times; i++)
        w += sprintf(w, "%s", close_unit);
    sprintf(w, "%s", suffix);
    return s;
}

static char *laughs(int levels, const char *body)
{
    size_t n = 4096 + strlen(body);
    char *s = malloc(n), *w = s;
    w += sprintf(w, "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for (int i = 1; i < levels; i++) {
        w += sprintf(w, "<!ENTITY lol%d \"", i);
        for (int j = 0; j < 10; j++)
            w += i == 1 ? sprintf(w, "&lol;") : sprintf(w, "&lol%d;", i - 1);
        w += sprintf(w, "\">");
    }
    sprintf(w, "]>%s", body);
    return s;
}

/* Every chunk matching `query` in this mode; NULL when the build lacks the mode. */
static rag_results *search(rag_ctx *ctx, const char *query, rag_search_mode mode)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = query;
    q.k = 1000;
    q.unrestricted = 1;
    q.mode = mode;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc == RAG_EUNSUPPORTED)
        return NULL;
    if (rc)
        fail_msg("search '%s': %s (%s)", query, rag_strerror(rc), rag_error_last());
    assert_true(r->count < 1000);
    return r;
}

static void test_hostile_documents(void **state)
{
    fixture *f = *state;
    rag_ctx *ctx = f->ctx;

    /* external entities and DTDs: accepted, their own words indexed, nothing loaded */
    put_expect(ctx, "xxe-file.xml",
               "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
               "<doc><title>Quokka entity file</title><para>alpha &e; omega quokka</para></doc>",
               NULL, RAG_OK);
    put_expect(ctx, "xxe-http.xml",
               "<!DOCTYPE x [<!ENTITY e SYSTEM \"http://127.0.0.1:9/passwd\">]>"
               "<doc><para>quokka http &e; words</para></doc>",
               NULL, RAG_OK);
    put_expect(ctx, "xxe-param.xml",
               "<!DOCTYPE x [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;"
               "<!ENTITY % q \"<!ENTITY e SYSTEM 'file:///etc/passwd'>\"> %q;]>"
               "<doc><para>quokka parameter &e; words</para></doc>",
               "application/xml", RAG_OK);
    put_expect(ctx, "xxe-dtd.xml",
               "<!DOCTYPE doc SYSTEM \"file:///etc/passwd\"><doc><para>quokka external dtd "
               "words</para></doc>",
               NULL, RAG_OK);
    put_expect(ctx, "xinclude.xml",
               "<doc xmlns:xi=\"http://www.w3.org/2001/XInclude\"><para>quokka include "
               "<xi:include href=\"/etc/passwd\" parse=\"text\"/> words</para></doc>",
               NULL, RAG_OK);
    put_expect(ctx, "xxe.xhtml",
               "<?xml version=\"1.0\"?><!DOCTYPE html [<!ENTITY e SYSTEM "
               "\"file:///etc/passwd\">]><html xmlns=\"http://www.w3.org/1999/xhtml\"><head>"
               "<title>&e;</title></head><body><p>quokka xhtml &e; words</p></body></html>",
               "application/xml", RAG_OK);
    put_expect(ctx, "xxe.html",
               "<!DOCTYPE html [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><html><body>"
               "<p>quokka html &e; words</p><iframe src=\"file:///etc/passwd\"></iframe>"
               "</body></html>",
               NULL, RAG_OK);

    /* entity expansion: refused by libxml2, or kept unexpanded */
    char *bl = laughs(10, "<lolz><p>quokka &lol9;</p></lolz>");
    put_expect(ctx, "laughs.xml", bl, NULL, RAG_EPARSE);
    free(bl);
    bl = laughs(2, "<lolz><p>quokka small laughs &lol1; end</p></lolz>");
    put_expect(ctx, "laughs-small.xml", bl, NULL, RAG_OK);
    free(bl);

    /* nesting: deeper than 256 is an error for XML and HTML, fine for Markdown */
    char *deep = repeat_doc("", "<a>", 10000, "quokka deep", "</a>", "");
    put_expect(ctx, "deep.xml", deep, NULL, RAG_EPARSE);
    free(deep);
    deep = repeat_doc("<html><body>", "<div>", 10000, "quokka deep", "</div>", "</body></html>");
    put_expect(ctx, "deep.html", deep, NULL, RAG_EPARSE);
    free(deep);
    deep = repeat_doc("", ">", 10000, " quokka deep markdown\n", "", "");
    put_expect(ctx, "deep.md", deep, "text/markdown", RAG_OK);
    free(deep);

    /* over max_doc_bytes: refused before parsing */
    char *big = repeat_doc("<r>", "<p>quokka</p>", 30000, "", "", "</r>");
    assert_int_equal(put(ctx, "big.xml", big, strlen(big), NULL), RAG_ETOOBIG);
    free(big);
    /* binary without a type */
    const char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR quokka";
    assert_int_equal(put(ctx, "image", png, sizeof png - 1, NULL), RAG_EUNSUPPORTED);

    int rc = rag_drain(ctx, 120000);
    if (rc)
        fail_msg("rag_drain: %s (%s)", rag_strerror(rc), rag_error_last());

    /* the first line of the real file, if there is one, is a further needle */
    char passwd_line[64] = "";
    FILE *pw = fopen("/etc/passwd", "r");
    if (pw) {
        if (fgets(passwd_line, sizeof passwd_line, pw))
            passwd_line[strcspn(passwd_line, "\n")] = 0;
        fclose(pw);
    }

    const char *queries[] = {"root:x:0:0", "root x 0 0 root bin bash", "daemon nologin sbin",
                             "lol lollol lollollol lollollollol", "quokka"};
    const rag_search_mode modes[] = {RAG_MODE_DEFAULT, RAG_MODE_VECTOR, RAG_MODE_LEXICAL,
                                     RAG_MODE_HYBRID};
    int searched = 0;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
            rag_results *r = search(ctx, queries[q], modes[m]);
            if (!r)
                continue;
            searched++;
            for (size_t i = 0; i < r->count; i++) {
                const rag_result *x = &r->items[i];
                const char *needles[] = {"root:x:0:0", "root:", "nologin", "lollol",
                                         passwd_line[0] ? passwd_line : "root:x:0:0"};
                for (size_t k = 0; k < sizeof needles / sizeof needles[0]; k++) {
                    if (strstr(x->text, needles[k]) || strstr(x->title, needles[k]))
                        fail_msg("mode %d query '%s': %s chunk %u contains '%s': %s",
                                 (int)modes[m], queries[q], x->doc_id, x->chunk, needles[k],
                                 x->text);
                }
                /* refused documents are nowhere */
                assert_true(strcmp(x->doc_id, "laughs.xml") && strcmp(x->doc_id, "deep.xml") &&
                            strcmp(x->doc_id, "deep.html") && strcmp(x->doc_id, "big.xml") &&
                            strcmp(x->doc_id, "image"));
            }
            rag_results_free(r);
        }
    }
    assert_true(searched >= 5);

    /* the accepted hostile documents are in the index, with their own words */
    const char *present[] = {"xxe-file.xml", "xxe-http.xml", "xxe-param.xml", "xxe-dtd.xml",
                             "xinclude.xml", "xxe.xhtml", "xxe.html", "laughs-small.xml",
                             "deep.md"};
    rag_results *r = search(ctx, "quokka words omega deep small laughs", RAG_MODE_DEFAULT);
    assert_non_null(r);
    for (size_t d = 0; d < sizeof present / sizeof present[0]; d++) {
        const rag_result *hit = NULL;
        for (size_t i = 0; i < r->count && !hit; i++)
            if (!strcmp(r->items[i].doc_id, present[d]))
                hit = &r->items[i];
        if (!hit)
            fail_msg("%s is not searchable", present[d]);
        assert_non_null(strstr(hit->text, "quokka"));
    }
    for (size_t i = 0; i < r->count; i++) {
        if (!strcmp(r->items[i].doc_id, "xxe-file.xml"))
            assert_string_equal(r->items[i].text, "Quokka entity file\n\nalpha omega quokka");
        if (!strcmp(r->items[i].doc_id, "laughs-small.xml"))
            assert_string_equal(r->items[i].text, "quokka small laughs end");
    }
    rag_results_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hostile_documents, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
