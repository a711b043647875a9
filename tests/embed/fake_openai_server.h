/*
 * An in-process OpenAI-compatible embeddings server for tests and benchmarks.
 *
 * A thread listens on 127.0.0.1 (ephemeral port); every accepted connection gets a thread of
 * its own speaking HTTP/1.1 with Content-Length bodies and keep-alive (a client that sends
 * "Connection: close" gets it).  `POST /v1/embeddings` with {"model":..,"input":[..]} (or one
 * string) is answered with deterministic vectors, fake_openai_vector() of each input, in
 * OpenAI format ({"data":[{"index":i,"embedding":[..]}..]}) with the entries in REVERSE
 * order, so a client that ignores "index" gets them wrong.
 *
 * Failure injection: the knobs below act on the next N requests (counted down as requests
 * arrive) and may be set between requests from any thread.  When several are armed, a
 * request first sleeps (slow, latency), then the first armed of: raw, status, echo, marker,
 * truncated, wrong dimension decides its answer.
 *
 * Not built on its own: a test includes the .c (`#include "fake_openai_server.c"`); a bench
 * compiles it into its executable.
 */
#ifndef FAKE_OPENAI_SERVER_H
#define FAKE_OPENAI_SERVER_H

#include <stddef.h>

typedef struct fake_openai fake_openai;

/* Start a server answering `dim`-dimensional vectors.  0 or -1 (errno set). */
int fake_openai_start(fake_openai **out, unsigned int dim);
/* Stop accepting, wake every sleeping or reading connection thread, join them all, free.
 * NULL is allowed. */
void fake_openai_stop(fake_openai *s);

unsigned short fake_openai_port(const fake_openai *s);
/* "http://127.0.0.1:<port>/v1" (valid while the server lives). */
const char *fake_openai_base_url(const fake_openai *s);

/* The vector the server answers for a text (not normalised; components are multiples of
 * 1/4096 in [-1, 1), printed exactly). */
void fake_openai_vector(unsigned int dim, const char *text, size_t len, float *out);

/* ---- knobs ---- */
/* The next `n` requests answer `status` (e.g. 429, 500, 503, 400, 401, 413) with a JSON error
 * body, and a "Retry-After: <retry_after_s>" header when retry_after_s >= 0. */
void fake_openai_fail_next(fake_openai *s, int n, int status, int retry_after_s);
/* The next `n` requests sleep `ms` before answering. */
void fake_openai_slow_next(fake_openai *s, int n, unsigned int ms);
/* Every request sleeps `ms` before answering (simulated model latency); 0: off. */
void fake_openai_set_latency(fake_openai *s, unsigned int ms);
/* The next `n` requests answer 200 with the JSON cut in the middle (Content-Length agrees). */
void fake_openai_truncate_next(fake_openai *s, int n);
/* The next `n` requests answer vectors of `dim` floats instead of the server's dimension. */
void fake_openai_wrong_dim_next(fake_openai *s, int n, unsigned int dim);
/* The next `n` requests answer `status` with a body quoting the Authorization header. */
void fake_openai_echo_auth_next(fake_openai *s, int n, int status);
/* Until changed: every request one of whose inputs contains `marker` answers `status`
 * (NULL marker: off).  The marker is copied. */
void fake_openai_fail_marker(fake_openai *s, const char *marker, int status);
/* The next `n` requests answer `status` with exactly `body` (copied), whatever they ask. */
void fake_openai_raw_next(fake_openai *s, int n, int status, const char *body);
/* Disarm every knob and zero the counters. */
void fake_openai_reset(fake_openai *s);

/* ---- counters ---- */
unsigned long fake_openai_requests(fake_openai *s);  /* requests seen (parsed) */
unsigned long fake_openai_texts(fake_openai *s);     /* inputs of requests answered 200 */
size_t fake_openai_max_batch(fake_openai *s);        /* largest "input" array seen */
unsigned long fake_openai_connections(fake_openai *s); /* TCP connections accepted */
/* The Authorization header of the last request ("" when it had none). */
void fake_openai_last_auth(fake_openai *s, char *buf, size_t size);

#endif
