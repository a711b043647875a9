/* Tests of the embed module: fingerprint recording, the vector cache, doc.embedded output,
 * and how provider failures reach the queue. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragcore/providers.h"
#include "rag_common.h"
#include "rag_embed_api.h"
#include "rag_events.h"
#include "rag_queue.h"
#include "test_support.h"

#define DIM 16

typedef struct fixture {
    char *root;
    rag_config cfg;
    rag_embed_provider *prov;
    rag_fake_provider_state *fs;
    rag_embed *em;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("embed-test");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 64;
    o.retry_base_ms = 1;
    o.retry_cap_ms = 2;
    o.max_attempts = 3;
    if (rag_config_init(&f->cfg, f->root, &o) != RAG_OK)
        return -1;
    f->prov = rag_fake_provider_new(DIM, &f->fs);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_embed_close(f->em);
    f->prov->free(f->prov->state);
    free(f->prov);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Encode a doc.chunked event for `texts` (chunk_no = position). */
static void make_chunked(rag_wbuf *out, const char *doc_id, uint64_t version, const char **texts,
                         size_t n)
{
    static const char *acl[] = {"team-a", "team-b"};
    rag_ev_chunk *ch = calloc(n ? n : 1, sizeof *ch);
    for (size_t i = 0; i < n; i++) {
        ch[i].chunk_no = (uint32_t)i;
        ch[i].text = texts[i];
        ch[i].text_len = strlen(texts[i]);
        rag_hash128(texts[i], ch[i].text_len, ch[i].hash);
    }
    rag_ev_chunked ev;
    memset(&ev, 0, sizeof ev);
    ev.doc_id = doc_id;
    ev.version = version;
    ev.title = "title";
    ev.uri = "file:///x";
    ev.acl_count = 2;
    ev.acl = acl;
    ev.chunk_count = n;
    ev.chunks = ch;
    rag_wbuf_init(out);
    assert_int_equal(rag_ev_chunked_encode(&ev, out), RAG_OK);
    free(ch);
}

/* Call the consumer's handle() directly in a txn of our own; commit on success. */
static int handle_direct(rag_embed *em, const char *doc_id, uint64_t version, const char **texts,
                         size_t n)
{
    rag_wbuf b;
    make_chunked(&b, doc_id, version, texts, n);
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", RAG_TOPIC_CHUNKED);
    snprintf(m.id, sizeof m.id, "test-%s-%llu", doc_id, (unsigned long long)version);
    m.data = b.data;
    m.size = b.len;
    m.attempts = 1;
    rag_consumer *c = rag_embed_consumer(em);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_embed_env(em), NULL, 0, &txn), 0);
    int rc = c->handle(c->self, txn, &m);
    if (rc == RAG_OK)
        assert_int_equal(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
    rag_wbuf_free(&b);
    return rc;
}

static void stats(rag_embed *em, rag_embed_stats *s)
{
    assert_int_equal(rag_embed_stats_get(em, s), RAG_OK);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_fingerprint_recorded(void **state)
{
    fixture *f = *state;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    rag_embed_close(f->em);
    f->em = NULL;
    /* same provider: fine */
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    rag_embed_close(f->em);
    f->em = NULL;

    /* another model: refused, and the detail names both fingerprints */
    rag_embed_provider cpu;
    assert_int_equal(rag_embed_cpu_hash_init(&cpu, DIM), RAG_OK);
    rag_embed *em = NULL;
    assert_int_equal(rag_embed_open(&em, &f->cfg, &cpu), RAG_EFINGERPRINT);
    assert_null(em);
    const char *detail = rag_error_last();
    assert_non_null(strstr(detail, "fake-trigram-16"));
    assert_non_null(strstr(detail, "ragcore-cpu-hash-v1-d16"));
    rag_embed_provider_release(&cpu);

    /* invalid vtables are refused before anything is opened */
    rag_embed_provider bad = *f->prov;
    bad.version = 0;
    assert_int_equal(rag_embed_open(&em, &f->cfg, &bad), RAG_EVERSION);
    bad = *f->prov;
    bad.embed = NULL;
    assert_int_equal(rag_embed_open(&em, &f->cfg, &bad), RAG_EINVAL);
    bad = *f->prov;
    bad.dim = 0;
    assert_int_equal(rag_embed_open(&em, &f->cfg, &bad), RAG_EINVAL);
    assert_int_equal(rag_embed_open(&em, &f->cfg, NULL), RAG_EINVAL);

    /* the original provider still opens */
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
}

static void test_only_misses_embedded(void **state)
{
    fixture *f = *state;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    rag_embed_stats s;
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 0);

    /* chunk 0 and 2 have the same text: one provider row for both */
    const char *v1[] = {"alpha beta gamma", "delta epsilon", "alpha beta gamma"};
    assert_int_equal(handle_direct(f->em, "doc1", 1, v1, 3), RAG_OK);
    assert_int_equal(f->fs->calls, 1);
    assert_int_equal(f->fs->texts_embedded, 2);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 2);
    assert_int_equal(s.cache_hits, 0);
    assert_int_equal(s.cache_misses, 3);

    /* a second message with the same chunk hashes (another document even) embeds nothing */
    const char *same[] = {"delta epsilon", "alpha beta gamma"};
    assert_int_equal(handle_direct(f->em, "doc2", 1, same, 2), RAG_OK);
    assert_int_equal(f->fs->calls, 1);
    assert_int_equal(f->fs->texts_embedded, 2);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 2);
    assert_int_equal(s.cache_hits, 2);
    assert_int_equal(s.cache_misses, 3);

    /* an edited version: only the changed chunk goes to the provider, in one call */
    const char *v2[] = {"alpha beta gamma", "delta epsilon zeta", "eta theta", "delta epsilon"};
    assert_int_equal(handle_direct(f->em, "doc1", 2, v2, 4), RAG_OK);
    assert_int_equal(f->fs->calls, 2);
    assert_int_equal(f->fs->texts_embedded, 4);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 4);
    assert_int_equal(s.cache_hits, 4);
    assert_int_equal(s.cache_misses, 5);

    /* the cache survives a reopen */
    rag_embed_close(f->em);
    f->em = NULL;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    assert_int_equal(handle_direct(f->em, "doc3", 1, v2, 4), RAG_OK);
    assert_int_equal(f->fs->calls, 2);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 4);
    assert_int_equal(s.cache_hits, 4); /* counters restart at open */
    assert_int_equal(s.cache_misses, 0);

    /* a document without chunks still yields an (empty) doc.embedded */
    assert_int_equal(handle_direct(f->em, "empty", 1, NULL, 0), RAG_OK);
    assert_int_equal(f->fs->calls, 2);
}

static void expect_vector(const rag_embed_provider *p, const char *text, const float *got)
{
    float want[DIM];
    size_t len = strlen(text);
    assert_int_equal(p->embed(p->state, &text, &len, 1, want), 0);
    for (int i = 0; i < DIM; i++)
        assert_float_equal(got[i], want[i], 0.0f);
}

/* Publish one doc.chunked message on the broker. */
static void publish_chunked(const rag_queue_transport *t, const char *id, const char *doc_id,
                            uint64_t version, const char **texts, size_t n)
{
    rag_wbuf b;
    make_chunked(&b, doc_id, version, texts, n);
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", RAG_TOPIC_CHUNKED);
    snprintf(m.id, sizeof m.id, "%s", id);
    m.data = b.data;
    m.size = b.len;
    assert_int_equal(t->publish(t->state, &m, 1), 0);
    rag_wbuf_free(&b);
}

static void test_emitted_event_through_queue(void **state)
{
    fixture *f = *state;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    rag_queue_transport *t = NULL;
    assert_int_equal(rag_queue_lmdb_transport_new(&t, &f->cfg), RAG_OK);
    rag_queue_policy pol;
    rag_queue_policy_from_config(&pol, &f->cfg);

    const char *texts[] = {"The first chunk of text.", "A second, different chunk.",
                           "The first chunk of text."};
    publish_chunked(t, "ingest-0000000000000001", "doc-x", 7, texts, 3);
    const char *texts2[] = {"A second, different chunk.", "Something new"};
    publish_chunked(t, "ingest-0000000000000002", "doc-y", 1, texts2, 2);

    size_t processed = 0;
    assert_int_equal(rag_consumer_run_once(rag_embed_consumer(f->em), t, &pol, &processed),
                     RAG_OK);
    assert_int_equal(processed, 2);
    /* per message one provider call: 2 distinct misses, then 1 */
    assert_int_equal(f->fs->calls, 2);
    assert_int_equal(f->fs->texts_embedded, 3);
    uint64_t pending = 99;
    assert_int_equal(rag_outbox_pending(rag_embed_outbox(f->em), &pending), RAG_OK);
    assert_int_equal(pending, 0);

    rag_queue_message got[4];
    size_t n = 0;
    assert_int_equal(t->fetch(t->state, RAG_TOPIC_EMBEDDED, 4, 10000, got, &n), 0);
    assert_int_equal(n, 2);
    int seen_x = 0, seen_y = 0;
    for (size_t i = 0; i < n; i++) {
        rag_ev_embedded ev;
        assert_int_equal(rag_ev_embedded_decode(got[i].data, got[i].size, &ev), RAG_OK);
        assert_int_equal(ev.dim, DIM);
        assert_int_equal(ev.acl_count, 2);
        assert_string_equal(ev.acl[0], "team-a");
        assert_string_equal(ev.acl[1], "team-b");
        const char **tx = NULL;
        if (strcmp(ev.doc_id, "doc-x") == 0) {
            seen_x = 1;
            assert_int_equal(ev.version, 7);
            assert_int_equal(ev.vector_count, 3);
            tx = texts;
        } else {
            assert_string_equal(ev.doc_id, "doc-y");
            seen_y = 1;
            assert_int_equal(ev.version, 1);
            assert_int_equal(ev.vector_count, 2);
            tx = texts2;
        }
        for (size_t j = 0; j < ev.vector_count; j++) {
            const rag_ev_vector *v = &ev.vectors[j];
            uint8_t h[16];
            rag_hash128(tx[j], strlen(tx[j]), h);
            assert_int_equal(v->chunk_no, j);
            assert_memory_equal(v->hash, h, 16);
            assert_int_equal(v->text_len, strlen(tx[j]));
            assert_memory_equal(v->text, tx[j], v->text_len);
            expect_vector(f->prov, tx[j], v->vector);
        }
        rag_ev_embedded_clear(&ev);
    }
    assert_true(seen_x && seen_y);
    assert_int_equal(t->ack(t->state, got, n), 0);
    t->release(t->state, got, n);

    /* redelivery of an applied message: the inbox skips it, no provider call
     * (expect_vector() above called the provider itself) */
    int calls = f->fs->calls;
    publish_chunked(t, "ingest-0000000000000001", "doc-x", 7, texts, 3);
    processed = 0;
    assert_int_equal(rag_consumer_run_once(rag_embed_consumer(f->em), t, &pol, &processed),
                     RAG_OK);
    assert_int_equal(processed, 1);
    assert_int_equal(f->fs->calls, calls);
    n = 0;
    assert_int_equal(t->fetch(t->state, RAG_TOPIC_EMBEDDED, 4, 10000, got, &n), 0);
    assert_int_equal(n, 0); /* and emits nothing again */

    t->free(t->state);
    free(t);
}

static void test_provider_failures(void **state)
{
    fixture *f = *state;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    rag_embed_stats s;
    const char *ok[] = {"fine text", "more fine text"};

    /* transient: RAG_ETRANSIENT (the queue retries), nothing stored */
    f->fs->transient_failures = 1;
    assert_int_equal(handle_direct(f->em, "d", 1, ok, 2), RAG_ETRANSIENT);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 0);
    /* the retry succeeds */
    assert_int_equal(handle_direct(f->em, "d", 1, ok, 2), RAG_OK);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 2);

    /* permanent: RAG_EPROVIDER (dead letter), also when the provider says RAG_EINVAL */
    f->fs->fail_marker = "POISON";
    f->fs->fail_code = RAG_EPROVIDER;
    const char *bad[] = {"fine text", "this is POISON", "new text"};
    assert_int_equal(handle_direct(f->em, "e", 1, bad, 3), RAG_EPROVIDER);
    f->fs->fail_code = RAG_EINVAL;
    assert_int_equal(handle_direct(f->em, "e", 1, bad, 3), RAG_EPROVIDER);
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 2);
    /* a message whose chunks are all cached never reaches the provider */
    const char *cached[] = {"more fine text"};
    assert_int_equal(handle_direct(f->em, "g", 1, cached, 1), RAG_OK);

    /* garbage payload: corrupt, dead-lettered */
    rag_consumer *c = rag_embed_consumer(f->em);
    rag_queue_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.topic, sizeof m.topic, "%s", RAG_TOPIC_CHUNKED);
    snprintf(m.id, sizeof m.id, "garbage");
    m.data = "\x01\x02garbage";
    m.size = 9;
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(rag_embed_env(f->em), NULL, 0, &txn), 0);
    assert_int_not_equal(c->handle(c->self, txn, &m), RAG_OK);
    mdb_txn_abort(txn);
}

static void test_failures_through_queue(void **state)
{
    fixture *f = *state;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, f->prov), RAG_OK);
    rag_queue_transport *t = NULL;
    assert_int_equal(rag_queue_lmdb_transport_new(&t, &f->cfg), RAG_OK);
    rag_queue_policy pol;
    rag_queue_policy_from_config(&pol, &f->cfg);

    /* permanent failure: dead-lettered at once */
    f->fs->fail_marker = "POISON";
    f->fs->fail_code = RAG_EPROVIDER;
    const char *bad[] = {"POISON pill"};
    publish_chunked(t, "ingest-00000000000000a1", "bad", 1, bad, 1);
    size_t processed = 0;
    assert_int_equal(rag_consumer_run_once(rag_embed_consumer(f->em), t, &pol, &processed),
                     RAG_OK);
    assert_int_equal(processed, 1);
    uint64_t dead = 0;
    assert_int_equal(rag_dead_count(rag_embed_env(f->em), &dead), RAG_OK);
    assert_int_equal(dead, 1);

    /* transient failure: retried, then applied */
    f->fs->transient_failures = 1;
    const char *good[] = {"good text"};
    publish_chunked(t, "ingest-00000000000000a2", "good", 1, good, 1);
    processed = 0;
    assert_int_equal(rag_consumer_run_once(rag_embed_consumer(f->em), t, &pol, &processed),
                     RAG_OK);
    for (int i = 0; i < 200; i++) {
        rag_embed_stats s;
        stats(f->em, &s);
        if (s.cache_entries == 1)
            break;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        assert_int_equal(rag_consumer_run_once(rag_embed_consumer(f->em), t, &pol, &processed),
                         RAG_OK);
    }
    rag_embed_stats s;
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 1);
    assert_int_equal(rag_dead_count(rag_embed_env(f->em), &dead), RAG_OK);
    assert_int_equal(dead, 1);

    t->free(t->state);
    free(t);
}

/* A provider that returns NaN must not reach the index. */
static int nan_embed(void *st, const char *const *t, const size_t *l, size_t n, float *out)
{
    for (size_t i = 0; i < n * DIM; i++)
        out[i] = (i == 3) ? NAN : 0.25f;
    return 0;
}

static void test_nonfinite_vector_refused(void **state)
{
    fixture *f = *state;
    rag_embed_provider p = *f->prov;
    p.embed = nan_embed;
    assert_int_equal(rag_embed_open(&f->em, &f->cfg, &p), RAG_OK);
    const char *t[] = {"x"};
    assert_int_equal(handle_direct(f->em, "n", 1, t, 1), RAG_EPROVIDER);
    rag_embed_stats s;
    stats(f->em, &s);
    assert_int_equal(s.cache_entries, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fingerprint_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_misses_embedded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_emitted_event_through_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_through_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite_vector_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
