/*
 * bench_update: how long until an updated document is what searches return, and what one
 * update costs in queue messages and durable commits.
 *
 *   bench_update            (no arguments; sizes from the environment, see bench/README.md)
 *
 * What it measures, in one run, once with fsync on (default options) and once with
 * no_sync = 1 (secondary figures), each on a fresh root removed at the end:
 *   1. Update-to-visible latency with the workers running (rag_start): N documents
 *      (~3 KB, five paragraphs, one unique token each) are put and drained; then U updates,
 *      each of a random document (new first paragraph keeping the token and carrying a new
 *      marker word, plus one other paragraph rewritten).  t0 = when rag_doc_put() returns;
 *      rag_search(token + marker, k=5, unrestricted) is polled (50 us apart) until a hit of
 *      the document has the new version and no hit of it has an older one: t1.
 *      -> p50/p90/p99/max of t1 - t0, and rag_doc_put()'s own latency.
 *   2. The naive inline baseline on the same root: workers stopped, rag_doc_put(),
 *      rag_drain(ctx, 0) on the calling thread, one rag_search() confirming the version.
 *   3. Cost per update in steady state: the root reopened with the embedded LMDB broker
 *      wrapped in a counting transport (rag_options.transport), workers stopped, C updates
 *      each followed by rag_drain(); broker publishes per topic and fsync()/fdatasync()
 *      calls per module env (interposed in this executable) are counted.
 *
 * Everything goes through the public API (ragcore/ragcore.h) except step 3's construction of
 * the broker it wraps: the LMDB broker is only reachable through rag_open()'s default, so the
 * bench calls the queue module's constructor (src/queue/api/rag_queue.h) the way
 * tests/core/test_update_flow.c does, and therefore links the static library.
 *
 * Output: one JSON object per line on stdout, a summary on stderr.  No assertions on the
 * figures; the exit status is non-zero only when a step fails or an update never shows.
 */
#define _GNU_SOURCE /* dlsym(RTLD_NEXT), mkdtemp */

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ragcore/providers.h>
#include <ragcore/ragcore.h>

#include "bench_util.h"

#include "rag_common.h" /* rag_config_init: the broker constructor takes a resolved config */
#include "rag_queue.h"  /* rag_queue_lmdb_transport_new: the broker to wrap */

#define NPARA 5          /* paragraphs per document */
#define SEARCH_K 5       /* results per poll */
#define POLL_US 50       /* pause between polls: well under the 100 us the brief allows */
#define VISIBLE_TIMEOUT_S 30.0
#define WARMUP 10        /* unrecorded updates before each timed phase */
#define SEED 0x5eedu
#define EMBED_DIM 384    /* rag_options default embed_dim: token buckets are chosen for it */

static const char *const ENV_NAMES[] = {"ingest", "embed", "index", "retrieve", "queue",
                                        "other"};
#define NENV 6

/* ------------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_update: out of memory\n");
        exit(2);
    }
    return p;
}

static size_t env_size(const char *name, size_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    return (end && *end == 0 && v > 0) ? (size_t)v : dflt;
}

static void pause_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

/* splitmix64: deterministic, so two runs put the same documents and updates. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------------------------------
 * fsync counting.  LMDB makes a commit durable with fdatasync() on the data file (the meta
 * page then goes through an O_DSYNC descriptor, not counted here), so these calls are the
 * durable commits.  The executable's definitions interpose on the shared liblmdb's calls.
 * The total is always counted (one atomic add); attribution to a module env needs a
 * readlink, so it is switched on only for the cost phase.
 * ---------------------------------------------------------------------------------------- */

static atomic_int fs_attrib;
static atomic_long fs_total;
static atomic_long fs_by_env[NENV];

static void fs_count(int fd)
{
    atomic_fetch_add(&fs_total, 1);
    if (!atomic_load(&fs_attrib))
        return;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    int which = NENV - 1;
    if (n > 0) {
        path[n] = 0;
        for (int i = 0; i < NENV - 1; i++) {
            char needle[32];
            snprintf(needle, sizeof needle, "/%s/", ENV_NAMES[i]);
            if (strstr(path, needle)) {
                which = i;
                break;
            }
        }
    }
    atomic_fetch_add(&fs_by_env[which], 1);
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
    atomic_store(&fs_total, 0);
    for (int i = 0; i < NENV; i++)
        atomic_store(&fs_by_env[i], 0);
}

/* ------------------------------------------------------------------------------------------
 * Counting transport: forwards every slot to the embedded broker and counts what publish()
 * accepted (per topic) and what fetch() delivered.  Modules only talk through their outboxes
 * and the relay, so every message between modules passes through publish().
 * ---------------------------------------------------------------------------------------- */

#define CT_TOPICS 8

typedef struct counting {
    rag_queue_transport *inner;
    pthread_mutex_t mu; /* topic table; publish/fetch may run on several threads */
    size_t ntopics;
    char topic[CT_TOPICS][RAG_QUEUE_TOPIC_MAX];
    long published[CT_TOPICS];
    long delivered[CT_TOPICS];
} counting;

static void ct_add(counting *ct, const char *topic, long n, int delivered)
{
    pthread_mutex_lock(&ct->mu);
    size_t i = 0;
    while (i < ct->ntopics && strcmp(ct->topic[i], topic) != 0)
        i++;
    if (i == ct->ntopics && i < CT_TOPICS - 1) {
        snprintf(ct->topic[i], sizeof ct->topic[i], "%s", topic);
        ct->ntopics++;
    } else if (i == ct->ntopics) {
        i = CT_TOPICS - 1; /* overflow bucket; never reached with ragcore's four topics */
        snprintf(ct->topic[i], sizeof ct->topic[i], "other");
    }
    if (delivered)
        ct->delivered[i] += n;
    else
        ct->published[i] += n;
    pthread_mutex_unlock(&ct->mu);
}

static int ct_publish(void *state, const rag_queue_message *msgs, size_t n)
{
    counting *ct = state;
    int rc = ct->inner->publish(ct->inner->state, msgs, n);
    if (rc == 0) /* a failed publish is retried by the relay: count what was accepted */
        for (size_t i = 0; i < n; i++)
            ct_add(ct, msgs[i].topic, 1, 0);
    return rc;
}

static int ct_fetch(void *state, const char *topic, size_t max, uint32_t lease_ms,
                    rag_queue_message *out, size_t *n_out)
{
    counting *ct = state;
    int rc = ct->inner->fetch(ct->inner->state, topic, max, lease_ms, out, n_out);
    if (rc == 0 && *n_out)
        ct_add(ct, topic, (long)*n_out, 1);
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
        pause_us(1000);
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
    pthread_mutex_destroy(&ct->mu);
    free(ct);
}

static void ct_reset(counting *ct)
{
    pthread_mutex_lock(&ct->mu);
    memset(ct->published, 0, sizeof ct->published);
    memset(ct->delivered, 0, sizeof ct->delivered);
    pthread_mutex_unlock(&ct->mu);
}

/* ------------------------------------------------------------------------------------------
 * Corpus: N documents of five paragraphs of plain sentences (~3 KB).  Paragraph 0 names the
 * document's unique token and the marker word of its current version; an update rewrites
 * paragraph 0 (new marker) and one other paragraph, like an edit in two places, so embed's
 * cache absorbs the untouched chunks as it would in real use.
 * ---------------------------------------------------------------------------------------- */

static const char *const WORDS[] = {
    "analysis",  "basin",     "carbon",    "delta",     "erosion",   "fauna",     "glacier",
    "harbor",    "isotope",   "juniper",   "karst",     "lagoon",    "meadow",    "nitrogen",
    "orchard",   "plateau",   "quarry",    "rainfall",  "sediment",  "tundra",    "upland",
    "valley",    "wetland",   "yield",     "zephyr",    "aquifer",   "boulder",   "canopy",
    "drainage",  "estuary",   "fjord",     "granite",   "humus",     "irrigation", "jetty",
    "kelp",      "limestone", "moraine",   "nutrient",  "oxbow",     "peat",      "quartz",
    "ridge",     "salinity",  "terrace",   "uplift",    "vegetation", "watershed", "xeric",
    "yardang",   "zone",      "measured",  "observed",  "recorded",  "sampled",   "compared",
    "mapped",    "surveyed",  "estimated", "modelled",  "seasonal",  "annual",    "coastal",
    "northern",  "southern",  "eastern",   "western",   "shallow",   "deep",      "rapid",
    "gradual",   "dense",     "sparse",    "fertile",   "arid",      "humid",     "frozen",
    "thawing",   "migrating", "nesting",   "grazing",   "flooding",  "drought",   "storm",
    "current",   "tide",      "wind",      "temperature", "pressure", "density",  "flow",
    "channel",   "slope",     "soil",      "forest",    "river",     "lake",      "island",
    "station",   "transect",  "plot",      "sample",    "survey",    "record",    "trend",
    "increase",  "decrease",  "variation", "gradient",  "boundary",  "cluster",   "pattern",
    "network",   "habitat",   "species",   "population", "community", "biomass",  "cover",
    "survival",  "growth",    "decline",   "recovery",  "exposure",  "runoff",    "silt",
};
#define NWORDS (sizeof WORDS / sizeof WORDS[0])

/* Words the templates add around the generated sentences. */
static const char *const TEMPLATE_WORDS[] = {"record", "revision", "filed", "as"};
#define NTEMPLATE (sizeof TEMPLATE_WORDS / sizeof TEMPLATE_WORDS[0])

typedef struct bdoc {
    char id[32];
    char token[16];  /* unique per document, kept by every version */
    char marker[16]; /* unique per version */
    int token_bucket, marker_bucket;
    char *para[NPARA];
    uint64_t version; /* the latest version put */
} bdoc;

/*
 * Why buckets: this build's default search is the vector side alone, and the built-in hash
 * provider maps each distinct word to one signed bucket of EMBED_DIM.  A unique token that
 * shared its bucket with a vocabulary word (or another document's token) would make the query
 * match unrelated chunks as well as its own, and a two-word query could then miss its
 * document in the top k.  So tokens and markers are drawn at random and kept only when the
 * public provider puts them in a bucket no vocabulary word uses (and, while any is left, no
 * other token uses): the query then selects its document by the vector side alone, as it
 * would by BM25.  Tokens and markers are still ordinary random words.
 */
typedef struct corpus {
    bdoc *docs;
    size_t n;
    uint64_t rng;
    rag_embed_provider hash;            /* the built-in provider, as rag_open() creates it */
    unsigned char vocab_bucket[EMBED_DIM]; /* 1: some vocabulary word lands here */
    int token_owner[EMBED_DIM];          /* document whose token lands here, or -1 */
    double bytes_total; /* sum of document sizes put, for the average */
    size_t bytes_count;
} corpus;

/* The bucket the hash provider puts a single word into, or -1 (e.g. a stopword). */
static int word_bucket(corpus *c, const char *word)
{
    float v[EMBED_DIM];
    size_t len = strlen(word);
    if (c->hash.embed(c->hash.state, &word, &len, 1, v) != 0)
        return -1;
    int best = -1;
    for (int i = 0; i < EMBED_DIM; i++)
        if (v[i] != 0.0f && (best < 0 || fabsf(v[i]) > fabsf(v[best])))
            best = i;
    return best;
}

/* A random word "<prefix><6 letters>" whose bucket is used by no vocabulary word and is not
 * `avoid_bucket`, preferably one no document's token uses (given up after 5000 draws, which
 * only happens when there are more documents than free buckets). */
static int pick_word(corpus *c, const char *prefix, char out[16], int avoid_bucket)
{
    for (int tries = 0; tries < 20000; tries++) {
        snprintf(out, 16, "%s", prefix);
        size_t at = strlen(out);
        for (int i = 0; i < 6; i++)
            out[at + (size_t)i] = (char)('a' + rng_next(&c->rng) % 26);
        out[at + 6] = 0;
        int b = word_bucket(c, out);
        if (b < 0 || c->vocab_bucket[b] || b == avoid_bucket)
            continue;
        if (c->token_owner[b] >= 0 && tries < 5000)
            continue; /* prefer a bucket no document's token uses */
        return b;
    }
    return -1;
}

/* Sentences of 8..15 words until the paragraph reaches `target` bytes. */
static char *make_para(uint64_t *rng, const char *lead, const char *tail, size_t target)
{
    size_t cap = target + 512, len = 0;
    char *s = xmalloc(cap);
    len += (size_t)snprintf(s, cap, "%s", lead ? lead : "");
    while (len < target) {
        if (len + 256 > cap) { /* a sentence is at most 15 * 12 + 2 bytes */
            cap *= 2;
            char *t = realloc(s, cap);
            if (!t) {
                free(s);
                fprintf(stderr, "bench_update: out of memory\n");
                exit(2);
            }
            s = t;
        }
        int words = 8 + (int)(rng_next(rng) % 8);
        for (int w = 0; w < words; w++) {
            const char *word = WORDS[rng_next(rng) % NWORDS];
            int n = snprintf(s + len, cap - len, "%s%c%s", w ? " " : "",
                             w ? word[0] : (char)(word[0] - 'a' + 'A'), word + 1);
            len += (size_t)n;
        }
        len += (size_t)snprintf(s + len, cap - len, ". ");
    }
    if (tail) {
        size_t n = strlen(tail);
        if (len + n + 1 > cap) {
            char *t = realloc(s, len + n + 1);
            if (!t) {
                free(s);
                fprintf(stderr, "bench_update: out of memory\n");
                exit(2);
            }
            s = t;
        }
        memcpy(s + len, tail, n + 1);
        len += n;
    } else {
        s[--len] = 0; /* drop the trailing space */
    }
    return s;
}

/* Paragraph 0 of a new version: a new marker; token and marker named at both ends (twice
 * each, so they weigh in the chunk like a title would). */
static int make_head(corpus *c, bdoc *d)
{
    d->marker_bucket = pick_word(c, "vm", d->marker, d->token_bucket);
    if (d->marker_bucket < 0)
        return bench_fail("no free embedding bucket for a version marker");
    char lead[96], tail[96];
    snprintf(lead, sizeof lead, "Record %s, revision %s. ", d->token, d->marker);
    snprintf(tail, sizeof tail, "Filed as %s, revision %s.", d->token, d->marker);
    free(d->para[0]);
    d->para[0] = make_para(&c->rng, lead, tail, 400 + rng_next(&c->rng) % 200);
    return 0;
}

static char *compose(corpus *c, const bdoc *d, size_t *size)
{
    size_t len = 0;
    for (int p = 0; p < NPARA; p++)
        len += strlen(d->para[p]) + 2;
    char *s = xmalloc(len + 1);
    size_t at = 0;
    for (int p = 0; p < NPARA; p++) {
        size_t n = strlen(d->para[p]);
        memcpy(s + at, d->para[p], n);
        at += n;
        if (p + 1 < NPARA) {
            memcpy(s + at, "\n\n", 2);
            at += 2;
        }
    }
    s[at] = 0;
    *size = at;
    c->bytes_total += (double)at;
    c->bytes_count++;
    return s;
}

static void corpus_free(corpus *c)
{
    if (c->docs)
        for (size_t i = 0; i < c->n; i++)
            for (int p = 0; p < NPARA; p++)
                free(c->docs[i].para[p]);
    free(c->docs);
    c->docs = NULL;
    rag_embed_provider_release(&c->hash);
}

static int corpus_init(corpus *c, size_t n, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->rng = seed;
    int rc = rag_embed_cpu_hash_init(&c->hash, EMBED_DIM);
    if (rc)
        return bench_fail_rag("rag_embed_cpu_hash_init", rc);
    for (int b = 0; b < EMBED_DIM; b++)
        c->token_owner[b] = -1;
    for (size_t i = 0; i < NWORDS; i++) {
        int b = word_bucket(c, WORDS[i]);
        if (b >= 0)
            c->vocab_bucket[b] = 1;
    }
    for (size_t i = 0; i < NTEMPLATE; i++) {
        int b = word_bucket(c, TEMPLATE_WORDS[i]);
        if (b >= 0)
            c->vocab_bucket[b] = 1;
    }
    c->n = n;
    c->docs = xmalloc(n * sizeof *c->docs);
    memset(c->docs, 0, n * sizeof *c->docs);
    for (size_t i = 0; i < n; i++) {
        bdoc *d = &c->docs[i];
        snprintf(d->id, sizeof d->id, "doc-%05zu", i);
        d->token_bucket = pick_word(c, "zq", d->token, -1);
        if (d->token_bucket < 0)
            return bench_fail("no free embedding bucket for a document token");
        c->token_owner[d->token_bucket] = (int)i;
        if (make_head(c, d))
            return 1;
        for (int p = 1; p < NPARA; p++)
            d->para[p] = make_para(&c->rng, NULL, NULL, 500 + rng_next(&c->rng) % 300);
    }
    return 0;
}

/* The next version's content of a random document: paragraph 0 with a new marker, and one
 * other paragraph rewritten. */
static bdoc *corpus_edit(corpus *c)
{
    bdoc *d = &c->docs[rng_next(&c->rng) % c->n];
    if (make_head(c, d))
        return NULL;
    int p = 1 + (int)(rng_next(&c->rng) % (NPARA - 1));
    free(d->para[p]);
    d->para[p] = make_para(&c->rng, NULL, NULL, 500 + rng_next(&c->rng) % 300);
    return d;
}

/* ------------------------------------------------------------------------------------------
 * ragcore steps
 * ---------------------------------------------------------------------------------------- */

static int open_root(rag_ctx **ctx, const char *root, int no_sync, counting **ct_out)
{
    rag_options o;
    rag_options_init(&o); /* built-in CPU provider, hash mode, 384-d; IDMap2,Flat */
    o.no_sync = no_sync;
    rag_queue_transport wrap = RAG_QUEUE_TRANSPORT_INIT;
    if (ct_out) {
        rag_config cfg;
        int rc = rag_config_init(&cfg, root, &o);
        if (rc)
            return bench_fail_rag("rag_config_init", rc);
        rag_queue_transport *inner = NULL;
        rc = rag_queue_lmdb_transport_new(&inner, &cfg);
        if (rc)
            return bench_fail_rag("LMDB broker", rc);
        counting *ct = xmalloc(sizeof *ct);
        memset(ct, 0, sizeof *ct);
        pthread_mutex_init(&ct->mu, NULL);
        ct->inner = inner;
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
        o.transport = &wrap; /* copied; rag_open owns ct from here on, even on failure */
        *ct_out = ct;
    }
    int rc = rag_open(ctx, root, &o);
    if (rc)
        return bench_fail_rag("rag_open", rc);
    return 0;
}

static int put_text(rag_ctx *ctx, const bdoc *d, const char *text, size_t size,
                    uint64_t *version)
{
    rag_doc doc = {0};
    doc.id = d->id;
    doc.data = text;
    doc.size = size;
    doc.mime = "text/plain";
    return rag_doc_put(ctx, &doc, version);
}

/* Put every document in batches, then drain: the steady state the updates start from. */
static int load_corpus(rag_ctx *ctx, corpus *c)
{
    enum { BATCH = 50 };
    for (size_t i = 0; i < c->n; i += BATCH) {
        size_t m = c->n - i < BATCH ? c->n - i : BATCH;
        rag_doc docs[BATCH];
        char *texts[BATCH];
        rag_put_result res[BATCH];
        memset(docs, 0, sizeof docs);
        for (size_t j = 0; j < m; j++) {
            size_t size = 0;
            texts[j] = compose(c, &c->docs[i + j], &size);
            docs[j].id = c->docs[i + j].id;
            docs[j].data = texts[j];
            docs[j].size = size;
            docs[j].mime = "text/plain";
        }
        int rc = rag_doc_put_batch(ctx, docs, m, res);
        for (size_t j = 0; j < m; j++)
            free(texts[j]);
        if (rc)
            return bench_fail_rag("rag_doc_put_batch", rc);
        for (size_t j = 0; j < m; j++) {
            if (res[j].code)
                return bench_fail("put %s: %s", docs[j].id, rag_strerror(res[j].code));
            c->docs[i + j].version = res[j].version;
        }
    }
    int rc = rag_drain(ctx, 0);
    return rc ? bench_fail_rag("rag_drain", rc) : 0;
}

/* 1: a hit of `d` has `version` and none has an older one; 0: not yet; -1: error.
 * `verbose`: print the hits (to explain a timeout). */
static int visible(rag_ctx *ctx, const char *query, const char *id, uint64_t version,
                   int verbose)
{
    rag_query q = RAG_QUERY_INIT;
    q.text = query;
    q.k = SEARCH_K;
    q.unrestricted = 1;
    rag_results *r = NULL;
    int rc = rag_search(ctx, &q, &r);
    if (rc) {
        bench_fail_rag("rag_search", rc);
        return -1;
    }
    int have_new = 0, have_old = 0;
    if (verbose)
        for (size_t i = 0; i < r->count; i++)
            fprintf(stderr, "  [%zu] %s v%llu c%u %.4f %.60s\n", i, r->items[i].doc_id,
                    (unsigned long long)r->items[i].version, r->items[i].chunk, r->items[i].score,
                    r->items[i].text);
    for (size_t i = 0; i < r->count; i++) {
        if (strcmp(r->items[i].doc_id, id) != 0)
            continue;
        if (r->items[i].version == version)
            have_new = 1;
        else if (r->items[i].version < version)
            have_old = 1;
    }
    rag_results_free(r);
    return have_new && !have_old;
}

typedef struct phase {
    const char *mode; /* "workers" or "inline" */
    int fsync;
    size_t n;
    double *put_ms, *vis_ms, *total_ms; /* per update */
    long polls;
    long fsyncs;
    size_t late; /* inline: not visible in the search right after rag_drain() */
} phase;

static void phase_alloc(phase *ph, const char *mode, int fsync_on, size_t n)
{
    memset(ph, 0, sizeof *ph);
    ph->mode = mode;
    ph->fsync = fsync_on;
    ph->put_ms = xmalloc(n * sizeof(double));
    ph->vis_ms = xmalloc(n * sizeof(double));
    ph->total_ms = xmalloc(n * sizeof(double));
}

static void phase_free(phase *ph)
{
    free(ph->put_ms);
    free(ph->vis_ms);
    free(ph->total_ms);
    memset(ph, 0, sizeof *ph);
}

/*
 * `count` updates; recorded into `ph` when it is non-NULL.  Workers running: poll until the
 * new version shows.  Workers stopped (`inline_drain`): rag_drain(ctx, 0) first, then the
 * same check, which must pass at once (if not, it is counted and polled like the async case).
 */
static int run_updates(rag_ctx *ctx, corpus *c, size_t count, int inline_drain, phase *ph)
{
    char query[64];
    if (ph)
        fs_reset();
    for (size_t u = 0; u < count; u++) {
        bdoc *d = corpus_edit(c);
        if (!d)
            return 1;
        snprintf(query, sizeof query, "%s %s", d->token, d->marker);
        size_t size = 0;
        char *text = compose(c, d, &size);
        uint64_t version = 0;
        double t_call = bench_now_s();
        int rc = put_text(ctx, d, text, size, &version);
        double t0 = bench_now_s();
        free(text);
        if (rc)
            return bench_fail_rag("rag_doc_put", rc);
        d->version = version;
        if (inline_drain) {
            rc = rag_drain(ctx, 0);
            if (rc)
                return bench_fail_rag("rag_drain", rc);
        }
        long polls = 0;
        for (;;) {
            int v = visible(ctx, query, d->id, version, 0);
            polls++;
            if (v < 0)
                return 1;
            if (v)
                break;
            if (inline_drain && polls == 1 && ph)
                ph->late++;
            if (bench_now_s() - t0 > VISIBLE_TIMEOUT_S) {
                fprintf(stderr, "bench_update: last hits of \"%s\":\n", query);
                visible(ctx, query, d->id, version, 1);
                return bench_fail("%s version %llu not visible after %.0f s (query \"%s\")", d->id,
                            (unsigned long long)version, VISIBLE_TIMEOUT_S, query);
            }
            pause_us(POLL_US);
        }
        double t1 = bench_now_s();
        if (ph) {
            ph->put_ms[ph->n] = (t0 - t_call) * 1e3;
            ph->vis_ms[ph->n] = (t1 - t0) * 1e3;
            ph->total_ms[ph->n] = (t1 - t_call) * 1e3;
            ph->n++;
            ph->polls += polls;
        }
    }
    if (ph)
        ph->fsyncs = atomic_load(&fs_total);
    return 0;
}

typedef struct cost {
    int fsync;
    size_t n;
    long fsyncs;
    long fs_env[NENV];
    size_t ntopics;
    char topic[CT_TOPICS][RAG_QUEUE_TOPIC_MAX];
    long published[CT_TOPICS], delivered[CT_TOPICS];
    long published_total, delivered_total;
} cost;

/* Workers stopped, rag_drain() after each put: messages and durable commits per update. */
static int run_cost(rag_ctx *ctx, counting *ct, corpus *c, size_t count, cost *out)
{
    int rc = rag_drain(ctx, 0); /* nothing should be pending; make sure of it */
    if (rc)
        return bench_fail_rag("rag_drain", rc);
    ct_reset(ct);
    fs_reset();
    atomic_store(&fs_attrib, 1);
    for (size_t u = 0; u < count; u++) {
        bdoc *d = corpus_edit(c);
        if (!d) {
            atomic_store(&fs_attrib, 0);
            return 1;
        }
        size_t size = 0;
        char *text = compose(c, d, &size);
        uint64_t version = 0;
        rc = put_text(ctx, d, text, size, &version);
        free(text);
        if (rc) {
            atomic_store(&fs_attrib, 0);
            return bench_fail_rag("rag_doc_put", rc);
        }
        d->version = version;
        rc = rag_drain(ctx, 0);
        if (rc) {
            atomic_store(&fs_attrib, 0);
            return bench_fail_rag("rag_drain", rc);
        }
    }
    atomic_store(&fs_attrib, 0);
    out->n = count;
    out->fsyncs = atomic_load(&fs_total);
    for (int i = 0; i < NENV; i++)
        out->fs_env[i] = atomic_load(&fs_by_env[i]);
    pthread_mutex_lock(&ct->mu);
    out->ntopics = ct->ntopics;
    memcpy(out->topic, ct->topic, sizeof out->topic);
    memcpy(out->published, ct->published, sizeof out->published);
    memcpy(out->delivered, ct->delivered, sizeof out->delivered);
    pthread_mutex_unlock(&ct->mu);
    out->published_total = out->delivered_total = 0;
    for (size_t i = 0; i < out->ntopics; i++) {
        out->published_total += out->published[i];
        out->delivered_total += out->delivered[i];
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Output
 * ---------------------------------------------------------------------------------------- */

typedef struct lat {
    double p50, p90, p99, max, put_p50, put_p99, total_p50, total_p99;
} lat;

static lat summarize(phase *ph)
{
    lat l;
    qsort(ph->vis_ms, ph->n, sizeof(double), bench_cmp_double);
    qsort(ph->put_ms, ph->n, sizeof(double), bench_cmp_double);
    qsort(ph->total_ms, ph->n, sizeof(double), bench_cmp_double);
    l.p50 = bench_pct_sorted(ph->vis_ms, ph->n, 50);
    l.p90 = bench_pct_sorted(ph->vis_ms, ph->n, 90);
    l.p99 = bench_pct_sorted(ph->vis_ms, ph->n, 99);
    l.max = ph->n ? ph->vis_ms[ph->n - 1] : NAN;
    l.put_p50 = bench_pct_sorted(ph->put_ms, ph->n, 50);
    l.put_p99 = bench_pct_sorted(ph->put_ms, ph->n, 99);
    l.total_p50 = bench_pct_sorted(ph->total_ms, ph->n, 50);
    l.total_p99 = bench_pct_sorted(ph->total_ms, ph->n, 99);
    return l;
}

static void emit_phase(phase *ph, const lat *l, size_t docs, double doc_bytes,
                       double chunks_per_doc)
{
    printf("{\"bench\":\"update_visible\",\"mode\":\"%s\",\"fsync\":%d,\"n\":%zu,"
           "\"docs\":%zu,\"doc_bytes_avg\":%.0f,\"chunks_per_doc\":%.2f,"
           "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,"
           "\"max_ms\":%.4f,\"put_p50_ms\":%.4f,\"put_p99_ms\":%.4f,\"total_p50_ms\":%.4f,"
           "\"total_p99_ms\":%.4f,\"polls_per_update\":%.2f,\"fsyncs_per_update\":%.2f",
           ph->mode, ph->fsync, ph->n, docs, doc_bytes, chunks_per_doc, l->p50, l->p90, l->p99,
           l->max, l->put_p50, l->put_p99, l->total_p50, l->total_p99,
           ph->n ? (double)ph->polls / (double)ph->n : 0.0,
           ph->n ? (double)ph->fsyncs / (double)ph->n : 0.0);
    if (strcmp(ph->mode, "inline") == 0)
        printf(",\"late_after_drain\":%zu", ph->late);
    printf("}\n");
    fflush(stdout);
}

static void emit_cost(const cost *k)
{
    double n = k->n ? (double)k->n : 1.0;
    printf("{\"bench\":\"update_cost\",\"mode\":\"inline\",\"fsync\":%d,\"n\":%zu,"
           "\"messages_per_update\":%.2f,\"deliveries_per_update\":%.2f,"
           "\"fsyncs_per_update\":%.2f,\"messages\":{",
           k->fsync, k->n, (double)k->published_total / n, (double)k->delivered_total / n,
           (double)k->fsyncs / n);
    for (size_t i = 0; i < k->ntopics; i++)
        printf("%s\"%s\":%ld", i ? "," : "", k->topic[i], k->published[i]);
    printf("},\"fsyncs_per_update_by_env\":{");
    for (int i = 0; i < NENV; i++)
        printf("%s\"%s\":%.2f", i ? "," : "", ENV_NAMES[i], (double)k->fs_env[i] / n);
    printf("}}\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------------------------------
 * One fsync setting: fresh root, load, workers phase, inline phase, cost phase.
 * ---------------------------------------------------------------------------------------- */

typedef struct result {
    lat workers, inline_;
    phase ph_workers, ph_inline;
    cost k;
    double doc_bytes;
    double chunks_per_doc; /* after the initial load */
} result;

static int run_setting(const char *tmp, int no_sync, size_t ndocs, size_t nupd, size_t ncost,
                       result *res)
{
    const int fsync_on = !no_sync;
    char root[4096];
    int n = snprintf(root, sizeof root, "%s/ragcore-bench-update-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof root || !mkdtemp(root))
        return bench_fail("cannot make a temporary root under %s: %s", tmp, strerror(errno));
    fprintf(stderr, "bench_update: fsync %s, root %s\n", fsync_on ? "on" : "off", root);

    corpus c;
    rag_ctx *ctx = NULL;
    counting *ct = NULL;
    int ret = 1;
    phase_alloc(&res->ph_workers, "workers", fsync_on, nupd);
    phase_alloc(&res->ph_inline, "inline", fsync_on, nupd);
    memset(&res->k, 0, sizeof res->k);
    res->k.fsync = fsync_on;

    if (corpus_init(&c, ndocs, SEED))
        goto out;
    if (open_root(&ctx, root, no_sync, NULL))
        goto out;
    double t = bench_now_s();
    if (load_corpus(ctx, &c))
        goto out;
    fprintf(stderr, "bench_update:   %zu documents put and drained in %.2f s\n", ndocs,
            bench_now_s() - t);
    rag_status_info st = {.version = RAG_STATUS_VERSION};
    int rc = rag_status(ctx, &st);
    if (rc) {
        bench_fail_rag("rag_status", rc);
        goto out;
    }
    res->chunks_per_doc = ndocs ? (double)st.chunks / (double)ndocs : 0;

    /* 1. Workers running: update-to-visible. */
    rc = rag_start(ctx);
    if (rc) {
        bench_fail_rag("rag_start", rc);
        goto out;
    }
    t = bench_now_s();
    if (run_updates(ctx, &c, WARMUP, 0, NULL) || run_updates(ctx, &c, nupd, 0, &res->ph_workers))
        goto out;
    fprintf(stderr, "bench_update:   %zu updates with workers in %.2f s\n", nupd, bench_now_s() - t);
    rc = rag_stop(ctx);
    if (rc) {
        bench_fail_rag("rag_stop", rc);
        goto out;
    }

    /* 2. The naive inline path on the same root. */
    t = bench_now_s();
    if (run_updates(ctx, &c, WARMUP, 1, NULL) || run_updates(ctx, &c, nupd, 1, &res->ph_inline))
        goto out;
    fprintf(stderr, "bench_update:   %zu updates inline in %.2f s\n", nupd, bench_now_s() - t);

    rc = rag_status(ctx, &st);
    if (rc) {
        bench_fail_rag("rag_status", rc);
        goto out;
    }
    if (st.dead_letters || st.documents != ndocs || st.versions != ndocs)
        fprintf(stderr,
                "bench_update:   note: status after updates: %llu documents, %llu versions, "
                "%llu dead letters\n",
                (unsigned long long)st.documents, (unsigned long long)st.versions,
                (unsigned long long)st.dead_letters);
    rag_close(ctx);
    ctx = NULL;

    /* 3. Cost per update, through the counting wrapper around the same broker env. */
    if (open_root(&ctx, root, no_sync, &ct))
        goto out;
    t = bench_now_s();
    if (run_cost(ctx, ct, &c, ncost, &res->k))
        goto out;
    fprintf(stderr, "bench_update:   %zu counted updates in %.2f s\n", ncost, bench_now_s() - t);

    res->workers = summarize(&res->ph_workers);
    res->inline_ = summarize(&res->ph_inline);
    res->doc_bytes = c.bytes_count ? c.bytes_total / (double)c.bytes_count : 0;
    emit_phase(&res->ph_workers, &res->workers, ndocs, res->doc_bytes, res->chunks_per_doc);
    emit_phase(&res->ph_inline, &res->inline_, ndocs, res->doc_bytes, res->chunks_per_doc);
    emit_cost(&res->k);
    printf("{\"bench\":\"update_compare\",\"fsync\":%d,\"workers_p50_ms\":%.4f,"
           "\"inline_p50_ms\":%.4f,\"workers_total_p50_ms\":%.4f,\"inline_total_p50_ms\":%.4f,"
           "\"workers_to_inline_total_p50_ratio\":%.4f}\n",
           fsync_on, res->workers.p50, res->inline_.p50, res->workers.total_p50,
           res->inline_.total_p50, res->workers.total_p50 / res->inline_.total_p50);
    fflush(stdout);
    ret = 0;

out:
    rag_close(ctx);
    bench_rm_tree(root);
    corpus_free(&c);
    return ret;
}

static void summary_lines(const result *r, int fsync_on)
{
    const lat *w = &r->workers, *i = &r->inline_;
    fprintf(stderr, "fsync %-3s  update-to-visible (put returned -> search shows it), ms\n",
            fsync_on ? "on" : "off");
    fprintf(stderr, "  workers  p50 %8.3f  p90 %8.3f  p99 %8.3f  max %8.3f   put p50 %7.3f "
                    "p99 %7.3f   put+visible p50 %8.3f p99 %8.3f\n",
            w->p50, w->p90, w->p99, w->max, w->put_p50, w->put_p99, w->total_p50, w->total_p99);
    fprintf(stderr, "  inline   p50 %8.3f  p90 %8.3f  p99 %8.3f  max %8.3f   put p50 %7.3f "
                    "p99 %7.3f   put+visible p50 %8.3f p99 %8.3f\n",
            i->p50, i->p90, i->p99, i->max, i->put_p50, i->put_p99, i->total_p50, i->total_p99);
    fprintf(stderr, "  per update (workers stopped, drain after each, n=%zu): %.2f messages, "
                    "%.2f fsync/fdatasync calls (",
            r->k.n, r->k.n ? (double)r->k.published_total / (double)r->k.n : 0.0,
            r->k.n ? (double)r->k.fsyncs / (double)r->k.n : 0.0);
    for (int e = 0; e < NENV; e++)
        if (r->k.fs_env[e])
            fprintf(stderr, " %s %.2f", ENV_NAMES[e], (double)r->k.fs_env[e] / (double)r->k.n);
    fprintf(stderr, " )\n");
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: bench_update   (sizes: RAG_BENCH_DOCS, RAG_BENCH_UPDATES, "
                        "RAG_BENCH_COST_UPDATES; root: RAG_BENCH_TMPDIR)\n");
        return 2;
    }
    size_t ndocs = env_size("RAG_BENCH_DOCS", 200);
    size_t nupd = env_size("RAG_BENCH_UPDATES", 500);
    size_t ncost = env_size("RAG_BENCH_COST_UPDATES", 100);
    const char *tmp = getenv("RAG_BENCH_TMPDIR");
    if (!tmp || !*tmp)
        tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";

    double t = bench_now_s();
    result on, off;
    memset(&on, 0, sizeof on);
    memset(&off, 0, sizeof off);
    int ret = run_setting(tmp, 0, ndocs, nupd, ncost, &on);
    if (ret == 0)
        ret = run_setting(tmp, 1, ndocs, nupd, ncost, &off);
    if (ret == 0) {
        fprintf(stderr, "\n== ragcore update-to-visible benchmark: %zu docs (~%.0f bytes, %.1f "
                        "chunks), %zu updates per mode, poll every %d us, k=%d ==\n",
                ndocs, on.doc_bytes, on.chunks_per_doc, nupd, POLL_US, SEARCH_K);
        summary_lines(&on, 1);
        summary_lines(&off, 0);
        if (on.ph_inline.late || off.ph_inline.late)
            fprintf(stderr, "  note: %zu/%zu inline updates not visible right after rag_drain\n",
                    on.ph_inline.late, off.ph_inline.late);
        if (on.k.fsyncs == 0)
            fprintf(stderr, "  note: no fsync counted with fsync on: interposition failed?\n");
        fprintf(stderr, "total %.1f s\n", bench_now_s() - t);
    }
    phase_free(&on.ph_workers);
    phase_free(&on.ph_inline);
    phase_free(&off.ph_workers);
    phase_free(&off.ph_inline);
    return ret;
}
