#include "fake_vector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fake_vec {
    unsigned int dim;
    size_t n, cap;
    int64_t *labels;
    float *vecs;
} fake_vec;

static int fv_add(void *s, size_t n, const float *v, const int64_t *labels)
{
    fake_vec *f = s;
    if (f->n + n > f->cap) {
        size_t cap = (f->n + n) * 2 + 16;
        f->labels = realloc(f->labels, cap * sizeof *f->labels);
        f->vecs = realloc(f->vecs, cap * f->dim * sizeof(float));
        f->cap = cap;
    }
    memcpy(f->labels + f->n, labels, n * sizeof *labels);
    memcpy(f->vecs + f->n * f->dim, v, n * f->dim * sizeof(float));
    f->n += n;
    return 0;
}

static int fv_remove(void *s, size_t n, const int64_t *labels, size_t *removed)
{
    fake_vec *f = s;
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < f->n; j++)
            if (f->labels[j] == labels[i]) {
                f->labels[j] = f->labels[f->n - 1];
                memcpy(f->vecs + j * f->dim, f->vecs + (f->n - 1) * f->dim, f->dim * sizeof(float));
                f->n--;
                r++;
                break;
            }
    if (removed)
        *removed = r;
    return 0;
}

static int fv_search(void *s, const float *q, size_t k, rag_label_filter_fn filter, void *arg,
                     float *scores, int64_t *labels)
{
    fake_vec *f = s;
    for (size_t i = 0; i < k; i++) {
        scores[i] = -1e30f;
        labels[i] = -1;
    }
    for (size_t j = 0; j < f->n; j++) {
        if (filter && !filter(arg, f->labels[j]))
            continue;
        float d = 0;
        for (unsigned t = 0; t < f->dim; t++)
            d += q[t] * f->vecs[j * f->dim + t];
        for (size_t i = 0; i < k; i++) {
            if (labels[i] == -1 || d > scores[i]) {
                memmove(scores + i + 1, scores + i, (k - i - 1) * sizeof *scores);
                memmove(labels + i + 1, labels + i, (k - i - 1) * sizeof *labels);
                scores[i] = d;
                labels[i] = f->labels[j];
                break;
            }
        }
    }
    return 0;
}

static uint64_t fv_count(void *s) { return ((fake_vec *)s)->n; }

static int fv_save(void *s, const char *path)
{
    fake_vec *f = s;
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -6;
    fwrite(&f->n, sizeof f->n, 1, fp);
    fwrite(f->labels, sizeof *f->labels, f->n, fp);
    fwrite(f->vecs, sizeof(float) * f->dim, f->n, fp);
    fclose(fp);
    return 0;
}

static int fv_load(void *s, const char *path)
{
    fake_vec *f = s;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -6;
    size_t n = 0;
    if (fread(&n, sizeof n, 1, fp) != 1) {
        fclose(fp);
        return -19;
    }
    f->n = 0;
    f->labels = realloc(f->labels, (n + 1) * sizeof *f->labels);
    f->vecs = realloc(f->vecs, (n + 1) * f->dim * sizeof(float));
    f->cap = n + 1;
    if (fread(f->labels, sizeof *f->labels, n, fp) != n ||
        fread(f->vecs, sizeof(float) * f->dim, n, fp) != n) {
        fclose(fp);
        return -19;
    }
    f->n = n;
    fclose(fp);
    return 0;
}

static int fv_reset(void *s)
{
    ((fake_vec *)s)->n = 0;
    return 0;
}

static void fv_free(void *s)
{
    fake_vec *f = s;
    free(f->labels);
    free(f->vecs);
    free(f);
}

int rag_fake_vector_backend_new(rag_vector_backend **out, unsigned int dim)
{
    rag_vector_backend *b = calloc(1, sizeof *b);
    fake_vec *f = calloc(1, sizeof *f);
    f->dim = dim;
    b->version = RAG_VECTOR_BACKEND_VERSION;
    b->state = f;
    b->dim = dim;
    b->add = fv_add;
    b->remove = fv_remove;
    b->search = fv_search;
    b->count = fv_count;
    b->save = fv_save;
    b->load = fv_load;
    b->reset = fv_reset;
    b->free = fv_free;
    *out = b;
    return 0;
}
