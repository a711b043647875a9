/*
 * rag_vector_backend on FAISS, written against the FAISS C API (<faiss/c_api/...>).
 *
 * Index types: any FAISS factory string, metric inner product.  Index types that cannot take
 * caller-chosen ids (Flat, HNSW, ...) are wrapped in "IDMap2," so that labels are ids; IVF
 * keeps ids natively.  An untrained index (IVF) buffers vectors in memory, searched by brute
 * force, until there are enough to train it.
 *
 * Filtering happens inside FAISS: a selector calling the rag_label_filter_fn (compatibility
 * unit), so a restrictive filter still yields k results on exact indexes, and on IVF, where
 * the compatibility unit probes more lists until it has k; HNSW filters what its walk
 * reaches.
 *
 * Thread-safety: search() and count() may run concurrently with each other; add, remove,
 * load, reset and save need exclusive access against add/remove (the index module holds a
 * rwlock).
 */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "faiss_c_ext.h"
#include "rag_common.h"
#include "rag_vector_backend.h"

/* Buffered vectors before an IVF-like index can be trained: first attempt at this many. */
#define FX_TRAIN_FIRST 256u

typedef struct fx_state {
    FaissIndex *index;
    unsigned int dim;
    int can_remove;        /* probed: HNSW cannot remove ids */
    /* vectors waiting for training (only while the index is untrained) */
    size_t pend_n, pend_cap, train_at;
    int64_t *pend_labels;
    float *pend_vecs;
#ifdef RAG_HAVE_FAISS_C
    /* A system libfaiss_c has no callback selector: the filter is turned into the batch of
     * accepted labels, so the backend must know every label it holds. */
    size_t known_n, known_cap;
    int64_t *known;
#endif
} fx_state;

static int fx_error(int frc, const char *what)
{
    const char *detail = faiss_get_last_error();
    return rag_error_set(RAG_EINDEX, "FAISS %s failed (%d): %s", what, frc,
                         detail ? detail : "no detail");
}

/* A zero-id removal tells whether the index type implements remove_ids at all (HNSW throws
 * "not implemented"), without touching its contents. */
static int fx_probe_remove(FaissIndex *index)
{
    FaissIDSelectorBatch *sel = NULL;
    idx_t none = 0;
    if (faiss_IDSelectorBatch_new(&sel, 0, &none) != 0)
        return 0;
    size_t removed = 0;
    int ok = faiss_Index_remove_ids(index, (FaissIDSelector *)sel, &removed) == 0;
    faiss_IDSelector_free((FaissIDSelector *)sel);
    return ok;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

#ifdef RAG_HAVE_FAISS_C
static int fx_known_add(fx_state *s, size_t n, const int64_t *labels)
{
    if (s->known_n + n > s->known_cap) {
        size_t cap = (s->known_n + n) * 2 + 64;
        int64_t *p = realloc(s->known, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "faiss backend: label list");
        s->known = p;
        s->known_cap = cap;
    }
    memcpy(s->known + s->known_n, labels, n * sizeof *labels);
    s->known_n += n;
    return RAG_OK;
}

/* `sorted` holds the removed labels in ascending order. */
static void fx_known_remove(fx_state *s, const int64_t *sorted, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < s->known_n; i++)
        if (!bsearch(&s->known[i], sorted, n, sizeof *sorted, cmp_i64))
            s->known[w++] = s->known[i];
    s->known_n = w;
}

static int fx_known_reload(fx_state *s)
{
    s->known_n = 0;
    FaissIndexIDMap *m = faiss_IndexIDMap_cast(s->index);
    if (!m)
        return faiss_Index_ntotal(s->index) == 0
                   ? RAG_OK
                   : rag_error_set(RAG_EUNSUPPORTED,
                                   "faiss backend: cannot list the ids of a loaded non-IDMap "
                                   "index without the compatibility unit");
    idx_t *ids = NULL;
    size_t n = 0;
    faiss_IndexIDMap_id_map(m, &ids, &n);
    return fx_known_add(s, n, (const int64_t *)ids);
}
#endif

static int fx_pend_append(fx_state *s, size_t n, const float *v, const int64_t *labels)
{
    if (s->pend_n + n > s->pend_cap) {
        size_t cap = (s->pend_n + n) * 2 + 64;
        int64_t *l = realloc(s->pend_labels, cap * sizeof *l);
        if (!l)
            return rag_error_set(RAG_ENOMEM, "faiss backend: training buffer");
        s->pend_labels = l;
        float *f = realloc(s->pend_vecs, cap * s->dim * sizeof *f);
        if (!f)
            return rag_error_set(RAG_ENOMEM, "faiss backend: training buffer");
        s->pend_vecs = f;
        s->pend_cap = cap;
    }
    memcpy(s->pend_labels + s->pend_n, labels, n * sizeof *labels);
    memcpy(s->pend_vecs + s->pend_n * s->dim, v, n * s->dim * sizeof *v);
    s->pend_n += n;
    return RAG_OK;
}

/* Train on the buffered vectors once there are enough; a failed training (too few points
 * for the number of centroids) is retried when the buffer has doubled. */
static int fx_pend_try_train(fx_state *s)
{
    if (s->pend_n < s->train_at)
        return RAG_OK;
    if (faiss_Index_train(s->index, (idx_t)s->pend_n, s->pend_vecs) != 0 ||
        !faiss_Index_is_trained(s->index)) {
        s->train_at = s->pend_n * 2;
        return RAG_OK;
    }
    int frc = faiss_Index_add_with_ids(s->index, (idx_t)s->pend_n, s->pend_vecs,
                                       (const idx_t *)s->pend_labels);
    if (frc)
        return fx_error(frc, "add_with_ids after training");
    s->pend_n = 0;
    return RAG_OK;
}

static int fx_add(void *state, size_t n, const float *vectors, const int64_t *labels)
{
    fx_state *s = state;
    if (n == 0)
        return RAG_OK;
    if (!vectors || !labels)
        return rag_error_set(RAG_EINVAL, "faiss backend add: NULL vectors or labels");
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0)
            return rag_error_set(RAG_EINVAL, "faiss backend add: negative label %lld",
                                 (long long)labels[i]);
    int rc;
    if (s->pend_n > 0 || !faiss_Index_is_trained(s->index)) {
        rc = fx_pend_append(s, n, vectors, labels);
        if (!rc)
            rc = fx_pend_try_train(s);
    } else {
        int frc = faiss_Index_add_with_ids(s->index, (idx_t)n, vectors, (const idx_t *)labels);
        rc = frc ? fx_error(frc, "add_with_ids") : RAG_OK;
    }
#ifdef RAG_HAVE_FAISS_C
    if (!rc)
        rc = fx_known_add(s, n, labels);
#endif
    return rc;
}

static int fx_remove(void *state, size_t n, const int64_t *labels, size_t *removed_out)
{
    fx_state *s = state;
    size_t removed = 0;
    if (removed_out)
        *removed_out = 0;
    if (n == 0)
        return RAG_OK;
    int64_t *sorted = malloc(n * sizeof *sorted);
    if (!sorted)
        return rag_error_set(RAG_ENOMEM, "faiss backend remove");
    memcpy(sorted, labels, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_i64);

    if (s->pend_n > 0) {
        size_t w = 0;
        for (size_t i = 0; i < s->pend_n; i++) {
            if (bsearch(&s->pend_labels[i], sorted, n, sizeof *sorted, cmp_i64)) {
                removed++;
                continue;
            }
            s->pend_labels[w] = s->pend_labels[i];
            memmove(s->pend_vecs + w * s->dim, s->pend_vecs + i * s->dim,
                    s->dim * sizeof(float));
            w++;
        }
        s->pend_n = w;
    }
    int rc = RAG_OK;
    if (faiss_Index_ntotal(s->index) > 0) {
        if (!s->can_remove) {
            rc = rag_error_set(RAG_EUNSUPPORTED,
                               "faiss backend: this index type cannot remove ids "
                               "(keep tombstones instead)");
        } else {
            /* One selector for the whole batch: IndexIDMap2 rebuilds its reverse map on
             * every remove_ids call. */
            FaissIDSelectorBatch *sel = NULL;
            int frc = faiss_IDSelectorBatch_new(&sel, n, (const idx_t *)sorted);
            size_t r = 0;
            if (!frc) {
                frc = faiss_Index_remove_ids(s->index, (FaissIDSelector *)sel, &r);
                faiss_IDSelector_free((FaissIDSelector *)sel);
            }
            if (frc)
                rc = fx_error(frc, "remove_ids");
            removed += r;
        }
    }
#ifdef RAG_HAVE_FAISS_C
    if (!rc)
        fx_known_remove(s, sorted, n);
#endif
    free(sorted);
    if (removed_out)
        *removed_out = removed;
    return rc;
}

/* Exact top-k over the training buffer (an untrained index holds nothing else). */
static void fx_pend_search(const fx_state *s, const float *q, size_t k, rag_label_filter_fn filter,
                           void *arg, float *scores, int64_t *labels)
{
    size_t have = 0;
    for (size_t j = 0; j < s->pend_n; j++) {
        if (filter && !filter(arg, s->pend_labels[j]))
            continue;
        const float *v = s->pend_vecs + j * s->dim;
        float d = 0;
        for (unsigned int t = 0; t < s->dim; t++)
            d += q[t] * v[t];
        if (have == k && d <= scores[k - 1])
            continue;
        size_t i = have < k ? have++ : k - 1;
        while (i > 0 && scores[i - 1] < d) {
            scores[i] = scores[i - 1];
            labels[i] = labels[i - 1];
            i--;
        }
        scores[i] = d;
        labels[i] = s->pend_labels[j];
    }
}

#ifdef RAG_HAVE_FAISS_C
static int fx_make_selector(fx_state *s, rag_label_filter_fn filter, void *arg,
                            FaissIDSelector **out)
{
    int64_t *ok = malloc((s->known_n + 1) * sizeof *ok);
    if (!ok)
        return rag_error_set(RAG_ENOMEM, "faiss backend: filter batch");
    size_t m = 0;
    for (size_t i = 0; i < s->known_n; i++)
        if (filter(arg, s->known[i]))
            ok[m++] = s->known[i];
    FaissIDSelectorBatch *b = NULL;
    int frc = faiss_IDSelectorBatch_new(&b, m, (const idx_t *)ok);
    free(ok);
    if (frc)
        return fx_error(frc, "IDSelectorBatch_new");
    *out = (FaissIDSelector *)b;
    return RAG_OK;
}
#else
static int fx_make_selector(fx_state *s, rag_label_filter_fn filter, void *arg,
                            FaissIDSelector **out)
{
    (void)s;
    int frc = faiss_IDSelectorCallback_new(out, (faiss_IDSelectorCallback_fn)filter, arg);
    return frc ? fx_error(frc, "IDSelectorCallback_new") : RAG_OK;
}
#endif

static int fx_search(void *state, const float *query, size_t k, rag_label_filter_fn filter,
                     void *filter_arg, float *scores, int64_t *labels)
{
    fx_state *s = state;
    if (k == 0)
        return RAG_OK;
    if (!query || !scores || !labels)
        return rag_error_set(RAG_EINVAL, "faiss backend search: NULL argument");
    if (k > (size_t)INT_MAX)
        return rag_error_set(RAG_EINVAL, "faiss backend search: k too large");
    for (size_t i = 0; i < k; i++) {
        scores[i] = -FLT_MAX;
        labels[i] = -1;
    }
    if (s->pend_n > 0) {
        fx_pend_search(s, query, k, filter, filter_arg, scores, labels);
        return RAG_OK;
    }
    if (faiss_Index_ntotal(s->index) == 0)
        return RAG_OK;
    int frc;
    if (!filter) {
        frc = faiss_Index_search(s->index, 1, query, (idx_t)k, scores, (idx_t *)labels);
    } else {
        FaissIDSelector *sel = NULL;
        FaissSearchParameters *params = NULL;
        int rc = fx_make_selector(s, filter, filter_arg, &sel);
        if (rc)
            return rc;
        frc = faiss_SearchParameters_new(&params, sel);
        if (!frc)
            frc = faiss_Index_search_with_params(s->index, 1, query, (idx_t)k, params, scores,
                                                 (idx_t *)labels);
        faiss_SearchParameters_free(params);
        faiss_IDSelector_free(sel);
    }
    if (frc)
        return fx_error(frc, "search");
    for (size_t i = 0; i < k; i++)
        if (labels[i] < 0)
            scores[i] = -FLT_MAX;
    return RAG_OK;
}

static uint64_t fx_count(void *state)
{
    fx_state *s = state;
    return (uint64_t)faiss_Index_ntotal(s->index) + s->pend_n;
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0)
        return rag_error_set(RAG_EIO, "open %s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc)
        return rag_error_set(RAG_EIO, "fsync %s: %s", path, strerror(e));
    return RAG_OK;
}

static int fx_save(void *state, const char *path)
{
    fx_state *s = state;
    if (!path || !*path)
        return rag_error_set(RAG_EINVAL, "faiss backend save: empty path");
    if (s->pend_n > 0)
        return rag_error_set(RAG_ESTATE,
                             "faiss backend save: index not trained yet (%zu vectors buffered)",
                             s->pend_n);
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    char *dir = malloc(len + 2);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return rag_error_set(RAG_ENOMEM, "faiss backend save");
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    memcpy(dir, path, len + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';

    /* write_index neither fsyncs nor replaces atomically: temp file, fsync, rename, fsync
     * of the directory so that the rename itself is durable. */
    int rc = RAG_OK;
    int frc = faiss_write_index_fname(s->index, tmp);
    if (frc)
        rc = fx_error(frc, "write_index");
    if (!rc)
        rc = fsync_path(tmp, 0);
    if (!rc && rename(tmp, path) != 0)
        rc = rag_error_set(RAG_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
    if (rc)
        unlink(tmp);
    else
        rc = fsync_path(dir, 1);
    free(tmp);
    free(dir);
    return rc;
}

static int fx_load(void *state, const char *path)
{
    fx_state *s = state;
    if (!path || !*path)
        return rag_error_set(RAG_EINVAL, "faiss backend load: empty path");
    if (access(path, R_OK) != 0)
        return rag_error_set(errno == ENOENT ? RAG_ENOTFOUND : RAG_EIO, "faiss backend load %s: %s",
                             path, strerror(errno));
    FaissIndex *idx = NULL;
    int frc = faiss_read_index_fname(path, 0, &idx);
    if (frc) {
        const char *d = faiss_get_last_error();
        return rag_error_set(RAG_ECORRUPT, "faiss backend load %s: %s", path, d ? d : "");
    }
    if (faiss_Index_d(idx) != (int)s->dim || faiss_Index_metric_type(idx) != METRIC_INNER_PRODUCT) {
        int d = faiss_Index_d(idx);
        faiss_Index_free(idx);
        return rag_error_set(RAG_ECORRUPT,
                             "faiss backend load %s: dimension %d / metric differ from %u / "
                             "inner product",
                             path, d, s->dim);
    }
    faiss_Index_free(s->index);
    s->index = idx;
    s->can_remove = fx_probe_remove(idx);
    s->pend_n = 0;
    s->train_at = FX_TRAIN_FIRST;
#ifdef RAG_HAVE_FAISS_C
    return fx_known_reload(s);
#else
    return RAG_OK;
#endif
}

static int fx_reset(void *state)
{
    fx_state *s = state;
    int frc = faiss_Index_reset(s->index);
    if (frc)
        return fx_error(frc, "reset");
    s->pend_n = 0;
    s->train_at = FX_TRAIN_FIRST;
#ifdef RAG_HAVE_FAISS_C
    s->known_n = 0;
#endif
    return RAG_OK;
}

static void fx_free(void *state)
{
    fx_state *s = state;
    if (!s)
        return;
    faiss_Index_free(s->index);
    free(s->pend_labels);
    free(s->pend_vecs);
#ifdef RAG_HAVE_FAISS_C
    free(s->known);
#endif
    free(s);
}

int rag_vector_backend_faiss_new(rag_vector_backend **out, unsigned int dim, const char *factory)
{
    if (!out)
        return rag_error_set(RAG_EINVAL, "rag_vector_backend_faiss_new: out is NULL");
    *out = NULL;
    if (dim == 0 || dim > 65536)
        return rag_error_set(RAG_EINVAL, "faiss backend: dimension %u out of range", dim);
    if (!factory || !*factory)
        factory = "IDMap2,Flat";
    /* Labels are FAISS ids: index types without add_with_ids get an IDMap2 around them. */
    int wrap = !strstr(factory, "IDMap") && strncmp(factory, "IVF", 3) != 0;
    size_t flen = strlen(factory);
    char *desc = malloc(flen + 8);
    if (!desc)
        return rag_error_set(RAG_ENOMEM, "faiss backend");
    snprintf(desc, flen + 8, "%s%s", wrap ? "IDMap2," : "", factory);

    FaissIndex *idx = NULL;
    int frc = faiss_index_factory(&idx, (int)dim, desc, METRIC_INNER_PRODUCT);
    if (frc) {
        const char *d = faiss_get_last_error();
        int rc = rag_error_set(RAG_EINVAL, "faiss backend: factory string \"%s\" rejected: %s",
                               desc, d ? d : "");
        free(desc);
        return rc;
    }
    free(desc);
    fx_state *s = calloc(1, sizeof *s);
    rag_vector_backend *b = calloc(1, sizeof *b);
    if (!s || !b) {
        free(s);
        free(b);
        faiss_Index_free(idx);
        return rag_error_set(RAG_ENOMEM, "faiss backend");
    }
    s->index = idx;
    s->dim = dim;
    s->can_remove = fx_probe_remove(idx);
    s->train_at = FX_TRAIN_FIRST;
    b->version = RAG_VECTOR_BACKEND_VERSION;
    b->state = s;
    b->dim = dim;
    b->add = fx_add;
    b->remove = fx_remove;
    b->search = fx_search;
    b->count = fx_count;
    b->save = fx_save;
    b->load = fx_load;
    b->reset = fx_reset;
    b->free = fx_free;
    *out = b;
    return RAG_OK;
}
