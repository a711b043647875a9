/*
 * FAISS C API functions that ragcore calls but Debian's FAISS 1.7.3 headers do not declare.
 *
 * - faiss_SearchParameters_new / _free and faiss_Index_search_with_params are the official
 *   declarations of newer FAISS C APIs (same names and signatures), so a system libfaiss_c of
 *   such a version links unchanged.
 * - faiss_IDSelectorCallback_new is ragcore's own: the C API has no selector that calls back
 *   into C.  Only the compatibility unit (faiss_c_compat.cpp) provides it; with a system
 *   libfaiss_c (RAG_HAVE_FAISS_C) the backend filters through an IDSelectorBatch instead.
 */
#ifndef RAG_BACKEND_INDEX_FAISS
#error "private header of the index-faiss backend"
#endif
#ifndef RAG_FAISS_C_EXT_H
#define RAG_FAISS_C_EXT_H

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Official (FAISS >= 1.7.4 C API): search parameters carrying an ID selector. */
FAISS_DECLARE_CLASS(SearchParameters)
FAISS_DECLARE_DESTRUCTOR(SearchParameters)

int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel);

int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances,
                                   idx_t *labels);

#ifndef RAG_HAVE_FAISS_C
/* ragcore extension: a selector whose is_member() is `fn(arg, id) != 0`.  `fn` must be
 * callable from several threads at once when the index searches in parallel. */
typedef int (*faiss_IDSelectorCallback_fn)(void *arg, idx_t id);
int faiss_IDSelectorCallback_new(FaissIDSelector **p_sel, faiss_IDSelectorCallback_fn fn,
                                 void *arg);
#endif

#ifdef __cplusplus
}
#endif

#endif
