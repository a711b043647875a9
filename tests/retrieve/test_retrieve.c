/* Unit tests of the retrieve module over fake ingest/index readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake_readers.h"
#include "rag_retrieve_api.h"
#include "retrieve_internal.h"
#include "test_support.h"

#define DIM 64

typedef struct fixture {
    char *dir;
    rag_config cfg;
    rag_embed_provider *prov;
    rag_fake_provider_state *pst;
    fr_world *w;
    rag_ingest_reader ig;
    rag_index_reader ix;
    rag_retrieve *rt;
} fixture;

static char doc_ids[FR_MAX_DOCS][32];
static char texts[FR_MAX_CHUNKS][128];

/* n docs "doc-i", each with two chunks about a distinct topic. */
static void populate(fixture *f, size_t ndocs)
{
    static const char *topics[] = {"apples and orchards", "rivers and boats", "mountain climbing",
                                   "quantum physics", "baking sourdough bread", "jazz music",
                                   "tax law", "bird migration"};
    for (size_t i = 0; i < ndocs; i++) {
        snprintf(doc_ids[i], sizeof doc_ids[i], "doc-%02zu", i);
        fr_add_doc(f->w, doc_ids[i], "Title", "file:///x");
        for (uint32_t c = 0; c < 2; c++) {
            size_t t = f->w->nchunks;
            snprintf(texts[t], sizeof texts[t], "Chunk %u of document %zu is about %s.", c, i,
                     topics[i % 8]);
            fr_add_chunk(f->w, f->prov, doc_ids[i], 1, c, texts[t]);
        }
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = rag_test_tmpdir("retrieve");
    rag_options o;
    rag_options_init(&o);
    o.no_sync = 1;
    o.map_size_mb = 64;
    assert_int_equal(rag_config_init(&f->cfg, f->dir, &o), RAG_OK);
    f->prov = rag_fake_provider_new(DIM, &f->pst);
    f->w = fr_new(DIM);
    fr_readers(f->w, &f->ig, &f->ix);
    *state = f;
    return 0;
}

static void open_rt(fixture *f)
{
    assert_int_equal(rag_retrieve_open(&f->rt, &f->cfg, f->prov, &f->ig, &f->ix), RAG_OK);
}

static int teardown(void **state)
{
    fixture *f = *state;
    rag_retrieve_close(f->rt);
    /* every ingest snapshot that was begun was ended */
    assert_int_equal(f->w->begins, f->w->ends);
    fr_free(f->w);
    f->prov->free(f->prov->state);
    free(f->prov);
    rag_test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Most tests exercise the machinery shared by every mode (validation, re-queries, cache,
 * ACLs) on the vector side; the mode tests below cover lexical, hybrid and DEFAULT. */
static rag_query query(const char *text, size_t k)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = text;
    q.k = k;
    q.mode = RAG_MODE_VECTOR;
    return q;
}

static rag_query mquery(const char *text, size_t k, rag_search_mode mode)
{
    rag_query q = query(text, k);
    q.mode = mode;
    return q;
}

static fr_chunk *find_chunk(fixture *f, const char *doc, uint32_t chunk)
{
    for (size_t i = 0; i < f->w->nchunks; i++)
        if (strcmp(f->w->chunks[i].doc_id, doc) == 0 && f->w->chunks[i].chunk_no == chunk)
            return &f->w->chunks[i];
    return NULL;
}

static const rag_result *find_result(const rag_results *r, const char *doc, uint32_t chunk)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->items[i].doc_id, doc) == 0 && r->items[i].chunk == chunk)
            return &r->items[i];
    return NULL;
}

static void assert_sorted(const rag_results *r)
{
    for (size_t i = 1; i < r->count; i++)
        assert_true(r->items[i - 1].score >= r->items[i].score);
}

static void assert_results_equal(const rag_results *a, const rag_results *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        assert_string_equal(a->items[i].doc_id, b->items[i].doc_id);
        assert_int_equal(a->items[i].version, b->items[i].version);
        assert_int_equal(a->items[i].chunk, b->items[i].chunk);
        assert_true(a->items[i].score == b->items[i].score);
        assert_string_equal(a->items[i].text, b->items[i].text);
        assert_string_equal(a->items[i].title, b->items[i].title);
        assert_string_equal(a->items[i].uri, b->items[i].uri);
    }
}

/* ---------------------------------------------------------------------------------------- */

static void test_open_validation(void **state)
{
    fixture *f = *state;
    rag_retrieve *rt = NULL;
    assert_int_equal(rag_retrieve_open(NULL, &f->cfg, f->prov, &f->ig, &f->ix), RAG_EINVAL);
    assert_int_equal(rag_retrieve_open(&rt, &f->cfg, f->prov, NULL, &f->ix), RAG_EINVAL);
    rag_ingest_reader bad = f->ig;
    bad.version = 0;
    assert_int_equal(rag_retrieve_open(&rt, &f->cfg, f->prov, &bad, &f->ix), RAG_EVERSION);
    rag_index_reader badx = f->ix;
    badx.version = RAG_READER_VERSION + 1;
    assert_int_equal(rag_retrieve_open(&rt, &f->cfg, f->prov, &f->ig, &badx), RAG_EVERSION);
    badx = f->ix;
    badx.search = NULL;
    assert_int_equal(rag_retrieve_open(&rt, &f->cfg, f->prov, &f->ig, &badx), RAG_EINVAL);
    assert_null(rt);
    rag_retrieve_close(NULL);
    rag_retrieve_results_free(NULL);
}

static void test_search_order_and_text(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    rag_query q = query("Chunk 1 of document 3 is about quantum physics.", 5);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_non_null(r);
    assert_int_equal(r->count, 5);
    assert_sorted(r);
    /* the exact chunk comes first, with its text fetched from ingest */
    assert_string_equal(r->items[0].doc_id, "doc-03");
    assert_int_equal(r->items[0].chunk, 1);
    assert_int_equal(r->items[0].version, 1);
    assert_string_equal(r->items[0].text, "Chunk 1 of document 3 is about quantum physics.");
    assert_string_equal(r->items[0].title, "Title");
    assert_string_equal(r->items[0].uri, "file:///x");
    for (size_t i = 0; i < r->count; i++) {
        /* each item's text is its own chunk's text */
        char want[128];
        int docn = atoi(r->items[i].doc_id + 4);
        assert_non_null(strstr(r->items[i].text, "of document"));
        snprintf(want, sizeof want, "Chunk %u of document %d", r->items[i].chunk, docn);
        assert_memory_equal(r->items[i].text, want, strlen(want));
    }
    rag_retrieve_results_free(r);

    /* k = 0 means 10; only 16 chunks exist, so 10 come back */
    q = query("apples", 0);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 10);
    assert_sorted(r);
    rag_retrieve_results_free(r);

    /* k larger than the corpus: everything, sorted */
    q = query("bread", 100);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 16);
    assert_sorted(r);
    rag_retrieve_results_free(r);
}

static void test_acl_passthrough(void **state)
{
    fixture *f = *state;
    populate(f, 4);
    /* doc-00 restricted to alice, doc-01 to bob */
    for (size_t i = 0; i < f->w->nchunks; i++) {
        if (strcmp(f->w->chunks[i].doc_id, "doc-00") == 0)
            f->w->chunks[i].acl[0] = "alice";
        if (strcmp(f->w->chunks[i].doc_id, "doc-01") == 0)
            f->w->chunks[i].acl[0] = "bob";
    }
    open_rt(f);
    const char *princ[] = {"carol", "alice"};
    rag_query q = query("apples and orchards", 100);
    q.principals = princ;
    q.principal_count = 2;
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(f->w->last_unrestricted, 0);
    assert_int_equal(f->w->last_principal_count, 2);
    assert_string_equal(f->w->last_principals[0], "carol");
    assert_string_equal(f->w->last_principals[1], "alice");
    assert_int_equal(r->count, 6); /* doc-00 (alice), doc-02, doc-03 */
    for (size_t i = 0; i < r->count; i++)
        assert_string_not_equal(r->items[i].doc_id, "doc-01");
    rag_retrieve_results_free(r);

    /* no principals: public documents only */
    q.principals = NULL;
    q.principal_count = 0;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 4);
    rag_retrieve_results_free(r);

    /* unrestricted: everything, and the flag reaches the index */
    q.unrestricted = 1;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(f->w->last_unrestricted, 1);
    assert_int_equal(r->count, 8);
    rag_retrieve_results_free(r);

    /* principals must be non-NULL when counted */
    q.unrestricted = 0;
    q.principal_count = 1;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINVAL);
    assert_null(r);
}

static void test_deleted_dropped_and_requery(void **state)
{
    fixture *f = *state;
    populate(f, 40); /* 80 chunks */
    open_rt(f);
    rag_retrieve__set_cache_max(f->rt, 0);
    rag_query q = query("Chunk 0 of document 7 is about bird migration.", 3);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 3);
    long calls_before = f->w->search_calls;
    /* delete (in ingest only: the index still returns them) every doc in the first 30 hits */
    size_t kp = 30;
    rag_index_hit *hits = calloc(kp, sizeof *hits);
    float *vec = calloc(DIM, sizeof(float));
    size_t len = strlen(q.text);
    f->prov->embed(f->prov->state, &q.text, &len, 1, vec);
    rag_acl_filter all = {1, NULL, 0};
    size_t n = 0;
    fr_search(f->w, vec, kp, &all, hits, &n);
    assert_int_equal(n, kp);
    f->w->search_calls--; /* that call was ours */
    for (size_t i = 0; i < n; i++)
        fr_find_doc(f->w, hits[i].doc_id)->deleted = 1;
    rag_retrieve_results_free(r);

    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 3); /* k still filled */
    assert_sorted(r);
    for (size_t i = 0; i < r->count; i++)
        assert_int_equal(fr_find_doc(f->w, r->items[i].doc_id)->deleted, 0);
    /* it took re-queries with growing k' */
    long calls = f->w->search_calls - calls_before;
    assert_true(calls >= 2);
    for (long c = 1; c < calls; c++)
        assert_true(f->w->ks[calls_before + c] > f->w->ks[calls_before + c - 1]);
    rag_retrieve_results_free(r);

    /* unknown documents (gone from ingest) and purged texts are dropped too */
    size_t live = 0;
    for (size_t i = 0; i < f->w->ndocs; i++)
        live += !f->w->docs[i].deleted;
    assert_true(live >= 10);
    q = query("anything", 1000);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, live * 2);
    rag_retrieve_results_free(r);
    fr_doc *d = NULL;
    for (size_t i = 0; i < f->w->ndocs && !d; i++)
        if (!f->w->docs[i].deleted)
            d = &f->w->docs[i];
    d->id = "renamed-away"; /* ingest no longer knows the id the index returns */
    for (size_t i = 0; i < f->w->nchunks; i++) {
        fr_doc *o = fr_find_doc(f->w, f->w->chunks[i].doc_id);
        if (o && !o->deleted && f->w->chunks[i].chunk_no == 1) {
            f->w->chunks[i].text = NULL; /* one purged chunk */
            break;
        }
    }
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, (live - 1) * 2 - 1);
    rag_retrieve_results_free(r);
    free(hits);
    free(vec);
}

static void test_requery_bounded_when_all_deleted(void **state)
{
    fixture *f = *state;
    populate(f, 40);
    for (size_t i = 0; i < f->w->ndocs; i++)
        f->w->docs[i].deleted = 1;
    open_rt(f);
    rag_query q = query("apples", 5);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 0);
    assert_non_null(r->items);
    /* stopped once the index returned a short page (80 < k') */
    assert_true(f->w->search_calls >= 2 && f->w->search_calls <= 6);
    rag_retrieve_results_free(r);
}

static void test_cache_hit_and_epoch(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    const char *p1[] = {"bob", "alice", "bob"};
    const char *p2[] = {"alice", "bob"};
    rag_query q = query("rivers and boats", 4);
    q.principals = p1;
    q.principal_count = 3;
    rag_results *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &a), RAG_OK);
    long embeds = f->pst->calls, searches = f->w->search_calls;
    rag_retrieve_stats st;
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 0);
    assert_int_equal(st.cache_misses, 1);

    /* same query, principals in another order and deduplicated: a hit */
    q.principals = p2;
    q.principal_count = 2;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &b), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(f->pst->calls, embeds);          /* no embedding */
    assert_int_equal(f->w->search_calls, searches);   /* no index search */
    assert_results_equal(a, b);
    rag_retrieve_results_free(b);

    /* a different k, principal set or flag is another key */
    q.k = 3;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &b), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_misses, 2);
    rag_retrieve_results_free(b);
    q.k = 4;
    q.principal_count = 1;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &b), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_misses, 3);
    rag_retrieve_results_free(b);
    q.principal_count = 2;

    /* the index changes: epoch moves, the entry is unreachable */
    const char *newtext = "rivers and boats and rivers and boats";
    fr_add_doc(f->w, "fresh", "Fresh", "");
    fr_add_chunk(f->w, f->prov, "fresh", 1, 0, newtext);
    f->w->epoch++;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &c), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(st.cache_misses, 4);
    assert_int_equal(f->w->search_calls, searches + 3);
    int found = 0;
    for (size_t i = 0; i < c->count; i++)
        found |= strcmp(c->items[i].doc_id, "fresh") == 0;
    assert_true(found);
    rag_retrieve_results_free(c);

    /* a delete in ingest before the epoch moves: the cached entry is not trusted */
    assert_int_equal(rag_retrieve_search(f->rt, &q, &c), RAG_OK); /* hit */
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 2);
    const char *victim = c->items[0].doc_id;
    fr_find_doc(f->w, victim)->deleted = 1;
    rag_results *d = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &d), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_stale, 1);
    assert_int_equal(d->count, 4);
    for (size_t i = 0; i < d->count; i++)
        assert_string_not_equal(d->items[i].doc_id, victim);
    rag_retrieve_results_free(c);
    /* ... and the refreshed entry is a hit again */
    assert_int_equal(rag_retrieve_search(f->rt, &q, &c), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 3);
    assert_results_equal(c, d);
    rag_retrieve_results_free(c);
    rag_retrieve_results_free(d);

    /* title changes in ingest are visible on a hit (texts and metadata are re-read) */
    fr_find_doc(f->w, "fresh")->title = "Renamed";
    assert_int_equal(rag_retrieve_search(f->rt, &q, &c), RAG_OK);
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->items[i].doc_id, "fresh") == 0)
            assert_string_equal(c->items[i].title, "Renamed");
    rag_retrieve_results_free(c);
    rag_retrieve_results_free(a);
}

static void test_cache_nfc_key_and_persistence(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    rag_query q = query("caf\xC3\xA9 jazz music", 3);        /* precomposed é */
    rag_query q2 = query("cafe\xCC\x81 jazz music", 3);      /* e + combining acute */
    rag_results *a = NULL, *b = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &a), RAG_OK);
    assert_int_equal(rag_retrieve_search(f->rt, &q2, &b), RAG_OK);
    rag_retrieve_stats st;
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_results_equal(a, b);
    rag_retrieve_results_free(b);

    /* clean close keeps the cache */
    rag_retrieve_close(f->rt);
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/retrieve/clean", f->dir);
    assert_int_equal(access(marker, F_OK), 0);
    open_rt(f);
    assert_int_not_equal(access(marker, F_OK), 0); /* removed while open */
    size_t entries = 0;
    assert_int_equal(rag_retrieve__cache_entries(f->rt, &entries), RAG_OK);
    assert_int_equal(entries, 1);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &b), RAG_OK);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_results_equal(a, b);
    rag_retrieve_results_free(b);

    /* without the marker (crash) the cache is wiped on open */
    rag_retrieve_close(f->rt);
    unlink(marker);
    open_rt(f);
    assert_int_equal(rag_retrieve__cache_entries(f->rt, &entries), RAG_OK);
    assert_int_equal(entries, 0);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &b), RAG_OK);
    assert_results_equal(a, b);
    rag_retrieve_results_free(a);
    rag_retrieve_results_free(b);
}

static void test_cache_cap_and_epoch_failure(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    rag_retrieve__set_cache_max(f->rt, 3);
    char text[64];
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof text, "query number %d", i);
        rag_query q = query(text, 2);
        rag_results *r = NULL;
        assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
        rag_retrieve_results_free(r);
        size_t entries = 0;
        assert_int_equal(rag_retrieve__cache_entries(f->rt, &entries), RAG_OK);
        assert_true(entries <= 3);
    }
    rag_retrieve_stats st;
    rag_retrieve__stats(f->rt, &st);
    assert_true(st.cache_drops >= 2);

    /* no epoch: no cache, the search still works */
    f->w->epoch_fails = 1;
    rag_query q = query("query number 9", 2);
    rag_results *r = NULL;
    long before = f->w->search_calls;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 2);
    assert_int_equal(f->w->search_calls, before + 1);
    rag_retrieve_results_free(r);
}

static void test_modes_without_lexical_side(void **state)
{
    fixture *f = *state;
    populate(f, 2);
    f->ix.search_lexical = NULL; /* an index reader without the BM25 side */
    open_rt(f);
    int embeds = f->pst->calls;
    rag_query q = query("apples", 3);
    rag_results *r = (rag_results *)1;
    q.mode = RAG_MODE_LEXICAL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EUNSUPPORTED);
    assert_null(r);
    assert_non_null(strstr(rag_error_last(), "lexical"));
    q.mode = RAG_MODE_HYBRID;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EUNSUPPORTED);
    assert_non_null(strstr(rag_error_last(), "hybrid"));
    q.mode = (rag_search_mode)42;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINVAL);
    assert_int_equal(f->pst->calls, embeds); /* refused before any work */
    q.mode = RAG_MODE_VECTOR;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 3);
    rag_retrieve_results_free(r);
    /* DEFAULT falls back to the vector side: same effective mode, same cache entry */
    q.mode = RAG_MODE_DEFAULT;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    rag_retrieve_results_free(r);
    assert_int_equal(f->w->search_calls, 1);
    rag_retrieve_close(f->rt);
    f->rt = NULL;

    /* a version-1 reader struct has no search_lexical slot, whatever the memory holds */
    fr_readers(f->w, &f->ig, &f->ix);
    f->ix.version = 1;
    open_rt(f);
    q.mode = RAG_MODE_HYBRID;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EUNSUPPORTED);
    assert_int_equal(f->w->lex_calls, 0);
}

static void test_lexical_mode(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    fr_add_doc(f->w, "bread-book", "Bread", "");
    fr_add_chunk(f->w, f->prov, "bread-book", 1, 0, "Bread, bread and more bread: sourdough bread.");
    find_chunk(f, "doc-00", 0)->acl[0] = "alice";
    open_rt(f);
    int embeds = f->pst->calls;
    rag_query q = mquery("the Bread of SOURDOUGH", 10, RAG_MODE_LEXICAL);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(f->pst->calls, embeds); /* no embedding in lexical mode */
    assert_int_equal(f->w->search_calls, 0); /* nor a vector search */
    assert_int_equal(f->w->lex_calls, 1);
    assert_string_equal(f->w->last_lex_query, "the Bread of SOURDOUGH"); /* NFC text as is */
    /* doc-04 is about "baking sourdough bread" (2 terms per chunk), bread-book has 5 */
    assert_int_equal(r->count, 3);
    assert_string_equal(r->items[0].doc_id, "bread-book");
    assert_true(r->items[0].score == 5.0f); /* raw BM25-side score, not normalised */
    assert_string_equal(r->items[1].doc_id, "doc-04");
    assert_true(r->items[1].score == 2.0f);
    assert_string_equal(r->items[0].text, "Bread, bread and more bread: sourdough bread.");
    assert_int_equal(f->w->lex_ks[0], 10 + 10 / 4 + 8);
    rag_retrieve_results_free(r);

    /* ACL filter goes to the lexical side too */
    const char *princ[] = {"alice"};
    q = mquery("apples orchards", 10, RAG_MODE_LEXICAL);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(f->w->last_unrestricted, 0);
    assert_int_equal(r->count, 1); /* doc-00#1 only: #0 is alice's */
    assert_null(find_result(r, "doc-00", 0));
    rag_retrieve_results_free(r);
    q.principals = princ;
    q.principal_count = 1;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 2);
    assert_string_equal(f->w->last_principals[0], "alice");
    rag_retrieve_results_free(r);

    /* no term in common: an empty result, not an error */
    q = mquery("zebra", 10, RAG_MODE_LEXICAL);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 0);
    rag_retrieve_results_free(r);

    /* a failing lexical side fails the search, in lexical and in hybrid mode */
    f->w->lex_fail = RAG_EINDEX;
    q = mquery("bread again", 10, RAG_MODE_LEXICAL);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINDEX);
    assert_non_null(strstr(rag_error_last(), "lexical search failed: fake lexical failure"));
    assert_null(r);
    q.mode = RAG_MODE_HYBRID;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINDEX);
    assert_null(r);
    f->w->lex_fail = 0;
}

/* Four chunks with hand-set scores on each side. */
static void fixed_world(fixture *f)
{
    populate(f, 4);
    f->w->fixed_scores = 1;
    for (size_t i = 0; i < f->w->nchunks; i++)
        f->w->chunks[i].vscore = f->w->chunks[i].lscore = 0;
    find_chunk(f, "doc-00", 0)->vscore = 0.9f;  /* vector only */
    find_chunk(f, "doc-01", 0)->vscore = 0.45f;
    find_chunk(f, "doc-01", 0)->lscore = 4.0f;
    find_chunk(f, "doc-02", 0)->vscore = 0.3f;
    find_chunk(f, "doc-02", 0)->lscore = 8.0f;
    find_chunk(f, "doc-03", 0)->lscore = 3.0f;  /* lexical only */
    find_chunk(f, "doc-03", 1)->vscore = -0.5f; /* a negative similarity counts as 0 */
    find_chunk(f, "doc-03", 1)->lscore = 1.0f;
}

static void test_fusion_arithmetic(void **state)
{
    fixture *f = *state;
    fixed_world(f);
    f->cfg.hybrid_lexical_weight = 0.8f;
    open_rt(f);
    rag_query q = mquery("anything", 10, RAG_MODE_HYBRID);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(f->w->search_calls, 1);
    assert_int_equal(f->w->lex_calls, 1);
    /* both sides were asked for max(4k, 50) candidates */
    assert_int_equal(f->w->ks[0], 50);
    assert_int_equal(f->w->lex_ks[0], 50);
    /* w = 0.8, max vec = 0.9, max lex = 8:
     *   doc-02#0  0.8 * 8/8 + 0.2 * 0.3/0.9  = 0.866667
     *   doc-01#0  0.8 * 4/8 + 0.2 * 0.45/0.9 = 0.5
     *   doc-03#0  0.8 * 3/8 + 0                = 0.3   (no vector hit)
     *   doc-00#0  0           + 0.2 * 0.9/0.9 = 0.2   (no lexical hit)
     *   doc-03#1  0.8 * 1/8 + 0 (negative)     = 0.1 */
    assert_int_equal(r->count, 5);
    assert_sorted(r);
    assert_string_equal(r->items[0].doc_id, "doc-02");
    assert_float_equal(r->items[0].score, 0.8 + 0.2 / 3.0, 1e-5);
    assert_string_equal(r->items[1].doc_id, "doc-01");
    assert_float_equal(r->items[1].score, 0.5, 1e-5);
    assert_string_equal(r->items[2].doc_id, "doc-03");
    assert_int_equal(r->items[2].chunk, 0);
    assert_float_equal(r->items[2].score, 0.3, 1e-5);
    assert_string_equal(r->items[3].doc_id, "doc-00");
    assert_float_equal(r->items[3].score, 0.2, 1e-5);
    assert_string_equal(r->items[4].doc_id, "doc-03");
    assert_int_equal(r->items[4].chunk, 1);
    assert_float_equal(r->items[4].score, 0.1, 1e-5);
    /* each label once, with its own text */
    assert_string_equal(r->items[0].text, find_chunk(f, "doc-02", 0)->text);
    rag_retrieve_results_free(r);

    /* top-k of the fused list */
    q.k = 2;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 2);
    assert_string_equal(r->items[0].doc_id, "doc-02");
    assert_string_equal(r->items[1].doc_id, "doc-01");
    rag_retrieve_results_free(r);
    rag_retrieve_close(f->rt);
    f->rt = NULL;

    /* another weight: w = 0.25 puts the vector side first */
    f->cfg.hybrid_lexical_weight = 0.25f;
    open_rt(f);
    q.k = 10;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_string_equal(r->items[0].doc_id, "doc-00");
    assert_float_equal(r->items[0].score, 0.75, 1e-5);
    assert_string_equal(r->items[1].doc_id, "doc-01"); /* 0.25 * .5 + .75 * .5 = 0.5 */
    assert_float_equal(r->items[1].score, 0.5, 1e-5);
    assert_string_equal(r->items[2].doc_id, "doc-02"); /* 0.25 + 0.75 / 3 = 0.5 */
    assert_float_equal(r->items[2].score, 0.5, 1e-5);
    rag_retrieve_results_free(r);
}

static void test_weights_reproduce_single_sides(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    fr_add_doc(f->w, "extra", "Extra", "");
    fr_add_chunk(f->w, f->prov, "extra", 1, 0, "jazz music and more jazz music about rivers");
    const char *text = "jazz music on rivers";
    rag_results *vec = NULL, *lex = NULL, *r = NULL;

    /* reference results of the single sides, without the cache */
    open_rt(f);
    rag_retrieve__set_cache_max(f->rt, 0);
    rag_query q = mquery(text, 5, RAG_MODE_VECTOR);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &vec), RAG_OK);
    q.mode = RAG_MODE_LEXICAL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &lex), RAG_OK);
    assert_true(lex->count >= 3);
    /* the sides disagree, or this test would prove nothing */
    int differ = vec->count != lex->count;
    for (size_t i = 0; !differ && i < vec->count; i++)
        differ = strcmp(vec->items[i].doc_id, lex->items[i].doc_id) != 0 ||
                 vec->items[i].chunk != lex->items[i].chunk;
    assert_true(differ);
    rag_retrieve_close(f->rt);
    f->rt = NULL;

    for (int side = 0; side < 2; side++) {
        /* 0 in rag_options means "the default"; a negative value means 0 */
        rag_options o;
        rag_options_init(&o);
        o.no_sync = 1;
        o.map_size_mb = 64;
        o.hybrid_lexical_weight = side == 0 ? -1.0f : 1.0f;
        assert_int_equal(rag_config_init(&f->cfg, f->dir, &o), RAG_OK);
        assert_true(f->cfg.hybrid_lexical_weight == (side == 0 ? 0.0f : 1.0f));
        open_rt(f);
        rag_retrieve__set_cache_max(f->rt, 0);
        long vcalls = f->w->search_calls, lcalls = f->w->lex_calls;
        int embeds = f->pst->calls;
        for (int m = 0; m < 2; m++) {
            q = mquery(text, 5, m == 0 ? RAG_MODE_HYBRID : RAG_MODE_DEFAULT);
            assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
            assert_results_equal(r, side == 0 ? vec : lex);
            rag_retrieve_results_free(r);
        }
        if (side == 0) {
            assert_int_equal(f->w->lex_calls, lcalls); /* w = 0: no lexical search */
            assert_int_equal(f->w->search_calls, vcalls + 2);
        } else {
            assert_int_equal(f->w->search_calls, vcalls); /* w = 1: no vector search */
            assert_int_equal(f->pst->calls, embeds);      /* nor an embedding */
            assert_int_equal(f->w->lex_calls, lcalls + 2);
        }
        rag_retrieve_close(f->rt);
        f->rt = NULL;
    }
    rag_retrieve_results_free(vec);
    rag_retrieve_results_free(lex);
}

static void test_side_without_hits(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    rag_retrieve__set_cache_max(f->rt, 0);
    /* only stopwords and punctuation: no lexical term, the vector side alone ranks */
    const char *text = "the and of ???";
    rag_results *vec = NULL, *hyb = NULL;
    rag_query q = mquery(text, 6, RAG_MODE_VECTOR);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &vec), RAG_OK);
    q.mode = RAG_MODE_DEFAULT;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &hyb), RAG_OK);
    assert_int_equal(f->w->lex_calls, 1); /* asked, and it had nothing */
    assert_int_equal(hyb->count, 6);
    assert_int_equal(vec->count, 6);
    const double w = f->cfg.hybrid_lexical_weight;
    for (size_t i = 0; i < hyb->count; i++) {
        assert_string_equal(hyb->items[i].doc_id, vec->items[i].doc_id);
        assert_int_equal(hyb->items[i].chunk, vec->items[i].chunk);
        assert_float_equal(hyb->items[i].score,
                           (1 - w) * vec->items[i].score / vec->items[0].score, 1e-5);
    }
    rag_retrieve_results_free(vec);
    rag_retrieve_results_free(hyb);

    /* the other way round: nothing on the vector side */
    f->w->fixed_scores = 1;
    for (size_t i = 0; i < f->w->nchunks; i++) {
        f->w->chunks[i].vscore = 0;
        f->w->chunks[i].lscore = (float)(i % 5);
    }
    q = mquery("whatever", 4, RAG_MODE_HYBRID);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &hyb), RAG_OK);
    assert_int_equal(hyb->count, 4);
    for (size_t i = 0; i < 3; i++) /* three chunks have lscore 4, the best */
        assert_float_equal(hyb->items[i].score, w, 1e-5);
    assert_float_equal(hyb->items[3].score, w * 3 / 4, 1e-5);
    rag_retrieve_results_free(hyb);
    /* nothing on either side: no results */
    for (size_t i = 0; i < f->w->nchunks; i++)
        f->w->chunks[i].lscore = 0;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &hyb), RAG_OK);
    assert_int_equal(hyb->count, 0);
    rag_retrieve_results_free(hyb);
}

static void test_cache_key_per_mode(void **state)
{
    fixture *f = *state;
    fixed_world(f);
    open_rt(f);
    rag_search_mode modes[] = {RAG_MODE_VECTOR, RAG_MODE_LEXICAL, RAG_MODE_HYBRID};
    rag_results *first[3] = {NULL, NULL, NULL};
    rag_retrieve_stats st;
    for (int m = 0; m < 3; m++) {
        rag_query q = mquery("same text", 3, modes[m]);
        assert_int_equal(rag_retrieve_search(f->rt, &q, &first[m]), RAG_OK);
        rag_retrieve__stats(f->rt, &st);
        assert_int_equal(st.cache_misses, (uint64_t)m + 1); /* each mode its own key */
        assert_int_equal(st.cache_hits, 0);
    }
    /* different answers per mode, so a shared key would have been visible */
    assert_string_equal(first[0]->items[0].doc_id, "doc-00");
    assert_string_equal(first[1]->items[0].doc_id, "doc-02");
    assert_true(first[1]->items[0].score == 8.0f);
    assert_true(first[2]->items[0].score < 1.0f);
    long vcalls = f->w->search_calls, lcalls = f->w->lex_calls;
    for (int m = 0; m < 3; m++) {
        rag_query q = mquery("same text", 3, modes[m]);
        rag_results *r = NULL;
        assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
        assert_results_equal(r, first[m]);
        rag_retrieve_results_free(r);
    }
    /* DEFAULT is HYBRID: the hybrid entry answers it */
    rag_query q = mquery("same text", 3, RAG_MODE_DEFAULT);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_results_equal(r, first[2]);
    rag_retrieve_results_free(r);
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 4);
    assert_int_equal(f->w->search_calls, vcalls);
    assert_int_equal(f->w->lex_calls, lcalls);
    rag_retrieve_close(f->rt);
    f->rt = NULL;

    /* the cache persists; reopened with another fusion weight, the hybrid entry is not used
     * (its scores were computed with the old weight) but the single-side ones are */
    f->cfg.hybrid_lexical_weight = 0.5f;
    open_rt(f);
    for (int m = 0; m < 3; m++) {
        q = mquery("same text", 3, modes[m]);
        assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
        if (m < 2)
            assert_results_equal(r, first[m]);
        else
            assert_float_equal(r->items[0].score, 0.5 + 0.5 / 3.0, 1e-5);
        rag_retrieve_results_free(r);
    }
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.cache_hits, 2);
    assert_int_equal(st.cache_misses, 1);
    for (int m = 0; m < 3; m++)
        rag_retrieve_results_free(first[m]);
}

static void test_cache_counters(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    uint64_t hits = 99, misses = 99;
    rag_retrieve_stats_get(f->rt, &hits, &misses);
    assert_int_equal(hits, 0);
    assert_int_equal(misses, 0);
    rag_query q = mquery("rivers and boats", 3, RAG_MODE_DEFAULT);
    rag_results *r = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
        rag_retrieve_results_free(r);
    }
    rag_retrieve_stats_get(f->rt, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 1);
    /* a stale entry (a cached hit deleted in ingest) went to the index: a miss */
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    fr_find_doc(f->w, r->items[0].doc_id)->deleted = 1;
    rag_retrieve_results_free(r);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    rag_retrieve_results_free(r);
    rag_retrieve_stats_get(f->rt, &hits, &misses);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 2);
    /* without a cache every search is a miss */
    rag_retrieve__set_cache_max(f->rt, 0);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    rag_retrieve_results_free(r);
    rag_retrieve__set_cache_max(f->rt, 100);
    f->w->epoch_fails = 1; /* no epoch, no cache */
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    rag_retrieve_results_free(r);
    rag_retrieve_stats_get(f->rt, &hits, &misses);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 4);
    /* a failed search is not counted as a hit */
    f->w->epoch_fails = 0;
    f->w->lex_fail = RAG_EINDEX;
    q.text = "something new";
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINDEX);
    rag_retrieve_stats_get(f->rt, &hits, &misses);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 5);
    f->w->lex_fail = 0;
    /* a clean close adds this handle's counts to the root's: the next handle starts there */
    rag_retrieve_close(f->rt);
    f->rt = NULL;
    open_rt(f);
    rag_retrieve_stats_get(f->rt, &hits, &misses);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 5);
    /* NULL-tolerant */
    rag_retrieve_stats_get(f->rt, NULL, &misses);
    rag_retrieve_stats_get(NULL, &hits, &misses);
    assert_int_equal(hits, 0);
    assert_int_equal(misses, 0);
}

static void test_hybrid_requery_after_deletes(void **state)
{
    fixture *f = *state;
    populate(f, 100); /* 200 chunks; every chunk mentions "document" and "chunk" */
    open_rt(f);
    rag_retrieve__set_cache_max(f->rt, 0);
    /* delete 90 documents: far more than the first page (80 per side) can absorb */
    for (size_t i = 0; i < 90; i++)
        f->w->docs[i].deleted = 1;
    rag_query q = mquery("chunk of document about jazz music", 20, RAG_MODE_HYBRID);
    rag_results *r = NULL;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 20);
    assert_sorted(r);
    for (size_t i = 0; i < r->count; i++)
        assert_int_equal(fr_find_doc(f->w, r->items[i].doc_id)->deleted, 0);
    for (size_t i = 0; i < 2; i++) /* the live jazz chunks (doc-93) first */
        assert_non_null(strstr(r->items[i].text, "jazz music"));
    /* it took re-queries, each side with a growing page */
    assert_true(f->w->lex_calls >= 2);
    assert_int_equal(f->w->lex_calls, f->w->search_calls);
    assert_int_equal(f->w->lex_ks[0], 80);
    for (long c = 1; c < f->w->lex_calls; c++) {
        assert_true(f->w->lex_ks[c] > f->w->lex_ks[c - 1]);
        assert_int_equal(f->w->ks[c], f->w->lex_ks[c]);
    }
    rag_retrieve_results_free(r);

    /* lexical mode re-queries the same way */
    long before = f->w->lex_calls;
    q.mode = RAG_MODE_LEXICAL;
    q.k = 15;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 15);
    for (size_t i = 0; i < r->count; i++)
        assert_int_equal(fr_find_doc(f->w, r->items[i].doc_id)->deleted, 0);
    assert_true(f->w->lex_calls - before >= 2);
    rag_retrieve_results_free(r);

    /* a version that vanished from ingest between the index and the snapshot: search again */
    for (size_t i = 0; i < 90; i++)
        f->w->docs[i].deleted = 0;
    find_chunk(f, "doc-99", 0)->text = NULL;
    find_chunk(f, "doc-99", 1)->text = NULL;
    before = f->w->lex_calls;
    q.mode = RAG_MODE_HYBRID;
    q.k = 5;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 5);
    assert_int_equal(f->w->lex_calls - before, 4); /* 1 + 3 bounded retries */
    assert_null(find_result(r, "doc-99", 0));
    rag_retrieve_results_free(r);
}

static void test_invalid_input(void **state)
{
    fixture *f = *state;
    populate(f, 2);
    open_rt(f);
    int embeds = f->pst->calls;
    rag_results *r = NULL;
    rag_query q = query("ok \xC3\x28 bad", 3);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EUTF8);
    assert_null(r);
    assert_non_null(strstr(rag_error_last(), "offset 3"));
    q = query("\xff", 3);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EUTF8);
    q = query(NULL, 3);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINVAL);
    q = query("x", 1001);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINVAL);
    q = query("", 3);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINVAL);
    q = query("x", 3);
    q.version = 0;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EVERSION);
    q.version = RAG_QUERY_VERSION + 1;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EVERSION);
    q = query("x", 3);
    assert_int_equal(rag_retrieve_search(NULL, &q, &r), RAG_EINVAL);
    assert_int_equal(rag_retrieve_search(f->rt, NULL, &r), RAG_EINVAL);
    assert_int_equal(rag_retrieve_search(f->rt, &q, NULL), RAG_EINVAL);
    assert_int_equal(f->w->search_calls, 0);
    assert_int_equal(f->pst->calls, embeds);

    /* provider failures surface as RAG_EPROVIDER / RAG_ETRANSIENT */
    f->pst->fail_marker = "poison";
    q = query("poison pill", 3);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EPROVIDER);
    f->pst->fail_marker = NULL;
    f->pst->transient_failures = 1;
    q = query("transient", 3);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_ETRANSIENT);
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    rag_retrieve_results_free(r);
}

static void test_reader_failures(void **state)
{
    fixture *f = *state;
    populate(f, 4);
    open_rt(f);
    rag_retrieve__set_cache_max(f->rt, 0);
    rag_query q = query("apples", 3);
    rag_results *r = NULL;
    f->w->search_fail = RAG_EINDEX;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_EINDEX);
    assert_non_null(strstr(rag_error_last(), "index search failed: fake search failure"));
    assert_null(r);
    f->w->search_fail = 0;
    f->w->doc_info_fail = RAG_ESTORAGE;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_ESTORAGE);
    assert_non_null(strstr(rag_error_last(), "doc_info"));
    assert_null(r);
    f->w->doc_info_fail = 0;
    f->w->text_fail = RAG_ECORRUPT;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_ECORRUPT);
    assert_non_null(strstr(rag_error_last(), "chunk_text"));
    f->w->text_fail = 0;
    assert_int_equal(rag_retrieve_search(f->rt, &q, &r), RAG_OK);
    assert_int_equal(r->count, 3);
    rag_retrieve_results_free(r);
    /* teardown checks that every begin() had its end() */
}

typedef struct thread_arg {
    fixture *f;
    int id;
    int failures;
} thread_arg;

static void *search_thread(void *p)
{
    thread_arg *a = p;
    /* every chunk matches "chunk": enough hits in each mode, lexical included */
    static const char *qs[] = {"chunk apples", "chunk rivers", "chunk jazz music",
                               "chunk tax law", "chunk bread"};
    for (int i = 0; i < 60; i++) {
        rag_query q = mquery(qs[(i + a->id) % 5], 5, (rag_search_mode)(a->id % 4));
        rag_results *r = NULL;
        if (rag_retrieve_search(a->f->rt, &q, &r) != RAG_OK || r->count != 5)
            a->failures++;
        rag_retrieve_results_free(r);
        if (i % 20 == 0 && a->id == 0)
            __atomic_add_fetch(&a->f->w->epoch, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void test_concurrent_searches(void **state)
{
    fixture *f = *state;
    populate(f, 8);
    open_rt(f);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){f, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, search_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    rag_retrieve_stats st;
    rag_retrieve__stats(f->rt, &st);
    assert_int_equal(st.searches, 240);
    assert_true(st.cache_hits > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_order_and_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acl_passthrough, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_dropped_and_requery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requery_bounded_when_all_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_hit_and_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_nfc_key_and_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_cap_and_epoch_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modes_without_lexical_side, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lexical_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fusion_arithmetic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weights_reproduce_single_sides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_side_without_hits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_key_per_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hybrid_requery_after_deletes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_searches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
