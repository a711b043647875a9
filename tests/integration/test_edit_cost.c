/*
 * Edit cost on real long documents (issue 4, "Chunking"): with content-defined chunk
 * boundaries and the embed module's content-hash cache, a one-paragraph edit to a ~100 KB
 * document must re-embed at most 3 chunks.
 *
 * Documents: long pages of the Python 3.11 HTML documentation (python3.11-doc, installed by
 * scripts/install-deps.sh): time, difflib and dataclasses (~125 KB of HTML each) and the data
 * model reference (~100 KB of visible text); and, as a plain-text case, one long
 * reStructuredText source of the same package (~110 KB) put as text/plain.  A missing file skips its test with a message.
 *
 * Per document, through the public API with the counting fake provider (tests/support):
 *   1. put the original, drain;
 *   2. for 20 paragraphs spread evenly over the document's prose paragraphs (a <p> element
 *      in the main content / a blank-line separated prose block, chosen by position only):
 *      a. replace three words in the middle of the paragraph, put, drain;
 *      b. rewrite the whole paragraph with generated text of the same visible length, put,
 *         drain;
 *   3. insert a new paragraph after the middle one, put, drain; delete another paragraph,
 *      put, drain.
 * Every edit is applied to the ORIGINAL text, so each put differs from the original in one
 * paragraph only: the previous edit is reverted, and the revert costs nothing because the
 * original's chunks are in the cache.  The cost of an update is the number of texts the
 * provider embedded while draining it.  Each must be <= 3; a word edit, a rewrite and an
 * insert must cost >= 1 (otherwise the edit never reached a chunk and the test would prove
 * nothing).  A delete may cost 0 (a paragraph that was a chunk of its own vanishes).
 *
 * Output: one JSON line per document on stdout ({"test":"edit_cost",...}), the figures the
 * issue asks to report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define EDITS 20          /* paragraphs edited per document */
#define MAX_COST 3        /* the bound on texts re-embedded per one-paragraph edit */
#define MIN_PARA_TEXT 80  /* visible bytes for a block to count as a prose paragraph */
#define FAKE_DIM 64

static const char *const PYDOC = "/usr/share/doc/python3.11/html";

/* ------------------------------------------------------------------------------------------
 * Paragraph discovery
 * ---------------------------------------------------------------------------------------- */

typedef struct para {
    size_t start, end;        /* the whole paragraph: <p ...>...</p>, or the text block */
    size_t inner_s, inner_e;  /* its content (between the tags) */
    size_t text_len;          /* visible bytes (tags dropped, an entity counts as one) */
} para;

typedef struct paras {
    para *v;
    size_t n, cap;
} paras;

static void paras_push(paras *ps, para p)
{
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->v = realloc(ps->v, ps->cap * sizeof *ps->v);
        assert_non_null(ps->v);
    }
    ps->v[ps->n++] = p;
}

static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Visible length and word count of s[a, b): text outside tags, an entity as one byte. */
static size_t visible_len(const char *s, size_t a, size_t b, int html, size_t *words)
{
    size_t n = 0, w = 0;
    int in_tag = 0, in_word = 0;
    for (size_t i = a; i < b; i++) {
        char c = s[i];
        if (html && c == '<') {
            in_tag = 1;
            in_word = 0;
            continue;
        }
        if (in_tag) {
            if (c == '>')
                in_tag = 0;
            continue;
        }
        if (html && c == '&') {
            const char *semi = memchr(s + i, ';', b - i < 10 ? b - i : 10);
            if (semi)
                i = (size_t)(semi - s);
            n++;
            in_word = 0;
            continue;
        }
        n++;
        if (is_alpha(c)) {
            if (!in_word)
                w++;
            in_word = 1;
        } else {
            in_word = 0;
        }
    }
    if (words)
        *words = w;
    return n;
}

/* <p> elements of the page's main content (Sphinx: from div.body[role=main] to the sidebar;
 * the parser reads only that part, so an edit elsewhere would cost nothing and prove
 * nothing). */
static void find_html_paras(const char *s, size_t len, paras *out)
{
    const char *lo = strstr(s, "role=\"main\"");
    assert_non_null(lo);
    const char *hi = strstr(lo, "class=\"sphinxsidebar\"");
    size_t end = hi ? (size_t)(hi - s) : len;
    size_t i = (size_t)(lo - s);
    while (i + 3 < end) {
        const char *p = strstr(s + i, "<p");
        if (!p || (size_t)(p - s) >= end)
            break;
        size_t at = (size_t)(p - s);
        i = at + 2;
        if (s[at + 2] != '>' && s[at + 2] != ' ')
            continue; /* <pre>, <param>, ... */
        const char *gt = strchr(s + at, '>');
        const char *close = gt ? strstr(gt, "</p>") : NULL;
        if (!close || (size_t)(close - s) >= end)
            break;
        para q;
        q.start = at;
        q.inner_s = (size_t)(gt - s) + 1;
        q.inner_e = (size_t)(close - s);
        q.end = q.inner_e + 4;
        size_t words = 0;
        q.text_len = visible_len(s, q.inner_s, q.inner_e, 1, &words);
        if (q.text_len >= MIN_PARA_TEXT && words >= 8)
            paras_push(out, q);
        i = q.end;
    }
}

/* Prose blocks of a reStructuredText source: blank-line separated, no indented line (code,
 * directive bodies, list continuations), not a directive, comment, list item or title. */
static void find_text_paras(const char *s, size_t len, paras *out)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && s[i] == '\n')
            i++;
        size_t b = i;
        int prose = 1;
        /* walk the block's lines */
        while (i < len) {
            size_t e = i;
            while (e < len && s[e] != '\n')
                e++;
            if (e == i)
                break; /* blank line */
            char c = s[i];
            if (c == ' ' || c == '\t' || c == '.' || c == ':' || c == '*' || c == '-' ||
                c == '=' || c == '|' || c == '#' || c == '+' || c == '>' || c == '~' || c == '^')
                prose = 0;
            i = e < len ? e + 1 : e;
            if (i < len && s[i] == '\n')
                break;
        }
        size_t e = i;
        while (e > b && (s[e - 1] == '\n' || s[e - 1] == ' '))
            e--;
        if (e <= b)
            continue;
        size_t words = 0;
        para q = {b, e, b, e, visible_len(s, b, e, 0, &words)};
        if (prose && q.text_len >= MIN_PARA_TEXT && words >= 8)
            paras_push(out, q);
    }
}

/* ------------------------------------------------------------------------------------------
 * Edits (each returns a new malloc'd document)
 * ---------------------------------------------------------------------------------------- */

static char *splice(const char *s, size_t len, size_t a, size_t b, const char *ins, size_t ins_len,
                    size_t *out_len)
{
    size_t n = len - (b - a) + ins_len;
    char *d = malloc(n + 1);
    assert_non_null(d);
    memcpy(d, s, a);
    memcpy(d + a, ins, ins_len);
    memcpy(d + a + ins_len, s + b, len - b);
    d[n] = 0;
    *out_len = n;
    return d;
}

/* Replace three consecutive visible words (3+ letters, outside tags and entities) in the
 * middle of the paragraph. */
static char *edit_words(const char *s, size_t len, const para *p, int html, size_t *out_len)
{
    size_t ws[512], we[512], nw = 0;
    int in_tag = 0;
    for (size_t i = p->inner_s; i < p->inner_e && nw < 512;) {
        char c = s[i];
        if (html && c == '<')
            in_tag = 1;
        if (in_tag) {
            if (c == '>')
                in_tag = 0;
            i++;
            continue;
        }
        if (is_alpha(c) && (i == 0 || (s[i - 1] != '&' && s[i - 1] != '#'))) {
            size_t j = i;
            while (j < p->inner_e && is_alpha(s[j]))
                j++;
            if (j - i >= 3 && !(html && j < p->inner_e && s[j] == ';')) {
                ws[nw] = i;
                we[nw] = j;
                nw++;
            }
            i = j;
            continue;
        }
        i++;
    }
    assert_true(nw >= 3);
    static const char *const repl[3] = {"zephyr", "quorum", "lantern"};
    size_t m = nw / 2 - 1;
    /* rebuild: copy up to each replaced word, substitute, continue */
    size_t cap = len + 64;
    char *d = malloc(cap + 1);
    assert_non_null(d);
    size_t w = 0, from = 0;
    for (int k = 0; k < 3; k++) {
        memcpy(d + w, s + from, ws[m + k] - from);
        w += ws[m + k] - from;
        size_t rl = strlen(repl[k]);
        memcpy(d + w, repl[k], rl);
        w += rl;
        from = we[m + k];
    }
    memcpy(d + w, s + from, len - from);
    w += len - from;
    d[w] = 0;
    *out_len = w;
    return d;
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Plain English sentences of about `target` bytes (deterministic per seed); lines are wrapped
 * at ~72 columns when `wrap` (reST sources are). */
static char *gen_text(size_t target, uint64_t seed, int wrap, size_t *out_len)
{
    static const char *const vocab[] = {
        "the", "module", "returns", "a", "value", "when", "each", "call", "of", "this",
        "function", "uses", "system", "clock", "and", "objects", "are", "created", "for",
        "every", "request", "while", "errors", "raise", "an", "exception", "that", "callers",
        "handle", "in", "their", "code", "so", "results", "stay", "consistent", "across",
        "platforms", "with", "different", "rules", "about", "precision", "resolution", "time",
        "zones", "strings", "sequences", "lines", "fields", "records", "describes", "format",
        "options", "default", "argument", "keyword", "example", "shows", "how", "to", "compare"};
    size_t nv = sizeof vocab / sizeof vocab[0];
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t cap = target + 128;
    char *d = malloc(cap);
    assert_non_null(d);
    size_t n = 0, col = 0, in_sentence = 0, sentence_len = 0;
    while (n < target) {
        if (!in_sentence)
            sentence_len = 6 + rng_next(&x) % 12;
        const char *wd = vocab[rng_next(&x) % nv];
        size_t wl = strlen(wd);
        if (n + wl + 3 >= cap)
            break;
        if (n) {
            if (wrap && col + wl + 1 > 72) {
                d[n++] = '\n';
                col = 0;
            } else {
                d[n++] = ' ';
                col++;
            }
        }
        memcpy(d + n, wd, wl);
        if (!in_sentence)
            d[n] = (char)(d[n] - 'a' + 'A');
        n += wl;
        col += wl;
        if (++in_sentence >= sentence_len || n >= target) {
            d[n++] = '.';
            col++;
            in_sentence = 0;
        }
    }
    if (n && d[n - 1] != '.')
        d[n++] = '.';
    d[n] = 0;
    *out_len = n;
    return d;
}

static char *edit_rewrite(const char *s, size_t len, const para *p, int html, uint64_t seed,
                          size_t *out_len)
{
    size_t tl;
    char *t = gen_text(p->text_len, seed, !html, &tl);
    char *d = splice(s, len, p->inner_s, p->inner_e, t, tl, out_len);
    free(t);
    return d;
}

static char *edit_insert(const char *s, size_t len, const para *p, int html, size_t *out_len)
{
    size_t tl;
    char *t = gen_text(420, 0xabcdef, !html, &tl);
    size_t bl = tl + 16;
    char *blk = malloc(bl);
    assert_non_null(blk);
    int n = snprintf(blk, bl, html ? "\n<p>%s</p>" : "\n\n%s", t);
    char *d = splice(s, len, p->end, p->end, blk, (size_t)n, out_len);
    free(t);
    free(blk);
    return d;
}

static char *edit_delete(const char *s, size_t len, const para *p, size_t *out_len)
{
    return splice(s, len, p->start, p->end, "", 0, out_len);
}

/* ------------------------------------------------------------------------------------------
 * The run
 * ---------------------------------------------------------------------------------------- */

typedef struct run {
    rag_ctx *ctx;
    rag_fake_provider_state *fake;
    const char *mime;
} run;

/* Put `text` as the document and drain; returns the texts embedded meanwhile. */
static long put_cost(run *r, const char *text, size_t len)
{
    long before = __atomic_load_n(&r->fake->texts_embedded, __ATOMIC_SEQ_CST);
    rag_doc d = {0};
    d.id = "long-doc";
    d.data = text;
    d.size = len;
    d.mime = r->mime;
    d.uri = "test://long-doc";
    uint64_t v = 0;
    int rc = rag_doc_put(r->ctx, &d, &v);
    if (rc)
        fail_msg("rag_doc_put: %s (%s)", rag_strerror(rc), rag_error_last());
    rc = rag_drain(r->ctx, 60000);
    if (rc)
        fail_msg("rag_drain: %s (%s)", rag_strerror(rc), rag_error_last());
    return __atomic_load_n(&r->fake->texts_embedded, __ATOMIC_SEQ_CST) - before;
}

static void edit_cost_doc(const char *path, const char *label, int html)
{
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        print_message("SKIP %s: %s is absent (python3.11-doc not installed; "
                      "scripts/install-deps.sh installs it)\n", label, path);
        skip();
    }
    fclose(f);
    char *src = rag_test_read_file(path, &len);
    assert_non_null(src);

    paras ps = {0};
    if (html)
        find_html_paras(src, len, &ps);
    else
        find_text_paras(src, len, &ps);
    if (ps.n < EDITS + 2)
        fail_msg("%s: only %zu prose paragraphs found", label, ps.n);

    char name[64];
    snprintf(name, sizeof name, "edit-cost-%s", label);
    char *root = rag_test_tmpdir(name);
    run r = {0};
    r.mime = html ? "text/html" : "text/plain";
    rag_embed_provider *prov = rag_fake_provider_new(FAKE_DIM, &r.fake);
    rag_options o;
    rag_options_init(&o);
    o.provider = prov;
    o.no_sync = 1; /* durability is not what this test measures */
    int rc = rag_open(&r.ctx, root, &o);
    free(prov); /* rag_open copied the struct and owns the state (freed by rag_close) */
    if (rc)
        fail_msg("rag_open: %s (%s)", rag_strerror(rc), rag_error_last());

    long base = put_cost(&r, src, len);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(r.ctx, &st), RAG_OK);
    uint64_t chunks = st.chunks;
    assert_true(chunks >= 20); /* a long document: the bound must mean something */
    assert_int_equal(base, (long)chunks);

    long word_max = 0, rw_max = 0, word_sum = 0, rw_sum = 0;
    long costs[2][EDITS];
    for (size_t k = 0; k < EDITS; k++) {
        /* evenly spread, by position only */
        const para *p = &ps.v[(2 * k + 1) * ps.n / (2 * EDITS)];
        size_t nl;
        char *d = edit_words(src, len, p, html, &nl);
        long c = put_cost(&r, d, nl);
        free(d);
        costs[0][k] = c;
        d = edit_rewrite(src, len, p, html, k + 1, &nl);
        long c2 = put_cost(&r, d, nl);
        free(d);
        costs[1][k] = c2;
        if (c < 1 || c > MAX_COST || c2 < 1 || c2 > MAX_COST)
            fail_msg("%s: paragraph at byte %zu (%zu visible bytes): word edit re-embedded %ld "
                     "chunks, rewrite %ld (bound 1..%d)",
                     label, p->start, p->text_len, c, c2, MAX_COST);
        word_sum += c;
        rw_sum += c2;
        if (c > word_max)
            word_max = c;
        if (c2 > rw_max)
            rw_max = c2;
    }
    size_t nl;
    char *d = edit_insert(src, len, &ps.v[ps.n / 2], html, &nl);
    long ins = put_cost(&r, d, nl);
    free(d);
    d = edit_delete(src, len, &ps.v[ps.n / 3], &nl);
    long del = put_cost(&r, d, nl);
    free(d);
    if (ins < 1 || ins > MAX_COST || del > MAX_COST)
        fail_msg("%s: insert re-embedded %ld chunks, delete %ld (bound %d)", label, ins, del,
                 MAX_COST);

    assert_int_equal(rag_status(r.ctx, &st), RAG_OK);
    assert_int_equal(st.dead_letters, 0);
    assert_int_equal(st.documents, 1);

    long all_max = word_max > rw_max ? word_max : rw_max;
    if (ins > all_max)
        all_max = ins;
    if (del > all_max)
        all_max = del;
    double all_mean = (double)(word_sum + rw_sum + ins + del) / (2.0 * EDITS + 2.0);
    printf("{\"test\":\"edit_cost\",\"doc\":\"%s\",\"format\":\"%s\",\"bytes\":%zu,"
           "\"paragraphs\":%zu,\"chunks\":%llu,\"edits\":%d,\"word_max\":%ld,"
           "\"word_mean\":%.2f,\"rewrite_max\":%ld,\"rewrite_mean\":%.2f,\"insert\":%ld,"
           "\"delete\":%ld,\"max\":%ld,\"mean\":%.2f,\"word\":[",
           label, html ? "html" : "text", len, ps.n, (unsigned long long)chunks, EDITS,
           word_max, (double)word_sum / EDITS, rw_max, (double)rw_sum / EDITS, ins, del,
           all_max, all_mean);
    for (size_t k = 0; k < EDITS; k++)
        printf("%s%ld", k ? "," : "", costs[0][k]);
    printf("],\"rewrite\":[");
    for (size_t k = 0; k < EDITS; k++)
        printf("%s%ld", k ? "," : "", costs[1][k]);
    printf("]}\n");
    fflush(stdout);

    rag_close(r.ctx);
    rag_test_rmtree(root);
    free(root);
    free(ps.v);
    free(src);
}

static void test_time_html(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/library/time.html", PYDOC);
    edit_cost_doc(p, "time.html", 1);
}

static void test_difflib_html(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/library/difflib.html", PYDOC);
    edit_cost_doc(p, "difflib.html", 1);
}

static void test_dataclasses_html(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/library/dataclasses.html", PYDOC);
    edit_cost_doc(p, "dataclasses.html", 1);
}

/* The pages above are ~125 KB of HTML but 25-35 KB of visible text; this one holds ~100 KB
 * of visible text (379 KB of HTML), so the bound is also checked at 100 KB of *text*. */
static void test_datamodel_html(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/reference/datamodel.html", PYDOC);
    edit_cost_doc(p, "datamodel.html", 1);
}

/* The plain-text case: a ~110 KB reStructuredText source, put as text/plain. */
static void test_whatsnew_text(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/_sources/whatsnew/3.2.rst.txt", PYDOC);
    edit_cost_doc(p, "whatsnew-3.2.rst.txt", 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_html),
        cmocka_unit_test(test_difflib_html),
        cmocka_unit_test(test_dataclasses_html),
        cmocka_unit_test(test_datamodel_html),
        cmocka_unit_test(test_whatsnew_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
