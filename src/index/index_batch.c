/* Backend and view changes of one consumer batch, held until the batch txn has committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

ix_batch *rag_index__batch_new(unsigned int dim)
{
    ix_batch *b = calloc(1, sizeof *b);
    if (!b)
        rag_error_set(RAG_ENOMEM, "index: batch");
    else
        b->dim = dim;
    return b;
}

static void free_acl(ix_acl_add *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->principals[i]);
    free(a->principals);
}

void rag_index__batch_free(ix_batch *b)
{
    if (!b)
        return;
    free(b->add_labels);
    free(b->add_version);
    free(b->add_chunk);
    free(b->add_acl);
    free(b->add_doc);
    free(b->add_kind);
    free(b->add_vecs);
    free(b->add_lex_off);
    free(b->add_lex_len);
    free(b->lex_buf);
    for (size_t i = 0; i < b->n_docs; i++)
        free(b->docs[i]);
    free(b->docs);
    free(b->rm_labels);
    for (size_t i = 0; i < b->n_acl; i++)
        free_acl(&b->acls[i]);
    free(b->acls);
    free(b->groups);
    free(b);
}

void rag_index__batch_mark(const ix_batch *b, ix_mark *mk)
{
    mk->n_add = b->n_add;
    mk->n_docs = b->n_docs;
    mk->n_rm = b->n_rm;
    mk->n_acl = b->n_acl;
    mk->n_groups = b->n_groups;
    mk->lex_len = b->lex_len;
}

void rag_index__batch_truncate(ix_batch *b, const ix_mark *mk)
{
    for (size_t i = mk->n_docs; i < b->n_docs; i++)
        free(b->docs[i]);
    for (size_t i = mk->n_acl; i < b->n_acl; i++)
        free_acl(&b->acls[i]);
    b->n_add = mk->n_add;
    b->n_docs = mk->n_docs;
    b->n_rm = mk->n_rm;
    b->n_acl = mk->n_acl;
    b->n_groups = mk->n_groups;
    b->lex_len = mk->lex_len;
}

#define GROW(arr, cap_needed, elem_size)                                                   \
    do {                                                                                   \
        void *p_ = realloc((arr), (cap_needed) * (elem_size));                             \
        if (!p_)                                                                           \
            return rag_error_set(RAG_ENOMEM, "index: batch buffers");                      \
        (arr) = p_;                                                                        \
    } while (0)

int rag_index__batch_doc(ix_batch *b, const char *doc, uint32_t *idx)
{
    if (b->n_docs == b->cap_docs) {
        size_t cap = b->cap_docs ? b->cap_docs * 2 : 16;
        GROW(b->docs, cap, sizeof(char *));
        b->cap_docs = cap;
    }
    char *copy = rag_strdup(doc);
    if (!copy)
        return rag_error_set(RAG_ENOMEM, "index: batch document id");
    b->docs[b->n_docs] = copy;
    *idx = (uint32_t)b->n_docs++;
    return RAG_OK;
}

int rag_index__batch_add(ix_batch *b, unsigned int kind, int64_t label, uint32_t doc,
                         uint64_t version, uint32_t chunk_no, uint32_t acl, const float *vec,
                         const void *lex, size_t lex_len)
{
    unsigned int dim = b->dim;
    if (b->n_add == b->cap_add) {
        size_t cap = b->cap_add ? b->cap_add * 2 : 64;
        GROW(b->add_labels, cap, sizeof(int64_t));
        GROW(b->add_version, cap, sizeof(uint64_t));
        GROW(b->add_chunk, cap, sizeof(uint32_t));
        GROW(b->add_acl, cap, sizeof(uint32_t));
        GROW(b->add_doc, cap, sizeof(uint32_t));
        GROW(b->add_kind, cap, sizeof(uint8_t));
        GROW(b->add_vecs, cap * dim, sizeof(float));
        GROW(b->add_lex_off, cap, sizeof(size_t));
        GROW(b->add_lex_len, cap, sizeof(size_t));
        b->cap_add = cap;
    }
    if (b->lex_len + lex_len > b->lex_cap) {
        size_t cap = b->lex_cap ? b->lex_cap * 2 : 4096;
        while (cap < b->lex_len + lex_len)
            cap *= 2;
        GROW(b->lex_buf, cap, 1);
        b->lex_cap = cap;
    }
    if (lex_len)
        memcpy(b->lex_buf + b->lex_len, lex, lex_len);
    size_t i = b->n_add++;
    b->add_labels[i] = label;
    b->add_version[i] = version;
    b->add_chunk[i] = chunk_no;
    b->add_acl[i] = acl;
    b->add_doc[i] = doc;
    b->add_kind[i] = (uint8_t)kind;
    if (vec)
        memcpy(b->add_vecs + i * dim, vec, dim * sizeof(float));
    else
        memset(b->add_vecs + i * dim, 0, dim * sizeof(float));
    b->add_lex_off[i] = b->lex_len;
    b->add_lex_len[i] = lex_len;
    b->lex_len += lex_len;
    return RAG_OK;
}

int rag_index__batch_remove(ix_batch *b, int64_t label)
{
    if (b->n_rm == b->cap_rm) {
        size_t cap = b->cap_rm ? b->cap_rm * 2 : 64;
        GROW(b->rm_labels, cap, sizeof(int64_t));
        b->cap_rm = cap;
    }
    b->rm_labels[b->n_rm++] = label;
    return RAG_OK;
}

int rag_index__batch_acl(ix_batch *b, uint32_t id, const char *const *principals, size_t n)
{
    if (b->n_acl == b->cap_acl) {
        size_t cap = b->cap_acl ? b->cap_acl * 2 : 8;
        GROW(b->acls, cap, sizeof(ix_acl_add));
        b->cap_acl = cap;
    }
    ix_acl_add *a = &b->acls[b->n_acl];
    a->id = id;
    a->n = 0;
    a->principals = calloc(n ? n : 1, sizeof(char *));
    if (!a->principals)
        return rag_error_set(RAG_ENOMEM, "index: batch ACL");
    b->n_acl++; /* counted now so that truncation frees partial copies */
    for (size_t i = 0; i < n; i++) {
        a->principals[i] = rag_strdup(principals[i]);
        if (!a->principals[i])
            return rag_error_set(RAG_ENOMEM, "index: batch ACL principal");
        a->n++;
    }
    return RAG_OK;
}

void rag_index__batch_drop_group(ix_batch *b, size_t g)
{
    /* Rows of group g lie between the end of group g-1 and its own end; later groups are
     * shifted down.  Only used for rare aborted nested txns, so a plain memmove is fine. */
    ix_group *gr = &b->groups[g];
    ix_mark start = {0, 0, 0, 0, 0, 0};
    if (g > 0) {
        start.n_add = b->groups[g - 1].add_end;
        start.n_rm = b->groups[g - 1].rm_end;
        start.n_acl = b->groups[g - 1].acl_end;
        start.n_docs = b->groups[g - 1].doc_end;
    }
    size_t da = gr->add_end - start.n_add, dr = gr->rm_end - start.n_rm;
    size_t dc = gr->acl_end - start.n_acl, dd = gr->doc_end - start.n_docs;
    for (size_t i = start.n_acl; i < gr->acl_end; i++)
        free_acl(&b->acls[i]);
    for (size_t i = start.n_docs; i < gr->doc_end; i++)
        free(b->docs[i]);
    size_t tail_add = b->n_add - gr->add_end;
#define SHIFT(arr, from, to, count)                                                        \
    do {                                                                                   \
        if (count)                                                                         \
            memmove(&(arr)[to], &(arr)[from], (count) * sizeof(arr)[0]);                   \
    } while (0)
    SHIFT(b->add_labels, gr->add_end, start.n_add, tail_add);
    SHIFT(b->add_version, gr->add_end, start.n_add, tail_add);
    SHIFT(b->add_chunk, gr->add_end, start.n_add, tail_add);
    SHIFT(b->add_acl, gr->add_end, start.n_add, tail_add);
    SHIFT(b->add_doc, gr->add_end, start.n_add, tail_add);
    SHIFT(b->add_kind, gr->add_end, start.n_add, tail_add);
    /* The rows stay in lex_buf (unreferenced) until the batch is freed. */
    SHIFT(b->add_lex_off, gr->add_end, start.n_add, tail_add);
    SHIFT(b->add_lex_len, gr->add_end, start.n_add, tail_add);
    for (size_t i = start.n_add; i < start.n_add + tail_add; i++)
        b->add_doc[i] -= (uint32_t)dd;
    if (tail_add)
        memmove(b->add_vecs + (size_t)start.n_add * b->dim,
                b->add_vecs + (size_t)gr->add_end * b->dim, tail_add * b->dim * sizeof(float));
    SHIFT(b->rm_labels, gr->rm_end, start.n_rm, b->n_rm - gr->rm_end);
    SHIFT(b->acls, gr->acl_end, start.n_acl, b->n_acl - gr->acl_end);
    SHIFT(b->docs, gr->doc_end, start.n_docs, b->n_docs - gr->doc_end);
#undef SHIFT
    b->n_add -= da;
    b->n_rm -= dr;
    b->n_acl -= dc;
    b->n_docs -= dd;
    for (size_t j = g + 1; j < b->n_groups; j++) {
        b->groups[j].add_end -= da;
        b->groups[j].rm_end -= dr;
        b->groups[j].acl_end -= dc;
        b->groups[j].doc_end -= dd;
        b->groups[j - 1] = b->groups[j];
    }
    b->n_groups--;
}

int rag_index__batch_group(ix_batch *b, uint64_t seq, uint64_t epoch, const char *msg_id)
{
    /* A nested txn aborted after its handler returned RAG_OK gives its seq back: the next
     * message reuses it, so any trailing group at or above `seq` never committed.  Its rows
     * lie before this message's rows, so both are moved as one suffix. */
    while (b->n_groups && b->groups[b->n_groups - 1].seq >= seq)
        rag_index__batch_drop_group(b, b->n_groups - 1);
    if (b->n_groups == b->cap_groups) {
        size_t cap = b->cap_groups ? b->cap_groups * 2 : 16;
        GROW(b->groups, cap, sizeof(ix_group));
        b->cap_groups = cap;
    }
    ix_group *g = &b->groups[b->n_groups++];
    g->seq = seq;
    g->epoch = epoch;
    snprintf(g->msg_id, sizeof g->msg_id, "%s", msg_id ? msg_id : "");
    g->add_end = b->n_add;
    g->rm_end = b->n_rm;
    g->acl_end = b->n_acl;
    g->doc_end = b->n_docs;
    return RAG_OK;
}
