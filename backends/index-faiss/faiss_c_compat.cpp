/*
 * The subset of the FAISS C API that ragcore calls, implemented on the C++ library.
 *
 * Debian's libfaiss-dev 1.7.3 ships the C API headers but no libfaiss_c, so this unit
 * provides the functions the backend uses, with the signatures of those headers (they are
 * included so that the compiler checks every definition against its declaration) and the
 * error convention of the real C API: 0 on success, -2 for a FAISS exception, -4 for another
 * standard exception, -1 for anything else, detail in faiss_get_last_error().
 *
 * Two differences from a plain forwarding layer, both about 1.7.3:
 * - IndexIDMap/IndexIDMap2 reject SearchParameters, so faiss_Index_search_with_params
 *   searches their inner index with a selector translated to inner positions and maps the
 *   positions back to ids; HNSW and IVF only accept their own parameter subclasses, so the
 *   selector is carried over into those with the index's current efSearch / nprobe.
 * - faiss_IDSelectorCallback_new (ragcore's own, see faiss_c_ext.h) adapts a C callback.
 *
 * Built only when CMake found no libfaiss_c.
 */
#ifndef RAG_HAVE_FAISS_C

#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "faiss_c_ext.h"

namespace {

using idx_type = faiss::Index::idx_t; // faiss::idx_t does not exist yet in 1.7.3

thread_local std::string last_error;

faiss::Index *to_cpp(FaissIndex *p) { return reinterpret_cast<faiss::Index *>(p); }
const faiss::Index *to_cpp(const FaissIndex *p) { return reinterpret_cast<const faiss::Index *>(p); }

/* Selector calling back into C. */
struct CallbackSelector : faiss::IDSelector {
    faiss_IDSelectorCallback_fn fn;
    void *arg;
    CallbackSelector(faiss_IDSelectorCallback_fn f, void *a) : fn(f), arg(a) {}
    bool is_member(idx_type id) const override { return fn(arg, id) != 0; }
};

/* Selector over an IDMap's inner positions: a position is selected when the user id stored
 * at that position is.  This is what later FAISS versions do inside IndexIDMap. */
struct PositionSelector : faiss::IDSelector {
    const std::vector<idx_type> &id_map;
    const faiss::IDSelector *user;
    PositionSelector(const std::vector<idx_type> &m, const faiss::IDSelector *u)
            : id_map(m), user(u) {}
    bool is_member(idx_type pos) const override {
        return pos >= 0 && size_t(pos) < id_map.size() && user->is_member(id_map[size_t(pos)]);
    }
};

/* Every query of the n x k result has k labels. */
bool all_filled(const idx_type *labels, idx_type n, idx_type k) {
    for (idx_type i = 0; i < n * k; i++)
        if (labels[i] < 0)
            return false;
    return true;
}

/* Search `index` restricted to `sel` (may be NULL), adapting the parameters to what 1.7.3
 * accepts for that index type. */
void search_selected(const faiss::Index *index, idx_type n, const float *x, idx_type k,
                     float *distances, idx_type *labels, const faiss::IDSelector *sel) {
    if (const auto *idmap = dynamic_cast<const faiss::IndexIDMap *>(index)) {
        if (!sel) {
            idmap->search(n, x, k, distances, labels);
            return;
        }
        PositionSelector ps(idmap->id_map, sel);
        search_selected(idmap->index, n, x, k, distances, labels, &ps);
        for (idx_type i = 0; i < n * k; i++)
            if (labels[i] >= 0)
                labels[i] = idmap->id_map.at(size_t(labels[i]));
        return;
    }
    if (!sel) {
        index->search(n, x, k, distances, labels);
        return;
    }
    /* HNSW applies the selector to the nodes its graph walk reaches: a restrictive filter can
     * leave fewer than k results (a larger efSearch did not fill them in FAISS 1.7.3). */
    if (const auto *hnsw = dynamic_cast<const faiss::IndexHNSW *>(index)) {
        faiss::SearchParametersHNSW p;
        p.efSearch = hnsw->hnsw.efSearch;
        p.sel = const_cast<faiss::IDSelector *>(sel);
        index->search(n, x, k, distances, labels, &p);
        return;
    }
    /* IVF applies the selector only to the nprobe lists it visits, so a restrictive filter
     * left fewer than k results although enough selected vectors existed (IVF256 with 12% of
     * labels readable returned 9.6 of 10).  The search is repeated with 4x the lists until
     * every query has k results or every list was visited. */
    if (const auto *ivf = dynamic_cast<const faiss::IndexIVF *>(index)) {
        faiss::SearchParametersIVF p;
        p.nprobe = ivf->nprobe;
        p.max_codes = ivf->max_codes;
        p.sel = const_cast<faiss::IDSelector *>(sel);
        for (;;) {
            index->search(n, x, k, distances, labels, &p);
            if (all_filled(labels, n, k) || p.nprobe >= ivf->nlist)
                return;
            p.nprobe = std::min<size_t>(p.nprobe * 4, ivf->nlist);
            p.max_codes = 0; /* no cap while widening: the filter decides what counts */
        }
    }
    faiss::SearchParameters p;
    p.sel = const_cast<faiss::IDSelector *>(sel);
    index->search(n, x, k, distances, labels, &p);
}

} // namespace

#define RAG_FAISS_CATCH                                                                     \
    catch (faiss::FaissException & e) {                                                    \
        last_error = e.what();                                                             \
        return -2;                                                                         \
    }                                                                                      \
    catch (std::exception & e) {                                                           \
        last_error = e.what();                                                             \
        return -4;                                                                         \
    }                                                                                      \
    catch (...) {                                                                          \
        last_error = "Unknown error";                                                      \
        return -1;                                                                         \
    }                                                                                      \
    return 0;

extern "C" {

const char *faiss_get_last_error() { return last_error.c_str(); }

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric) {
    try {
        *p_index = reinterpret_cast<FaissIndex *>(
                faiss::index_factory(d, description, static_cast<faiss::MetricType>(metric)));
    }
    RAG_FAISS_CATCH
}

void faiss_Index_free(FaissIndex *obj) { delete to_cpp(obj); }

int faiss_Index_d(const FaissIndex *index) { return to_cpp(index)->d; }

int faiss_Index_is_trained(const FaissIndex *index) { return to_cpp(index)->is_trained ? 1 : 0; }

idx_t faiss_Index_ntotal(const FaissIndex *index) { return to_cpp(index)->ntotal; }

FaissMetricType faiss_Index_metric_type(const FaissIndex *index) {
    return static_cast<FaissMetricType>(to_cpp(index)->metric_type);
}

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x) {
    try {
        to_cpp(index)->train(n, x);
    }
    RAG_FAISS_CATCH
}

int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x, const idx_t *xids) {
    try {
        to_cpp(index)->add_with_ids(n, x, xids);
    }
    RAG_FAISS_CATCH
}

int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                       float *distances, idx_t *labels) {
    try {
        to_cpp(index)->search(n, x, k, distances, labels);
    }
    RAG_FAISS_CATCH
}

int faiss_Index_reset(FaissIndex *index) {
    try {
        to_cpp(index)->reset();
    }
    RAG_FAISS_CATCH
}

int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel, size_t *n_removed) {
    try {
        size_t n = to_cpp(index)->remove_ids(*reinterpret_cast<const faiss::IDSelector *>(sel));
        if (n_removed)
            *n_removed = n;
    }
    RAG_FAISS_CATCH
}

int faiss_write_index_fname(const FaissIndex *idx, const char *fname) {
    try {
        faiss::write_index(to_cpp(idx), fname);
    }
    RAG_FAISS_CATCH
}

int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out) {
    try {
        *p_out = reinterpret_cast<FaissIndex *>(faiss::read_index(fname, io_flags));
    }
    RAG_FAISS_CATCH
}

void faiss_IDSelector_free(FaissIDSelector *obj) {
    delete reinterpret_cast<faiss::IDSelector *>(obj);
}

int faiss_IDSelectorBatch_new(FaissIDSelectorBatch **p_sel, size_t n, const idx_t *indices) {
    try {
        *p_sel = reinterpret_cast<FaissIDSelectorBatch *>(
                new faiss::IDSelectorBatch(n, reinterpret_cast<const idx_type *>(indices)));
    }
    RAG_FAISS_CATCH
}

int faiss_IDSelectorCallback_new(FaissIDSelector **p_sel, faiss_IDSelectorCallback_fn fn,
                                 void *arg) {
    try {
        if (!fn)
            throw std::invalid_argument("faiss_IDSelectorCallback_new: fn is NULL");
        *p_sel = reinterpret_cast<FaissIDSelector *>(new CallbackSelector(fn, arg));
    }
    RAG_FAISS_CATCH
}

void faiss_SearchParameters_free(FaissSearchParameters *obj) {
    delete reinterpret_cast<faiss::SearchParameters *>(obj);
}

int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel) {
    try {
        auto *p = new faiss::SearchParameters;
        p->sel = reinterpret_cast<faiss::IDSelector *>(sel);
        *p_sp = reinterpret_cast<FaissSearchParameters *>(p);
    }
    RAG_FAISS_CATCH
}

int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances,
                                   idx_t *labels) {
    try {
        const auto *p = reinterpret_cast<const faiss::SearchParameters *>(params);
        search_selected(to_cpp(index), n, x, k, distances, labels, p ? p->sel : nullptr);
    }
    RAG_FAISS_CATCH
}

} // extern "C"

#endif /* RAG_HAVE_FAISS_C */
