/* The index module's in-memory view: what a search needs per label, in O(1), without an
 * LMDB lookup (and without seeing LMDB state newer than the backend). */
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

/* ---- string map ---------------------------------------------------------------------- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static int strmap_find(const ix_strmap *m, const char *key, uint32_t *val)
{
    if (!m->cap)
        return 0;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)str_hash(key) & mask;; i = (i + 1) & mask) {
        if (!m->keys[i])
            return 0;
        if (strcmp(m->keys[i], key) == 0) {
            *val = m->vals[i];
            return 1;
        }
    }
}

static void strmap_insert_slot(ix_strmap *m, char *key, uint32_t val)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)str_hash(key) & mask;
    while (m->keys[i])
        i = (i + 1) & mask;
    m->keys[i] = key;
    m->vals[i] = val;
}

/* `key` must not be present yet. */
static int strmap_put(ix_strmap *m, const char *key, uint32_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        ix_strmap nm = {cap, m->n, calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint32_t))};
        if (!nm.keys || !nm.vals) {
            free(nm.keys);
            free(nm.vals);
            return rag_error_set(RAG_ENOMEM, "index: string map");
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i])
                strmap_insert_slot(&nm, m->keys[i], m->vals[i]);
        free(m->keys);
        free(m->vals);
        *m = nm;
    }
    char *copy = rag_strdup(key);
    if (!copy)
        return rag_error_set(RAG_ENOMEM, "index: string map key");
    strmap_insert_slot(m, copy, val);
    m->n++;
    return RAG_OK;
}

static void strmap_free(ix_strmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- view ------------------------------------------------------------------------------ */

void rag_index__mem_init(ix_mem *m)
{
    memset(m, 0, sizeof *m);
    m->n_acl = 1; /* set 0: public */
}

void rag_index__mem_free(ix_mem *m)
{
    if (!m)
        return;
    free(m->labels);
    for (size_t i = 0; i < m->n_docs; i++)
        free(m->doc_names[i]);
    free(m->doc_names);
    strmap_free(&m->doc_map);
    strmap_free(&m->principal_map);
    for (size_t i = 0; i < m->n_plists; i++)
        free(m->plists[i].ids);
    free(m->plists);
    memset(m, 0, sizeof *m);
}

int rag_index__mem_add_acl(ix_mem *m, uint32_t id, const char *const *principals, size_t n)
{
    if (id == 0)
        return RAG_OK;
    for (size_t i = 0; i < n; i++) {
        uint32_t pi;
        if (!strmap_find(&m->principal_map, principals[i], &pi)) {
            if (m->n_plists == m->plists_cap) {
                size_t cap = m->plists_cap ? m->plists_cap * 2 : 16;
                ix_idlist *p = realloc(m->plists, cap * sizeof *p);
                if (!p)
                    return rag_error_set(RAG_ENOMEM, "index: principal lists");
                m->plists = p;
                m->plists_cap = cap;
            }
            pi = (uint32_t)m->n_plists;
            int rc = strmap_put(&m->principal_map, principals[i], pi);
            if (rc)
                return rc;
            memset(&m->plists[m->n_plists++], 0, sizeof(ix_idlist));
        }
        ix_idlist *l = &m->plists[pi];
        if (l->n && l->ids[l->n - 1] == id)
            continue;
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 4;
            uint32_t *p = realloc(l->ids, cap * sizeof *p);
            if (!p)
                return rag_error_set(RAG_ENOMEM, "index: principal list");
            l->ids = p;
            l->cap = cap;
        }
        l->ids[l->n++] = id;
    }
    if (id >= m->n_acl)
        m->n_acl = id + 1;
    return RAG_OK;
}

int rag_index__mem_set_label(ix_mem *m, int64_t label, const char *doc, uint64_t version,
                             uint32_t chunk_no, uint32_t acl)
{
    if (label < 0)
        return rag_error_set(RAG_EINVAL, "index: negative label");
    size_t l = (size_t)label;
    if (l >= m->label_cap) {
        /* labels come from a counter: dense arrays waste nothing but the removed ones */
        size_t cap = m->label_cap ? m->label_cap : 1024;
        while (cap <= l)
            cap *= 2;
        ix_label *p = realloc(m->labels, cap * sizeof *p);
        if (!p)
            return rag_error_set(RAG_ENOMEM, "index: label view of %zu", cap);
        memset(p + m->label_cap, 0, (cap - m->label_cap) * sizeof *p);
        m->labels = p;
        m->label_cap = cap;
    }
    uint32_t di;
    if (!strmap_find(&m->doc_map, doc, &di)) {
        if (m->n_docs == m->docs_cap) {
            size_t cap = m->docs_cap ? m->docs_cap * 2 : 256;
            char **p = realloc(m->doc_names, cap * sizeof *p);
            if (!p)
                return rag_error_set(RAG_ENOMEM, "index: document names");
            m->doc_names = p;
            m->docs_cap = cap;
        }
        char *copy = rag_strdup(doc);
        if (!copy)
            return rag_error_set(RAG_ENOMEM, "index: document name");
        di = (uint32_t)m->n_docs;
        int rc = strmap_put(&m->doc_map, doc, di);
        if (rc) {
            free(copy);
            return rc;
        }
        m->doc_names[m->n_docs++] = copy;
    }
    ix_label *e = &m->labels[l];
    if (!e->live)
        m->live++;
    e->version = version;
    e->chunk_no = chunk_no;
    e->acl = acl;
    e->doc = di;
    e->live = 1;
    return RAG_OK;
}

void rag_index__mem_kill_label(ix_mem *m, int64_t label)
{
    if (label < 0 || (size_t)label >= m->label_cap)
        return;
    ix_label *e = &m->labels[label];
    if (e->live) {
        e->live = 0;
        m->live--;
    }
}

int rag_index__mem_is_live(const ix_mem *m, int64_t label)
{
    return label >= 0 && (size_t)label < m->label_cap && m->labels[label].live;
}

/* ---- per-query filter ---------------------------------------------------------------- */

int rag_index__filter_prepare(const ix_mem *m, const rag_acl_filter *f, ix_query_filter *out)
{
    out->m = m;
    out->allowed = NULL;
    if (!f || f->unrestricted)
        return RAG_OK;
    if (f->principal_count && !f->principals)
        return rag_error_set(RAG_EINVAL, "index search: principals is NULL");
    /* A set is allowed when it is public (id 0) or names one of the query's principals:
     * one pass over the principals' lists, not over every set. */
    out->allowed = calloc(m->n_acl / 8 + 1, 1);
    if (!out->allowed)
        return rag_error_set(RAG_ENOMEM, "index search: ACL bitmap");
    out->allowed[0] = 1;
    for (size_t i = 0; i < f->principal_count; i++) {
        uint32_t pi;
        if (!f->principals[i] || !strmap_find(&m->principal_map, f->principals[i], &pi))
            continue;
        const ix_idlist *l = &m->plists[pi];
        for (size_t j = 0; j < l->n; j++)
            out->allowed[l->ids[j] >> 3] |= (uint8_t)(1u << (l->ids[j] & 7));
    }
    return RAG_OK;
}

void rag_index__filter_release(ix_query_filter *q)
{
    free(q->allowed);
    q->allowed = NULL;
}

int rag_index__filter_fn(void *arg, int64_t label)
{
    const ix_query_filter *q = arg;
    const ix_mem *m = q->m;
    if (label < 0 || (size_t)label >= m->label_cap)
        return 0;
    const ix_label *e = &m->labels[label];
    if (!e->live)
        return 0;
    if (!q->allowed)
        return 1;
    return e->acl < m->n_acl && (q->allowed[e->acl >> 3] >> (e->acl & 7)) & 1;
}
