/* Replays every seed (tests/fuzz/corpus/<target>/) and every input a fuzzer once failed on
 * (tests/fuzz/regressions/<target>/) through the fuzz targets' own bodies (tests/fuzz/
 * fuzz_body.h), so the fuzzers' findings stay fixed in every build, gcc and ASan included,
 * without libFuzzer.  The source tree is found through $RAG_SOURCE_DIR (tests/CMakeLists.txt). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_support.h"

/* A broken promise fails the test, naming the input that broke it; test_checks_fire catches
 * the failure instead (expect_fail) to show that the checks do fire. */
static const char *current_input = "(none)";
static jmp_buf *expect_fail;
static char last_failure[512];
#define FUZZ_FAIL(...)                                                                           \
    do {                                                                                         \
        snprintf(last_failure, sizeof last_failure, __VA_ARGS__);                                \
        if (expect_fail)                                                                         \
            longjmp(*expect_fail, 1);                                                            \
        fail_msg("%s: %s", current_input, last_failure);                                         \
    } while (0)
#include "../fuzz/fuzz_body.h"

typedef void (*fuzz_body_fn)(const uint8_t *data, size_t size);

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs `body` on every regular file of <source>/tests/fuzz/<kind>/<target>/ in name order;
 * returns how many.  A missing directory counts 0 (regressions/<target>/ may be empty, which
 * git does not keep). */
static size_t replay_dir(const char *kind, const char *target, fuzz_body_fn body)
{
    const char *src = getenv("RAG_SOURCE_DIR");
    assert_non_null(src); /* set by CTest (RAG_TEST_ENV) */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/%s", src, kind, target);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof *names);
            assert_non_null(names);
        }
        names[n] = strdup(e->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, by_name);
    size_t ran = 0;
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            size_t len = 0;
            char *data = rag_test_read_file(path, &len);
            assert_non_null(data);
            current_input = path;
            body((const uint8_t *)data, len);
            current_input = "(none)";
            free(data);
            ran++;
        }
        free(names[i]);
    }
    free(names);
    return ran;
}

static void replay(const char *target, fuzz_body_fn body)
{
    size_t seeds = replay_dir("corpus", target, body);
    size_t regressions = replay_dir("regressions", target, body);
    print_message("fuzz %s: %zu seeds, %zu regressions replayed\n", target, seeds, regressions);
    /* the seed corpus is part of the source tree: finding none means a wrong path */
    assert_true(seeds > 0);
}

static void test_html(void **state)
{
    (void)state;
    replay("html", fuzz_html_body);
}

static void test_xml(void **state)
{
    (void)state;
    replay("xml", fuzz_xml_body);
}

static void test_markdown(void **state)
{
    (void)state;
    replay("markdown", fuzz_markdown_body);
}

static void test_utf8(void **state)
{
    (void)state;
    replay("utf8", fuzz_utf8_body);
}

/* Runs fuzz_check_parsed on a one-block document built by hand (bypassing the trimming of
 * rag_ingest__parsed_add); returns 1 when a check fired. */
static int parsed_check_fires(int kind, int level, const char *text)
{
    rag_ingest_block b = {kind, level, (char *)text, strlen(text)};
    rag_ingest_parsed doc = {&b, 1, 1, NULL};
    jmp_buf jb;
    last_failure[0] = 0;
    expect_fail = &jb;
    if (setjmp(jb)) {
        expect_fail = NULL;
        return 1;
    }
    fuzz_check_parsed(&doc);
    fuzz_check_chunks(&doc);
    expect_fail = NULL;
    return 0;
}

/* The checks can fail: the replays above are not vacuous. */
static void test_checks_fire(void **state)
{
    (void)state;
    /* the reference validator follows the well-formedness table */
    assert_int_equal(fuzz_utf8_first_bad("ok", 2), 2);
    assert_int_equal(fuzz_utf8_first_bad("a\xC0\xAF", 3), 1);        /* overlong */
    assert_int_equal(fuzz_utf8_first_bad("ab\xED\xA0\x80", 5), 2);   /* surrogate */
    assert_int_equal(fuzz_utf8_first_bad("\xF4\x90\x80\x80", 4), 0); /* above U+10FFFF */
    assert_int_equal(fuzz_utf8_first_bad("x\xE2\x82", 3), 1);        /* truncated */
    assert_int_equal(fuzz_utf8_subpart((const unsigned char *)"\xE2\x82\x41", 3), 2);
    assert_int_equal(fuzz_utf8_subpart((const unsigned char *)"\xED\xA0\x80", 3), 1);
    assert_int_equal(fuzz_utf8_subpart((const unsigned char *)"\xF0\x9F\x98", 3), 3);

    /* a good block passes, broken ones are caught */
    assert_int_equal(parsed_check_fires(RAG_BLOCK_PARA, 0, "Plain text. Caf\xC3\xA9."), 0);
    assert_int_equal(parsed_check_fires(RAG_BLOCK_PARA, 0, " leading space"), 1);
    assert_non_null(strstr(last_failure, "not trimmed"));
    assert_int_equal(parsed_check_fires(RAG_BLOCK_PARA, 0, "bell \x07 inside"), 1);
    assert_non_null(strstr(last_failure, "control character"));
    assert_int_equal(parsed_check_fires(RAG_BLOCK_PARA, 0, "cafe\xCC\x81 decomposed"), 1);
    assert_non_null(strstr(last_failure, "NFC"));
    assert_int_equal(parsed_check_fires(RAG_BLOCK_HEADING, 9, "Heading"), 1);
    assert_int_equal(parsed_check_fires(RAG_BLOCK_PARA, 0, "cut \xE2\x82"), 1);

    /* and a real document passes everything */
    const char *md = "# Title\n\nSome text. More text!\n\n```\ncode\n```\n";
    fuzz_markdown_body((const uint8_t *)md, strlen(md));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks_fire), cmocka_unit_test(test_html),
        cmocka_unit_test(test_xml),         cmocka_unit_test(test_markdown),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
