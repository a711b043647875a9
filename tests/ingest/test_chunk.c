/* The content-defined chunker: size bounds, coverage, UTF-8 safety, locality of edits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_internal.h"
#include "rag_common.h"
#include "rag_text.h"
#include "test_support.h"

static const char *WORDS[] = {
    "the", "index", "of", "a", "document", "changes", "when", "its", "text", "is", "edited",
    "and", "every", "chunk", "near", "the", "edit", "must", "be", "embedded", "again", "while",
    "chunks", "far", "away", "keep", "their", "hashes", "so", "cache", "absorbs", "them",
    "retrieval", "augmented", "generation", "needs", "stable", "boundaries", "paragraph",
    "sentence", "vector", "queue", "module", "transaction", "outbox", "consumer", "version",
    "delete", "tombstone", "garbage", "collector", "frees", "older", "versions", "after",
    "switch", "writer", "reader", "snapshot", "lmdb", "faiss", "python", "library", "function",
    "returns", "value", "argument", "error", "code", "detail", "thread", "local", "memory",
    "map", "size", "limit", "bytes", "unicode", "normalisation", "composed", "form", "\xC3\xA9t\xC3\xA9",
    "na\xC3\xAFve", "caf\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC", "stra\xC3\x9F" "e", "quickly", "slowly",
    "carefully", "always", "never", "sometimes", "under", "over", "between", "within"};
#define NWORDS (sizeof WORDS / sizeof WORDS[0])

static uint64_t rng;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* One paragraph of 2..8 sentences of 5..20 words. */
static void gen_paragraph(char *out, size_t cap)
{
    size_t w = 0;
    int sentences = 2 + (int)(next_rand() % 7);
    for (int s = 0; s < sentences; s++) {
        int words = 5 + (int)(next_rand() % 16);
        for (int i = 0; i < words; i++) {
            const char *word = WORDS[next_rand() % NWORDS];
            if (i == 0) /* a capital letter glued on, keeping multi-byte words whole */
                w += (size_t)snprintf(out + w, cap - w, "%s%c%s", s ? " " : "",
                                      (char)('A' + next_rand() % 26), word);
            else
                w += (size_t)snprintf(out + w, cap - w, " %s", word);
        }
        w += (size_t)snprintf(out + w, cap - w, "%s", next_rand() % 5 ? "." : "?");
    }
}

/* ~`bytes` of text: paragraphs, with a heading every ~12 paragraphs. */
static void gen_doc(rag_ingest_parsed *doc, size_t bytes, uint64_t seed)
{
    rng = seed;
    rag_ingest__parsed_init(doc);
    size_t total = 0;
    int n = 0;
    char buf[4096];
    while (total < bytes) {
        if (n % 12 == 0) {
            snprintf(buf, sizeof buf, "Section %d about %s", n / 12 + 1,
                     WORDS[next_rand() % NWORDS]);
            assert_int_equal(rag_ingest__parsed_add(doc, RAG_BLOCK_HEADING, 2, buf, strlen(buf)),
                             RAG_OK);
        }
        gen_paragraph(buf, sizeof buf);
        assert_int_equal(rag_ingest__parsed_add(doc, RAG_BLOCK_PARA, 0, buf, strlen(buf)), RAG_OK);
        total += strlen(buf) + 2;
        n++;
    }
}

static size_t nonspace(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += !(s[i] == ' ' || s[i] == '\n' || s[i] == '\t');
    return c;
}

static void check_bounds(const rag_ingest_parsed *doc, const rag_ingest_chunk_cfg *cfg,
                         rag_ingest_chunks *out)
{
    int rc = rag_ingest__chunk(doc, cfg, out);
    assert_int_equal(rc, RAG_OK);
    assert_true(out->count > 0);
    size_t doc_ns = 0, chunk_ns = 0, total = 0;
    for (size_t i = 0; i < doc->count; i++)
        doc_ns += nonspace(doc->blocks[i].text, doc->blocks[i].len);
    for (size_t i = 0; i < out->count; i++) {
        const rag_ingest_chunk *c = &out->items[i];
        assert_int_equal(strlen(c->text), c->len);
        if (c->len > cfg->max)
            fail_msg("chunk %zu is %zu bytes > max %zu", i, c->len, cfg->max);
        if (i + 1 < out->count && c->len < cfg->min)
            fail_msg("chunk %zu of %zu is %zu bytes < min %zu", i, out->count, c->len, cfg->min);
        size_t bad;
        assert_int_equal(rag_utf8_check(c->text, c->len, &bad), RAG_OK);
        assert_true(c->len > 0);
        assert_false(c->text[0] == ' ' || c->text[c->len - 1] == ' ' ||
                     c->text[c->len - 1] == '\n');
        chunk_ns += nonspace(c->text, c->len);
        total += c->len;
    }
    if (!cfg->overlap)
        assert_int_equal(chunk_ns, doc_ns); /* every byte of text lands in exactly one chunk */
    (void)total;
}

static void test_bounds_synthetic(void **state)
{
    (void)state;
    rag_ingest_parsed doc;
    gen_doc(&doc, 200 * 1024, 42);
    rag_ingest_chunk_cfg cfgs[] = {
        {800, 200, 1600, 0}, {800, 200, 1600, 100}, {100, 40, 160, 0}, {100, 40, 160, 30},
        {2000, 500, 4000, 0},  {64, 16, 64, 15}};
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        rag_ingest_chunks out;
        check_bounds(&doc, &cfgs[k], &out);
        if (k == 0) {
            double mean = 0;
            for (size_t i = 0; i < out.count; i++)
                mean += (double)out.items[i].len;
            mean /= (double)out.count;
            /* content-defined cuts land around the target */
            assert_true(mean > 0.5 * 800 && mean < 1.5 * 800);
        }
        rag_ingest__chunks_clear(&out);
    }
    rag_ingest__parsed_clear(&doc);
}

static void test_bounds_real_text(void **state)
{
    (void)state;
    const char *path = "/usr/share/doc/python3.11/html/library/stdtypes.html";
    size_t len = 0;
    char *html = rag_test_read_file(path, &len);
    if (!html) {
        skip();
        return;
    }
    rag_ingest_parsed doc;
    rag_ingest__parsed_init(&doc);
    assert_int_equal(rag_ingest__parse(RAG_FMT_HTML, html, len, &doc), RAG_OK);
    rag_ingest_chunk_cfg cfgs[] = {{800, 200, 1600, 0}, {800, 200, 1600, 150}, {200, 50, 300, 0}};
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        rag_ingest_chunks out;
        check_bounds(&doc, &cfgs[k], &out);
        assert_true(out.count > 50);
        rag_ingest__chunks_clear(&out);
    }
    rag_ingest__parsed_clear(&doc);
    free(html);
}

static void test_long_unbroken_text(void **state)
{
    (void)state;
    /* 30,000 bytes without whitespace, multi-byte characters: split at UTF-8 boundaries */
    size_t n = 10000;
    char *s = malloc(n * 3 + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * 3, "\xE2\x82\xAC", 3); /* euro sign */
    s[n * 3] = 0;
    rag_ingest_parsed doc;
    rag_ingest__parsed_init(&doc);
    assert_int_equal(rag_ingest__parsed_add(&doc, RAG_BLOCK_PARA, 0, s, n * 3), RAG_OK);
    assert_int_equal(rag_ingest__parsed_add(&doc, RAG_BLOCK_CODE, 0, "a\n\n\n   b", 8), RAG_OK);
    rag_ingest_chunk_cfg cfg = {800, 200, 1600, 0};
    rag_ingest_chunks out;
    check_bounds(&doc, &cfg, &out);
    assert_true(out.count >= 30000 / 1600);
    rag_ingest__chunks_clear(&out);
    cfg.overlap = 100;
    check_bounds(&doc, &cfg, &out);
    rag_ingest__chunks_clear(&out);
    rag_ingest__parsed_clear(&doc);
    free(s);

    /* repetitive text: every boundary hashes alike (all selected or none); both must stay
     * linear and within bounds */
    const char *reps[] = {"Hello world. ", "Same again! ", "x. "};
    for (size_t r = 0; r < 3; r++) {
        size_t rl = strlen(reps[r]), total = 2 * 1024 * 1024;
        s = malloc(total + 1);
        for (size_t w = 0; w + rl <= total; w += rl)
            memcpy(s + w, reps[r], rl);
        size_t used = total / rl * rl;
        s[used] = 0;
        rag_ingest__parsed_init(&doc);
        assert_int_equal(rag_ingest__parsed_add(&doc, RAG_BLOCK_PARA, 0, s, used), RAG_OK);
        uint64_t t0 = rag_mono_ms();
        cfg.overlap = 0;
        check_bounds(&doc, &cfg, &out);
        assert_true(out.count > used / 1600);
        assert_true(rag_mono_ms() - t0 < 20000);
        rag_ingest__chunks_clear(&out);
        rag_ingest__parsed_clear(&doc);
        free(s);
    }

    /* a tiny document is one chunk, even below min */
    rag_ingest__parsed_init(&doc);
    assert_int_equal(rag_ingest__parsed_add(&doc, RAG_BLOCK_PARA, 0, "Hi.", 3), RAG_OK);
    cfg.overlap = 0;
    assert_int_equal(rag_ingest__chunk(&doc, &cfg, &out), RAG_OK);
    assert_int_equal(out.count, 1);
    assert_string_equal(out.items[0].text, "Hi.");
    rag_ingest__chunks_clear(&out);
    rag_ingest__parsed_clear(&doc);
}

static void test_headings_start_chunks(void **state)
{
    (void)state;
    rag_ingest_parsed doc;
    rag_ingest__parsed_init(&doc);
    rng = 7;
    char buf[4096];
    for (int s = 0; s < 6; s++) {
        snprintf(buf, sizeof buf, "Heading number %d", s);
        assert_int_equal(rag_ingest__parsed_add(&doc, RAG_BLOCK_HEADING, 2, buf, strlen(buf)), 0);
        size_t w = 0;
        while (w < 400) { /* ~400 bytes of text per section: >= min, < target */
            gen_paragraph(buf + w, sizeof buf - w);
            w = strlen(buf);
            if (w > 600)
                buf[w = 600] = 0;
        }
        assert_int_equal(rag_ingest__parsed_add(&doc, RAG_BLOCK_PARA, 0, buf, strlen(buf)), 0);
    }
    rag_ingest_chunk_cfg cfg = {800, 200, 1600, 0};
    rag_ingest_chunks out;
    check_bounds(&doc, &cfg, &out);
    /* every heading opens a chunk (a section may still span several chunks) */
    for (int s = 0; s < 6; s++) {
        snprintf(buf, sizeof buf, "Heading number %d\n\n", s);
        int found = 0;
        for (size_t i = 0; i < out.count && !found; i++)
            found = !strncmp(out.items[i].text, buf, strlen(buf));
        if (!found)
            fail_msg("heading %d does not start a chunk", s);
    }
    assert_true(out.count >= 6);
    rag_ingest__chunks_clear(&out);
    rag_ingest__parsed_clear(&doc);
}

/* ---- locality ------------------------------------------------------------------------- */

typedef struct hashes {
    uint8_t (*h)[16];
    size_t n;
} hashes;

static hashes chunk_hashes(const rag_ingest_parsed *doc, const rag_ingest_chunk_cfg *cfg)
{
    rag_ingest_chunks out;
    assert_int_equal(rag_ingest__chunk(doc, cfg, &out), RAG_OK);
    hashes hs = {malloc((out.count + 1) * 16), out.count};
    for (size_t i = 0; i < out.count; i++)
        rag_hash128(out.items[i].text, out.items[i].len, hs.h[i]);
    rag_ingest__chunks_clear(&out);
    return hs;
}

/* chunks of `b` whose hash is not among `a`'s: what would need embedding again */
static size_t changed(const hashes *a, const hashes *b)
{
    size_t c = 0;
    for (size_t i = 0; i < b->n; i++) {
        int found = 0;
        for (size_t j = 0; j < a->n && !found; j++)
            found = !memcmp(b->h[i], a->h[j], 16);
        c += !found;
    }
    return c;
}

static void replace_block(rag_ingest_parsed *doc, size_t i, const char *text)
{
    free(doc->blocks[i].text);
    doc->blocks[i].text = rag_strdup(text);
    doc->blocks[i].len = strlen(text);
}

/* Another paragraph of about the same length as `orig` (within 25%). */
static void rewrite(char *buf, size_t cap, const char *orig, size_t seed)
{
    size_t len = strlen(orig);
    rng = 99 + seed;
    do
        gen_paragraph(buf, cap);
    while (strlen(buf) * 4 < len * 3 || strlen(buf) * 4 > len * 5);
}

/* Changed-chunk counts of three edits of paragraph `b`: a word inserted in the middle, the
 * paragraph rewritten (similar length), the paragraph cut to one sentence. */
static void edit_paragraph(rag_ingest_parsed *doc, size_t b, const rag_ingest_chunk_cfg *cfg,
                           const hashes *base, size_t c[3])
{
    char *orig = rag_strdup(doc->blocks[b].text);
    char buf[4096];
    size_t m = strlen(orig) / 2;
    while (orig[m] && orig[m] != ' ')
        m++;
    snprintf(buf, sizeof buf, "%.*s EDITED%s", (int)m, orig, orig + m);
    replace_block(doc, b, buf);
    hashes h1 = chunk_hashes(doc, cfg);
    rewrite(buf, sizeof buf, orig, b);
    replace_block(doc, b, buf);
    hashes h2 = chunk_hashes(doc, cfg);
    replace_block(doc, b, "A short replacement sentence.");
    hashes h3 = chunk_hashes(doc, cfg);
    replace_block(doc, b, orig);
    free(orig);
    c[0] = changed(base, &h1);
    c[1] = changed(base, &h2);
    c[2] = changed(base, &h3);
    /* an edit always changes something */
    assert_true(c[0] >= 1 && c[1] >= 1 && c[2] >= 1);
    free(h1.h);
    free(h2.h);
    free(h3.h);
}

static void test_edit_locality(void **state)
{
    (void)state;
    rag_ingest_parsed doc;
    gen_doc(&doc, 100 * 1024, 1234);
    rag_ingest_chunk_cfg cfgs[] = {{800, 200, 1600, 0}, {800, 200, 1600, 100}};
    for (size_t k = 0; k < 2; k++) {
        const rag_ingest_chunk_cfg *cfg = &cfgs[k];
        hashes base = chunk_hashes(&doc, cfg);
        assert_true(base.n > 60);
        /* unchanged document: identical chunks */
        hashes again = chunk_hashes(&doc, cfg);
        assert_int_equal(changed(&base, &again), 0);
        free(again.h);

        /* the paragraph in the middle of the ~100 KB document: at most 3 chunks change */
        size_t mid = doc.count / 2;
        while (doc.blocks[mid].kind != RAG_BLOCK_PARA)
            mid++;
        size_t c[3];
        edit_paragraph(&doc, mid, cfg, &base, c);
        if (c[0] > 3 || c[1] > 3 || c[2] > 3)
            fail_msg("cfg %zu: editing the middle paragraph changed %zu/%zu/%zu chunks", k, c[0],
                     c[1], c[2]);

        /* a sweep over the middle third: a word edit stays within 3 chunks everywhere; a
         * rewritten paragraph can straddle an extra boundary (and, with overlap, push its
         * tail into the next chunk) but stays close */
        size_t worst[3] = {0, 0, 0}, sum[3] = {0, 0, 0}, trials = 0;
        for (size_t b = doc.count / 3; b < 2 * doc.count / 3; b += 2) {
            if (doc.blocks[b].kind != RAG_BLOCK_PARA)
                continue;
            edit_paragraph(&doc, b, cfg, &base, c);
            for (int e = 0; e < 3; e++) {
                sum[e] += c[e];
                if (c[e] > worst[e])
                    worst[e] = c[e];
            }
            trials++;
        }
        print_message("cfg %zu: %zu chunks; %zu paragraphs edited; worst %zu/%zu/%zu, "
                      "mean %.2f/%.2f/%.2f changed chunks\n", k, base.n, trials, worst[0],
                      worst[1], worst[2], (double)sum[0] / (double)trials,
                      (double)sum[1] / (double)trials, (double)sum[2] / (double)trials);
        assert_true(worst[0] <= 3);
        assert_true(worst[1] <= 3 + k + 1 && worst[2] <= 3 + k + 1);
        assert_true(sum[0] <= trials * 3 / 2); /* mostly just the chunk holding the word */
        assert_true(sum[1] <= trials * 5 / 2 && sum[2] <= trials * 5 / 2);
        free(base.h);
    }
    rag_ingest__parsed_clear(&doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_synthetic),
        cmocka_unit_test(test_bounds_real_text),
        cmocka_unit_test(test_long_unbroken_text),
        cmocka_unit_test(test_headings_start_chunks),
        cmocka_unit_test(test_edit_locality),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
