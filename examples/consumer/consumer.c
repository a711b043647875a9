/*
 * consumer: the smallest program that uses an *installed* ragcore.  The install test builds it
 * twice (pkg-config and CMake find_package) against a staged install and runs it.
 *
 * It opens a root in a fresh temporary directory, puts one small text document, waits until it
 * is searchable, searches for it and prints the top hit.  It also checks that the library it
 * runs against is the version its headers describe.  Any failure exits non-zero.
 *
 *   consumer [ROOT_PARENT]     (default: $TMPDIR or /tmp)
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ragcore/ragcore.h>

static int fail(const char *what, int code)
{
    fprintf(stderr, "consumer: %s: %s (%d): %s\n", what, rag_strerror(code), code,
            rag_error_last());
    return 1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int run(const char *root)
{
    static const char text[] =
        "The quick brown fox jumps over the lazy dog. Foxes are small omnivorous mammals "
        "that live in forests, grasslands and cities; they hunt rodents and birds at dusk.";
    rag_options opts;
    rag_doc doc;
    rag_query q = RAG_QUERY_INIT;
    const rag_result *top;
    rag_ctx *ctx = NULL;
    rag_results *res = NULL;
    uint64_t version = 0;
    int rc;
    int status = 1;

    rc = rag_options_init(&opts);
    if (rc != RAG_OK)
        return fail("rag_options_init", rc);
    opts.no_sync = 1; /* a throw-away root: durability is not what this program checks */

    rc = rag_open(&ctx, root, &opts);
    if (rc != RAG_OK)
        return fail("rag_open", rc);

    memset(&doc, 0, sizeof doc);
    doc.id = "fox";
    doc.data = text;
    doc.size = sizeof text - 1;
    doc.mime = "text/plain";
    doc.title = "About foxes";
    doc.uri = "example://fox";
    rc = rag_doc_put(ctx, &doc, &version);
    if (rc != RAG_OK) {
        fail("rag_doc_put", rc);
        goto out;
    }
    rc = rag_drain(ctx, 120000);
    if (rc != RAG_OK) {
        fail("rag_drain", rc);
        goto out;
    }

    q.text = "quick brown fox";
    q.k = 3;
    rc = rag_search(ctx, &q, &res);
    if (rc != RAG_OK) {
        fail("rag_search", rc);
        goto out;
    }
    if (res == NULL || res->count == 0) {
        fprintf(stderr, "consumer: the search found nothing\n");
        goto out;
    }
    top = &res->items[0];
    printf("top hit: %s v%llu chunk %u score %.4f title \"%s\" uri %s\n", top->doc_id,
           (unsigned long long)top->version, (unsigned)top->chunk, (double)top->score,
           top->title, top->uri);
    if (strcmp(top->doc_id, "fox") != 0 || top->version != version) {
        fprintf(stderr, "consumer: unexpected top hit %s v%llu (want fox v%llu)\n", top->doc_id,
                (unsigned long long)top->version, (unsigned long long)version);
        goto out;
    }
    status = 0;

out:
    rag_results_free(res);
    rag_close(ctx);
    return status;
}

int main(int argc, char **argv)
{
    if (rag_version_number() != RAG_VERSION_NUMBER) {
        fprintf(stderr, "consumer: header version %d but library version %d\n",
                RAG_VERSION_NUMBER, rag_version_number());
        return 1;
    }
    if (strcmp(rag_version_string(), RAG_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: header version %s but library version %s\n",
                RAG_VERSION_STRING, rag_version_string());
        return 1;
    }
    printf("ragcore %s\n", rag_version_string());

    const char *parent = argc > 1 ? argv[1] : getenv("TMPDIR");
    if (parent == NULL || parent[0] == '\0')
        parent = "/tmp";
    char root[4096];
    if (snprintf(root, sizeof root, "%s/ragcore-consumer-XXXXXX", parent) >= (int)sizeof root) {
        fprintf(stderr, "consumer: path too long\n");
        return 1;
    }
    if (mkdtemp(root) == NULL) {
        perror("consumer: mkdtemp");
        return 1;
    }

    int status = run(root);

    /* Depth-first removal of the temporary root. */
    if (nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        perror("consumer: removing the temporary root");
    if (status == 0)
        printf("consumer: OK\n");
    return status;
}
