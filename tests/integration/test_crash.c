/* Crash consistency: a child process (this executable, re-executed) puts documents with the
 * workers running and reports each acknowledged put on a pipe; the parent SIGKILLs it at a
 * random moment, several times.  After reopening and draining, every acknowledged document is
 * present exactly once (one live version, its vectors once), and nothing else is left over.
 *
 * Fork and then exec: an LMDB environment must never be used in a forked child. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "test_support.h"

#define ROUNDS 6
#define MAX_DOCS 20000

static void doc_text(char *buf, size_t n, int i)
{
    snprintf(buf, n,
             "Crash test document %d. It mentions the unique marker zq%dx and the shared words "
             "ledger journal durable.",
             i, i);
}

static int child_main(const char *root, int start, int fd)
{
    rag_options o;
    rag_options_init(&o);
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &o);
    if (rc) {
        fprintf(stderr, "child open: %s (%s)\n", rag_strerror(rc), rag_error_last());
        return 1;
    }
    rag_start(ctx);
    char id[32], text[256];
    for (int i = start; i < MAX_DOCS; i++) {
        snprintf(id, sizeof id, "doc-%05d", i);
        doc_text(text, sizeof text, i);
        rag_doc d = {0};
        d.id = id;
        d.data = text;
        d.size = strlen(text);
        d.mime = "text/plain";
        rc = rag_doc_put(ctx, &d, NULL);
        if (rc) {
            fprintf(stderr, "child put: %s (%s)\n", rag_strerror(rc), rag_error_last());
            return 1;
        }
        /* acknowledged: rag_doc_put returned, so the document must survive any crash */
        char line[32];
        int n = snprintf(line, sizeof line, "%d\n", i);
        if (write(fd, line, (size_t)n) != n)
            return 1;
    }
    rag_close(ctx);
    return 0;
}

/* Consume complete "N\n" lines from buf, raising *acked_max; keeps a partial tail. */
static void take_acks(char *buf, size_t *have, int *acked_max)
{
    char *nl;
    while ((nl = memchr(buf, '\n', *have))) {
        *nl = 0;
        int i = atoi(buf);
        if (i > *acked_max)
            *acked_max = i;
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, nl + 1, *have - used);
        *have -= used;
    }
}

static char self_path[4096];

static void test_kill_and_recover(void **state)
{
    (void)state;
    char *root = rag_test_tmpdir("crash");
    unsigned seed = (unsigned)time(NULL);
    const char *env_seed = getenv("RAG_CRASH_SEED");
    if (env_seed)
        seed = (unsigned)strtoul(env_seed, NULL, 10);
    printf("crash test seed %u (set RAG_CRASH_SEED to replay)\n", seed);
    srand(seed);

    int acked_max = -1; /* documents 0..acked_max were acknowledged */
    int next = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            char start[16], fd[16];
            snprintf(start, sizeof start, "%d", next);
            snprintf(fd, sizeof fd, "%d", fds[1]);
            execl(self_path, self_path, "--child", root, start, fd, (char *)NULL);
            _exit(127);
        }
        close(fds[1]);
        /* let it run for 150..650 ms, reading acknowledgements meanwhile */
        long run_ms = 150 + rand() % 500;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        char buf[4096];
        size_t have = 0;
        for (;;) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= run_ms)
                break;
            struct timeval tv = {0, 10000};
            fd_set set;
            FD_ZERO(&set);
            FD_SET(fds[0], &set);
            if (select(fds[0] + 1, &set, NULL, NULL, &tv) > 0) {
                ssize_t got = read(fds[0], buf + have, sizeof buf - have - 1);
                if (got <= 0)
                    break;
                have += (size_t)got;
                buf[have] = 0;
                take_acks(buf, &have, &acked_max);
            }
        }
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        /* drain what the pipe still holds: those puts were acknowledged before the kill */
        ssize_t got;
        while ((got = read(fds[0], buf + have, sizeof buf - have - 1)) > 0) {
            have += (size_t)got;
            buf[have] = 0;
            take_acks(buf, &have, &acked_max);
        }
        close(fds[0]);
        printf("round %d: killed after %ld ms, %d documents acknowledged so far\n", round, run_ms,
               acked_max + 1);
        /* the next child re-puts the document that may have been in flight */
        next = acked_max + 1;
    }
    assert_true(acked_max >= 0);

    rag_options o;
    rag_options_init(&o);
    rag_ctx *ctx = NULL;
    assert_int_equal(rag_open(&ctx, root, &o), RAG_OK);
    assert_int_equal(rag_drain(ctx, 120000), RAG_OK);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    printf("after recovery: %llu documents, %llu versions, %llu chunks, %llu vectors, %llu dead\n",
           (unsigned long long)st.documents, (unsigned long long)st.versions,
           (unsigned long long)st.chunks, (unsigned long long)st.vectors,
           (unsigned long long)st.dead_letters);
    /* every acknowledged document, and at most the one in flight at the last kill */
    assert_true(st.documents >= (uint64_t)(acked_max + 1));
    assert_true(st.documents <= (uint64_t)(acked_max + 2));
    /* one live version per document, one vector per chunk: nothing applied twice */
    assert_int_equal(st.versions, st.documents);
    assert_int_equal(st.vectors, st.chunks);
    assert_int_equal(st.dead_letters, 0);

    /* each acknowledged document is findable by its marker, exactly once */
    for (int i = 0; i <= acked_max; i += (acked_max / 50) + 1) {
        /* the document's own text as the query: its vector matches exactly (cosine 1) */
        char query[256], id[32];
        doc_text(query, sizeof query, i);
        snprintf(id, sizeof id, "doc-%05d", i);
        rag_query q = RAG_QUERY_INIT;
        q.text = query;
        q.unrestricted = 1;
        q.k = 5;
        rag_results *r = NULL;
        assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
        assert_true(r->count >= 1);
        /* Its vector is the query's own (score 1). Hashed 384-d vectors of two such similar
         * texts can collide exactly, so another document may tie with it at the top. */
        int same = 0;
        for (size_t j = 0; j < r->count; j++) {
            if (strcmp(r->items[j].doc_id, id) == 0) {
                same++;
                assert_true(r->items[j].score >= r->items[0].score - 1e-5f);
            }
        }
        assert_int_equal(same, 1);
        rag_results_free(r);
    }
    rag_close(ctx);
    rag_test_rmtree(root);
    free(root);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0)
        return 1;
    self_path[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_and_recover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
