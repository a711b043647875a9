#define _GNU_SOURCE
#include "test_support.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

void rag_test_rmtree(const char *path) { nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

char *rag_test_tmpdir(const char *name)
{
    const char *base = getenv("RAG_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/%s-%d", base, name, (int)getpid());
    rag_test_rmtree(p);
    mkdir(p, 0755);
    return p;
}

char *rag_test_data_path(const char *rel)
{
    const char *base = getenv("RAG_SHARED_DATA");
    char *p = malloc(4096);
    if (base && *base)
        snprintf(p, 4096, "%s/%s", base, rel);
    else
        snprintf(p, 4096, "../shared/data/%s", rel);
    if (access(p, R_OK) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

char *rag_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

static int fake_embed(void *state, const char *const *texts, const size_t *lens, size_t n,
                      float *out)
{
    rag_fake_provider_state *st = state;
    __atomic_add_fetch(&st->calls, 1, __ATOMIC_SEQ_CST);
    if (st->transient_failures > 0) {
        st->transient_failures--;
        return -18; /* RAG_ETRANSIENT */
    }
    for (size_t i = 0; i < n; i++) {
        if (st->fail_marker && memmem(texts[i], lens[i], st->fail_marker, strlen(st->fail_marker)))
            return st->fail_code ? st->fail_code : -15;
        float *v = out + i * st->dim;
        memset(v, 0, st->dim * sizeof(float));
        const unsigned char *s = (const unsigned char *)texts[i];
        for (size_t j = 0; j + 2 < lens[i] + 2; j++) {
            uint32_t h = 2166136261u;
            for (size_t k = j; k < j + 3 && k < lens[i]; k++)
                h = (h ^ s[k]) * 16777619u;
            v[h % st->dim] += (h & 0x80000000u) ? -1.0f : 1.0f;
        }
        double norm = 0;
        for (unsigned d = 0; d < st->dim; d++)
            norm += (double)v[d] * v[d];
        if (norm > 0)
            for (unsigned d = 0; d < st->dim; d++)
                v[d] = (float)(v[d] / sqrt(norm));
    }
    __atomic_add_fetch(&st->texts_embedded, (long)n, __ATOMIC_SEQ_CST);
    return 0;
}

static int fake_fingerprint(void *state, char *buf, size_t size)
{
    rag_fake_provider_state *st = state;
    snprintf(buf, size, "fake-trigram-%u", st->dim);
    return 0;
}

static void fake_free(void *state) { free(state); }

rag_embed_provider *rag_fake_provider_new(unsigned int dim, rag_fake_provider_state **state_out)
{
    rag_embed_provider *p = calloc(1, sizeof *p);
    rag_fake_provider_state *st = calloc(1, sizeof *st);
    rag_embed_provider_init(p, RAG_EMBED_PROVIDER_VERSION);
    st->dim = dim;
    p->state = st;
    p->dim = dim;
    p->embed = fake_embed;
    p->fingerprint = fake_fingerprint;
    p->free = fake_free;
    if (state_out)
        *state_out = st;
    return p;
}
