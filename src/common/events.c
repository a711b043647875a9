/* Wire encoding of the inter-module events (see rag_events.h). A leading format byte lets
 * later releases add fields without misreading old messages still queued in a root. */
#include <stdlib.h>
#include <string.h>

#include "rag_events.h"

#define EV_FORMAT 1

static void put_acl(rag_wbuf *b, const char *const *acl, size_t n)
{
    rag_wbuf_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        rag_wbuf_cstr(b, acl[i]);
}

static int get_acl(rag_rbuf *r, const char ***acl, size_t *n)
{
    uint32_t cnt = rag_rbuf_u32(r);
    *acl = NULL;
    *n = 0;
    if (r->err || cnt > r->len)
        return RAG_ECORRUPT;
    if (cnt) {
        *acl = calloc(cnt, sizeof **acl);
        if (!*acl)
            return RAG_ENOMEM;
        for (uint32_t i = 0; i < cnt; i++)
            (*acl)[i] = rag_rbuf_str(r, NULL);
    }
    *n = cnt;
    return r->err ? RAG_ECORRUPT : RAG_OK;
}

static int check_format(rag_rbuf *r, const char *what)
{
    uint8_t f = rag_rbuf_u8(r);
    if (r->err || f != EV_FORMAT)
        return rag_error_set(RAG_ECORRUPT, "%s event: unknown format %u", what, f);
    return RAG_OK;
}

/* ---- trail ------------------------------------------------------------------------------ */

void rag_ev_trail_add(rag_ev_trail *t, const char *module, const char *event, uint64_t at_ms,
                      uint32_t attempts, int32_t code)
{
    if (t->count == RAG_EV_TRAIL_MAX) {
        /* keep the first hop (where the saga started) and drop the oldest after it */
        memmove(&t->hops[1], &t->hops[2], (RAG_EV_TRAIL_MAX - 2) * sizeof t->hops[0]);
        t->count--;
    }
    rag_ev_hop *h = &t->hops[t->count++];
    h->module = module ? module : "";
    h->event = event ? event : "";
    h->at_ms = at_ms;
    h->attempts = attempts;
    h->code = code;
}

static void put_trail(rag_wbuf *b, const rag_ev_trail *t)
{
    size_t n = t->count > RAG_EV_TRAIL_MAX ? RAG_EV_TRAIL_MAX : t->count;
    rag_wbuf_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        rag_wbuf_cstr(b, t->hops[i].module);
        rag_wbuf_cstr(b, t->hops[i].event);
        rag_wbuf_u64(b, t->hops[i].at_ms);
        rag_wbuf_u32(b, t->hops[i].attempts);
        rag_wbuf_u32(b, (uint32_t)t->hops[i].code);
    }
}

/* The trail is optional on the wire: nothing left after the fixed fields = no hops. */
static void get_trail(rag_rbuf *r, rag_ev_trail *t)
{
    t->count = 0;
    if (r->err || r->off >= r->len)
        return;
    uint32_t n = rag_rbuf_u32(r);
    if (n > RAG_EV_TRAIL_MAX) {
        r->err = RAG_ECORRUPT;
        return;
    }
    for (uint32_t i = 0; i < n && !r->err; i++) {
        rag_ev_hop *h = &t->hops[i];
        h->module = rag_rbuf_str(r, NULL);
        h->event = rag_rbuf_str(r, NULL);
        h->at_ms = rag_rbuf_u64(r);
        h->attempts = rag_rbuf_u32(r);
        h->code = (int32_t)rag_rbuf_u32(r);
    }
    if (!r->err)
        t->count = n;
}

int rag_ev_chunked_encode(const rag_ev_chunked *ev, rag_wbuf *b)
{
    rag_wbuf_u8(b, EV_FORMAT);
    rag_wbuf_cstr(b, ev->doc_id);
    rag_wbuf_u64(b, ev->version);
    rag_wbuf_cstr(b, ev->title);
    rag_wbuf_cstr(b, ev->uri);
    put_acl(b, ev->acl, ev->acl_count);
    rag_wbuf_u32(b, (uint32_t)ev->chunk_count);
    for (size_t i = 0; i < ev->chunk_count; i++) {
        const rag_ev_chunk *c = &ev->chunks[i];
        rag_wbuf_u32(b, c->chunk_no);
        rag_wbuf_bytes(b, c->hash, 16);
        rag_wbuf_str(b, c->text, c->text_len);
    }
    put_trail(b, &ev->trail);
    rag_wbuf_u32(b, ev->flags);
    return b->err ? rag_error_set(b->err, "encoding doc.chunked") : RAG_OK;
}

int rag_ev_chunked_decode(const void *data, size_t len, rag_ev_chunked *ev)
{
    rag_rbuf r;
    memset(ev, 0, sizeof *ev);
    rag_rbuf_init(&r, data, len);
    int rc = check_format(&r, "doc.chunked");
    if (rc)
        return rc;
    ev->doc_id = rag_rbuf_str(&r, NULL);
    ev->version = rag_rbuf_u64(&r);
    ev->title = rag_rbuf_str(&r, NULL);
    ev->uri = rag_rbuf_str(&r, NULL);
    rc = get_acl(&r, &ev->acl, &ev->acl_count);
    if (rc)
        goto fail;
    uint32_t n = rag_rbuf_u32(&r);
    if (r.err || n > len) {
        rc = RAG_ECORRUPT;
        goto fail;
    }
    if (n) {
        ev->chunks = calloc(n, sizeof *ev->chunks);
        if (!ev->chunks) {
            rc = RAG_ENOMEM;
            goto fail;
        }
    }
    for (uint32_t i = 0; i < n && !r.err; i++) {
        rag_ev_chunk *c = &ev->chunks[i];
        c->chunk_no = rag_rbuf_u32(&r);
        const void *h = rag_rbuf_bytes(&r, 16);
        if (h)
            memcpy(c->hash, h, 16);
        c->text = rag_rbuf_str(&r, &c->text_len);
    }
    ev->chunk_count = n;
    get_trail(&r, &ev->trail);
    /* flags came later: messages written before end after the trail (flags 0) */
    if (!r.err && r.len - r.off >= 4)
        ev->flags = rag_rbuf_u32(&r);
    if (r.err) {
        rc = RAG_ECORRUPT;
        goto fail;
    }
    return RAG_OK;
fail:
    rag_ev_chunked_clear(ev);
    return rag_error_set(rc, "decoding doc.chunked failed");
}

void rag_ev_chunked_clear(rag_ev_chunked *ev)
{
    free(ev->acl);
    free(ev->chunks);
    memset(ev, 0, sizeof *ev);
}

/* doc.embedded format 2 adds the document title (for the index's lexical side) after the ACL;
 * format 1 messages, still queued in older roots, decode with an empty title. */
#define EV_EMBEDDED_FORMAT 2

int rag_ev_embedded_encode(const rag_ev_embedded *ev, rag_wbuf *b)
{
    rag_wbuf_u8(b, EV_EMBEDDED_FORMAT);
    rag_wbuf_cstr(b, ev->doc_id);
    rag_wbuf_u64(b, ev->version);
    put_acl(b, ev->acl, ev->acl_count);
    rag_wbuf_cstr(b, ev->title ? ev->title : "");
    rag_wbuf_u32(b, ev->dim);
    rag_wbuf_u32(b, (uint32_t)ev->vector_count);
    for (size_t i = 0; i < ev->vector_count; i++) {
        const rag_ev_vector *v = &ev->vectors[i];
        rag_wbuf_u32(b, v->chunk_no);
        rag_wbuf_bytes(b, v->hash, 16);
        rag_wbuf_str(b, v->text, v->text_len);
        rag_wbuf_f32s(b, v->vector, ev->dim);
    }
    put_trail(b, &ev->trail);
    rag_wbuf_u64(b, ev->model_gen);
    rag_wbuf_u32(b, ev->flags);
    return b->err ? rag_error_set(b->err, "encoding doc.embedded") : RAG_OK;
}

int rag_ev_embedded_decode(const void *data, size_t len, rag_ev_embedded *ev)
{
    rag_rbuf r;
    memset(ev, 0, sizeof *ev);
    rag_rbuf_init(&r, data, len);
    uint8_t format = rag_rbuf_u8(&r);
    if (r.err || (format != EV_FORMAT && format != EV_EMBEDDED_FORMAT))
        return rag_error_set(RAG_ECORRUPT, "doc.embedded event: unknown format %u", format);
    ev->doc_id = rag_rbuf_str(&r, NULL);
    ev->version = rag_rbuf_u64(&r);
    int rc = get_acl(&r, &ev->acl, &ev->acl_count);
    if (rc)
        goto fail;
    ev->title = format >= EV_EMBEDDED_FORMAT ? rag_rbuf_str(&r, NULL) : "";
    ev->dim = rag_rbuf_u32(&r);
    uint32_t n = rag_rbuf_u32(&r);
    if (r.err || ev->dim == 0 || ev->dim > 65536 || n > len) {
        rc = RAG_ECORRUPT;
        goto fail;
    }
    if (n) {
        ev->vectors = calloc(n, sizeof *ev->vectors);
        if (!ev->vectors) {
            rc = RAG_ENOMEM;
            goto fail;
        }
    }
    ev->vector_count = n;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        rag_ev_vector *v = &ev->vectors[i];
        v->chunk_no = rag_rbuf_u32(&r);
        const void *h = rag_rbuf_bytes(&r, 16);
        if (h)
            memcpy(v->hash, h, 16);
        v->text = rag_rbuf_str(&r, &v->text_len);
        if (r.err)
            break;
        v->vector = malloc((size_t)ev->dim * sizeof(float));
        if (!v->vector) {
            rc = RAG_ENOMEM;
            goto fail;
        }
        rag_rbuf_f32s(&r, v->vector, ev->dim);
    }
    get_trail(&r, &ev->trail);
    /* model generation and flags came later: older messages decode with 0 (generation 0 is
     * the model a root had before its first re-embed) */
    if (!r.err && r.len - r.off >= 12) {
        ev->model_gen = rag_rbuf_u64(&r);
        ev->flags = rag_rbuf_u32(&r);
    }
    if (r.err) {
        rc = RAG_ECORRUPT;
        goto fail;
    }
    return RAG_OK;
fail:
    rag_ev_embedded_clear(ev);
    return rag_error_set(rc, "decoding doc.embedded failed");
}

void rag_ev_embedded_clear(rag_ev_embedded *ev)
{
    for (size_t i = 0; i < ev->vector_count; i++)
        free(ev->vectors[i].vector);
    free(ev->vectors);
    free(ev->acl);
    memset(ev, 0, sizeof *ev);
}

int rag_ev_deleted_encode(const rag_ev_deleted *ev, rag_wbuf *b)
{
    rag_wbuf_u8(b, EV_FORMAT);
    rag_wbuf_cstr(b, ev->doc_id);
    rag_wbuf_u64(b, ev->version);
    put_trail(b, &ev->trail);
    return b->err ? rag_error_set(b->err, "encoding doc.deleted") : RAG_OK;
}

int rag_ev_deleted_decode(const void *data, size_t len, rag_ev_deleted *ev)
{
    rag_rbuf r;
    memset(ev, 0, sizeof *ev);
    rag_rbuf_init(&r, data, len);
    int rc = check_format(&r, "doc.deleted");
    if (rc)
        return rc;
    ev->doc_id = rag_rbuf_str(&r, NULL);
    ev->version = rag_rbuf_u64(&r);
    get_trail(&r, &ev->trail);
    return r.err ? rag_error_set(RAG_ECORRUPT, "decoding doc.deleted failed") : RAG_OK;
}

int rag_ev_indexed_encode(const rag_ev_indexed *ev, rag_wbuf *b)
{
    rag_wbuf_u8(b, EV_FORMAT);
    rag_wbuf_cstr(b, ev->doc_id);
    rag_wbuf_u64(b, ev->version);
    rag_wbuf_u32(b, ev->status);
    rag_wbuf_u32(b, ev->vector_count);
    put_trail(b, &ev->trail);
    rag_wbuf_u32(b, ev->flags);
    return b->err ? rag_error_set(b->err, "encoding doc.indexed") : RAG_OK;
}

int rag_ev_indexed_decode(const void *data, size_t len, rag_ev_indexed *ev)
{
    rag_rbuf r;
    memset(ev, 0, sizeof *ev);
    rag_rbuf_init(&r, data, len);
    int rc = check_format(&r, "doc.indexed");
    if (rc)
        return rc;
    ev->doc_id = rag_rbuf_str(&r, NULL);
    ev->version = rag_rbuf_u64(&r);
    ev->status = rag_rbuf_u32(&r);
    ev->vector_count = rag_rbuf_u32(&r);
    get_trail(&r, &ev->trail);
    if (!r.err && r.len - r.off >= 4)
        ev->flags = rag_rbuf_u32(&r);
    return r.err ? rag_error_set(RAG_ECORRUPT, "decoding doc.indexed failed") : RAG_OK;
}

int rag_ev_failed_encode(const rag_ev_failed *ev, rag_wbuf *b)
{
    rag_wbuf_u8(b, EV_FORMAT);
    rag_wbuf_cstr(b, ev->doc_id);
    rag_wbuf_u64(b, ev->version);
    rag_wbuf_cstr(b, ev->stage ? ev->stage : "");
    rag_wbuf_u32(b, (uint32_t)ev->code);
    rag_wbuf_cstr(b, ev->reason ? ev->reason : "");
    put_trail(b, &ev->trail);
    return b->err ? rag_error_set(b->err, "encoding doc.failed") : RAG_OK;
}

int rag_ev_failed_decode(const void *data, size_t len, rag_ev_failed *ev)
{
    rag_rbuf r;
    memset(ev, 0, sizeof *ev);
    rag_rbuf_init(&r, data, len);
    int rc = check_format(&r, "doc.failed");
    if (rc)
        return rc;
    ev->doc_id = rag_rbuf_str(&r, NULL);
    ev->version = rag_rbuf_u64(&r);
    ev->stage = rag_rbuf_str(&r, NULL);
    ev->code = (int32_t)rag_rbuf_u32(&r);
    ev->reason = rag_rbuf_str(&r, NULL);
    get_trail(&r, &ev->trail);
    return r.err ? rag_error_set(RAG_ECORRUPT, "decoding doc.failed failed") : RAG_OK;
}

int rag_ev_revert_encode(const rag_ev_revert *ev, rag_wbuf *b)
{
    rag_wbuf_u8(b, EV_FORMAT);
    rag_wbuf_cstr(b, ev->doc_id);
    rag_wbuf_u64(b, ev->version);
    put_trail(b, &ev->trail);
    return b->err ? rag_error_set(b->err, "encoding doc.revert") : RAG_OK;
}

int rag_ev_revert_decode(const void *data, size_t len, rag_ev_revert *ev)
{
    rag_rbuf r;
    memset(ev, 0, sizeof *ev);
    rag_rbuf_init(&r, data, len);
    int rc = check_format(&r, "doc.revert");
    if (rc)
        return rc;
    ev->doc_id = rag_rbuf_str(&r, NULL);
    ev->version = rag_rbuf_u64(&r);
    get_trail(&r, &ev->trail);
    return r.err ? rag_error_set(RAG_ECORRUPT, "decoding doc.revert failed") : RAG_OK;
}

int rag_ev_peek(const char *topic, const void *data, size_t len, const char **doc_id,
                uint64_t *version)
{
    /* every event starts with the format byte, the document id and the version */
    (void)topic;
    rag_rbuf r;
    rag_rbuf_init(&r, data, len);
    uint8_t format = rag_rbuf_u8(&r);
    if (r.err || (format != EV_FORMAT && format != EV_EMBEDDED_FORMAT))
        return rag_error_set(RAG_ECORRUPT, "%s: unknown event format %u",
                             topic ? topic : "event", format);
    const char *id = rag_rbuf_str(&r, NULL);
    uint64_t v = rag_rbuf_u64(&r);
    if (r.err || !*id)
        return rag_error_set(RAG_ECORRUPT, "%s: no document id", topic ? topic : "event");
    if (doc_id)
        *doc_id = id;
    if (version)
        *version = v;
    return RAG_OK;
}
