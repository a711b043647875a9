/*
 * A host application's own embedding provider, registered with ragcore.
 *
 * The provider here is deliberately small — a bag of hashed character trigrams, sublinear term
 * frequency, L2-normalised — so that the example shows the contract rather than a model:
 *   - the vtable is initialised with rag_embed_provider_init() (version first, unused slots 0);
 *   - `dim`, `embed` and `fingerprint` are required; `state`, `flags`, `max_batch` and `free`
 *     are optional and used here;
 *   - `embed` writes one L2-normalised row per text into ragcore's buffer, is safe to call
 *     from several threads (the state is immutable), and returns RAG_EMBED_EINVAL for input it
 *     can never embed (ragcore then dead-letters the document instead of retrying);
 *   - the fingerprint names every parameter that changes the vectors, so ragcore refuses to
 *     mix this provider's vectors with another's;
 *   - rag_open() copies the struct and owns `state` from then on.
 * It then shows what a provider change does to an existing root: refused with
 * RAG_EFINGERPRINT, or re-embedded when rag_options.reembed is set.
 *
 *   host_provider [ROOT]     (default: a fresh directory under /tmp)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ragcore/ragcore.h>

typedef struct trigram_model {
    unsigned int dim;
    uint32_t seed; /* part of the model: a different seed gives different vectors */
} trigram_model;

static uint32_t fnv1a(const unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static int trigram_embed(void *state, const char *const *texts, const size_t *lens, size_t n,
                         float *out)
{
    const trigram_model *m = state;
    for (size_t t = 0; t < n; t++) {
        float *row = out + t * m->dim;
        memset(row, 0, m->dim * sizeof *row);
        if (!texts[t] && lens[t])
            return RAG_EMBED_EINVAL; /* permanent: never retried */
        const unsigned char *s = (const unsigned char *)texts[t];
        for (size_t i = 0; i + 3 <= lens[t]; i++) {
            unsigned char g[3];
            for (int k = 0; k < 3; k++)
                g[k] = (unsigned char)(s[i + k] >= 'A' && s[i + k] <= 'Z' ? s[i + k] + 32
                                                                           : s[i + k]);
            uint32_t h = fnv1a(g, 3, m->seed);
            row[h % m->dim] += (h & 0x80000000u) ? -1.0f : 1.0f;
        }
        double norm = 0;
        for (unsigned int d = 0; d < m->dim; d++) {
            /* sublinear term frequency, keeping the sign */
            float v = row[d];
            row[d] = v > 0 ? 1.0f + logf(v) : v < 0 ? -(1.0f + logf(-v)) : 0.0f;
            norm += (double)row[d] * row[d];
        }
        if (norm > 0)
            for (unsigned int d = 0; d < m->dim; d++)
                row[d] = (float)(row[d] / sqrt(norm));
    }
    return RAG_EMBED_OK;
}

static int trigram_fingerprint(void *state, char *buf, size_t size)
{
    const trigram_model *m = state;
    int w = snprintf(buf, size, "example-trigram-v1-d%u-s%u", m->dim, m->seed);
    return w > 0 && (size_t)w < size ? RAG_EMBED_OK : RAG_EMBED_EINVAL;
}

static void trigram_free(void *state) { free(state); }

/* Fill `p` with a trigram provider of `dim` dimensions. */
static int trigram_provider(rag_embed_provider *p, unsigned int dim, uint32_t seed)
{
    trigram_model *m = malloc(sizeof *m);
    if (!m || rag_embed_provider_init(p, RAG_EMBED_PROVIDER_VERSION) != 0) {
        free(m);
        return RAG_EMBED_ENOMEM;
    }
    m->dim = dim;
    m->seed = seed;
    p->state = m;
    p->dim = dim;
    p->flags = 0;       /* immutable state: ragcore may call embed concurrently */
    p->max_batch = 128; /* ragcore splits larger batches */
    p->embed = trigram_embed;
    p->fingerprint = trigram_fingerprint;
    p->free = trigram_free;
    return RAG_EMBED_OK;
}

static int open_with(const char *root, unsigned int dim, int reembed, rag_ctx **ctx)
{
    rag_embed_provider p;
    if (trigram_provider(&p, dim, 7) != RAG_EMBED_OK)
        return RAG_ENOMEM;
    rag_options o;
    rag_options_init(&o);
    o.provider = &p; /* copied; ragcore frees the state, also when rag_open fails */
    o.reembed = reembed;
    return rag_open(ctx, root, &o);
}

static int search_print(rag_ctx *ctx, const char *text)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = 3;
    q.unrestricted = 1;
    q.mode = RAG_MODE_VECTOR; /* the provider's side alone */
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc)
        return rc;
    printf("  \"%s\":", text);
    for (size_t i = 0; i < r->count; i++)
        printf(" %s(%.3f)", r->items[i].doc_id, r->items[i].score);
    printf("\n");
    int top_ok = r->count > 0;
    rag_results_free(r);
    return top_ok ? RAG_OK : RAG_ENOTFOUND;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "host_provider: %s: %s (%s)\n", what, rag_strerror(rc), rag_error_last());
    return 1;
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/ragcore-host-provider-XXXXXX";
    const char *root = argc > 1 ? argv[1] : mkdtemp(tmp);
    if (!root)
        return 1;
    static const struct {
        const char *id, *text;
    } docs[] = {
        {"lighthouse", "Lighthouses guide ships past rocks and shoals with a beam of light."},
        {"bakery", "Sourdough bread needs a starter, flour, water, salt and patience."},
        {"comet", "A comet's tail points away from the sun, pushed by the solar wind."},
    };

    rag_ctx *ctx = NULL;
    int rc = open_with(root, 128, 0, &ctx);
    if (rc)
        return fail("open", rc);
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        rag_doc d = {0};
        d.id = docs[i].id;
        d.data = docs[i].text;
        d.size = strlen(docs[i].text);
        d.mime = "text/plain";
        if ((rc = rag_doc_put(ctx, &d, NULL)) != RAG_OK)
            return fail("put", rc);
    }
    if ((rc = rag_drain(ctx, 10000)) != RAG_OK)
        return fail("drain", rc);
    printf("provider example-trigram d128:\n");
    if ((rc = search_print(ctx, "beam of light for ships")) != RAG_OK)
        return fail("search", rc);
    rag_close(ctx);

    /* Another model for the same root: refused, because its vectors would not compare. */
    rc = open_with(root, 256, 0, &ctx);
    if (rc != RAG_EFINGERPRINT) {
        fprintf(stderr, "host_provider: expected RAG_EFINGERPRINT, got %d\n", rc);
        return 1;
    }
    printf("d256 without reembed: %s\n", rag_strerror(rc));

    /* ... unless the host asks for a re-embed: every document goes through embed and index
     * again, at the same version; until then the lexical side still finds it. */
    if ((rc = open_with(root, 256, 1, &ctx)) != RAG_OK)
        return fail("open with reembed", rc);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    if ((rc = rag_status(ctx, &st)) != RAG_OK)
        return fail("status", rc);
    printf("re-embed started: generation %llu, %llu chunks waiting for a vector\n",
           (unsigned long long)st.model_generation, (unsigned long long)st.reembed_pending);
    if ((rc = rag_drain(ctx, 10000)) != RAG_OK)
        return fail("drain", rc);
    if ((rc = rag_status(ctx, &st)) != RAG_OK)
        return fail("status", rc);
    printf("re-embed done: %llu waiting; provider %s\n", (unsigned long long)st.reembed_pending,
           st.provider_fingerprint);
    if (st.reembed_pending != 0)
        return 1;
    if ((rc = search_print(ctx, "beam of light for ships")) != RAG_OK)
        return fail("search", rc);
    rag_close(ctx);
    if (argc <= 1) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0)
            return 1;
    }
    return 0;
}
