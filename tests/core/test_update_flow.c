/*
 * The update-flow proof (docs/update-flow.md): updating an indexed document costs exactly
 * three asynchronous messages -- doc.chunked (ingest -> embed), doc.embedded (embed -> index),
 * doc.indexed (index -> ingest) -- and a delete exactly two (doc.deleted, doc.indexed).
 *
 * How it counts: the embedded LMDB broker is created here and wrapped in a transport whose
 * publish() counts messages per topic before forwarding (and whose fetch() counts deliveries);
 * the wrapper goes to rag_open() through rag_options.transport.  Every message between modules
 * passes through publish(), because modules only talk through their outboxes and the relay.
 *
 * It also counts durable commits (fdatasync/fsync calls, attributed to the env directory of
 * the file descriptor) during the update, and checks what the reader sees on the way: the old
 * version until the switch (no gap), never both versions (no duplicate), deletes at once.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ragcore/ragcore.h"
#include "rag_common.h"
#include "rag_events.h"
#include "rag_queue.h"
#include "test_support.h"

#define DIM 64

/* ---- fsync counting ------------------------------------------------------------------------ */

/* LMDB makes a commit durable with fdatasync() on the data file (the meta page then goes
 * through an O_DSYNC descriptor), so fdatasync calls per env = durable commits per env.  The
 * executable's definitions interpose on the shared liblmdb's calls. */
enum { FS_INGEST, FS_EMBED, FS_INDEX, FS_QUEUE, FS_OTHER, FS_N };
static const char *const fs_names[FS_N] = {"ingest", "embed", "index", "queue", "other"};
static atomic_int fs_counting;
static atomic_long fs_counts[FS_N];

static void fs_count(int fd)
{
    if (!atomic_load(&fs_counting))
        return;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    int which = FS_OTHER;
    if (n > 0) {
        path[n] = 0;
        for (int i = 0; i < FS_OTHER; i++) {
            char needle[32];
            snprintf(needle, sizeof needle, "/%s/", fs_names[i]);
            if (strstr(path, needle)) {
                which = i;
                break;
            }
        }
    }
    atomic_fetch_add(&fs_counts[which], 1);
}

__attribute__((visibility("default"))) int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    fs_count(fd);
    return real(fd);
}

__attribute__((visibility("default"))) int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    fs_count(fd);
    return real(fd);
}

static void fs_reset(void)
{
    for (int i = 0; i < FS_N; i++)
        atomic_store(&fs_counts[i], 0);
}

static long fs_total(void)
{
    long t = 0;
    for (int i = 0; i < FS_N; i++)
        t += atomic_load(&fs_counts[i]);
    return t;
}

/* ---- the counting transport ------------------------------------------------------------------ */

static const char *const topics[] = {RAG_TOPIC_CHUNKED, RAG_TOPIC_EMBEDDED, RAG_TOPIC_INDEXED,
                                     RAG_TOPIC_DELETED};
#define N_TOPICS 4

typedef struct counting {
    rag_queue_transport *inner; /* the embedded broker (heap struct + state) */
    atomic_long published[N_TOPICS + 1]; /* last slot: any other topic */
    atomic_long delivered[N_TOPICS + 1];
    atomic_int hold[N_TOPICS + 1]; /* 1: fetch() of that topic delivers nothing */
} counting;

static int topic_slot(const char *topic)
{
    for (int i = 0; i < N_TOPICS; i++)
        if (strcmp(topic, topics[i]) == 0)
            return i;
    return N_TOPICS;
}

static int ct_publish(void *state, const rag_queue_message *msgs, size_t n)
{
    counting *ct = state;
    int rc = ct->inner->publish(ct->inner->state, msgs, n);
    if (rc == 0) /* count what the broker accepted: a failed publish is retried by the relay */
        for (size_t i = 0; i < n; i++)
            atomic_fetch_add(&ct->published[topic_slot(msgs[i].topic)], 1);
    return rc;
}

static int ct_fetch(void *state, const char *topic, size_t max, uint32_t lease_ms,
                    rag_queue_message *out, size_t *n_out)
{
    counting *ct = state;
    if (atomic_load(&ct->hold[topic_slot(topic)])) {
        *n_out = 0; /* held back: stays ready in the broker */
        return RAG_OK;
    }
    int rc = ct->inner->fetch(ct->inner->state, topic, max, lease_ms, out, n_out);
    if (rc == 0 && *n_out)
        atomic_fetch_add(&ct->delivered[topic_slot(topic)], (long)*n_out);
    return rc;
}

static int ct_ack(void *state, const rag_queue_message *msgs, size_t n)
{
    counting *ct = state;
    return ct->inner->ack(ct->inner->state, msgs, n);
}

static int ct_nak(void *state, const rag_queue_message *msg, uint32_t delay_ms)
{
    counting *ct = state;
    return ct->inner->nak(ct->inner->state, msg, delay_ms);
}

static void ct_release(void *state, rag_queue_message *msgs, size_t n)
{
    counting *ct = state;
    ct->inner->release(ct->inner->state, msgs, n);
}

static int ct_depth(void *state, const char *topic, rag_queue_depth *out)
{
    counting *ct = state;
    return ct->inner->depth(ct->inner->state, topic, out);
}

static int ct_wait(void *state, const char *topic, uint32_t timeout_ms)
{
    counting *ct = state;
    if (!ct->inner->wait) {
        usleep(1000);
        return RAG_OK;
    }
    return ct->inner->wait(ct->inner->state, topic, timeout_ms);
}

static void ct_wake_all(void *state)
{
    counting *ct = state;
    if (ct->inner->wake_all)
        ct->inner->wake_all(ct->inner->state);
}

static void ct_free(void *state)
{
    counting *ct = state;
    if (ct->inner->free)
        ct->inner->free(ct->inner->state);
    free(ct->inner);
    free(ct);
}

static void ct_reset(counting *ct)
{
    for (int i = 0; i <= N_TOPICS; i++) {
        atomic_store(&ct->published[i], 0);
        atomic_store(&ct->delivered[i], 0);
    }
}

static long ct_total(counting *ct)
{
    long t = 0;
    for (int i = 0; i <= N_TOPICS; i++)
        t += atomic_load(&ct->published[i]);
    return t;
}

static void ct_print(counting *ct, const char *what)
{
    printf("%s: %ld messages:", what, ct_total(ct));
    for (int i = 0; i < N_TOPICS; i++)
        printf(" %s=%ld (delivered %ld)", topics[i], atomic_load(&ct->published[i]),
               atomic_load(&ct->delivered[i]));
    printf(" other=%ld\n", atomic_load(&ct->published[N_TOPICS]));
}

static void fs_print(const char *what)
{
    printf("%s: %ld durable commits (fdatasync/fsync):", what, fs_total());
    for (int i = 0; i < FS_N; i++)
        printf(" %s=%ld", fs_names[i], atomic_load(&fs_counts[i]));
    printf("\n");
}

/* ---- fixture ------------------------------------------------------------------------------- */

typedef struct fixture {
    char *root;
    rag_ctx *ctx;
    counting *ct;                /* owned by ctx */
    rag_fake_provider_state *fs; /* owned by ctx */
} fixture;

static void open_counting(fixture *f, int no_sync)
{
    rag_options o;
    rag_options_init(&o);
    o.no_sync = no_sync;
    rag_config cfg;
    assert_int_equal(rag_config_init(&cfg, f->root, &o), RAG_OK);
    rag_queue_transport *inner = NULL;
    int rc = rag_queue_lmdb_transport_new(&inner, &cfg);
    if (rc)
        fprintf(stderr, "transport: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);

    counting *ct = calloc(1, sizeof *ct);
    assert_non_null(ct);
    ct->inner = inner;
    rag_queue_transport wrap = RAG_QUEUE_TRANSPORT_INIT;
    wrap.state = ct;
    wrap.publish = ct_publish;
    wrap.fetch = ct_fetch;
    wrap.ack = ct_ack;
    wrap.nak = ct_nak;
    wrap.release = ct_release;
    wrap.depth = ct_depth;
    wrap.wait = ct_wait;
    wrap.wake_all = ct_wake_all;
    wrap.free = ct_free;
    o.transport = &wrap; /* copied by rag_open, which owns ct from here on */

    rag_embed_provider *p = rag_fake_provider_new(DIM, &f->fs);
    o.provider = p;
    rc = rag_open(&f->ctx, f->root, &o);
    free(p);
    if (rc)
        fprintf(stderr, "rag_open: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
    f->ct = ct;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->root = rag_test_tmpdir("update-flow");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    atomic_store(&fs_counting, 0);
    rag_close(f->ctx);
    rag_test_rmtree(f->root);
    free(f->root);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------- */

/* Ten paragraphs of ~450 bytes: several chunks, so that an edit of the last paragraph
 * leaves the first chunks (and their cached vectors) alone. */
static char *make_doc(const char *last_words)
{
    static const char *const topics_text[] = {"glaciers", "volcanoes", "rivers",  "deserts",
                                              "forests",  "reefs",     "tundras", "canyons",
                                              "marshes",  "steppes"};
    size_t cap = 16384, len = 0;
    char *s = malloc(cap);
    for (int p = 0; p < 10; p++) {
        for (int sent = 0; sent < 8; sent++)
            len += (size_t)snprintf(s + len, cap - len,
                                    "Paragraph %d studies %s, sentence %d, with plain words. ",
                                    p, topics_text[p], sent);
        if (p == 9)
            len += (size_t)snprintf(s + len, cap - len, "%s", last_words);
        len += (size_t)snprintf(s + len, cap - len, "\n\n");
    }
    return s;
}

static void put_doc(rag_ctx *ctx, const char *id, const char *text, uint64_t *ver)
{
    rag_doc d = {0};
    d.id = id;
    d.data = text;
    d.size = strlen(text);
    d.mime = "text/plain";
    int rc = rag_doc_put(ctx, &d, ver);
    if (rc)
        fprintf(stderr, "put: %s (%s)\n", rag_strerror(rc), rag_error_last());
    assert_int_equal(rc, RAG_OK);
}

/* Hits of `doc` for `query` (k = 50): how many, and the set of versions seen (bit v). */
static size_t hits_of(rag_ctx *ctx, const char *query, const char *doc, uint32_t *versions)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = query;
    q.k = 50;
    q.unrestricted = 1;
    rag_results *r = NULL;
    assert_int_equal(rag_search(ctx, &q, &r), RAG_OK);
    size_t n = 0;
    *versions = 0;
    for (size_t i = 0; i < r->count; i++) {
        if (strcmp(r->items[i].doc_id, doc) != 0)
            continue;
        n++;
        assert_true(r->items[i].version < 32);
        *versions |= 1u << r->items[i].version;
    }
    rag_results_free(r);
    return n;
}

static void assert_settled(rag_ctx *ctx, uint64_t docs, uint64_t versions)
{
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(ctx, &st), RAG_OK);
    assert_int_equal(st.documents, docs);
    assert_int_equal(st.versions, versions);
    assert_int_equal(st.vectors, st.chunks); /* every stored chunk indexed, nothing orphaned */
    assert_int_equal(st.dead_letters, 0);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_update_is_three_messages(void **state)
{
    fixture *f = *state;
    open_counting(f, 0); /* durable: the commit count is meaningful */
    char *v1 = make_doc("The first version ends with granite boulders.");
    char *v2 = make_doc("The second version ends with turquoise lagoons instead.");
    uint64_t ver = 0;
    put_doc(f->ctx, "doc", v1, &ver);
    assert_int_equal(ver, 1);
    put_doc(f->ctx, "other", "An unrelated note about kettles and tea.", NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_settled(f->ctx, 2, 2);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    const uint64_t chunks_v1 = st.chunks - 1; /* "other" is one chunk */
    printf("version 1: %llu chunks\n", (unsigned long long)chunks_v1);
    assert_true(chunks_v1 >= 2);
    ct_print(f->ct, "first put of two documents");
    assert_int_equal(atomic_load(&f->ct->published[0]), 2);
    assert_int_equal(atomic_load(&f->ct->published[1]), 2);
    assert_int_equal(atomic_load(&f->ct->published[2]), 2);

    /* ---- the update, in steady state ---- */
    ct_reset(f->ct);
    fs_reset();
    long embedded_before = f->fs->texts_embedded;
    atomic_store(&fs_counting, 1);
    put_doc(f->ctx, "doc", v2, &ver);
    assert_int_equal(ver, 2);

    /* Before the pipeline ran: version 1 is still what searches find (no gap). */
    uint32_t seen = 0;
    assert_true(hits_of(f->ctx, "glaciers volcanoes rivers deserts forests paragraph", "doc",
                        &seen) > 0);
    assert_int_equal(seen, 1u << 1);

    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    atomic_store(&fs_counting, 0);
    ct_print(f->ct, "update (steady state)");
    fs_print("update (steady state)");
    long fresh = f->fs->texts_embedded - embedded_before;
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    const uint64_t chunks_v2 = st.chunks - 1;
    printf("update: version 2 has %llu chunks, %ld embedded by the provider (the rest from "
           "embed's cache)\n",
           (unsigned long long)chunks_v2, fresh);

    assert_int_equal(ct_total(f->ct), 3);
    assert_int_equal(atomic_load(&f->ct->published[0]), 1); /* doc.chunked */
    assert_int_equal(atomic_load(&f->ct->published[1]), 1); /* doc.embedded */
    assert_int_equal(atomic_load(&f->ct->published[2]), 1); /* doc.indexed */
    assert_int_equal(atomic_load(&f->ct->published[3]), 0); /* doc.deleted */
    for (int i = 0; i < N_TOPICS; i++) /* each delivered once: no redelivery */
        assert_int_equal(atomic_load(&f->ct->delivered[i]), atomic_load(&f->ct->published[i]));
    /* only the edited chunk(s) went to the provider */
    assert_true(fresh >= 1);
    assert_true((uint64_t)fresh < chunks_v2);
    assert_true(fs_total() > 0);

    /* After: only version 2 (no duplicate), version 1's text freed, nothing orphaned. */
    assert_true(hits_of(f->ctx, "glaciers volcanoes rivers deserts forests paragraph", "doc",
                        &seen) > 0);
    assert_int_equal(seen, 1u << 2);
    assert_settled(f->ctx, 2, 2);

    /* ---- the delete ---- */
    ct_reset(f->ct);
    assert_int_equal(rag_doc_delete(f->ctx, "doc"), RAG_OK);
    /* visible at once, before any message was consumed */
    assert_int_equal(hits_of(f->ctx, "glaciers volcanoes rivers deserts forests paragraph",
                             "doc", &seen),
                     0);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    ct_print(f->ct, "delete");
    assert_int_equal(ct_total(f->ct), 2);
    assert_int_equal(atomic_load(&f->ct->published[3]), 1); /* doc.deleted */
    assert_int_equal(atomic_load(&f->ct->published[2]), 1); /* doc.indexed(deleted) */
    assert_int_equal(hits_of(f->ctx, "glaciers volcanoes rivers deserts forests paragraph",
                             "doc", &seen),
                     0);
    assert_settled(f->ctx, 1, 1);
    free(v1);
    free(v2);
}

/* The moment between the index switch and ingest's garbage collection: doc.indexed is held
 * back in the broker, so version 1's text still exists in ingest -- and searches still see
 * only version 2, because the index dropped version 1's labels in the same transaction (and
 * the same write-locked apply) that added version 2's. */
static void test_switch_before_gc(void **state)
{
    fixture *f = *state;
    open_counting(f, 1);
    char *v1 = make_doc("Version one ends with granite boulders.");
    char *v2 = make_doc("Version two ends with turquoise lagoons.");
    put_doc(f->ctx, "doc", v1, NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    atomic_store(&f->ct->hold[2], 1); /* doc.indexed */
    put_doc(f->ctx, "doc", v2, NULL);
    assert_int_equal(rag_drain(f->ctx, 300), RAG_ETIMEOUT); /* doc.indexed waits */
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    assert_int_equal(rag_status(f->ctx, &st), RAG_OK);
    assert_int_equal(st.versions, 2); /* version 1 not yet freed */
    uint32_t seen = 0;
    assert_true(hits_of(f->ctx, "glaciers volcanoes rivers deserts forests paragraph", "doc",
                        &seen) > 0);
    assert_int_equal(seen, 1u << 2);
    atomic_store(&f->ct->hold[2], 0);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    assert_settled(f->ctx, 1, 1);
    free(v1);
    free(v2);
}

/* Two updates before the pipeline runs: each version is its own three messages (one per
 * version per hop, nothing coalesced), and the newest wins. */
static void test_two_updates_in_flight(void **state)
{
    fixture *f = *state;
    open_counting(f, 1);
    char *v1 = make_doc("Version one.");
    char *v2 = make_doc("Version two, with copper kettles.");
    char *v3 = make_doc("Version three, with silver spoons.");
    put_doc(f->ctx, "doc", v1, NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    ct_reset(f->ct);
    uint64_t ver = 0;
    put_doc(f->ctx, "doc", v2, &ver);
    assert_int_equal(ver, 2);
    put_doc(f->ctx, "doc", v3, &ver);
    assert_int_equal(ver, 3);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    ct_print(f->ct, "two updates in flight");
    assert_int_equal(ct_total(f->ct), 6);
    assert_int_equal(atomic_load(&f->ct->published[0]), 2);
    assert_int_equal(atomic_load(&f->ct->published[1]), 2);
    assert_int_equal(atomic_load(&f->ct->published[2]), 2);
    uint32_t seen = 0;
    assert_true(hits_of(f->ctx, "glaciers volcanoes rivers deserts forests paragraph", "doc",
                        &seen) > 0);
    assert_int_equal(seen, 1u << 3);
    assert_settled(f->ctx, 1, 1);
    free(v1);
    free(v2);
    free(v3);
}

/* Re-putting identical bytes is still a new version: three messages, zero provider calls. */
static void test_same_bytes_update(void **state)
{
    fixture *f = *state;
    open_counting(f, 1);
    char *v1 = make_doc("Unchanged.");
    put_doc(f->ctx, "doc", v1, NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    ct_reset(f->ct);
    long before = f->fs->texts_embedded;
    put_doc(f->ctx, "doc", v1, NULL);
    assert_int_equal(rag_drain(f->ctx, 30000), RAG_OK);
    ct_print(f->ct, "update with identical bytes");
    assert_int_equal(ct_total(f->ct), 3);
    assert_int_equal(f->fs->texts_embedded - before, 0);
    assert_settled(f->ctx, 1, 1);
    free(v1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_update_is_three_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_before_gc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_updates_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_bytes_update, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
