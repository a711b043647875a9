/*
 * acl_tenants: one ragcore root shared by several tenants, kept apart by document ACLs.
 *
 * Every document carries the principals allowed to read it (rag_doc.acl); a document without
 * an ACL is public.  A search passes the caller's principals (rag_query.principals: the user
 * and their groups) and sees public documents plus those whose ACL names one of them; an
 * operator search (rag_query.unrestricted) sees everything.  The program shows:
 *   - three tenants (principals "tenant:a", "tenant:b", "tenant:c"; a and c are also members
 *     of "group:shared") each seeing only their own, the group's and the public documents;
 *   - a search for another tenant's secret word finding nothing of that tenant;
 *   - an ACL change (the same document put again with another ACL) taking effect at once
 *     for the new version;
 *   - operator access, and an anonymous search (no principals: public documents only);
 *   - rag_assemble() of one tenant's results: the prompt holds that tenant's text only.
 * Every search is checked both ways (nothing leaks, nothing allowed is missing); any failure
 * exits 1, so the program doubles as a test (CTest example_acl_tenants).
 *
 *   acl_tenants [ROOT]     (default: a fresh directory under $TMPDIR or /tmp, removed after)
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ragcore/ragcore.h>

/* A document and who may read it.  Each text carries a secret word of its owner, so that a
 * leak shows up both in the hit list and in an assembled prompt. */
typedef struct doc_spec {
    const char *id;
    const char *acl[2]; /* NULL-terminated; { NULL } is public */
    const char *text;
} doc_spec;

static const doc_spec docs[] = {
    {"a-plan",
     {"tenant:a", NULL},
     "Tenant A quarterly plan. Secret word: aardvark. The quarterly budget moves to cloud "
     "storage and the support team grows by two people."},
    {"a-roadmap",
     {"tenant:a", NULL},
     "Tenant A product roadmap for the next quarterly cycle. Secret word: aardvark. Mobile "
     "app first, then offline sync."},
    {"b-plan",
     {"tenant:b", NULL},
     "Tenant B quarterly plan. Secret word: bison. The quarterly budget goes to a new "
     "warehouse and delivery vans."},
    {"b-payroll",
     {"tenant:b", NULL},
     "Tenant B payroll notes for the quarterly close. Secret word: bison. Overtime is paid "
     "at one and a half times the hourly rate."},
    {"c-plan",
     {"tenant:c", NULL},
     "Tenant C quarterly plan. Secret word: chinchilla. The quarterly budget pays for a "
     "security audit and staff training."},
    {"shared-guide",
     {"group:shared", NULL},
     "Shared partner guide for quarterly reviews. Secret word: dormouse. Partners in the "
     "shared group exchange their quarterly figures here."},
    {"public-faq",
     {NULL, NULL},
     "Public FAQ about the quarterly reporting calendar. Reports are due on the tenth day "
     "after each quarter ends."},
};
#define NDOCS (sizeof docs / sizeof docs[0])

/* A tenant: the principals its searches carry. */
typedef struct tenant {
    const char *name;
    const char *principals[2];
    size_t count;
} tenant;

static const tenant tenants[] = {
    {"tenant a", {"tenant:a", "group:shared"}, 2},
    {"tenant b", {"tenant:b", NULL}, 1},
    {"tenant c", {"tenant:c", "group:shared"}, 2},
};
#define NTENANTS (sizeof tenants / sizeof tenants[0])

/* The ACL each document has now (changed by the re-put below). */
static const char *current_acl[NDOCS][2];

static int failures;

static void check(int ok, const char *fmt, const char *a, const char *b)
{
    if (!ok) {
        fprintf(stderr, "acl_tenants: FAIL: ");
        fprintf(stderr, fmt, a, b);
        fputc('\n', stderr);
        failures++;
    }
}

static int fail(const char *what, int code)
{
    fprintf(stderr, "acl_tenants: %s: %s (%d): %s\n", what, rag_strerror(code), code,
            rag_error_last());
    return 1;
}

/* May a caller holding `principals` read document `d` (NULL principals: operator)? */
static int allowed(size_t d, const tenant *t)
{
    if (!t)
        return 1;
    if (!current_acl[d][0])
        return 1; /* public */
    for (size_t i = 0; i < 2 && current_acl[d][i]; i++)
        for (size_t p = 0; p < t->count; p++)
            if (strcmp(current_acl[d][i], t->principals[p]) == 0)
                return 1;
    return 0;
}

static size_t doc_index(const char *id)
{
    for (size_t d = 0; d < NDOCS; d++)
        if (strcmp(docs[d].id, id) == 0)
            return d;
    return NDOCS;
}

static int put(rag_ctx *ctx, size_t d, const char *const *acl)
{
    rag_doc doc;
    memset(&doc, 0, sizeof doc);
    doc.id = docs[d].id;
    doc.data = docs[d].text;
    doc.size = strlen(docs[d].text);
    doc.mime = "text/plain";
    doc.title = docs[d].id;
    doc.acl = acl[0] ? acl : NULL;
    doc.acl_count = acl[0] ? (acl[1] ? 2 : 1) : 0;
    current_acl[d][0] = acl[0];
    current_acl[d][1] = acl[0] ? acl[1] : NULL;
    return rag_doc_put(ctx, &doc, NULL);
}

/* Search as `t` (NULL: operator; t->count 0: anonymous).  The caller frees *out. */
static int search_as(rag_ctx *ctx, const tenant *t, const char *text, rag_search_mode mode,
                     rag_results **out)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = 50; /* more than there are documents: every readable one can come back */
    q.mode = mode;
    if (t) {
        q.principals = t->count ? t->principals : NULL;
        q.principal_count = t->count;
    } else {
        q.unrestricted = 1;
    }
    return rag_search(ctx, &q, out);
}

/* Search "quarterly" (in every document) as `t`: each readable document must come back, and
 * nothing else. */
static int check_visibility(rag_ctx *ctx, const tenant *t, const char *label)
{
    rag_results *r = NULL;
    int rc = search_as(ctx, t, "quarterly", RAG_MODE_LEXICAL, &r);
    if (rc)
        return fail("search", rc);
    int seen[NDOCS] = {0};
    printf("  %-10s sees:", label);
    for (size_t i = 0; i < r->count; i++) {
        size_t d = doc_index(r->items[i].doc_id);
        printf(" %s", r->items[i].doc_id);
        check(d < NDOCS, "%s: unknown document %s", label, r->items[i].doc_id);
        if (d < NDOCS) {
            check(allowed(d, t), "%s: LEAK: %s is not readable by it", label, docs[d].id);
            seen[d] = 1;
        }
    }
    printf("\n");
    for (size_t d = 0; d < NDOCS; d++)
        if (allowed(d, t))
            check(seen[d], "%s: readable document %s not found", label, docs[d].id);
    rag_results_free(r);
    return 0;
}

/* Search another tenant's secret word: nothing of that tenant may come back. */
static int check_secret(rag_ctx *ctx, const tenant *t, const char *word)
{
    rag_results *r = NULL;
    int rc = search_as(ctx, t, word, RAG_MODE_DEFAULT, &r);
    if (rc)
        return fail("search", rc);
    for (size_t i = 0; i < r->count; i++) {
        size_t d = doc_index(r->items[i].doc_id);
        check(d < NDOCS && allowed(d, t), "%s: LEAK: %s returned", t->name, r->items[i].doc_id);
        check(strstr(r->items[i].text, word) == NULL, "%s: LEAK: secret word %s in a hit",
              t->name, word);
    }
    rag_results_free(r);
    return 0;
}

static int run(rag_ctx *ctx)
{
    int rc;
    for (size_t d = 0; d < NDOCS; d++)
        if ((rc = put(ctx, d, docs[d].acl)) != RAG_OK)
            return fail("put", rc);
    if ((rc = rag_drain(ctx, 60000)) != RAG_OK)
        return fail("drain", rc);

    static const tenant anonymous = {"anonymous", {NULL, NULL}, 0};
    printf("documents of three tenants, a shared group and the public:\n");
    for (size_t t = 0; t < NTENANTS; t++)
        if (check_visibility(ctx, &tenants[t], tenants[t].name))
            return 1;
    if (check_visibility(ctx, &anonymous, "anonymous") || check_visibility(ctx, NULL, "operator"))
        return 1;

    /* Each tenant looks for the others' secret words. */
    static const char *const secrets[] = {"aardvark", "bison", "chinchilla", "dormouse"};
    static const char *const owners[] = {"tenant:a", "tenant:b", "tenant:c", "group:shared"};
    for (size_t t = 0; t < NTENANTS; t++)
        for (size_t s = 0; s < 4; s++) {
            int mine = 0;
            for (size_t p = 0; p < tenants[t].count; p++)
                mine |= strcmp(tenants[t].principals[p], owners[s]) == 0;
            if (!mine && check_secret(ctx, &tenants[t], secrets[s]))
                return 1;
        }

    /* An ACL change: tenant A hands its roadmap to tenant B, and the FAQ becomes shared-only.
     * A put with another ACL is a new version; once indexed it replaces the old one, ACL
     * included. */
    static const char *const to_b[2] = {"tenant:b", NULL};
    static const char *const to_shared[2] = {"group:shared", NULL};
    if ((rc = put(ctx, doc_index("a-roadmap"), to_b)) != RAG_OK ||
        (rc = put(ctx, doc_index("public-faq"), to_shared)) != RAG_OK)
        return fail("put (ACL change)", rc);
    if ((rc = rag_drain(ctx, 60000)) != RAG_OK)
        return fail("drain", rc);
    printf("after a-roadmap -> tenant:b and public-faq -> group:shared:\n");
    for (size_t t = 0; t < NTENANTS; t++)
        if (check_visibility(ctx, &tenants[t], tenants[t].name))
            return 1;
    if (check_visibility(ctx, &anonymous, "anonymous") || check_visibility(ctx, NULL, "operator"))
        return 1;

    /* A prompt from tenant C's results: its own plan, the shared guide, and nothing of A or
     * B (the FAQ is shared-only now, C is in the group). */
    rag_results *r = NULL;
    if ((rc = search_as(ctx, &tenants[2], "what does the quarterly budget pay for?",
                        RAG_MODE_DEFAULT, &r)) != RAG_OK)
        return fail("search", rc);
    rag_assemble_opts ao = RAG_ASSEMBLE_INIT;
    ao.question = "What does the quarterly budget pay for?";
    ao.token_budget = 1024;
    char *prompt = NULL;
    rc = rag_assemble(ctx, r, &ao, &prompt);
    rag_results_free(r);
    if (rc)
        return fail("assemble", rc);
    printf("prompt for tenant c (%zu bytes):\n%s\n", strlen(prompt), prompt);
    check(strstr(prompt, "chinchilla") != NULL, "%s: own text missing from the prompt%s",
          "tenant c", "");
    check(strstr(prompt, "aardvark") == NULL && strstr(prompt, "bison") == NULL,
          "%s: LEAK: another tenant's text in the prompt%s", "tenant c", "");
    rag_free(prompt);
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    char root[4096];
    if (argc > 1) {
        snprintf(root, sizeof root, "%s", argv[1]);
    } else {
        const char *parent = getenv("TMPDIR");
        snprintf(root, sizeof root, "%s/ragcore-acl-tenants-XXXXXX",
                 parent && *parent ? parent : "/tmp");
        if (!mkdtemp(root)) {
            perror("acl_tenants: mkdtemp");
            return 1;
        }
    }

    rag_options opts;
    rag_options_init(&opts);
    opts.no_sync = 1; /* a throw-away root */
    rag_ctx *ctx = NULL;
    int rc = rag_open(&ctx, root, &opts);
    int status = rc ? fail("open", rc) : run(ctx);
    rag_close(ctx);

    if (argc <= 1 && nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        perror("acl_tenants: removing the temporary root");
    if (status == 0 && failures == 0) {
        printf("acl_tenants: OK, no leak\n");
        return 0;
    }
    fprintf(stderr, "acl_tenants: %d check(s) failed\n", failures);
    return 1;
}
