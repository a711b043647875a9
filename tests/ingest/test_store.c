/* The ingest store: put (batch, versions, errors, idempotency), delete, the reader, the
 * events in the outbox, counters, and the doc.indexed consumer that frees old versions. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ingest_internal.h"
#include "rag_common.h"
#include "rag_events.h"
#include "rag_ingest_api.h"
#include "rag_queue.h"
#include "test_support.h"

#define OK(expr)                                                                             \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != RAG_OK)                                                                   \
            fail_msg("%s -> %d (%s): %s", #expr, rc_, rag_strerror(rc_), rag_error_last()); \
    } while (0)

typedef struct fixture {
    char *root;
    rag_config cfg;
    rag_ingest *ig;
} fixture;

static void open_cfg(fixture *f, size_t max_doc_bytes)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 256;
    o.max_doc_bytes = max_doc_bytes;
    OK(rag_config_init(&f->cfg, f->root, &o));
    OK(rag_ingest_open(&f->ig, &f->cfg));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("ingest-store");
    open_cfg(f, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_ingest_close(f->ig);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static rag_doc mkdoc(const char *id, const char *text)
{
    rag_doc d;
    memset(&d, 0, sizeof d);
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    return d;
}

static uint64_t put1(rag_ingest *ig, const rag_doc *d, int expect)
{
    rag_put_result r = {-999, 0};
    OK(rag_ingest_put_batch(ig, d, 1, &r));
    if (r.code != expect)
        fail_msg("put '%s': code %d (%s), expected %d; detail: %s", d->id, r.code,
                 rag_strerror(r.code), expect, rag_error_last());
    if (expect == RAG_OK)
        assert_true(r.version > 0);
    return r.version;
}

static void stats_are(rag_ingest *ig, uint64_t docs, uint64_t versions, uint64_t chunks)
{
    rag_ingest_stats s;
    OK(rag_ingest_stats_get(ig, &s));
    if (s.documents != docs || s.versions != versions || (chunks != (uint64_t)-1 && s.chunks != chunks))
        fail_msg("stats: %llu docs %llu versions %llu chunks; expected %llu %llu %llu",
                 (unsigned long long)s.documents, (unsigned long long)s.versions,
                 (unsigned long long)s.chunks, (unsigned long long)docs,
                 (unsigned long long)versions, (unsigned long long)chunks);
}

/* Reader helpers (each call in its own snapshot). */
static int chunk_text(rag_ingest *ig, const char *id, uint64_t v, uint32_t c, char **out)
{
    const rag_ingest_reader *r = rag_ingest_reader_get(ig);
    void *t;
    OK(r->begin(r->self, &t));
    const char *text = NULL;
    size_t len = 0;
    int rc = r->chunk_text(r->self, t, id, v, c, &text, &len);
    if (rc == RAG_OK && out) {
        assert_int_equal(strlen(text), len);
        *out = rag_strndup(text, len);
    }
    r->end(r->self, t);
    return rc;
}

typedef struct info {
    uint64_t latest;
    int deleted;
    char title[512], uri[512];
} info;

static int doc_info(rag_ingest *ig, const char *id, info *out)
{
    const rag_ingest_reader *r = rag_ingest_reader_get(ig);
    assert_int_equal(r->version, RAG_READER_VERSION);
    void *t;
    OK(r->begin(r->self, &t));
    rag_doc_view v;
    int rc = r->doc_info(r->self, t, id, &v);
    if (rc == RAG_OK) {
        out->latest = v.latest_version;
        out->deleted = v.deleted;
        snprintf(out->title, sizeof out->title, "%s", v.title);
        snprintf(out->uri, sizeof out->uri, "%s", v.uri);
    }
    r->end(r->self, t);
    return rc;
}

/* ---- put, versions, reader ------------------------------------------------------------ */

static void test_put_versions_reader(void **state)
{
    fixture *f = *state;
    rag_doc d = mkdoc("guide.md", "# Getting started\n\nInstall the library. Then run it.\n");
    d.uri = "https://example.org/guide";
    const char *acl[] = {"alice", "group:eng"};
    d.acl = acl;
    d.acl_count = 2;
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    stats_are(f->ig, 1, 1, 1);

    info in;
    OK(doc_info(f->ig, "guide.md", &in));
    assert_int_equal(in.latest, 1);
    assert_int_equal(in.deleted, 0);
    assert_string_equal(in.title, "Getting started");
    assert_string_equal(in.uri, "https://example.org/guide");
    char *t = NULL;
    OK(chunk_text(f->ig, "guide.md", 1, 0, &t));
    assert_string_equal(t, "Getting started\n\nInstall the library. Then run it.");
    free(t);
    assert_int_equal(chunk_text(f->ig, "guide.md", 1, 1, NULL), RAG_ENOTFOUND);
    assert_int_equal(chunk_text(f->ig, "guide.md", 2, 0, NULL), RAG_ENOTFOUND);
    assert_int_equal(chunk_text(f->ig, "nope", 1, 0, NULL), RAG_ENOTFOUND);
    assert_int_equal(doc_info(f->ig, "nope", &in), RAG_ENOTFOUND);

    /* a new version: numbers increase, the title follows the latest version */
    d = mkdoc("guide.md", "Plain first line\nmore text here.\n\nSecond paragraph.");
    d.mime = "text/plain";
    assert_int_equal(put1(f->ig, &d, RAG_OK), 2);
    OK(doc_info(f->ig, "guide.md", &in));
    assert_int_equal(in.latest, 2);
    assert_string_equal(in.title, "Plain first line");
    assert_string_equal(in.uri, "");
    stats_are(f->ig, 1, 2, 2);
    /* both versions readable until the index confirms the switch */
    OK(chunk_text(f->ig, "guide.md", 1, 0, NULL));
    OK(chunk_text(f->ig, "guide.md", 2, 0, NULL));

    /* caller's title wins (and is stored NFC); HTML title from <title> */
    d = mkdoc("page", "<html><head><title>Page  title</title></head><body><h1>H</h1>"
                      "<p>Body.</p></body></html>");
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    OK(doc_info(f->ig, "page", &in));
    assert_string_equal(in.title, "Page title");
    d.title = "Cafe\xCC\x81";
    assert_int_equal(put1(f->ig, &d, RAG_OK), 2);
    OK(doc_info(f->ig, "page", &in));
    assert_string_equal(in.title, "Caf\xC3\xA9");
    stats_are(f->ig, 2, 4, (uint64_t)-1);

    /* durable across close/open, numbering continues */
    rag_ingest_close(f->ig);
    f->ig = NULL;
    OK(rag_ingest_open(&f->ig, &f->cfg));
    stats_are(f->ig, 2, 4, (uint64_t)-1);
    d = mkdoc("guide.md", "Third version.");
    assert_int_equal(put1(f->ig, &d, RAG_OK), 3);
}

static void test_batch_partial_failure(void **state)
{
    fixture *f = *state;
    rag_doc docs[5] = {mkdoc("a", "Alpha text."), mkdoc("b", "bad \xC0\x80 bytes"),
                       mkdoc("c", "Gamma text."), mkdoc("", "no id"), mkdoc("a", "Alpha v2.")};
    rag_put_result res[5];
    OK(rag_ingest_put_batch(f->ig, docs, 5, res));
    assert_int_equal(res[0].code, RAG_OK);
    assert_int_equal(res[0].version, 1);
    assert_int_equal(res[1].code, RAG_EUTF8);
    assert_int_equal(res[2].code, RAG_OK);
    assert_int_equal(res[3].code, RAG_EINVAL);
    assert_int_equal(res[4].code, RAG_OK);
    assert_int_equal(res[4].version, 2); /* same id twice in a batch: two versions */
    /* rag_error_last() names the first failure */
    assert_non_null(strstr(rag_error_last(), "byte offset 4"));
    info in;
    assert_int_equal(doc_info(f->ig, "b", &in), RAG_ENOTFOUND);
    OK(doc_info(f->ig, "c", &in));
    stats_are(f->ig, 2, 3, 3);
    uint64_t pending = 0;
    OK(rag_outbox_pending(rag_ingest_outbox(f->ig), &pending));
    assert_int_equal(pending, 3); /* one doc.chunked per stored version, none for failures */
    OK(rag_ingest_put_batch(f->ig, NULL, 0, NULL));
}

/* ---- validation ----------------------------------------------------------------------- */

static void expect_utf8(rag_ingest *ig, const char *bytes, size_t len, size_t offset)
{
    rag_doc d = mkdoc("u", "");
    d.data = bytes;
    d.size = len;
    d.mime = "text/plain";
    rag_put_result r;
    OK(rag_ingest_put_batch(ig, &d, 1, &r));
    assert_int_equal(r.code, RAG_EUTF8);
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu", offset);
    if (!strstr(rag_error_last(), want))
        fail_msg("detail '%s' lacks '%s'", rag_error_last(), want);
}

static void test_utf8_errors_and_repair(void **state)
{
    fixture *f = *state;
    expect_utf8(f->ig, "ab\xC0\x80z", 5, 2);      /* overlong NUL */
    expect_utf8(f->ig, "abc\xED\xA0\x80z", 7, 3); /* surrogate U+D800 */
    expect_utf8(f->ig, "\xF5\x80\x80\x80", 4, 0); /* beyond U+10FFFF */
    expect_utf8(f->ig, "text \xE2\x82", 7, 5);    /* truncated euro sign */
    info in;
    assert_int_equal(doc_info(f->ig, "u", &in), RAG_ENOTFOUND);
    stats_are(f->ig, 0, 0, 0);

    /* repair: each maximal ill-formed subpart becomes one U+FFFD (C0 and 80 are two: C0 can
     * never start a sequence; the truncated E2 82 is one) */
    rag_doc d = mkdoc("r", "ok \xC0\x80 and \xE2\x82");
    d.flags = RAG_PUT_REPAIR_UTF8;
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    char *t = NULL;
    OK(chunk_text(f->ig, "r", 1, 0, &t));
    assert_string_equal(t, "ok \xEF\xBF\xBD\xEF\xBF\xBD and \xEF\xBF\xBD");
    free(t);

    /* NFC: e + combining acute is stored precomposed */
    d = mkdoc("nfc", "Cafe\xCC\x81 au lait.");
    put1(f->ig, &d, RAG_OK);
    OK(chunk_text(f->ig, "nfc", 1, 0, &t));
    assert_string_equal(t, "Caf\xC3\xA9 au lait.");
    free(t);

    /* invalid UTF-8 in the title is an error too (or repaired) */
    d = mkdoc("tt", "body");
    d.title = "bad \xFF title";
    put1(f->ig, &d, RAG_EUTF8);
    d.flags = RAG_PUT_REPAIR_UTF8;
    put1(f->ig, &d, RAG_OK);
    OK(doc_info(f->ig, "tt", &in));
    assert_string_equal(in.title, "bad \xEF\xBF\xBD title");
}

static void test_validation(void **state)
{
    fixture *f = *state;
    rag_ingest_close(f->ig);
    open_cfg(f, 4096); /* max_doc_bytes = 4 KiB */
    char *big = malloc(5000);
    memset(big, 'a', 4999);
    big[4999] = 0;
    rag_doc d = mkdoc("big", big);
    put1(f->ig, &d, RAG_ETOOBIG);
    assert_non_null(strstr(rag_error_last(), "max_doc_bytes"));
    /* the size check comes before anything else: invalid UTF-8 over the limit is TOOBIG */
    big[10] = (char)0xFF;
    put1(f->ig, &d, RAG_ETOOBIG);
    free(big);

    d = mkdoc("empty", "  \n\t\n ");
    put1(f->ig, &d, RAG_EEMPTY);
    d = mkdoc("empty-html", "<html><body><script>only()</script></body></html>");
    put1(f->ig, &d, RAG_EEMPTY);
    d = mkdoc("zero", "");
    put1(f->ig, &d, RAG_EEMPTY);
    d = mkdoc("pdf", "%PDF-1.4 junk");
    d.mime = "application/pdf";
    put1(f->ig, &d, RAG_EUNSUPPORTED);
    d.mime = NULL;
    put1(f->ig, &d, RAG_EUNSUPPORTED);

    char longid[RAG_DOC_ID_MAX + 2];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    d = mkdoc(longid, "text");
    put1(f->ig, &d, RAG_EINVAL);
    d = mkdoc("bad\xFFid", "text");
    put1(f->ig, &d, RAG_EINVAL);
    d = mkdoc("acl", "text");
    const char *acl[] = {""};
    d.acl = acl;
    d.acl_count = 1;
    put1(f->ig, &d, RAG_EINVAL);
    d = mkdoc("title", "text");
    char *longtitle = malloc(5000);
    memset(longtitle, 't', 4999);
    longtitle[4999] = 0;
    d.title = longtitle;
    put1(f->ig, &d, RAG_EINVAL);
    free(longtitle);
    d = mkdoc("uri", "text");
    d.uri = "bad \xC3 uri";
    put1(f->ig, &d, RAG_EUTF8);
    d = mkdoc("key", "text");
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    d.idempotency_key = longkey;
    put1(f->ig, &d, RAG_EINVAL);
    stats_are(f->ig, 0, 0, 0);
    assert_int_equal(rag_ingest_put_batch(NULL, &d, 1, NULL), RAG_EINVAL);
}

/* ---- idempotency ---------------------------------------------------------------------- */

static void test_idempotency(void **state)
{
    fixture *f = *state;
    rag_doc d = mkdoc("doc", "First payload.");
    d.idempotency_key = "req-1";
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    uint64_t pending0 = 0, pending = 0;
    OK(rag_outbox_pending(rag_ingest_outbox(f->ig), &pending0));
    /* same key, same bytes: the first result, no new work */
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    OK(rag_outbox_pending(rag_ingest_outbox(f->ig), &pending));
    assert_int_equal(pending, pending0);
    stats_are(f->ig, 1, 1, 1);
    info in;
    OK(doc_info(f->ig, "doc", &in));
    assert_int_equal(in.latest, 1);

    /* same key, other bytes (or other id): refused */
    rag_doc other = mkdoc("doc", "Second payload.");
    other.idempotency_key = "req-1";
    put1(f->ig, &other, RAG_EIDEMPOTENCY);
    other = mkdoc("doc2", "First payload.");
    other.idempotency_key = "req-1";
    put1(f->ig, &other, RAG_EIDEMPOTENCY);

    /* a new key is a new request */
    d.idempotency_key = "req-2";
    assert_int_equal(put1(f->ig, &d, RAG_OK), 2);
    /* a repeat inside one batch returns the first version too */
    rag_doc two[2] = {mkdoc("doc", "Batch payload."), mkdoc("doc", "Batch payload.")};
    two[0].idempotency_key = two[1].idempotency_key = "req-3";
    rag_put_result res[2];
    OK(rag_ingest_put_batch(f->ig, two, 2, res));
    assert_int_equal(res[0].code, RAG_OK);
    assert_int_equal(res[1].code, RAG_OK);
    assert_int_equal(res[0].version, 3);
    assert_int_equal(res[1].version, 3);
    /* the key survives a reopen */
    rag_ingest_close(f->ig);
    OK(rag_ingest_open(&f->ig, &f->cfg));
    d.idempotency_key = "req-1";
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    stats_are(f->ig, 1, 3, 3);
}

/* Keys are kept idempotency_ttl (24 h by default; configurable), then the key is free. */
static void test_idempotency_ttl(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->cfg.idempotency_ttl_ms, 24ull * 3600 * 1000);
    rag_ingest_close(f->ig);
    f->cfg.idempotency_ttl_ms = 100;
    OK(rag_ingest_open(&f->ig, &f->cfg));
    rag_doc d = mkdoc("doc", "First payload.");
    d.idempotency_key = "req-ttl";
    assert_int_equal(put1(f->ig, &d, RAG_OK), 1);
    rag_doc other = mkdoc("doc", "Second payload.");
    other.idempotency_key = "req-ttl";
    put1(f->ig, &other, RAG_EIDEMPOTENCY); /* within the retention: refused */
    struct timespec ts = {0, 250 * 1000000L};
    nanosleep(&ts, NULL);
    /* expired: a new request under the same key */
    assert_int_equal(put1(f->ig, &other, RAG_OK), 2);
    assert_int_equal(put1(f->ig, &other, RAG_OK), 2); /* and now remembered again */
    put1(f->ig, &d, RAG_EIDEMPOTENCY);
}

/* ---- delete --------------------------------------------------------------------------- */

static void test_delete(void **state)
{
    fixture *f = *state;
    rag_doc d = mkdoc("d1", "Some text to delete.");
    put1(f->ig, &d, RAG_OK);
    put1(f->ig, &d, RAG_OK);
    stats_are(f->ig, 1, 2, 2);
    OK(rag_ingest_delete(f->ig, "d1"));
    info in;
    OK(doc_info(f->ig, "d1", &in)); /* visible at once as a tombstone */
    assert_int_equal(in.deleted, 1);
    assert_int_equal(in.latest, 2);
    stats_are(f->ig, 0, 2, 2); /* data stays until the index confirms */
    assert_int_equal(rag_ingest_delete(f->ig, "d1"), RAG_ENOTFOUND);
    assert_int_equal(rag_ingest_delete(f->ig, "never"), RAG_ENOTFOUND);
    assert_int_equal(rag_ingest_delete(f->ig, ""), RAG_EINVAL);
    /* a new put after the delete revives the id with the next number */
    assert_int_equal(put1(f->ig, &d, RAG_OK), 3);
    OK(doc_info(f->ig, "d1", &in));
    assert_int_equal(in.deleted, 0);
    assert_int_equal(in.latest, 3);
    stats_are(f->ig, 1, 3, 3);
}

/* ---- events --------------------------------------------------------------------------- */

static void test_events(void **state)
{
    fixture *f = *state;
    rag_doc d = mkdoc("ev", "# Title\n\nParagraph one is here.\n\nParagraph two is here too.\n");
    const char *acl[] = {"bob"};
    d.acl = acl;
    d.acl_count = 1;
    d.uri = "file:///ev.md";
    put1(f->ig, &d, RAG_OK);
    OK(rag_ingest_delete(f->ig, "ev"));

    rag_queue_transport *t = NULL;
    OK(rag_queue_lmdb_transport_new(&t, &f->cfg));
    size_t moved = 0;
    OK(rag_outbox_relay(rag_ingest_outbox(f->ig), t, 0, &moved));
    assert_int_equal(moved, 2);

    rag_queue_message m[4];
    size_t n = 0;
    OK(t->fetch(t->state, RAG_TOPIC_CHUNKED, 4, 10000, m, &n));
    assert_int_equal(n, 1);
    assert_non_null(strstr(m[0].id, "ingest-"));
    rag_ev_chunked ev;
    OK(rag_ev_chunked_decode(m[0].data, m[0].size, &ev));
    assert_string_equal(ev.doc_id, "ev");
    assert_int_equal(ev.version, 1);
    assert_string_equal(ev.title, "Title");
    assert_string_equal(ev.uri, "file:///ev.md");
    assert_int_equal(ev.acl_count, 1);
    assert_string_equal(ev.acl[0], "bob");
    assert_true(ev.chunk_count >= 1);
    for (size_t i = 0; i < ev.chunk_count; i++) {
        uint8_t h[16];
        rag_hash128(ev.chunks[i].text, ev.chunks[i].text_len, h);
        assert_memory_equal(h, ev.chunks[i].hash, 16);
        assert_int_equal(ev.chunks[i].chunk_no, i);
        char *stored = NULL;
        OK(chunk_text(f->ig, "ev", 1, (uint32_t)i, &stored));
        assert_string_equal(stored, ev.chunks[i].text);
        free(stored);
    }
    rag_ev_chunked_clear(&ev);
    OK(t->ack(t->state, m, n));
    t->release(t->state, m, n);

    OK(t->fetch(t->state, RAG_TOPIC_DELETED, 4, 10000, m, &n));
    assert_int_equal(n, 1);
    rag_ev_deleted del;
    OK(rag_ev_deleted_decode(m[0].data, m[0].size, &del));
    assert_string_equal(del.doc_id, "ev");
    assert_int_equal(del.version, 1);
    OK(t->ack(t->state, m, n));
    t->release(t->state, m, n);
    t->free(t->state);
    free(t);
}

/* ---- doc.indexed consumer ------------------------------------------------------------- */

static int deliver(fixture *f, const char *id, uint64_t version, uint32_t status)
{
    rag_ev_indexed ev = {.doc_id = id, .version = version, .status = status, .vector_count = 1};
    rag_wbuf b;
    rag_wbuf_init(&b);
    OK(rag_ev_indexed_encode(&ev, &b));
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    strcpy(m.topic, RAG_TOPIC_INDEXED);
    strcpy(m.id, "index-test");
    m.data = b.data;
    m.size = b.len;
    m.attempts = 1;
    rag_consumer *c = rag_ingest_consumer(f->ig);
    assert_string_equal(c->topic, RAG_TOPIC_INDEXED);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_ingest_env(f->ig), NULL, 0, &txn), 0);
    int rc = c->handle(c->self, txn, &m);
    if (rc == RAG_OK)
        assert_int_equal(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
    rag_wbuf_free(&b);
    return rc;
}

static int stored(fixture *f, const char *id, uint64_t v)
{
    return chunk_text(f->ig, id, v, 0, NULL) == RAG_OK;
}

static void test_indexed_gc(void **state)
{
    fixture *f = *state;
    /* a long document: several chunks per version */
    char *text = malloc(20000);
    size_t w = 0;
    for (int i = 0; w < 15000; i++)
        w += (size_t)sprintf(text + w, "Sentence number %d talks about item %d. %s", i, i * 7,
                             i % 5 == 4 ? "\n\n" : "");
    rag_doc d = mkdoc("A", text);
    for (int v = 1; v <= 3; v++)
        assert_int_equal(put1(f->ig, &d, RAG_OK), (uint64_t)v);
    rag_doc b = mkdoc("B", "Another document.");
    put1(f->ig, &b, RAG_OK);
    rag_ingest_stats s0;
    OK(rag_ingest_stats_get(f->ig, &s0));
    uint64_t per = (s0.chunks - 1) / 3;
    assert_true(per > 5);
    stats_are(f->ig, 2, 4, 3 * per + 1);

    /* ACTIVE(2): v1 freed, v2 and v3 kept */
    OK(deliver(f, "A", 2, RAG_INDEXED_ACTIVE));
    assert_false(stored(f, "A", 1));
    assert_true(stored(f, "A", 2));
    assert_true(stored(f, "A", 3));
    stats_are(f->ig, 2, 3, 2 * per + 1);
    /* idempotent: again, and a stale SUPERSEDED for the freed version */
    OK(deliver(f, "A", 2, RAG_INDEXED_ACTIVE));
    OK(deliver(f, "A", 1, RAG_INDEXED_SUPERSEDED));
    stats_are(f->ig, 2, 3, 2 * per + 1);
    /* SUPERSEDED of the active version keeps it */
    OK(deliver(f, "A", 2, RAG_INDEXED_SUPERSEDED));
    assert_true(stored(f, "A", 2));
    /* ACTIVE(3): v2 freed; an old ACTIVE(2) arriving late changes nothing */
    OK(deliver(f, "A", 3, RAG_INDEXED_ACTIVE));
    OK(deliver(f, "A", 2, RAG_INDEXED_ACTIVE));
    assert_false(stored(f, "A", 2));
    assert_true(stored(f, "A", 3));
    stats_are(f->ig, 2, 2, per + 1);
    /* v4 put, then v5; index sees v5 first: ACTIVE(5) frees v3 and v4; SUPERSEDED(4) no-op */
    put1(f->ig, &d, RAG_OK);
    put1(f->ig, &d, RAG_OK);
    OK(deliver(f, "A", 5, RAG_INDEXED_ACTIVE));
    OK(deliver(f, "A", 4, RAG_INDEXED_SUPERSEDED));
    assert_false(stored(f, "A", 3));
    assert_false(stored(f, "A", 4));
    assert_true(stored(f, "A", 5));
    stats_are(f->ig, 2, 2, per + 1);

    /* delete: tombstone now, data freed once the index confirms */
    OK(rag_ingest_delete(f->ig, "A"));
    assert_true(stored(f, "A", 5));
    OK(deliver(f, "A", 5, RAG_INDEXED_DELETED));
    assert_false(stored(f, "A", 5));
    stats_are(f->ig, 1, 1, 1);
    info in;
    OK(doc_info(f->ig, "A", &in));
    assert_int_equal(in.deleted, 1);
    assert_int_equal(in.latest, 5);
    OK(deliver(f, "A", 5, RAG_INDEXED_DELETED)); /* idempotent */
    /* the numbers keep increasing after a purge */
    assert_int_equal(put1(f->ig, &d, RAG_OK), 6);
    /* a late DELETED for the old delete keeps the re-put version */
    OK(deliver(f, "A", 5, RAG_INDEXED_DELETED));
    assert_true(stored(f, "A", 6));
    stats_are(f->ig, 2, 2, per + 1);

    /* unknown documents are ignored; malformed payloads are permanent errors */
    OK(deliver(f, "ghost", 1, RAG_INDEXED_ACTIVE));
    assert_int_equal(deliver(f, "A", 6, 77), RAG_ECORRUPT);
    rag_consumer *c = rag_ingest_consumer(f->ig);
    rag_queue_message junk;
    memset(&junk, 0, sizeof junk);
    strcpy(junk.topic, RAG_TOPIC_INDEXED);
    strcpy(junk.id, "junk");
    junk.data = "\x07garbage";
    junk.size = 8;
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_ingest_env(f->ig), NULL, 0, &txn), 0);
    assert_int_not_equal(c->handle(c->self, txn, &junk), RAG_OK);
    mdb_txn_abort(txn);
    free(text);
}

/* The same through a real consumer on the LMDB broker: the inbox drops a redelivered id. */
static void test_indexed_through_queue(void **state)
{
    fixture *f = *state;
    rag_doc d = mkdoc("Q", "Version text.");
    put1(f->ig, &d, RAG_OK);
    put1(f->ig, &d, RAG_OK);
    stats_are(f->ig, 1, 2, 2);

    rag_queue_transport *t = NULL;
    OK(rag_queue_lmdb_transport_new(&t, &f->cfg));
    rag_ev_indexed ev = {.doc_id = "Q", .version = 2, .status = RAG_INDEXED_ACTIVE, .vector_count = 1};
    rag_wbuf b;
    rag_wbuf_init(&b);
    OK(rag_ev_indexed_encode(&ev, &b));
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    strcpy(m.topic, RAG_TOPIC_INDEXED);
    strcpy(m.id, "index-0000000000000001");
    m.data = b.data;
    m.size = b.len;
    OK(t->publish(t->state, &m, 1));
    rag_queue_policy pol;
    rag_queue_policy_from_config(&pol, &f->cfg);
    size_t processed = 0;
    OK(rag_consumer_run_once(rag_ingest_consumer(f->ig), t, &pol, &processed));
    assert_int_equal(processed, 1);
    assert_false(stored(f, "Q", 1));
    assert_true(stored(f, "Q", 2));
    stats_are(f->ig, 1, 1, 1);
    uint64_t dead = 0;
    OK(rag_dead_count(rag_ingest_env(f->ig), &dead));
    assert_int_equal(dead, 0);

    /* a malformed doc.indexed is dead-lettered, not retried forever */
    rag_queue_message bad = m;
    strcpy(bad.id, "index-00000000000000ff");
    bad.data = "\x01";
    bad.size = 1;
    OK(t->publish(t->state, &bad, 1));
    OK(rag_consumer_run_once(rag_ingest_consumer(f->ig), t, &pol, &processed));
    OK(rag_dead_count(rag_ingest_env(f->ig), &dead));
    assert_int_equal(dead, 1);
    rag_wbuf_free(&b);
    t->free(t->state);
    free(t);
}

/* ---- threads -------------------------------------------------------------------------- */

typedef struct worker_arg {
    rag_ingest *ig;
    int tid;
    uint64_t versions[40];
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    char text[256];
    for (int i = 0; i < 20; i++) {
        rag_doc d[2];
        snprintf(text, sizeof text, "<html><body><h1>T%d</h1><p>Thread %d put %d.</p></body></html>",
                 a->tid, a->tid, i);
        d[0] = mkdoc("shared", text);
        d[1] = mkdoc(a->tid % 2 ? "odd" : "even", "# Md\n\nSome *markdown* text.");
        rag_put_result r[2];
        if (rag_ingest_put_batch(a->ig, d, 2, r) || r[0].code || r[1].code)
            return (void *)1;
        a->versions[2 * i] = r[0].version;
        a->versions[2 * i + 1] = r[1].version;
    }
    return NULL;
}

static void test_concurrent_puts(void **state)
{
    fixture *f = *state;
    enum { T = 4 };
    pthread_t th[T];
    worker_arg args[T];
    for (int i = 0; i < T; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].ig = f->ig;
        args[i].tid = i;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    /* every put of "shared" got its own version number: 1..80, each once */
    int seen[T * 20 + 1] = {0};
    for (int i = 0; i < T; i++)
        for (int j = 0; j < 40; j += 2) {
            uint64_t v = args[i].versions[j];
            assert_true(v >= 1 && v <= T * 20);
            assert_int_equal(seen[v], 0);
            seen[v] = 1;
        }
    info in;
    OK(doc_info(f->ig, "shared", &in));
    assert_int_equal(in.latest, T * 20);
    OK(doc_info(f->ig, "odd", &in));
    assert_int_equal(in.latest, T / 2 * 20);
    stats_are(f->ig, 3, T * 40, T * 40);
}

/* ---- a real page end to end ----------------------------------------------------------- */

static void test_real_page(void **state)
{
    fixture *f = *state;
    const char *path = "/usr/share/doc/python3.11/html/library/functions.html";
    size_t len = 0;
    char *html = rag_test_read_file(path, &len);
    if (!html) {
        skip();
        return;
    }
    rag_doc d = mkdoc("library/functions.html", "");
    d.data = html;
    d.size = len;
    d.uri = path;
    put1(f->ig, &d, RAG_OK);
    info in;
    OK(doc_info(f->ig, "library/functions.html", &in));
    assert_non_null(strstr(in.title, "Built-in Functions"));
    rag_ingest_stats s;
    OK(rag_ingest_stats_get(f->ig, &s));
    assert_true(s.chunks > 40);
    int found = 0;
    for (uint32_t i = 0; i < s.chunks; i++) {
        char *t = NULL;
        OK(chunk_text(f->ig, "library/functions.html", 1, i, &t));
        assert_true(strlen(t) <= f->cfg.chunk_max);
        found |= strstr(t, "Return the absolute value of a number") != NULL;
        assert_null(strstr(t, "\xC2\xB6"));
        free(t);
    }
    assert_true(found);
    free(html);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_versions_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_partial_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8_errors_and_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indexed_gc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indexed_through_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_puts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_page, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
